"""The extract pipeline: raw videos -> tracked people -> COCO-17 skeletons + RGB crops (+ heatmaps)
-> HDF5 shards.

The unit of work is `prepare_video(spec) -> PreparedSample`, a function of one sample
(docs/design.md section 3): it decodes the sample's frames in chunks
(`epam_data.video.iter_frames`), runs the pose backend over them with tracking carried across
chunks, keeps the best M persons (`epam_data.persons`), cuts every kept frame to one square box
around them (`epam_data.crops`) and optionally renders uint8 heatmap volumes on that crop
(`epam_data.heatmaps`). It never touches the output folder, so it runs unchanged in supervised
worker processes (`--jobs`, `epam_data.supervisor`: a crashing decoder costs one sample), on a Dask
or Ray cluster (`--dask`, `--ray`) or in one `--part i/n` job of a cluster array. Only
`extract_dataset`, in the main process, writes: results stream back as they complete into the single
`ShardWriter`, so memory holds a few samples, not the run. That loop, `run_samples`, takes the
per-sample function as an argument: `epam-data import-pyskl` (`epam_data.pyskl`) runs its own
per-sample function through it, with the same resume, `--part`, failure and progress rules, and uses
the same crop box, crops and heatmaps (`sample_box`, `crop_jpegs`, `heatmap_volumes`).

What PYSKL / MMAction2 get wrong and we do not (docs/prior-art.md 2.1, 3.1, 6): all frames of a
video held in RAM (we hold at most one chunk, plus the kept frames of one sample when they fit
`frame_budget_bytes`, else the frames are decoded a second time for the crops); identities swapping
between frames (tracked slots); a crash on a video with no person (flagged "no_person" in the index,
see below); one pickle written at the end (shards are committed as they fill, and a re-run skips
finished samples).

Policy for a sample in which nobody is found: it is written like any other (zero keypoints with
score 0, RGB frames of the whole scene: `crops.whole_frame_box`) with status "no_person" in
index.csv. It is finished work (re-running would find nobody again), so a re-run skips it,
`epam-data splits` leaves it out of the manifests (they keep status "ok" only), and the summary
counts it apart from failures. Samples that cannot be prepared (undecodable files, frame ranges past
the end of the video) go to failures.csv and are retried by a re-run.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epam_data.crops import (
    CROP_MIN_SCORE,
    CROP_PADDING,
    crop_frame,
    encode_jpeg,
    person_box,
    whole_frame_box,
)
from epam_data.datasets import Rejected, Sample, normalize_name, scan_generic, scan_names
from epam_data.datasets.base import VIDEO_EXTENSIONS
from epam_data.errors import EpamError, VideoDecodeError
from epam_data.heatmaps import VOLUME_KINDS, CropBox, crop_keypoints, render, resize_keypoints
from epam_data.persons import default_max_persons, select_persons
from epam_data.pose import load_backend
from epam_data.runloop import (
    DEFAULT_SAMPLE_TIMEOUT,
    ExtractReport,
    Outcome,
    StageTimes,
    check_jobs,
    run_samples,
    run_task,
    write_rejected,
)
from epam_data.shards import DEFAULT_MAX_SHARD_BYTES, PreparedSample, write_dataset_json
from epam_data.splits import read_names
from epam_data.video import VideoInfo, decoded_hw, iter_frames, probe_video

__all__ = [
    "ExtractOptions",
    "VideoSpec",
    "SamplePlan",
    "check_decoded",
    "crop_jpegs",
    "decoded_chunks",
    "extract_dataset",
    "find_videos",
    "finish_sample",
    "heatmap_volumes",
    "list_samples",
    "plan_sample",
    "prepare_video",
    "run_spec",
    "sample_box",
    "start_tracking",
    "timed_volumes",
    "worker_backend",
]

MIN_DECODE_HEIGHT = 64  # --decode-height below this leaves the pose models too little to see
CROP_THREADS = 2  # threads cutting and encoding the RGB crops in the main process (crop_jpegs)
RUNTIME_BACKEND_OPTIONS = (
    "device",
    "threads",
    "det_batch",
    "pose_batch",
)  # not recorded in dataset.json


@dataclass(frozen=True)
class ExtractOptions:
    """Everything that shapes a prepared sample; recorded in dataset.json, and a resumed run must
    match it.

    max_persons: M for every sample; None: `persons.default_max_persons` (2 for NTU mutual actions,
    else 1). rgb_size: side of the stored JPEG crops in pixels; None stores no RGB. heatmaps: kinds
    of uint8 volumes to store ("joint", "limb"), rendered with `heatmap_sigma` on a heatmap_size x
    heatmap_size canvas that shows the crop box. detect_every: how often the tracker looks for a
    missing person. chunk_size and frame_budget_bytes only bound memory (decoded frames per chunk;
    kept frames of one sample held for the crops, beyond which they are decoded again) and do not
    change the result; nor does prefetch (decode the next chunk in a thread while the pose model
    runs on this one), nor in_flight (blazepose: how many videos one worker tracks at once, their
    person crops in one network batch, `epam_data.in_flight`). decode_height: videos taller than
    this are decoded scaled down to it (`video.iter_frames`); poses, boxes and the crop box are
    still in the video's own pixels, the RGB crops are cut from the smaller frames.
    """

    backend: str = "blazepose"
    max_persons: int | None = None
    rgb_size: int | None = 256
    jpeg_quality: int = 90
    frame_stride: int = 1
    heatmaps: tuple[str, ...] = ()
    heatmap_size: int = 56
    heatmap_sigma: float = 0.6
    detect_every: int = 10
    chunk_size: int = (
        8  # 8 frames of 1080p = 50 MB; 64-frame chunks decoded 2x slower here (page faults)
    )
    frame_budget_bytes: int = 768 << 20
    prefetch: bool = True
    in_flight: int = 1  # videos one worker tracks together (`epam_data.in_flight`)
    decode_height: int | None = None  # decode taller videos at this many rows (e.g. 540)
    # (name, value) pairs for the backend's constructor (`epam_data.pose.load_backend`), e.g.
    # mmlab's det_config, det_score_thr, device, with the types the CLI parsed. dataset.json
    # records all but RUNTIME_BACKEND_OPTIONS (where the models run, not which models run: a run
    # resumed elsewhere may change them), as text, so that folders made before compare equal.
    backend_options: tuple[tuple[str, str | float], ...] = ()

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.heatmaps if kind not in VOLUME_KINDS]
        if unknown:
            raise EpamError(
                f"--heatmaps {','.join(self.heatmaps)}: unknown kind {unknown[0]!r}; use joint, "
                "limb or joint,limb"
            )
        checks = {
            "--frame-stride": self.frame_stride,
            "--heatmap-size": self.heatmap_size,
            "--max-persons": 1 if self.max_persons is None else self.max_persons,
            "--in-flight": self.in_flight,
            "--rgb-size": 16 if self.rgb_size is None else self.rgb_size - 15,
        }
        for name, value in checks.items():
            if value < 1:
                raise EpamError(f"{name} must be at least {16 if name == '--rgb-size' else 1}")
        if self.in_flight > 1 and self.backend != "blazepose":
            raise EpamError(
                f"--in-flight {self.in_flight}: only the blazepose backend tracks videos together"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise EpamError(f"--jpeg-quality must be in 1..100 (Pillow), got {self.jpeg_quality}")
        if self.decode_height is not None and self.decode_height < MIN_DECODE_HEIGHT:
            raise EpamError(
                f"--decode-height must be at least {MIN_DECODE_HEIGHT}, got {self.decode_height}"
            )

    def dataset_options(self, model_ids: dict[str, str]) -> dict[str, Any]:
        """The options dataset.json records and compares (memory bounds are left out: they change
        nothing)."""
        return {
            "pose_backend": self.backend,
            "pose_models": dict(model_ids),
            "detect_every": self.detect_every,
            "max_persons": "default (2 for NTU mutual actions, else 1)"
            if self.max_persons is None
            else self.max_persons,
            "rgb_size": self.rgb_size,
            "jpeg_quality": self.jpeg_quality if self.rgb_size else None,
            "frame_stride": self.frame_stride,
            "crop": {"padding": CROP_PADDING, "min_score": CROP_MIN_SCORE, "square": True},
            "heatmaps": list(self.heatmaps),
            "heatmap_size": self.heatmap_size if self.heatmaps else None,
            "heatmap_sigma": self.heatmap_sigma if self.heatmaps else None,
            "heatmap_quantisation": "uint8 = round(value * 255)" if self.heatmaps else None,
            **({"decode_height": self.decode_height} if self.decode_height else {}),
            **self._recorded_backend_options(),
        }

    def _recorded_backend_options(self) -> dict[str, Any]:
        """{"pose_backend_options": {...}} without the runtime-only ones; {} when none (older
        dataset.json files)."""
        recorded = {
            name: str(value)
            for name, value in self.backend_options
            if name not in RUNTIME_BACKEND_OPTIONS
        }
        return {"pose_backend_options": recorded} if recorded else {}


@dataclass(frozen=True)
class VideoSpec:
    """One sample to prepare: its metadata, the video file (absolute), its path relative to the
    input root and, for datasets that ship person boxes (Penn Action), the annotated person's box
    (x1, y1, x2, y2) in each frame, so the backend starts its track on that person rather than on
    whoever its detector finds first (a catcher, an umpire)."""

    sample: Sample
    path: str
    source: str
    options: ExtractOptions
    person_boxes: np.ndarray | None = None  # [frames, 4], zeros where a frame has no box


# --- the samples of a run -------------------------------------------------------------------------


def find_videos(input_dir: Path) -> list[Path]:
    """Video files and frame folders under `input_dir`, recursively, sorted together by path.

    A video file is found by its extension (case-insensitive; hidden files skipped). A folder that
    directly holds image files (`epam_data.frame_folder`: Penn Action's `frames/0001/000001.jpg`)
    is one sample, like a video file: it is not searched further, and folders whose path has a
    hidden part (`.cache/`, `.ipynb_checkpoints/`) are never taken as frame folders. A link to a
    frame folder is a sample, as a link to a video file is; links to other folders are not
    followed, as before. A link with a video's name that leads nowhere (broken, or a loop of links)
    is listed too, so that `list_samples` can say why it is left out instead of skipping it
    silently.
    """
    from epam_data.frame_folder import is_frame_folder

    found: list[Path] = []
    for folder, subfolders, names in os.walk(input_dir):
        here = Path(folder)
        hidden = any(part.startswith(".") for part in here.relative_to(input_dir).parts)
        if here != input_dir and not hidden and is_frame_folder(here):
            found.append(here)
            subfolders.clear()  # its images are its frames, not more samples
            continue
        if not hidden:
            found.extend(
                here / name
                for name in subfolders
                if not name.startswith(".")
                and (here / name).is_symlink()
                and is_frame_folder(here / name)
            )
        found.extend(
            here / name
            for name in names
            if not name.startswith(".")
            and Path(name).suffix.lower() in VIDEO_EXTENSIONS
            and ((here / name).is_file() or (here / name).is_symlink())
        )
    return sorted(found)


def _dead_links(videos: list[Path], input_dir: Path) -> tuple[list[Path], list[Rejected]]:
    """(the videos that can be opened, a rejected row for each link that leads nowhere)."""
    alive, dead = [], []
    for video in videos:
        if video.is_symlink() and not video.exists():
            reason = "a link that leads to no file (broken, or a loop of links)"
            dead.append(Rejected(str(video.relative_to(input_dir)), reason))
        else:
            alive.append(video)
    return alive, dead


def _generic_samples(
    input_dir: Path, list_file: Path | None
) -> tuple[list[tuple[Sample, Path]], list[Rejected]]:
    """The samples of a generic dataset (its `path,label` list or class folders), each with its
    video file, and the rejected rows: a list file must not reach files outside `input_dir`."""
    scan = scan_generic(list_file if list_file is not None else input_dir)
    rejected: list[Rejected] = list(scan.rejected)
    found: list[tuple[Sample, Path]] = []
    root = input_dir.resolve()
    for sample in scan.samples:
        video = input_dir / sample.path
        if not video.resolve().is_relative_to(root):  # `../secret.mp4` in a list file
            reason = f"leaves {input_dir}; paths must stay inside it"
            rejected.append(Rejected(sample.path, reason))
            continue
        found.append((sample, video))
    return found, rejected


def _videos_by_name(
    videos: list[Path], input_dir: Path, dataset: str
) -> tuple[dict[str, Path], list[Rejected]]:
    """{name: video} with the first video of each name, and a rejected row for each later one:
    samples are parsed from names, so two files of one name would make two samples of one id.
    pku_mmd compares names without their extension (`normalize_name`)."""
    by_name: dict[str, Path] = {}
    rejected: list[Rejected] = []
    for video in videos:
        key = normalize_name(video.name) if dataset == "pku_mmd" else video.name
        if key in by_name:
            rejected.append(
                Rejected(
                    str(video.relative_to(input_dir)), f"same name as {by_name[key]}; left out"
                )
            )
            continue
        by_name[key] = video
    return by_name, rejected


def _named_samples(
    input_dir: Path, dataset: str, labels_dir: Path | None, list_file: Path | None
) -> tuple[list[tuple[Sample, Path]], list[Rejected]]:
    """The samples of a dataset whose file names say what they are (ntu60, toyota, pku_mmd, ...),
    each with its video file, and the rejected rows, in the order they were found."""
    videos, rejected = _dead_links(find_videos(input_dir), input_dir)
    if list_file is not None:
        wanted = {normalize_name(name) for name in read_names(list_file)}
        videos = [video for video in videos if normalize_name(video.name) in wanted]
    by_name, duplicates = _videos_by_name(videos, input_dir, dataset)
    rejected.extend(duplicates)
    scan = scan_names(dataset, list(by_name), labels_dir=labels_dir)
    rejected.extend(scan.rejected)
    stems = {normalize_name(name): path for name, path in by_name.items()}
    found: list[tuple[Sample, Path]] = []
    for sample in scan.samples:
        video = (
            by_name.get(sample.path)
            or stems.get(sample.video or sample.sample_id)
            or stems.get(normalize_name(sample.sample_id))
        )
        if video is None:
            rejected.append(
                Rejected(sample.sample_id, f"no video file found for {sample.sample_id}")
            )
            continue
        found.append((sample, video))
    return found, rejected


def _unique_samples(
    found: list[tuple[Sample, Path]], input_dir: Path
) -> tuple[list[tuple[Sample, Path]], list[Rejected]]:
    """`found` sorted by sample_id, keeping the first of each id (a rejected row for the others),
    with each sample's path made relative to `input_dir` as the shards record it."""
    rejected: list[Rejected] = []
    seen: dict[str, Path] = {}
    unique = []
    for sample, video in sorted(found, key=lambda item: item[0].sample_id):
        if sample.sample_id in seen:
            rejected.append(
                Rejected(
                    str(video), f"same sample id {sample.sample_id!r} as {seen[sample.sample_id]}"
                )
            )
            continue
        seen[sample.sample_id] = video
        unique.append(
            (dataclasses.replace(sample, path=video.relative_to(input_dir).as_posix()), video)
        )
    return unique, rejected


def list_samples(
    input_dir: Path, dataset: str, *, labels_dir: Path | None = None, list_file: Path | None = None
) -> tuple[list[tuple[Sample, Path]], list[Rejected]]:
    """The samples of a run, each with its video file, and the names that could not be used, with
    why.

    ntu60 / ntu120 / toyota: the video files under `input_dir`, parsed by name. pku_mmd: the videos
    `NNNN-V.*` cut into clips by their label files in `labels_dir`. generic: the `path,label` CSV
    `list_file` (paths relative to `input_dir`) or, without it, one sub-folder per class. For the
    other datasets `list_file` restricts the run to the names it lists (one per line). Samples come
    back sorted by sample_id.
    """
    if not input_dir.is_dir():
        raise EpamError(f"{input_dir}: not a folder of videos")
    if dataset == "generic":
        found, rejected = _generic_samples(input_dir, list_file)
    else:
        found, rejected = _named_samples(input_dir, dataset, labels_dir, list_file)
    unique, duplicates = _unique_samples(found, input_dir)
    return unique, rejected + duplicates


# --- one sample -----------------------------------------------------------------------------------

_local = threading.local()  # per worker process, and per thread where a Dask worker runs several


def worker_backend(options: ExtractOptions, max_persons: int) -> Any:
    """This process's (thread's) pose backend tracking `max_persons` persons, made on first use and
    kept: it holds tflite interpreters, which can be neither pickled nor shared between threads."""
    cache = getattr(_local, "backends", None)
    if cache is None:
        cache = _local.backends = {}
    key = (options.backend, max_persons, options.detect_every, options.backend_options)
    if key not in cache:
        cache[key] = load_backend(
            options.backend,
            max_persons=max_persons,
            detect_every=options.detect_every,
            **dict(options.backend_options),
        )
    return cache[key]


def _frame_indices(spec: VideoSpec, num_frames: int) -> np.ndarray:
    sample = spec.sample
    start = sample.start_frame if sample.start_frame is not None else 0
    end = sample.end_frame if sample.end_frame is not None else num_frames - 1
    if end >= num_frames or start > end:
        raise VideoDecodeError(
            f"{spec.path}: clip {sample.sample_id} asks for frames {start}-{end} (0-based, "
            f"inclusive) but the video has {num_frames} frames (0-{num_frames - 1}); check the "
            "label file against the video"
        )
    return np.arange(start, end + 1, spec.options.frame_stride, dtype=np.int64)


def _timed(chunks: Iterator[np.ndarray], times: StageTimes) -> Iterator[np.ndarray]:
    """The chunks of a decoder, with the time spent decoding them added to `times.decode`."""
    while True:
        start = time.perf_counter()
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        finally:
            times.decode += time.perf_counter() - start
        yield chunk


def _prefetch(chunks: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """The chunks of a decoder, decoded up to `depth` chunks ahead in a thread, so that decoding
    (decord releases the GIL) overlaps the pose model of the previous chunk. Errors reach the caller
    at the chunk where they happened; a caller that stops early stops the thread."""
    import queue

    done, stop = object(), threading.Event()
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)

    def decode() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        ready.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(done)
        except BaseException as err:  # noqa: BLE001 (handed to the consumer, which raises it)
            ready.put(err)

    thread = threading.Thread(target=decode, name="epam-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def sample_box(
    keypoints: np.ndarray, scores: np.ndarray, frame_hw: tuple[int, int]
) -> tuple[CropBox, bool]:
    """The RGB crop box of a sample (`crops.person_box` over its kept persons) and whether anyone
    was seen in it; the whole frame (`crops.whole_frame_box`) when nobody was. scores: float16 [M,
    T, 17], as the shard stores them, so that a sample read back from a shard gives the same
    box."""
    box = person_box(keypoints, scores, frame_hw)
    return (box, True) if box is not None else (whole_frame_box(frame_hw), False)


def crop_jpegs(chunks: Iterable[np.ndarray], box: CropBox, options: ExtractOptions) -> list[bytes]:
    """JPEG bytes of every frame of `chunks` (uint8 [t, H, W, 3] each) cut to `box` and resized to
    rgb_size.

    In the main process (--jobs 1) two threads share the frames of each chunk: Pillow releases the
    GIL while it resizes and encodes, and the second core is otherwise idle once the pose model is
    done with the sample (measured 1.7-1.85x on this stage). Worker processes keep to one thread, as
    everything else in them.
    """
    assert options.rgb_size is not None
    size, quality = options.rgb_size, options.jpeg_quality

    def one(frame: np.ndarray) -> bytes:
        return encode_jpeg(crop_frame(frame, box, size), quality)

    if getattr(_local, "limited", False) or (os.cpu_count() or 1) < 2:
        return [one(frame) for chunk in chunks for frame in chunk]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=CROP_THREADS) as pool:
        return [
            jpeg for chunk in chunks for jpeg in pool.map(one, chunk)
        ]  # one chunk in memory at a time


