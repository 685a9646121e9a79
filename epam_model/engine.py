"""Training and evaluation loops for EPAM-Net and its single streams (docs/architecture.md 8, 10).

`train(config)` reads like one page, as nanoGPT's loop does: set up (devices, DDP, data, model,
optimiser), resume, then per epoch: cosine lr per iteration, AMP step with gradient clipping at 40,
validation, metrics row, checkpoint. `evaluate(...)` rebuilds the model from a checkpoint alone,
scores a split (optionally several clips per video and flipped inputs) and writes metrics.json, a
per-class CSV, a confusion-matrix PNG and the raw logits for later fusion.

The recipe follows the authors' joint fine-tuning (docs/architecture.md 10): SGD, momentum 0.9,
weight decay 3e-4 on every parameter, lr = 0.001 x total batch / 16, a cosine stepped every
iteration to 0, no warm-up, clip-grad 40, loss = CE(rgb logits) + CE(pose logits). A run from random
weights (stage 1) takes PYSKL's from-scratch rate instead, 0.4 x sqrt(total batch / 256), after a
linear warm-up over 5 % of the epochs (`TrainConfig.recipe`, docs/training.md). Two things differ on
purpose:
- validation under DDP scores every sample exactly once (the authors' DistributedSampler pads the
  test set and averages per batch, so some samples count twice): rank r takes indices r::world,
  results are gathered, and the merge checks that each index arrived once;
- a checkpoint holds everything needed to continue bit for bit (RNG states of every rank included)
  and only plain containers, numbers, strings and tensors, so it loads with
  `torch.load(weights_only=True)`.

Runs go through torchrun for several GPUs or nodes: `torchrun --nproc_per_node 4 -m epam_model.cli
train ...`; WORLD_SIZE, RANK and LOCAL_RANK come from the environment (nccl on CUDA, gloo on CPU).
Only rank 0 writes files.
"""

import contextlib
import csv
import dataclasses
import functools
import io
import json
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from epam_data.atomic import remove_stale_temps, write_atomic, write_csv_atomic, write_text_atomic
from epam_data.errors import EpamError
from epam_data.heatmaps import COCO17_FLIP_PERM, COCO_LIMBS, flip_heatmaps
from epam_data.shards import read_dataset_json
from epam_model.authors import load_any_checkpoint, stream_state_dict
from epam_model.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    build_from_checkpoint,
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from epam_model.config import RUN_ONLY_FIELDS, TrainConfig, saved_options
from epam_model.confusion_plot import draw_confusion_png
from epam_model.data import ClipDataset, available_splits, model_inputs, worker_init_fn
from epam_model.distributed import (
    DistEnv,
    autocast_context,
    init_distributed,
    loader_workers,
    set_cpu_threads,
    unwrap,
)
from epam_model.epamnet import build_model, load_stream_weights, load_weights
from epam_model.metrics import confusion_matrix, per_class_table, summarize
from epam_model.precise_bn import recompute_bn_stats
from epam_model.xshiftnet import set_residual_init

__all__ = [
    "METRICS_COLUMNS",
    "TrainResult",
    "Scores",
    "EvalResult",
    "forward_heads",
    "predict",
    "train",
    "evaluate",
    "draw_confusion_png",
]

METRICS_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_top1",
    "val_mean_class_acc",
    "clips_per_s",
    "data_wait",
    "seconds",
)


# --------------------------------------------------------------------------------------------------
# Forward and scoring
# --------------------------------------------------------------------------------------------------


def forward_heads(
    model: nn.Module, stream: str, rgb: Tensor | None, pose: Tensor | None
) -> dict[str, Tensor]:
    """Logits per head: {"rgb", "pose", "fused"} for EPAM-Net (fused = summed logits,
    docs/architecture.md 8), else one."""
    if stream == "epam":
        out = model(rgb, pose)
        return {"rgb": out.rgb, "pose": out.pose, "fused": out.rgb + out.pose}
    return {stream: model(rgb if stream == "rgb" else pose)}


def main_head(stream: str) -> str:
    return "fused" if stream == "epam" else stream


def stream_loss(heads: Mapping[str, Tensor], labels: Tensor) -> Tensor:
    """CE(rgb) + CE(pose), weights 1:1 (docs/architecture.md 8); one CE for a single stream."""
    return sum(
        nn.functional.cross_entropy(heads[name].float(), labels)
        for name in ("rgb", "pose")
        if name in heads
    )


def flip_perm(heatmap: str) -> list[int]:
    """Channel permutation of the pose input under a horizontal flip: joints, limbs, or joints then
    limbs."""

    joints, limbs = list(COCO17_FLIP_PERM), list(COCO_LIMBS.flip_perm)
    return {"joint": joints, "limb": limbs, "both": joints + [len(joints) + i for i in limbs]}[
        heatmap
    ]


def flip_inputs(
    rgb: Tensor | None, pose: Tensor | None, heatmap: str
) -> tuple[Tensor | None, Tensor | None]:
    """Mirror both inputs along W; heatmap channels swap left and right (PoseC3D's test-time
    `double`)."""

    return (
        None if rgb is None else rgb.flip(-1),
        None if pose is None else flip_heatmaps(pose, flip_perm(heatmap), channel_axis=1),
    )


