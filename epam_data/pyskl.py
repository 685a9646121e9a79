"""PYSKL / MMAction2 annotation pickles in and out: `import-pyskl` turns one into shards,
`export-pyskl` writes one.

The format (docs/prior-art.md 2.4): one pickle `{"split": {name: [frame_dir, ...]}, "annotations":
[dict, ...]}`; each annotation holds `frame_dir` (the sample id), `label` (0-based), `img_shape` and
`original_shape` (H, W), `total_frames`, `keypoint` [M, T, 17, 2] in `img_shape` pixels and
`keypoint_score` [M, T, 17]. The compressed variant of PYSKL's `--compress` (docs/prior-art.md 2.1)
holds `keypoint` [N, 17, 3] (x, y, score) and `frame_inds` [N] instead: it is supported and expanded
to [M, T, ...] with zeros where a frame has fewer skeletons (MMAction2's DecompressPose with
squeeze=False, so that frame t stays frame t of the video for the RGB crops).

A pickle can run any code while it loads, so the file is read by `RestrictedUnpickler`, which admits
only the globals that dicts of numpy arrays need (`ALLOWED_GLOBALS`, for pickles written by numpy
1.x and 2.x) and refuses every other one before anything is called. The whole pickle has to be
loaded (the format has no index); nothing is copied after that: each worker receives its own
annotation only, and the run loop is extract's (`run_samples`), with its resume, `--part`,
failures.csv and summary. With `--videos`, each sample's RGB frames are cut from its video with
extract's crop box, crops and JPEG code, after the keypoints are rescaled to the video's size where
it differs from `img_shape` (MMAction2's MMDecode rule; NTU users often hold 960x540 re-encodes of
the 1080p videos).

`export_pyskl` writes a prepared folder back in that format, readable by PYSKL and MMAction2 (numpy
1.x or 2.x).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import pickle
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from epam_data.atomic import write_atomic
from epam_data.datasets import DATASET_NAMES, Rejected, Sample, normalize_name, parse_sample_id
from epam_data.datasets.base import VIDEO_EXTENSIONS
from epam_data.errors import EpamError, NameParseError, VideoDecodeError
from epam_data.extract import ExtractOptions, crop_jpegs, find_videos, sample_box, timed_volumes
from epam_data.heatmaps import CropBox, resize_keypoints
from epam_data.protocols import Protocol, class_names, load_protocols
from epam_data.runloop import (
    ExtractReport,
    Outcome,
    StageTimes,
    check_jobs,
    run_samples,
    write_rejected,
)
from epam_data.shards import PreparedSample, ShardReader, write_dataset_json
from epam_data.splits import META_COLUMNS, SplitReport, manifest_frame, write_manifests
from epam_data.video import VideoInfo, iter_frames, probe_video

__all__ = [
    "ALLOWED_GLOBALS",
    "AnnotationSpec",
    "ExportReport",
    "ImportReport",
    "PysklFile",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "dense_pose",
    "export_pyskl",
    "import_pyskl",
    "load_pyskl",
    "prepare_annotation",
]

NUM_JOINTS = 17
# Split names become file names `manifests/<name>.csv`; names without a protocol part get this one.
DEFAULT_PROTOCOL = "pyskl"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(_[A-Za-z0-9.-]+)*$")


class UnsafePickleError(EpamError):
    """A pickle asked for a global outside the allow-list: it is not a plain annotation file, and
    was not run."""


# --- reading a pickle without running it ----------------------------------------------------------


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for `_codecs.encode`, which protocol 0-2 pickles call to rebuild bytes (numpy's
    array data among them) from a latin-1 string; only that use is admitted, not the other
    codecs."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(
            f"_codecs.encode with encoding {encoding!r}: only latin1 (bytes in protocol 0-2 "
            "pickles) is admitted"
        )
    return text.encode("latin1")


# The most a pickle's own call may allocate: numpy writes `_reconstruct(ndarray, (0,), b"b")` and
# `bytes()`, then fills the array from bytes that are in the file; a forged 1.4 KB file asked
# `_reconstruct` for 12.7 GiB.
MAX_CALL_BYTES = 1 << 20


def _bounded(call: Any, size_of: Any) -> Any:
    """`call`, refusing arguments that would allocate more than MAX_CALL_BYTES before any data."""

    def bounded(*args: Any) -> Any:
        size = size_of(*args)
        if size > MAX_CALL_BYTES:
            raise UnsafePickleError(
                f"the pickle asks {getattr(call, '__name__', call)} for {size} bytes that are not "
                "in the file; it is damaged or forged, and nothing was allocated"
            )
        return call(*args)

    return bounded


def _reconstruct_bytes(subtype: Any, shape: Any = (0,), dtype: Any = b"b", *_: Any) -> int:
    try:
        return int(np.prod(np.asarray(shape, dtype=np.float64))) * np.dtype("b").itemsize
    except (TypeError, ValueError):
        return MAX_CALL_BYTES + 1


def _bytes_size(*args: Any) -> int:
    return int(args[0]) if args and isinstance(args[0], int) else 0


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy callables that array, dtype and scalar pickles name, under the module names of
    numpy 1.x (`numpy.core`) and 2.x (`numpy._core`) alike, taken from numpy's own reductions so
    that no deprecated module is imported and either numpy reads either file."""
    reconstruct = _bounded(np.zeros(1).__reduce__()[0], _reconstruct_bytes)  # ._reconstruct
    frombuffer = np.zeros(1).__reduce_ex__(5)[
        0
    ]  # numpy.(_)core.numeric._frombuffer (protocol 5 arrays)
    scalar = np.float32(0).__reduce__()[0]  # numpy.(_)core.multiarray.scalar
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


