"""EPAM-Net: an RGB and a pose X-ShiftNet, pose-guided attention on the RGB features, one classifier
per stream and late fusion by summing the logits (docs/architecture.md 2, 8). `build_model` is the
entry point for all three networks.

Training goes in two stages (docs/architecture.md 10): each stream alone, then the joint model
starting from both stream checkpoints. `load_stream_weights` does the hand-over and reports every
key it could not match; the authors loaded with `strict=False` and so silently kept a random RGB
classifier in one release (docs/architecture.md 12, item 4).
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from epam_data.errors import EpamError
from epam_model.attention import PoseGuidedAttention
from epam_model.xshiftnet import (
    Layout,
    XShiftNet,
    adapt_conv_weights,
    check_layout,
    xshiftnet_pose,
    xshiftnet_rgb,
)

__all__ = [
    "STREAMS",
    "ModelConfigError",
    "CheckpointError",
    "EpamOutput",
    "LoadReport",
    "EpamNet",
    "build_model",
    "load_torch_file",
    "read_state_dict",
    "load_weights",
    "load_stream_weights",
]

logger = logging.getLogger(__name__)

STREAMS: tuple[str, ...] = ("epam", "rgb", "pose")
POSE_CHANNELS: tuple[int, ...] = (17, 34)  # 17 joint or 17 limb heatmaps, or both stacked


class ModelConfigError(EpamError, ValueError):
    """A model cannot be built from the options given (unknown stream, impossible class count)."""


class CheckpointError(EpamError):
    """A checkpoint file cannot be read or does not fit the model."""


class EpamOutput(NamedTuple):
    """The two logit tensors of one EPAM-Net forward, each [N, num_classes]. Each stream has its own
    loss."""

    rgb: Tensor  # logits of the RGB head on the pose-guided RGB features
    pose: Tensor  # logits of the pose head on the full-length pose features

    def fused(self) -> Tensor:
        """The paper's prediction: the raw logits summed (no softmax), docs/architecture.md 8."""
        return self.rgb + self.pose


@dataclass(frozen=True)
class LoadReport:
    """What one state-dict load did. Keys are relative to the module that was loaded into."""

    target: str  # e.g. "epam.rgb" or "pose"
    source: str  # file path, or "<state_dict>"
    loaded: int  # tensors copied
    missing: tuple[str, ...]  # in the model, not in the checkpoint: left as initialised
    unexpected: tuple[str, ...]  # in the checkpoint, not in the model: ignored
    mismatched: tuple[
        str, ...
    ]  # same key, other shape ("key: checkpoint (..) vs model (..)"): not loaded

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def backbone_gaps(self) -> tuple[str, ...]:
        """Keys outside the classifier head (`head.`) that kept their init: missing ones and those
        of another shape. Any of them makes a start partial; a head of another size does not (a new
        class count)."""
        keys = (*self.missing, *(entry.split(":", 1)[0] for entry in self.mismatched))
        return tuple(key for key in keys if not key.startswith("head."))

    def lines(self) -> list[str]:
        """One line for the load, then one per problem key, for the CLI or a log."""
        out = [
            f"{self.target} <- {self.source}: {self.loaded} tensors loaded, {len(self.missing)} "
            f"missing, {len(self.unexpected)} unexpected, {len(self.mismatched)} with another shape"
        ]
        out += [f"  missing (kept at init): {key}" for key in self.missing]
        out += [f"  unexpected (ignored): {key}" for key in self.unexpected]
        out += [f"  shape differs (kept at init): {key}" for key in self.mismatched]
        return out


class EpamNet(nn.Module):
    """Two streams and the attention between them. `forward(rgb, pose)` returns `EpamOutput`.

    rgb: [N, 3, T_rgb, H, W] (paper: 16 x 224 x 224); pose: heatmaps [N, C, T_pose, h, w] (paper: 17
    x 48 x 56 x 56), with T_pose a multiple of T_rgb in the paper's setup and both streams reducing
    to the same feature map size. Each stream is a complete `XShiftNet`, so a single-stream model's
    state dict loads into `epam.rgb` / `epam.pose`.
    """

    def __init__(self, rgb: XShiftNet, pose: XShiftNet, attention: PoseGuidedAttention) -> None:
        super().__init__()
        self.rgb = rgb
        self.pose = pose
        self.attention = attention

    def forward(self, rgb: Tensor, pose: Tensor) -> EpamOutput:
        rgb_features = self.rgb.forward_features(rgb)  # [N, 432, 16, 7, 7]
        pose_features = self.pose.forward_features(pose)  # [N, 216, 48, 7, 7]
        guided = self.attention(rgb_features, pose_features)  # RGB features * (1 + pose map)
        return EpamOutput(self.rgb.forward_head(guided), self.pose.forward_head(pose_features))


