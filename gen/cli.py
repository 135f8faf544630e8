"""The `gen` command. Each command is a thin layer over the library; errors become one line and an exit code."""
from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path

from typing import TYPE_CHECKING

import click

from gen import collector
from gen.cli_support import EXIT_INTERRUPTED, fail, handle_errors, open_store  # noqa: F401
from gen.errors import UsageError
from gen.secrets import install_log_scrubber

if TYPE_CHECKING:
    from gen.config import JobSpec

# Each command imports what it uses, when it runs: `gen --help` loads neither the database layer, the SDKs nor
# the simulator (tests/test_imports.py).


class _Commands(click.Group):
    """The `gen` group. Commands defined in other modules (`simulate`, `serve`, `report`) are imported when one
    of them is run or the commands are listed (`gen --help`), so other commands do not import their modules."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = {}  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy.pop(cmd_name).partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_url", metavar="URL", help="Database URL (default: $GEN_DATABASE_URL or sqlite:///gen.db).")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (never keys).")
@click.version_option(package_name="gen")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, verbose: bool) -> None:
    """gen: synthetic conversations from teacher models, exported as training JSONL."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from gen.config import load_settings

    install_log_scrubber()  # keys and URL passwords never reach a log line
    ctx.ensure_object(dict)
    if db_url:
        os.environ["GEN_DATABASE_URL"] = db_url  # instructors that read an earlier job at plan time look here
    ctx.obj["db"] = db_url or load_settings().database_url


def plan_units(spec: JobSpec):
    from gen.core.jobs import load_instructor

    instructor = load_instructor(spec)
    return instructor, [(u.key, u.payload) for u in instructor.plan()]


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@handle_errors
def validate(file: Path) -> None:
    """Check a job file (schema, instructor options, inputs) without running anything."""
    from gen.config import read_job_file

    spec = read_job_file(file)
    _, units = plan_units(spec)
    teachers = ", ".join(f"{n} ({t.provider}:{t.model})" for n, t in spec.teachers.items())
    click.echo(f"{file}: ok: job '{spec.name}', instructor {spec.instructor_type}, {len(units)} units; "
               f"teachers: {teachers}")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sample", type=click.IntRange(min=0, max=10_000), default=0, show_default=True,
              help="Run this many units for real (charged) and extrapolate their measured cost.")
@click.option("--dry-run", is_flag=True, help="With --sample: the teachers are a simulator started here.")
@click.option("--sim-latency", type=click.FloatRange(min=0), default=0.2, show_default=True)
@click.pass_context
@handle_errors
def estimate(ctx: click.Context, file: Path, sample: int, dry_run: bool, sim_latency: float) -> None:
    """Calls, tokens and dollars a job will cost, per teacher, low-high, before spending."""
    from gen.core.estimate import run_estimate_command

    result = run_estimate_command(ctx.obj["db"], file, sample=sample, dry_run=dry_run, sim_latency=sim_latency)
    for line in result.lines():
        click.echo(line)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Point every teacher at a simulator started here: no keys, no cost.")