def heatmap_volumes(
    keypoints: np.ndarray, scores: np.ndarray, box: CropBox, options: ExtractOptions
) -> dict[str, np.ndarray]:
    """uint8 [T, C, S, S] volumes rendered on the crop canvas: keypoints mapped into the box, then
    to S x S.

    Quantised as round(value * 255): values lie in [0, 1], so the error is at most 1/510 per pixel.
    """
    size = options.heatmap_size
    canvas = resize_keypoints(crop_keypoints(keypoints, box), box.canvas_hw, (size, size))
    volumes = {}
    for kind in options.heatmaps:
        volume = render(canvas, scores, (size, size), kind=kind, sigma=options.heatmap_sigma)
        volumes[f"{kind}_heatmaps"] = np.rint(np.clip(volume, 0.0, 1.0) * 255.0).astype(np.uint8)
    return volumes


def _label_boxes(dataset: str, labels_dir: Path | None, sample: Sample) -> np.ndarray | None:
    """The annotated person's boxes of a Penn Action clip (its label file), else None."""
    if dataset != "penn_action" or labels_dir is None:
        return None
    from epam_data.datasets.penn_action import read_penn_label

    return read_penn_label(labels_dir / f"{sample.sample_id}.mat").boxes[0]


def _start_from_label_box(
    backend: Any, boxes: np.ndarray | None, first_frame: int, scale: tuple[float, float]
) -> None:
    """Start the backend's track on the annotated box of the first decoded frame, where the
    dataset gives one and the backend can (`BlazePoseBackend.start_tracks`); the box is moved
    onto the decoded frames (`scale`: x, y)."""
    if boxes is None or not hasattr(backend, "start_tracks") or first_frame >= len(boxes):
        return
    box = np.asarray(boxes[first_frame], np.float64) * np.tile(scale, 2)
    if box[2] > box[0] and box[3] > box[1]:
        backend.start_tracks(box[None])