@dataclass(frozen=True)
class Scores:
    """Logits of one split, one row per sample in manifest order. logits: head name -> float32 [N,
    C]."""

    sample_ids: list[str]
    labels: np.ndarray
    logits: dict[str, np.ndarray]
    class_names: list[str]

    def metrics(self) -> dict[str, dict[str, float]]:
        return {head: summarize(values, self.labels) for head, values in self.logits.items()}


def _gather_unique(
    indices: np.ndarray, logits: dict[str, np.ndarray], total: int, env: DistEnv
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Collect every rank's (index, logits), order by index and check that each sample arrived
    exactly once."""
    if env.distributed:
        parts: list[Any] = [None] * env.world_size
        dist.all_gather_object(parts, (indices, logits))
        indices = np.concatenate([p[0] for p in parts])
        logits = {head: np.concatenate([p[1][head] for p in parts]) for head in logits}
    order = np.argsort(indices, kind="stable")
    indices = indices[order]
    if len(indices) != total or not np.array_equal(indices, np.arange(total)):
        raise RuntimeError(
            f"evaluation covered {len(np.unique(indices))} distinct of {total} samples with "
            f"{len(indices)} results; every sample must be scored exactly once"
        )
    return indices, {head: values[order] for head, values in logits.items()}


def predict(
    model: nn.Module,
    dataset: Any,
    *,
    stream: str,
    clip_config: Any,
    device: torch.device,
    batch_size: int,
    workers: int = 0,
    amp: str = "off",
    flip: bool = False,
    env: DistEnv = DistEnv(),
) -> dict[str, np.ndarray]:
    """Logits of every sample of `dataset`, in dataset order, on every rank (each sample scored
    exactly once).

    Under DDP rank r scores indices r::world (no padding, unlike DistributedSampler) and the results
    are gathered. With flip the logits are the mean of the plain and the mirrored inputs.
    """

    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=list(range(env.rank, len(dataset), env.world_size)),
        **_loader_options(workers),
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init_fn,
    )
    autocast, _, _ = autocast_context(amp, device)
    net = unwrap(model)
    net.eval()
    indices, chunks = [], {}
    with torch.no_grad():
        for batch in _batches(loader):
            rgb, pose = model_inputs(batch, device, clip_config)
            with autocast:
                heads = forward_heads(net, stream, rgb, pose)
                if flip:
                    mirrored = forward_heads(
                        net, stream, *flip_inputs(rgb, pose, clip_config.heatmap)
                    )
                    heads = {
                        head: (heads[head].float() + mirrored[head].float()) / 2 for head in heads
                    }
            indices.append(batch["index"].cpu().numpy().astype(np.int64))
            for head, values in heads.items():
                chunks.setdefault(head, []).append(values.float().cpu().numpy())
    heads_seen = [main_head(stream)] if stream != "epam" else ["rgb", "pose", "fused"]
    local = {
        head: np.concatenate(chunks[head])
        if head in chunks
        else np.zeros((0, net_classes(net)), np.float32)
        for head in heads_seen
    }
    local_indices = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    _, logits = _gather_unique(local_indices, local, len(dataset), env)
    return logits


def net_classes(model: nn.Module) -> int:
    net = unwrap(model)
    return (net.pose if hasattr(net, "attention") else net).num_classes


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """Where a run ended: epochs done, the best validation value and the checkpoint files."""

    run_dir: Path
    epochs_done: int
    best_metric: str
    best_value: float
    best_epoch: int
    last_row: dict[str, float]


class _Log:
    """Rank 0's outputs: a rich progress bar per epoch, metrics.csv, and TensorBoard when it is
    installed."""

    def __init__(self, run_dir: Path, env: DistEnv, console: Any, progress: bool) -> None:
        self.run_dir, self.env, self.console = run_dir, env, console
        self.show_progress = progress and env.is_main
        self.tensorboard = None
        if env.is_main:
            try:  # optional: torch.utils.tensorboard needs the tensorboard package
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                pass

    def print(self, message: str, style: str | None = None) -> None:
        if self.env.is_main and self.console is not None:
            self.console.print(message, style=style, soft_wrap=True, highlight=False, markup=False)

    @contextlib.contextmanager
    def progress(self, epoch: int, epochs: int, total: int) -> Iterator[Any]:
        if not self.show_progress:
            yield None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*columns, console=self.console, transient=False) as bar:
            yield bar, bar.add_task("train", total=total, info="")

    def truncate_metrics(self, last_epoch: int) -> None:
        """On resume, forget rows of epochs after the checkpoint (written before a crash, redone
        now)."""
        path = self.run_dir / "metrics.csv"
        if not self.env.is_main or not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= last_epoch]
        self._write_rows(path, rows)

    def write_row(self, row: Mapping[str, float]) -> None:
        if not self.env.is_main:
            return
        path = self.run_dir / "metrics.csv"
        rows = []
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        self._write_rows(path, rows + [{key: row[key] for key in METRICS_COLUMNS}])
        if self.tensorboard is not None:
            for key in METRICS_COLUMNS[1:]:
                if not math.isnan(float(row[key])):
                    self.tensorboard.add_scalar(key, float(row[key]), int(row["epoch"]))
            self.tensorboard.flush()

    @staticmethod
    def _write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(path, buffer.getvalue())

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _select_metric(config: TrainConfig) -> str:
    if config.select_metric != "auto":
        return config.select_metric

    meta = read_dataset_json(config.dataset_dir) or {}
    return "mean_class_acc" if str(meta.get("dataset", "")).lower().startswith("toyota") else "top1"


def _check_resume(checkpoint: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    """Options given again must match the checkpoint's, except how the run is executed and
    `--epochs`, which may grow (the run is extended) but not fall below the epochs done."""
    saved, done = saved_options(checkpoint), int(checkpoint["epoch"])
    if config.epochs < done:
        raise EpamError(
            f"{path}: --epochs {config.epochs} but {done} epochs are done; give at least {done}"
        )
    differ = [
        f"{key}: {saved.get(key)!r} in the checkpoint, {value!r} now"
        for key, value in config.to_dict().items()
        if key not in RUN_ONLY_FIELDS and key != "epochs" and saved.get(key) != value
    ]
    if differ:
        raise EpamError(
            f"{path}: --resume with other options ({'; '.join(differ)}); drop them to continue the "
            "run as it was, or start a new one with another --out"
        )


def _render_mode(config: TrainConfig, device: torch.device) -> str:
    if config.render != "auto":
        return config.render
    return "device" if device.type == "cuda" else "loader"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _build_training_model(
    config: TrainConfig, num_classes: int, clip_config: Any, log: _Log, *, init: bool
) -> tuple[nn.Module, dict]:
    """The network from scratch (the authors' init), then the stage-1 stream weights when given.

    The authors' stage-2 start (docs/architecture.md 10).

    init False (resuming) skips the stream weights: the checkpoint replaces every tensor anyway.
    """
    model_args = {
        "stream": config.stream,
        "num_classes": num_classes,
        "pose_channels": clip_config.pose_channels,
        "dropout": config.dropout,
    }
    model = build_model(**model_args)
    set_residual_init(model, zero=config.zero_init_residual)
    for half, path in (("rgb", config.init_rgb), ("pose", config.init_pose)):
        if not path or not init:
            continue
        report = (
            load_stream_weights(model, half, stream_state_dict(path, half), warn=False)
            if config.stream == "epam"
            else load_weights(model, stream_state_dict(path, half), target=half, warn=False)
        )
        report = dataclasses.replace(report, source=str(path))
        _check_init(report, half, config, log)
    return model, model_args


def _key_prefixes(keys: Sequence[str], limit: int = 4) -> str:
    """'stem.conv, stages.0, ...': the first two dotted parts of the keys, for one-line messages."""
    prefixes = sorted({".".join(key.split(".")[:2]) for key in keys})
    return ", ".join(prefixes[:limit]) + (", ..." if len(prefixes) > limit else "")


def _check_init(report: Any, half: str, config: TrainConfig, log: _Log) -> None:
    """Write the whole load report to RUN/init_<half>.txt, print its first line, and refuse a start
    that leaves part of the backbone at its initial values unless --init-partial: a silent partial
    load trains from random weights while the user believes otherwise."""
    path = Path(config.out) / f"init_{half}.txt"
    if log.env.is_main:
        path.write_text("\n".join(report.lines()) + "\n", encoding="utf-8")
    gaps = report.backbone_gaps
    log.print(report.lines()[0] + f" (full report: {path})", style=None if not gaps else "yellow")
    if gaps and not config.init_partial:
        raise EpamError(
            f"--init-{half} {report.source}: {len(gaps)} tensors of the {half} stream's backbone "
            f"would keep their initial values (under {_key_prefixes(gaps)}); the file's own keys "
            f"start with {_key_prefixes(report.unexpected) or 'nothing else'}. Is it a "
            f"{half}-stream or EPAM-Net checkpoint of epam-train? Full list: {path}. Pass "
            "--init-partial to train from this partial start anyway"
        )


# A loader worker that delivers no batch for this long is stuck: bytes flipped in a shard can make
# the HDF5 library loop forever (found by fuzzing, tests/test_shard_fuzz.py). Generous: a batch of
# long clips rendered on one slow core takes seconds, not minutes.
LOADER_TIMEOUT_S = 600.0


def _loader_wait(iterator: Iterator[Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    batch = _next_batch(iterator)
    return batch, time.perf_counter() - start


def _loader_options(workers: int) -> dict[str, Any]:
    """DataLoader's worker count and time limit (LOADER_TIMEOUT_S; workers only: in the main
    process there is nothing to watch)."""
    workers = loader_workers(workers)
    return {"num_workers": workers, "timeout": LOADER_TIMEOUT_S if workers else 0}


def _next_batch(iterator: Iterator[Any]) -> Any:
    """The next batch, None at the end; a loader stuck past its time limit is one line that names
    the likely cause and the command that finds it, not a traceback."""
    try:
        return next(iterator, None)
    except RuntimeError as err:
        if "timed out" not in str(err):
            raise
        raise EpamError(
            f"no batch from the loader workers in {LOADER_TIMEOUT_S:g} s: a damaged shard can "
            "make HDF5 loop forever; run `epam-data verify DATASET --deep`, and `--repair` to "
            "move damaged shards aside"
        ) from None


def _batches(loader: DataLoader) -> Iterator[Any]:
    iterator = iter(loader)
    while (batch := _next_batch(iterator)) is not None:
        yield batch


def _train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    *,
    config: TrainConfig,
    clip_config: Any,
    device: torch.device,
    env: DistEnv,
    log: _Log,
    epoch: int,
) -> dict[str, float]:
    """One pass over the training split: forward under autocast, CE losses, scaled backward, clip,
    step, lr step."""

    autocast, _, _ = autocast_context(config.amp, device)
    model.train()
    totals = torch.zeros(4, dtype=torch.float64)  # loss sum, correct, clips, data-wait seconds
    start = time.perf_counter()
    iterator = iter(loader)
    with log.progress(epoch, config.epochs, len(loader)) as bar:
        for _ in range(len(loader)):
            batch, waited = _loader_wait(iterator)
            if batch is None:
                break
            loss, correct, n = _train_step(
                model, batch, optimizer, scheduler, scaler, autocast, config, clip_config, device
            )
            totals += torch.tensor([loss * n, correct, n, waited], dtype=torch.float64)
            if bar is not None:
                _show_progress(bar, totals, start, env.world_size)
    return _epoch_stats(totals, start, device, env)


def _train_step(
    model: nn.Module,
    batch: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    autocast: Any,
    config: TrainConfig,
    clip_config: Any,
    device: torch.device,
) -> tuple[float, int, int]:
    """One iteration; returns (mean loss, correct predictions, clips) of the batch for the epoch's
    running totals."""
    rgb, pose = model_inputs(batch, device, clip_config)
    labels = batch["label"].to(device, non_blocking=True)
    with autocast:
        heads = forward_heads(model, config.stream, rgb, pose)
        loss = stream_loss(heads, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()  # cosine per iteration (docs/architecture.md 10)
    n = len(labels)
    correct = (heads[main_head(config.stream)].argmax(1) == labels).sum()
    return loss.item(), correct.item(), n


def _show_progress(bar: Any, totals: Tensor, start: float, world_size: int) -> None:
    """Advance the epoch's bar with the running loss, throughput and data-wait share, so a slow
    loader or a diverging loss shows while the epoch runs."""
    elapsed = time.perf_counter() - start
    bar[0].update(
        bar[1],
        advance=1,
        info=f"loss {totals[0] / totals[2]:.4f}  "
        f"{totals[2] * world_size / elapsed:.1f} clips/s  "
        f"data wait {totals[3] / elapsed:.0%}",
    )


def _epoch_stats(
    totals: Tensor, start: float, device: torch.device, env: DistEnv
) -> dict[str, float]:
    """The epoch's training metrics over all ranks, timed after the GPU has finished its queued
    work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if env.distributed:
        reduced = totals.to(device)  # nccl reduces CUDA tensors only, gloo CPU ones
        dist.all_reduce(reduced)
        totals = reduced.cpu()
        wait_share = float(totals[3] / env.world_size / seconds)
    else:
        wait_share = float(totals[3] / seconds)
    clips = float(totals[2])
    return {
        "train_loss": float(totals[0] / max(clips, 1)),
        "train_top1": float(totals[1] / max(clips, 1)),
        "clips_per_s": clips / seconds,
        "data_wait": wait_share,
        "train_seconds": seconds,
    }


def _make_datasets(config: TrainConfig, clip_config: Any, render: str) -> tuple[Any, Any]:

    val_split = config.val_split or (
        "val" if "val" in available_splits(config.dataset_dir, config.protocol) else "test"
    )
    common = dict(stream=config.stream, config=clip_config, render=render)
    train_set = ClipDataset(
        config.dataset_dir, config.protocol, "train", train=True, seed=config.seed, **common
    )
    val_set = ClipDataset(
        config.dataset_dir, config.protocol, val_split, train=False, seed=0, **common
    )
    return train_set, val_set


def _checkpoint_payload(
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    *,
    epoch: int,
    config: TrainConfig,
    model_args: dict,
    class_names: list[str],
    row: dict,
    best: dict,
    rng: list,
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "config": config.to_dict(),
        "model_args": dict(model_args),
        "class_names": list(class_names),
        "metrics": dict(row),
        "best": dict(best),
        "world_size": len(rng),
        "torch_version": str(torch.__version__),
    }


def _gather_rng(device: torch.device, env: DistEnv) -> list[dict[str, Any]]:
    """Every rank's RNG state, so a resumed DDP run continues each rank's dropout stream
    exactly."""
    state = rng_state(device)
    if not env.distributed:
        return [state]
    states: list[Any] = [None] * env.world_size
    dist.all_gather_object(states, state)
    return states


def train(
    config: TrainConfig, *, resume: bool = False, stop_after: int | None = None, console: Any = None
) -> TrainResult:
    """Train `config.stream` on `config.protocol`'s train split, validating on its val (else test)
    split.

    Writes RUN_DIR/last.pt every epoch, best.pt when the selected validation metric improves,
    metrics.csv and config.yaml. resume continues from RUN_DIR/last.pt exactly (same next-epoch loss
    as an uninterrupted run); stop_after ends this invocation after that many epochs (for
    time-limited cluster jobs; resume later).
    """
    config.check()
    run_dir = Path(config.out)
    env, device = init_distributed(config.device)
    set_cpu_threads(device, config.threads, config.workers)
    return _train(
        config, run_dir, env, device, resume=resume, stop_after=stop_after, console=console
    )


@dataclass
class _Run:
    """What the epochs of one training run share (built by `_train`, advanced by `_run_epoch`)."""

    config: TrainConfig
    run_dir: Path
    env: DistEnv
    device: torch.device
    log: Any
    clip_config: Any
    train_set: Any
    val_set: Any
    model: nn.Module
    model_args: dict
    sampler: Any
    loader: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    best: dict[str, Any]


def _train(
    config: TrainConfig,
    run_dir: Path,
    env: DistEnv,
    device: torch.device,
    *,
    resume: bool,
    stop_after: int | None,
    console: Any,
) -> TrainResult:
    saved = _open_run_dir(run_dir, config, env, resume=resume)
    log = _Log(run_dir, env, console, config.progress)
    _, _, amp_note = autocast_context(config.amp, device)
    if amp_note:
        log.print(amp_note, style="yellow")
    _set_determinism(config.deterministic)
    _seed_everything(config.seed)  # identical initial weights on every rank
    run = _build_run(config, run_dir, env, device, log, saved)
    start_epoch = _restore_or_seed(run, saved)
    if env.is_main:
        _write_config_yaml(run_dir / "config.yaml", config)
    log.print(
        f"{config.stream} on {config.protocol}: {len(run.train_set)} train / {len(run.val_set)} "
        f"val clips, {run.train_set.num_classes} classes, {env.world_size} x batch "
        f"{config.batch_size} on {device}, lr {run.optimizer.param_groups[0]['initial_lr']:g} "
        f"({config.recipe} recipe, {config.warmup():g} warm-up epochs), best by val "
        f"{run.best['metric']}{_bn_note(config, len(run.loader))}"
    )
    row: dict[str, float] = {}
    end_epoch = (
        config.epochs if stop_after is None else min(config.epochs, start_epoch + stop_after)
    )
    for epoch in range(start_epoch, end_epoch):
        row = _run_epoch(run, epoch)
    log.close()
    best = run.best
    return TrainResult(
        run_dir, end_epoch, best["metric"], float(best["value"]), int(best["epoch"]), row
    )


def _bn_note(config: TrainConfig, iterations: int) -> str:
    """What the first line says about BatchNorm: where the statistics that validate come from."""
    batches = min(config.precise_bn, iterations)
    return f", BN statistics re-estimated on {batches} batches" if batches else ""


def _open_run_dir(
    run_dir: Path, config: TrainConfig, env: DistEnv, *, resume: bool
) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a new run), after checking that --resume and the
    folder agree."""
    last_path = run_dir / "last.pt"
    saved = None
    if resume:
        if not last_path.is_file():
            raise EpamError(f"{last_path}: nothing to resume; drop --resume to start this run")
        saved = load_checkpoint(last_path)
        _check_resume(saved, config, last_path)
    elif last_path.exists():
        raise EpamError(
            f"{run_dir}: already holds a run (last.pt); pass --resume to continue it or choose "
            "another --out"
        )
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run_dir)  # checkpoints or metrics of a run killed mid-write
    return saved


def _set_determinism(deterministic: bool) -> None:
    """cuDNN autotuning for speed, or deterministic kernels everywhere (the others warn once) for
    repeatability."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _place_model(
    model: nn.Module, config: TrainConfig, env: DistEnv, device: torch.device, log: Any
) -> nn.Module:
    """The model in its training memory format, on its device, wrapped for DDP when several
    processes run."""
    if config.channels_last:  # the frames layout runs ~1.6x faster so (xshiftnet.py)
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    if not env.distributed:
        return model
    if config.sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif config.sync_bn:
        log.print("--sync-bn needs CUDA; keeping per-process BatchNorm on the CPU", style="yellow")
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _check_splits(train_set: Any, val_set: Any, log: Any) -> None:
    """Refuse a run that cannot learn or cannot pick best.pt; warn when training sees one class."""
    for name, dataset in (("train", train_set), ("validation", val_set)):
        if len(dataset) == 0:
            raise EpamError(
                f"{dataset.manifest}: the {name} split lists no samples; check the manifest (or "
                "--val-split) before training"
            )
    classes = len(set(np.asarray(train_set.labels).tolist()))
    if classes < 2:
        log.print(
            f"{train_set.manifest}: every training sample has the same label: the model can only "
            "learn to predict it",
            style="yellow",
        )


