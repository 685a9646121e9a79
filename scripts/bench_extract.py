"""Benchmark `epam-data extract` at 1080p: frames/s per stage and end to end, 1-2 persons, 1-2 jobs.

    python scripts/bench_extract.py [--frames 120] [--clip ../shared/media/two_players_426x240.mp4]

The shared two-player clip is upscaled to 1920x1080 with PyAV (H.264, into a temporary folder); its
first 120 frames show both players in full view. "1 person" runs it with --max-persons 1 (the
tracker holds one person, the detector stops once it has one), "2 persons" with --max-persons 2.
Stages are timed on one clip in this process after a warm-up: decode (decord, chunks of 8), pose
(detector + landmarks, from the backend's own timers), crop + JPEG (256 px, quality 90), write (one
sample into an HDF5 shard). End to end is `extract_dataset` on copies of the clip (3 for --jobs 1, 6
for --jobs 2: the same work per process), wall time including worker start-up, frames/s over all
frames; "no decode thread" turns off the chunk prefetch, so the one process uses one core.
`--decode-height 540` runs every row with extract's `--decode-height` (frames decoded at 540 rows;
the stages then pose and crop the smaller frames).

    python scripts/bench_extract.py --device cuda [--in-flight 1,4,8,16] [--jobs 1,2,4]

measures the way a GPU runs it instead. Decode + pose: `track_videos` keeps K videos in flight
(their detector regions and landmark crops in shared batches, the crops cut on the device), each
decoded ahead by its own thread, over 2 x K copies of the 1080p clip; frames/s, the share of the
wall time in each network, GPU utilisation. Then `extract --in-flight K` end to end (crops and
shards too) with each --jobs count of workers, each given 2 x K copies. Both against TFLite one
video at a time on the CPU. `--device cpu` runs the same rows here.

    python scripts/bench_extract.py --backend mmlab \
        [--pairs rtmdet-tiny:rtmpose-m,faster-rcnn-person:hrnet-w32]
    python scripts/bench_extract.py --backend blazepose+mmpose [--pairs hrnet-w32]

times the OpenMMLab backends instead (`epam_data.pose.mmlab`; needs scripts/install_mmlab.sh,
--light for blazepose+mmpose), on the first --frames frames (default 8 for them) with --threads
torch threads: the detector per frame and the pose model per person box, each at batch 1 and batched
(8 frames, 32 crops), then the backend end to end per frame, fed 1 frame per call (batch 1) and
chunks of 8. Weights are random unless --det-checkpoint / --pose-checkpoint are given (the cost is
the same); random detectors find no people, so end to end they run with thresholds 0 and the best 2
boxes per frame kept (2 persons per frame, as with the two players); the pose rows use BlazePose's
boxes of the two players.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gpu_busy import GpuBusy  # scripts/, beside this file

from epam_data.crops import crop_frame, encode_jpeg, person_box
from epam_data.datasets import parse_sample_id
from epam_data.extract import (
    ExtractOptions,
    VideoSpec,
    _prefetch,
    extract_dataset,
    prepare_video,
)
from epam_data.persons import select_persons
from epam_data.pose import load_backend
from epam_data.shards import ShardWriter
from epam_data.video import iter_frames

if TYPE_CHECKING:
    from epam_data.pose.mmlab import (
        BlazePoseMMPoseBackend,
        MMLabBackend,
        PersonDetector,
        TopDownEstimator,
    )

SHARED_CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "two_players_426x240.mp4"
SAMPLE_ID = "S001C001P001R001A050"  # an NTU mutual action: two persons by default


def upscale(source: Path, target: Path, frames: int, size: tuple[int, int] = (1920, 1080)) -> Path:
    """The first `frames` frames of `source`, resized to `size` (bicubic) and encoded as H.264 (crf
    20)."""
    import av

    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream = writer.add_stream("libx264", rate=reader.streams.video[0].average_rate or 30)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for index, frame in enumerate(reader.decode(video=0)):
            if index >= frames:
                break
            big = frame.reformat(
                width=size[0], height=size[1], format="yuv420p", interpolation="BICUBIC"
            )
            for packet in stream.encode(big):
                writer.mux(packet)
        for packet in stream.encode():
            writer.mux(packet)
    return target


def time_stages(clip: Path, persons: int, decode_height: int | None = None) -> dict[str, float]:
    """Frames/s of each stage on one clip, in this process (frames decoded under
    `decode_height`: pose and crops on the smaller frames, as extract does)."""
    chunk_size = ExtractOptions().chunk_size
    # also warms up the decoder and the page cache
    frames = np.concatenate(
        list(iter_frames(clip, chunk_size=chunk_size, max_height=decode_height))
    )
    start = time.perf_counter()
    count = sum(
        len(chunk) for chunk in iter_frames(clip, chunk_size=chunk_size, max_height=decode_height)
    )
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
    options = ExtractOptions(max_persons=persons, decode_height=decode_height)
    prepared = prepare_video(VideoSpec(sample, str(clip), clip.name, options))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        with ShardWriter(out) as writer:
            writer.write(prepared)
        write = len(frames) / (time.perf_counter() - start)
    return {
        "decode": decode,
        "  detector (amortised; runs while a slot is free)": len(frames) / detector_s
        if detector_s
        else float("inf"),
        "  landmarks": len(frames) / landmark_s,
        "pose (detector + landmarks + tracking)": len(frames) / pose_s,
        "crop + JPEG 256": crop,
        "write (HDF5 shard)": write,
        "bytes per frame (RGB + pose)": sum(map(len, prepared.rgb)) / len(frames),
    }


def time_end_to_end(
    clip: Path,
    persons: int,
    jobs: int,
    copies: int,
    work: Path,
    *,
    prefetch: bool = True,
    in_flight: int = 1,
    backend_options: tuple[tuple[str, str], ...] = (),
    decode_height: int | None = None,
) -> float:
    """Frames/s of `extract_dataset` on `copies` copies of the clip with `jobs` workers, worker
    start-up included."""
    name = f"{persons}_{jobs}_{prefetch}_{in_flight}_{len(backend_options)}_{decode_height}"
    videos = work / f"in_{name}"
    videos.mkdir()
    for copy in range(copies):
        shutil.copy(clip, videos / f"S001C001P{copy + 1:03d}R001A050_rgb.mp4")
    options = ExtractOptions(
        max_persons=persons,
        prefetch=prefetch,
        in_flight=in_flight,
        backend_options=backend_options,
        decode_height=decode_height,
    )
    start = time.perf_counter()
    report = extract_dataset(videos, work / f"out_{name}", "ntu60", options=options, jobs=jobs)
    elapsed = time.perf_counter() - start
    assert report.failed == 0 and report.ok == copies, report
    return report.frames / elapsed


def extract_rows(args: argparse.Namespace, clip: Path, work: Path) -> dict[str, float]:
    """`extract` end to end (crops and shards included), 2 persons: TFLite one video at a time in
    one worker, then `--in-flight` K on the device with `--jobs` 1, 2, ... (how many workers keep
    it fed), each worker given 2 x K copies of the clip."""
    rows = {"tflite, cpu, jobs 1": time_end_to_end(clip, 2, 1, 2, work)}
    device = (("device", args.device), ("runtime", "torch"))
    for jobs in args.jobs:
        for count in args.in_flight:
            copies = 2 * count * jobs
            rows[f"torch, {args.device}, {count} in flight, jobs {jobs}"] = time_end_to_end(
                clip,
                2,
                jobs,
                copies,
                work,
                in_flight=count,
                backend_options=device,
                decode_height=args.decode_height,
            )
    return rows


def _decoded_frames(
    clip: Path, waited: list[float], max_height: int | None = None
) -> Iterator[np.ndarray]:
    """The clip's frames one by one, decoded ahead in a thread (extract's `_prefetch`): one decode
    thread per video in flight, so `--in-flight K` is also K decoders. The seconds spent waiting
    for a chunk add up into waited[0]."""
    chunk_size = ExtractOptions().chunk_size
    chunks = _prefetch(iter_frames(clip, chunk_size=chunk_size, max_height=max_height))
    while True:
        start = time.perf_counter()
        chunk = next(chunks, None)
        waited[0] += time.perf_counter() - start
        if chunk is None:
            return
        yield from chunk


def time_in_flight(
    clip: Path, device: str, in_flight: int, runtime: str, decode_height: int | None = None
) -> dict[str, float]:
    """Decode + pose of 2 x `in_flight` copies of the clip with `track_videos` keeping `in_flight`
    videos in flight (their detector regions and landmark crops batched, the crops cut by torch on
    the device, as on a GPU): frames/s end to end, the share of the wall time in the networks, the
    decode waits and the tracker's own host time per frame."""
    from epam_data.pose.blazepose import track_videos

    backend = load_backend("blazepose", max_persons=2, runtime=runtime, device=device)
    if runtime == "torch":  # the GPU's code path on any device: crops by torch, stages batched
        backend.batch_regions = backend.device_crops = True
    backend.estimate(np.concatenate(list(iter_frames(clip, np.arange(8)))))  # warm-up
    backend.reset()
    before = dict(vars(backend.timings))
    in_networks, waited = _time_network_calls(backend), [0.0]
    videos = [_decoded_frames(clip, waited, decode_height) for _ in range(2 * in_flight)]
    start = time.perf_counter()
    with GpuBusy(device) as busy:
        results = dict(track_videos(backend, videos, in_flight=in_flight))  # numpy out: synced
    wall = time.perf_counter() - start
    spent = {key: value - before[key] for key, value in vars(backend.timings).items()}
    frames = sum(len(poses) for poses in results.values())
    persons = sum(len(p) for poses in results.values() for p in poses)
    return {
        "frames/s": frames / wall,
        "persons/frame": persons / frames,
        "detector % of wall": 100 * spent["detector_s"] / wall,
        "landmarks % of wall": 100 * spent["landmark_s"] / wall,
        "decode wait ms/frame": 1e3 * waited[0] / frames,
        "tracker host ms/frame": 1e3 * (wall - in_networks[0] - waited[0]) / frames,
        "GPU utilisation %": busy.percent,
    }