def _decode_scale(frame_hw: tuple[int, int], max_height: int | None) -> tuple[float, float]:
    """(x, y) factors from a video's pixels to those of its frames decoded under `max_height`."""
    rows, columns = decoded_hw(frame_hw, max_height)
    return columns / frame_hw[1], rows / frame_hw[0]


def _in_video_pixels(poses: list[Any], scale: tuple[float, float]) -> list[Any]:
    """The backend's poses, found on frames decoded at `scale` (x, y), in the video's own pixels,
    as every sample stores them whatever the decoding."""
    if scale == (1.0, 1.0):
        return poses
    factor = np.array(scale, np.float32)
    return [
        dataclasses.replace(
            pose,
            keypoints=pose.keypoints / factor,
            boxes=np.concatenate([pose.boxes[:, :4] / np.tile(factor, 2), pose.boxes[:, 4:]], 1),
        )
        for pose in poses
    ]


def _on_decoded_frames(box: CropBox, scale: tuple[float, float]) -> CropBox:
    """The crop box on frames decoded at `scale` (x, y): corners rounded to whole pixels, square;
    within half a decoded pixel of `box` scaled."""
    if scale == (1.0, 1.0):
        return box
    side = max(1, round((box.x1 - box.x0) * scale[1]))
    x0, y0 = round(box.x0 * scale[0]), round(box.y0 * scale[1])
    return CropBox(x0, y0, x0 + side, y0 + side)


