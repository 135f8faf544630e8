"""Texts of earlier jobs that count as already seen by this job's near-duplicate index (`dedup_against_jobs`).

An instructor that drops near-duplicates may name earlier jobs (ids or names) whose texts a new text must not
repeat. The earlier jobs' records come through the instructor's `JobServices` (`earlier_conversations`, never a
database of its own) and go into the job's shared index (`services.seen.remember`) under the same scope as the
new texts, once per process and before the first new text is checked. Keys are `earlier:JOB:HASH`, so adding
them again (another worker, a rerun) changes nothing, and a new text identical to an earlier one is a
near-duplicate of it (similarity 1.0).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gen.text import text_key

if TYPE_CHECKING:
    import asyncio

    from gen.instructors.base import Instructor
    from gen.sources import SourceConversation

TextsOf = Callable[["SourceConversation"], Iterable[tuple[str, str]]]  # a record -> (scope, text) pairs


def first_message(conversation: list[dict[str, Any]], role: str) -> str | None:
    return next((m["content"] for m in conversation if m.get("role") == role), None)


class EarlierTexts:
    """The `dedup_against_jobs` of one instructor: `check()` at plan time, `await ensure()` before each check."""

    def __init__(self, instructor: "Instructor[Any]", refs: list[str], texts_of: TextsOf,
                 option: str = "instructor.dedup_against_jobs"):
        self.instructor, self.refs, self.texts_of, self.option = instructor, list(refs), texts_of, option
        self._done = False
        self._lock: asyncio.Lock | None = None

    def check(self) -> None:
        """The named jobs exist and have records (JobFileError naming the option otherwise)."""
        for ref in self.refs:
            self.instructor.earlier_conversations(ref, option=self.option)

    def items(self) -> dict[str, list[tuple[str, str]]]:
        """scope -> [(key, text)] of every earlier job named."""
        by_scope: dict[str, list[tuple[str, str]]] = {}
        for ref in self.refs:
            for source in self.instructor.earlier_conversations(ref, option=self.option):
                for scope, text in self.texts_of(source):
                    key = f"earlier:{source.link.get('job_id')}:{text_key(text)}"
                    by_scope.setdefault(scope, []).append((key, text))
        return by_scope

    async def ensure(self, threshold: float | None) -> None:
        """Put the earlier texts into the job's index, once per process (nothing when near-duplicates are off)."""
        seen = self.instructor.services.seen
        if self._done or not self.refs or seen is None or threshold is None:
            return
        import asyncio  # here, not on import: validating a job file plans units and never runs one

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._done:
                return
            for scope, items in (await asyncio.to_thread(self.items)).items():
                await seen.remember(scope, items, threshold=threshold)
            self._done = True


__all__ = ["EarlierTexts", "first_message"]