# Everything an annotation pickle may name. Plain dicts, lists, tuples, strings and numbers need no
# global.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    (
        "_codecs",
        "encode",
    ): _latin1_encode,  # bytes in protocol 0-2 pickles (mmcv dumps with protocol 2)
    # empty bytes in protocol 0-2 pickles (an array with no element); bytes(N) would allocate N
    ("builtins", "bytes"): _bounded(bytes, _bytes_size),
    ("__builtin__", "bytes"): _bounded(bytes, _bytes_size),
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `ALLOWED_GLOBALS`. Every function or class a pickle calls is
    first looked up here, so refusing the lookup refuses the call: a hostile file stops at its first
    global, before any code of it runs. Persistent ids (which would need a hook) are refused by
    pickle itself."""

    def __init__(self, file: Any, *, source: str = "the pickle"):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused to load {module}.{name}: an annotation pickle holds only "
                "dicts, lists, strings, numbers and numpy arrays, and this one asks for something "
                "else, which could run code. Nothing in it was run. Re-create the file from plain "
                "types, or check where it came from"
            ) from None


@dataclass
class PysklFile:
    """An annotation pickle's content: `split` {name: [frame_dir, ...]} and `annotations` (dicts, as
    loaded)."""

    path: Path
    split: dict[str, list[str]]
    annotations: list[dict[str, Any]]


def load_pyskl(path: str | Path) -> PysklFile:
    """Load an annotation pickle with `RestrictedUnpickler` and check its top-level layout.

    The file is read through a buffered stream (never whole into memory), so the peak is the loaded
    content plus one array's bytes. Raises UnsafePickleError for a refused global, EpamError for a
    file that is not one.
    """
    path = Path(path)
    try:
        with open(path, "rb", buffering=1 << 20) as stream:
            content = RestrictedUnpickler(stream, source=str(path)).load()
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise EpamError(f"{path}: no such file") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        OSError,
    ) as err:
        raise EpamError(
            f"{path}: cannot be read as a pickle ({type(err).__name__}: {err}); is it a PYSKL / "
            "MMAction2 annotation file, complete?"
        ) from None
    if isinstance(content, list):  # MMAction2's per-split files: a bare list of annotations
        content = {"split": {}, "annotations": content}
    if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
        kind = (
            type(content).__name__
            if not isinstance(content, dict)
            else f"dict with keys {sorted(content)[:8]}"
        )
        raise EpamError(
            f"{path}: expected {{'split': {{...}}, 'annotations': [...]}} (PYSKL / MMAction2 "
            f"format), found a {kind}"
        )
    split = content.get("split") or {}
    if not isinstance(split, dict) or not all(
        isinstance(ids, (list, tuple)) for ids in split.values()
    ):
        raise EpamError(f"{path}: 'split' must map split names to lists of frame_dir ids")
    return PysklFile(
        path,
        {str(name): [str(i) for i in ids] for name, ids in split.items()},
        content["annotations"],
    )


# --- one annotation -> our arrays -----------------------------------------------------------------


def _hw(value: Any) -> tuple[int, int] | None:
    """(H, W) from an img_shape-like value, or None when absent or not two positive integers."""
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (height, width) if height > 0 and width > 0 else None


def _dense_from_compressed(
    annotation: Mapping[str, Any], where: str
) -> tuple[np.ndarray, np.ndarray]:
    """`keypoint` [N, V, 3] (or [N, V, 2] + `keypoint_score` [N, V]) listed by `frame_inds` [N] ->
    [M, T, V, 2] and [M, T, V], T = total_frames. Slot j of frame t holds the j-th skeleton listed
    for t, as MMAction2's DecompressPose fills them; frames are not squeezed, so frame t stays frame
    t of the video."""
    points = np.asarray(annotation["keypoint"])
    frame_inds = np.asarray(annotation["frame_inds"]).astype(np.int64).reshape(-1)
    if "anno_inds" in annotation:
        chosen = np.asarray(annotation["anno_inds"]).astype(np.int64)
        points, frame_inds = points[chosen], frame_inds[chosen]
    if points.ndim != 3 or points.shape[0] != frame_inds.shape[0] or points.shape[-1] not in (2, 3):
        raise EpamError(
            f"{where}: compressed keypoint must be [N, V, 3] with one frame_inds entry per "
            f"skeleton, got keypoint {points.shape} and frame_inds {frame_inds.shape}"
        )
    if points.shape[-1] == 3:
        scores = points[..., 2]
    elif "keypoint_score" in annotation:
        scores = np.asarray(annotation["keypoint_score"])
    else:
        scores = np.ones(points.shape[:2], np.float32)
    total = int(annotation.get("total_frames", int(frame_inds.max()) + 1 if frame_inds.size else 0))
    if frame_inds.size and (frame_inds.min() < 0 or frame_inds.max() >= total):
        raise EpamError(
            f"{where}: frame_inds run {frame_inds.min()}..{frame_inds.max()}, outside "
            f"0..{total - 1} (total_frames)"
        )
    counts = np.bincount(frame_inds, minlength=max(total, 1))
    order = np.argsort(frame_inds, kind="stable")
    starts = np.cumsum(counts) - counts
    slots = np.empty_like(frame_inds)
    slots[order] = np.arange(frame_inds.size) - starts[frame_inds[order]]
    keypoints = np.zeros((max(int(counts.max()), 1), total, points.shape[1], 2), np.float32)
    dense_scores = np.zeros(keypoints.shape[:3], np.float32)
    keypoints[slots, frame_inds] = points[..., :2]
    dense_scores[slots, frame_inds] = scores
    return keypoints, dense_scores


def dense_pose(
    annotation: Mapping[str, Any], where: str = "annotation"
) -> tuple[np.ndarray, np.ndarray]:
    """An annotation's poses as new arrays: keypoints float32 [M, T, 17, 2] (img_shape pixels),
    scores float32 [M, T, 17]; M >= 1. Joints that are NaN or inf become missing (0, score 0), as
    the shards have it.

    Without `keypoint_score` every joint not at (0, 0) gets score 1 (PYSKL uses ones). Raises
    EpamError for 3D or non-COCO-17 skeletons and for T that disagrees with total_frames (PYSKL
    asserts they are equal).
    """
    if "keypoint" not in annotation:
        raise EpamError(
            f"{where}: no 'keypoint' in the annotation (Kinetics-style annotations that keep poses "
            "in other files through raw_file are not supported)"
        )
    if "frame_inds" in annotation:
        keypoints, scores = _dense_from_compressed(annotation, where)
    else:
        points = np.asarray(annotation["keypoint"])
        has_score = "keypoint_score" in annotation
        if points.ndim != 4 or points.shape[-1] != 2:
            hint = (
                " (3D skeletons: EPAM-Net needs the 2D COCO-17 files, e.g. ntu60_hrnet.pkl)"
                if points.ndim == 4 and points.shape[-1] == 3
                else ""
            )
            raise EpamError(f"{where}: keypoint must be 2D [M, T, 17, 2], got {points.shape}{hint}")
        keypoints = points.astype(np.float32)
        scores = (
            np.asarray(annotation["keypoint_score"]).astype(np.float32)
            if has_score
            else keypoints.any(-1).astype(np.float32)
        )
        if scores.shape != keypoints.shape[:3]:
            raise EpamError(
                f"{where}: keypoint_score {scores.shape} does not match keypoint {keypoints.shape}"
            )
        if keypoints.shape[0] == 0:
            keypoints = np.zeros((1, *keypoints.shape[1:]), np.float32)
            scores = np.zeros(keypoints.shape[:3], np.float32)
    if keypoints.shape[2] != NUM_JOINTS:
        raise EpamError(
            f"{where}: {keypoints.shape[2]} joints per skeleton; EPAM-Net uses COCO-17 (the HRNet "
            "2D files), not Kinect's 25"
        )
    frames = keypoints.shape[1]
    total = annotation.get("total_frames", frames)
    if frames == 0:
        raise EpamError(f"{where}: no frames (keypoint {keypoints.shape})")
    if int(total) != frames:
        raise EpamError(
            f"{where}: {frames} frames of keypoints but total_frames is {total}; PYSKL requires "
            "them equal"
        )
    broken = ~np.isfinite(keypoints).all(-1) | ~np.isfinite(scores)
    keypoints[broken], scores[broken] = 0, 0
    return keypoints, scores


def _keep_persons(
    keypoints: np.ndarray, scores: np.ndarray, max_persons: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The `max_persons` slots with the highest total score, in their original order (all when None
    or fewer)."""
    if max_persons is None or keypoints.shape[0] <= max_persons:
        return keypoints, scores
    best = np.sort(np.argsort(-scores.sum(axis=(1, 2)), kind="stable")[:max_persons])
    return keypoints[best], scores[best]


