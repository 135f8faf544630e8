"""``gen simulate``: run the teacher simulator in the foreground until Ctrl-C."""

from __future__ import annotations

import os
import signal

import click

from .config import SimConfig

_RATE = click.FloatRange(0.0, 1.0)
_NON_NEGATIVE = click.FloatRange(min=0.0)
_FAULT_OPTIONS = ("error_rate", "hang_rate", "malformed_rate", "truncate_rate", "schema_violation_rate")


def _banner(url: str, config: SimConfig) -> str:
    parts = [f"rpm={config.rpm}", f"tpm={config.tpm}", f"latency={config.latency}",
             f"jitter={config.jitter}"]
    parts += [f"{name}={getattr(config, name)}" for name in _FAULT_OPTIONS if getattr(config, name)]
    if config.reject_json_schema:
        parts.append("reject_json_schema=True")
    if config.seed is not None:
        parts.append(f"seed={config.seed}")
    return f"gen simulate: listening on {url} ({', '.join(parts)})"


async def _serve(config: SimConfig) -> None:
    import asyncio

    from .running import start_simulator  # aiohttp is imported only when serving

    try:
        running = await start_simulator(config)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {reason}") from None
    click.echo(_banner(running.base_url, config), err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Both signals explicitly: a process started from a background shell inherits SIGINT ignored, and asyncio
    # only takes over SIGINT when it is at its default.
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await running.stop()


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8700, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 = any free port).")
@click.option("--latency", default=0.5, show_default=True, type=_NON_NEGATIVE,
              help="Seconds each successful answer waits.")
@click.option("--jitter", default=0.1, show_default=True, type=_NON_NEGATIVE,
              help="Uniform +- jitter on the latency, seconds.")
@click.option("--rpm", default=0, show_default=True, type=click.IntRange(min=0),
              help="Requests per minute (0 = unlimited).")
@click.option("--tpm", default=0, show_default=True, type=click.IntRange(min=0),
              help="Tokens per minute (0 = unlimited).")
@click.option("--error-rate", default=0.0, type=_RATE, help="Probability of a 500/503 answer.")
@click.option("--hang-rate", default=0.0, type=_RATE, help="Probability of never answering.")
@click.option("--malformed-rate", default=0.0, type=_RATE, help="Probability of a non-JSON 200 body.")
@click.option("--truncate-rate", default=0.0, type=_RATE, help="Probability of a cut answer (length).")
@click.option("--schema-violation-rate", default=0.0, type=_RATE,
              help="Probability of JSON that violates the requested schema.")
@click.option("--reject-json-schema", is_flag=True, help="Answer 400 to response_format json_schema.")
@click.option("--seed", default=None, type=int, help="Seed for reproducible content and faults.")
def simulate(**options: object) -> None:
    """Serve a simulated OpenAI-compatible teacher until Ctrl-C."""
    try:
        config = SimConfig(**options)  # type: ignore[arg-type]
    except ValueError as exc:
        field = str(exc).split(" ", 1)[0]
        hint = f"--{field.replace('_', '-')}" if field in options else None
        raise click.BadParameter(str(exc), param_hint=hint) from None
    try:
        import asyncio

        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass
