"""Benchmark the training loader (epam_model.data.ClipDataset): clips/s beside PYSKL's way, one run.

    python scripts/bench_loader.py [--frames 100] [--size 960x540] [--rounds 15]

Setup (not timed): a real H.264 video of the astronaut photograph moving across a 960x540 canvas
(NTU's RGB re-encode size), extracted with `epam_data.extract.extract_dataset` (BlazePose, RGB crops
256 px, joint heatmaps stored), and a one-sample manifest. Every path then delivers one EPAM-Net
clip, RGB [3, 16, 224, 224] normalised
+ joint heatmaps [17, 48, 56, 56], in this process on one thread (as a DataLoader worker does):

* anchors' way: UniformSampleFrames (test rule), decord opens the raw video and decodes the 16 RGB
  frames, the frames are cropped to the MMCompact box of the 48 sampled poses and resized to 224
  (Pillow, bilinear), normalised, and the heatmaps come from PoseC3D's GeneratePoseTarget loops
  (frame by frame, joint by joint, person by person; `reference_render`, transcribed in
  tests/test_heatmaps.py);
* ours, loader rendering: `ClipDataset(train=True)` (random frames, random resized crop, flip; numpy
  `render`);
* ours, stored heatmaps: `ClipDataset(config=ClipConfig(heatmap_source="stored"))` (evaluation: the
  shard's uint8 volumes are read instead of rendered);
* ours, device rendering: `ClipDataset(train=True, render="device")` (what a DataLoader worker does
  when the heatmaps are rendered on the GPU), and separately `model_inputs` rendering a batch of 8
  such clips with `render_torch` on the CPU (the work a GPU takes over), per clip; the last row adds
  the two.

Each figure is the median over --rounds interleaved rounds (every path once per round, after one
warm-up clip each), so that the load of a shared machine drifting during the run hits all paths
alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from epam_data.extract import ExtractOptions, extract_dataset
from epam_data.heatmaps import compact_box, crop_keypoints, resize_keypoints
from epam_data.shards import ShardReader
from epam_data.synth import person_photo, write_photo_clip
from epam_model.data import (
    RGB_MEAN,
    RGB_STD,
    ClipConfig,
    ClipDataset,
    model_inputs,
    uniform_sample_frames,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ID = "S001C001P001R001A001"


def load_reference():
    """reference_render from the tests, imported by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "test_heatmaps", ROOT / "tests" / "test_heatmaps.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_render