def _joint_boxes(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """float32 [M, T, 5]: the tight box of each person's joints scored > 0 and their mean score; 0
    where none is. PYSKL stores no person boxes; this is what the shards' `boxes` hold for imported
    samples."""
    seen = scores > 0
    any_seen = seen.any(-1)
    low = np.where(seen[..., None], keypoints, np.inf).min(2)
    high = np.where(seen[..., None], keypoints, -np.inf).max(2)
    mean = np.where(any_seen, (scores * seen).sum(-1) / np.maximum(seen.sum(-1), 1), 0)
    boxes = np.concatenate([low, high, mean[..., None]], axis=-1)
    boxes[~any_seen] = 0
    return boxes.astype(np.float32)


# --- one sample -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotationSpec:
    """One sample to import: its metadata, its own annotation (workers receive this, never the whole
    pickle), the video to crop RGB from (absolute path; "" when RGB is not imported) and the
    options. `missing` says why the sample's video cannot be found: the sample then fails in the run
    loop like a video that cannot be decoded."""

    sample: Sample
    source: str
    annotation: dict[str, Any]
    video: str
    options: ExtractOptions
    missing: str = ""


def _video_frames(
    spec: AnnotationSpec, frames: int, times: StageTimes
) -> tuple[VideoInfo, np.ndarray]:
    """The video's VideoInfo and the frame indices 0..frames-1 (it must hold that many frames)."""
    start = time.perf_counter()
    info = probe_video(spec.video)
    times.decode += time.perf_counter() - start
    if info.num_frames < frames:
        raise VideoDecodeError(
            f"{spec.video}: {info.num_frames} frames, but the annotation of "
            f"{spec.sample.sample_id} "
            f"has {frames}; it is not the video its poses were made from, or it was cut short"
        )
    return info, np.arange(frames, dtype=np.int64)


def _crops_and_volumes(
    spec: AnnotationSpec,
    indices: np.ndarray,
    keypoints: np.ndarray,
    scores16: np.ndarray,
    box: CropBox,
    times: StageTimes,
) -> tuple[list[bytes] | None, dict[str, np.ndarray]]:
    """Extract's two slow stages on an imported sample, each timed into `times`: the RGB crops
    (None without a video or with RGB off) and the heatmap volumes ({} with heatmaps off)."""
    options = spec.options
    jpegs = None
    if spec.video and options.rgb_size is not None:
        chunks = iter_frames(spec.video, indices, chunk_size=options.chunk_size)
        start = time.perf_counter()
        jpegs = crop_jpegs(chunks, box, options)
        times.crop += time.perf_counter() - start
    return jpegs, timed_volumes(keypoints, scores16, box, options, times)


def prepare_annotation(spec: AnnotationSpec, *, times: StageTimes | None = None) -> PreparedSample:
    """One annotation -> a PreparedSample: dense poses (`dense_pose`), the persons kept, keypoints
    rescaled to the video when its size differs from img_shape, then extract's crop box, RGB crops
    and heatmaps. Raises EpamError when the annotation or its video cannot be used (the run loop
    records it in failures.csv)."""
    times = times if times is not None else StageTimes()
    if spec.missing:
        raise VideoDecodeError(spec.missing)
    options, annotation = spec.options, spec.annotation
    where = f"annotation {spec.sample.sample_id}"
    img_hw = _hw(annotation.get("img_shape")) or _hw(annotation.get("original_shape"))
    if img_hw is None:
        raise EpamError(f"{where}: no img_shape (H, W); the keypoints' pixel frame is unknown")
    keypoints, scores = dense_pose(annotation, where)
    raw_persons = int(annotation.get("num_person_raw", keypoints.shape[0]))
    keypoints, scores = _keep_persons(keypoints, scores, options.max_persons)
    frames = keypoints.shape[1]
    total_frames, frame_hw, fps, indices = frames, img_hw, 0.0, np.arange(frames, dtype=np.int64)
    if spec.video:
        info, indices = _video_frames(spec, frames, times)
        total_frames, frame_hw, fps = info.num_frames, info.frame_hw, info.fps
        if (
            frame_hw != img_hw
        ):  # MMDecode's rule: x * W'/W, y * H'/H; zeros (missing joints) stay zeros
            keypoints = resize_keypoints(keypoints, img_hw, frame_hw).astype(np.float32)
    scores16 = scores.astype(np.float16)
    box, seen = sample_box(keypoints, scores16, frame_hw)
    jpegs, volumes = _crops_and_volumes(spec, indices, keypoints, scores16, box, times)
    extra: dict[str, Any] = {
        "max_persons": keypoints.shape[0],
        "frame_stride": 1,
        "pyskl_img_shape": list(img_hw),
    }
    if options.heatmaps:
        extra.update(heatmap_size=options.heatmap_size, heatmap_sigma=options.heatmap_sigma)
    return PreparedSample(
        sample=spec.sample,
        keypoints=keypoints,
        scores=scores16,
        boxes=_joint_boxes(keypoints, scores),
        frame_indices=indices,
        total_frames=total_frames,
        original_hw=frame_hw,
        fps=fps,
        rgb=jpegs,
        crop_box=(box.x0, box.y0, box.x1, box.y1),
        num_person_raw=raw_persons,
        source=spec.source,
        status="ok" if seen else "no_person",
        extra=extra,
        **volumes,
    )


# --- the run --------------------------------------------------------------------------------------


@dataclass
class ImportReport(ExtractReport):
    """An ExtractReport (the same summary) plus the manifests written: name -> (ids in the pickle's
    split, rows)."""

    manifests: dict[str, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _class_names(dataset: str, protocol: str) -> tuple[str, ...] | None:
    """Class names by label for a protocol of `dataset` (its own list where we know the protocol),
    or None."""
    if dataset == "generic":
        return None
    if protocol in load_protocols(dataset):
        return class_names(dataset, protocol)
    return class_names(dataset)


def _sample_of(annotation: Mapping[str, Any], dataset: str) -> Sample:
    """Our Sample for an annotation: metadata from the dataset adapter when frame_dir parses, label
    from the pickle (it wins where they differ: relabelled pickles exist), label_name from the
    dataset's class list."""
    frame_dir = str(annotation["frame_dir"])
    sample_id = frame_dir.strip("/").replace("/", "__")
    raw_label = annotation.get("label")
    label = None if raw_label is None else int(raw_label)
    if label is not None and label < 0:
        raise ValueError(f"negative label {label}")
    names = _class_names(dataset, "")
    label_name = (
        names[label]
        if names is not None and label is not None and label < len(names)
        else ("" if label is None else str(label))
    )
    try:
        parsed = parse_sample_id(dataset, sample_id)
    except NameParseError:
        return Sample(
            sample_id=sample_id,
            dataset=dataset,
            label=label,
            label_name=label_name,
            video=sample_id,
        )
    return Sample(**{**parsed.as_row(), "label": label, "label_name": label_name, "path": ""})


def _video_index(videos_dir: Path) -> dict[str, list[Path]]:
    """Video files under `videos_dir` by the names an annotation's frame_dir may give: the file name
    without its extension (and NTU's `_rgb`), and the path relative to `videos_dir` without its
    extension."""
    index: dict[str, list[Path]] = collections.defaultdict(list)
    for video in find_videos(videos_dir):
        relative = video.relative_to(videos_dir).with_suffix("").as_posix()
        for key in {normalize_name(video.name), relative, relative.replace("/", "__")}:
            index[key].append(video)
    return index


def _find_video(index: Mapping[str, list[Path]], frame_dir: str) -> tuple[Path | None, str]:
    """The one video of a frame_dir, or None and why."""
    candidates = index.get(frame_dir.strip("/")) or index.get(normalize_name(frame_dir)) or []
    unique = sorted(set(candidates))
    if len(unique) == 1:
        return unique[0], ""
    if not unique:
        return (
            None,
            f"no video named {frame_dir}.* ({', '.join(VIDEO_EXTENSIONS[:4])}, ...) or "
            f"{frame_dir}_rgb.*",
        )
    return (
        None,
        f"{len(unique)} videos match {frame_dir}: {', '.join(str(path) for path in unique[:3])}",
    )


def _dataset_options(options: ExtractOptions, pkl: Path, videos: bool) -> dict[str, Any]:
    """What dataset.json records and a resumed import must match: extract's options minus the pose
    backend's, plus the pickle's name (another pickle into the same folder is refused)."""
    recorded = options.dataset_options({"annotations": pkl.name})
    recorded.pop("detect_every")
    recorded.update(
        pose_backend="pyskl-import",
        rgb_size=options.rgb_size if videos else None,
        max_persons="all in the pickle" if options.max_persons is None else options.max_persons,
        boxes="tight box of each person's joints scored > 0 (the pickle has no person boxes)",
    )
    if not videos:
        recorded["jpeg_quality"] = None
    return recorded


def _specs(
    pyskl: PysklFile, dataset: str, videos_dir: Path | None, options: ExtractOptions
) -> tuple[list[AnnotationSpec], list[Rejected]]:
    """Specs of the usable annotations (those whose video is missing or ambiguous carry why, and
    fail in the run) and the rejected annotations (no frame_dir, bad label, duplicate id), with
    why."""
    index = _video_index(videos_dir) if videos_dir is not None else None
    specs, rejected = [], []
    seen: set[str] = set()
    for position, annotation in enumerate(pyskl.annotations):
        name = f"annotation {position}"
        if not isinstance(annotation, dict) or "frame_dir" not in annotation:
            rejected.append(Rejected(name, f"{name}: not a dict with a frame_dir"))
            continue
        try:
            sample = _sample_of(annotation, dataset)
        except (TypeError, ValueError) as err:
            rejected.append(
                Rejected(str(annotation["frame_dir"]), f"{annotation['frame_dir']}: label {err}")
            )
            continue
        if sample.sample_id in seen:
            rejected.append(
                Rejected(
                    sample.sample_id, f"{sample.sample_id}: frame_dir listed twice; kept the first"
                )
            )
            continue
        seen.add(sample.sample_id)
        video, source = "", pyskl.path.name
        if index is not None:
            found, reason = _find_video(index, str(annotation["frame_dir"]))
            if found is None:
                specs.append(
                    AnnotationSpec(sample, "", {}, "", options, missing=f"{videos_dir}: {reason}")
                )
                continue
            video, source = str(found), found.relative_to(videos_dir).as_posix()
            sample = dataclasses.replace(sample, path=source)
        specs.append(AnnotationSpec(sample, source, annotation, video, options))
    return specs, rejected


def _write_split_manifests(
    pyskl: PysklFile,
    dataset: str,
    out_dir: Path,
    samples: Mapping[str, Sample],
    report: ImportReport,
) -> None:
    """The pickle's splits as `manifests/<protocol>_<split>.csv` (the columns `epam-data splits`
    writes), with the finished samples of status ok and a label only, and `<protocol>_classes.csv`
    (our class names where the dataset and protocol are known, else the label ids up to the pickle's
    largest); split ids left out are counted."""

    ok = _ok_ids(out_dir)
    top = max((sample.label for sample in samples.values() if sample.label is not None), default=-1)
    manifests, protocols = {}, {}
    for split_name, ids in pyskl.split.items():
        name = split_name if "_" in split_name else f"{DEFAULT_PROTOCOL}_{split_name}"
        if not _SPLIT_NAME.match(name) or name.endswith("_classes") or name == "rejected":
            report.notes.append(
                f"split {split_name!r} left out: its name cannot be a manifest file name"
            )
            continue
        protocol = name.rsplit("_", 1)[0]
        names = _class_names(dataset, protocol)
        kept = [
            samples[i]
            for i in (str(i).strip("/").replace("/", "__") for i in ids)
            if i in ok and i in samples and samples[i].label is not None
        ]
        if names is None or top >= len(names):
            names = tuple(str(label) for label in range(top + 1))
        rows = [
            {
                "sample_id": s.sample_id,
                "label": s.label,
                "label_name": names[s.label],
                **{column: getattr(s, column) for column in META_COLUMNS},
            }
            for s in kept
        ]
        frame = manifest_frame(rows)
        manifests[name] = frame
        protocols[protocol] = Protocol(
            dataset, protocol, "from the PYSKL pickle", "sample_id", {}, names
        )
        report.manifests[name] = (len(ids), len(frame))
    if manifests:
        write_manifests(SplitReport(manifests=manifests), protocols, out_dir)


def _ok_ids(out_dir: Path) -> set[str]:
    """Ids of index.csv with status ok (what manifests may list)."""
    index = out_dir / "index.csv"
    if not index.is_file():
        return set()
    with open(index, newline="", encoding="utf-8") as stream:
        return {
            row["sample_id"] for row in csv.DictReader(stream) if row.get("status") in ("ok", "")
        }


def _check_import_args(dataset: str, videos: Path | None, jobs: int) -> None:
    """Refuse an unknown dataset, a missing videos folder or a bad --jobs before the pickle (which
    may be large) is loaded."""
    if dataset not in DATASET_NAMES:
        raise EpamError(f"--dataset {dataset!r}: choose one of {', '.join(DATASET_NAMES)}")
    if videos is not None and not videos.is_dir():
        raise EpamError(f"--videos {videos}: not a folder")
    check_jobs(jobs)


def _import_options(options: ExtractOptions | None, videos: Path | None) -> ExtractOptions:
    """Extract's options for an import: the defaults unless given, with RGB off when there are no
    videos to crop it from."""
    options = options if options is not None else ExtractOptions()
    if videos is None:
        options = dataclasses.replace(options, rgb_size=None)
    return options


def import_pyskl(
    pkl: str | Path,
    out_dir: str | Path,
    dataset: str,
    *,
    videos_dir: str | Path | None = None,
    options: ExtractOptions | None = None,
    jobs: int = 1,
    part: tuple[int, int] | None = None,
    samples_per_shard: int = 256,
    dask_address: str | None = None,
    ray_address: str | None = None,
    limit: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Outcome], None] | None = None,
    info: dict[str, Any] | None = None,
) -> ImportReport:
    """Import a PYSKL / MMAction2 annotation pickle into a prepared dataset folder (module
    docstring). Safe to re-run: finished samples are skipped, failures retried, and the manifests
    rewritten from what is finished.

    options: extract's, default ExtractOptions() (max_persons None keeps every person of the pickle;
    rgb_size applies with `videos_dir` only). limit: only the first `limit` annotations, in
    sample-id order. Raises EpamError for problems with the run (unsafe or unreadable pickle,
    unknown dataset, options that differ from the folder's).
    """
    pkl, out_dir = Path(pkl), Path(out_dir)
    videos = Path(videos_dir) if videos_dir is not None else None
    _check_import_args(dataset, videos, jobs)
    started = time.perf_counter()
    pyskl = load_pyskl(pkl)
    options = _import_options(options, videos)
    specs, rejected = _specs(pyskl, dataset, videos, options)
    report = ImportReport(out_dir=out_dir, listed=len(specs), rejected=rejected)
    specs.sort(key=lambda spec: spec.sample.sample_id)
    if limit is not None:
        specs = specs[:limit]
    write_dataset_json(
        out_dir, dataset, _dataset_options(options, pkl, videos is not None), info=info
    )
    write_rejected(out_dir, rejected)
    run_samples(
        specs,
        prepare_annotation,
        out_dir,
        report,
        jobs=jobs,
        part=part,
        samples_per_shard=samples_per_shard,
        dask_address=dask_address,
        ray_address=ray_address,
        on_start=on_start,
        on_result=on_result,
    )
    samples = {spec.sample.sample_id: spec.sample for spec in specs}
    _write_split_manifests(pyskl, dataset, out_dir, samples, report)
    report.elapsed_s = time.perf_counter() - started
    return report