def _probe(spec: VideoSpec, times: StageTimes) -> VideoInfo:
    """The video's `probe_video` info (frames, size, fps), its time counted as decoding."""
    start = time.perf_counter()
    info = probe_video(spec.path)
    times.decode += time.perf_counter() - start
    return info


def _holds_frames(options: ExtractOptions, num_frames: int, frame_hw: tuple[int, int]) -> bool:
    """Whether the decoded frames are kept for the crops (they fit `frame_budget_bytes`) rather
    than decoded a second time; never without RGB."""
    height, width = decoded_hw(frame_hw, options.decode_height)
    return (
        options.rgb_size is not None
        and num_frames * height * width * 3 <= options.frame_budget_bytes
    )


def decoded_chunks(spec: VideoSpec, indices: np.ndarray, times: StageTimes) -> Iterator[np.ndarray]:
    """The sample's frames `indices`, chunk by chunk (decoded a chunk ahead in a thread with
    `prefetch`), the time waited for them added to `times.decode`."""
    decoded = _decode(spec, indices)
    return _timed(_prefetch(decoded) if spec.options.prefetch else decoded, times)


def _decode(spec: VideoSpec, indices: np.ndarray) -> Iterator[np.ndarray]:
    """The sample's frames `indices` in chunks, at the size its options ask for."""
    options = spec.options
    return iter_frames(
        spec.path, indices, chunk_size=options.chunk_size, max_height=options.decode_height
    )