def _build_run(
    config: TrainConfig,
    run_dir: Path,
    env: DistEnv,
    device: torch.device,
    log: Any,
    saved: dict[str, Any] | None,
) -> _Run:
    """Datasets, model, loader and SGD + cosine schedule (per iteration, docs/architecture.md 10) of
    a run."""
    clip_config = config.clip_config()
    train_set, val_set = _make_datasets(config, clip_config, _render_mode(config, device))
    _check_splits(train_set, val_set, log)
    model, model_args = _build_training_model(
        config, train_set.num_classes, clip_config, log, init=saved is None
    )
    if saved is not None:
        unwrap(model).load_state_dict(saved["model"])
    model = _place_model(model, config, env, device, log)
    sampler, loader = _make_loader(config, train_set, env, device)
    optimizer, scheduler, scaler = _make_optimizer(config, model, len(loader), env, device)
    best = {"metric": _select_metric(config), "value": -math.inf, "epoch": 0}
    return _Run(
        config,
        run_dir,
        env,
        device,
        log,
        clip_config,
        train_set,
        val_set,
        model,
        model_args,
        sampler,
        loader,
        optimizer,
        scheduler,
        scaler,
        best,
    )


def _make_loader(
    config: TrainConfig, train_set: Any, env: DistEnv, device: torch.device
) -> tuple[DistributedSampler, DataLoader]:
    """The training loader: each rank shuffles its own share, reproducibly per (seed, epoch)."""
    sampler = DistributedSampler(
        train_set,
        num_replicas=env.world_size,
        rank=env.rank,
        shuffle=True,
        seed=config.seed,
        drop_last=False,
    )
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        **_loader_options(config.workers),
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init_fn,
        drop_last=False,
        persistent_workers=config.workers > 0,
        # Making an iterator draws the workers' base seed: from the global RNG it would shift the
        # dropout masks of a resumed run (persistent workers make one iterator per run, a resume
        # another). The clips' randomness is a function of (seed, epoch, index) anyway.
        generator=torch.Generator().manual_seed(config.seed),
    )
    return sampler, loader


