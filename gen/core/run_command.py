"""`gen run FILE`: validate, (dry run: start a simulator), check keys and reachability, then run in-process.

Everything that can be refused is checked before the database is touched, so a refused run writes nothing.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from gen.config import read_job_file
from gen.core.jobs import load_instructor
from gen.core.local import run_job_locally
from gen.core.teachers import check_reachable
from gen.store import Store, UnitState


def say(message: str) -> None:
    print(f"gen run: {message}", file=sys.stderr, flush=True)


def run_job_file(db_url: str, file: Path, *, dry_run: bool = False, sim_latency: float = 0.2,
                 force_new: bool = False, quiet: bool = False, progress_every: float | None = None) -> int:
    spec = read_job_file(file)
    instructor = load_instructor(spec, database_url=db_url)
    planned = [(u.key, u.payload) for u in instructor.plan()]
    with contextlib.ExitStack() as stack:
        if dry_run:
            from gen.simulator import SimConfig, Simulator

            # seeded: a dry run of the same job file answers the same way every time
            sim = stack.enter_context(Simulator(SimConfig(latency=sim_latency, jitter=sim_latency / 2, seed=0)))
            spec = spec.with_simulator(sim.base_url)
            instructor = load_instructor(spec, database_url=db_url)
            say(f"dry run: every teacher is the simulator at {sim.base_url}")
        spec.check_keys()
        asyncio.run(check_reachable(spec))

        store = Store(db_url)
        stack.callback(store.close)
        job = None if force_new else store.find_resumable(spec.name, spec.spec_hash)
        if job is None:
            job = store.create_job(name=spec.name, instructor=spec.instructor_type, spec=spec.to_json(),
                                   spec_hash=spec.spec_hash, units=planned)
            say(f"job {job.id} ('{spec.name}', {spec.instructor_type}): {job.unit_count} units")
        else:
            if job.spec != spec.to_json():
                store.update_job_spec(job.id, spec.to_json())  # e.g. a raised run.budget_usd
            stats = store.stats(job.id)
            say(f"resuming job {job.id} ('{spec.name}'): {stats.finished_units} of {stats.total_units} units "
                "already finished")
        outcome = asyncio.run(run_job_locally(store, job.id, spec, instructor, quiet=quiet,
                                              progress_every=progress_every))
        stats = store.stats(job.id)
        failed = stats.units[UnitState.FAILED]
        say(f"job {job.id}: {stats.units[UnitState.DONE]} units done, {stats.units[UnitState.REJECTED]} rejected, "
            f"{failed} failed; {stats.records} records ({stats.duplicates} duplicates dropped); "
            f"{stats.calls} calls, ${stats.cost_usd:.4f}")
        if outcome.stopped_for:
            say(f"stopped: {outcome.stopped_for}; raise run.budget_usd and run again to continue")
            return 1
        if failed:
            say(f"{failed} units failed (see `gen status {job.id}`); run the same command again to retry them")
            return 1
        fmt = "dpo-trl" if store.record_counts(job.id).get("pair") else "sharegpt"
        say(f"export with: gen export {job.id} -o {spec.name}.jsonl --format {fmt}")
        return 0
