"""`epam-train`: train, evaluate, inspect and export EPAM-Net. Commands arrive with their issues.

Each command turns its options into a call of the Python API; `EpamError`s become one red line and exit code 1,
never a traceback.
"""

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
