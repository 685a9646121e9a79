"""Pose frames/s of the blazepose backend (one interpreter thread), for 1 and 2 tracked persons.

Clips: the shared two_players (426x240) and arm_wrestling (340x256) clips, and two_players upscaled
to 1920x1080 in memory (bilinear), so the per-frame work of 1080p input (letterbox and crops from a
large frame) is counted. Decoding is outside the timed region. Each configuration runs once to warm
up, then `--repeats` times from a fresh tracker state; the table gives the median run, with the
detector / landmark split of that run (landmark time includes the rotated crops and the heatmap
refinement; "other" is tracking and Python overhead).

    .venv/bin/python scripts/bench_pose.py [--frames 100] [--repeats 3] [--media ../shared/media]
        [--options '{"grid_tiles": true}']

`--options '{"backend": "movenet"}'` times the movenet backend instead (one torch thread; its
"landmark" column is MoveNet with the crops it samples, its "detector" CenterNet).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from epam_data.pose import load_backend
from epam_data.pose.blazepose import _bilinear
from epam_data.video import read_frames

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def upscale(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [T, h, w, 3] -> uint8 [T, height, width, 3], bilinear."""
    src_h, src_w = frames.shape[1:3]
    ys = (np.arange(height, dtype=np.float32) + 0.5) * src_h / height - 0.5
    xs = (np.arange(width, dtype=np.float32) + 0.5) * src_w / width - 0.5
    xs, ys = np.meshgrid(xs, ys)
    out = np.empty((len(frames), height, width, 3), np.uint8)
    block = np.empty((height, width, 3), np.float32)
    for frame, target in zip(frames, out):
        _bilinear(np.ascontiguousarray(frame).reshape(-1, 3), src_w, src_h, xs, ys, block, 1.0)
        np.rint(block, out=block)
        target[:] = block
    return out


def run_once(backend: Any, frames: np.ndarray) -> dict[str, float]:
    backend.reset()
    before = vars(backend.timings).copy()
    start, cpu = time.perf_counter(), time.process_time()
    poses = backend.estimate(frames)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = vars(backend.timings)
    delta = {key: after[key] - before[key] for key in after}
    return {"wall": wall, "cpu": cpu, "persons": float(np.mean([len(p) for p in poses])), **delta}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per clip (the first ones)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--media", type=Path, default=MEDIA)
    parser.add_argument(
        "--options", default="{}", help='backend options as JSON, e.g. {"grid_tiles": true}'
    )
    args = parser.parse_args()
    options = json.loads(args.options)
    backend_name = options.pop("backend", "blazepose")
    torch.set_num_threads(1)  # the movenet backend's torch, like TFLite's one thread

    two_players = read_frames(args.media / "two_players_426x240.mp4", np.arange(args.frames))
    clips = {
        "two_players 426x240": two_players,
        "arm_wrestling 340x256": read_frames(
            args.media / "arm_wrestling_340x256.mp4", np.arange(args.frames)
        ),
        "two_players upscaled 1920x1080": upscale(two_players, 1080, 1920),
    }
    header = (
        "| clip | max persons | persons/frame | pose fps | ms/frame | CPU ms/frame | detector "
        "ms/frame (calls) | landmark ms/frame (crops) | other ms/frame |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name, frames in clips.items():
        for max_persons in (1, 2):
            backend = load_backend(backend_name, max_persons=max_persons, **options)
            run_once(backend, frames)  # warm-up: interpreters allocated, caches filled
            runs = sorted(
                (run_once(backend, frames) for _ in range(args.repeats)), key=lambda r: r["wall"]
            )
            run = runs[len(runs) // 2]
            count = len(frames)
            landmark_s = run.get("landmark_s", run.get("pose_s", 0.0))
            crops = run.get("landmark_crops", run.get("pose_crops", 0))
            other = run["wall"] - run["detector_s"] - landmark_s
            print(
                f"| {name} | {max_persons} | {run['persons']:.2f} | {count / run['wall']:.1f} | "
                f"{1000 * run['wall'] / count:.1f} | {1000 * run['cpu'] / count:.1f} | "
                f"{1000 * run['detector_s'] / count:.1f} ({int(run['detector_calls'])}) | "
                f"{1000 * landmark_s / count:.1f} ({int(crops)}) | "
                f"{1000 * other / count:.1f} |",
                flush=True,
            )
    print(
        f"\n{args.frames} frames per clip; median of {args.repeats} runs after one warm-up; one "
        "interpreter thread"
    )


if __name__ == "__main__":
    main()
