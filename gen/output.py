"""Where `gen export -o PATH` writes: a file written beside its destination and renamed into place at the end,
so a refused or interrupted export never leaves half a file where a trainer would read it.

What PATH may be: `-` (stdout), a new file in an existing folder, or an existing regular file (replaced, keeping
its permissions). A symlink to a regular file is written *through*: its target is replaced and the link stays.
Anything else is refused with one line before anything is written: a folder, a FIFO, a device, a socket,
a symlink to one of those or to nothing, a folder that does not exist or cannot be written.
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from gen.errors import GenError, UsageError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class Destination:
    """One export destination: checked when made, opened once, committed (renamed into place) or discarded."""

    def __init__(self, output: str):
        self.output = output
        self.to_stdout = output == "-"
        self.target: Path | None = None if self.to_stdout else resolve_target(output)
        self._tmp: str | None = None
        self._sink: TextIO | None = None
        self._mode = 0o600

    def open(self) -> TextIO:
        if self.to_stdout:
            return sys.stdout
        assert self.target is not None
        try:
            self._mode = stat.S_IMODE(os.stat(self.target).st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            self._mode = 0o666 & ~umask
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".part", dir=self.target.parent)
        except OSError as exc:
            raise UsageError(f"cannot write {self.output}: {exc.strerror or type(exc).__name__} "
                             f"(in {self.target.parent})") from None
        self._sink = os.fdopen(fd, "w", encoding="utf-8")
        return self._sink

    def commit(self) -> None:
        """Flush, and put the finished file in place of the destination."""
        if self.to_stdout:
            sys.stdout.flush()
            return
        if self._sink is None or self._tmp is None:
            return
        self._sink.close()
        try:
            os.chmod(self._tmp, self._mode)
            os.replace(self._tmp, self.target)  # type: ignore[arg-type]
        except OSError as exc:
            raise GenError(f"cannot write {self.output}: {exc.strerror or type(exc).__name__}") from None
        finally:
            self.discard()
        self._tmp = None

    def discard(self) -> None:
        """Remove the unfinished file (no-op once committed)."""
        if self._sink is not None and not self._sink.closed:
            self._sink.close()
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = None


def resolve_target(output: str) -> Path:
    """The regular file an export to `output` replaces (a symlink's target), or a UsageError saying why not."""
    path = Path(output).expanduser()
    if os.path.islink(path):
        target = Path(os.path.realpath(path))
        if not target.exists():
            raise UsageError(f"cannot write {output}: it is a symlink to {target}, which does not exist")
        shown = f"a symlink to {_kind(os.stat(target).st_mode)} ({target})"
    else:
        target = path
        shown = None
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or type(exc).__name__}") from None
    if mode is not None and not stat.S_ISREG(mode):
        what = shown or _kind(mode)
        raise UsageError(f"cannot write {output}: it is {what}, and gen export only writes regular files "
                         "(use -o - to write to a pipe)")
    parent = target.parent
    if not parent.exists():
        raise UsageError(f"cannot write {output}: folder {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"cannot write {output}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (mode is not None and not os.access(target, os.W_OK)):
        raise UsageError(f"cannot write {output}: permission denied")
    return target
