"""Benchmark `epam-data extract` at 1080p: frames/s per stage and end to end, 1 and 2 persons, --jobs 1 and 2.

    python scripts/bench_extract.py [--frames 120] [--clip ../shared/media/two_players_426x240.mp4]

The shared two-player clip is upscaled to 1920x1080 with PyAV (H.264, into a temporary folder); its first 120
frames show both players in full view. "1 person" runs it with --max-persons 1 (the tracker holds one person,
the detector stops once it has one), "2 persons" with --max-persons 2. Stages are timed on one clip in this
process after a warm-up: decode (decord, chunks of 8), pose (detector + landmarks, from the backend's own
timers), crop + JPEG (256 px, quality 90), write (one sample into an HDF5 shard). End to end is
`extract_dataset` on copies of the clip (3 for --jobs 1, 6 for --jobs 2: the same work per process), wall time
including worker start-up, frames/s over all frames; "no decode thread" turns off the chunk prefetch, so the one
process uses one core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from epam_data.crops import crop_frame, encode_jpeg, person_box
from epam_data.datasets import parse_sample_id
from epam_data.extract import ExtractOptions, VideoSpec, extract_dataset, prepare_video
from epam_data.persons import select_persons
from epam_data.pose import load_backend
from epam_data.shards import ShardWriter
from epam_data.video import iter_frames

SHARED_CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "two_players_426x240.mp4"
SAMPLE_ID = "S001C001P001R001A050"  # an NTU mutual action: two persons by default


def upscale(source: Path, target: Path, frames: int, size: tuple[int, int] = (1920, 1080)) -> Path:
    """The first `frames` frames of `source`, resized to `size` (bicubic) and encoded as H.264 (crf 20)."""
    import av

    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream = writer.add_stream("libx264", rate=reader.streams.video[0].average_rate or 30)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for index, frame in enumerate(reader.decode(video=0)):
            if index >= frames:
                break
            big = frame.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="BICUBIC")
            for packet in stream.encode(big):
                writer.mux(packet)
        for packet in stream.encode():
            writer.mux(packet)
    return target


def time_stages(clip: Path, persons: int) -> dict[str, float]:
    """Frames/s of each stage on one clip, in this process."""
    frames = np.concatenate(list(iter_frames(clip, chunk_size=ExtractOptions().chunk_size)))  # warm-up of the decoder and page cache
    start = time.perf_counter()
    count = sum(len(chunk) for chunk in iter_frames(clip, chunk_size=ExtractOptions().chunk_size))
    decode = count / (time.perf_counter() - start)
    backend = load_backend("blazepose", max_persons=persons)
    backend.estimate(frames[:8])  # warm-up
    backend.reset()
    before = (backend.timings.detector_s, backend.timings.landmark_s)
    start = time.perf_counter()
    poses = backend.estimate(frames)
    pose_s = time.perf_counter() - start
    detector_s = backend.timings.detector_s - before[0]
    landmark_s = backend.timings.landmark_s - before[1]
    tracks = select_persons(poses, persons)
    box = person_box(tracks.keypoints, tracks.scores, frames.shape[1:3])
    start = time.perf_counter()
    for frame in frames:
        encode_jpeg(crop_frame(frame, box, 256), 90)
    crop = len(frames) / (time.perf_counter() - start)
    sample = parse_sample_id("ntu60", SAMPLE_ID)
    prepared = prepare_video(VideoSpec(sample, str(clip), clip.name, ExtractOptions(max_persons=persons)))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        with ShardWriter(out) as writer:
            writer.write(prepared)
        write = len(frames) / (time.perf_counter() - start)
    return {"decode": decode, "  detector (amortised; runs while a slot is free)":
            len(frames) / detector_s if detector_s else float("inf"), "  landmarks": len(frames) / landmark_s, "pose (detector + landmarks + tracking)":
            len(frames) / pose_s, "crop + JPEG 256": crop, "write (HDF5 shard)": write,
            "bytes per frame (RGB + pose)": sum(map(len, prepared.rgb)) / len(frames)}


def time_end_to_end(clip: Path, persons: int, jobs: int, copies: int, work: Path, *, prefetch: bool = True) -> float:
    videos = work / f"in_{persons}_{jobs}_{prefetch}"
    videos.mkdir()
    for copy in range(copies):
        shutil.copy(clip, videos / f"S001C001P{copy + 1:03d}R001A050_rgb.mp4")
    start = time.perf_counter()
    report = extract_dataset(videos, work / f"out_{persons}_{jobs}_{prefetch}", "ntu60",
                             options=ExtractOptions(max_persons=persons, prefetch=prefetch), jobs=jobs)
    elapsed = time.perf_counter() - start
    assert report.failed == 0 and report.ok == copies, report
    return report.frames / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, default=SHARED_CLIP)
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other jobs on the machine skew every figure; say how busy it was
    model = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True,
                           check=False).stdout.strip()
    print(f"machine: {model.split(':', 1)[-1].strip()}, {len(os.sched_getaffinity(0))} cores")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        clip = upscale(args.clip, work / "clip_1080p.mp4", args.frames)
        rows: dict[str, dict[int, float]] = {}
        for persons in (1, 2):
            for stage, value in time_stages(clip, persons).items():
                rows.setdefault(stage, {})[persons] = value
            single = time_end_to_end(clip, persons, jobs=1, copies=3, work=work, prefetch=False)
            one = time_end_to_end(clip, persons, jobs=1, copies=3, work=work)
            two = time_end_to_end(clip, persons, jobs=2, copies=6, work=work)
            rows.setdefault("end to end, --jobs 1, no decode thread", {})[persons] = single
            rows.setdefault("end to end, --jobs 1", {})[persons] = one
            rows.setdefault("end to end, --jobs 2 (all processes)", {})[persons] = two
            rows.setdefault("  --jobs 2 / --jobs 1", {})[persons] = two / one
    print(f"\n1920x1080 H.264, {args.frames} frames of {args.clip.name} upscaled; frames/s unless said otherwise; "
          f"load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"| {'stage':<50} | {'1 person':>10} | {'2 persons':>10} |")
    print(f"|{'-' * 52}|{'-' * 12}|{'-' * 12}|")
    for stage, values in rows.items():
        cells = [f"{values[p]:.2f}x" if stage.strip().startswith("--jobs") else f"{values[p]:.1f}" for p in (1, 2)]
        print(f"| {stage:<50} | {cells[0]:>10} | {cells[1]:>10} |")


if __name__ == "__main__":
    main()
