"""The authors' EPAM-Net checkpoints in epam's names: `epam-train convert`, and `--init-*` on them.

The authors' code (https://github.com/ahmed-nady/Multimodal-Action-Recognition) names the fused
model `rgb_backbone.*`, `rgb_cls_head.fc_cls.*`, `pose_backbone.*`, `pose_cls_head.fc_cls.*` and
`attention_module.*`, every conv + BN an mmcv ConvModule (`<name>.conv.weight`, `<name>.bn.*`),
every conv a Conv3d with a time kernel of 1; their fused files come from DistributedDataParallel
(`module.` on every key) inside `{'model_state_dict': ...}`; their stage-1 files from mmaction2
(`backbone.*`, `cls_head.*` inside `{'state_dict': ...}`). The network is the same as epam's, layer
for layer (docs/architecture.md), so a conversion is a renaming (`AUTHOR_RULES`) plus dropping the
time axis of the conv kernels; nothing is left out: a key that no rule renames refuses the file.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from epam_model.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    save_checkpoint,
)
from epam_model.config import TrainConfig
from epam_model.epamnet import CheckpointError, build_model, load_weights, read_state_dict

__all__ = [
    "AUTHOR_RULES",
    "Converted",
    "authors_payload",
    "convert_checkpoint",
    "convert_authors_state_dict",
    "is_authors_state_dict",
    "load_any_checkpoint",
    "stream_state_dict",
]

# (pattern, replacement) on a key without its stream prefix; stages are numbered from 0 here,
# layers from 1 there.
_BLOCK = {
    "downsample.conv": "shortcut.conv",
    "downsample.bn": "shortcut.bn",
    "conv1.conv": "conv_pw",
    "conv1.bn": "bn1",
    "conv2.conv": "conv_dw",
    "conv2.bn": "bn2",
    "conv3.conv": "conv_pwl",
    "conv3.bn": "bn3",
    "se_module.fc1": "se.conv_reduce",
    "se_module.fc2": "se.conv_expand",
}
AUTHOR_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^backbone\.conv1_s\.(conv|bn)\.(\w+)$"), r"stem.\1.\2"),
    (re.compile(r"^backbone\.conv5\.(conv|bn)\.(\w+)$"), r"conv5.\1.\2"),
    (re.compile(r"^cls_head\.fc_cls\.(weight|bias)$"), r"head.fc.\1"),
)
_LAYER = re.compile(r"^backbone\.layer(\d+)\.(\d+)\.(\w+\.\w+)\.(\w+)$")
_ATTENTION = {
    "attention_module.spatial.conv.weight": "attention.spatial_conv.weight",
    "attention_module.conv_temporal_attention.weight": "attention.temporal_conv.weight",
}
_ATTENTION_BN = re.compile(r"^attention_module\.spatial\.bn\.(\w+)$")
_STREAM_PREFIX = re.compile(r"^(rgb|pose)_(backbone|cls_head)\.")


def is_authors_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether the keys are the authors' (fused or stage 1), after any `module.` prefix."""
    return any(
        key.startswith(("rgb_backbone.", "pose_backbone.", "backbone.", "attention_module."))
        for key in state_dict
    )


def _stream_key(key: str) -> str | None:
    """A backbone / head key without its stream ("backbone.layer1.0.conv1.conv.weight") -> ours."""
    for pattern, replacement in AUTHOR_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    match = _LAYER.match(key)
    if match and match.group(3) in _BLOCK:
        layer, block, part, leaf = match.groups()
        return f"stages.{int(layer) - 1}.blocks.{block}.{_BLOCK[part]}.{leaf}"
    return None


def _our_key(key: str) -> str | None:
    """One authors' key -> epam's, or None when no rule knows it."""
    if key in _ATTENTION:
        return _ATTENTION[key]
    if _ATTENTION_BN.match(key):
        return _ATTENTION_BN.sub(r"attention.spatial_bn.\1", key)
    stream = _STREAM_PREFIX.match(key)
    if stream:
        inner = _stream_key(_STREAM_PREFIX.sub(r"\2.", key))
        return None if inner is None else f"{stream.group(1)}.{inner}"
    return _stream_key(key)


def _frames_layout(key: str, value: Tensor) -> Tensor:
    """Conv3d kernels [O, I, 1, k, k] -> Conv2d [O, I, k, k] (epam runs frames as a batch)."""
    if value.dim() == 5 and value.shape[2] == 1:
        return value.squeeze(2)
    return value


