"""How busy the GPU was while a piece of a benchmark ran: its utilisation sampled in a thread.

    with GpuBusy("cuda") as busy:
        run()
    busy.percent   # mean of the samples; NaN on a CPU or without NVML / nvidia-smi

One reading at the end (what `torch.cuda.utilization` gives) says how busy the GPU was in its last
sample period, not over the run; these are read every `period_s` seconds from NVML (through
torch, which needs pynvml) or, failing that, from `nvidia-smi`, whichever this machine has.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["GpuBusy"]


class GpuBusy:
    """A context manager sampling the utilisation of `device` (e.g. "cuda:0") while it is open."""

    def __init__(self, device: str, period_s: float = 0.2) -> None:
        self.samples: list[float] = []
        self._read = _reader(device)
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="gpu-busy", daemon=True)

    @property
    def percent(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else math.nan

    def __enter__(self) -> GpuBusy:
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _sample(self) -> None:
        while not self._stop.wait(self._period_s):
            value = self._read() if self._read is not None else None
            if value is not None:
                self.samples.append(value)


def _reader(device: str) -> Callable[[], float | None] | None:
    """A function reading the device's utilisation now (percent), or None off a GPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    index = torch.device(device).index or 0
    try:
        torch.cuda.utilization(index)
        return lambda: float(torch.cuda.utilization(index))
    except Exception:  # noqa: BLE001 (no pynvml: try nvidia-smi)
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    return lambda: _smi(command + ["-i", str(index)])


def _smi(command: list[str]) -> float | None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    try:
        return float(done.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        return None
