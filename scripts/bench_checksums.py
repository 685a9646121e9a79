"""What the shard checksums cost: the same samples written and read with and without them, one run.

Checksums (docs/shard-schema.md): CRC-32 of the pose arrays and of each JPEG, fletcher32 on the
heatmap chunks. The baseline writes the same samples with `epam_data.shards.h5io.WRITE_CHECKSUMS`
off (shards as written before checksums existed, which readers read unchecked). Samples are
`epam_data.synth` samples at the paper's sizes (48 frames, 256 px RGB JPEGs, joint + limb heatmaps
56 px). Variants are interleaved round by round and each figure is the median, so a shared machine's
drift hits both alike.

    .venv/bin/python scripts/bench_checksums.py [--samples 24] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from epam_data.shards import ShardReader, ShardWriter, h5io
from epam_data.synth import synth_sample


def _samples(count: int) -> list:
    return [
        synth_sample(
            i, i % 4, f"class {i % 4}", frames=48, rgb_size=256, heatmaps=("joint", "limb")
        )
        for i in range(count)
    ]


def _write(samples: list, folder: Path, checksums: bool) -> float:
    h5io.WRITE_CHECKSUMS = checksums
    start = time.process_time()
    with ShardWriter(folder, samples_per_shard=len(samples)) as writer:
        for sample in samples:
            writer.write(sample)
    return time.process_time() - start


def _read(folder: Path, window: np.ndarray | None) -> float:
    start = time.process_time()
    with ShardReader(folder) as reader:
        for sample_id in reader:
            reader.read(sample_id, frames=window)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    samples = _samples(args.samples)
    window = np.arange(0, 48, 3)  # a 16-frame training clip
    times: dict[str, list[float]] = {}
    root = Path(tempfile.mkdtemp())
    try:
        for round_index in range(args.rounds):
            for checksums in (
                (False, True) if round_index % 2 else (True, False)
            ):  # order alternates
                folder = root / f"{round_index}-{checksums}"
                name = "checksums" if checksums else "none"
                times.setdefault(f"write {name}", []).append(_write(samples, folder, checksums))
                times.setdefault(f"read all {name}", []).append(_read(folder, None))
                times.setdefault(f"read clip {name}", []).append(_read(folder, window))
    finally:
        h5io.WRITE_CHECKSUMS = True
        shutil.rmtree(root)
    print(f"{args.samples} samples x {args.rounds} rounds, median CPU ms per sample")
    print("| operation | no checksums | checksums | cost |")
    print("|---|---|---|---|")
    for operation in ("write", "read all", "read clip"):
        base = statistics.median(times[f"{operation} none"]) * 1000 / args.samples
        with_sums = statistics.median(times[f"{operation} checksums"]) * 1000 / args.samples
        print(
            f"| {operation} | {base:.2f} | {with_sums:.2f} | {100 * (with_sums / base - 1):+.1f} % "
            "|"
        )


if __name__ == "__main__":
    main()