def _make_optimizer(
    config: TrainConfig, model: nn.Module, iterations: int, env: DistEnv, device: torch.device
) -> tuple[torch.optim.Optimizer, Any, Any]:
    """SGD, its lr schedule stepped per iteration with `iterations` per epoch
    (docs/architecture.md 10) and the loss scaler fp16 needs."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.base_lr(env.world_size),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    steps = iterations * config.epochs
    warmup = round(iterations * config.warmup())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(warmup_cosine, steps=steps, warmup=warmup)
    )
    _, use_scaler, _ = autocast_context(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    return optimizer, scheduler, scaler


def warmup_cosine(step: int, *, steps: int, warmup: int) -> float:
    """The lr factor at iteration `step`: linear from 1/warmup to 1 over `warmup` iterations, then
    cosine to 0 at `steps` (CosineAnnealingLR's curve, in closed form; docs/training.md)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, steps) / max(steps - warmup, 1)))


def _restore_or_seed(run: _Run, saved: dict[str, Any] | None) -> int:
    """The epoch to start from: optimiser, schedule, scaler, best and RNG states of a resumed run,
    else 0 with each rank seeded for its own dropout stream."""
    env, config = run.env, run.config
    if saved is None:
        _seed_everything(config.seed + env.rank)
        return 0
    run.optimizer.load_state_dict(saved["optimizer"])
    _restore_schedule(run.scheduler, saved["scheduler"])
    if saved["scaler"]:
        run.scaler.load_state_dict(saved["scaler"])
    start_epoch, run.best = int(saved["epoch"]), dict(saved["best"])
    rngs = saved["rng"]
    if len(rngs) == env.world_size:
        set_rng_state(rngs[env.rank], run.device)
    else:
        _seed_everything(config.seed + 1000 * start_epoch + env.rank)
        run.log.print(
            f"resuming {len(rngs)}-process RNG states on {env.world_size} processes: reseeded, so "
            "the continuation is not bit-identical",
            style="yellow",
        )
    run.log.truncate_metrics(start_epoch)
    run.log.print(f"resumed {run.run_dir / 'last.pt'} after epoch {start_epoch}")
    planned = int(saved["config"]["epochs"])
    if config.epochs != planned:
        run.log.print(
            f"extended from {planned} to {config.epochs} epochs: from here on each iteration takes "
            f"the lr of a run planned for {config.epochs} epochs"
        )
    return start_epoch


def _restore_schedule(scheduler: Any, state: Mapping[str, Any]) -> None:
    """Put the schedule at the saved iteration and set each group's lr from this run's plan.

    The iteration count comes from the checkpoint and the base lr from the restored optimiser (a
    run keeps the rate it started with, also one written before the recipes existed); the curve is
    the one this run builds (`warmup_cosine` over its own --epochs), so `--resume --epochs N`
    re-plans the rest of a run over N epochs. Checkpoints written with CosineAnnealingLR resume on
    the same cosine, past the warm-up a from-scratch run now gets (5 % of its epochs).
    """
    scheduler.base_lrs = [group["initial_lr"] for group in scheduler.optimizer.param_groups]
    scheduler.last_epoch = int(state["last_epoch"])
    scheduler._step_count = scheduler.last_epoch + 1
    rates = [
        base * rule(scheduler.last_epoch)
        for base, rule in zip(scheduler.base_lrs, scheduler.lr_lambdas)
    ]
    for group, rate in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates


def _run_epoch(run: _Run, epoch: int) -> dict[str, float]:
    """Train one epoch, validate, write the metrics row and the checkpoints (last.pt, best.pt when
    better)."""
    config, env = run.config, run.env
    run.sampler.set_epoch(epoch)
    run.train_set.set_epoch(epoch)
    epoch_lr = run.optimizer.param_groups[0]["lr"]
    stats = _train_one_epoch(
        run.model,
        run.loader,
        run.optimizer,
        run.scheduler,
        run.scaler,
        config=config,
        clip_config=run.clip_config,
        device=run.device,
        env=env,
        log=run.log,
        epoch=epoch + 1,
    )
    _precise_bn(run)
    val = _validate(run)
    row = _metrics_row(epoch + 1, epoch_lr, stats, val)
    metric = run.best["metric"]
    improved = val[metric] > run.best["value"]
    if improved:
        run.best = {"metric": metric, "value": float(val[metric]), "epoch": epoch + 1}
    _save_epoch(run, epoch + 1, row, improved)
    run.log.print(
        f"epoch {epoch + 1}/{config.epochs}: loss {row['train_loss']:.4f}, train top-1 "
        f"{row['train_top1']:.3f}, val top-1 {row['val_top1']:.3f}, val mean class acc "
        f"{row['val_mean_class_acc']:.3f}, {row['clips_per_s']:.1f} clips/s, data wait "
        f"{row['data_wait']:.0%}{'  (best)' if improved else ''}"
    )
    if env.distributed:
        dist.barrier()  # no rank runs ahead of the checkpoint it may resume from
    return row


def _precise_bn(run: _Run) -> None:
    """BN statistics re-estimated on the epoch's training clips before validating
    (epam_model.precise_bn); the checkpoint saved next carries them."""
    config, device = run.config, run.device
    autocast, _, _ = autocast_context(config.amp, device)

    def forward(model: nn.Module, batch: Mapping[str, Any]) -> None:
        rgb, pose = model_inputs(batch, device, run.clip_config)
        with autocast:
            forward_heads(model, config.stream, rgb, pose)

    recompute_bn_stats(unwrap(run.model), _batches(run.loader), forward, limit=config.precise_bn)


def _validate(run: _Run) -> dict[str, float]:
    """The main head's metrics on the validation split, which pick best.pt."""
    config = run.config
    logits = predict(
        run.model,
        run.val_set,
        stream=config.stream,
        clip_config=run.clip_config,
        device=run.device,
        batch_size=config.eval_batch_size or config.batch_size,
        workers=config.workers,
        amp=config.amp,
        env=run.env,
    )
    return summarize(logits[main_head(config.stream)], np.asarray(run.val_set.labels))


def _metrics_row(
    epoch: int, lr: float, stats: Mapping[str, float], val: Mapping[str, float]
) -> dict[str, float]:
    """One metrics.csv row (METRICS_COLUMNS), also stored in the checkpoint."""
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": stats["train_loss"],
        "train_top1": stats["train_top1"],
        "val_top1": val["top1"],
        "val_mean_class_acc": val["mean_class_acc"],
        "clips_per_s": stats["clips_per_s"],
        "data_wait": stats["data_wait"],
        "seconds": stats["train_seconds"],
    }


