"""Time PoseC3D's heatmap loops against epam_data.heatmaps (numpy, torch CPU, CUDA when present).

Clips are synthetic but shaped like real ones: COCO-17 people standing side by side, filling a 56 x
56 canvas as PoseCompact leaves them, moving a little from frame to frame, scores between 0.3 and 1.
The reference is the plain transcription of GeneratePoseTarget in tests/test_heatmaps.py. Each
timing is the median of repeated calls after a warm-up call; inputs are built before timing. Prints
a markdown table.

    .venv/bin/python scripts/bench_heatmaps.py [--frames 48] [--size 56] [--batch 32] [--repeats 20]

torch CPU runs on --torch-threads threads (default 1, as in a DataLoader worker; on a shared 2-core
machine two OpenMP threads stall whenever the other core is busy). The batched CPU rows include
allocating and zeroing the [32, 48, 17, 56, 56] output (330 MB), which dominates them on this
machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from epam_data.heatmaps import render, render_torch

ROOT = Path(__file__).resolve().parents[1]

# A standing person in COCO-17 order, x and y in [0, 1] of their own box (nose at the top).
STANDING = np.array(
    [
        (0.50, 0.08),
        (0.46, 0.06),
        (0.54, 0.06),
        (0.42, 0.08),
        (0.58, 0.08),
        (0.36, 0.22),
        (0.64, 0.22),
        (0.30, 0.38),
        (0.70, 0.38),
        (0.28, 0.52),
        (0.72, 0.52),
        (0.41, 0.55),
        (0.59, 0.55),
        (0.40, 0.75),
        (0.60, 0.75),
        (0.40, 0.95),
        (0.60, 0.95),
    ]
)


def load_reference():
    """reference_render from the tests, imported by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "test_heatmaps", ROOT / "tests" / "test_heatmaps.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_render


def make_clip(
    rng: np.random.Generator, persons: int, frames: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """keypoints [M, T, 17, 2] float32 canvas pixels and scores [M, T, 17] float32."""
    width = 0.8 * size / persons  # PoseCompact leaves ~1/1.25 of the box to people
    kp = np.empty((persons, frames, 17, 2))
    for m in range(persons):
        left = 0.1 * size + m * width
        phase = rng.uniform(0, 2 * np.pi, 17)
        t = np.arange(frames)[:, None]
        wobble = np.stack([np.sin(0.2 * t + phase), np.cos(0.15 * t + phase)], axis=-1) * 0.06
        kp[m] = (
            (STANDING + wobble) * [width, 0.8 * size]
            + [left, 0.1 * size]
            + rng.normal(0, 0.3, (frames, 17, 2))
        )
    scores = rng.uniform(0.3, 1.0, (persons, frames, 17))
    return kp.astype(np.float32), scores.astype(np.float32)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def median_ms_cuda(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _parse_args() -> argparse.Namespace:
    """The command line (module docstring); kept apart so that main reads as the table it prints."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument(
        "--batch", type=int, default=32, help="clips per call for the batched torch rows"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--reference-repeats", type=int, default=7)
    parser.add_argument("--sigma", type=float, default=0.6)
    parser.add_argument("--torch-threads", type=int, default=1)
    return parser.parse_args()


def _table_row(
    args: argparse.Namespace,
    rng: np.random.Generator,
    reference_render: Callable[..., np.ndarray],
    kind: str,
    persons: int,
    cuda: bool,
) -> str:
    """One markdown row: every implementation timed on the same clip (and batch of clips) and
    checked against the reference, so that a fast but wrong renderer shows in its row."""
    hw = (args.size, args.size)
    kp, scores = make_clip(rng, persons, args.frames, args.size)
    batch = [make_clip(rng, persons, args.frames, args.size) for _ in range(args.batch)]
    kp_b = torch.from_numpy(np.stack([b[0] for b in batch]))
    sc_b = torch.from_numpy(np.stack([b[1] for b in batch]))
    kp_1, sc_1 = torch.from_numpy(kp)[None], torch.from_numpy(scores)[None]
    options = dict(kind=kind, sigma=args.sigma)

    ref_ms = median_ms(
        lambda: reference_render(kp, scores, hw, kind, args.sigma), args.reference_repeats
    )
    np_ms = median_ms(lambda: render(kp, scores, hw, **options), args.repeats)
    t1_ms = median_ms(lambda: render_torch(kp_1, sc_1, hw, **options), args.repeats)
    tb_ms = (
        median_ms(lambda: render_torch(kp_b, sc_b, hw, **options), max(3, args.repeats // 4))
        / args.batch
    )
    expected = reference_render(kp, scores, hw, kind, args.sigma)
    diff_np = np.abs(render(kp, scores, hw, **options) - expected).max()
    diff_t = np.abs(render_torch(kp_1, sc_1, hw, **options)[0].numpy() - expected).max()
    row = (
        f"| {kind} | {persons} | {ref_ms:.2f} | {np_ms:.3f} | {ref_ms / np_ms:.0f} | "
        f"{t1_ms:.3f} | {ref_ms / t1_ms:.0f} | {tb_ms:.3f} | {ref_ms / tb_ms:.0f} |"
    )
    if cuda:
        kp_c, sc_c = kp_b.cuda(), sc_b.cuda()
        cu_ms = (
            median_ms_cuda(lambda: render_torch(kp_c, sc_c, hw, **options), args.repeats)
            / args.batch
        )
        row += f" {cu_ms:.4f} | {ref_ms / cu_ms:.0f} |"
    return row + f" {diff_np:.1e} / {diff_t:.1e} |"


def main() -> None:
    args = _parse_args()
    torch.set_num_threads(args.torch_threads)
    reference_render = load_reference()
    rng = np.random.default_rng(0)
    cuda = torch.cuda.is_available()

    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, numpy {np.__version__}, cuda: {cuda}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"clip: {args.frames} frames, {args.size}x{args.size}, 17 channels, sigma {args.sigma}; "
        f"median of {args.repeats} (reference {args.reference_repeats}) after a warm-up; ms per "
        "clip\n"
    )
    header = (
        "| kind | persons | reference | numpy | x | torch CPU, 1 clip | x | torch CPU, batch "
        f"{args.batch} | x |"
        + (f" CUDA, batch {args.batch} | x |" if cuda else "")
        + " max abs diff numpy / torch vs reference |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for kind in ("joint", "limb"):
        for persons in (1, 2):
            print(_table_row(args, rng, reference_render, kind, persons, cuda))


if __name__ == "__main__":
    main()
