"""PreparedSample: one sample as the pipeline made it and a shard stores it, validated when made.

The dtypes and shape rules come from `schema.DATASETS` (docs/shard-schema.md); this module adds the
rules that tie values together (frame indices inside the source video, JPEG data, attributes HDF5
can hold).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epam_data.datasets.base import Sample
from epam_data.shards.schema import DATASETS, RESERVED_ATTRS, SAMPLE_DIMS, VLEN, DatasetSpec

__all__ = ["PreparedSample"]

FORBIDDEN_IN_ID = re.compile(r"[/\x00\r\n]")
# Datasets with rules beyond dtype and shape, checked by their own functions below.
_CHECKED_APART = ("frame_indices", "rgb")


@dataclass(frozen=True, eq=False)
class PreparedSample:
    """One sample as the pipeline made it and a shard stores it; validated on construction.

    The arrays and their layouts are `schema.DATASETS` (M persons kept, T frames kept, in the order
    of `frame_indices`); `rgb` is one JPEG per kept frame or None, the heatmaps uint8 [T', C, H, W]
    or None. `total_frames` counts the frames of the source video, `original_hw` is its (height,
    width) and `fps` its frame rate (0.0 when unknown). `crop_box` is the square x1, y1, x2, y2 in
    original pixels that the RGB frames were cut from (it may leave the frame; the outside is
    zero-padded), so keypoints map into crop pixels as (keypoints - (x1, y1)) * rgb_size / (x2 -
    x1). `num_person_raw` is how many persons the tracker saw before the M best were kept; `source`
    is the video path relative to the input root; `status` goes to the index ("ok" is usable; the
    pipeline flags e.g. "no_person"). `extra` holds more group attributes (strings, numbers,
    booleans, small numeric arrays; lists become arrays). docs/shard-schema.md has the full table.

    Construction checks dtypes, shapes against each other and value ranges, and raises ValueError
    (TypeError for a value of the wrong kind) with the fix in the message: a bad sample is a bug in
    the code that made it, better caught here than in a training run weeks later.
    """

    sample: Sample
    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    frame_indices: np.ndarray
    total_frames: int
    original_hw: tuple[int, int]
    fps: float = 0.0
    rgb: tuple[bytes, ...] | None = None
    joint_heatmaps: np.ndarray | None = None
    limb_heatmaps: np.ndarray | None = None
    crop_box: tuple[float, float, float, float] | None = None
    num_person_raw: int = 0
    source: str = ""
    status: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.sample, Sample):
            raise TypeError(
                f"PreparedSample.sample must be a Sample, got {type(self.sample).__name__}"
            )
        sample_id = self.sample.sample_id
        if not sample_id or sample_id in (".", "..") or FORBIDDEN_IN_ID.search(sample_id):
            raise ValueError(
                f"sample id {sample_id!r} cannot name an HDF5 group: it must be non-empty, not "
                "'.' or '..', without '/', NUL or line breaks"
            )
        where = f"PreparedSample {sample_id}"
        frames = _check_arrays(where, self)
        total_frames = _check_int(where, "total_frames", self.total_frames, minimum=1)
        normalized = {
            "frame_indices": _check_frame_indices(where, self.frame_indices, frames, total_frames),
            "original_hw": _check_hw(where, self.original_hw),
            "fps": _check_fps(where, self.fps),
            "crop_box": _check_crop_box(where, self.crop_box),
            "rgb": None if self.rgb is None else _check_jpegs(where, self.rgb, frames),
            "total_frames": total_frames,
            "num_person_raw": _check_int(where, "num_person_raw", self.num_person_raw, minimum=0),
        }
        _check_texts(where, self)
        normalized["extra"] = _check_extra(where, self.extra)
        for name, value in normalized.items():
            object.__setattr__(self, name, value)  # frozen: normalized once, here

    @property
    def sample_id(self) -> str:
        return self.sample.sample_id

    @property
    def num_persons(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[1])


def _check_arrays(where: str, prepared: PreparedSample) -> int:
    """Check every array dataset against its schema row (dtype, shape, finite values); the number of
    frames.

    Datasets are checked in table order, so the first one (keypoints) fixes M and T for the
    others."""
    dims: dict[str, int] = {}
    for spec in DATASETS:
        value = getattr(prepared, spec.name)
        if spec.name in _CHECKED_APART or (value is None and not spec.required):
            continue
        shape = _check_array(where, spec, value, dims)
        for dim, size in zip(spec.shape, shape):
            if dim in SAMPLE_DIMS:
                dims.setdefault(dim, size)
        if np.issubdtype(spec.dtype, np.floating) and not np.isfinite(value).all():
            raise ValueError(
                f"{where}: {spec.name} contain NaN or inf; missing joints are 0 with score 0"
            )
        if dims.get("T") == 0:
            raise ValueError(
                f"{where}: no frames ({spec.name} {value.shape}); record it with "
                "ShardWriter.fail instead"
            )
    return dims["T"]


def _check_array(
    where: str, spec: DatasetSpec, array: Any, dims: Mapping[str, int]
) -> tuple[int, ...]:
    """The array's shape, after checking its type, dtype and the sizes its schema row fixes."""
    dtype = np.dtype(spec.dtype).name
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"{where}: {spec.name} must be a numpy array {spec.layout(dims)}, got "
            f"{type(array).__name__}"
        )
    if array.dtype != spec.dtype:
        raise ValueError(
            f"{where}: {spec.name} must be {spec.layout(dims)}, got {array.dtype}; convert it "
            f"with .astype(np.{dtype})"
        )
    expected = spec.expected(dims)
    if array.ndim != len(expected) or any(
        want is not None and got != want for got, want in zip(array.shape, expected)
    ):
        raise ValueError(
            f"{where}: {spec.name} must be {spec.layout(dims)}, got shape {array.shape}"
        )
    return array.shape


