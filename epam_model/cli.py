"""`epam-train`: train, evaluate, inspect and export EPAM-Net.

Each command turns its options into a call of the Python API; `EpamError`s become one red line and
exit code 1, never a traceback.
"""

import dataclasses
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape

from epam_data.cli import VersionOption
from epam_data.errors import EpamError
from epam_model.config import TrainConfig, field_type, resolve_train_config
from epam_model.engine import train as run_training
from epam_model.epamnet import STREAMS

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True,
    help="Train and evaluate EPAM-Net from prepared shards.",
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def main(version: VersionOption = False) -> None:
    """Train and evaluate EPAM-Net (and each single stream) from prepared shards."""


StreamOption = Annotated[
    Literal[STREAMS], typer.Option(help="Network: the fused model or one stream.")
]
ClassesOption = Annotated[
    int, typer.Option("--classes", min=0, help="Classifier outputs (NTU60 60, NTU120 120).")
]
PoseChannelsOption = Annotated[
    int, typer.Option(help="Heatmap channels: 17 joints or limbs, 34 both.")
]


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(code=1)


@app.command("model-info")
def model_info_command(
    stream: StreamOption = "epam",
    classes: ClassesOption = 60,
    pose_channels: PoseChannelsOption = 17,
) -> None:
    """Parameters and multiply-adds per stream, attention and total at the paper's clip sizes."""
    from epam_model.complexity import model_info

    try:
        info = model_info(stream, classes, pose_channels=pose_channels)
    except EpamError as err:
        raise fail(str(err)) from None
    console.print(info.table())
    for note in info.notes():
        console.print(note, soft_wrap=True, highlight=False, markup=False)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", dir_okay=False, help="ONNX file to write.")],
    stream: StreamOption = "epam",
    classes: ClassesOption = 60,
    pose_channels: PoseChannelsOption = 17,
    weights: Annotated[
        Optional[Path], typer.Option(help="State dict of this whole model (strict).")
    ] = None,
    rgb_weights: Annotated[
        Optional[Path], typer.Option(help="RGB-stream checkpoint for epam's RGB half.")
    ] = None,
    pose_weights: Annotated[
        Optional[Path], typer.Option(help="Pose-stream checkpoint for epam's pose half.")
    ] = None,
    check: Annotated[
        bool, typer.Option(help="Compare the graph with PyTorch in onnxruntime.")
    ] = True,
) -> None:
    """Export to ONNX (dynamic batch) and check the graph against PyTorch in onnxruntime."""
    from epam_model.epamnet import build_model, load_stream_weights, load_weights
    from epam_model.export import export_onnx

    try:
        if (rgb_weights or pose_weights) and stream != "epam":
            raise fail(
                "--rgb-weights / --pose-weights load stream checkpoints into epam; use --weights "
                "for a stream"
            )
        model = build_model(stream, classes, pose_channels=pose_channels)
        reports = []
        if weights:
            reports.append(load_weights(model, weights, target=stream, strict=True))
        for half, path in (("rgb", rgb_weights), ("pose", pose_weights)):
            if path:
                reports.append(load_stream_weights(model, half, path))
        for report in reports:
            for line in report.lines():
                console.print(
                    line,
                    soft_wrap=True,
                    highlight=False,
                    markup=False,
                    style=None if report.clean else "yellow",
                )
        if not reports:
            console.print(
                "no weights given: exporting the freshly initialised model", style="yellow"
            )
        result = export_onnx(model, out, check=check)
    except EpamError as err:
        raise fail(str(err)) from None
    for line in result.lines():
        console.print(line, soft_wrap=True, highlight=False, markup=False)


def _value(option: Optional[Path | str | int | float | bool]) -> object:
    if isinstance(option, Path):
        return str(option)
    return option


def _config_option(field: dataclasses.Field) -> inspect.Parameter:
    """One `epam-train train` option from a TrainConfig field: its type, bounds, choices, help and
    default.

    The default shown is the field's; the parameter's own default stays None so that an option not
    given on the command line leaves the --config file's value (or, with --resume, the checkpoint's)
    in place.
    """
    meta, kind = field.metadata, field_type(field)
    flag = "--" + field.name.replace("_", "-")
    names = (
        [f"{flag}/--no-{flag[2:]}"]
        if kind is bool
        else [flag, *([meta["short"]] if meta["short"] else [])]
    )
    if meta["choices"]:
        kind = Literal[meta["choices"]]
    elif meta["path"]:
        kind = Path
    shown = meta["default_text"] or field.default
    default = (
        "  [required]"
        if shown == "required"
        else f"  [default: {shown}]"
        if shown is not None
        else ""
    )
    option = typer.Option(
        *names,
        help=meta["help"] + default,
        min=meta["min"],
        file_okay=meta["path"] != "dir",
        dir_okay=meta["path"] != "file",
        show_default=False,
    )
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[Optional[kind], option],
    )


