"""Job and unit states, and the moves allowed between them: the one place both drivers read them from.

A unit: pending -> running (claimed under a lease) -> done | rejected | failed, or back to pending (its worker was
lost, the run was interrupted, the teacher was unreachable, the budget was reached). A failed unit may be claimed
again while it has attempts left. Done and rejected are final.

A job: active while it has work; finished when no unit is pending or running; stopped (budget), cancelled
(`gen cancel`) and blocked (a teacher unreachable or refusing the key) until `gen resume` or `gen run` makes it
active again.
"""
from __future__ import annotations

from enum import StrEnum, nonmember

from gen.errors import GenError


class UnitState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    REJECTED = "rejected"
    FAILED = "failed"
    FINISHED = nonmember(("done", "rejected"))
    ALL = nonmember(("pending", "running", "done", "rejected", "failed"))


class JobState(StrEnum):
    ACTIVE = "active"
    FINISHED = "finished"
    STOPPED = "stopped"      # budget reached
    CANCELLED = "cancelled"  # gen cancel
    BLOCKED = "blocked"      # a teacher cannot be used (unreachable, key refused)


UNIT_MOVES: dict[UnitState, frozenset[UnitState]] = {
    UnitState.PENDING: frozenset({UnitState.RUNNING}),
    UnitState.RUNNING: frozenset({UnitState.PENDING, UnitState.DONE, UnitState.REJECTED, UnitState.FAILED}),
    UnitState.FAILED: frozenset({UnitState.RUNNING, UnitState.PENDING}),  # pending: a resume the user asked for
    UnitState.DONE: frozenset(),
    UnitState.REJECTED: frozenset(),
}

JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    JobState.ACTIVE: frozenset({JobState.FINISHED, JobState.STOPPED, JobState.CANCELLED, JobState.BLOCKED}),
    JobState.BLOCKED: frozenset({JobState.ACTIVE, JobState.FINISHED, JobState.STOPPED, JobState.CANCELLED}),
    JobState.STOPPED: frozenset({JobState.ACTIVE, JobState.CANCELLED}),
    JobState.CANCELLED: frozenset({JobState.ACTIVE}),
    JobState.FINISHED: frozenset({JobState.ACTIVE}),  # a failed unit with attempts left, retried by `gen run`
}

# Jobs whose units are not dispatched: a worker acknowledges their messages without work.
HALTED = (JobState.STOPPED, JobState.CANCELLED)


class StateError(GenError):
    """A move the state machine does not allow (a bug, or a race another writer won)."""


def allowed_job_sources(target: JobState) -> tuple[str, ...]:
    """The states a job may move to `target` from (what the store's UPDATE ... WHERE status IN (...) uses)."""
    return tuple(s.value for s, targets in JOB_MOVES.items() if target in targets or s == target)


def allowed_unit_sources(target: UnitState) -> tuple[str, ...]:
    return tuple(s.value for s, targets in UNIT_MOVES.items() if target in targets)
