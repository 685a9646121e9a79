"""How much the pose and extract quality figures move across CPU vector paths (BENCHMARKS.md, SIMD
spread).

The blazepose backend's figures on the two shared real clips come from float32 maths whose last bits
depend on the CPU: numpy picks AVX-512, AVX2 or SSE kernels at run time (`NPY_DISABLE_CPU_FEATURES`
forces a lower one), and the TFLite interpreter's XNNPACK delegate does the same for the two
networks. A tracker whose decisions sit on a threshold turns one ulp into a lost person, so this
script measures every figure the tests hold the backend to, once per setting, each in a fresh
process (numpy reads the variable at import), and prints the spread:

    .venv/bin/python scripts/bench_pose_spread.py                 # all settings, a markdown table
    .venv/bin/python scripts/bench_pose_spread.py --json out.json
    .venv/bin/python scripts/bench_pose_spread.py --measure   # this process's figures, as JSON
    .venv/bin/python scripts/bench_pose_spread.py --measure --options '{"backend": "movenet"}'
    .venv/bin/python scripts/bench_pose_spread.py --backend movenet    # torch's vector paths
    .venv/bin/python scripts/bench_pose_spread.py --measure --grid 2:0.5   # grid luck

The figures (the tests in brackets hold them to a bar):
* two_players, every frame: share of confident persons standing upright (test_pose), jumps of a hip
  centre by more than 0.35 box heights between frames (test_pose), frames before 120 with two
  persons;
* arm_wrestling, first 150 frames: frames with someone, with two persons (test_pose);
* arm_wrestling, every 2nd frame of 280, stitched into 2 slots: slot-frames filled (test_persons);
* both clips through extract's path at stride 3 (backend -> select_persons, M = 2): frames where
  both kept persons are present (before 120 for two_players, all 94 for arm wrestling), where
  someone is (test_extract), and, for arm wrestling, where both kept persons are tall (`TALL`):
  the two wrestlers rather than the bystanders behind them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from grid_luck import move_grids, parse_grid

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
TWO_PLAYERS = "two_players_426x240.mp4"
ARM_WRESTLING = "arm_wrestling_340x256.mp4"
NOSE, L_HIP, R_HIP, L_ANKLE, R_ANKLE = 0, 11, 12, 15, 16
TALL = 0.5  # share of the frame height a wrestler's joints span (`_extract_path`)

# name -> (environment, backend options). numpy's groups: X86_V4 is AVX-512 (SKX), X86_V3 is AVX2 +
# FMA.
SETTINGS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "default": ({}, {}),
    "numpy AVX2 (no AVX-512)": ({"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}, {}),
    "numpy SSE4 (no AVX)": (
        {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
        {},
    ),
    "XNNPACK off": ({}, {"xnnpack": False}),
    "numpy SSE4 + XNNPACK off": (
        {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
        {"xnnpack": False},
    ),
}

# The movenet backend's networks run in torch: its vector paths are oneDNN's and ATen's.
MOVENET_SETTINGS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "default": ({}, {"backend": "movenet"}),
    "torch AVX2": (
        {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
        {"backend": "movenet"},
    ),
    "torch SSE4.1": (
        {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"},
        {"backend": "movenet"},
    ),
    "numpy SSE4 (no AVX)": (
        {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
        {"backend": "movenet"},
    ),
    "two threads": ({"OMP_NUM_THREADS": "2"}, {"backend": "movenet", "threads": 2}),
}

FIGURES = {  # key -> (label, unit)
    "tp_upright": ("two_players: confident persons upright", "%"),
    "tp_jumps": ("two_players: hip jumps > 0.35 box heights", "per mille of steps"),
    "tp_two_first120": ("two_players: frames < 120 with 2 persons", "%"),
    "aw_anyone": ("arm_wrestling (150 fr): frames with someone", "%"),
    "aw_two": ("arm_wrestling (150 fr): frames with 2 persons", "%"),
    "aw_stitched_filled": ("arm_wrestling (stride 2): slot-frames filled, stitched", "%"),
    "ex_tp_both": ("extract two_players: both kept, frames < 120", "%"),
    "ex_aw_both": ("extract arm_wrestling: both kept", "%"),
    "ex_aw_anyone": ("extract arm_wrestling: someone kept", "%"),
    "ex_aw_both_tall": ("extract arm_wrestling: both kept and tall (the wrestlers)", "%"),
}


def _two_players(frames: np.ndarray, poses: list) -> dict[str, float]:
    upright = checked = 0
    for p in poses:
        for keypoints, scores in zip(p.keypoints, p.scores):
            if scores[[NOSE, L_HIP, R_HIP, L_ANKLE, R_ANKLE]].min() > 0.5:
                checked += 1
                hip = keypoints[[L_HIP, R_HIP], 1].mean()
                upright += keypoints[NOSE, 1] < hip < keypoints[[L_ANKLE, R_ANKLE], 1].mean()
    steps = jumps = 0
    for before, after in zip(poses, poses[1:]):
        for row, track_id in enumerate(after.track_ids):
            match = np.flatnonzero(before.track_ids == track_id)
            if (
                len(match)
                and min(
                    after.scores[row, [L_HIP, R_HIP]].min(),
                    before.scores[match[0], [L_HIP, R_HIP]].min(),
                )
                > 0.5
            ):
                height = after.boxes[row, 3] - after.boxes[row, 1]
                moved = np.hypot(
                    *(
                        after.keypoints[row, [L_HIP, R_HIP]].mean(0)
                        - before.keypoints[match[0], [L_HIP, R_HIP]].mean(0)
                    )
                )
                steps += 1
                jumps += moved > 0.35 * height
    return {
        "tp_upright": 100 * upright / max(checked, 1),
        "tp_jumps": 1000 * jumps / max(steps, 1),
        "tp_two_first120": 100 * np.mean([len(p) == 2 for p in poses[:120]]),
    }


def _extract_path(backend: Any, path: Path, full_view: int) -> tuple[float, float, float]:
    """extract's pose stage at stride 3 with M = 2: (both kept persons present before `full_view`,
    someone, both present and tall).

    Tall: the kept person's joints span at least `TALL` of the frame's height. In the arm-wrestling
    close-up the wrestlers do and the bystanders behind them (a third of the height) do not, so
    "both tall" counts the frames where the two kept persons are the two wrestlers."""
    from epam_data.persons import select_persons
    from epam_data.video import probe_video, read_frames

    indices = np.arange(0, probe_video(path).num_frames, 3)
    frames = read_frames(path, indices)
    backend.reset()
    tracks = select_persons(backend.estimate(frames), 2)
    present = tracks.present
    tall = (tracks.boxes[..., 3] - tracks.boxes[..., 1]) >= TALL * frames.shape[1]
    return (
        100 * present.all(0)[indices < full_view].mean(),
        100 * present.any(0).mean(),
        100 * (present & tall).all(0).mean(),
    )


def measure(backend_options: dict[str, Any]) -> dict[str, float]:
    """Every figure of the module docstring, in this process."""
    from epam_data.persons import select_persons
    from epam_data.pose import load_backend
    from epam_data.video import read_frames

    options = dict(backend_options)
    backend = load_backend(options.pop("backend", "blazepose"), **options)
    frames = read_frames(MEDIA / TWO_PLAYERS)
    figures = _two_players(frames, backend.estimate(frames))
    backend.reset()
    poses = backend.estimate(read_frames(MEDIA / ARM_WRESTLING, np.arange(150)))
    counts = np.array([len(p) for p in poses])
    figures.update(aw_anyone=100 * np.mean(counts >= 1), aw_two=100 * np.mean(counts == 2))
    backend.reset()
    poses = backend.estimate(read_frames(MEDIA / ARM_WRESTLING, np.arange(0, 280, 2)))
    figures["aw_stitched_filled"] = 100 * select_persons(poses, 2).present.mean()
    figures["ex_tp_both"], _, _ = _extract_path(backend, MEDIA / TWO_PLAYERS, 120)
    figures["ex_aw_both"], figures["ex_aw_anyone"], figures["ex_aw_both_tall"] = _extract_path(
        backend, MEDIA / ARM_WRESTLING, 10**9
    )
    return {key: round(float(value), 1) for key, value in figures.items()}


def run_setting(
    name: str, settings: dict[str, tuple[dict[str, str], dict[str, Any]]], grid: str
) -> dict:
    """`measure` in a fresh process with the setting's environment (numpy reads it at import)."""
    env_vars, options = settings[name]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_vars}
    done = subprocess.run(
        [sys.executable, __file__, "--measure", "--options", json.dumps(options), "--grid", grid],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"setting {name!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    lines = ["| figure | " + " | ".join(names) + " | spread |", "|---|" + "---|" * (len(names) + 1)]
    for key, (label, unit) in FIGURES.items():
        values = [results[name][key] for name in names]
        lines.append(
            f"| {label} ({unit}) | "
            + " | ".join(f"{v:.1f}" for v in values)
            + f" | {max(values) - min(values):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--measure", action="store_true", help="print this process's figures as JSON"
    )
    parser.add_argument("--options", default="{}", help="backend options (JSON), with --measure")
    parser.add_argument(
        "--settings", nargs="*", help="which settings to run (default: all of the backend's)"
    )
    parser.add_argument(
        "--backend", choices=["blazepose", "movenet"], default="blazepose", help="whose settings"
    )
    parser.add_argument("--json", type=Path, help="also write the figures per setting to this file")
    parser.add_argument(
        "--grid", default="1:0", help="SCALE:SHIFT of the crops' snapping grid (grid_luck.py)"
    )
    args = parser.parse_args()
    if not MEDIA.is_dir():
        raise SystemExit(
            f"{MEDIA} not found: this benchmark needs the shared/ folder beside the checkout"
        )
    if args.measure:
        move_grids(*parse_grid(args.grid))
        print(json.dumps(measure(json.loads(args.options))))
        return
    settings = MOVENET_SETTINGS if args.backend == "movenet" else SETTINGS
    results = {}
    for name in args.settings or list(settings):
        results[name] = run_setting(name, settings, args.grid)
        print(f"{name}: {results[name]}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
