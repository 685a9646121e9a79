"""How many compute threads a process uses: the usable cores, and one thread per worker process.

One place for the thread policy of extract's workers, the training loader's workers and the training
process, because the failure it prevents is the same everywhere: more threads than free cores is not
a little slower but many times slower (OpenMP workers spin at every barrier while another process
holds their core; measured on this project's 2-core machines: a training step 0.6 s on 1 thread,
5-25 s on 2, BENCHMARKS.md).
"""

from __future__ import annotations

import os
import sys

__all__ = ["THREAD_ENV", "one_thread_per_process", "set_cpu_threads", "usable_cores"]

# Thread pools read these when they start: OpenMP (torch, OpenCV), OpenBLAS, MKL, numexpr.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a cluster scheduler sets), at
    least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def one_thread_per_process() -> None:
    """Limit this (worker) process to one compute thread: in pools started later (environment), and
    in torch, OpenCV and the BLAS libraries already loaded. The parallelism is one process per video
    or per loader worker.
    """
    for name in THREAD_ENV:
        os.environ[name] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


def set_cpu_threads(threads: int | str | None, device: str) -> int:
    """torch's intra-op threads on CPU, set explicitly: `threads`, else $OMP_NUM_THREADS, else the
    usable cores less one (extract decodes the next chunk in a thread meanwhile).

    extract's worker processes set $OMP_NUM_THREADS=1 (one process per video). On a busy machine
    more threads than free cores made ops 25-30x slower (docs/pose-backends.md section 5.3), so give
    --threads the free cores.
    """
    import torch

    from epam_data.errors import PoseBackendError

    if threads is None:
        threads = os.environ.get("OMP_NUM_THREADS") or max(1, usable_cores() - 1)
    count = int(threads)
    if count < 1:
        raise PoseBackendError(f"threads must be at least 1, got {threads}")
    if device == "cpu" and torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
