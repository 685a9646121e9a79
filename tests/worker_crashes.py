"""Work functions that really crash or hang the process running them, for tests/test_supervisor.py.

They live in a module of their own because a supervised worker is a fresh interpreter: it imports
the function by name, so tests put this folder on PYTHONPATH. The crash is real (the kernel kills
the process with the signal), only its trigger is chosen: no file found so far makes decord crash
reliably on every machine.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from epam_data.extract import VideoSpec, prepare_video
from epam_data.in_flight import prepare_videos
from epam_data.runloop import Outcome, StageTimes
from epam_data.shards import PreparedSample

ABORT_ID, SEGFAULT_ID, HANG_ID = (
    "S001C001P002R001A002",
    "S001C001P003R001A003",
    "S001C001P004R001A008",
)


def square(item: int) -> int:
    """item squared; item 3 aborts the process, item 5 segfaults it, item 7 hangs."""
    if item == 3:
        os.abort()
    if item == 5:
        os.kill(os.getpid(), signal.SIGSEGV)
    if item == 7:
        time.sleep(600)
    return item * item


def prepare_or_crash(spec: VideoSpec, *, times: StageTimes | None = None) -> PreparedSample:
    """`prepare_video`, except that three chosen samples crash or hang the worker as a broken
    decoder would."""
    if spec.sample.sample_id == ABORT_ID:
        print(
            "terminate called after throwing an instance of 'std::bad_alloc'",
            file=sys.stderr,
            flush=True,
        )
        os.abort()
    if spec.sample.sample_id == SEGFAULT_ID:
        os.kill(os.getpid(), signal.SIGSEGV)
    if spec.sample.sample_id == HANG_ID:
        time.sleep(600)
    return prepare_video(spec, times=times)


def prepare_group_or_crash(specs: list[VideoSpec]) -> list[Outcome]:
    """`in_flight.prepare_videos`, except that a group holding ABORT_ID aborts its worker."""
    if any(spec.sample.sample_id == ABORT_ID for spec in specs):
        os.abort()
    return prepare_videos(specs)
