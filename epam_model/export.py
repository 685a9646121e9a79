"""ONNX export of EPAM-Net or one stream, checked against PyTorch with onnxruntime on the same
random input.

Uses the torch.export-based exporter (`torch.onnx.export(..., dynamo=True)`), which needs the
packages onnx and onnxscript; the check needs onnxruntime. All three are imported inside the
functions, so `import epam_model` works without them. The batch axis is dynamic; clip length and
frame size are fixed at the sizes given.
"""

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from epam_data.errors import EpamError
from epam_model.complexity import PAPER_POSE_SHAPE, PAPER_RGB_SHAPE
from epam_model.epamnet import EpamNet

__all__ = ["ExportError", "ExportReport", "example_inputs", "export_onnx", "check_onnx"]

ONNX_PACKAGES = "pip install onnx onnxscript onnxruntime"


class ExportError(EpamError):
    """The model could not be exported, or the exported graph disagrees with PyTorch."""


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote and how well the ONNX graph matched PyTorch."""

    path: Path
    input_names: tuple[str, ...]
    input_shapes: tuple[
        tuple[int, ...], ...
    ]  # the example (and check) inputs; axis 0 is dynamic in the graph
    output_names: tuple[str, ...]
    opset: int
    seconds: float  # export time
    max_abs_diff: (
        float | None
    )  # onnxruntime vs PyTorch, largest over all outputs; None: not checked
    max_abs_output: float | None  # largest |PyTorch output| on the same input, to judge the diff

    def lines(self) -> list[str]:
        shapes = ", ".join(
            f"{name} {list(shape)}" for name, shape in zip(self.input_names, self.input_shapes)
        )
        out = [
            f"wrote {self.path} (opset {self.opset}, {self.path.stat().st_size / 1e6:.1f} MB, "
            f"{self.seconds:.0f} s): inputs {shapes} (batch axis dynamic), outputs "
            f"{', '.join(self.output_names)}"
        ]
        if self.max_abs_diff is not None:
            out.append(
                "onnxruntime vs PyTorch on the same random input: max abs diff "
                f"{self.max_abs_diff:.3g} (outputs up to {self.max_abs_output:.3g} in magnitude)"
            )
        return out


def example_inputs(
    model: nn.Module,
    batch: int = 2,
    *,
    rgb_shape: tuple[int, ...] = PAPER_RGB_SHAPE,
    pose_shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> tuple[Tensor, ...]:
    """Random inputs at the paper's clip sizes for `model` (EpamNet -> (rgb, pose); a stream ->
    (clip,)).

    A single stream's input kind is read from its first conv (3 channels = RGB, else heatmaps).
    """
    generator = torch.Generator().manual_seed(seed)
    if isinstance(model, EpamNet):
        pose_shape = pose_shape or (model.pose.in_channels, *PAPER_POSE_SHAPE[1:])
        return (
            torch.randn(batch, *rgb_shape, generator=generator),
            torch.randn(batch, *pose_shape, generator=generator),
        )
    in_channels = model.in_channels
    if in_channels == 3:
        return (torch.randn(batch, *rgb_shape, generator=generator),)
    pose_shape = pose_shape or (in_channels, *PAPER_POSE_SHAPE[1:])
    return (torch.randn(batch, *pose_shape, generator=generator),)


def check_onnx(
    path: str | Path, model: nn.Module, inputs: tuple[Tensor, ...]
) -> tuple[float, float]:
    """Run the ONNX file with onnxruntime (CPU) and `model` in PyTorch on `inputs`.

    Returns the largest absolute difference over all outputs and the largest absolute PyTorch
    output.
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise ExportError(
            f"checking the exported graph needs onnxruntime: {ONNX_PACKAGES}"
        ) from err
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {arg.name: tensor.numpy() for arg, tensor in zip(session.get_inputs(), inputs)}
    got = session.run(None, feeds)
    with torch.no_grad():
        expected = model(*inputs)
    expected = tuple(expected) if isinstance(expected, tuple) else (expected,)
    if len(got) != len(expected):
        raise ExportError(
            f"{path}: the graph has {len(got)} outputs, PyTorch gives {len(expected)}"
        )
    diff = max(float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected))
    return diff, max(float(e.abs().max()) for e in expected)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes that do not concern this model (torchvision ops it skips, a
    pytree FutureWarning) for the duration of one export; levels and filters are restored
    afterwards."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def _require_exporter() -> None:
    """Import onnx and onnxscript up front: the exporter needs both, and failing here gives an
    actionable message instead of an exporter traceback."""
    try:
        import onnx  # noqa: F401 - the exporter needs both; fail here with an actionable message
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs the packages onnx and onnxscript: {ONNX_PACKAGES}"
        ) from err