def build_model(
    stream: str,
    num_classes: int,
    *,
    pose_channels: int = 17,
    layout: Layout = "frames",
    dropout: float = 0.5,
) -> nn.Module:
    """Build EPAM-Net ("epam") or one of its streams ("rgb", "pose") with the authors' init.

    Args:
        stream: "epam" -> `EpamNet`, `model(rgb, pose)`; "rgb" -> `XShiftNet` on [N, 3, 16, 224,
            224]; "pose" -> `XShiftNet` on heatmaps [N, pose_channels, 48, 56, 56].
        num_classes: classifier outputs (NTU60 60, NTU120 120, PKU-MMD 51, Toyota CS 31, CV2 19);
            0 gives a headless single stream that returns pooled features.
        pose_channels: 17 (joints or limbs, the paper trains on joints) or 34 (joints and limbs
            stacked).
        layout: "frames" (Conv2d over N*T frames, the fast default) or "clip" (the authors' Conv3d
            formulation, numerically the same network; for reference and benchmarks).
        dropout: dropout before each classifier.
    """
    if stream not in STREAMS:
        raise ModelConfigError(f"unknown stream {stream!r}; choose one of {list(STREAMS)}")
    if num_classes < (1 if stream == "epam" else 0):
        raise ModelConfigError(f"num_classes={num_classes}: need at least 1 class for {stream!r}")
    if pose_channels not in POSE_CHANNELS:
        raise ModelConfigError(
            f"pose_channels={pose_channels}: heatmaps have 17 channels (joints or limbs) "
            "or 34 (joints and limbs stacked)"
        )
    check_layout(layout)
    if stream == "rgb":
        return xshiftnet_rgb(num_classes, dropout=dropout, layout=layout)
    if stream == "pose":
        return xshiftnet_pose(
            num_classes, in_channels=pose_channels, dropout=dropout, layout=layout
        )
    return EpamNet(
        xshiftnet_rgb(num_classes, dropout=dropout, layout=layout),
        xshiftnet_pose(num_classes, in_channels=pose_channels, dropout=dropout, layout=layout),
        PoseGuidedAttention(layout),
    )


def _strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def load_torch_file(path: str | Path) -> object:
    """`torch.load` with weights_only=True (a checkpoint from the internet cannot run code), on the
    CPU; CheckpointError naming the file when it is missing or cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # torch raises many types for a bad file; all mean "cannot read"
    except Exception as err:  # noqa: BLE001
        # torch's unpickling errors run to a page; the line that names the cause is enough
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        cause = next(
            (line for line in lines if "error:" in line.lower()), lines[0] if lines else ""
        )[:300]
        raise CheckpointError(
            f"{path}: cannot read it as a torch checkpoint ({type(err).__name__}: {cause}); "
            "it may be truncated, not a torch file, or hold objects other than tensors"
        ) from err


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict saved with `torch.save`, safely (`weights_only=True`).

    Accepts a bare state dict or a training checkpoint holding it under "model", "state_dict" or
    "model_state_dict" (the authors' fused files);
    removes the "module." (DDP) and "_orig_mod." (torch.compile) prefixes when every key carries
    them.
    """
    path = Path(path)
    payload = load_torch_file(path)
    for wrapper in ("model", "state_dict", "model_state_dict"):
        if isinstance(payload, Mapping) and isinstance(payload.get(wrapper), Mapping):
            payload = payload[wrapper]
            break
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise CheckpointError(
            f"{path}: holds no state dict (expected name -> tensor, or one under 'model' or "
            "'state_dict')"
        )
    return _strip_prefix(_strip_prefix(payload, "module."), "_orig_mod.")


def load_weights(
    module: nn.Module,
    source: str | Path | Mapping[str, Tensor],
    *,
    target: str = "model",
    strict: bool = False,
    warn: bool = True,
) -> LoadReport:
    """Load a state dict into `module` and report exactly what did not fit.

    Conv weights saved in the other layout ([O, I, 1, k, k] vs [O, I, k, k]) are reshaped
    (`adapt_conv_weights`). Tensors whose shape differs (e.g. a 120-class head into a 60-class
    model, as when the authors fine-tuned Toyota from NTU120) are not loaded and are listed.
    A load that is not clean logs one warning line (`warn`; the keys are in `report.lines()`); with
    `strict=True` it raises `CheckpointError` instead and nothing is loaded.
    """
    source_name = str(source) if isinstance(source, (str, Path)) else "<state_dict>"
    state_dict = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    state_dict = adapt_conv_weights(state_dict, module)
    own = module.state_dict()
    mismatched = {
        key: f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in state_dict.items()
        if key in own and value.shape != own[key].shape
    }
    missing = tuple(key for key in own if key not in state_dict)
    unexpected = tuple(key for key in state_dict if key not in own)
    report = LoadReport(
        target,
        source_name,
        len(state_dict) - len(unexpected) - len(mismatched),
        missing,
        unexpected,
        tuple(mismatched.values()),
    )
    if strict and not report.clean:
        raise CheckpointError(
            "; ".join(report.lines()[:6]) + (" ..." if len(report.lines()) > 6 else "")
        )
    module.load_state_dict(
        {k: v for k, v in state_dict.items() if k in own and k not in mismatched}, strict=False
    )
    if warn and not report.clean:
        logger.warning("%s (the keys: LoadReport.lines())", report.lines()[0])
    return report


def load_stream_weights(
    model: EpamNet,
    stream: str,
    source: str | Path | Mapping[str, Tensor],
    *,
    strict: bool = False,
    warn: bool = True,
) -> LoadReport:
    """Load a single-stream checkpoint (from `build_model("rgb" | "pose", ...)`) into that half of
    EPAM-Net.

    This is the paper's stage-2 start (docs/architecture.md 10): both streams from their stage-1
    checkpoints, the attention from scratch. The report lists missing, unexpected and reshaped-away
    keys; nothing is dropped silently.
    """
    if stream not in ("rgb", "pose"):
        raise ModelConfigError(
            f"unknown stream {stream!r}; a single-stream checkpoint is 'rgb' or 'pose'"
        )
    return load_weights(
        getattr(model, stream), source, target=f"epam.{stream}", strict=strict, warn=warn
    )
