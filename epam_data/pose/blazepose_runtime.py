"""What runs BlazePose's two networks: the TFLite interpreter (the CPU default) or PyTorch (any
device).

The tracker in `epam_data.pose.blazepose` needs two calls, the same for both runtimes:
`detect(inputs)` on letterboxed 224x224 regions and `landmarks(crops)` on a batch of 256x256
person crops. `TFLiteNetworks` runs the .tflite files with one interpreter thread (two XNNPACK
threads on a busy 2-core machine made each invoke 40-80x slower: docs/pose-backends.md 6.1).
`TorchNetworks` runs the same files converted to PyTorch (`epam_data.pose.tflite_torch`, equal to
the interpreter within 0.003 px and 6e-5 in presence), so a GPU can run them; on this project's
CPU it is as fast per core (BENCHMARKS.md, BlazePose runtimes) but torch costs a process 205 MB
and 1.4 s to start, which is why TFLite stays the CPU default. On a GPU, `landmarks_in_frames`
cuts the crops there too (`crop_rotated_torch`), from the uploaded uint8 frames.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from epam_data.pose.base import PoseBackendError
from epam_data.pose.upload import to_device

__all__ = [
    "RUNTIMES",
    "TFLiteNetworks",
    "TorchNetworks",
    "crop_rotated_torch",
    "keep_landmark_outputs",
    "make_networks",
]

RUNTIME_INSTALL = "pip install ai-edge-litert==2.3.0"
RUNTIMES = ("tflite", "torch")
DETECTOR_OUTPUTS = ((2254, 12), (2254, 1))  # raw boxes, score logits
LANDMARK_OUTPUTS = ((195,), (1,), (64, 64, 39))  # landmarks, pose presence, heatmap


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Native code's writes to file descriptor 2 go to /dev/null inside the block (TFLite logs an
    INFO line per interpreter, which no setting turns off); Python's own errors still raise as
    exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _make_interpreter(model_path: Path, batch: int = 1, *, xnnpack: bool = True) -> Any:
    """A one-thread TFLite interpreter for `model_path`, its input resized to `batch` images.

    xnnpack=False runs TFLite's built-in kernels instead of the XNNPACK delegate (slower; another
    vector path, which `scripts/bench_pose_spread.py` uses to measure how much the figures depend on
    the CPU's vector code).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType
        except ImportError:
            raise PoseBackendError(
                f"no TFLite interpreter is installed for the blazepose backend; run "
                f"`{RUNTIME_INSTALL}`"
            ) from None
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(
        model_path=str(model_path), num_threads=1, experimental_op_resolver_type=resolver
    )
    if batch != 1:
        shape = list(interpreter.get_input_details()[0]["shape"])
        interpreter.resize_tensor_input(
            interpreter.get_input_details()[0]["index"], [batch, *shape[1:]]
        )
    with _quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter.allocate_tensors()
    return interpreter


