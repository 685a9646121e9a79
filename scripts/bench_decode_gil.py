"""Does decoding in threads leave the tracker's thread alone? The GIL question behind `extract
--in-flight K`, which decodes each video in flight with a thread of the tracking process rather
than in worker processes (BENCHMARKS.md, "Decoding in threads").

    .venv/bin/python scripts/bench_decode_gil.py [--frames 200] [--threads 1,2,4] [--target 1000]

The shared two-player clip is upscaled to 1920x1080 H.264 (as in bench_extract.py). Then:
* one decoder (`epam_data.video.iter_frames`, chunks of 16): frames/s and CPU seconds per frame
  (decord's FFmpeg uses more than the calling thread);
* the tracker's side: a pure-Python loop in the main thread, pinned to core 0, alone and while N
  decode threads run pinned to the other cores. If decoding held the GIL, the loop would slow
  down to about 1 / (N + 1) of its speed; at about 1.0 the threads cost the tracker nothing and
  processes would gain nothing over them;
* what a target rate needs: decode threads (target / one decoder's frames/s) and cores (target x
  CPU seconds per frame).
Linux only (per-thread CPU affinity); needs at least 2 usable cores.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_extract import upscale

from epam_data.video import iter_frames

CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "two_players_426x240.mp4"
SPIN_S = 2.0


def decode_all(clip: Path, frames: int) -> int:
    """Decode the clip's first `frames` frames as extract does; the count decoded."""
    return sum(len(chunk) for chunk in iter_frames(clip, np.arange(frames), chunk_size=16))


def one_decoder(clip: Path, frames: int) -> tuple[float, float]:
    """(frames/s, CPU seconds per frame) of one decoder in this process."""
    decode_all(clip, 16)  # warm-up: page cache, decoder start
    wall, cpu = time.perf_counter(), time.process_time()
    count = decode_all(clip, frames)
    return count / (time.perf_counter() - wall), (time.process_time() - cpu) / count


def python_rate(seconds: float = SPIN_S) -> float:
    """Million loop steps a second of a pure-Python loop (holds the GIL throughout)."""
    steps, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(1000):
            steps += 1
    return steps / seconds / 1e6


def decode_until(clip: Path, frames: int, stop: threading.Event) -> None:
    """Decode the clip over and over until `stop`."""
    while not stop.is_set():
        decode_all(clip, frames)


def _on_cores(work: Callable[[threading.Event], None], cores: set[int]) -> Callable[..., None]:
    """`work`, run by a thread that first pins itself to `cores`."""

    def pinned(stop: threading.Event) -> None:
        os.sched_setaffinity(threading.get_native_id(), cores)  # FFmpeg's threads inherit it
        work(stop)

    return pinned


def rate_beside(
    work: Callable[[threading.Event], None], threads: int, seconds: float = SPIN_S
) -> float:
    """`python_rate` of this thread, pinned to its first usable core, while `threads` threads
    run `work(stop)` on the other cores; as a share of its rate alone."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        raise SystemExit(f"needs 2 usable cores, this process may use {len(usable)}")
    os.sched_setaffinity(threading.get_native_id(), {usable[0]})
    alone = python_rate(seconds)
    stop = threading.Event()
    target = _on_cores(work, set(usable[1:]))
    workers = [threading.Thread(target=target, args=(stop,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # the workers under way
    try:
        return python_rate(seconds) / alone
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        os.sched_setaffinity(threading.get_native_id(), set(usable))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", default="1,2,4", help="decode threads beside the loop")
    parser.add_argument("--target", type=float, default=1000.0, help="frames/s to plan for")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        clip = upscale(args.clip, Path(folder) / "clip_1080p.mp4", args.frames)
        fps, cpu_per_frame = one_decoder(clip, args.frames)
        print(f"1080p H.264, {args.frames} frames; {len(os.sched_getaffinity(0))} usable cores")
        print(f"one decoder: {fps:.0f} frames/s, {1e3 * cpu_per_frame:.1f} CPU ms a frame")
        print("\n| decode threads (other cores) | Python loop in the main thread, x alone |")
        print("|---|---|")
        decoding = functools.partial(decode_until, clip, args.frames)
        for threads in (int(t) for t in args.threads.split(",")):
            share = rate_beside(decoding, threads)
            print(f"| {threads} | {share:.2f} (1 / {threads + 1} if it held the GIL) |")
    print(
        f"\n{args.target:.0f} frames/s needs about {args.target / fps:.1f} decode threads "
        f"and {args.target * cpu_per_frame:.1f} cores for decoding alone"
    )


if __name__ == "__main__":
    main()
