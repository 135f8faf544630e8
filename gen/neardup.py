"""Near-duplicate detection across a whole job and every worker: MinHash signatures, LSH bands in the database.

What counts as a near-duplicate was measured, not guessed: on the labelled set `tests/data/neardup_pairs.jsonl`
(riddles, coding tasks and system prompts; one-word edits, reordered clauses, case/punctuation/Unicode
variants and light paraphrases against every pair of distinct items of the same kind), Jaccard similarity of
the character 3-grams of the identity form (`gen.text.normalise`) separates the two widest of the measures
tried (`bench/neardup_choice.py`: word 1-, 2-, 3-grams and 1-2-grams, character 3- to 5-grams, Jaccard and
containment): every threshold from 0.25 to 0.75 catches >= 90% of variants and drops <= 2% of distinct
items. The default, 0.5, sits in the middle (`test_the_default_threshold_measures_on_the_labelled_set` prints
its figures). At the old default, 0.8, only half the light paraphrases were caught.

Each text gets a MinHash signature (datasketch, those 3-grams) cut into `b` bands of `r` values, `b` and `r`
chosen for the threshold as datasketch's MinHashLSH chooses them (weighted for recall). A job's index lives in two tables (gen.store.models): signatures, unique per (job, scope, item key),
and bands, unique per (job, scope, band, band hash). Adding a text is one transaction that inserts first and
looks second:

1. insert its signature (an item key already there is the same text again: a rerun replaying, or an exact
   duplicate that the record key drops; it counts as new here);
2. insert its bands, in band order, ON CONFLICT DO NOTHING;
3. a band that was already there is a collision: read the owners' signatures; if the estimated Jaccard with
   one of them reaches the threshold, roll back (nothing of this text stays in the index) and record the text
   in `near_duplicates` (what `gen status` counts); otherwise commit.

Two workers adding near-duplicates at the same moment cannot both win. They share at least one band, and both
insert bands in ascending order, so they meet first on the lowest shared band: the unique index makes the
second wait there until the first commits (PostgreSQL) or holds the write lock (SQLite), and the second then
finds the collision and compares. The first never saw the second's bands, so exactly one of them is kept.

Signatures carry their representation's version in the scope they are stored under (`riddles@2`), so an
index built by an earlier gen (character 3-grams of another normal form, under the bare scope) is never
compared with new signatures: a job resumed across the upgrade keeps its old signatures apart, and the first
add in that scope logs a warning saying so.

A band collision with a text that is not similar enough (an LSH false positive) keeps the newcomer, whose
colliding bands stay owned by the first text: the index then misses nothing for the first, and may miss a few
later near-duplicates of the second.
"""
from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gen.text import normalise, text_key

if TYPE_CHECKING:
    from gen.store.models import NearDuplicate

# The database layer (SQLAlchemy, gen.store.models) and asyncio are imported by the methods that use them, when
# they run: instructors read `similarity`, `DEFAULT_THRESHOLD` and `normalise` at plan time, and validating a job
# file loads no database layer (tests/test_imports.py).

log = logging.getLogger(__name__)

NUM_PERM = 128
SHINGLE = 3
DEFAULT_THRESHOLD = 0.5
SIGNATURE_VERSION = 2  # 1: character 3-grams of the old normal form (lower case, punctuation dropped)
FP_WEIGHT, FN_WEIGHT = 0.05, 0.95


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    """The character `size`-grams of the text's identity form: what near-duplicates are compared on."""
    norm = normalise(text)
    if len(norm) <= size:
        return {norm}
    return {norm[i:i + size] for i in range(len(norm) - size + 1)}


def similarity(a: str, b: str) -> float:
    """Exact Jaccard similarity of two texts' shingles (what a MinHash signature estimates)."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def stored_scope(scope: str) -> str:
    """The scope signatures are stored under: the instructor's scope and the signature version."""
    return f"{scope}@{SIGNATURE_VERSION}"


def signature(text: str, num_perm: int = NUM_PERM) -> list[int]:
    """The MinHash signature of the text's shingles (deterministic: fixed seed, sha1-based hashing)."""
    from datasketch import MinHash  # imported when first needed: it brings numpy and scipy

    mh = MinHash(num_perm=num_perm, seed=1)
    mh.update_batch([s.encode("utf-8") for s in sorted(shingles(text))])
    return [int(v) for v in mh.hashvalues]


def estimated_jaccard(a: list[int], b: list[int]) -> float:
    if len(a) != len(b) or not a:
        return 0.0
    return sum(1 for x, y in zip(a, b) if x == y) / len(a)


def _integrate(f, low: float, high: float, steps: int = 64) -> float:
    """Simpson's rule: enough precision to rank band layouts."""
    if high <= low:
        return 0.0
    h = (high - low) / steps
    total = f(low) + f(high)
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * f(low + i * h)
    return total * h / 3