@click.option("--sim-latency", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="With --dry-run: the simulator's answer latency in seconds.")
@click.option("--new", "force_new", is_flag=True, help="Start a new job even if this one exists (default: resume).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.pass_context
@handle_errors
def run(ctx: click.Context, file: Path, dry_run: bool, sim_latency: float, force_new: bool, quiet: bool) -> None:
    """Run a job in this process. Ctrl-C stops cleanly; the same command again resumes."""
    collector.pause()  # until the teachers are built (gen.collector): 0.16-0.24 s less before the first request
    from gen.core.run_command import run_job_file

    code = run_job_file(ctx.obj["db"], file, dry_run=dry_run, sim_latency=sim_latency, force_new=force_new,
                        quiet=quiet, restore_interrupt=False)
    sys.exit(code)


@cli.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-w", "--watch", is_flag=True, help="Refresh every --every seconds until the job is finished.")
@click.option("--every", type=click.FloatRange(min=0.2), default=2.0, show_default=True)
@click.pass_context
@handle_errors
def status(ctx: click.Context, job: str | None, as_json: bool, watch: bool, every: float) -> None:
    """Where a job stands (default: the newest job)."""
    import time

    from gen.core.report import status_dict, status_lines
    from gen.store.states import HALTED

    store = open_store(ctx)
    if job is None:
        jobs = store.list_jobs()
        if not jobs:
            raise UsageError("no jobs in this database yet (start one with `gen run FILE`)")
        job = jobs[0].id
    found = store.find_job(job)
    while True:
        found = store.get_job(found.id)
        if as_json:
            click.echo(json.dumps(status_dict(store, found), indent=2))
        else:
            if watch and sys.stdout.isatty():
                click.clear()
            for line in status_lines(store, found):
                click.echo(line)
        d = status_dict(store, found)
        # planning_done: between two waves of target mode (or chunks of a huge plan) nothing may be pending
        settled = (d["units"]["pending"] == d["units"]["running"] == 0 and found.planning_done) \
            or found.status in HALTED
        if not watch or settled:
            return
        time.sleep(every)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--queue", default="gen", show_default=True, help="The Celery queue to send the units to.")
@click.option("--new", "force_new", is_flag=True, help="Start another job even if this file's job exists.")
@click.option("--no-key-check", is_flag=True, help="Don't require the teachers' keys here (only workers hold them).")
@click.pass_context
@handle_errors
def enqueue(ctx: click.Context, file: Path, queue: str, force_new: bool, no_key_check: bool) -> None:
    """Record a job and send its units to the worker fleet; returns at once."""
    collector.pause()  # until the job is recorded (gen.collector): its first units reach the workers sooner
    try:
        from gen.core.fleet import enqueue_job_file

        job = enqueue_job_file(ctx.obj["db"], file, _dispatcher(), queue=queue, force_new=force_new,
                               check_keys=not no_key_check)
    finally:
        collector.resume()
    click.echo(job.id)
    target = job.spec.get("target")
    wave = (f" (target mode: a first wave; the workers plan the next ones until {target} records pass)"
            if target else "")
    click.echo(f"gen enqueue: job {job.id} ('{job.name}'): {job.unit_count} units sent to queue '{queue}'{wave}; "
               f"watch with: gen status {job.id} --watch", err=True)


@cli.command()
@click.option("-c", "--concurrency", type=click.IntRange(min=1, max=5000), default=20, show_default=True,
              help="Task messages (batches of units) handled at once by this worker process.")
@click.option("-Q", "--queues", default="gen", show_default=True, help="Comma-separated queues to consume.")
@click.option("-n", "--hostname", default=None, help="Celery node name (default: gen@HOST).")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("-E", "--events", is_flag=True, help="Send task events (for Flower).")
@handle_errors
def worker(concurrency: int, queues: str, hostname: str | None, loglevel: str, events: bool) -> None:
    """Start a worker: one process, one event loop, many units in flight."""
    collector.pause()  # until its runtime is up (worker.runtime.get_runtime resumes it; gen.collector)
    from gen.store import Store
    from worker.app import get_app
    from worker.dispatch import check_broker
    from worker.memory import limit_malloc_arenas
    from worker.settings import fleet_settings

    limit_malloc_arenas()  # before any pool thread exists (README Performance: worker memory)
    settings = fleet_settings()
    check_broker(settings.redis_url)  # a worker that cannot reach its queue or database says so and exits
    Store(settings.database_url).close()
    argv = ["worker", "--pool=threads", f"--concurrency={concurrency}", f"--queues={queues}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if events:
        argv.append("--task-events")
    get_app().worker_main(argv)


@cli.command()
@click.argument("job")
@click.pass_context
@handle_errors
def cancel(ctx: click.Context, job: str) -> None:
    """Stop dispatching a job's units; calls in flight finish and are kept."""
    from gen.store.states import JobState

    store = open_store(ctx)
    found = store.find_job(job)
    if not store.set_job_status(found.id, JobState.CANCELLED, "cancelled by gen cancel"):
        raise UsageError(f"job {found.id} is {found.status}: nothing to cancel")
    click.echo(f"gen cancel: job {found.id} cancelled; units in flight finish; `gen resume {found.id}` continues it",
               err=True)
    from gen.batching.report import cancel_batches
    from gen.config import JobSpec

    cancelled = cancel_batches(store, found.id, JobSpec.from_json(found.spec))
    if cancelled:
        click.echo(f"gen cancel: {cancelled} provider batches cancelled", err=True)


@cli.command()
@click.argument("job")
@click.option("--budget-usd", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Raise (or set) the job's budget before resuming.")
@click.pass_context
@handle_errors
def resume(ctx: click.Context, job: str, budget_usd: float | None) -> None:
    """Send again every unit of a job that is not finished and not in flight (after a cancel, budget stop or lost queue)."""
    from gen.core.fleet import resume_job

    store = open_store(ctx)
    found = store.find_job(job)
    sent = resume_job(store, found, _dispatcher(), budget_usd=budget_usd)
    click.echo(f"gen resume: job {found.id}: {sent} units sent to queue '{found.queue}'", err=True)


def _dispatcher():
    """The fleet's queue (Celery on Redis), the one place the CLI reaches into worker/."""
    from worker.app import get_app
    from worker.dispatch import CeleryDispatcher
    from worker.settings import fleet_settings

    return CeleryDispatcher(get_app(), fleet_settings().redis_url)


@cli.command()
@click.pass_context
@handle_errors
def jobs(ctx: click.Context) -> None:
    """The jobs in this database, newest first."""
    from gen.core.report import jobs_table

    for line in jobs_table(open_store(ctx)):
        click.echo(line)


@cli.command()
@click.argument("job")
@click.option("-o", "--output", required=True, metavar="PATH", help="Where to write the JSONL ('-' for stdout).")
@click.option("-f", "--format", "fmt", default="messages", show_default=True,
              type=click.Choice(["messages", "sharegpt", "alpaca", "text", "dpo-trl", "dpo-axolotl",
                                 "dpo-chatml-intel", "kto"]))
@click.option("--template", type=click.Choice(["airoboros", "llama2", "alpaca", "chatml", "human-response"]),
              help="With --format text: the prompt template to render.")
@click.option("--all-templates", is_flag=True, help="With --format text: one line per record and template.")
@click.option("--include", "include", default="", metavar="unchecked,unverified",
              help="Also export records whose code was not checked / whose riddle answer was disputed.")
@click.option("--no-filter", is_flag=True, help="Keep refusals and AI disclaimers.")
@click.option("--filter-phrase", multiple=True, metavar="TEXT", help="Also drop conversations containing TEXT.")
@click.option("--filter-pattern", multiple=True, metavar="REGEX",
              help="Also drop conversations matching REGEX (case-insensitive).")
@click.option("--meta", "with_meta", is_flag=True, help="Add each record's metadata (teacher, judge scores) as `metadata`.")
@click.option("--rejected", is_flag=True, help="Export the conversations rejected (kept for review) instead.")
@click.pass_context
@handle_errors
def export(ctx: click.Context, job: str, output: str, fmt: str, template: str | None, all_templates: bool,
           include: str, no_filter: bool, filter_phrase: tuple[str, ...], filter_pattern: tuple[str, ...],
           with_meta: bool, rejected: bool) -> None:
    """Write a job's conversations as training JSONL."""
    from gen.export import RefusalFilter, export_job

    try:
        refusal_filter = None if no_filter else RefusalFilter(extra_phrases=filter_phrase,
                                                              extra_patterns=filter_pattern)
    except ValueError as exc:
        raise UsageError(f"--filter-pattern: {exc}") from None
    store = open_store(ctx)
    found = store.find_job(job)
    report = export_job(store, found.id, output, fmt, refusal_filter=refusal_filter, with_meta=with_meta,
                        rejected=rejected, include=[p.strip() for p in include.split(",") if p.strip()],
                        template=template, all_templates=all_templates)
    dropped = f"; {report.filtered} dropped by the refusal filter" if refusal_filter else ""
    held = "".join(f"; {n} held back as {why} (--include {why})" for why, n in report.held_back.items())
    click.echo(f"gen export: {report.written} {fmt} lines written to {output}{dropped}{held}", err=True)


@cli.command()
@handle_errors
def instructors() -> None:
    """The installed instructors (entry-point group gen.instructors)."""
    from gen.instructors import available_instructors

    for name, cls in available_instructors().items():
        roles = ", ".join(cls.teacher_roles)
        click.echo(f"{name:12} {cls.summary}  [teachers: {roles}]")


def _add_simulator() -> None:
    cli.lazy["simulate"] = "gen.simulator.command:simulate"


def _add_serve() -> None:
    cli.lazy.update(serve="gen.serve.command:serve", report="gen.serve.command:report")
@click.command("assemble")
@click.argument("config", required=False, type=click.Path(path_type=Path))
@click.option("--job", "jobs", multiple=True, metavar="REF[=PRIORITY]", help="A job (id or name) as a source.")
@click.option("--file", "files", multiple=True, metavar="PATH[=PRIORITY]", help="A JSONL file as a source.")
@click.option("--benchmark", "benchmarks", multiple=True, metavar="FILE", help="Drop rows matching its items.")
@click.option("-o", "--output", help="Where to write the training set ('-' for stdout).")
@click.option("-f", "--format", "fmt", help="sharegpt (default), messages or alpaca.")
@click.option("--ngram", type=int, help="Word n-gram size for decontamination (default 8).")
@click.option("--ngram-overlap", type=float, help="Share of a benchmark item's n-grams that drops a row (0.5).")
@click.option("--near-dup-threshold", type=float, help="Similarity that drops a row as a near-duplicate (0.8).")
@click.option("--report", help="A JSONL file listing every dropped row and why.")
@click.option("--meta", is_flag=True, default=None, help="Add `metadata` (source, uuid) to each line.")
@click.pass_context
@handle_errors
def assemble_cmd(ctx: click.Context, config: Path | None, **options) -> None:
    """Combine jobs and JSONL files into one training set: priorities, dedup, decontamination."""
    from gen.assemble import assemble, spec_from_options

    spec = spec_from_options(config, **options)
    store = open_store(ctx) if any(s.job is not None for s in spec.sources) else None
    report = assemble(spec, store=store)
    for line in report.lines():
        click.echo(line, err=True)


def _add_assemble() -> None:
    cli.add_command(assemble_cmd)


def main() -> None:
    import atexit
    import gc

    # Every command: skip the interpreter's final garbage collections at exit (0.5-1.4 s with the SDKs and
    # SQLAlchemy loaded; gen.core.run_command does the same for gen run when called as a library).
    atexit.register(gc.freeze)
    _add_simulator()
    _add_serve()
    _add_assemble()
    cli(prog_name="gen")


if __name__ == "__main__":
    main()