def _check_int(where: str, name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_frame_indices(
    where: str, frame_indices: Any, frames: int, total_frames: int
) -> np.ndarray:
    """Any integer array accepted, stored as the schema's int32: one source frame per kept
    frame."""
    indices = np.asarray(frame_indices)
    if indices.shape != (frames,) or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"{where}: frame_indices must be {frames} integers (one per kept frame), got "
            f"{indices.dtype} {indices.shape}"
        )
    if indices.min() < 0 or indices.max() >= total_frames:
        raise ValueError(
            f"{where}: frame_indices must lie in 0..{total_frames - 1} (total_frames), got "
            f"{indices.min()}..{indices.max()}"
        )
    spec = next(spec for spec in DATASETS if spec.name == "frame_indices")
    return indices.astype(spec.dtype)


def _check_hw(where: str, original_hw: Any) -> tuple[int, int]:
    hw = tuple(original_hw)
    if len(hw) != 2 or any(not isinstance(v, (int, np.integer)) or v < 1 for v in hw):
        raise ValueError(
            f"{where}: original_hw must be (height, width) in pixels, got {original_hw!r}"
        )
    return int(hw[0]), int(hw[1])


def _check_fps(where: str, fps: Any) -> float:
    if (
        not isinstance(fps, (int, float, np.floating, np.integer))
        or not math.isfinite(fps)
        or fps < 0
    ):
        raise ValueError(f"{where}: fps must be a finite number >= 0 (0 when unknown), got {fps!r}")
    return float(fps)


def _check_crop_box(where: str, crop_box: Any) -> tuple[float, ...] | None:
    if crop_box is None:
        return None
    box = tuple(float(v) for v in crop_box)
    if len(box) != 4 or not all(map(math.isfinite, box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(
            f"{where}: crop_box must be x1, y1, x2, y2 with x2 > x1 and y2 > y1, got {crop_box!r}"
        )
    return box


def _check_jpegs(where: str, rgb: Sequence[Any], frames: int) -> tuple[bytes, ...]:
    """rgb frames as a tuple of bytes; each must be a JPEG (starts with the SOI marker FF D8)."""
    spec = next(spec for spec in DATASETS if spec.storage == VLEN)
    if isinstance(rgb, (bytes, bytearray, np.ndarray)) or len(rgb) != frames:
        got = (
            type(rgb).__name__
            if isinstance(rgb, (bytes, bytearray, np.ndarray))
            else f"{len(rgb)} items"
        )
        raise ValueError(
            f"{where}: {spec.name} must be a list of {frames} JPEG byte strings (one per kept "
            f"frame), got {got}"
        )
    jpegs = []
    for position, item in enumerate(rgb):
        data = item.tobytes() if isinstance(item, np.ndarray) else bytes(item)
        if data[:2] != b"\xff\xd8":
            raise ValueError(
                f"{where}: {spec.name} frame {position} is not JPEG data (starts with "
                f"{data[:4]!r}); encode each cropped frame as JPEG"
            )
        jpegs.append(data)
    return tuple(jpegs)


def _check_texts(where: str, prepared: PreparedSample) -> None:
    """Strings that become HDF5 attributes: no NUL (HDF5 strings end there); status one line."""
    if not isinstance(prepared.source, str):
        raise TypeError(
            f"{where}: source must be a path string, got {type(prepared.source).__name__}"
        )
    texts = {**dataclasses.asdict(prepared.sample), "source": prepared.source}
    for name, text in texts.items():
        if isinstance(text, str) and "\x00" in text:
            raise ValueError(
                f"{where}: {name} contains a NUL character, which an HDF5 attribute cannot hold"
            )
    status = prepared.status
    if not isinstance(status, str) or not status or FORBIDDEN_IN_ID.search(status):
        raise ValueError(
            f"{where}: status must be a non-empty one-line string such as 'ok', got {status!r}"
        )


def _check_extra(where: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `extra` whose values HDF5 stores as attributes and gives back equal (lists become
    arrays)."""
    if not isinstance(extra, Mapping):
        raise TypeError(f"{where}: extra must be a dict of attributes, got {type(extra).__name__}")
    checked = {}
    for key, value in extra.items():
        if not isinstance(key, str) or not key or "/" in key or key in RESERVED_ATTRS:
            raise ValueError(
                f"{where}: extra key {key!r} is not allowed (empty, has '/', or is one of the "
                f"schema's own attributes: {', '.join(sorted(RESERVED_ATTRS))})"
            )
        if not key.isprintable() and any(0xD800 <= ord(char) <= 0xDFFF for char in key):
            raise ValueError(f"{where}: extra key {key!r} is not valid UTF-8 (a lone surrogate)")
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf" or value.nbytes > 32768:
                raise ValueError(
                    f"{where}: extra {key!r} must be a small numeric array (at most 32 KiB), got "
                    f"{value.dtype} {value.shape}; store large data as a dataset"
                )
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(
                f"{where}: extra {key!r} contains a NUL character, which an HDF5 attribute "
                "cannot hold"
            )
        if not isinstance(value, (str, bool, int, float, np.ndarray)):
            raise TypeError(
                f"{where}: extra {key!r} must be a string, number, boolean or numeric array, got "
                f"{type(value).__name__}"
            )
        checked[key] = value
    return checked