def _io(interpreter: Any, outputs: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """Tensor indices of the input and of the outputs with the given shapes (batch left out)."""
    found = {tuple(d["shape"][1:]): d["index"] for d in interpreter.get_output_details()}
    return (interpreter.get_input_details()[0]["index"], *(found[shape] for shape in outputs))


class TFLiteNetworks:
    """Both networks in one-thread TFLite interpreters; one landmark interpreter per batch size,
    made on first use (resizing an interpreter's input re-plans it)."""

    def __init__(self, detector_path: Path, landmark_path: Path, *, xnnpack: bool = True) -> None:
        self.landmark_path, self.xnnpack = landmark_path, xnnpack
        self._detector = _make_interpreter(detector_path, xnnpack=xnnpack)
        self._detector_io = _io(self._detector, DETECTOR_OUTPUTS)
        self._landmarkers: dict[int, tuple[Any, tuple[int, ...]]] = {}

    def detect(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """inputs float32 [R, 224, 224, 3] in [-1, 1] -> raw boxes [R, 2254, 12], logits
        [R, 2254]: one invoke per region (the interpreter is planned for batch 1)."""
        input_index, boxes_index, scores_index = self._detector_io
        boxes, scores = [], []
        for region in inputs:
            self._detector.set_tensor(input_index, region[None])
            self._detector.invoke()
            boxes.append(self._detector.get_tensor(boxes_index)[0])
            scores.append(self._detector.get_tensor(scores_index)[0, :, 0])
        return np.stack(boxes), np.stack(scores)

    def landmarks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """crops float32 [B, 256, 256, 3] in [0, 1] -> landmarks [B, 195] (crop pixels, logits for
        visibility and presence), pose presence [B] (a probability), heatmap logits
        [B, 64, 64, 39]."""
        batch = len(crops)
        if batch not in self._landmarkers:
            interpreter = _make_interpreter(self.landmark_path, batch, xnnpack=self.xnnpack)
            self._landmarkers[batch] = (interpreter, _io(interpreter, LANDMARK_OUTPUTS))
        interpreter, (input_index, landmarks_index, presence_index, heatmap_index) = (
            self._landmarkers[batch]
        )
        interpreter.set_tensor(input_index, np.ascontiguousarray(crops, np.float32))
        interpreter.invoke()
        return (
            interpreter.get_tensor(landmarks_index).copy(),
            interpreter.get_tensor(presence_index)[:, 0].copy(),
            interpreter.get_tensor(heatmap_index),
        )


def _torch_module(path: Path) -> Any:
    """The network of a .tflite file (converted, through the cache) or of an already converted
    `.pt` (`epam_data.pose.tflite_torch`; a machine without ai_edge_litert or the .tflite files)."""
    from epam_data.pose.tflite_torch import load_cached_module, load_tflite_module

    return load_cached_module(path) if path.suffix == ".pt" else load_tflite_module(path)


def keep_landmark_outputs(module: Any) -> Any:
    """The landmark model's module computing only `LANDMARK_OUTPUTS`, in that order (the
    segmentation mask and world landmarks it skips cost a third of its time); returns it."""
    shapes = [tuple(shape[1:]) for shape in module.output_shapes]
    return module.keep_outputs([shapes.index(shape) for shape in LANDMARK_OUTPUTS])


class TorchNetworks:
    """Both networks as PyTorch modules on `device`, built from the .tflite files (or from the
    converted-weights cache, `epam_data.pose.tflite_torch`); any batch of crops in one call."""

    def __init__(self, detector_path: Path, landmark_path: Path, *, device: str = "cpu") -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self._detector = _torch_module(detector_path).to(self.device).eval()
        self._landmark = keep_landmark_outputs(_torch_module(landmark_path).to(self.device).eval())

    def _run(self, module: Any, inputs: Any) -> list[np.ndarray]:
        """The module's outputs for `inputs` (numpy, or a tensor already on the device)."""
        torch = self._torch
        with torch.inference_mode():
            if isinstance(inputs, np.ndarray):
                inputs = to_device(inputs, self.device)
            outputs = module(inputs)
        return [output.float().cpu().numpy() for output in outputs]

    def detect(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As `TFLiteNetworks.detect`, every region in one call."""
        boxes, scores = self._run(self._detector, inputs)
        return boxes, scores[:, :, 0]

    def landmarks(self, crops: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `TFLiteNetworks.landmarks` (crops may also be a tensor on the device)."""
        landmarks, presence, heatmap = self._run(self._landmark, crops)
        return landmarks, presence[:, 0], heatmap

    def landmarks_in_frames(
        self, requests: Sequence[tuple[np.ndarray, np.ndarray]], size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`landmarks` of the ROIs [N, 4] of each (uint8 frame, rois) request, all in one batch,
        cropped on the device (`crop_rotated_torch`) from the part of each frame the crops read
        (`crop_window`): a two-person 1080p frame uploads a fraction of its 6.2 MB, through
        pinned memory on a GPU (`epam_data.pose.upload`)."""
        torch = self._torch
        with torch.inference_mode():
            crops = []
            for frame, rois in requests:
                window, shifted = crop_window(frame, np.asarray(rois, np.float32), size)
                crops.append(
                    crop_rotated_torch(
                        to_device(window, self.device), to_device(shifted, self.device), size
                    )
                )
        return self.landmarks(torch.cat(crops))


def crop_window(frame: np.ndarray, rois: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the smallest part of `frame` that the `size` x `size` crops of `rois` read, the rois moved
    into its coordinates): the same crops come out of it (`crop_rotated_torch`: bilinear taps at
    floor(x) and floor(x) + 1, and past the frame's edge the edge repeated, which is the window's
    edge wherever the window reaches the frame's), with less to upload and convert. The window is
    a view of `frame`: the upload (`to_device`) copies it once, into pinned memory on a GPU."""
    height, width = frame.shape[:2]
    # the outermost sample points of a rotated square lie this far from its centre along x and y
    corner = (size / 2 - 0.5) * rois[:, 2] / size
    reach = corner * (np.abs(np.cos(rois[:, 3])) + np.abs(np.sin(rois[:, 3])))
    x0 = int(np.clip(np.floor((rois[:, 0] - 0.5 - reach).min()), 0, width - 1))
    y0 = int(np.clip(np.floor((rois[:, 1] - 0.5 - reach).min()), 0, height - 1))
    x1 = int(np.clip(np.floor((rois[:, 0] - 0.5 + reach).max()) + 2, x0 + 1, width))
    y1 = int(np.clip(np.floor((rois[:, 1] - 0.5 + reach).max()) + 2, y0 + 1, height))
    shifted = rois.copy()
    shifted[:, 0] -= x0
    shifted[:, 1] -= y0
    return frame[y0:y1, x0:x1], shifted


def crop_rotated_torch(frame: Any, rois: Any, size: int) -> Any:
    """`blazepose_geometry._crop_rotated` for many ROIs of one frame, on the frame's device:
    frame uint8 [H, W, 3], rois float [N, 4] (cx, cy, side, angle) -> float32 [N, size, size, 3]
    in [0, 1].

    Why: at 1080p the numpy crop takes 2.3 ms of a CPU core per person (BENCHMARKS.md), about 5
    of 16 cores at 1,000 two-person frames/s; on a GPU it is one `grid_sample` per frame. The
    sample points are those of `_crop_rotated` (pixel centres, the ROI rotated about its centre)
    mapped to `grid_sample`'s [-1, 1] with align_corners=False, whose "border" padding repeats the
    edge pixels as `_crop_rotated` does.
    """
    import torch
    import torch.nn.functional as F

    height, width = frame.shape[:2]
    rois = rois.to(torch.float32)
    steps = torch.arange(size, dtype=torch.float32, device=frame.device) + 0.5 - size / 2
    scale = rois[:, 2:3, None] / size
    cos, sin = torch.cos(rois[:, 3:4, None]) * scale, torch.sin(rois[:, 3:4, None]) * scale
    u, v = steps[None, None, :], steps[None, :, None]  # crop column, crop row
    xs = (rois[:, 0:1, None] - 0.5) + cos * u - sin * v  # [N, S, S] source pixel x
    ys = (rois[:, 1:2, None] - 0.5) + sin * u + cos * v
    grid = torch.stack([(2 * xs + 1) / width - 1, (2 * ys + 1) / height - 1], dim=-1)
    image = frame.permute(2, 0, 1)[None].to(torch.float32) / 255
    crops = F.grid_sample(
        image, grid.reshape(1, -1, size, 2), "bilinear", "border", align_corners=False
    )  # [1, 3, N * S, S]
    return crops[0].reshape(3, len(rois), size, size).permute(1, 2, 3, 0)


def make_networks(
    runtime: str | None,
    detector_path: Path,
    landmark_path: Path,
    *,
    xnnpack: bool = True,
    device: str | None = None,
) -> TFLiteNetworks | TorchNetworks:
    """The networks for `runtime` ("tflite" or "torch"). None picks torch when `device` names
    anything but the CPU (so `--device cuda` is all a user says), else TFLite."""
    on_cpu = device in (None, "cpu")
    runtime = runtime or ("tflite" if on_cpu else "torch")
    if runtime == "tflite":
        if detector_path.suffix == ".pt" or landmark_path.suffix == ".pt":
            raise PoseBackendError(
                f"{detector_path.parent} holds converted networks (.pt), which only the torch "
                "runtime runs: pass runtime='torch' (or --device cuda), or give the .tflite files"
            )
        if not on_cpu:
            raise PoseBackendError(
                f"the blazepose TFLite runtime runs on the CPU only, not on {device!r}; "
                "leave the runtime to the device (runtime='torch')"
            )
        return TFLiteNetworks(detector_path, landmark_path, xnnpack=xnnpack)
    if runtime == "torch":
        return TorchNetworks(detector_path, landmark_path, device=device or "cpu")
    raise PoseBackendError(f"blazepose runtime must be one of {RUNTIMES}, not {runtime!r}")