def _time_network_calls(backend: Any) -> list[float]:
    """A one-item list that the seconds spent in the backend's network calls (upload, crops on
    the device, forward, download) add up into from now on: the rest of the wall time is the
    tracker's own work on the host (less the decode waits), the part a GPU cannot take."""
    networks, total = backend._networks, [0.0]
    # landmarks_in_frames calls landmarks itself: time the outer call only
    for name in ("detect", "landmarks_in_frames" if backend.device_crops else "landmarks"):
        setattr(networks, name, _timed_call(getattr(networks, name), total))
    return total


def _timed_call(call: Callable[..., Any], total: list[float]) -> Callable[..., Any]:
    """`call`, its seconds added to total[0]."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start

    return timed


def main_device(args: argparse.Namespace, clip: Path, work: Path) -> None:
    """`--device`: the decode + pose rows in flight, then extract end to end, each against TFLite
    one video at a time on the CPU."""
    rows = {"tflite, cpu, 1 video at a time": time_in_flight(clip, "cpu", 1, "tflite")}
    for count in args.in_flight:
        rows[f"torch, {args.device}, {count} in flight"] = time_in_flight(
            clip, args.device, count, "torch", args.decode_height
        )
    columns = list(next(iter(rows.values())))
    import torch

    print(
        f"\ndecode + pose, 1080p, max 2 persons, 2 x K copies of the clip ({args.frames} frames); "
        f"torch threads {torch.get_num_threads()}, TFLite 1"
    )
    print("| run | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{values[c]:.1f}" for c in columns) + " |")
    print("\nextract end to end (decode, pose, crops, shards; worker start-up included), frames/s")
    print("| run | frames/s |\n|---|---|")
    for name, rate in extract_rows(args, clip, work).items():
        print(f"| {name} | {rate:.1f} |")


def _seconds_per_item(run, items: int, repeats: int = 1) -> float:
    """Median seconds per item of `run()` over `repeats` timed calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / max(items, 1)


