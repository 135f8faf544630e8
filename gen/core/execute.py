"""Running one unit: claim it under a lease, give the instructor its teachers, store its records once (fenced by
the lease), settle its state.

Both drivers call `UnitExecutor.execute` through the job lifecycle (gen.core.lifecycle); only how unit ids
arrive differs.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from gen.config import JobSpec
from gen.conversation import conversation_problem
from gen.core.journal import CallGate, DbJournal
from gen.core.lease import LeaseKeeper, boot_clock
from gen.errors import (AuthError, BudgetExhausted, Draining, LeaseLost, OutputRejected, TeacherError,
                        TeacherUnavailable, Unreachable)
from gen.instructors import Instructor, UnitInput
from gen.store import Store, UnitState
from gen.store.group_commit import GroupCommit
from gen.store.writes import Finish, Settle
from gen.teacher import TeacherClient, UnitTeacher
from gen.types import NewRecord

log = logging.getLogger("gen.core")
CLAIMS_AT_ONCE = 64  # claims of units arriving together go in one statement (gen.store.group_commit)


@dataclass
class UnitResult:
    unit_id: int
    state: str | None  # None: not run here (finished, held elsewhere, not this job's, or its lease was lost)
    records: int = 0
    duplicates: int = 0
    error: str | None = None


def screened(record: NewRecord) -> NewRecord:
    """A well-formed record as it is stored: turns in role, content order, and its screen (gen.record_screen), so
    that export reuses the verdict instead of checking each record again."""
    from gen.record_screen import in_stored_order, screen  # the detector loads with the first record, not at start

    conversation = in_stored_order(record.conversation)
    return replace(record, conversation=conversation, screen=screen(conversation, record.meta))


class UnitExecutor:
    def __init__(self, store: Store, job_id: str, spec: JobSpec, instructor: Instructor,
                 teachers: dict[str, TeacherClient], *, leases: LeaseKeeper, gate: CallGate | None = None):
        self.store = store
        self.job_id = job_id
        self.spec = spec
        self.instructor = instructor
        self.teachers = teachers
        self.leases = leases
        self.gate = gate or CallGate()
        self._claim_gate: asyncio.Semaphore | None = None
        self._writes: GroupCommit | None = None

    @property
    def writes(self) -> GroupCommit:
        """This executor's write-behind stage (made on first use, on the loop that runs the units)."""
        if self._writes is None:
            self._writes = GroupCommit(self.store)
        return self._writes

    async def execute(self, unit_id: int) -> UnitResult:
        # Units that arrive together pass the claim a few at a time, first come first served, so the first
        # ones reach their teacher at once instead of all of them crowding the database and the event loop.
        if self._claim_gate is None:
            self._claim_gate = asyncio.Semaphore(CLAIMS_AT_ONCE)
        self.gate.check()
        async with self._claim_gate:
            claimed_at = boot_clock()
            unit = await self.writes.claim(unit_id, job_id=self.job_id, worker=self.leases.worker,
                                           lease_seconds=self.leases.lease_seconds)
        if unit is None:
            return UnitResult(unit_id, None)
        lease = self.leases.take(unit_id, unit.lease_token, claimed_at)
        try:
            return await self._run(unit, lease)
        finally:
            self.leases.drop(lease)

    async def _run(self, unit, lease) -> UnitResult:  # noqa: ANN001
        unit_id, token = unit.id, lease.token
        journal = await DbJournal.open(self.store, self.writes, self.job_id, lease, self.gate,
                                       first_attempt=unit.attempts == 1)
        bound = {name: UnitTeacher(t, journal)
                 for name, t in self.teachers.items()}

        def call_ids() -> list[int]:
            return sorted({cid for t in bound.values() for cid in t.call_ids})

        try:
            records = await self.instructor.run(UnitInput(unit.key, unit.seq, unit.payload), bound)
            for record in records:
                problem = conversation_problem(record.conversation)
                if problem:
                    raise OutputRejected(f"malformed conversation: {problem}")
            records = [screened(r) for r in records]
            inserted, dups = await self.writes.write(Settle(self.job_id, unit_id, records, call_ids(), token))
            return UnitResult(unit_id, UnitState.DONE, inserted, dups)
        except OutputRejected as exc:
            kept = [screened(replace(r, kind="rejected", meta={**r.meta, "rejected_because": exc.reason}))
                    for r in exc.records if conversation_problem(r.conversation) is None]
            await self.writes.write(Settle(self.job_id, unit_id, kept, call_ids(), token, UnitState.REJECTED,
                                           exc.reason, exc.raw))
            return UnitResult(unit_id, UnitState.REJECTED, error=exc.reason)
        except LeaseLost as exc:
            log.warning("%s; this worker stops it", exc)
            return UnitResult(unit_id, None, error=str(exc))
        except Draining:
            await self._back_to_pending(unit_id, token, "interrupted before its next call")
            return UnitResult(unit_id, UnitState.PENDING, error="interrupted")
        except BudgetExhausted as exc:
            # No call started past the budget: the unit waits, pending, for `gen resume` with a larger one.
            await self._back_to_pending(unit_id, token, str(exc))
            raise
        except (Unreachable, AuthError) as exc:
            # Not this unit's fault: it goes back to pending and the driver stops asking this teacher.
            await self._back_to_pending(unit_id, token, str(exc))
            raise TeacherUnavailable(str(exc)) from None
        except TeacherError as exc:
            await self.writes.write(Finish(unit_id, UnitState.FAILED, token, str(exc), exc.raw))
            return UnitResult(unit_id, UnitState.FAILED, error=str(exc))
        except (asyncio.CancelledError, KeyboardInterrupt):
            self.store.finish_unit(unit_id, UnitState.PENDING, token=token, error="interrupted")
            raise
        except Exception as exc:  # an instructor bug must not take the run down, nor vanish
            if _is_outage(exc):
                raise  # the database stayed away longer than a held write waits: the driver retries later
            log.exception("unit %s failed with an internal error", unit_id)
            message = f"internal error: {type(exc).__name__}: {exc}"
            await self.writes.write(Finish(unit_id, UnitState.FAILED, token, message))
            return UnitResult(unit_id, UnitState.FAILED, error=message)

    async def _back_to_pending(self, unit_id: int, token: int, why: str) -> None:
        await self.writes.write(Finish(unit_id, UnitState.PENDING, token, why))


def _is_outage(exc: BaseException) -> bool:
    from gen.store.threads import is_outage

    return is_outage(exc)
