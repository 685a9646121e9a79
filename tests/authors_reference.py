"""A transcription of the authors' EPAM-Net for the converter's fidelity test: Conv3d everywhere,
mmcv ConvModule naming, written from the description of their code
(https://github.com/ahmed-nady/Multimodal-Action-Recognition, `RGBPoseAttentionActionRecognizer`
with `X3DTemporalShift`, `X3DTemporalShiftPose`, `CBAMSpatialEfficientTemporalAttention` 'nested'),
not from epam's model. Its state dict carries the authors' key names, so a state dict of this
network is what their checkpoints hold.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvModule(nn.Module):
    """mmcv's ConvModule: a bias-free Conv3d, BN3d, optional ReLU (names `conv`, `bn`)."""

    def __init__(self, cin: int, cout: int, kernel, *, stride=1, padding=0, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm3d(cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


def temporal_shift(x: Tensor, fold_div: int) -> Tensor:
    """[N, C, T, H, W]: channels [0, fold) take frame t+1 (the last gets 0), [fold, 2 fold) take
    frame t-1 (the first gets 0), the rest stay."""
    fold = x.shape[1] // fold_div
    out = torch.zeros_like(x)
    out[:, :fold, :-1] = x[:, :fold, 1:]
    out[:, fold : 2 * fold, 1:] = x[:, fold : 2 * fold, :-1]
    out[:, 2 * fold :] = x[:, 2 * fold :]
    return out


class SEModule(nn.Module):
    """Squeeze-excite over the whole clip: pool T, H, W -> fc1 -> ReLU -> fc2 -> sigmoid."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.fc1 = nn.Conv3d(channels, width, 1)
        self.fc2 = nn.Conv3d(width, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean((2, 3, 4), keepdim=True))))
        return x * torch.sigmoid(gate)


class BlockX3D(nn.Module):
    def __init__(self, cin, cout, inner, se, stride, index, fold_div):
        super().__init__()
        self.fold_div = fold_div
        if index == 0:
            self.downsample = ConvModule(cin, cout, 1, stride=(1, stride, stride), act=False)
        self.conv1 = ConvModule(cin, inner, 1)
        self.conv2 = ConvModule(
            inner, inner, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
            groups=inner, act=False,
        )  # fmt: skip
        self.conv3 = ConvModule(inner, cout, 1, act=False)
        if index % 2 == 0:
            self.se_module = SEModule(inner, se)

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x) if hasattr(self, "downsample") else x
        out = self.conv2(self.conv1(temporal_shift(x, self.fold_div)))
        if hasattr(self, "se_module"):
            out = self.se_module(out)
        out = self.conv3(out * torch.sigmoid(out))  # swish in every block
        return torch.relu(out + identity)


class Backbone(nn.Module):
    def __init__(self, in_channels, stem_stride, layers, fold_div):
        super().__init__()
        stride = (1, stem_stride, stem_stride)
        self.conv1_s = ConvModule(in_channels, 24, (1, 3, 3), stride=stride, padding=(0, 1, 1))
        cin = 24
        for number, (blocks, cout, inner, se) in enumerate(layers, start=1):
            blocks_of_layer = [
                BlockX3D(cout if i else cin, cout, inner, se, 1 if i else 2, i, fold_div)
                for i in range(blocks)
            ]
            layer = nn.Sequential(*blocks_of_layer)
            setattr(self, f"layer{number}", layer)
            cin = cout
        self.num_layers = len(layers)
        self.conv5 = ConvModule(cin, layers[-1][2], 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1_s(x)
        for number in range(1, self.num_layers + 1):
            x = getattr(self, f"layer{number}")(x)
        return self.conv5(x)


class I3DHead(nn.Module):
    def __init__(self, in_channels: int, classes: int):
        super().__init__()
        self.fc_cls = nn.Linear(in_channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_cls(x.mean((2, 3, 4)))  # dropout is the identity in eval


class Attention(nn.Module):
    """CBAMSpatialEfficientTemporalAttention, 'nested'."""

    def __init__(self):
        super().__init__()
        self.spatial = ConvModule(2, 1, (1, 7, 7), padding=(0, 3, 3), act=False)
        self.spatial.bn.momentum = 0.01
        self.conv_temporal_attention = nn.Conv1d(1, 1, 7, padding=3, bias=False)

    def forward(self, rgb: Tensor, pose: Tensor) -> Tensor:
        step = pose.shape[2] // rgb.shape[2]
        aligned = pose.index_select(2, torch.arange(0, pose.shape[2], step)[: rgb.shape[2]])
        pooled = torch.cat([aligned.amax(1, keepdim=True), aligned.mean(1, keepdim=True)], 1)
        spatial = torch.sigmoid(self.spatial(pooled))
        temporal = torch.sigmoid(self.conv_temporal_attention(spatial.mean((3, 4))))
        return rgb + rgb * (spatial * temporal[..., None, None])


class AuthorsEpamNet(nn.Module):
    """RGBPoseAttentionActionRecognizer: (guided RGB logits, pose logits)."""

    def __init__(self, classes: int):
        super().__init__()
        rgb_layers = ((3, 24, 54, 8), (5, 48, 108, 8), (11, 96, 216, 16), (7, 192, 432, 32))
        pose_layers = ((5, 24, 54, 8), (11, 48, 108, 8), (7, 96, 216, 16))
        self.rgb_backbone = Backbone(3, 2, rgb_layers, fold_div=8)
        self.rgb_cls_head = I3DHead(432, classes)
        self.pose_backbone = Backbone(17, 1, pose_layers, fold_div=4)
        self.pose_cls_head = I3DHead(216, classes)
        self.attention_module = Attention()

    def forward(self, rgb: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
        rgb_features, pose_features = self.rgb_backbone(rgb), self.pose_backbone(pose)
        guided = self.attention_module(rgb_features, pose_features)
        return self.rgb_cls_head(guided), self.pose_cls_head(pose_features)
