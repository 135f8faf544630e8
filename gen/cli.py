"""The `gen` command. Each command is a thin layer over the library; errors become one line and an exit code."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from pathlib import Path

import click

from gen.config import JobSpec, load_settings, read_job_file
from gen.errors import GenError, UsageError

EXIT_INTERRUPTED = 130


def fail(message: str, code: int) -> None:
    click.echo(f"gen: error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn):
    """Every GenError is one line on stderr and its exit code (2 for what the user asked, 1 at run time)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GenError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\ngen: interrupted; nothing paid for is lost: run the same command again to resume",
                       err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def open_store(ctx: click.Context):
    """The database for commands that only read: a missing SQLite file is an error, not a new database."""
    from sqlalchemy.engine import make_url

    from gen.store import Store

    url = ctx.obj["db"]
    if url.startswith("sqlite:///"):
        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).exists():
            raise UsageError(f"no gen database at {path} (run a job first, or point --db / GEN_DATABASE_URL at one)")
    return Store(url)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_url", metavar="URL", help="Database URL (default: $GEN_DATABASE_URL or sqlite:///gen.db).")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (never keys).")
@click.version_option(package_name="gen")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, verbose: bool) -> None:
    """gen: synthetic conversations from teacher models, exported as training JSONL."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
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
    spec = read_job_file(file)
    _, units = plan_units(spec)
    teachers = ", ".join(f"{n} ({t.provider}:{t.model})" for n, t in spec.teachers.items())
    click.echo(f"{file}: ok: job '{spec.name}', instructor {spec.instructor_type}, {len(units)} units; "
               f"teachers: {teachers}")


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
    from gen.core.run_command import run_job_file

    code = run_job_file(ctx.obj["db"], file, dry_run=dry_run, sim_latency=sim_latency, force_new=force_new,
                        quiet=quiet)
    sys.exit(code)


@cli.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handle_errors
def status(ctx: click.Context, job: str | None, as_json: bool) -> None:
    """Where a job stands (default: the newest job)."""
    from gen.core.report import status_lines, status_dict

    store = open_store(ctx)
    if job is None:
        jobs = store.list_jobs()
        if not jobs:
            raise UsageError("no jobs in this database yet (start one with `gen run FILE`)")
        job = jobs[0].id
    found = store.find_job(job)
    if as_json:
        click.echo(json.dumps(status_dict(store, found), indent=2))
    else:
        for line in status_lines(store, found):
            click.echo(line)


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
@click.option("-f", "--format", "fmt", type=click.Choice(["sharegpt", "messages", "alpaca"]), default="sharegpt",
              show_default=True)
@click.option("--no-filter", is_flag=True, help="Keep refusals and AI disclaimers.")
@click.option("--filter-phrase", multiple=True, metavar="TEXT", help="Also drop conversations containing TEXT.")
@click.pass_context
@handle_errors
def export(ctx: click.Context, job: str, output: str, fmt: str, no_filter: bool, filter_phrase: tuple[str, ...]
           ) -> None:
    """Write a job's conversations as training JSONL."""
    from gen.export import DEFAULT_REFUSAL_PHRASES, RefusalFilter, export_job

    store = open_store(ctx)
    found = store.find_job(job)
    refusal_filter = None if no_filter else RefusalFilter([*DEFAULT_REFUSAL_PHRASES, *filter_phrase])
    report = export_job(store, found.id, output, fmt, refusal_filter=refusal_filter)
    dropped = f"; {report.filtered} dropped by the refusal filter" if refusal_filter else ""
    click.echo(f"gen export: {report.written} {fmt} lines written to {output}{dropped}", err=True)


@cli.command()
@handle_errors
def instructors() -> None:
    """The installed instructors (entry-point group gen.instructors)."""
    from gen.instructors import available_instructors

    for name, cls in available_instructors().items():
        roles = ", ".join(cls.teacher_roles)
        click.echo(f"{name:12} {cls.summary}  [teachers: {roles}]")


def _add_simulator() -> None:
    from gen.simulator.command import simulate

    cli.add_command(simulate)


def main() -> None:
    _add_simulator()
    cli(prog_name="gen")


if __name__ == "__main__":
    main()