def _lift_rtmdet(head) -> None:
    """An untrained RTMDet predicts empty boxes (dropped) scoring 0.01 for all 80 classes: give its
    boxes 4 strides and its person class 0.5, so that end to end it keeps 2 person boxes per frame
    like a trained one."""
    import torch

    with torch.no_grad():
        for conv in head.rtm_reg:
            conv.bias.fill_(2.0)
        for conv in head.rtm_cls:
            conv.bias[0] = 0.0


def _load_mmlab_model(
    backend: str, pair: str, *, threads: int, det_checkpoint: str, pose_checkpoint: str
) -> tuple[MMLabBackend | BlazePoseMMPoseBackend, str]:
    """The backend for one --pairs entry and its row name. MMLab detectors keep every box
    (thresholds 0) and the best 2 per frame, so that random weights still yield 2 persons."""
    from epam_data.pose.mmlab import BlazePoseMMPoseBackend, MMLabBackend

    if backend != "mmlab":
        model = BlazePoseMMPoseBackend(
            pose_config=pair,
            pose_checkpoint=pose_checkpoint,
            device="cpu",
            threads=threads,
            max_persons=2,
        )
        return model, f"blazepose + {pair}"
    det, pose = pair.split(":")
    model = MMLabBackend(
        det_config=det,
        det_checkpoint=det_checkpoint,
        pose_config=pose,
        pose_checkpoint=pose_checkpoint,
        device="cpu",
        threads=threads,
        det_score_thr=0,
        det_area_thr=0,
        max_detections=2,
    )
    return model, f"{det} + {pose}"


