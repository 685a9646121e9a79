"""Temporal shift (TSM, Lin et al. 2019) as EPAM-Net's X-ShiftNet blocks use it
(docs/architecture.md 3).

A fraction of the channels looks one frame ahead, an equal fraction one frame back, and the rest
stays put; frames shifted in from outside the clip are zeros. This is the only place where
information crosses frames inside a block (the SE gate, pooled over the whole clip, is the other),
so every conv after it can stay a per-frame 2D conv.

Two layouts carry the same clip (see `epam_model.xshiftnet`): "frames", [N*T, C, H, W] with time
folded into the batch, and "clip", [N, C, T, H, W]. Both functions return a new tensor and leave
their input untouched, because the block's identity path still needs the unshifted input.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "shift_concat",
    "shift_copy",
    "shift_time_major",
    "temporal_shift",
    "temporal_shift_clip",
]


def shift_concat(clip: Tensor, fold: int) -> Tensor:
    """The shift as pad + concatenate on a time-major clip [N, T, C, ...]: few, plain ops, so an
    exported ONNX graph stays small (slice assignment gave 2.7 times the nodes and 3 times the
    export time), and torch.compile's CPU code is right (`shift_time_major`). Returns a contiguous
    tensor.
    """
    ahead = F.pad(
        clip[:, 1:, :fold], (0, 0) * (clip.dim() - 3) + (0, 0, 0, 1)
    )  # zeros after the last frame
    behind = F.pad(
        clip[:, :-1, fold : 2 * fold], (0, 0) * (clip.dim() - 3) + (0, 0, 1, 0)
    )  # zeros before the first
    return torch.cat([ahead, behind, clip[:, :, 2 * fold :]], 2)


def shift_copy(clip: Tensor, fold: int, *, reverse: bool = False) -> Tensor:
    """The shift written into `empty_like(clip)`, which keeps the input's strides (channels_last
    stays channels_last).

    With reverse=True the first fold looks back and the second ahead: that is the shift's adjoint,
    its backward.
    """
    ahead, behind = slice(0, fold), slice(fold, 2 * fold)
    if reverse:
        ahead, behind = behind, ahead
    out = torch.empty_like(clip)
    out[:, :-1, ahead] = clip[:, 1:, ahead]
    out[:, -1:, ahead] = 0
    out[:, 1:, behind] = clip[:, :-1, behind]
    out[:, :1, behind] = 0
    out[:, :, 2 * fold :] = clip[:, :, 2 * fold :]
    return out


class _TemporalShift(torch.autograd.Function):
    """Shift whose backward is the reverse shift, both memory-format preserving.

    Autograd's own backward of slicing allocates contiguous gradients; with channels_last
    activations every block then mixed formats in its ReLU and BN backward, which made them several
    times slower than the forward.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, clip: Tensor, fold: int) -> Tensor:
        ctx.fold = fold
        return shift_copy(clip, fold)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return shift_copy(grad, ctx.fold, reverse=True), None


def shift_time_major(clip: Tensor, fold: int) -> Tensor:
    """Shift channels of a time-major clip view [N, T, C, ...] by one frame, zero-filling the clip
    ends.

    Channels [0, fold) at frame t take frame t + 1 (the last frame gets zeros); channels [fold, 2 *
    fold) take frame t - 1 (the first frame gets zeros); channels from 2 * fold on are copied
    unchanged. This is the authors' `shift` (a TSM variant that zero-pads rather than wraps around).
    Eager runs the format-preserving `_TemporalShift`; torch.compile and torch.export (hence ONNX)
    trace `shift_concat`. Both give identical values.

    Why not `_TemporalShift` under torch.compile: in torch 2.13 inductor's CPU code for its
    `empty_like` + slice writes is wrong with 256-bit vectors (AVX2) once the two streams' kernels
    are fused: the compiled EpamNet returned NaN (`scripts/inductor_shift_repro.py` shows it without
    epam). pad + cat has no uninitialised buffer to read, and tests/test_epamnet.py compares it with
    eager at 256-bit, native and scalar vector widths.
    """
    if torch.compiler.is_compiling():
        return shift_concat(clip, fold)
    return _TemporalShift.apply(clip, fold)


def temporal_shift(frames: Tensor, num_frames: int, fold_div: int) -> Tensor:
    """Temporal shift in the frames layout.

    Args:
        frames: [N*T, C, H, W], the T frames of each clip consecutive (clip-major), any memory
            format.
        num_frames: T, frames per clip.
        fold_div: 1/fold_div of the channels moves each way (8 for the RGB stream, 4 for the pose
            stream).

    Returns:
        A new tensor of the same shape (and, outside export, the same memory format).
    """
    clip = frames.unflatten(0, (-1, num_frames))  # [N, T, C, H, W], a view
    return shift_time_major(clip, frames.shape[1] // fold_div).flatten(0, 1)


def temporal_shift_clip(clip: Tensor, fold_div: int) -> Tensor:
    """Temporal shift in the clip layout, [N, C, T, H, W] (the authors' layout); returns a new
    contiguous tensor."""
    fold = clip.shape[1] // fold_div
    ahead = F.pad(clip[:, :fold, 1:], (0, 0, 0, 0, 0, 1))
    behind = F.pad(clip[:, fold : 2 * fold, :-1], (0, 0, 0, 0, 1, 0))
    return torch.cat([ahead, behind, clip[:, 2 * fold :]], 1)