def _save_epoch(run: _Run, epoch: int, row: dict[str, float], improved: bool) -> None:
    """Record a finished epoch on rank 0: metrics row, last.pt, and best.pt when it improved.

    Every rank must call it: gathering the RNG states is a collective.
    """
    rng = _gather_rng(run.device, run.env)  # a collective: every rank takes part
    if not run.env.is_main:
        return
    run.log.write_row(row)  # before the checkpoint: a resume truncates later rows
    payload = _checkpoint_payload(
        run.model,
        run.optimizer,
        run.scheduler,
        run.scaler,
        epoch=epoch,
        config=run.config,
        model_args=run.model_args,
        class_names=run.train_set.class_names,
        row=row,
        best=run.best,
        rng=rng,
    )
    save_checkpoint(run.run_dir / "last.pt", payload)
    if improved:
        save_checkpoint(run.run_dir / "best.pt", payload)


def _write_config_yaml(path: Path, config: TrainConfig) -> None:
    """The options this run used, for humans and for `--config` of a similar run."""
    import yaml

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalResult:
    """Metrics per head ({"rgb", "pose", "fused"} as the model has them) and the files written."""

    metrics: dict[str, dict[str, float]]
    out_dir: Path
    files: dict[str, Path]
    samples: int
    checkpoint: Path

    def table(self) -> Any:
        from rich.table import Table

        table = Table(title=f"{self.checkpoint}: {self.samples} samples")
        for column in ("head", "top-1", "top-5", "mean class acc"):
            table.add_column(column, justify="left" if column == "head" else "right")
        for head, values in self.metrics.items():
            table.add_row(
                head, *(f"{100 * values[key]:.2f}" for key in ("top1", "top5", "mean_class_acc"))
            )
        return table