def convert_authors_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """The authors' state dict (without `module.`) -> (epam's state dict, stream).

    stream is "epam" for the fused model, else "rgb" or "pose" (read from the stem's input
    channels: 3 for RGB). Raises CheckpointError naming the keys no rule renames.
    """
    converted, unknown = {}, []
    for key, value in state_dict.items():
        ours = _our_key(key)
        if ours is None:
            unknown.append(key)
        else:
            converted[ours] = _frames_layout(ours, value)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} keys are not EPAM-Net's as the authors name them (e.g. "
            f"{', '.join(unknown[:3])}); is it the fused model or an X-ShiftNet stream? (the "
            "authors' plain-X3D RGB files, with conv1_t and fc1/fc2 heads, are another network)"
        )
    if any(key.startswith("attention.") for key in converted):
        return converted, "epam"
    stem = converted.get("stem.conv.weight")
    if stem is None:
        raise CheckpointError("no stem convolution (conv1_s) in the file: not a whole stream")
    return converted, "rgb" if stem.shape[1] == 3 else "pose"


def stream_state_dict(source: str | Path | Mapping[str, Tensor], stream: str) -> dict[str, Tensor]:
    """The tensors of one stream, from any file `--init-rgb` / `--init-pose` accept: an epam
    checkpoint or state dict of that stream, of EPAM-Net (its `rgb.*` / `pose.*` part), or the
    authors' fused or stage-1 files (converted)."""
    state_dict = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    if is_authors_state_dict(state_dict):
        state_dict = convert_authors_state_dict(state_dict)[0]
    prefix = f"{stream}."
    part = {key[len(prefix) :]: v for key, v in state_dict.items() if key.startswith(prefix)}
    return part or state_dict


@dataclass(frozen=True)
class Converted:
    """What `convert_checkpoint` wrote: the file, the network, the classes."""

    path: Path
    stream: str
    num_classes: int
    tensors: int


def _class_names(classes: str | None, count: int) -> list[str]:
    """Class names from `--classes`: a number (must match the head), a classes CSV (label,name, as
    manifests/<protocol>_classes.csv), or nothing (the labels as names)."""
    if classes is None or classes.isdigit():
        if classes is not None and int(classes) != count:
            raise CheckpointError(f"--classes {classes}, but the file's classifier has {count}")
        return [str(label) for label in range(count)]
    path = Path(classes)
    try:
        lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line]
    except OSError as err:
        raise CheckpointError(f"--classes {path}: cannot read ({err.strerror or err})") from None
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    if not rows or not {"label", "name"} <= set(rows[0]):
        raise CheckpointError(f"--classes {path}: expected a CSV with columns label,name")
    names = [row["name"] for row in sorted(rows, key=lambda row: int(row["label"]))]
    if len(names) != count:
        raise CheckpointError(f"--classes {path}: {len(names)} classes, the classifier has {count}")
    return names


def authors_payload(source: str | Path, classes: str | None = None) -> dict:
    """The authors' checkpoint at `source` as an epam-train checkpoint payload (what `eval` and
    `--init-*` read), checked by a strict load into the network it describes."""
    state_dict = read_state_dict(source)
    if not is_authors_state_dict(state_dict):
        raise CheckpointError(
            f"{source}: no key is named as the authors name EPAM-Net (rgb_backbone., "
            "pose_backbone., backbone., attention_module.); an epam checkpoint needs no conversion"
        )
    converted, stream = convert_authors_state_dict(state_dict)
    prefix = "pose." if stream == "epam" else ""
    head = converted.get(f"{prefix}head.fc.weight")
    if head is None:
        raise CheckpointError(f"{source}: no classifier (cls_head.fc_cls) in the file")
    pose_stem = converted.get(f"{prefix}stem.conv.weight")
    pose_channels = int(pose_stem.shape[1]) if pose_stem is not None and stream != "rgb" else 17
    model_args = {
        "stream": stream,
        "num_classes": int(head.shape[0]),
        "pose_channels": pose_channels,
        "dropout": 0.5,
    }
    model = build_model(**model_args)
    load_weights(model, converted, target=stream, strict=True)
    config = TrainConfig(
        dataset_dir="(converted)",
        protocol="(converted)",
        out="(converted)",
        stream=stream,
        heatmap="both" if pose_channels == 34 else "joint",
    )
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "model_args": model_args,
        "config": config.to_dict(),
        "class_names": _class_names(classes, model_args["num_classes"]),
        "epoch": 0,
        "converted_from": str(source),
    }


def convert_checkpoint(
    source: str | Path, out: str | Path, classes: str | None = None
) -> Converted:
    """The authors' checkpoint at `source` -> an epam-train checkpoint at `out` (loadable by
    `eval`, `--init-*`, `export`)."""
    payload = authors_payload(source, classes)
    save_checkpoint(out, payload)
    args = payload["model_args"]
    return Converted(Path(out), args["stream"], args["num_classes"], len(payload["model"]))


def load_any_checkpoint(path: str | Path) -> dict:
    """An epam-train checkpoint, or one of the authors' files converted in memory (classes named by
    their labels): what `eval` and `predict` read."""
    try:
        return load_checkpoint(path)
    except CheckpointError:
        if not is_authors_state_dict(read_state_dict(path)):
            raise
        return authors_payload(path)
