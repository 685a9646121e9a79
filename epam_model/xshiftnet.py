"""X-ShiftNet: the per-frame 2D backbone with temporal shift that both EPAM-Net streams use
(docs/architecture.md 3-6).

In the authors' code X-ShiftNet is X3D with every temporal kernel set to 1 (a per-frame 2D CNN) plus
a TSM shift on each block's residual branch; the SE gate pools over the whole clip. Because no conv
looks across frames, the network is written here as 2D convolutions over N*T frames ("frames"
layout, [N*T, C, H, W]): PyTorch's channel-wise Conv3d is slow (SlowFast #286, pytorch #37406) while
depthwise Conv2d has fast kernels and channels_last support. The authors' Conv3d formulation is kept
as the "clip" layout ([N, C, T, H, W], Conv3d with 1 x k x k kernels) so tests and
`scripts/bench_model.py` can check the two against each other; both hold the same parameters, conv
weights differ only by a singleton time axis ([O, I, k, k] vs [O, I, 1, k, k]), see
`adapt_conv_weights`.

For speed convert a frames-layout model with `model.to(memory_format=torch.channels_last)`:
activations and their gradients then stay channels_last through every block (see `epam_model.shift`
and `SqueezeExcite`); on the 2-core CPU of BENCHMARKS.md that is about 1.6 times faster than the
default layout in training.

Module names are our own (timm style), not the authors' mmaction names.
"""

import math
from typing import Any, Literal

from torch import Tensor, nn

from epam_model.shift import temporal_shift, temporal_shift_clip

__all__ = [
    "Layout",
    "ConvBnAct",
    "SqueezeExcite",
    "XShiftBlock",
    "XShiftStage",
    "ClassifierHead",
    "XShiftNet",
    "se_width",
    "check_layout",
    "make_conv",
    "make_bn",
    "adapt_conv_weights",
    "set_residual_init",
    "build_xshiftnet",
    "xshiftnet_rgb",
    "xshiftnet_pose",
]

Layout = Literal["frames", "clip"]
LAYOUTS: tuple[str, ...] = ("frames", "clip")


def se_width(channels: int, ratio: float = 1 / 16, divisor: int = 8) -> int:
    """SE bottleneck width, X3D's `_round_width` rule: 8, 8, 16, 32 for 54, 108, 216, 432 channels.

    See docs/architecture.md 4.
    """
    width = channels * ratio
    rounded = max(divisor, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


def make_conv(
    layout: Layout,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    *,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
) -> nn.Module:
    """A k x k per-frame conv: Conv2d in the frames layout, Conv3d with a 1 x k x k kernel in the
    clip layout.

    Padding is k // 2 ('same' for odd k), stride applies to H and W only (X-ShiftNet never strides
    in time).
    """
    pad = kernel_size // 2
    if layout == "frames":
        return nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, pad, groups=groups, bias=bias
        )
    return nn.Conv3d(
        in_channels,
        out_channels,
        (1, kernel_size, kernel_size),
        (1, stride, stride),
        (0, pad, pad),
        groups=groups,
        bias=bias,
    )


def make_bn(layout: Layout, channels: int, momentum: float = 0.1) -> nn.Module:
    """BatchNorm2d over N*T frames computes exactly the statistics BatchNorm3d computes over (N, T,
    H, W)."""
    return (nn.BatchNorm2d if layout == "frames" else nn.BatchNorm3d)(channels, momentum=momentum)