def _time_detector(
    detector: PersonDetector,
    name: str,
    video: np.ndarray,
    rows: dict[str, dict[str, float]],
    *,
    det_checkpoint: str,
) -> None:
    """Adds the detector's seconds per frame at batch 1 and 8 to `rows`; a random RTMDet is lifted
    first so that it keeps boxes like a trained one (the same work downstream)."""
    head = detector.model.bbox_head if hasattr(detector.model, "bbox_head") else None
    if det_checkpoint == "random" and hasattr(head, "rtm_reg"):
        _lift_rtmdet(head)
    for batch, size in (("batch 1", 1), ("batched", 8)):
        detector.batch_size = size
        rows.setdefault(f"{name}: detector, s/frame", {})[batch] = _seconds_per_item(
            partial(detector.detect, video), len(video)
        )


def _time_pose(
    estimator: TopDownEstimator,
    name: str,
    video: np.ndarray,
    boxes: list[np.ndarray],
    rows: dict[str, dict[str, float]],
) -> None:
    """Adds the pose model's seconds per box at batch 1 and 32 to `rows`, on BlazePose's boxes of
    the two players (so every pair is timed on the same crops)."""
    num_boxes = sum(len(frame_boxes) for frame_boxes in boxes)
    for batch, size in (("batch 1", 1), ("batched", 32)):
        estimator.batch_size = size
        rows.setdefault(f"{name}: pose ({num_boxes} boxes), s/box", {})[batch] = _seconds_per_item(
            partial(estimator.estimate, video, boxes), num_boxes
        )


def _time_backend(
    model: MMLabBackend | BlazePoseMMPoseBackend,
    name: str,
    video: np.ndarray,
    rows: dict[str, dict[str, float]],
) -> None:
    """Adds the backend's end-to-end seconds per frame to `rows`, fed 1 frame per call (every model
    at batch 1) and chunks of 8 (detector batch 8, pose batch 32), as extraction feeds it."""
    from epam_data.pose.mmlab import MMLabBackend

    def feed(chunk: int) -> None:
        model.reset()
        for first in range(0, len(video), chunk):
            model.estimate(video[first : first + chunk])

    for batch, chunk in (("batch 1", 1), ("batched", 8)):
        if isinstance(model, MMLabBackend):
            model.detector.batch_size = chunk
        model.estimator.batch_size = 1 if chunk == 1 else 32
        rows.setdefault(f"{name}: end to end, s/frame", {})[batch] = _seconds_per_item(
            partial(feed, chunk), len(video)
        )


def time_mmlab(
    clip: Path,
    backend: str,
    pairs: list[str],
    *,
    frames: int,
    threads: int,
    det_checkpoint: str,
    pose_checkpoint: str,
) -> dict[str, dict[str, float]]:
    """Seconds per frame / per box of the OpenMMLab backends at batch 1 and batched (module
    docstring)."""
    import torch

    torch.set_num_threads(threads)
    video = np.concatenate(list(iter_frames(clip, chunk_size=8)))[:frames]
    boxes = [found.boxes for found in load_backend("blazepose", max_persons=2).estimate(video)]
    rows: dict[str, dict[str, float]] = {}
    for pair in pairs:
        model, name = _load_mmlab_model(
            backend,
            pair,
            threads=threads,
            det_checkpoint=det_checkpoint,
            pose_checkpoint=pose_checkpoint,
        )
        if backend == "mmlab":
            _time_detector(model.detector, name, video, rows, det_checkpoint=det_checkpoint)
        _time_pose(model.estimator, name, video, boxes, rows)
        _time_backend(model, name, video, rows)
        del model
    return rows


