"""A worker's memory: glibc gives each thread that allocates its own malloc arena and keeps what the warm-up
used, so a worker with ~40 threads grew about 13% over its first 10,000 units and kept it. Two arenas hold the
plateau lower (bench/fleet.py memory; README Performance) at no throughput cost measured."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

from gen.errors import UsageError

M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(default: int = 2) -> bool:
    """Cap glibc's malloc arenas for the threads this process starts from now on, unless MALLOC_ARENA_MAX is set
    (glibc then read it at start). False where the C library is not glibc."""
    raw = os.environ.get("GEN_WORKER_MALLOC_ARENAS", "").strip() or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"GEN_WORKER_MALLOC_ARENAS must be a whole number of at least 1, not {raw!r}")
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(M_ARENA_MAX, int(raw)))
    except (OSError, AttributeError):  # not glibc: nothing to cap
        return False
