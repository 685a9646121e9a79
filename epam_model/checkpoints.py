"""Training checkpoints: plain containers, numbers, strings and tensors only, so that they load with
`torch.load(weights_only=True)`, written atomically, with every rank's RNG state for an exact
resume."""

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from epam_data.atomic import write_atomic
from epam_model.epamnet import CheckpointError, build_model, load_torch_file, load_weights

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "rng_state",
    "set_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "find_checkpoint",
    "build_from_checkpoint",
]

CHECKPOINT_FORMAT = "epam-train-checkpoint"
CHECKPOINT_VERSION = 1


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states (torch, CUDA, numpy, python) as tensors, lists and numbers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write atomically: a temporary file in the same folder, flushed to disk, then renamed over
    `path`."""
    write_atomic(path, lambda stream: torch.save(dict(payload), stream))
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint written by `train`, read with weights_only=True; CheckpointError when
    it is not one."""
    path = Path(path)
    payload = load_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not an epam-train checkpoint (no format={CHECKPOINT_FORMAT!r}); a bare state "
            "dict can be loaded with --init-rgb / --init-pose instead"
        )
    missing = [
        key
        for key in ("model", "model_args", "config", "class_names", "epoch")
        if key not in payload
    ]
    if missing or payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')!r} without {missing}; this epam "
            f"reads version {CHECKPOINT_VERSION}"
        )
    _check_model_args(payload["model_args"], str(path))
    return payload


def find_checkpoint(source: str | Path) -> Path:
    """A checkpoint file as given, or a run folder's best.pt (else its last.pt)."""
    source = Path(source)
    if source.is_dir():
        for name in ("best.pt", "last.pt"):
            if (source / name).is_file():
                return source / name
        raise CheckpointError(
            f"{source}: a folder without best.pt or last.pt; pass a run folder of epam-train "
            "train or a checkpoint file"
        )
    if not source.exists():
        raise CheckpointError(f"{source}: no such checkpoint file or run folder")
    return source


MODEL_ARGS = {"stream": str, "num_classes": int, "pose_channels": int, "dropout": float}


def _bad_model_args(args: Any) -> list[str]:
    """The builder arguments that are not `MODEL_ARGS` of their type (all of them when `args` is
    not a mapping with a stream)."""
    if not isinstance(args, Mapping) or "stream" not in args:
        return [f"model_args={args!r}"]
    bad = []
    for key, value in args.items():
        kind = MODEL_ARGS.get(key)
        allowed = (float, int) if kind is float else kind
        if kind is None or isinstance(value, bool) or not isinstance(value, allowed):
            bad.append(f"{key}={value!r}")
    return bad


def _check_model_args(args: Any, where: str) -> None:
    bad = _bad_model_args(args)
    if bad:
        raise CheckpointError(
            f"{where} cannot build a network ({', '.join(bad)}; expected "
            f"{', '.join(MODEL_ARGS)}): is the file damaged or edited?"
        )


def build_from_checkpoint(payload: Mapping[str, Any]) -> nn.Module:
    """The network a checkpoint was trained as, with its weights (the builder arguments travel in
    the file). A damaged or edited file raises CheckpointError in one line: builder arguments of
    the wrong name or type, or weights that do not fit the network they describe."""
    args = payload["model_args"]
    _check_model_args(args, "the checkpoint")
    model = build_model(**args)
    load_weights(model, payload["model"], target=args["stream"], strict=True)
    return model
