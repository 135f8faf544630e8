"""The TLS context the teachers' HTTP clients verify servers with: one per process, its certificates loaded on a
thread while the command starts up.

It is the context the SDKs' HTTP client builds when given none (`httpx2.create_ssl_context()`: the system's CA
certificates; SSL_CERT_FILE / SSL_CERT_DIR honoured). Each client used to build its own: 20-30 ms of CPU per
teacher, on the way to the first request of `gen run` and of every job a worker opens. OpenSSL releases the GIL
while it reads the certificates, so `prepare()` has that overlap the rest of the start-up; `context()` returns
the context, waiting for that thread if it is not done. Python's ssl documentation recommends one context
shared by the connections of a process.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

_lock = threading.Lock()
_built: Future | None = None


def prepare() -> None:
    """Import the HTTP client library (here, in the caller's thread) and start loading the certificates on a
    thread, unless that was done already."""
    import httpcore2  # noqa: F401  (what httpx2.create_ssl_context imports: not on the other thread)
    import httpx2  # noqa: F401

    _start(in_thread=True)


def context() -> ssl.SSLContext:
    """The process's context (built here if `prepare` was not called). A failure to build it (a bad
    SSL_CERT_FILE) is raised here, as the SDK raised it when it built its own."""
    return _start(in_thread=False).result()


def _start(*, in_thread: bool) -> Future:
    global _built
    with _lock:
        future, first = _built, _built is None
        if first:
            future = _built = Future()
    assert future is not None
    if first:
        if in_thread:
            threading.Thread(target=_build, args=(future,), name="gen-tls", daemon=True).start()
        else:
            _build(future)
    return future


def _build(future: Future) -> None:
    try:
        import httpx2

        future.set_result(httpx2.create_ssl_context())
    except BaseException as exc:  # handed to whoever asks for the context
        future.set_exception(exc)