# --- export ---------------------------------------------------------------------------------------


class _CompatPickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Pickler that names numpy's reconstructors by their numpy 1.x module
    (`numpy.core.multiarray`), which numpy 2.x also reads; numpy 2.x's own name (`numpy._core`) does
    not load in the numpy 1.x that PYSKL runs on. The pure-Python pickler is used because only it
    lets a global's name be chosen, and lets `_dump_streaming` write one annotation at a time."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or ""
        if module.startswith("numpy._core."):
            qualified = (
                f"numpy.core.{module.removeprefix('numpy._core.')}\n{name or obj.__name__}\n"
            )
            self.write(pickle.GLOBAL + qualified.encode("utf-8"))
            self.memoize(obj)
            return
        super().save_global(obj, name)


@dataclass
class ExportReport:
    """What `export_pyskl` wrote: annotations, ids per split, and what it left out, with why."""

    path: Path
    annotations: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample_id, reason)
    notes: list[str] = field(default_factory=list)


def _manifest_splits(dataset_dir: Path) -> dict[str, list[str]]:
    """Split name -> sample ids, from `manifests/<protocol>_<split>.csv` (not the _classes files or
    rejected.csv)."""
    splits = {}
    for path in sorted((dataset_dir / "manifests").glob("*.csv")):
        if path.stem.endswith("_classes") or path.stem == "rejected":
            continue
        with open(path, newline="", encoding="utf-8") as stream:
            splits[path.stem] = [row["sample_id"] for row in csv.DictReader(stream)]
    return splits


