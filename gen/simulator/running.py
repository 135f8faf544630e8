"""Running the simulator: inside the current event loop (`start_simulator`) or on a thread of its own
(`Simulator`, the context manager tests, demos and `gen run --dry-run` use). The app itself is gen.simulator.server."""
from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

from aiohttp import web

from .config import SimConfig
from .server import SHUTDOWN_TIMEOUT_S, STATE_KEY, SimulatorState, build_app


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class RunningSimulator:
    """A simulator serving inside the current event loop (see ``start_simulator``)."""

    def __init__(self, runner: web.AppRunner, state: SimulatorState, port: int) -> None:
        self._runner = runner
        self.state = state
        self.port = port
        self.server_url = f"http://{_url_host(state.config.host)}:{port}"
        self.base_url = f"{self.server_url}/v1"

    @property
    def config(self) -> SimConfig:
        return self.state.config

    def stats(self) -> dict[str, Any]:
        return copy.deepcopy(self.state.stats)

    def configure(self, **patch: Any) -> SimConfig:
        return self.state.configure(patch)

    def reset_stats(self) -> None:
        self.state.reset_stats()

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_simulator(config: SimConfig | None = None) -> RunningSimulator:
    """Start serving in the running loop; returns once the port is listening."""
    config = config or SimConfig()
    app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True,
                           shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    return RunningSimulator(runner, app[STATE_KEY], port)


class Simulator:
    """The simulator on a background thread with its own event loop.

    ``with Simulator(SimConfig(latency=0.01)) as sim: ... sim.base_url ...``
    """

    def __init__(self, config: SimConfig | None = None, *, start_timeout: float = 10.0) -> None:
        self._config = config or SimConfig()
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running: RunningSimulator | None = None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def running(self) -> RunningSimulator:
        if self._running is None:
            raise RuntimeError("simulator is not running")
        return self._running

    base_url = property(lambda self: self.running.base_url)
    server_url = property(lambda self: self.running.server_url)
    port = property(lambda self: self.running.port)
    config = property(lambda self: self.running.config)

    def start(self) -> "Simulator":
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._running = loop.run_until_complete(start_simulator(self._config))
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="gen-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(self._start_timeout):
            raise RuntimeError("simulator did not start in time")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def _on_loop(self, func: Any, *args: Any) -> Any:
        async def call() -> Any:
            return func(*args)
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        return self._on_loop(self.running.stats)

    def configure(self, **patch: Any) -> SimConfig:
        return self._on_loop(self.running.state.configure, patch)

    def reset_stats(self) -> None:
        self._on_loop(self.running.reset_stats)

    def script(self, rules: list[dict[str, Any]]) -> None:
        """Scripted answers (see SimulatorState.set_script); an empty list turns scripting off."""
        self._on_loop(self.running.state.set_script, rules)

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, running = self._loop, self._running
        try:
            if running is not None:
                asyncio.run_coroutine_threadsafe(running.stop(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=10)
            self._thread, self._loop, self._running = None, None, None
