"""Failpoints, for fault tests: with GEN_FAILPOINT=NAME:N in its environment, a process kills itself (SIGKILL) the
N-th time it passes the point NAME: a crash at the worst moment, on purpose. Unset, passing a point does nothing.

Points: `after-commit` (gen.store.group_commit: a transaction committed, its writers not yet told, so no queue
message of theirs acknowledged); `after-plan-chunk` (gen.core.lifecycle: a chunk of a job's plan committed, the
rest not planned yet, while `gen run` already runs the units planned so far)."""
from __future__ import annotations

import os
import signal

_passed: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("GEN_FAILPOINT")
    if not spec:
        return
    wanted, _, times = spec.partition(":")
    if wanted != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] >= int(times or 1):
        os.kill(os.getpid(), signal.SIGKILL)
