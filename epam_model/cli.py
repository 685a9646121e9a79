"""`epam-train`: train, evaluate, inspect and export EPAM-Net.

Each command turns its options into a call of the Python API; `EpamError`s become one red line and exit code 1,
never a traceback.
"""

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from epam_data.errors import EpamError

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Train and evaluate EPAM-Net from prepared shards.",
                  pretty_exceptions_enable=False, add_completion=False)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Train and evaluate EPAM-Net (and each single stream) from prepared shards."""


class Stream(str, Enum):
    epam = "epam"
    rgb = "rgb"
    pose = "pose"


class Heatmap(str, Enum):
    joint = "joint"
    limb = "limb"
    both = "both"


class Render(str, Enum):
    loader = "loader"
    device = "device"


class Amp(str, Enum):
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class SelectMetric(str, Enum):
    auto = "auto"
    top1 = "top1"
    mean_class_acc = "mean_class_acc"


StreamOption = Annotated[Stream, typer.Option(help="Network: the fused model or one stream.")]
ClassesOption = Annotated[int, typer.Option("--classes", min=0, help="Classifier outputs (NTU60 60, NTU120 120).")]
PoseChannelsOption = Annotated[int, typer.Option(help="Heatmap channels: 17 joints or limbs, 34 both.")]


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(code=1)


@app.command("model-info")
def model_info_command(
    stream: StreamOption = Stream.epam,
    classes: ClassesOption = 60,
    pose_channels: PoseChannelsOption = 17,
) -> None:
    """Parameters and multiply-adds per stream, attention and total at the paper's clip sizes."""
    from epam_model.complexity import model_info

    try:
        info = model_info(stream.value, classes, pose_channels=pose_channels)
    except EpamError as err:
        raise fail(str(err)) from None
    console.print(info.table())
    for note in info.notes():
        console.print(note, soft_wrap=True, highlight=False, markup=False)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", dir_okay=False, help="ONNX file to write.")],
    stream: StreamOption = Stream.epam,
    classes: ClassesOption = 60,
    pose_channels: PoseChannelsOption = 17,
    weights: Annotated[Optional[Path], typer.Option(help="State dict of this whole model (strict).")] = None,
    rgb_weights: Annotated[Optional[Path], typer.Option(help="RGB-stream checkpoint for epam's RGB half.")] = None,
    pose_weights: Annotated[Optional[Path], typer.Option(help="Pose-stream checkpoint for epam's pose half.")] = None,
    check: Annotated[bool, typer.Option(help="Compare the graph with PyTorch in onnxruntime.")] = True,
) -> None:
    """Export to ONNX (dynamic batch) and check the graph against PyTorch in onnxruntime."""
    from epam_model.epamnet import build_model, load_stream_weights, load_weights
    from epam_model.export import export_onnx

    try:
        if (rgb_weights or pose_weights) and stream is not Stream.epam:
            raise fail("--rgb-weights / --pose-weights load stream checkpoints into epam; use --weights for a stream")
        model = build_model(stream.value, classes, pose_channels=pose_channels)
        reports = []
        if weights:
            reports.append(load_weights(model, weights, target=stream.value, strict=True))
        for half, path in (("rgb", rgb_weights), ("pose", pose_weights)):
            if path:
                reports.append(load_stream_weights(model, half, path))
        for report in reports:
            for line in report.lines():
                console.print(line, soft_wrap=True, highlight=False, markup=False,
                              style=None if report.clean else "yellow")
        if not reports:
            console.print("no weights given: exporting the freshly initialised model", style="yellow")
        result = export_onnx(model, out, check=check)
    except EpamError as err:
        raise fail(str(err)) from None
    for line in result.lines():
        console.print(line, soft_wrap=True, highlight=False, markup=False)


def _value(option: Optional[Enum | Path | str | int | float | bool]) -> object:
    if isinstance(option, Enum):
        return option.value
    if isinstance(option, Path):
        return str(option)
    return option


