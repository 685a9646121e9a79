"""Options of a training run: `TrainConfig` (the paper's recipe by default), read from a YAML file and the command
line, checked before any data is read, and stored in every checkpoint as a plain dict."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from epam_data.errors import EpamError
from epam_model.checkpoints import load_checkpoint
from epam_model.epamnet import STREAMS

__all__ = ["AMP_MODES", "RENDER_MODES", "SELECT_METRICS", "HEATMAP_KINDS", "RUN_ONLY_FIELDS", "TrainConfig",
           "feature_size", "load_yaml_config", "resolve_train_config"]

AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")
RENDER_MODES: tuple[str, ...] = ("auto", "loader", "device")
SELECT_METRICS: tuple[str, ...] = ("auto", "top1", "mean_class_acc")
HEATMAP_KINDS: tuple[str, ...] = ("joint", "limb", "both")
# Options that change how a run is executed, not what it computes: they may differ when a run is resumed.
RUN_ONLY_FIELDS = frozenset({"dataset_dir", "out", "workers", "threads", "device", "progress", "init_rgb",
                             "init_pose", "eval_batch_size", "deterministic"})


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; the paper's recipe by default (paper.md 2, 4.2). Stored in each checkpoint.

    batch_size is per process (the authors ran 2 GPUs x 12); lr None means 0.001 x batch_size x world size / 16.
    render "auto" renders heatmaps on the GPU when training on one, in the loader workers otherwise.
    select_metric "auto" keeps the best checkpoint by mean class accuracy on Toyota Smarthome (dataset.json says
    "toyota"), by top-1 elsewhere; the fused logits decide for EPAM-Net.
    """

    dataset_dir: str
    protocol: str
    out: str
    stream: str = "epam"
    epochs: int = 10
    batch_size: int = 12
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 3e-4
    clip_grad: float = 40.0
    dropout: float = 0.5
    workers: int = 4
    threads: int | None = None
    amp: str = "off"
    seed: int = 100
    device: str = "auto"
    pose_frames: int = 48
    rgb_every: int = 3
    rgb_size: int = 224
    heatmap_size: int = 56
    heatmap: str = "joint"
    render: str = "auto"
    init_rgb: str | None = None
    init_pose: str | None = None
    sync_bn: bool = False
    channels_last: bool = True
    select_metric: str = "auto"
    val_split: str | None = None
    eval_batch_size: int | None = None
    deterministic: bool = False
    progress: bool = True

    def check(self) -> None:
        """Reject impossible combinations before any data is read, with the option to change."""
        choices = {"stream": STREAMS, "amp": AMP_MODES, "render": RENDER_MODES, "heatmap": HEATMAP_KINDS,
                   "select_metric": SELECT_METRICS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise EpamError(f"{name}={getattr(self, name)!r}: choose one of {list(allowed)}")
        for name in ("epochs", "batch_size", "pose_frames", "rgb_every", "rgb_size", "heatmap_size"):
            if getattr(self, name) < 1:
                raise EpamError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.workers < 0:
            raise EpamError(f"workers={self.workers}: must be 0 (load in the main process) or more")
        if self.threads is not None and self.threads < 1:
            raise EpamError(f"threads={self.threads}: must be at least 1 (leave it unset for the usable cores)")
        if self.lr is not None and self.lr <= 0:
            raise EpamError(f"lr={self.lr}: must be positive (leave it unset for 0.001 x total batch / 16)")
        if self.stream == "epam":
            if self.pose_frames % self.rgb_every:
                raise EpamError(f"pose_frames={self.pose_frames} is not a multiple of rgb_every={self.rgb_every}; "
                                "the attention pools pose frames onto RGB frames")
            rgb_map, pose_map = feature_size(self.rgb_size, 5), feature_size(self.heatmap_size, 3)
            if rgb_map != pose_map:
                raise EpamError(f"rgb_size={self.rgb_size} gives a {rgb_map}x{rgb_map} RGB feature map but "
                                f"heatmap_size={self.heatmap_size} a {pose_map}x{pose_map} pose one; the attention "
                                "needs the same size: use rgb_size = 4 x heatmap_size (paper: 224 and 56)")
        if self.init_rgb and self.stream == "pose" or self.init_pose and self.stream == "rgb":
            raise EpamError(f"--init-{'rgb' if self.stream == 'pose' else 'pose'} does not fit a {self.stream} "
                            f"model; give --init-{self.stream} (or train --stream epam)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "options") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise EpamError(f"{source}: unknown option(s) {unknown}; known: {sorted(names)}")
        missing = [name for name in ("dataset_dir", "protocol", "out") if values.get(name) in (None, "")]
        if missing:
            raise EpamError(f"{source}: {', '.join(missing)} not given; pass --{missing[0].replace('_', '-')} "
                            "or set it in the --config file")
        return cls(**{name: _coerce(name, value, source) for name, value in values.items()})


_INT_FIELDS = {"epochs", "batch_size", "workers", "threads", "seed", "pose_frames", "rgb_every", "rgb_size",
               "heatmap_size",
               "eval_batch_size"}
_FLOAT_FIELDS = {"lr", "momentum", "weight_decay", "clip_grad", "dropout"}
_BOOL_FIELDS = {"sync_bn", "channels_last", "deterministic", "progress"}


def _coerce(name: str, value: Any, source: str) -> Any:
    """YAML reads `1e-3` as a string and users write `true` or 1; turn values into the field's type or say which."""
    if value is None:
        return None
    if name == "amp" and isinstance(value, bool):       # YAML 1.1 reads a bare `off` as false
        if value:
            raise EpamError(f"{source}: amp={value!r}: name the precision, bf16 or fp16 (or off)")
        return "off"
    try:
        if name in _INT_FIELDS:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if name in _FLOAT_FIELDS:
            return float(value)
        if name in _BOOL_FIELDS:
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            if not isinstance(value, (bool, int)):
                raise ValueError
            return bool(value)
    except (TypeError, ValueError):
        kind = "an integer" if name in _INT_FIELDS else "a number" if name in _FLOAT_FIELDS else "true or false"
        raise EpamError(f"{source}: {name}={value!r} is not {kind}") from None
    return str(value)


def feature_size(size: int, strided_layers: int) -> int:
    """Spatial size after `strided_layers` 3x3 stride-2 convs with padding 1 (each gives ceil(size / 2))."""
    for _ in range(strided_layers):
        size = (size + 1) // 2
    return size


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping of TrainConfig options (dashes or underscores, e.g. `batch-size: 12`)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EpamError(f"{path}: no such config file") from None
    except (OSError, yaml.YAMLError) as err:
        raise EpamError(f"{path}: cannot read it as YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EpamError(f"{path}: expected a mapping of option: value, found {type(data).__name__}")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def resolve_train_config(
        dataset_dir: str | Path, *, config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
        resume: bool = False,
) -> TrainConfig:
    """Defaults < the checkpoint's config (when resuming) < the YAML file < options given on the command line.

    `overrides` holds only the options the user gave (None means "not given"). When resuming, the run folder's
    last.pt supplies every option not given again, so `epam-train train DATA --out RUN --resume` is enough.
    """
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    from_file = load_yaml_config(config_file) if config_file else {}
    values: dict[str, Any] = {}
    out = given.get("out", from_file.get("out"))
    if resume and out:
        last = Path(out) / "last.pt"
        if not last.is_file():
            raise EpamError(f"{last}: nothing to resume; drop --resume to start this run")
        values.update(load_checkpoint(last)["config"])
    values.update(from_file)
    values.update(given)
    values["dataset_dir"] = str(dataset_dir)
    source = f"{config_file}" if config_file else "options"
    config = TrainConfig.from_dict(values, source=source)
    config.check()
    return config
