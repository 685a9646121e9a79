"""CPU time of BlazePose's two networks: the TFLite interpreter against their torch port
(`epam_data.pose.tflite_torch`), on real crops of the shared clips.

Why: the torch port exists so that a GPU can run the networks batched; before moving the backend to
it, this shows what it costs or saves on the CPU where the interpreter runs today. Landmark model:
milliseconds per crop at batches of 1, 2 and 8 crops; detector: milliseconds per call (one
letterboxed frame). Each runtime at 1 and 2 threads; each figure is the median over `--repeats`
rounds of the median of 5 calls, the runtimes taking turns. "torch" is the port as the backend runs
it on a CPU (oneDNN convolutions, the landmark model's unused outputs skipped), "torch plain" the
same with the torch calls a GPU runs. On a shared, busy machine the figures are noisy: compare rows
of one run, not runs.

    .venv/bin/python scripts/bench_pose_runtime.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from epam_data.pose import blazepose
from epam_data.pose.blazepose_runtime import keep_landmark_outputs
from epam_data.pose.tflite_torch import TFLiteModule, read_tflite_graph
from epam_data.video import read_frames

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
CLIPS = ("two_players_426x240.mp4", "arm_wrestling_340x256.mp4")
BATCHES = (1, 2, 8)
THREADS = (1, 2)
RUNTIMES = ("tflite", "torch", "torch plain")


def real_inputs(count: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """`count` landmark crops at the ROIs a BlazePoseBackend run tracks on the shared clips, and one
    letterboxed detector input per clip."""
    crops: list[np.ndarray] = []
    letterboxes = []
    for clip in CLIPS:
        frames = read_frames(MEDIA / clip, np.arange(0, 24, 3))
        backend = blazepose.BlazePoseBackend()
        for frame in frames:
            for track in backend._tracks:
                crop = np.zeros((256, 256, 3), np.float32)
                blazepose._crop_rotated(frame, track.roi, crop)
                crops.append(crop)
            backend.estimate(frame)
        box = np.zeros((224, 224, 3), np.float32)
        blazepose._letterbox(frames[0], (0, 0, frames.shape[2], frames.shape[1]), box)
        letterboxes.append(box)
    if len(crops) < count:
        raise SystemExit(f"only {len(crops)} tracked crops in the shared clips, {count} wanted")
    return np.stack(crops[:count]), np.stack(letterboxes)


def median_seconds(call: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `call` over `repeats` runs, after one warm-up run."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tflite_call(path: Path, inputs: np.ndarray, threads: int) -> Callable[[], Any]:
    """An interpreter with `threads` threads (XNNPACK, as the backend runs it), sized to the
    batch."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    detail = interpreter.get_input_details()[0]
    if len(inputs) != 1:
        interpreter.resize_tensor_input(detail["index"], list(inputs.shape))
    with blazepose._quiet_native_stderr():
        interpreter.allocate_tensors()

    def call() -> None:
        interpreter.set_tensor(detail["index"], inputs)
        interpreter.invoke()

    return call


def torch_call(module: TFLiteModule, inputs: np.ndarray) -> Callable[[], Any]:
    x = torch.from_numpy(inputs)

    def call() -> None:
        with torch.inference_mode():
            module(x)

    return call


def torch_modules(detector_path: Path, landmark_path: Path) -> dict[tuple[Path, str], Any]:
    """Each network as the backend runs it on the CPU ("torch": oneDNN, the landmark model's
    unused outputs skipped) and with the plain torch calls a GPU runs ("torch plain")."""
    modules = {}
    for path in (detector_path, landmark_path):
        description = read_tflite_graph(path)
        for runtime, onednn in (("torch", True), ("torch plain", False)):
            module = TFLiteModule(description).eval().use_onednn(onednn)
            modules[path, runtime] = (
                keep_landmark_outputs(module) if path == landmark_path else module
            )
    return modules


def rows(repeats: int) -> list[tuple[str, str, int, int, float, float]]:
    """(model, runtime, threads, batch, ms per call, ms per crop) for every setting; the runtimes
    of one setting take turns, `repeats` rounds of 5 calls, so that load from other jobs falls
    on all of them alike."""
    detector_path, landmark_path = blazepose.find_model_files()
    crops, letterboxes = real_inputs(max(BATCHES))
    modules = torch_modules(detector_path, landmark_path)
    settings = [("landmark", landmark_path, crops[:batch]) for batch in BATCHES]
    settings.append(("detector", detector_path, letterboxes[:1]))
    results = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        for name, path, inputs in settings:
            calls = {"tflite": tflite_call(path, inputs, threads)}
            for runtime in RUNTIMES[1:]:
                calls[runtime] = torch_call(modules[path, runtime], inputs)
            times: dict[str, list[float]] = {runtime: [] for runtime in calls}
            for _ in range(repeats):
                for runtime, call in calls.items():
                    times[runtime].append(median_seconds(call, 5))
            for runtime, seconds in times.items():
                ms = statistics.median(seconds) * 1e3
                results.append((name, runtime, threads, len(inputs), ms, ms / len(inputs)))
    return results


def markdown(results: list[tuple[str, str, int, int, float, float]]) -> str:
    lines = [
        "| model | runtime | threads | batch | ms / call | ms / crop |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, runtime, threads, batch, per_call, per_crop in sorted(results):
        lines.append(
            f"| {name} | {runtime} | {threads} | {batch} | {per_call:.1f} | {per_crop:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds per figure (median)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available by default")
    print(markdown(rows(args.repeats)))


if __name__ == "__main__":
    main()
