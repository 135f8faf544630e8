"""Teacher simulator: an OpenAI-compatible chat-completions server on loopback.

Used by tests, demos and benchmarks in place of a real teacher LLM.  See
``server.py`` for the request flow and the TPM charging rule, ``buckets.py``
for how RPM/TPM limits are enforced.
"""

from .config import SimConfig
from .server import RunningSimulator, Simulator, build_app, start_simulator

__all__ = ["SimConfig", "Simulator", "RunningSimulator", "build_app", "start_simulator"]