@app.command()
def train(
    dataset_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Prepared dataset folder.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", file_okay=False,
                                                help="Run folder: checkpoints, metrics.csv, config.yaml.")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="Manifest prefix: xsub, xview, xset, cs, cv2 ...")] = None,
    stream: Annotated[Optional[Stream], typer.Option(help="epam (joint), or one stream for stage 1.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", dir_okay=False,
                                                   help="YAML of options; options given here override it.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs (cosine schedule length). (default: 10)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Clips per process and step. (default: 12)")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate. (default: 0.001 x total batch / 16)")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="SGD weight decay. (default: 3e-4)")] = None,
    workers: Annotated[Optional[int], typer.Option(min=0, help="Loader processes per process. (default: 4)")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU compute threads per process. (default: the "
                                                              "usable cores minus --workers, at least 1)")] = None,
    amp: Annotated[Optional[Amp], typer.Option(help="Mixed precision: off, bf16, fp16 (CUDA). (default: off)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of init, sampling and augmentation. (default: 100)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N. (default: auto)")] = None,
    pose_frames: Annotated[Optional[int], typer.Option(min=1, help="Pose frames per clip. (default: 48)")] = None,
    rgb_every: Annotated[Optional[int], typer.Option(min=1, help="RGB frame every N pose frames. (default: 3)")] = None,
    rgb_size: Annotated[Optional[int], typer.Option(min=1, help="RGB side in pixels. (default: 224)")] = None,
    heatmap_size: Annotated[Optional[int], typer.Option(min=1, help="Heatmap side. (default: 56)")] = None,
    heatmap: Annotated[Optional[Heatmap], typer.Option(help="Pose input: joint, limb or both. (default: joint)")
                       ] = None,
    render: Annotated[Optional[Render], typer.Option(help="Draw heatmaps in the loader or on the device. "
                                                          "[default: device on a GPU, loader on CPU]")] = None,
    init_rgb: Annotated[Optional[Path], typer.Option(dir_okay=False, help="Stage-1 RGB checkpoint to start from.")
                        ] = None,
    init_pose: Annotated[Optional[Path], typer.Option(dir_okay=False, help="Stage-1 pose checkpoint to start from.")
                         ] = None,
    sync_bn: Annotated[Optional[bool], typer.Option("--sync-bn/--no-sync-bn",
                                                    help="SyncBatchNorm across GPUs (DDP on CUDA).")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last",
                                                          help="channels_last weights (faster). (default: on)")] = None,
    select_metric: Annotated[Optional[SelectMetric], typer.Option(
        help="Validation metric that picks best.pt. (default: auto = mean_class_acc on Toyota, else top1)")] = None,
    val_split: Annotated[Optional[str], typer.Option(help="Validation split. (default: val if present, else test)")
                         ] = None,
    deterministic: Annotated[Optional[bool], typer.Option(
        "--deterministic/--no-deterministic",
        help="Deterministic kernels (cuDNN and torch's own; slower). With --threads fixed, two runs on one machine "
             "give the same numbers.")] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Progress bar per epoch.")
                        ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
    stop_after: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many epochs in this invocation "
                                                                  "(time-limited jobs; continue with --resume).")
                          ] = None,
) -> None:
    """Train EPAM-Net or one stream; checkpoint every epoch, keep the best by validation. Multi-GPU via torchrun."""
    from epam_model.config import resolve_train_config
    from epam_model.engine import train as run_training

    given = {name: _value(value) for name, value in dict(
        out=out, protocol=protocol, stream=stream, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, workers=workers, threads=threads, amp=amp, seed=seed, device=device,
        pose_frames=pose_frames, rgb_every=rgb_every, rgb_size=rgb_size, heatmap_size=heatmap_size, heatmap=heatmap,
        render=render,
        init_rgb=init_rgb, init_pose=init_pose, sync_bn=sync_bn, channels_last=channels_last,
        select_metric=select_metric, val_split=val_split, deterministic=deterministic, progress=progress).items()}
    try:
        settings = resolve_train_config(dataset_dir, config_file=config, overrides=given, resume=resume)
        result = run_training(settings, resume=resume, stop_after=stop_after, console=console)
    except EpamError as err:
        raise fail(str(err)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"{result.run_dir}: {result.epochs_done} epochs; best val {result.best_metric} "
                      f"{result.best_value:.4f} at epoch {result.best_epoch} (best.pt)", soft_wrap=True,
                      highlight=False, markup=False)


@app.command("eval")
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder (uses best.pt, else last.pt) or checkpoint file.")],
    dataset_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Prepared dataset folder.")],
    protocol: Annotated[str, typer.Option(help="Manifest prefix: xsub, xview, xset, cs, cv2 ...")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    clips: Annotated[int, typer.Option(min=1, help="Clips per video (different sampling offsets), logits averaged.")
                     ] = 1,
    flip: Annotated[bool, typer.Option("--flip", help="Also score mirrored inputs and average.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", file_okay=False,
        help="Report folder. (default: RUN/eval/PROTOCOL_SPLIT, with _clipsN and _flip when used)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Clips per step. (default: the run's)")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Loader processes.")] = 2,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU compute threads. (default: the usable cores "
                                                              "minus --workers, at least 1)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Top-1, top-5 and mean class accuracy per stream and fused; metrics.json, per-class CSV, confusion PNG, logits."""
    from epam_model.engine import evaluate

    try:
        result = evaluate(checkpoint, dataset_dir, protocol, split=split, clips=clips, flip=flip, out_dir=out,
                          batch_size=batch_size, workers=workers, device=device, threads=threads)
    except EpamError as err:
        raise fail(str(err)) from None
    if result.files:
        console.print(result.table())
        console.print(f"wrote {result.out_dir}: " + ", ".join(path.name for path in result.files.values()),
                      soft_wrap=True, highlight=False, markup=False)


if __name__ == "__main__":   # torchrun --nproc_per_node N -m epam_model.cli train ...
    app()
