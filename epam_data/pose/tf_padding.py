"""TensorFlow's 'SAME' padding, which the three graph readers (TFLite files, TensorFlow.js graphs,
the OpenPose TensorFlow graph) all need, in one place with no imports: the readers load at a
backend's start, and the TensorFlow.js one must not pull in the protobuf stack of the OpenPose one.
"""

from __future__ import annotations

import math

__all__ = ["same_padding"]


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding (before, after) for one axis: the output has ceil(size /
    stride) positions and the odd pixel of padding goes after (bottom / right), which matters for
    stride 2, where PyTorch's symmetric `padding=` would shift every output by one input pixel."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2