def check_decoded(spec: VideoSpec, decoded: int, asked: int) -> None:
    """Raise when the decoder gave fewer frames than asked (its contract broken)."""
    if decoded != asked:
        raise EpamError(f"{spec.path}: decoded {decoded} of {asked} frames")


def _estimate_poses(
    spec: VideoSpec, backend: Any, indices: np.ndarray, hold: bool, times: StageTimes
) -> tuple[list[Any], list[np.ndarray]]:
    """(one pose result per frame of `indices`, the decoded chunks when `hold` else []): the one
    pass that decodes the sample chunk by chunk, tracking carried across chunks by `backend`."""
    held: list[np.ndarray] = []
    poses = []
    for chunk in decoded_chunks(spec, indices, times):
        start = time.perf_counter()
        poses.extend(backend.estimate(chunk))
        times.pose += time.perf_counter() - start
        if hold:
            held.append(chunk)
    check_decoded(spec, len(poses), len(indices))
    return poses, held


def _rgb_jpegs(
    spec: VideoSpec,
    plan: SamplePlan,
    held: list[np.ndarray] | None,
    box: CropBox,
    times: StageTimes,
) -> list[bytes] | None:
    """The sample's RGB crops (`crop_jpegs`, the box moved onto the decoded frames) from the
    `held` chunks, or from a second decode when they were not kept (None); None without
    rgb_size."""
    options = spec.options
    if options.rgb_size is None:
        return None
    frames = held if held is not None else _timed(_decode(spec, plan.indices), times)
    start = time.perf_counter()
    jpegs = crop_jpegs(frames, _on_decoded_frames(box, plan.scale), options)
    times.crop += time.perf_counter() - start
    return jpegs