def _train_signature(command: Callable[..., None]) -> Callable[..., None]:
    """Give `train` one option per TrainConfig field (after its own parameters), for typer to
    read."""
    own = list(inspect.signature(command).parameters.values())[:-1]  # all but **options
    fields = [
        _config_option(field)
        for field in dataclasses.fields(TrainConfig)
        if field.name != "dataset_dir"
    ]
    command.__signature__ = inspect.Signature(own + fields)
    return command


@app.command()
@_train_signature
def train(
    dataset_dir: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Prepared dataset folder.")
    ],
    *,
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config", dir_okay=False, help="YAML of options; options given here override it."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
    ] = False,
    stop_after: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Stop after this many epochs in this invocation "
            "(time-limited jobs; continue with --resume).",
        ),
    ] = None,
    **options: object,
) -> None:
    """Train EPAM-Net or one stream; checkpoint every epoch, keep the best by validation. Multi-GPU
    via torchrun.

    Every option below is a TrainConfig field (epam_model.config): the same names work in a --config
    YAML file.
    """
    given = {name: _value(value) for name, value in options.items()}
    try:
        settings = resolve_train_config(
            dataset_dir, config_file=config, overrides=given, resume=resume
        )
        result = run_training(settings, resume=resume, stop_after=stop_after, console=console)
    except EpamError as err:
        raise fail(str(err)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(
            f"{result.run_dir}: {result.epochs_done} epochs; best val {result.best_metric} "
            f"{result.best_value:.4f} at epoch {result.best_epoch} (best.pt)",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


@app.command()
def predict(
    checkpoint: Annotated[
        Path, typer.Argument(help="Run folder (best.pt, else last.pt) or checkpoint file.")
    ],
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders of frames.")],
    top: Annotated[int, typer.Option(min=1, help="Classes shown per head.")] = 5,
    clips: Annotated[int, typer.Option(min=1, help="Test clips per segment, logits averaged.")] = 1,
    window: Annotated[
        Optional[int],
        typer.Option(min=1, help="One prediction per WINDOW kept frames.  [default: whole video]"),
    ] = None,
    stride: Annotated[
        Optional[int], typer.Option(min=1, help="Frames between windows.  [default: --window]")
    ] = None,
    max_persons: Annotated[int, typer.Option(min=1, help="Persons kept per video.")] = 2,
    json_out: Annotated[
        Optional[Path], typer.Option("--json", dir_okay=False, help="Also write the results here.")
    ] = None,
    render: Annotated[
        Optional[Path],
        typer.Option(
            dir_okay=False, help="Also draw the video, skeletons and top-3 (.gif or .mp4)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """What action is in these videos: extract's preparation in memory, then the checkpoint's
    network; top classes with probabilities per head (rgb, pose, fused)."""
    from epam_model.predict import predict_videos

    try:
        results = predict_videos(
            checkpoint,
            videos,
            top=top,
            clips=clips,
            window=window,
            stride=stride,
            device=device,
            max_persons=max_persons,
            render=render,
        )
    except EpamError as err:
        raise fail(str(err)) from None
    for result in results:
        _print_prediction(result)
    if json_out is not None:
        import json

        from epam_data.atomic import write_text_atomic

        write_text_atomic(json_out, json.dumps(results, indent=2) + "\n")
    if any(result["status"] == "failed" for result in results):
        raise typer.Exit(code=1)


def _print_prediction(result: dict) -> None:
    """One table per segment: rank, then class and probability per head."""
    from rich.table import Table

    if "message" in result:
        style = "red" if result["status"] == "failed" else "yellow"
        console.print(
            f"[{style}]{escape(result['video'])}:[/{style}] {escape(result['message'])}",
            soft_wrap=True,
            highlight=False,
        )
    for segment in result["segments"]:
        when = f" ({segment['start_s']:.1f} s)" if segment["start_s"] is not None else ""
        console.print(
            f"{result['video']}: frames {segment['start_frame']}-{segment['end_frame']}{when}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        table = Table()
        table.add_column("#", justify="right")
        for head in segment["heads"]:
            table.add_column(head)
        ranks = max(len(top) for top in segment["heads"].values())
        for rank in range(ranks):
            table.add_row(
                str(rank + 1),
                *(
                    f"{top[rank]['name']} {100 * top[rank]['probability']:.1f} %"
                    for top in segment["heads"].values()
                ),
            )
        console.print(table)


@app.command()
def convert(
    checkpoint: Annotated[
        Path, typer.Argument(help="The authors' EPAM-Net file (fused, or one stage-1 stream).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", dir_okay=False, help="epam-train checkpoint to write.")
    ],
    classes: Annotated[
        Optional[str],
        typer.Option(
            help="Class names: a classes CSV (label,name) or their number.  [default: the labels]"
        ),
    ] = None,
) -> None:
    """Convert the authors' EPAM-Net checkpoint into an epam-train checkpoint (for eval, --init-*,
    export); every tensor must find its place, or nothing is written."""
    from epam_model.authors import convert_checkpoint

    try:
        converted = convert_checkpoint(checkpoint, out, classes)
    except EpamError as err:
        raise fail(str(err)) from None
    except OSError as err:
        raise fail(f"{out}: cannot write ({err.strerror or err})") from None
    console.print(
        f"{converted.path}: {converted.stream}, {converted.num_classes} classes, "
        f"{converted.tensors} tensors from {checkpoint}",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )


EvalCheckpointArgument = Annotated[
    Path, typer.Argument(help="Run folder (uses best.pt, else last.pt) or checkpoint file.")
]
EvalDatasetArgument = Annotated[
    Path, typer.Argument(exists=True, file_okay=False, help="Prepared dataset folder.")
]
EvalProtocolOption = Annotated[
    str, typer.Option(help="Manifest prefix: xsub, xview, xset, cs, cv2 ...")
]
EvalSplitOption = Annotated[str, typer.Option(help="Split to score.")]
EvalClipsOption = Annotated[
    int,
    typer.Option(min=1, help="Clips per video (different sampling offsets), logits averaged."),
]
EvalFlipOption = Annotated[
    bool, typer.Option("--flip", help="Also score mirrored inputs and average.")
]
EvalOutOption = Annotated[
    Optional[Path],
    typer.Option(
        "--out",
        "-o",
        file_okay=False,
        help=(
            "Report folder.  [default: RUN/eval/PROTOCOL_SPLIT, with _clipsN and _flip when used]"
        ),
    ),
]
EvalBatchSizeOption = Annotated[
    Optional[int], typer.Option(min=1, help="Clips per step.  [default: the run's]")
]
EvalWorkersOption = Annotated[int, typer.Option(min=0, help="Loader processes.")]
EvalThreadsOption = Annotated[
    Optional[int],
    typer.Option(
        min=1,
        help="CPU compute threads.  [default: the usable cores minus --workers, at least 1]",
    ),
]
EvalDeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]


@app.command("eval")
def eval_command(
    checkpoint: EvalCheckpointArgument,
    dataset_dir: EvalDatasetArgument,
    protocol: EvalProtocolOption,
    split: EvalSplitOption = "test",
    clips: EvalClipsOption = 1,
    flip: EvalFlipOption = False,
    out: EvalOutOption = None,
    batch_size: EvalBatchSizeOption = None,
    workers: EvalWorkersOption = 2,
    threads: EvalThreadsOption = None,
    device: EvalDeviceOption = "auto",
) -> None:
    """Top-1, top-5 and mean class accuracy per stream and fused; metrics.json, per-class CSV,
    confusion PNG, logits."""
    from epam_model.engine import evaluate

    try:
        result = evaluate(
            checkpoint,
            dataset_dir,
            protocol,
            split=split,
            clips=clips,
            flip=flip,
            out_dir=out,
            batch_size=batch_size,
            workers=workers,
            device=device,
            threads=threads,
        )
    except EpamError as err:
        raise fail(str(err)) from None
    if result.files:
        console.print(result.table())
        console.print(
            f"wrote {result.out_dir}: " + ", ".join(path.name for path in result.files.values()),
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


if __name__ == "__main__":  # torchrun --nproc_per_node N -m epam_model.cli train ...
    app()
