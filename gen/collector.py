"""The cyclic garbage collector paused while `gen run`, `gen enqueue` and `gen worker` start up, then resumed with
the start-up heap frozen out of its reach.

Importing the SDKs, SQLAlchemy, pydantic (and Celery) makes some 230,000 long-lived objects. With the collector
running, the ~330 young and 2 full collections it made among them cost 0.16-0.24 s of `gen run`'s start-up
before its first teacher request (measured with gc.callbacks), and every later full collection walked them all
again: 0.15 s in a 600-call `gen run`, 0.4 s in a worker, the event loop stopped meanwhile. Paused, then frozen
(`gc.freeze`, as Python's documentation suggests before a fork, for the same reason), they are never walked; the
start-up's own garbage (2,600 objects after the imports) stays in memory; everything made afterwards is collected
as usual.

Only these commands pause it: a library caller (tests, a notebook) keeps its collector as it is.
"""
from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Pause the collector for the start-up of a command (nothing to do if something else disabled it)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Start-up is over: what exists now is frozen (never collected, never walked again) and the collector runs
    again. Does nothing unless `pause` paused it, so it is safe on every path, and more than once."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
