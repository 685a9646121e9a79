"""Pose-guided spatial-temporal attention (STA): pose features decide where and when the RGB stream
looks.

Follows the authors' `CBAMSpatialEfficientTemporalAttention` in 'nested' mode, the one their
training script uses (docs/architecture.md 7): a CBAM-style spatial map S from the pose features
(channel max and mean -> 7x7 conv -> BN -> sigmoid), temporal weights A from S itself (spatial mean
-> 1D conv over time, k = 7 -> sigmoid), and the RGB features become F_rgb * (1 + S * A). The BN
before the sigmoid is in the code but not in the paper's Fig. 2; we keep it (docs/architecture.md
12). 107 parameters.
"""

from typing import NamedTuple

import torch
from torch import Tensor, nn

from epam_model.xshiftnet import Layout, check_layout, make_bn, make_conv

__all__ = ["AttentionMaps", "PoseGuidedAttention", "align_pose_time"]


class AttentionMaps(NamedTuple):
    """The STA's maps for one batch; all values in [0, 1]."""

    spatial: Tensor  # S [N, 1, T, H, W]
    temporal: Tensor  # A [N, 1, T, 1, 1]
    combined: Tensor  # M = S * A [N, 1, T, H, W]


def align_pose_time(pose_features: Tensor, num_rgb_frames: int) -> Tensor:
    """Keep the pose steps that match the RGB frames: 0, s, 2s, ... with s = T_pose // T_rgb.

    The RGB clip is every third of the 48 sampled pose frames (docs/architecture.md 9), so for 48
    and 16 this selects pose steps 0, 3, ..., 45. The stride is derived from the two lengths so
    other clip lengths keep working.

    pose_features: [N, C, T_pose, H, W] -> [N, C, T_rgb, H, W] (a strided view).
    """
    num_pose_frames = pose_features.shape[2]
    if num_pose_frames < num_rgb_frames:
        raise ValueError(
            f"the pose clip has {num_pose_frames} frames, fewer than the RGB clip's "
            f"{num_rgb_frames}; the attention needs a pose step for every RGB frame"
        )
    stride = num_pose_frames // num_rgb_frames
    return pose_features[:, :, : stride * num_rgb_frames : stride]


class PoseGuidedAttention(nn.Module):
    """STA block. Both layouts take and return [N, C, T, H, W] tensors; the frames layout runs the
    7x7 conv as a Conv2d over N*T frames so that the whole model can be converted to channels_last
    (a 5D weight cannot)."""

    def __init__(
        self, layout: Layout = "frames", kernel_size: int = 7, temporal_kernel_size: int = 7
    ) -> None:
        super().__init__()
        check_layout(layout)
        self.layout = layout
        self.spatial_conv = make_conv(layout, 2, 1, kernel_size)
        self.spatial_bn = make_bn(layout, 1, momentum=0.01)  # the authors' BN3d(1, momentum=0.01)
        self.temporal_conv = nn.Conv1d(
            1, 1, temporal_kernel_size, padding=temporal_kernel_size // 2, bias=False
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan_out, relu) and BN 1/0, as the authors' stage-2
        re-initialisation."""
        for conv in (self.spatial_conv, self.temporal_conv):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.spatial_bn.weight)
        nn.init.zeros_(self.spatial_bn.bias)

    def attention_maps(self, pose_features: Tensor) -> AttentionMaps:
        """pose_features: [N, C, T, H, W], already aligned to the RGB frames."""
        n, _, t, h, w = pose_features.shape
        pooled = torch.cat(
            [pose_features.amax(1, keepdim=True), pose_features.mean(1, keepdim=True)], 1
        )
        if self.layout == "frames":  # [N, 2, T, H, W] -> [N*T, 2, H, W]
            frames = pooled.transpose(1, 2).reshape(n * t, 2, h, w)
            logits = self.spatial_bn(self.spatial_conv(frames)).unflatten(0, (n, t)).transpose(1, 2)
        else:
            logits = self.spatial_bn(self.spatial_conv(pooled))
        spatial = torch.sigmoid(logits)  # S [N, 1, T, H, W]
        temporal = torch.sigmoid(
            self.temporal_conv(spatial.mean((3, 4)))
        )  # [N, 1, T]: from S ('nested')
        temporal = temporal[:, :, :, None, None]  # A [N, 1, T, 1, 1]
        return AttentionMaps(spatial, temporal, spatial * temporal)

    def forward(self, rgb_features: Tensor, pose_features: Tensor) -> Tensor:
        """rgb_features: [N, C_rgb, T_rgb, H, W]; pose_features: [N, C_pose, T_pose, H, W], T_pose
        >= T_rgb.

        Returns the guided RGB features F * (1 + M), shaped like rgb_features.
        """
        aligned = align_pose_time(pose_features, rgb_features.shape[2])
        if aligned.shape[3:] != rgb_features.shape[3:]:
            raise ValueError(
                f"pose feature map {tuple(aligned.shape[3:])} differs from the RGB one "
                f"{tuple(rgb_features.shape[3:])}; use inputs whose streams reduce to the same "
                "size (224 px RGB and 56 px heatmaps both give 7 x 7)"
            )
        maps = self.attention_maps(aligned)
        return rgb_features * (1 + maps.combined)  # the skip keeps features where M is 0
