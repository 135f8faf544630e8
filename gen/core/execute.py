"""Running one unit: claim it, give the instructor its teachers, store its records once, settle its state.

Both drivers call `UnitExecutor.execute`; only how unit ids arrive differs.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from gen.config import JobSpec
from gen.conversation import conversation_problem
from gen.core.journal import DbJournal
from gen.errors import AuthError, BudgetExhausted, OutputRejected, TeacherError, TeacherUnavailable, Unreachable
from gen.instructors import Instructor, UnitInput
from gen.neardup import NearDupIndex
from gen.store import Store, UnitState
from gen.store.threads import in_db_thread
from gen.teacher import TeacherClient, UnitTeacher

log = logging.getLogger("gen.core")
CLAIMS_AT_ONCE = 8


@dataclass
class UnitResult:
    unit_id: int
    state: str | None  # None: not claimed (someone else has it, or it is finished)
    records: int = 0
    duplicates: int = 0
    error: str | None = None


class UnitExecutor:
    def __init__(self, store: Store, job_id: str, spec: JobSpec, instructor: Instructor,
                 teachers: dict[str, TeacherClient], *, worker: str | None = None, lease_seconds: float = 300.0):
        self.store = store
        self.job_id = job_id
        self.spec = spec
        self.instructor = instructor
        self.teachers = teachers
        self.worker = worker
        self.lease_seconds = lease_seconds
        self._claim_gate: asyncio.Semaphore | None = None
        # The job's near-duplicate index, shared by every worker of the job (creating it touches no database).
        instructor.services.seen = NearDupIndex(store, job_id)

    async def execute(self, unit_id: int) -> UnitResult:
        # Units that arrive together pass the claim a few at a time, first come first served, so the first
        # ones reach their teacher at once instead of all of them crowding the database and the event loop.
        if self._claim_gate is None:
            self._claim_gate = asyncio.Semaphore(CLAIMS_AT_ONCE)
        async with self._claim_gate:
            unit = await in_db_thread(self.store.claim_unit, unit_id, worker=self.worker,
                                      lease_seconds=self.lease_seconds)
        if unit is None:
            return UnitResult(unit_id, None)
        journal = await DbJournal.open(self.store, self.job_id, unit_id, first_attempt=unit.attempts == 1)
        bound = {name: UnitTeacher(t, journal) for name, t in self.teachers.items()}
        try:
            records = await self.instructor.run(UnitInput(unit.key, unit.seq, unit.payload), bound)
            for record in records:
                problem = conversation_problem(record.conversation)
                if problem:
                    raise OutputRejected(f"malformed conversation: {problem}")
            call_ids = sorted({cid for t in bound.values() for cid in t.call_ids})
            inserted, dups = await in_db_thread(self.store.finish_unit_with_records, self.job_id, unit_id, records,
                                                call_ids)
            return UnitResult(unit_id, UnitState.DONE, inserted, dups)
        except OutputRejected as exc:
            kept = [replace(r, kind="rejected", meta={**r.meta, "rejected_because": exc.reason}) for r in exc.records
                    if conversation_problem(r.conversation) is None]
            call_ids = sorted({cid for t in bound.values() for cid in t.call_ids})
            await in_db_thread(self.store.finish_unit_with_records, self.job_id, unit_id, kept, call_ids,
                               state=UnitState.REJECTED, error=exc.reason, raw=exc.raw)
            return UnitResult(unit_id, UnitState.REJECTED, error=exc.reason)
        except (Unreachable, AuthError) as exc:
            # Not this unit's fault: it goes back to pending and the driver stops asking this teacher.
            self.store.finish_unit(unit_id, UnitState.PENDING, error=str(exc))
            raise TeacherUnavailable(str(exc)) from None
        except BudgetExhausted as exc:
            # No call started past the budget: the unit waits, pending, for `gen resume` with a larger one.
            await in_db_thread(self.store.finish_unit, unit_id, UnitState.PENDING, error=str(exc))
            raise
        except TeacherError as exc:
            await in_db_thread(self.store.finish_unit, unit_id, UnitState.FAILED, error=str(exc), raw=exc.raw)
            return UnitResult(unit_id, UnitState.FAILED, error=str(exc))
        except (asyncio.CancelledError, KeyboardInterrupt):
            self.store.finish_unit(unit_id, UnitState.PENDING, error="interrupted")
            raise
        except Exception as exc:  # an instructor bug must not take the run down, nor vanish
            log.exception("unit %s failed with an internal error", unit_id)
            message = f"internal error: {type(exc).__name__}: {exc}"
            await in_db_thread(self.store.finish_unit, unit_id, UnitState.FAILED, error=message)
            return UnitResult(unit_id, UnitState.FAILED, error=message)