@lru_cache(maxsize=32)
def lsh_bands(threshold: float, num_perm: int = NUM_PERM, fp_weight: float = FP_WEIGHT,
              fn_weight: float = FN_WEIGHT) -> tuple[int, int]:
    """(bands, rows per band) minimising the weighted false positives and false negatives around `threshold`:
    datasketch MinHashLSH's rule. Recall is weighted far above precision, because a false positive only costs
    reading one stored signature, which then decides exactly (at 0.8: 16 bands of 8 rows, so a pair with
    Jaccard 0.8 meets in a band 95% of the time, 0.85: 99.4%, and a pair at 0.5 only 6%)."""
    best, best_error = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integrate(lambda s: 1 - (1 - s ** r) ** b, 0.0, threshold)
            fn = _integrate(lambda s: 1 - (1 - (1 - s ** r) ** b), threshold, 1.0)
            error = fp * fp_weight + fn * fn_weight
            if error < best_error:
                best, best_error = (b, r), error
    return best


def band_hashes(sig: list[int], bands: int, rows: int) -> list[tuple[int, str]]:
    """(band index, hash of its rows) for each band; the layout is part of the hash, so layouts never mix."""
    out = []
    for band in range(bands):
        values = sig[band * rows:(band + 1) * rows]
        digest = hashlib.sha1(struct.pack(f"<3I{len(values)}Q", band, rows, len(sig), *values)).hexdigest()
        out.append((band, digest[:32]))
    return out


@dataclass(frozen=True)
class Verdict:
    new: bool
    duplicate_of: str | None = None
    similarity: float = 0.0


class _NearDuplicateFound(Exception):
    def __init__(self, owner: str, similarity: float):
        self.owner, self.similarity = owner, similarity


