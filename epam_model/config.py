"""Options of a training run: `TrainConfig` (the paper's recipe by default), read from a YAML file
and the command line, checked before any data is read, and stored in every checkpoint as a plain
dict."""

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from epam_data.errors import EpamError
from epam_model.checkpoints import load_checkpoint
from epam_model.data import HEATMAP_INPUTS, ClipConfig
from epam_model.epamnet import STREAMS

__all__ = [
    "AMP_MODES",
    "RENDER_MODES",
    "SELECT_METRICS",
    "HEATMAP_KINDS",
    "LEGACY_VALUES",
    "RUN_ONLY_FIELDS",
    "TrainConfig",
    "feature_size",
    "field_type",
    "load_yaml_config",
    "option",
    "resolve_train_config",
    "saved_options",
]

AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")
RENDER_MODES: tuple[str, ...] = ("auto", "loader", "device")
SELECT_METRICS: tuple[str, ...] = ("auto", "top1", "mean_class_acc")
HEATMAP_KINDS: tuple[str, ...] = tuple(
    HEATMAP_INPUTS
)  # the pose-stream input choices (data.HEATMAP_INPUTS)
# Options added after runs were saved without them: the value that reproduces those runs, for
# --resume and for comparing a resumed run's options with its checkpoint's.
LEGACY_VALUES: dict[str, Any] = {"zero_init_residual": True, "precise_bn": 0}
# Options that change how a run is executed, not what it computes: they may differ when a run is
# resumed.
RUN_ONLY_FIELDS = frozenset(
    {
        "dataset_dir",
        "out",
        "workers",
        "threads",
        "device",
        "progress",
        "init_rgb",
        "init_pose",
        "init_partial",
        "eval_batch_size",
        "deterministic",
    }
)