def main_mmlab(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()[0]
    model = subprocess.run(
        "lscpu | grep 'Model name'", shell=True, capture_output=True, text=True, check=False
    ).stdout.strip()
    pairs = (
        args.pairs
        or (
            "rtmdet-tiny:rtmpose-m,faster-rcnn-person:hrnet-w32"
            if args.backend == "mmlab"
            else "hrnet-w32"
        )
    ).split(",")
    frames = args.frames if args.frames is not None else 8
    print(
        f"machine: {model.split(':', 1)[-1].strip()}, {len(os.sched_getaffinity(0))} cores; torch "
        "threads "
        f"{args.threads}; weights: detector {args.det_checkpoint}, pose {args.pose_checkpoint}"
    )
    with tempfile.TemporaryDirectory() as folder:
        clip = upscale(args.clip, Path(folder) / "clip_1080p.mp4", frames)
        rows = time_mmlab(
            clip,
            args.backend,
            pairs,
            frames=frames,
            threads=args.threads,
            det_checkpoint=args.det_checkpoint,
            pose_checkpoint=args.pose_checkpoint,
        )
    print(
        f"\n--backend {args.backend}: 1920x1080 H.264, {frames} frames of {args.clip.name} "
        "upscaled; median of 1 timed run after a warm-up; load average before / after: "
        f"{load_before:.2f} / {os.getloadavg()[0]:.2f}"
    )
    print(f"| {'model, stage':<60} | {'batch 1':>9} | {'batched':>9} | {'speed-up':>8} |")
    print(f"|{'-' * 62}|{'-' * 11}|{'-' * 11}|{'-' * 10}|")
    for stage, values in rows.items():
        print(
            f"| {stage:<60} | {values['batch 1']:>9.3f} | {values['batched']:>9.3f} | "
            f"{values['batch 1'] / values['batched']:>7.2f}x |"
        )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, default=SHARED_CLIP)
    parser.add_argument(
        "--frames", type=int, default=None, help="default: 120 (blazepose), 8 (the others)"
    )
    parser.add_argument(
        "--backend", default="blazepose", choices=["blazepose", "mmlab", "blazepose+mmpose"]
    )
    parser.add_argument(
        "--pairs", default=None, help="mmlab: det:pose,...; blazepose+mmpose: pose,..."
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (mmlab backends)")
    parser.add_argument("--det-checkpoint", default="random")
    parser.add_argument("--pose-checkpoint", default="random")
    parser.add_argument(
        "--device", default=None, help="blazepose: decode + pose in flight on cpu / cuda instead"
    )
    parser.add_argument(
        "--in-flight",
        type=lambda text: [int(k) for k in text.split(",")],
        default=[1, 4, 8],
        help="--device: videos in flight, e.g. 1,4,8",
    )
    parser.add_argument(
        "--jobs",
        type=lambda text: [int(j) for j in text.split(",")],
        default=[1],
        help="--device: extract worker processes, e.g. 1,2,4",
    )
    parser.add_argument(
        "--decode-height", type=int, default=None, help="blazepose: extract --decode-height"
    )
    return parser.parse_args()


def main() -> None:
    args = _parse_args()
    if args.backend != "blazepose":
        main_mmlab(args)
        return
    args.frames = 120 if args.frames is None else args.frames
    load_before = os.getloadavg()[
        0
    ]  # other jobs on the machine skew every figure; say how busy it was
    model = subprocess.run(
        "lscpu | grep 'Model name'", shell=True, capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"machine: {model.split(':', 1)[-1].strip()}, {len(os.sched_getaffinity(0))} cores")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        clip = upscale(args.clip, work / "clip_1080p.mp4", args.frames)
        if args.device is not None:
            main_device(args, clip, work)
            return
        rows: dict[str, dict[int, float]] = {}
        for persons in (1, 2):
            for stage, value in time_stages(clip, persons, args.decode_height).items():
                rows.setdefault(stage, {})[persons] = value
            end_to_end = partial(time_end_to_end, clip, persons, decode_height=args.decode_height)
            single = end_to_end(jobs=1, copies=3, work=work, prefetch=False)
            one = end_to_end(jobs=1, copies=3, work=work)
            two = end_to_end(jobs=2, copies=6, work=work)
            rows.setdefault("end to end, --jobs 1, no decode thread", {})[persons] = single
            rows.setdefault("end to end, --jobs 1", {})[persons] = one
            rows.setdefault("end to end, --jobs 2 (all processes)", {})[persons] = two
            rows.setdefault("  --jobs 2 / --jobs 1", {})[persons] = two / one
    print(
        f"\n1920x1080 H.264, {args.frames} frames of {args.clip.name} upscaled; frames/s unless "
        f"said otherwise; load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}"
    )
    print(f"| {'stage':<50} | {'1 person':>10} | {'2 persons':>10} |")
    print(f"|{'-' * 52}|{'-' * 12}|{'-' * 12}|")
    for stage, values in rows.items():
        cells = [
            f"{values[p]:.2f}x" if stage.strip().startswith("--jobs") else f"{values[p]:.1f}"
            for p in (1, 2)
        ]
        print(f"| {stage:<50} | {cells[0]:>10} | {cells[1]:>10} |")


if __name__ == "__main__":
    main()