def timed_volumes(
    keypoints: np.ndarray,
    scores: np.ndarray,
    box: CropBox,
    options: ExtractOptions,
    times: StageTimes,
) -> dict[str, np.ndarray]:
    """`heatmap_volumes` of the stored (float16) scores, {} without heatmaps; the time is added to
    `times.heatmaps` either way."""
    start = time.perf_counter()
    volumes = (
        heatmap_volumes(keypoints, scores.astype(np.float32), box, options)
        if options.heatmaps
        else {}
    )
    times.heatmaps += time.perf_counter() - start
    return volumes


def _sample_extra(options: ExtractOptions, max_persons: int) -> dict[str, Any]:
    """The per-sample attributes the shard records beside the arrays."""
    extra: dict[str, Any] = {"max_persons": max_persons, "frame_stride": options.frame_stride}
    if options.heatmaps:
        extra.update(heatmap_size=options.heatmap_size, heatmap_sigma=options.heatmap_sigma)
    return extra


@dataclass(frozen=True)
class SamplePlan:
    """What a sample's preparation knows before any frame is decoded (`plan_sample`)."""

    info: VideoInfo
    indices: np.ndarray  # the frames to decode
    max_persons: int
    hold: bool  # keep the decoded frames for the crops (`_holds_frames`)
    scale: tuple[float, float] = (1.0, 1.0)  # x, y: video pixels -> decoded pixels


