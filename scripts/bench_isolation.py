"""What running each sample in a supervised worker process costs (epam_data.supervisor), in one run.

`epam-data extract` prepares every sample in a worker process, so that a decoder that aborts,
segfaults or hangs costs one failures.csv row instead of the run. The price: starting the worker
once per run, and sending each prepared sample (JPEG crops, heatmaps) back through a socket.
Measured here on synthetic samples of the sizes extract produces for a 10-second NTU clip at 30 fps
(300 frames, 256 px JPEGs, joint heatmaps), against the same function called in this process; the
pose model, which dominates extract, is not run, so the percentage below is the overhead relative to
extract's measured end-to-end time per frame (BENCHMARKS.md).

    .venv/bin/python scripts/bench_isolation.py [--samples 6] [--fps 24]
"""

from __future__ import annotations

import argparse
import functools
import time

from epam_data.supervisor import supervised_map
from epam_data.synth import synth_sample

FRAMES = 300


# A prepared sample the size of extract's output for a 300-frame clip; importable by name in the
# worker.
make = functools.partial(
    synth_sample, label=0, class_name="a", frames=FRAMES, rgb_size=256, heatmaps=("joint",)
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--fps", type=float, default=24.0, help="extract's end-to-end frames/s")
    args = parser.parse_args()
    start = time.perf_counter()
    for index in range(args.samples):
        make(index)
    direct = time.perf_counter() - start
    start = time.perf_counter()
    lost = []
    results = list(
        supervised_map(
            make, range(args.samples), workers=1, timeout=None, on_lost=lambda *a: lost.append(a)
        )
    )
    assert not lost, lost
    supervised = time.perf_counter() - start
    assert len(results) == args.samples
    overhead = supervised - direct
    extract_s = args.samples * FRAMES / args.fps
    print(
        f"{args.samples} samples of {FRAMES} frames: in this process {direct:.2f} s, in a worker "
        f"{supervised:.2f} s; overhead {overhead:.2f} s = {100 * overhead / extract_s:.1f} % of "
        f"extract's {extract_s:.0f} s for them at {args.fps:g} frames/s"
    )


if __name__ == "__main__":
    main()
