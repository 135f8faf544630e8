"""`gen run FILE`: validate, (dry run: start a simulator), check keys and reachability, then run in-process.

Everything that can be refused is checked before the database is touched, so a refused run writes nothing.
One `gen run` process holds a job at a time: a second one on the same job is refused, naming the first.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from gen import collector
from gen.config import read_job_file
from gen.core.jobs import load_instructor
from gen.core.lifecycle import open_job
from gen.core.local import driver_name, run_job_locally
from gen.core.teachers import check_reachable
from gen.errors import UsageError
from gen.providers import tls
from gen.store import Store, UnitState

DRIVER_HOLD_SECONDS = 60.0  # renewed every 20 s while the run lives; a crashed run's hold lapses after this


def say(message: str) -> None:
    print(f"gen run: {message}", file=sys.stderr, flush=True)


def run_job_file(db_url: str, file: Path, *, dry_run: bool = False, sim_latency: float = 0.2,
                 force_new: bool = False, quiet: bool = False, progress_every: float | None = None,
                 restore_interrupt: bool = True) -> int:
    """Run a job file in this process; returns the exit code. Once a run has drained after Ctrl-C, further
    presses are ignored while it wraps up; `restore_interrupt` gives Ctrl-C back its default meaning after
    (the `gen` command does not: it exits right away, and a second press must not turn exit 130 into a
    traceback)."""
    _exit_without_collecting()
    try:
        return _run_job_file(db_url, file, dry_run=dry_run, sim_latency=sim_latency, force_new=force_new,
                             quiet=quiet, progress_every=progress_every)
    finally:
        import signal
        import threading

        collector.resume()  # if start-up ended early (a refusal, an error), the collector runs again all the same
        if restore_interrupt and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_job_file(db_url: str, file: Path, *, dry_run: bool, sim_latency: float, force_new: bool, quiet: bool,
                  progress_every: float | None) -> int:
    spec = read_job_file(file)
    instructor = load_instructor(spec, database_url=db_url)
    next(iter(instructor.plan()), None)  # inputs read and checked before anything is written
    file_hash = spec.spec_hash  # the job file's own (a dry run re-points the teachers)
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

        tls.prepare()  # the teachers' TLS context loads on a thread while the database is prepared
        store = Store(db_url)
        stack.callback(store.close)
        opened = open_job(store, spec, instructor, resume=not force_new)
        job = opened.job
        me = driver_name()
        holder = store.take_driver(job.id, f"local:{me}", DRIVER_HOLD_SECONDS)
        if holder is not None and _dead_here(holder):  # a gen run on this machine that was killed: take over
            store.release_driver(job.id, holder)
            holder = store.take_driver(job.id, f"local:{me}", DRIVER_HOLD_SECONDS)
        if holder is not None:
            raise UsageError(f"job {job.id} is being run right now by another gen run (pid {_pid_of(holder)}): "
                             "wait for it to finish or stop it, then run this command again")
        stack.callback(store.release_driver, job.id, f"local:{me}")
        if opened.created:
            say(f"job {job.id} ('{spec.name}', {spec.instructor_type}): planning its units")
            from gen.core.estimate import estimate_for_new_job, one_line

            say(one_line(estimate_for_new_job(store, job.id, spec, instructor, file_hash=file_hash)))
        else:
            stats = store.stats(job.id)
            say(f"resuming job {job.id} ('{spec.name}'): {stats.finished_units} of {stats.total_units} units "
                "already finished")
        job = store.get_job(job.id) or job
        try:
            outcome = asyncio.run(run_job_locally(store, job, spec, instructor, quiet=quiet,
                                                  progress_every=progress_every))
            _ignore_interrupts_while_wrapping_up()  # asyncio.run put the default handler back on its way out
        except KeyboardInterrupt:
            stats = store.stats(job.id)
            say(f"stopped at once: {stats.finished_units} of {stats.total_units} units finished and kept; calls "
                "cut off were recorded as cancelled (a provider may still bill them); run the same command again "
                "to resume")
            raise SystemExit(130) from None
        stats = store.stats(job.id)
        failed = stats.units[UnitState.FAILED]
        say(f"job {job.id}: {stats.units[UnitState.DONE]} units done, {stats.units[UnitState.REJECTED]} rejected, "
            f"{failed} failed; {stats.records} records ({stats.duplicates} duplicates dropped); "
            f"{stats.calls} calls, ${stats.cost_usd:.4f}")
        if spec.target is not None:
            from gen.core.target import accepted_records

            accepted = accepted_records(store, job.id)
            say(f"target: {min(accepted, spec.target)} of {spec.target} records accepted"
                + ("" if accepted >= spec.target or outcome.stopped_for or outcome.interrupted
                   else "; the plan ran out first (raise instructor.count)"))
        if outcome.interrupted:
            say(f"interrupted: the {outcome.drained_calls} calls in flight finished and were recorded; "
                f"{stats.finished_units} of {stats.total_units} units are finished and kept, the rest are pending; "
                "run the same command again to resume (answers already paid for are replayed, not bought again)")
            return 130
        if outcome.stopped_for:
            say(f"stopped: {outcome.stopped_for}; raise run.budget_usd and run again to continue")
            return 1
        if failed:
            say(f"{failed} units failed (see `gen status {job.id}`); run the same command again to retry them")
            return 1
        fmt = "dpo-trl" if store.record_counts(job.id).get("pair") else "messages"
        say(f"export with: gen export {job.id} -o {spec.name}.jsonl --format {fmt}")
        return 0


def _exit_without_collecting() -> None:
    """When this process exits, skip the interpreter's final garbage collections: with the SDKs, pydantic and
    SQLAlchemy loaded they took 0.5-1.4 s after the last line was printed (measured with bench/rate.py), which a
    user waits for and the OS reclaims anyway. Files, the database and the teachers are closed before then;
    atexit handlers and weakref finalizers still run. Registered once, at exit only: a long-lived caller (tests,
    a notebook) keeps its collector."""
    global _freeze_registered
    if not _freeze_registered:
        import atexit
        import gc

        atexit.register(gc.freeze)
        _freeze_registered = True


_freeze_registered = False


def _ignore_interrupts_while_wrapping_up() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # SIG_IGN: interpreter shutdown keeps it, a function it resets


def _pid_of(holder: str) -> str:
    return holder.removeprefix("local:").split("@", 1)[0]


def _dead_here(holder: str) -> bool:
    """The holder is a process of this machine that no longer runs."""
    import os
    import socket

    pid, _, host = holder.removeprefix("local:").partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