def plan_sample(spec: VideoSpec, times: StageTimes) -> SamplePlan:
    """The sample's video probed, its frames and M chosen. Raises VideoDecodeError (or another
    EpamError) for a video that cannot be read or is shorter than its clip."""
    info = _probe(spec, times)
    indices = _frame_indices(spec, info.num_frames)
    max_persons = default_max_persons(spec.sample, spec.options.max_persons)
    hold = _holds_frames(spec.options, len(indices), info.frame_hw)
    scale = _decode_scale(info.frame_hw, spec.options.decode_height)
    return SamplePlan(info, indices, max_persons, hold, scale)


def start_tracking(backend: Any, spec: VideoSpec, plan: SamplePlan) -> None:
    """Ready a reset backend for the sample: a track started on the annotated person where the
    dataset gives boxes (`_start_from_label_box`)."""
    first = int(plan.indices[0]) if len(plan.indices) else 0
    _start_from_label_box(backend, spec.person_boxes, first, plan.scale)


def prepare_video(spec: VideoSpec, *, times: StageTimes | None = None) -> PreparedSample:
    """Decode, pose, persons, crops and heatmaps of one sample (module docstring). Raises
    VideoDecodeError (or another EpamError) when the sample cannot be prepared; `times` collects
    seconds per stage."""
    times = times if times is not None else StageTimes()
    plan = plan_sample(spec, times)
    backend = worker_backend(spec.options, plan.max_persons)
    backend.reset()
    start_tracking(backend, spec, plan)
    poses, held = _estimate_poses(spec, backend, plan.indices, plan.hold, times)
    return finish_sample(spec, plan, poses, held if plan.hold else None, times)