def prepare(folder: Path, frames: int, size: tuple[int, int]) -> Path:
    """The video, its prepared dataset (one sample) and the manifests bench_test.csv /
    bench_classes.csv."""
    width, height = size
    videos = folder / "videos"
    videos.mkdir()
    photo = person_photo()
    side = min(512, height - 40)
    photo = np.asarray(Image.fromarray(photo).resize((side, side), Image.Resampling.BILINEAR))
    step = max(1, (width - side - 40) // max(frames, 1))
    write_photo_clip(
        videos / f"{SAMPLE_ID}_rgb.mp4",
        photo,
        num_frames=frames,
        canvas_hw=(height, width),
        origin=(20, 20),
        step=(step, 0),
        crf=20,
    )
    out = folder / "prepared"
    extract_dataset(videos, out, "ntu60", options=ExtractOptions(rgb_size=256, heatmaps=("joint",)))
    (out / "manifests").mkdir()
    (out / "manifests" / "bench_test.csv").write_text(
        f"sample_id,label,label_name\n{SAMPLE_ID},0,drink water\n"
    )
    (out / "manifests" / "bench_classes.csv").write_text("label,name\n0,drink water\n")
    return out


def anchors_clip(
    video: Path,
    keypoints: np.ndarray,
    scores: np.ndarray,
    frame_hw: tuple[int, int],
    reference_render,
) -> tuple[np.ndarray, np.ndarray]:
    """One clip the anchors' way (module docstring): decord on the raw video + crop/resize +
    PoseC3D's loops."""
    import decord

    num_frames = keypoints.shape[1]
    indices = uniform_sample_frames(num_frames, 48, train=False)
    reader = decord.VideoReader(str(video), num_threads=1)  # DecordInit: one reader per sample
    frames = reader.get_batch(list(indices[::3])).asnumpy()  # [16, H, W, 3]
    kp, sc = keypoints[:, indices], scores[:, indices]
    box = compact_box(kp, frame_hw, padding=0.25, hw_ratio=1.0, allow_imgpad=False)  # MMCompact
    rgb = np.empty((16, 224, 224, 3), np.uint8)
    for k, frame in enumerate(frames):
        rgb[k] = np.asarray(
            Image.fromarray(frame[box.y0 : box.y1, box.x0 : box.x1]).resize(
                (224, 224), Image.Resampling.BILINEAR
            )
        )
    rgb = (rgb.astype(np.float32) - np.array(RGB_MEAN, np.float32)) / np.array(RGB_STD, np.float32)
    rgb = np.ascontiguousarray(rgb.transpose(3, 0, 1, 2))
    canvas = resize_keypoints(crop_keypoints(kp, box), box.canvas_hw, (56, 56))
    heatmaps = reference_render(canvas, sc, (56, 56), kind="joint")  # [48, 17, 56, 56]
    return rgb, np.ascontiguousarray(heatmaps.transpose(1, 0, 2, 3))


def interleaved_medians(steps: dict[str, tuple[object, int]], rounds: int) -> dict[str, float]:
    """Median seconds per clip of each step, timed in interleaved rounds (each step once per round,
    after one warm-up call each), so that the load of a shared machine drifting over the run hits
    every path alike. A step is (function of the round number, clips it delivers)."""
    for step, _ in steps.values():
        step(-1)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_number in range(rounds):
        for name, (step, clips) in steps.items():
            start = time.perf_counter()
            step(round_number)
            times[name].append((time.perf_counter() - start) / clips)
    return {name: statistics.median(values) for name, values in times.items()}


def _parse_args() -> argparse.Namespace:
    """The command line (module docstring); kept apart so that main reads as setup, time, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="frames of the test video")
    parser.add_argument("--size", default="960x540", help="WIDTHxHEIGHT of the test video")
    parser.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="timing rounds (each path delivers one clip per round, render_torch one batch of 8)",
    )
    return parser.parse_args()


def _timing_steps(
    out: Path, video: Path, reference_render: Callable[..., np.ndarray]
) -> dict[str, tuple[Callable[[int], object], int]]:
    """Every path of the module docstring as an `interleaved_medians` step, in table order; the
    datasets and the collated batch are built here, before any timing."""
    sample = ShardReader(out).read(SAMPLE_ID, rgb=False, heatmaps=False)
    keypoints, scores = sample.keypoints, sample.scores.astype(np.float32)

    train = ClipDataset(out, "bench", "test", train=True)
    stored = ClipDataset(out, "bench", "test", config=ClipConfig(heatmap_source="stored"))
    device = ClipDataset(out, "bench", "test", train=True, render="device")
    batch = 8

    def train_step(i: int) -> None:
        train.set_epoch(i + 1)
        train[0]

    def device_step(i: int) -> None:
        device.set_epoch(i + 1)
        device[0]

    collated = torch.utils.data.default_collate([device[0]] * batch)

    return {
        "anchors' way: decord raw video + crop/resize + PoseC3D heatmap loops": (
            lambda i: anchors_clip(video, keypoints, scores, sample.original_hw, reference_render),
            1,
        ),
        "ours: ClipDataset train, heatmaps rendered in the loader (numpy)": (train_step, 1),
        "ours: ClipDataset eval, stored heatmaps read": (lambda i: stored[0], 1),
        "ours: ClipDataset train, render='device': the loader's side (keypoints + RGB)": (
            device_step,
            1,
        ),
        "ours: model_inputs rendering those on CPU with render_torch (batch 8, per clip)": (
            lambda i: model_inputs(collated, torch.device("cpu"), device.config),
            batch,
        ),
    }


def _print_table(
    medians: dict[str, float], size: tuple[int, ...], frames: int, setup_s: float
) -> None:
    """The machine, the video and the markdown table; the render='device' paths get a summed row,
    since a worker and the GPU-side rendering together are what replaces the loader's render."""
    rows = list(medians.items())
    rows.append(
        ("ours: render='device' end to end on CPU (the two rows above)", rows[-2][1] + rows[-1][1])
    )
    anchor = rows[0][1]
    model = subprocess.run(
        "lscpu | grep 'Model name'", shell=True, capture_output=True, text=True, check=False
    ).stdout
    print(
        f"machine: {model.split(':', 1)[-1].strip()}, {len(os.sched_getaffinity(0))} cores, "
        f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__} on 1 thread"
    )
    print(
        f"video: {size[0]}x{size[1]}, {frames} frames (H.264); shards prepared in "
        f"{setup_s:.1f} s (not timed); "
        f"one clip = RGB [3, 16, 224, 224] + joint heatmaps [17, 48, 56, 56]\n"
    )
    print("| path | ms per clip | clips/s (1 core) | x anchors |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e3:.1f} | {1 / seconds:.1f} | {anchor / seconds:.1f} |")


def main() -> None:
    args = _parse_args()
    torch.set_num_threads(1)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    reference_render = load_reference()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = prepare(Path(tmp), args.frames, size)
        setup_s = time.perf_counter() - start
        video = Path(tmp) / "videos" / f"{SAMPLE_ID}_rgb.mp4"
        medians = interleaved_medians(_timing_steps(out, video, reference_render), args.rounds)
    _print_table(medians, size, args.frames, setup_s)


if __name__ == "__main__":
    main()
