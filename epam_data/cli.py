"""`epam-data`: prepare action-recognition videos for EPAM-Net. A thin typer layer over the modules.

Each command turns its options into one call of the Python API; `EpamError`s become one red line and
exit code 1, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from epam_data.datasets import DATASET_NAMES, scan_names
from epam_data.errors import EpamError
from epam_data.splits import SplitReport, make_splits, read_names, scan_index

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Prepare action-recognition videos for EPAM-Net.",
                  pretty_exceptions_enable=False, add_completion=False)
console = Console()
err_console = Console(stderr=True)

MAX_LISTED = 10


@app.callback()
def main() -> None:
    """Prepare action-recognition videos for EPAM-Net: poses, RGB crops, HDF5 shards, split manifests."""


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code=1)


def print_split_report(report: SplitReport, dataset: str) -> None:
    splits = [split for split in ("train", "val", "test") if any(split in row for row in report.counts)]
    table = Table(title=f"{dataset}: samples per split ({report.parsed} parsed, {report.excluded} excluded)")
    for column in ["protocol", *splits, "not in protocol", "in no split"]:
        table.add_column(column, justify="left" if column == "protocol" else "right")
    for row in report.counts:
        table.add_row(*(f"{row.get(column, '')}" for column in ["protocol", *splits, "not in protocol",
                                                                 "in no split"]))
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    if report.rejected:
        console.print(f"[yellow]{len(report.rejected)} names or lines left out[/yellow] "
                      f"(all in {report.out_dir / 'rejected.csv'}):", highlight=False)
        for rejected in report.rejected[:MAX_LISTED]:
            console.print(f"  {rejected.reason}", soft_wrap=True, highlight=False, markup=False)
        if len(report.rejected) > MAX_LISTED:
            console.print(f"  ... {len(report.rejected) - MAX_LISTED} more")
    console.print(f"manifests written to {report.out_dir}", highlight=False)


@app.command()
def splits(
        dataset_dir: Annotated[Optional[Path], typer.Argument(
            help="Prepared dataset folder (reads its index.csv); omit when using --names.")] = None,
        dataset: Annotated[Optional[str], typer.Option(
            "--dataset", "-d", help=f"One of {', '.join(DATASET_NAMES[:-1])}; read from dataset.json if omitted.")
        ] = None,
        names: Annotated[Optional[Path], typer.Option(
            help="File with one video or sample name per line (PKU-MMD: video ids like 0002-L).")] = None,
        labels: Annotated[Optional[Path], typer.Option(
            help="PKU-MMD: folder of the label files 0002-L.txt.")] = None,
        splits_dir: Annotated[Optional[Path], typer.Option(
            help="PKU-MMD: folder with the official cross-subject.txt and cross-view.txt.")] = None,
        out: Annotated[Optional[Path], typer.Option(
            "--out", "-o", help="Folder to write manifests/ into (default: the dataset folder).")] = None,
        protocol: Annotated[Optional[list[str]], typer.Option(
            "--protocol", "-p", help="Protocol to write (repeatable); default: all of the dataset.")] = None,
        exclude: Annotated[Optional[Path], typer.Option(
            help="File of names to leave out, e.g. NTU's official missing-skeleton list.")] = None,
) -> None:
    """Write the official split manifests (CSV per protocol and split) and print their sizes."""
    try:
        if (dataset_dir is None) == (names is None):
            raise EpamError("give either a prepared DATASET_DIR or --names FILE (with --dataset and --out)")
        if names is not None:
            if dataset is None or out is None:
                raise EpamError("--names needs --dataset and --out")
            scan = scan_names(dataset, read_names(names), labels_dir=labels)
        else:
            dataset, scan = scan_index(dataset_dir, dataset)
            out = out or dataset_dir
        report = make_splits(scan, dataset, out, protocols=protocol, splits_dir=splits_dir,
                             exclude=read_names(exclude) if exclude is not None else None)
    except EpamError as err:
        raise fail(str(err)) from None
    print_split_report(report, dataset)
    if report.protocol_errors:
        for message in report.protocol_errors:
            err_console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1)


@app.command()
def render(
        dataset_dir: Annotated[Path, typer.Argument(help="Prepared dataset folder (the one with index.csv).")],
        sample_id: Annotated[str, typer.Argument(help="Sample to draw, as index.csv names it.")],
        out: Annotated[Path, typer.Option(
            "--out", "-o", help="Picture to write: .png (contact sheet) or .gif (one frame per kept frame).")],
        frames: Annotated[Optional[int], typer.Option(
            help="Frames shown, evenly spaced: PNG rows (default 4); GIF: all, at most 300, unless given.")] = None,
        fps: Annotated[Optional[float], typer.Option(
            help="GIF frame rate (default: real time, from the sample's fps and frame spacing).")] = None,
        size: Annotated[int, typer.Option(help="Heatmap canvas side in pixels, when volumes are rendered.")] = 56,
        sigma: Annotated[float, typer.Option(help="Gaussian sigma in canvas pixels, when volumes are rendered.")
                         ] = 0.6,
        person: Annotated[Optional[int], typer.Option(help="Draw only this person (0-based index).")] = None,
        min_score: Annotated[float, typer.Option(help="Joints scored below this are left off the skeleton.")
                             ] = 0.3,
        heatmaps: Annotated[str, typer.Option(
            help="auto (stored volumes when the sample has them), stored, or rendered.")] = "auto",
        panel: Annotated[int, typer.Option(help="Side of each panel in the picture, in pixels.")] = 256,
) -> None:
    """Draw one sample: RGB crop with skeleton | joint heatmaps | limb heatmaps, as a PNG sheet or a GIF."""
    from epam_data.render import render_dataset_sample  # Pillow is loaded only by this command

    try:
        report = render_dataset_sample(dataset_dir, sample_id, out, frames=frames, fps=fps, size=size, sigma=sigma,
                                       person=person, min_score=min_score, heatmaps=heatmaps, panel=panel)
    except EpamError as err:
        raise fail(str(err)) from None
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    console.print(f"{report.path}: {len(report.frames)} frame(s) of {report.sample_id}, heatmaps {report.heatmaps}",
                  soft_wrap=True, highlight=False, markup=False)
