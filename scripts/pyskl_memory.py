"""Peak memory of `epam-data import-pyskl` on a synthetic NTU-like pickle (see pyskl-readme.md).

python pyskl_memory.py DIR [--annotations 5000] [--frames 100] [--persons 2] [--dtype float32]
[--protocol 2] Writes DIR/synthetic.pkl (protocol 2, as mmcv dumps), then runs, each in a fresh
process under /usr/bin/time -v: plain pickle.load (what the format forces), load_pyskl (the
restricted unpickler) and the whole import.
"""

import argparse
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_pickle(
    path: Path, annotations: int, frames: int, persons: int, dtype: str, protocol: int
) -> None:
    rng = np.random.default_rng(0)
    keypoint = (rng.random((persons, frames, 17, 2)) * 1000).astype(dtype)
    score = rng.random((persons, frames, 17)).astype(dtype)
    items = []
    for index in range(annotations):
        name = (
            f"S{index // 3000 % 17 + 1:03d}C{index % 3 + 1:03d}P{index % 40 + 1:03d}"
            f"R{index // 60 % 2 + 1:03d}A{index % 60 + 1:03d}"
        )
        name = f"{name}_{index}"  # unique ids (generic dataset)
        items.append(
            {
                "frame_dir": name,
                "label": index % 60,
                "img_shape": (1080, 1920),
                "original_shape": (1080, 1920),
                "total_frames": frames,
                "keypoint": keypoint.copy(),
                "keypoint_score": score.copy(),
            }
        )
    split = {
        "xsub_train": [a["frame_dir"] for a in items[::2]],
        "xsub_val": [a["frame_dir"] for a in items[1::2]],
    }
    with open(path, "wb") as stream:
        pickle.dump({"split": split, "annotations": items}, stream, protocol=protocol)


def peak(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of a command, from GNU time."""
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command], check=False, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if result.returncode not in (0, 1):
        sys.exit(result.stderr[-2000:])
    if result.stdout.strip().replace(".", "").isdigit():
        print(f"  (RSS once loaded, the memo freed: {float(result.stdout):.0f} MiB)")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return rss / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--annotations", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--persons", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--protocol", type=int, default=2)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    pkl = args.folder / "synthetic.pkl"
    make_pickle(pkl, args.annotations, args.frames, args.persons, args.dtype, args.protocol)
    arrays = (
        args.annotations
        * args.persons
        * args.frames
        * 17
        * 3
        * np.dtype(args.dtype).itemsize
        / 2**20
    )
    print(f"{pkl}: {pkl.stat().st_size / 2**20:.0f} MiB on disk, {arrays:.0f} MiB of arrays")
    python = sys.executable
    runs = {
        "python + imports only": [
            python,
            "-c",
            "import epam_data.cli, epam_data.pyskl, pandas, h5py",
        ],
        "plain pickle.load": [
            python,
            "-c",
            f"import pickle, numpy; pickle.load(open({str(pkl)!r}, 'rb'))",
        ],
        "load_pyskl (restricted)": [
            python,
            "-c",
            (
                "import psutil; from epam_data.pyskl import load_pyskl; "
                f"content = load_pyskl({str(pkl)!r}); "
                "print(psutil.Process().memory_info().rss / 2**20)"
            ),
        ],
        "import-pyskl --jobs 1": [
            python,
            "-c",
            "from epam_data.cli import app; app()",
            "import-pyskl",
            str(pkl),
            "-d",
            "generic",
            "-o",
            str(args.folder / "out"),
        ],
    }
    for name, command in runs.items():
        rss, wall = peak(command)
        print(f"{name:28s} peak RSS {rss:8.0f} MiB   wall {wall:6.1f} s")


if __name__ == "__main__":
    main()