def _annotation(prepared: PreparedSample, label: int) -> dict[str, Any]:
    """One sample in the PYSKL / MMAction2 layout (docs/prior-art.md 2.4); plain Python scalars,
    float32 arrays."""
    height, width = prepared.original_hw
    return {
        "frame_dir": prepared.sample_id,
        "label": label,
        "img_shape": (height, width),
        "original_shape": (height, width),
        "total_frames": prepared.num_frames,
        "keypoint": prepared.keypoints.astype(np.float32),
        "keypoint_score": prepared.scores.astype(np.float32),
    }


def _dump_streaming(
    stream: Any, split: dict[str, list[str]], annotations: Iterable[dict[str, Any]]
) -> int:
    """Write `{"split": split, "annotations": [...]}` as a protocol 3 pickle, one annotation at a
    time.

    The opcodes are those `pickle.dump` would write for the finished dict, except that the memo is
    cleared before each annotation (protocol 3 names memo slots explicitly, so later annotations
    reuse the slots): neither this writer nor a reader holds more than one annotation's intermediate
    objects. Returns the annotations written.
    """
    pickler = _CompatPickler(stream, protocol=3)
    pickler.write(pickle.PROTO + bytes([3]) + pickle.EMPTY_DICT)
    pickler.save("split")
    pickler.save(split)
    pickler.write(pickle.SETITEM)
    pickler.save("annotations")
    pickler.write(pickle.EMPTY_LIST)
    count = 0
    for annotation in annotations:
        pickler.memo.clear()
        pickler.save(annotation)
        pickler.write(pickle.APPEND)
        count += 1
    pickler.write(pickle.SETITEM + pickle.STOP)
    return count


