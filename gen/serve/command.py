"""The `serve` and `report` commands (added to the `gen` group by gen.cli)."""
from __future__ import annotations

import getpass
import ipaddress
import os
import socket
import sys
from pathlib import Path

import click

from gen.cli_support import handle_errors, open_store
from gen.errors import GenError, UsageError

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _need_web_stack() -> None:
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"gen serve needs the web extra ({exc.name} is missing): pip install 'gen[serve]'") from None


def default_reviewer() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--token", envvar="GEN_SERVE_TOKEN", default=None, metavar="T",
              help="Every request must carry it (X-Gen-Token header, or open /?token=T once). [env GEN_SERVE_TOKEN]")
@click.option("--reviewer", default=None, metavar="NAME", help="Who review marks are recorded as (default: OS user).")
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, token: str | None, reviewer: str | None) -> None:
    """Review UI in the browser: jobs, plots, records, lineage and review marks (read-mostly)."""
    if not is_loopback(host) and not token:
        raise UsageError(f"--host {host} is not a loopback address: anyone who can reach it could read every "
                         "record, so pass --token T (every request must then carry it)")
    if token is not None and len(token) < 8:
        raise UsageError("--token must be at least 8 characters")
    _need_web_stack()
    import uvicorn

    from gen.serve.app import make_app

    store = open_store(ctx)
    app = make_app(store, reviewer=reviewer or default_reviewer(), token=token)
    try:  # bind first, so a busy port is a one-line error, not a traceback
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)  # connections made before the server runs wait in the backlog
    except OSError as exc:
        raise GenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    shown = f"[{host}]" if ":" in host else host
    bound = sock.getsockname()[1]
    hint = "?token=…" if token else ""
    click.echo(f"gen serve: http://{shown}:{bound}/{hint} (Ctrl-C stops)", err=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        store.close()


@click.command()
@click.argument("job")
@click.option("-o", "--output", required=True, metavar="PATH", help="The HTML file to write.")
@click.option("--sample", type=click.IntRange(min=0, max=1000), default=20, show_default=True,
              help="Kept records to include (and a quarter as many rejected ones).")
@click.pass_context
@handle_errors
def report(ctx: click.Context, job: str, output: str, sample: int) -> None:
    """One self-contained HTML file: a job's plots and a sample of its records."""
    _need_web_stack()
    from gen.serve.pages import report_html

    store = open_store(ctx)
    found = store.find_job(job)
    dest = Path(output)
    if dest.parent and not dest.parent.exists():
        raise UsageError(f"cannot write {output}: folder {dest.parent} does not exist")
    html = report_html(store, found.id, sample_size=sample)
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.write_text(html or "", encoding="utf-8")
    os.replace(tmp, dest)
    click.echo(f"gen report: job {found.id} ('{found.name}') written to {output}", err=True)
    sys.stdout.flush()
