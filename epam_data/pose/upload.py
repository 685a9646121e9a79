"""Host -> device copies of frames and crop windows: through page-locked (pinned) memory when the
device is a CUDA GPU.

Why: a copy from ordinary (pageable) host memory to a GPU is synchronous. The driver first copies
the array into a pinned bounce buffer of its own, and the calling thread, which is the tracker
that should be preparing the next batch, waits for the whole transfer. Copied once into a pinned
block of torch's caching host allocator instead, the upload is queued on the GPU's stream
(`non_blocking=True`) and the thread goes on. The allocator records the copy on the block and
hands the block out again only once the copy has finished, so the staged tensor may be dropped at
once (https://pytorch.org/docs/stable/notes/cuda.html#use-pinned-memory-buffers).

On any other device this is `torch.from_numpy(...).to(device)` with the array made writable and
contiguous first: decoded frames are often read-only views, which torch warns about.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_device"]


def to_device(array: np.ndarray, device: Any) -> Any:
    """`array` (any strides, read-only allowed) as a torch tensor on `device`: staged in pinned
    memory and copied asynchronously for a CUDA device, copied only if need be elsewhere."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        if not array.flags.writeable or not array.flags.c_contiguous:
            array = np.array(array)  # one copy: writable and contiguous
        return torch.from_numpy(array).to(device)
    dtype = torch.from_numpy(np.empty(0, array.dtype)).dtype
    staged = torch.empty(array.shape, dtype=dtype, pin_memory=True)
    np.copyto(staged.numpy(), array)  # the one host copy, straight from the (strided) view
    return staged.to(device, non_blocking=True)
