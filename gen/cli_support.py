"""What every `gen` command shares: one-line errors with their exit codes, and opening the database to read."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from gen.errors import GenError, UsageError
from gen.secrets import scrub

EXIT_INTERRUPTED = 130


def fail(message: str, code: int) -> None:
    click.echo(f"gen: error: {scrub(message)}", err=True)
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
            click.echo("\ngen: interrupted: run the same command again to continue", err=True)
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