def option(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    choices: tuple[str, ...] | None = None,
    default_text: str | None = None,
    path: str | None = None,
    short: str | None = None,
) -> Any:
    """A TrainConfig field with what the command line needs: help, bounds, choices, how to show the
    default, and whether it names a file or a folder. `epam-train train` builds its options from
    these (epam_model.cli)."""
    meta = {
        "help": help,
        "min": min,
        "choices": choices,
        "default_text": default_text,
        "path": path,
        "short": short,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; the paper's recipe by default (docs/architecture.md 9, 10).
    Stored in each checkpoint, read from YAML (`--config`), and the single source of `epam-train
    train`'s options: name, type, default and help of each come from its field here.

    batch_size is per process (the authors ran 2 GPUs x 12). lr and warmup_epochs None follow the
    recipe (`recipe`): a run that starts from random weights (stage 1, or EPAM-Net without --init-*)
    takes PYSKL's from-scratch rate for PoseC3D, 0.4 at 256 clips, scaled by the square root of the
    total batch (chosen on Penn Action's val, docs/training.md), with a linear warm-up over 5 % of
    the epochs; a run initialised from stage-1 checkpoints takes the authors' fine-tuning rate,
    0.001 per 16 clips, without warm-up (docs/training.md). render "auto" renders heatmaps on the
    GPU when training on one, in the loader workers otherwise. select_metric "auto" keeps the best
    checkpoint by mean class accuracy on Toyota Smarthome (dataset.json says "toyota"), by top-1
    elsewhere; the fused logits decide for EPAM-Net.
    """

    dataset_dir: str = option(None, "Prepared dataset folder.", path="dir")
    protocol: str = option(
        None, "Manifest prefix: xsub, xview, xset, cs, cv2 ...", default_text="required"
    )
    out: str = option(
        None,
        "Run folder: checkpoints, metrics.csv, config.yaml.",
        path="dir",
        short="-o",
        default_text="required",
    )
    stream: str = option(
        "epam", "Network: epam (both streams, stage 2) or one stream (stage 1).", choices=STREAMS
    )
    epochs: int = option(10, "Epochs (length of the cosine schedule).", min=1)
    batch_size: int = option(12, "Clips per process and step.", min=1)
    lr: float | None = option(
        None,
        "Learning rate.",
        default_text="from scratch 0.4 x sqrt(total batch / 256); with --init-* 0.001 x total "
        "batch / 16",
    )
    warmup_epochs: float | None = option(
        None,
        "Epochs of linear lr warm-up before the cosine decay.",
        min=0,
        default_text="from scratch 5 % of --epochs; with --init-* 0",
    )
    momentum: float = option(0.9, "SGD momentum.", min=0)
    weight_decay: float = option(3e-4, "SGD weight decay.", min=0)
    clip_grad: float = option(40.0, "Largest gradient norm (clipped above).", min=0)
    dropout: float = option(0.5, "Dropout before each classifier.", min=0)
    zero_init_residual: bool = option(
        False,
        "Start each residual block's last BN scale at 0 (mmaction2's zero_init_residual, the "
        "authors' init) instead of 1; from scratch that learns far more slowly at first "
        "(docs/training.md). Weights loaded with --init-* replace it either way.",
    )
    precise_bn: int = option(
        200,
        "Batches of the training split that re-estimate the BatchNorm statistics before each "
        "validation (PySlowFast's precise BN; at most one pass). 0: keep the running averages.",
        min=0,
    )
    workers: int = option(4, "Loader processes per process (at most the usable cores).", min=0)
    threads: int | None = option(
        None,
        "CPU compute threads per process.",
        min=1,
        default_text="usable cores minus --workers, at least 1",
    )
    amp: str = option("off", "Mixed precision (bf16 or fp16 on CUDA).", choices=AMP_MODES)
    seed: int = option(100, "Seed of initialisation, sampling and augmentation.")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    pose_frames: int = option(48, "Pose frames per clip.", min=1)
    rgb_every: int = option(3, "One RGB frame every N pose frames.", min=1)
    rgb_size: int = option(224, "RGB side in pixels (4 x --heatmap-size for EPAM-Net).", min=1)
    heatmap_size: int = option(56, "Heatmap side in pixels.", min=1)
    heatmap: str = option(
        "joint",
        "Pose input: joint, limb or both volumes (both: 34 channels; what `epam-data extract "
        "--heatmaps both` stores).",
        choices=HEATMAP_KINDS,
    )
    render: str = option(
        "auto",
        "Where heatmaps are drawn: auto (device on a GPU, loader on CPU), loader, device.",
        choices=RENDER_MODES,
    )
    init_rgb: str | None = option(None, "Stage-1 RGB checkpoint to start from.", path="file")
    init_pose: str | None = option(None, "Stage-1 pose checkpoint to start from.", path="file")
    init_partial: bool = option(
        False,
        "Train even when --init-rgb / --init-pose leaves part of the stream's backbone at its "
        "initial values (refused by default).",
    )
    sync_bn: bool = option(False, "SyncBatchNorm across GPUs (DDP on CUDA).")
    channels_last: bool = option(True, "channels_last memory format (faster on CPU and GPU).")
    select_metric: str = option(
        "auto",
        "Validation metric that picks best.pt.",
        choices=SELECT_METRICS,
        default_text="auto: mean_class_acc on Toyota, else top1",
    )
    val_split: str | None = option(
        None, "Validation split.", default_text="val if present, else test"
    )
    eval_batch_size: int | None = option(
        None, "Clips per step when validating.", min=1, default_text="--batch-size"
    )
    deterministic: bool = option(
        False,
        "Deterministic kernels (cuDNN and torch's own; slower). With --threads "
        "fixed, two runs on one machine give the same numbers.",
    )
    progress: bool = option(True, "Progress bar per epoch.")

    def check(self) -> None:
        """Reject impossible combinations before any data is read, with the option to change."""
        choices = {
            "stream": STREAMS,
            "amp": AMP_MODES,
            "render": RENDER_MODES,
            "heatmap": HEATMAP_KINDS,
            "select_metric": SELECT_METRICS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise EpamError(f"{name}={getattr(self, name)!r}: choose one of {list(allowed)}")
        for name in (
            "epochs",
            "batch_size",
            "pose_frames",
            "rgb_every",
            "rgb_size",
            "heatmap_size",
        ):
            if getattr(self, name) < 1:
                raise EpamError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.workers < 0:
            raise EpamError(f"workers={self.workers}: must be 0 (load in the main process) or more")
        if self.precise_bn < 0:
            raise EpamError(f"precise_bn={self.precise_bn}: must be 0 (off) or more batches")
        if self.threads is not None and self.threads < 1:
            raise EpamError(
                f"threads={self.threads}: must be at least 1 (leave it unset for the usable cores)"
            )
        if self.lr is not None and self.lr <= 0:
            raise EpamError(f"lr={self.lr}: must be positive (leave it unset for the recipe's)")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs <= self.epochs:
            raise EpamError(
                f"warmup_epochs={self.warmup_epochs}: must be in 0..epochs ({self.epochs})"
            )
        if self.stream == "epam":
            if self.pose_frames % self.rgb_every:
                raise EpamError(
                    f"pose_frames={self.pose_frames} is not a multiple of "
                    f"rgb_every={self.rgb_every}; the attention pools pose frames onto RGB frames"
                )
            rgb_map, pose_map = feature_size(self.rgb_size, 5), feature_size(self.heatmap_size, 3)
            if rgb_map != pose_map:
                raise EpamError(
                    f"rgb_size={self.rgb_size} gives a {rgb_map}x{rgb_map} RGB feature map but "
                    f"heatmap_size={self.heatmap_size} a {pose_map}x{pose_map} pose one; the "
                    "attention "
                    "needs the same size: use rgb_size = 4 x heatmap_size (paper: 224 and 56)"
                )
        if self.init_rgb and self.stream == "pose" or self.init_pose and self.stream == "rgb":
            raise EpamError(
                f"--init-{'rgb' if self.stream == 'pose' else 'pose'} does not fit a {self.stream} "
                f"model; give --init-{self.stream} (or train --stream epam)"
            )

    @property
    def recipe(self) -> str:
        """ "scratch" when no weights are loaded (--init-rgb / --init-pose), else "finetune"."""
        return "finetune" if self.init_rgb or self.init_pose else "scratch"

    def base_lr(self, world_size: int) -> float:
        """The lr of the run: --lr, else the recipe's rate times the total batch."""
        if self.lr is not None:
            return self.lr
        total = self.batch_size * world_size
        return 0.4 * math.sqrt(total / 256) if self.recipe == "scratch" else 0.001 * total / 16

    def warmup(self) -> float:
        """Epochs of linear warm-up: --warmup-epochs, else 5 % of the epochs from scratch, 0 when
        fine-tuning."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return 0.05 * self.epochs if self.recipe == "scratch" else 0.0

    def clip_config(self) -> ClipConfig:
        """The clip settings this run trains on (and its checkpoints are evaluated and predicted
        with)."""
        return ClipConfig(
            pose_frames=self.pose_frames,
            rgb_every=self.rgb_every,
            rgb_size=self.rgb_size,
            heatmap_size=self.heatmap_size,
            heatmap=self.heatmap,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "options") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise EpamError(f"{source}: unknown option(s) {unknown}; known: {sorted(names)}")
        missing = [
            name for name in ("dataset_dir", "protocol", "out") if values.get(name) in (None, "")
        ]
        if missing:
            raise EpamError(
                f"{source}: {', '.join(missing)} not given; pass --{missing[0].replace('_', '-')} "
                "or set it in the --config file"
            )
        return cls(**{name: _coerce(name, value, source) for name, value in values.items()})


def field_type(field: dataclasses.Field) -> type:
    """The value type of a TrainConfig field: int, float, bool or str (None allowed or not)."""
    kinds = [
        kind for kind in typing.get_args(field.type) or (field.type,) if kind is not type(None)
    ]
    return kinds[0]


_FIELDS = dataclasses.fields(TrainConfig)
_INT_FIELDS = {field.name for field in _FIELDS if field_type(field) is int}
_FLOAT_FIELDS = {field.name for field in _FIELDS if field_type(field) is float}
_BOOL_FIELDS = {field.name for field in _FIELDS if field_type(field) is bool}


def _coerce(name: str, value: Any, source: str) -> Any:
    """YAML reads `1e-3` as a string and users write `true` or 1; turn values into the field's type
    or say which."""
    if value is None:
        return None
    if name == "amp" and isinstance(value, bool):  # YAML 1.1 reads a bare `off` as false
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
        kind = (
            "an integer"
            if name in _INT_FIELDS
            else "a number"
            if name in _FLOAT_FIELDS
            else "true or false"
        )
        raise EpamError(f"{source}: {name}={value!r} is not {kind}") from None
    return str(value)


def feature_size(size: int, strided_layers: int) -> int:
    """Spatial size after `strided_layers` 3x3 stride-2 convs with padding 1 (each gives ceil(size /
    2))."""
    for _ in range(strided_layers):
        size = (size + 1) // 2
    return size


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping of TrainConfig options (dashes or underscores, e.g. `batch-size:
    12`)."""
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


def saved_options(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's options as it ran: its stored config, with `LEGACY_VALUES` for the options
    added after it was saved."""
    return {**LEGACY_VALUES, **checkpoint["config"]}


def resolve_train_config(
    dataset_dir: str | Path,
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
) -> TrainConfig:
    """Defaults < the checkpoint's config (when resuming) < the YAML file < options given on the
    command line.

    `overrides` holds only the options the user gave (None means "not given"). When resuming, the
    run folder's last.pt supplies every option not given again, so `epam-train train DATA --out RUN
    --resume` is enough.
    """
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    from_file = load_yaml_config(config_file) if config_file else {}
    values: dict[str, Any] = {}
    out = given.get("out", from_file.get("out"))
    if resume and out:
        last = Path(out) / "last.pt"
        if not last.is_file():
            raise EpamError(f"{last}: nothing to resume; drop --resume to start this run")
        values.update(saved_options(load_checkpoint(last)))
    values.update(from_file)
    values.update(given)
    values["dataset_dir"] = str(dataset_dir)
    source = f"{config_file}" if config_file else "options"
    config = TrainConfig.from_dict(values, source=source)
    config.check()
    return config