def export_pyskl(dataset_dir: str | Path, out_file: str | Path) -> ExportReport:
    """Write a prepared folder as a PYSKL / MMAction2 annotation pickle: every sample of index.csv
    with a label (keypoints in original pixels, img_shape = original_shape = the video's (H, W),
    total_frames = the frames kept) and the splits of its manifests (ids of exported samples only).

    Samples are read and written one at a time (`_dump_streaming`), so memory holds one sample
    whatever the dataset's size; the file is written atomically. Raises EpamError for a folder
    without index.csv.
    """
    dataset_dir, out_file = Path(dataset_dir), Path(out_file)
    report = ExportReport(path=out_file)
    with ShardReader(dataset_dir) as reader:
        labels = {row["sample_id"]: row.get("label", "") for row in reader.rows}
        exported = [sample_id for sample_id in reader if labels[sample_id].isdigit()]
        report.skipped = [
            (sample_id, "no label in index.csv")
            for sample_id in reader
            if not labels[sample_id].isdigit()
        ]
        wanted = set(exported)
        split = {}
        for name, ids in _manifest_splits(dataset_dir).items():
            split[name] = [sample_id for sample_id in ids if sample_id in wanted]
            report.splits[name] = len(split[name])
            if len(split[name]) < len(ids):
                report.notes.append(
                    f"{name}: {len(ids) - len(split[name])} ids of the manifest are not exported "
                    "samples"
                )
        if not split:
            report.notes.append(
                f"{dataset_dir / 'manifests'}: no split manifests, so the pickle's split is empty "
                "(run `epam-data splits` first to include them)"
            )
        annotations = (
            _annotation(reader.read(sample_id, rgb=False, heatmaps=False), int(labels[sample_id]))
            for sample_id in exported
        )
        report.annotations = write_atomic(
            out_file, lambda stream: _dump_streaming(stream, split, annotations)
        )
    return report