def finish_sample(
    spec: VideoSpec,
    plan: SamplePlan,
    poses: list[Any],
    held: list[np.ndarray] | None,
    times: StageTimes,
) -> PreparedSample:
    """The sample from its per-frame poses: the best M persons, the crop box, the RGB crops (from
    the `held` chunks, else decoded again) and the heatmaps."""
    options, sample = spec.options, spec.sample
    tracks = select_persons(_in_video_pixels(poses, plan.scale), plan.max_persons)
    scores = tracks.scores.astype(np.float16)
    box, seen = sample_box(tracks.keypoints, scores, plan.info.frame_hw)
    status = "ok" if seen and tracks.present.any() else "no_person"
    jpegs = _rgb_jpegs(spec, plan, held, box, times)
    if held is not None:
        held.clear()
    volumes = timed_volumes(tracks.keypoints, scores, box, options, times)
    return PreparedSample(
        sample=sample,
        keypoints=tracks.keypoints,
        scores=scores,
        boxes=tracks.boxes,
        frame_indices=plan.indices,
        total_frames=plan.info.num_frames,
        original_hw=plan.info.frame_hw,
        fps=plan.info.fps,
        rgb=jpegs,
        crop_box=(box.x0, box.y0, box.x1, box.y1),
        num_person_raw=tracks.num_person_raw,
        source=spec.source,
        status=status,
        extra=_sample_extra(options, plan.max_persons),
        **volumes,
    )


def run_spec(spec: VideoSpec) -> Outcome:
    """`prepare_video` that never raises (`run_task`)."""
    return run_task(prepare_video, spec)


def _grouping(options: ExtractOptions) -> dict[str, Any]:
    """run_samples' prepare_group and in_flight: videos tracked `in_flight` at a time
    (`epam_data.in_flight`), or {} for one at a time."""
    if options.in_flight <= 1:
        return {}
    from epam_data.in_flight import prepare_videos  # it imports this module

    return {"prepare_group": prepare_videos, "in_flight": options.in_flight}


def _write_dataset_json(
    out_dir: Path, dataset: str, options: ExtractOptions, info: dict[str, Any] | None
) -> None:
    """dataset.json with the backend's model ids, which only a loaded backend knows; loading it
    here also fails early, in one line, when the backend cannot run on this machine."""
    backend = load_backend(
        options.backend,
        max_persons=1,  # fails early, in one line, if it cannot run here
        **dict(options.backend_options),
    )
    write_dataset_json(out_dir, dataset, options.dataset_options(backend.model_ids), info=info)
    del backend


def _video_specs(
    samples: list[tuple[Sample, Path]],
    dataset: str,
    options: ExtractOptions,
    labels_dir: Path | None,
) -> list[VideoSpec]:
    """The VideoSpec of each sample, with the annotated person's boxes where the dataset has
    them (`_label_boxes`)."""
    return [
        VideoSpec(
            sample, str(video), sample.path, options, _label_boxes(dataset, labels_dir, sample)
        )
        for sample, video in samples
    ]


def extract_dataset(
    input_dir: str | Path,
    out_dir: str | Path,
    dataset: str,
    *,
    options: ExtractOptions = ExtractOptions(),
    jobs: int = 1,
    part: tuple[int, int] | None = None,
    samples_per_shard: int = 256,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    sample_timeout: float | None = DEFAULT_SAMPLE_TIMEOUT,
    labels_dir: Path | None = None,
    list_file: Path | None = None,
    dask_address: str | None = None,
    ray_address: str | None = None,
    limit: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Outcome], None] | None = None,
    info: dict[str, Any] | None = None,
) -> ExtractReport:
    """Prepare every sample of `input_dir` not yet in `out_dir` (see the module docstring). Safe to
    re-run.

    part: (i, n), 0-based, as `ShardWriter` takes it (the CLI's `--part` is 1-based). limit: only
    the first `limit` samples (in sample-id order, before the part split). on_start(pending) and
    on_result(outcome) let the caller draw progress. Raises EpamError for problems with the run
    itself (bad folder, options that differ from those the folder was made with); problems with
    single samples end up in the report.
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    check_jobs(jobs)
    started = time.perf_counter()
    samples, rejected = list_samples(input_dir, dataset, labels_dir=labels_dir, list_file=list_file)
    report = ExtractReport(out_dir=out_dir, listed=len(samples), rejected=rejected)
    if limit is not None:
        samples = samples[:limit]
    _write_dataset_json(out_dir, dataset, options, info)
    write_rejected(out_dir, rejected)
    specs = _video_specs(samples, dataset, options, labels_dir)
    run_samples(
        specs,
        prepare_video,
        out_dir,
        report,
        jobs=jobs,
        part=part,
        samples_per_shard=samples_per_shard,
        max_shard_bytes=max_shard_bytes,
        sample_timeout=sample_timeout,
        dask_address=dask_address,
        ray_address=ray_address,
        on_start=on_start,
        on_result=on_result,
        **_grouping(options),
    )
    report.elapsed_s = time.perf_counter() - started
    return report