def check_layout(layout: str) -> None:
    """Reject a layout name early, at the builder, rather than deep inside a forward."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")


class ConvBnAct(nn.Module):
    """conv -> BN -> optional ReLU: the stem, conv5 and the identity projection (mmcv's ConvModule,
    no conv bias)."""

    def __init__(
        self,
        layout: Layout,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = make_conv(layout, in_channels, out_channels, kernel_size, stride=stride)
        self.bn = make_bn(layout, out_channels)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Channel gate from the clip average: one gate per clip and channel, not per frame
    (docs/architecture.md 4).

    The pool spans T, H and W as in the authors' Conv3d network; in the frames layout that means
    un-folding time before pooling, which is what keeps the per-frame 2D rewrite numerically
    identical.
    """

    def __init__(self, layout: Layout, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.layout = layout
        self.conv_reduce = make_conv(layout, channels, bottleneck, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = make_conv(layout, bottleneck, channels, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        if self.layout == "clip":  # x: [N, C, T, H, W]
            pooled = x.mean((2, 3, 4), keepdim=True)  # [N, C, 1, 1, 1]
            return x * self.gate(self.conv_expand(self.act(self.conv_reduce(pooled))))
        # Per-frame spatial sums, then over time: the same clip mean, but the sum's backward is a
        # broadcast view that keeps channels_last gradients channels_last (a mean over the 5D view
        # materialises a contiguous one).
        clip_sum = x.sum((2, 3)).unflatten(0, (-1, num_frames)).sum(1)  # [N, C]
        pooled = (clip_sum / (num_frames * x.shape[2] * x.shape[3]))[
            :, :, None, None
        ]  # [N, C, 1, 1]
        gate = self.gate(self.conv_expand(self.act(self.conv_reduce(pooled))))
        return (x.unflatten(0, (-1, num_frames)) * gate[:, None]).flatten(
            0, 1
        )  # [N*T, C, H, W], x's memory format


class XShiftBlock(nn.Module):
    """X3D bottleneck with per-frame convs and a temporal shift on the residual branch
    (docs/architecture.md 4).

    shift -> 1x1 conv, BN, ReLU -> depthwise 3x3 conv (carries the stride), BN -> SE (some blocks)
    -> swish -> 1x1 conv, BN -> + identity (a strided 1x1 conv + BN in a stage's first block) ->
    ReLU.
    """

    def __init__(
        self,
        layout: Layout,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        fold_div: int = 8,
        se_channels: int = 0,
    ) -> None:
        """
        Args:
            layout: "frames" or "clip", see the module docstring.
            in_channels: Cin; inner_channels: P, the expanded width; out_channels: Cout, the stage
                width.
            stride: spatial stride of the depthwise conv and of the projection.
            fold_div: 1/fold_div of the input channels shifts forward in time and as many backward.
            se_channels: SE bottleneck width; 0 means no SE in this block.
        """
        super().__init__()
        self.layout = layout
        self.fold_div = fold_div
        self.conv_pw = make_conv(layout, in_channels, inner_channels)
        self.bn1 = make_bn(layout, inner_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_dw = make_conv(
            layout, inner_channels, inner_channels, 3, stride=stride, groups=inner_channels
        )
        self.bn2 = make_bn(layout, inner_channels)
        self.se = SqueezeExcite(layout, inner_channels, se_channels) if se_channels else None
        self.act_swish = nn.SiLU()  # swish runs in every block, SE or not
        self.conv_pwl = make_conv(layout, inner_channels, out_channels)
        self.bn3 = make_bn(layout, out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            ConvBnAct(layout, in_channels, out_channels, stride=stride, act=False)
            if needs_projection
            else nn.Identity()
        )
        self.act_out = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        shortcut = self.shortcut(x)  # the identity path sees x unshifted
        if self.layout == "frames":
            out = temporal_shift(x, num_frames, self.fold_div)
        else:
            out = temporal_shift_clip(x, self.fold_div)
        out = self.act1(self.bn1(self.conv_pw(out)))
        out = self.bn2(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out, num_frames)
        out = self.act_swish(out)
        out = self.bn3(self.conv_pwl(out))
        return self.act_out(out + shortcut)


class XShiftStage(nn.Module):
    """A run of blocks at one width; the first block strides and projects, SE in blocks 0, 2, 4, ...
    ("half")."""

    def __init__(
        self,
        layout: Layout,
        in_channels: int,
        out_channels: int,
        depth: int,
        *,
        bottleneck_ratio: float,
        stride: int,
        fold_div: int,
        se_ratio: float,
    ) -> None:
        super().__init__()
        inner = int(bottleneck_ratio * out_channels)  # int(2.25 * w): 54, 108, 216, 432
        se_channels = se_width(inner, se_ratio) if se_ratio > 0 else 0
        self.blocks = nn.ModuleList(
            [
                XShiftBlock(
                    layout,
                    in_channels if i == 0 else out_channels,
                    inner,
                    out_channels,
                    stride=stride if i == 0 else 1,
                    fold_div=fold_div,
                    se_channels=se_channels if i % 2 == 0 else 0,
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        for block in self.blocks:
            x = block(x, num_frames)
        return x


class ClassifierHead(nn.Module):
    """The authors' I3D head: average over T, H, W -> dropout -> linear (not X3D's wide head;
    docs/architecture.md 5).

    With num_classes=0 it returns the pooled features [N, C] (timm's convention for a headless
    backbone).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, features: Tensor) -> Tensor:
        """features: [N, C, T, H, W] (any strides). Returns logits [N, num_classes]."""
        return self.fc(self.dropout(features.mean((2, 3, 4))))


class XShiftNet(nn.Module):
    """One EPAM-Net stream: stem -> stages -> conv5 -> head. Input [N, C, T, H, W] in both layouts.

    `forward_features` returns [N, conv5 channels, T, H/s, W/s] (in the frames layout a strided view
    of the [N*T, C, h, w] activations, no copy); `forward_head` pools it to logits; `forward` does
    both.
    """

    def __init__(
        self,
        *,
        layout: Layout,
        in_channels: int,
        depths: tuple[int, ...],
        widths: tuple[int, ...],
        stem_stride: int,
        bottleneck_ratio: float,
        fold_div: int,
        se_ratio: float,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = int(bottleneck_ratio * widths[-1])  # conv5 width: 432 RGB, 216 pose
        self.stem = ConvBnAct(layout, in_channels, widths[0], 3, stride=stem_stride)
        stages = []
        for i, (depth, width) in enumerate(zip(depths, widths)):
            stages.append(
                XShiftStage(
                    layout,
                    widths[max(i - 1, 0)],
                    width,
                    depth,
                    bottleneck_ratio=bottleneck_ratio,
                    stride=2,
                    fold_div=fold_div,
                    se_ratio=se_ratio,
                )
            )
        self.stages = nn.ModuleList(stages)
        self.conv5 = ConvBnAct(layout, widths[-1], self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' init: kaiming-normal (fan_out, relu) convs, BN 1/0, linear N(0, 0.01), and
        each block's last BN gamma 0 so every block starts as the identity (mmaction's
        zero_init_residual)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, XShiftBlock):
                nn.init.zeros_(module.bn3.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        """x: [N, C, T, H, W]. Returns [N, num_features, T, H', W']."""
        n, c, t, h, w = x.shape
        if self.layout == "frames":
            x = x.transpose(1, 2).reshape(n * t, c, h, w)  # fold time into the batch
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x, t)
        x = self.conv5(x)
        if self.layout == "frames":
            x = x.unflatten(0, (n, t)).transpose(1, 2)  # [N, C, T, H', W'] view
        return x

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def set_residual_init(model: nn.Module, *, zero: bool) -> None:
    """Each X-Shift block's last BN scale to 0 (the block starts as the identity: the authors' init,
    mmaction2's zero_init_residual) or 1.

    Why a choice: at 0, every stage's only path at the start is its strided 1x1 projection, which
    reads one pixel in four, so the output of a fresh pose stream depends on 12.8 % of the heatmap
    pixels (all of them with scales at 1) and misses most of the small joint blobs; a run from
    scratch then barely moves for its first few dozen steps (docs/training.md). Training from
    scratch starts at 1.
    """
    for module in model.modules():
        if isinstance(module, XShiftBlock):
            nn.init.constant_(module.bn3.weight, 0.0 if zero else 1.0)


def adapt_conv_weights(state_dict: dict[str, Tensor], target: nn.Module) -> dict[str, Tensor]:
    """Reshape conv weights between the layouts: [O, I, k, k] <-> [O, I, 1, k, k] where `target`
    expects the other.

    A Conv3d with a 1 x k x k kernel computes per frame exactly what a k x k Conv2d computes, so
    this is a change of view, not of meaning; it lets frames- and clip-layout models (and Conv3d
    checkpoints such as the authors', after renaming keys) share weights. Keys absent from `target`
    and tensors of any other shape pass through unchanged, for the caller's
    missing/unexpected/mismatch report.
    """
    expected = {
        **{k: v.shape for k, v in target.named_parameters()},
        **{k: v.shape for k, v in target.named_buffers()},
    }
    adapted = {}
    for key, value in state_dict.items():
        shape = expected.get(key)
        if shape is not None and value.shape != shape and value.numel() == math.prod(shape):
            if value.dim() == 5 and len(shape) == 4 and value.shape[2] == 1:
                value = value.squeeze(2)
            elif value.dim() == 4 and len(shape) == 5 and shape[2] == 1:
                value = value.unsqueeze(2)
        adapted[key] = value
    return adapted


def build_xshiftnet(
    *,
    in_channels: int,
    depths: tuple[int, ...] = (3, 5, 11, 7),
    widths: tuple[int, ...] = (24, 48, 96, 192),
    stem_stride: int = 2,
    bottleneck_ratio: float = 2.25,
    fold_div: int = 8,
    se_ratio: float = 1 / 16,
    num_classes: int = 0,
    dropout: float = 0.5,
    layout: Layout = "frames",
) -> XShiftNet:
    """Build an X-ShiftNet; the defaults are the RGB stream (X3D-M widths, depths ceil(2.2 * (1, 2,
    5, 3))).

    Args:
        in_channels: 3 for RGB, 17 joint or limb heatmaps, 34 for joints + limbs.
        depths: blocks per stage; each stage's first block halves H and W.
        widths: stage output widths; the inner width is int(bottleneck_ratio * width).
        stem_stride: spatial stride of the 3x3 stem (2 for 224 px RGB, 1 for 56 px heatmaps).
        bottleneck_ratio: X3D's gamma_b; conv5 also widens to int(bottleneck_ratio * widths[-1]).
        fold_div: 1/fold_div of the channels shifts each way (RGB 8, pose 4 in the authors' code).
        se_ratio: SE bottleneck = se_width(inner, se_ratio); 0 disables SE.
        num_classes: classifier outputs; 0 gives pooled features.
        dropout: dropout before the classifier (0.5 in the authors' I3D head).
        layout: "frames" (fast, Conv2d over N*T frames) or "clip" (the authors' Conv3d formulation,
            for reference).
    """
    check_layout(layout)
    if len(depths) != len(widths):
        raise ValueError(f"depths {depths} and widths {widths} must have one entry per stage")
    return XShiftNet(
        layout=layout,
        in_channels=in_channels,
        depths=tuple(depths),
        widths=tuple(widths),
        stem_stride=stem_stride,
        bottleneck_ratio=bottleneck_ratio,
        fold_div=fold_div,
        se_ratio=se_ratio,
        num_classes=num_classes,
        dropout=dropout,
    )


def xshiftnet_rgb(num_classes: int = 0, **overrides: Any) -> XShiftNet:
    """RGB stream, [N, 3, 16, 224, 224] -> [N, 432, 16, 7, 7] features (docs/architecture.md 5)."""
    args: dict[str, Any] = dict(
        in_channels=3, depths=(3, 5, 11, 7), widths=(24, 48, 96, 192), stem_stride=2, fold_div=8
    )
    return build_xshiftnet(**{**args, "num_classes": num_classes, **overrides})


def xshiftnet_pose(num_classes: int = 0, **overrides: Any) -> XShiftNet:
    """Pose stream, heatmaps [N, 17, 48, 56, 56] -> [N, 216, 48, 7, 7] features
    (docs/architecture.md 6)."""
    args: dict[str, Any] = dict(
        in_channels=17, depths=(5, 11, 7), widths=(24, 48, 96), stem_stride=1, fold_div=4
    )
    return build_xshiftnet(**{**args, "num_classes": num_classes, **overrides})