class NearDupIndex:
    """A job's near-duplicate index in the database, shared by every worker of the job.

    `await index.add_if_new(scope, text)` adds the text and returns True, or returns False (and records it as
    a near-duplicate) when the index already has a text of that scope whose estimated Jaccard similarity with
    it reaches `threshold`. The threshold of a scope should stay the same for the whole job (it is an
    instructor option, so it does).
    """

    def __init__(self, store: Any, job_id: str):
        self.store = store
        self.job_id = job_id
        self._scopes_checked: set[str] = set()

    async def add_if_new(self, scope: str, text: str, *, key: str | None = None,
                         threshold: float = DEFAULT_THRESHOLD) -> bool:
        import asyncio

        loop = asyncio.get_running_loop()
        verdict = await loop.run_in_executor(self.store.executor, lambda: self.check_and_add(
            scope, text, key=key, threshold=threshold))
        return verdict.new

    def add_if_new_sync(self, scope: str, text: str, *, key: str | None = None,
                        threshold: float = DEFAULT_THRESHOLD) -> bool:
        return self.check_and_add(scope, text, key=key, threshold=threshold).new

    def check_and_add(self, scope: str, text: str, *, key: str | None = None,
                      threshold: float = DEFAULT_THRESHOLD) -> Verdict:
        """The whole check in one transaction (see the module's docstring); blocking."""
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self._warn_about_old_signatures(scope)
        key = key or text_key(text)
        sig = signature(text)
        bands = band_hashes(sig, *lsh_bands(round(threshold, 4)))
        stored = stored_scope(scope)
        try:
            with self.store.engine.begin() as conn:
                if not self._insert_signature(conn, stored, key, sig):
                    return Verdict(True)  # this very item is indexed already (a rerun, or an exact duplicate)
                self._insert_bands_or_raise(conn, stored, key, sig, bands, threshold)
        except _NearDuplicateFound as found:  # the transaction was rolled back: nothing of this text stays
            self._record_duplicate(scope, key, text, found.owner, found.similarity)
            return Verdict(False, found.owner, found.similarity)
        return Verdict(True)

    async def remember(self, scope: str, items: list[tuple[str, str]], *, threshold: float = DEFAULT_THRESHOLD) -> None:
        """Index `(key, text)` items as already seen (texts of earlier jobs), without checking or counting them."""
        import asyncio

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.store.executor, lambda: self.remember_sync(scope, items, threshold=threshold))

    def remember_sync(self, scope: str, items: list[tuple[str, str]], *, threshold: float = DEFAULT_THRESHOLD) -> None:
        """One transaction; idempotent (unique keys, ON CONFLICT DO NOTHING), so every worker may do it. A band
        another text owns already stays that text's: what an LSH index always accepts."""
        if not items:
            return
        from gen.store.models import NearDupBand, NearDupSignature, utcnow

        stored, layout, now = stored_scope(scope), lsh_bands(round(threshold, 4)), utcnow()
        sig_rows, band_rows = [], []
        for key, text in dict(items).items():
            sig = signature(text)
            sig_rows.append({"job_id": self.job_id, "scope": stored, "item_key": key, "signature": sig,
                             "created_at": now})
            band_rows += [{"job_id": self.job_id, "scope": stored, "band": band, "band_hash": digest, "item_key": key}
                          for band, digest in band_hashes(sig, *layout)]
        sigs, bands = NearDupSignature.__table__, NearDupBand.__table__
        with self.store.engine.begin() as conn:
            conn.execute(self._insert(sigs).on_conflict_do_nothing(index_elements=["job_id", "scope", "item_key"]),
                         sig_rows)
            conn.execute(self._insert(bands).on_conflict_do_nothing(
                index_elements=["job_id", "scope", "band", "band_hash"]), band_rows)

    def near_duplicates(self, scope: str | None = None) -> list[NearDuplicate]:
        from sqlalchemy import select

        from gen.store.models import NearDuplicate

        with self.store.session() as s:
            q = select(NearDuplicate).where(NearDuplicate.job_id == self.job_id)
            if scope is not None:
                q = q.where(NearDuplicate.scope == scope)
            return list(s.execute(q.order_by(NearDuplicate.id)).scalars())

    # --------------------------------------------------------------------------------------------------
    def _insert(self, table):
        from sqlalchemy.dialects import postgresql, sqlite

        return (postgresql.insert if self.store.dialect == "postgresql" else sqlite.insert)(table)

    def _insert_signature(self, conn, scope: str, key: str, sig: list[int]) -> bool:
        from gen.store.models import NearDupSignature, utcnow

        table = NearDupSignature.__table__
        statement = self._insert(table).on_conflict_do_nothing(index_elements=["job_id", "scope", "item_key"]) \
            .returning(table.c.id)  # values as parameters: the statement compiles once and is cached
        row = {"job_id": self.job_id, "scope": scope, "item_key": key, "signature": sig, "created_at": utcnow()}
        return conn.execute(statement, row).first() is not None

    def _insert_bands_or_raise(self, conn, scope: str, key: str, sig: list[int], bands: list[tuple[int, str]],
                               threshold: float) -> None:
        from sqlalchemy import select

        from gen.store.models import NearDupBand, NearDupSignature

        table = NearDupBand.__table__
        rows = [{"job_id": self.job_id, "scope": scope, "band": band, "band_hash": digest, "item_key": key}
                for band, digest in bands]  # ascending band order: see the module's docstring
        statement = self._insert(table) \
            .on_conflict_do_nothing(index_elements=["job_id", "scope", "band", "band_hash"]) \
            .returning(table.c.band)  # many rows, one statement (SQLAlchemy's insertmanyvalues), compiled once
        inserted = {row[0] for row in conn.execute(statement, rows)}
        colliding = {digest for band, digest in bands if band not in inserted}
        if not colliding:
            return
        owners = {row[0] for row in conn.execute(
            select(table.c.item_key).where(table.c.job_id == self.job_id, table.c.scope == scope,
                                           table.c.band_hash.in_(sorted(colliding))))} - {key}
        if not owners:
            return
        sigs = NearDupSignature.__table__
        best: tuple[float, str] = (0.0, "")
        for owner, owner_sig in conn.execute(
                select(sigs.c.item_key, sigs.c.signature).where(sigs.c.job_id == self.job_id, sigs.c.scope == scope,
                                                                 sigs.c.item_key.in_(sorted(owners)))):
            best = max(best, (estimated_jaccard(sig, list(owner_sig)), owner))
        if best[0] >= threshold:
            raise _NearDuplicateFound(best[1], best[0])  # leaving the `begin()` block rolls everything back

    def _record_duplicate(self, scope: str, key: str, text: str, owner: str, similarity: float) -> None:
        from gen.store.models import NearDuplicate, utcnow

        table = NearDuplicate.__table__
        statement = self._insert(table).values(
            job_id=self.job_id, scope=scope, item_key=key, duplicate_of=owner, similarity=round(similarity, 4),
            text=text, created_at=utcnow()).on_conflict_do_nothing(index_elements=["job_id", "scope", "item_key"])
        with self.store.engine.begin() as conn:
            conn.execute(statement)  # once per item: a rerun that drops it again counts nothing more

    def _warn_about_old_signatures(self, scope: str) -> None:
        """Once per scope: say so when this job has signatures of an earlier representation (kept apart)."""
        if scope in self._scopes_checked:
            return
        from sqlalchemy import select

        from gen.store.models import NearDupSignature

        sigs = NearDupSignature.__table__
        with self.store.engine.connect() as conn:
            old = conn.execute(select(sigs.c.id).where(sigs.c.job_id == self.job_id, sigs.c.scope == scope)
                               .limit(1)).first()
        if old is not None:
            log.warning("job %s: near-duplicate signatures of scope %r were made by an earlier version of gen "
                        "(another text representation); they are kept apart, so texts added before the upgrade "
                        "are not compared with new ones", self.job_id, scope)
        self._scopes_checked.add(scope)


__all__ = ["NearDupIndex", "Verdict", "signature", "estimated_jaccard", "lsh_bands", "normalise", "text_key",
           "shingles", "similarity", "stored_scope", "DEFAULT_THRESHOLD", "SIGNATURE_VERSION"]
