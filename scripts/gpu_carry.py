"""Prepare what `scripts/gpu_check.py` needs on the GPU machine and cannot make there.

    .venv/bin/python scripts/gpu_carry.py [--out gpu_carry] [--frames 120] [--penn]

Why: the GPU machine has no video decoder, no TFLite runtime and no mediapipe wheel, and GPU time
comes in short, rare sessions. This writes, into one git-ignored folder that a device run carries
with the working tree:

* `frames/`: the first `--frames` frames of the shared two-player clip as JPEGs (`--frames DIR` of
  the `blazepose_torch` check);
* `blazepose/`: the two BlazePose networks converted to PyTorch (`epam_data.pose.tflite_torch`'s
  cache files, which `$EPAM_BLAZEPOSE_MODELS` accepts instead of the .tflite files).

* with `--penn`, `penn/`: Penn Action's annotated skeletons as pose-only shards with the official
  manifests (`scripts/bench_penn_action.py --prepare-only`; the GPU machine has neither the
  annotations nor scipy), for `bench_penn_action.py --preset paper` there: 41 MB, carried alone.

It then prints the commands to run there. About 27 MB without `penn/` (the carry limit is 64 MiB).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from epam_data.pose.blazepose import find_model_files
from epam_data.pose.tflite_torch import cache_file_for, load_tflite_module
from epam_data.video import probe_video, read_frames

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "media" / "two_players_426x240.mp4"


def write_frames(clip: Path, folder: Path, count: int) -> int:
    """The clip's first `count` frames as `000001.jpg`... (quality 95); returns how many."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    frames = read_frames(clip, np.arange(min(count, probe_video(clip).num_frames)))
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index + 1:06d}.jpg", quality=95)
    return len(frames)


def write_networks(folder: Path) -> list[Path]:
    """The converted networks of the installed .tflite files, as the cache names them."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path in find_model_files():
        module = load_tflite_module(path, cache_dir=folder)
        written.append(cache_file_for(path.name, module.source["sha256"], folder))
    return written


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_carry")
    parser.add_argument("--frames", type=int, default=120, help="frames of the clip to write")
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--penn", action="store_true", help="also Penn Action's pose shards")
    args = parser.parse_args(argv)
    if not args.clip.is_file():
        raise SystemExit(f"gpu_carry: {args.clip} not found (the shared/ folder beside the repo)")
    shutil.rmtree(args.out / "frames", ignore_errors=True)
    count = write_frames(args.clip, args.out / "frames", args.frames)
    networks = write_networks(args.out / "blazepose")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()) / 2**20
    print(f"{args.out}: {count} frames, {', '.join(p.name for p in networks)} ({size:.1f} MB)")
    name = args.out.name
    print(
        f"on the GPU machine (carry {name}/frames and {name}/blazepose): "
        f"EPAM_BLAZEPOSE_MODELS={name}/blazepose "
        f"PYTHONPATH=. python3 scripts/gpu_check.py --out $OUT --frames {name}/frames"
    )
    if args.penn:
        write_penn(args.out / "penn")
    return args.out


def write_penn(data: Path) -> None:
    """Penn Action's pose-only shards and manifests (`bench_penn_action.py --prepare-only`), and
    the command that trains the paper preset on them on the GPU machine."""
    bench = ROOT / "scripts" / "bench_penn_action.py"
    subprocess.run(
        [sys.executable, str(bench), "--prepare-only", "--data", str(data)], check=True, cwd=ROOT
    )
    name = f"{data.parent.name}/{data.name}"
    print(
        f"on the GPU machine (carry {name} alone): PYTHONPATH=. python3 "
        f"scripts/bench_penn_action.py --preset paper --data {name} --no-import --work $OUT/penn "
        "--device cuda --workers 8"
    )


if __name__ == "__main__":
    main()
