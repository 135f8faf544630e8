"""Teacher simulator: an OpenAI-compatible chat-completions server on loopback.

Used by tests, demos and benchmarks in place of a real teacher LLM.  See
``server.py`` for the request flow and the TPM charging rule, ``buckets.py``
for how RPM/TPM limits are enforced. The server (aiohttp) is imported only when
it is used, so `gen --help` does not pay for it.
"""

from .config import SimConfig

__all__ = ["SimConfig", "Simulator", "RunningSimulator", "build_app", "start_simulator"]


def __getattr__(name: str):
    if name in ("Simulator", "RunningSimulator", "start_simulator"):
        from . import running

        return getattr(running, name)
    if name == "build_app":
        from . import server

        return server.build_app
    raise AttributeError(f"module 'gen.simulator' has no attribute {name!r}")