def _io_names(model: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Graph input and output names: both streams for `EpamNet`, else the one stream's input
    (told apart by its channel count) and "logits"."""
    if isinstance(model, EpamNet):
        return ("rgb", "pose"), ("rgb_logits", "pose_logits")
    return ("rgb" if model.in_channels == 3 else "pose",), ("logits",)


def _run_export(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    out: Path,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    opset: int,
) -> float:
    """Run the torch.export-based exporter with a dynamic batch axis and return its time in
    seconds; any exporter failure becomes an `ExportError` naming the innermost cause."""
    dynamic = tuple(
        {0: torch.export.Dim.DYNAMIC} for _ in inputs
    )  # by position: forward's argument names vary
    start = time.perf_counter()
    try:
        with _quiet_exporter():
            torch.onnx.export(
                model,
                inputs,
                str(out),
                dynamo=True,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=dynamic,
                opset_version=opset,
                external_data=False,
                verbose=False,
            )  # one self-contained file (10 MB)
    # the exporter raises many types; all mean the same to the user
    except Exception as err:  # noqa: BLE001
        cause = err
        while cause.__cause__ is not None:  # the exporter wraps the real reason
            cause = cause.__cause__
        raise ExportError(
            f"exporting to {out} failed: {type(cause).__name__}: {str(cause).splitlines()[0]}"
        ) from err
    return time.perf_counter() - start


def export_onnx(
    model: nn.Module,
    out: str | Path,
    *,
    batch: int = 2,
    rgb_shape: tuple[int, ...] = PAPER_RGB_SHAPE,
    pose_shape: tuple[int, ...] | None = None,
    opset: int = 18,
    check: bool = True,
    tolerance: float = 1e-3,
) -> ExportReport:
    """Export `model` in eval mode (its mode is restored afterwards) to ONNX with a dynamic batch
    axis and check it against PyTorch.

    Args:
        model: `EpamNet` (inputs "rgb", "pose"; outputs "rgb_logits", "pose_logits", fused = their
            sum) or one stream (input "rgb" or "pose"; output "logits").
        out: the .onnx file to write (its folder is created).
        batch: batch size of the example inputs used to trace and to check (2: torch.export
            specialises a batch of 1 to a constant).
        rgb_shape, pose_shape: per-clip input shapes, fixed in the graph; default the paper's sizes.
        opset: ONNX opset version.
        check: run the file with onnxruntime on the same random input and compare with PyTorch.
        tolerance: largest absolute difference accepted by the check before `ExportError` is raised.
    """
    _require_exporter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()  # restored below: no hidden mode change
    try:
        inputs = example_inputs(model, batch, rgb_shape=rgb_shape, pose_shape=pose_shape)
        input_names, output_names = _io_names(model)
        seconds = _run_export(model, inputs, out, input_names, output_names, opset)
        max_abs_diff, max_abs_output = check_onnx(out, model, inputs) if check else (None, None)
    finally:
        model.train(was_training)
    if max_abs_diff is not None and not max_abs_diff <= tolerance:
        raise ExportError(
            f"{out}: onnxruntime and PyTorch differ by up to {max_abs_diff:.3g} (> {tolerance})"
        )
    return ExportReport(
        out,
        input_names,
        tuple(tuple(x.shape) for x in inputs),
        output_names,
        opset,
        seconds,
        max_abs_diff,
        max_abs_output,
    )