def _write_eval_files(
    scores: Scores, out_dir: Path, head: str, meta: Mapping[str, Any]
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = scores.metrics()
    files = {
        "metrics": out_dir / "metrics.json",
        "per_class": out_dir / "per_class.csv",
        "confusion": out_dir / "confusion.png",
        "scores": out_dir / "scores.npz",
    }
    write_text_atomic(
        files["metrics"], json.dumps({**metrics, "meta": dict(meta)}, indent=2) + "\n"
    )
    _write_per_class_csv(files["per_class"], scores, head)
    predictions = scores.logits[head].argmax(axis=1)
    matrix = confusion_matrix(scores.labels, predictions, len(scores.class_names))
    draw_confusion_png(
        matrix,
        files["confusion"],
        scores.class_names,
        title=f"{head}: confusion, {len(scores.labels)} samples (rows true, columns predicted)",
    )
    _write_scores_npz(files["scores"], scores)
    return files


def _write_per_class_csv(path: Path, scores: Scores, head: str) -> None:
    """Per-class accuracy of the main head, with the other heads' beside it for comparison."""
    rows = per_class_table(scores.logits[head], scores.labels, scores.class_names)
    others = {
        name: per_class_table(values, scores.labels, scores.class_names)
        for name, values in scores.logits.items()
        if name != head
    }
    header = [
        "class_index",
        "class_name",
        "samples",
        "correct",
        f"accuracy_{head}",
        *(f"accuracy_{name}" for name in others),
        "most_confused_with",
    ]
    write_csv_atomic(
        path,
        header,
        (
            [
                row.index,
                row.name,
                row.samples,
                row.correct,
                _fmt(row.accuracy),
                *(_fmt(table[i].accuracy) for table in others.values()),
                row.most_confused,
            ]
            for i, row in enumerate(rows)
        ),
    )


def _write_scores_npz(path: Path, scores: Scores) -> None:
    """The raw logits of every head with sample ids and labels, for later fusion of runs."""
    write_atomic(
        path,
        lambda stream: np.savez(
            stream,
            sample_ids=np.asarray(scores.sample_ids),
            labels=scores.labels,
            class_names=np.asarray(scores.class_names),
            **scores.logits,
        ),
    )


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def evaluate(
    source: str | Path,
    dataset_dir: str | Path,
    protocol: str,
    *,
    split: str = "test",
    clips: int = 1,
    flip: bool = False,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    workers: int = 2,
    device: str = "auto",
    amp: str | None = None,
    threads: int | None = None,
) -> EvalResult:
    """Score a split with a checkpoint (a file, or a run folder's best.pt) and write the report
    files.

    clips > 1 samples N clips per video with different frame offsets (`_eval_dataset`) and averages
    the logits; flip averages in the mirrored inputs too. Runs under torchrun as well (every sample
    scored once). Files go to out_dir, by default <run
    folder>/eval/<protocol>_<split>[_clipsN][_flip]/.
    """
    if clips < 1:
        raise EpamError(f"--clips {clips}: need at least 1 clip per video")
    checkpoint = find_checkpoint(source)
    payload = load_any_checkpoint(checkpoint)
    stream = payload["model_args"]["stream"]
    env, torch_device = init_distributed(device)
    set_cpu_threads(torch_device, threads, workers)
    scores = _score_clips(
        _eval_model(payload, torch_device),
        payload,
        checkpoint,
        dataset_dir,
        protocol,
        split,
        clips=clips,
        flip=flip,
        batch_size=batch_size,
        workers=workers,
        amp=amp,
        device=torch_device,
        env=env,
    )
    out = _eval_out_dir(out_dir, checkpoint, protocol, split, clips=clips, flip=flip)
    meta = {
        "checkpoint": str(checkpoint),
        "epoch": int(payload["epoch"]),
        "dataset_dir": str(dataset_dir),
        "protocol": protocol,
        "split": split,
        "clips": clips,
        "flip": flip,
        "samples": len(scores.labels),
        "stream": stream,
    }
    files = _write_eval_files(scores, out, main_head(stream), meta) if env.is_main else {}
    return EvalResult(scores.metrics(), out, files, len(scores.labels), checkpoint)


def _eval_out_dir(
    out_dir: str | Path | None,
    checkpoint: Path,
    protocol: str,
    split: str,
    *,
    clips: int,
    flip: bool,
) -> Path:
    """The report folder: `out_dir` when given, else one beside the checkpoint named after what
    was scored, so runs with other clips or flip settings do not overwrite each other."""
    suffix = (f"_clips{clips}" if clips > 1 else "") + ("_flip" if flip else "")
    return Path(out_dir) if out_dir else checkpoint.parent / "eval" / f"{protocol}_{split}{suffix}"


def _eval_model(payload: Mapping[str, Any], device: torch.device) -> nn.Module:
    """The checkpoint's network on `device`, in the memory format it was trained in."""
    model = build_from_checkpoint(payload)
    if payload["config"].get("channels_last", True):
        model = model.to(memory_format=torch.channels_last)
    return model.to(device)


def _score_clips(
    model: nn.Module,
    payload: Mapping[str, Any],
    checkpoint: Path,
    dataset_dir: str | Path,
    protocol: str,
    split: str,
    *,
    clips: int,
    flip: bool,
    batch_size: int | None,
    workers: int,
    amp: str | None,
    device: torch.device,
    env: DistEnv,
) -> Scores:
    """The split's logits averaged over `clips` clips per video, the inputs prepared as the
    checkpoint's run prepared them; batch size and amp default to the run's."""
    saved = payload["config"]
    stream = payload["model_args"]["stream"]
    trained = TrainConfig.from_dict(saved)
    clip_config = trained.clip_config()
    render = _render_mode(trained, device)
    total: dict[str, np.ndarray] = {}
    for clip in range(clips):
        dataset = _eval_dataset(
            dataset_dir, protocol, split, stream, clip_config, render, clip, clips
        )
        if clip == 0:
            _check_classes(
                dataset.class_names, payload["class_names"], checkpoint, dataset_dir, protocol
            )
        logits = predict(
            model,
            dataset,
            stream=stream,
            clip_config=clip_config,
            device=device,
            batch_size=batch_size or int(saved.get("batch_size", 12)),
            workers=workers,
            amp=amp or saved.get("amp", "off"),
            flip=flip,
            env=env,
        )
        total = {head: total.get(head, 0) + values for head, values in logits.items()}
    return Scores(
        list(dataset.sample_ids),
        np.asarray(dataset.labels, dtype=np.int64),
        {head: (values / clips).astype(np.float32) for head, values in total.items()},
        list(dataset.class_names),
    )


def _eval_dataset(
    dataset_dir: str | Path,
    protocol: str,
    split: str,
    stream: str,
    clip_config: Any,
    render: str,
    clip: int,
    clips: int,
) -> Any:
    """Clip `clip` of `clips` per video, as PoseC3D's multi-clip test takes them (clip 0 is the
    single test clip)."""

    return ClipDataset(
        dataset_dir,
        protocol,
        split,
        stream=stream,
        train=False,
        config=clip_config,
        seed=0,
        render=render,
        clip=clip,
        num_clips=clips,
    )


def _check_classes(
    names: list[str], saved: list[str], checkpoint: Path, dataset_dir: Any, protocol: str
) -> None:
    if len(names) != len(saved):
        raise EpamError(
            f"{checkpoint}: trained on {len(saved)} classes but {dataset_dir} protocol "
            f"{protocol!r} has "
            f"{len(names)}; evaluate on the dataset and protocol the model was trained for"
        )
