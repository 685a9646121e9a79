"""Run a function over items in worker processes that may crash or hang, and lose only the item that
did it.

A corrupt video can make a native decoder abort (`std::bad_alloc`, rc 134), segfault or loop
forever. Inside the main process that ends the whole run and loses the finished samples of the open
shard; inside a joblib worker it ends the run too (`TerminatedWorkerError`). Here each worker is a
process of its own, watched by the caller: when one dies or runs past the time limit, the item it
held becomes one result made by `on_lost` (which names the cause and the last line the worker
printed), the worker is replaced, and the other items go on. A worker is a fresh interpreter
(`python -m epam_data.supervisor FD`, about a second to start), so nothing of the caller's threads
or main script is copied into it: multiprocessing's spawn would re-run a caller's script that has no
`if __name__ == "__main__"` guard, and fork is unsafe in a threaded parent.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import IO, Any, TypeVar

from epam_data.errors import one_line

__all__ = ["supervised_map"]

Item = TypeVar("Item")
Result = TypeVar("Result")
STDERR_TAIL = 2000  # bytes of a dead worker's stderr searched for its last words


def _serve(conn: Connection) -> None:
    """A worker's life: receive (function, item), send back function(item), until told to stop
    (None)."""
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        function, item = job
        conn.send(function(item))


# How on_lost's reason begins, so that callers can add their own hint: "the worker process ...
# was killed by SIGSEGV after printing '...'" or "took longer than 30 s".
CRASHED = "the worker process"
LATE = "took longer than"


def _cause(code: int) -> str:
    """A process's return code in words: 'was killed by SIGABRT', 'exited with code 3'."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


@dataclass
class _Worker:
    """One worker process, joined to the caller by a socket pair; its stderr goes to a temporary
    file."""

    process: subprocess.Popen
    conn: Connection
    stderr: IO[bytes]
    item: Any = None
    deadline: float = float("inf")

    @classmethod
    def start(cls) -> _Worker:
        ours, theirs = socket.socketpair()
        stderr = tempfile.TemporaryFile()
        command = [sys.executable, "-m", "epam_data.supervisor", str(theirs.fileno())]
        process = subprocess.Popen(
            command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stderr=stderr
        )
        theirs.close()
        return cls(process, Connection(ours.detach()), stderr)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.conn.close()
        self.stderr.close()

    def death(self) -> str:
        """Why the process ended, with the last line it wrote to stderr (a decoder's own words, if
        any)."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.stderr.seek(max(0, self.stderr.seek(0, 2) - STDERR_TAIL))
        text = self.stderr.read().decode(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return _cause(code) + (f" after printing {one_line(lines[-1], 200)!r}" if lines else "")


def supervised_map(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    *,
    workers: int,
    timeout: float | None,
    on_lost: Callable[[Item, str], Result],
) -> Iterator[Result]:
    """function(item) for every item, in `workers` processes, yielded as they complete (not in
    order).

    `function` must be picklable (a module-level function or a functools.partial of one), and so
    must the items and results. An item whose worker dies, or runs longer than `timeout` seconds,
    yields on_lost(item, reason) instead; its worker is replaced. Workers are stopped when the
    iterator closes.
    """
    queue = deque(items)
    if not queue:
        return
    pool = [_Worker.start() for _ in range(max(1, min(workers, len(queue))))]
    try:
        while queue or any(worker.item is not None for worker in pool):
            for worker in pool:
                if worker.item is None and queue:
                    worker.item = queue.popleft()
                    worker.deadline = time.monotonic() + timeout if timeout else float("inf")
                    worker.conn.send((function, worker.item))
            yield from _collect(pool, timeout, on_lost)
    finally:
        for worker in pool:
            if worker.item is None and worker.process.poll() is None:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            worker.stop()


def _collect(
    pool: list[_Worker], timeout: float | None, on_lost: Callable[[Any, str], Any]
) -> Iterator[Any]:
    """Wait for the next finished, dead or late worker(s); yield their results and replace the lost
    ones.

    A worker that dies closes its end of the socket pair, so its connection becomes ready and recv
    fails.
    """
    busy = [worker for worker in pool if worker.item is not None]
    wait_s = max(0.0, min(worker.deadline for worker in busy) - time.monotonic())
    ready = set(wait([worker.conn for worker in busy], timeout=min(wait_s, 3600.0)))
    for index, worker in enumerate(pool):
        if worker.item is None:
            continue
        lost = None
        if worker.conn in ready:
            try:
                result = worker.conn.recv()
            except (EOFError, OSError):
                death = worker.death()
                lost = f"{CRASHED} {death}"
            else:
                worker.item = None
                yield result
                continue
        elif time.monotonic() >= worker.deadline:
            lost = f"{LATE} {timeout:g} s"
        if lost is not None:
            item = worker.item
            worker.stop()
            pool[index] = _Worker.start()
            yield on_lost(item, lost)


if __name__ == "__main__":  # a worker: python -m epam_data.supervisor FD
    _serve(Connection(int(sys.argv[1])))
