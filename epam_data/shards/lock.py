"""A file lock (exclusive or shared) that the kernel releases when its holder dies, even by kill -9.

Two locks guard a prepared dataset folder (docs/shard-schema.md): one per writer part (a second
writer of the same part is refused) and `.index.lock`, held while index.csv, failures.csv or
dataset.json change.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11 on

__all__ = ["FileLock"]


class FileLock:
    """An exclusive `flock` on a small file; released by the kernel when the process dies, even by
    kill -9.

    Where the platform or file system has no such locks (Windows, NFS without a lock manager),
    acquiring always succeeds: atomic renames still keep every file whole, only concurrent writers
    lose their guard.
    """

    def __init__(self, path: Path):
        self.path = path
        self._stream: Any = None

    def acquire(self, *, blocking: bool = True, shared: bool = False) -> bool:
        """Take the lock (with `shared`, a lock many may hold while nobody holds it exclusively);
        False only when `blocking` is off and another process holds it in a conflicting mode."""
        try:
            import fcntl
        except ImportError:  # Windows
            return True
        self._stream = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            fcntl.flock(self._stream.fileno(), mode | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self._stream.close()
            self._stream = None
            return False
        except OSError:  # ENOLCK, EOPNOTSUPP: no locks on this file system
            return True
        return True

    def holder(self) -> str:
        """Who holds the lock, as its holder noted it (for the message that refuses a second
        writer)."""
        with contextlib.suppress(OSError):
            return self.path.read_text(encoding="utf-8").strip()
        return ""

    def note_holder(self) -> None:
        """Write our pid and host into the lock file, so that a refused writer can say who runs."""
        if self._stream is not None:
            self._stream.seek(0)
            self._stream.truncate()
            self._stream.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            self._stream.flush()

    def release(self) -> None:
        if self._stream is not None:
            self._stream.close()  # closing the descriptor releases the lock
            self._stream = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
