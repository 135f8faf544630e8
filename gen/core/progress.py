"""Live progress for long work: units done / rejected / failed, calls, 429s, tokens, cost, rate and ETA."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from gen.store import JobStats, UnitState
from gen.teacher import Meter


@dataclass
class Tally:
    """Where a run stands: the database's counts when it started plus what this run has done since."""

    total: int
    base: JobStats
    meter: Meter
    done: int = 0
    rejected: int = 0
    failed: int = 0
    records: int = 0
    duplicates: int = 0
    started: float = field(default_factory=time.monotonic)

    def count(self, state: str | None, records: int = 0, duplicates: int = 0) -> None:
        if state == UnitState.DONE:
            self.done += 1
        elif state == UnitState.REJECTED:
            self.rejected += 1
        elif state == UnitState.FAILED:
            self.failed += 1
        self.records += records
        self.duplicates += duplicates

    @property
    def finished_now(self) -> int:
        return self.done + self.rejected + self.failed

    def line(self) -> str:
        b = self.base
        done = b.units[UnitState.DONE] + self.done
        rejected = b.units[UnitState.REJECTED] + self.rejected
        failed_before = b.units[UnitState.FAILED]
        failed = self.failed + failed_before
        finished = done + rejected
        elapsed = max(time.monotonic() - self.started, 1e-6)
        m = self.meter
        calls = b.calls + m.calls
        per_min = m.calls / elapsed * 60
        rate = self.finished_now / elapsed
        remaining = max(self.total - finished - self.failed, 0)
        eta = format_seconds(remaining / rate) if rate > 0 and remaining else ("0s" if not remaining else "?")
        tokens_in = b.prompt_tokens + m.prompt_tokens
        tokens_out = b.completion_tokens + m.completion_tokens
        return (f"units {finished}/{self.total} (done {done}, rejected {rejected}, failed {failed}) | "
                f"calls {calls} (429: {b.rate_limited + m.rate_limited}, replayed {m.replayed}) | "
                f"tokens {human(tokens_in)} in, {human(tokens_out)} out | ${b.cost_usd + m.cost_usd:.4f} | "
                f"{per_min:.0f} calls/min | ETA {eta}")


def human(n: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressPrinter:
    """Rewrites one line on a terminal; prints a line every `every` seconds elsewhere (logs, CI)."""

    def __init__(self, tally: Tally, stream: TextIO = sys.stderr, every: float | None = None, quiet: bool = False):
        self.tally = tally
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every if every is not None else (0.5 if self.tty else 5.0)
        self.quiet = quiet
        self._last = 0.0

    def tick(self, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        line = self.tally.line()
        if self.tty:
            width = 200
            self.stream.write("\r\x1b[2K" + line[:width])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.quiet:
            return
        self.tick(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
