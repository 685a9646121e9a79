"""Prepared datasets on disk: the HDF5 shard schema (version 1), an atomic writer, a reader and the index.

A prepared dataset is a folder (DESIGN.md, "Shard schema"):

    <out>/shards/shard-00000.h5         finished shards; `shard-p001of004-00000.h5` when written as part=(1, 4)
    <out>/shards/shard-00000.csv        the index rows of that shard (its sidecar), written before the rename
    <out>/shards/shard.failures.csv     the failures one writer (one part) recorded, appended as they happen
    <out>/index.csv                     the sidecars of all finished shards, concatenated (rebuilt, never edited)
    <out>/failures.csv                  the failures of all writers, minus samples that later succeeded
    <out>/dataset.json                  dataset name, schema version and the options the samples were made with

Inside a shard, one group per sample (`/<sample_id>/`, in write order) holding `keypoints`, `scores`, `boxes`,
`rgb` (JPEG bytes, variable-length uint8), the optional `joint_heatmaps` / `limb_heatmaps`, and `frame_indices`
(int32 [T], the source frame of each kept frame: the one dataset added to DESIGN.md's table, because it can
outgrow the 64 KiB an attribute may hold on a minutes-long Toyota clip), with the sample's metadata as group
attributes; any HDF5 tool opens it (file format of HDF5 1.10, whatever library version writes it).

Nothing half-written is ever read (STYLE.md section 3; anchors.md section 8, item 9: preprocessing that loses
work). A shard is written as `*.h5.partial` and becomes visible in one `rename` once it is complete and on disk.
Index rows travel with their shard: the writer writes the shard's sidecar CSV first, then renames the shard,
then rebuilds index.csv from the sidecars of the finished shards. So at any moment, and after a `kill -9` at
any moment, index.csv lists finished samples only; a sidecar without its shard is ignored (and removed by
the next run of that part), and a shard without a sidecar is re-read. Several writers (`--part i/n` jobs on
several machines) share one folder: each writes only files carrying its own part in their names, and the two
shared files, index.csv and failures.csv, are rebuilt under an exclusive lock and replaced atomically, so
they are never torn and the last writer to finish leaves them complete. Appending rows to one shared CSV
instead would interleave bytes from two machines on NFS, and an index kept only in memory would be lost by
a kill (PYSKL writes its one pickle at the end).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import io
import json
import math
import os
import re
import socket
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from epam_data import __version__
from epam_data.atomic import fsync_dir, write_text_atomic
from epam_data.datasets.base import Sample
from epam_data.errors import ShardError

if TYPE_CHECKING:
    import pandas as pd
    from typing_extensions import Self  # typing.Self from Python 3.11 on

__all__ = [
    "FAILURE_COLUMNS",
    "INDEX_COLUMNS",
    "RESERVED_ATTRS",
    "SCHEMA_VERSION",
    "PreparedSample",
    "ShardReader",
    "ShardWriter",
    "done_ids",
    "read_dataset_json",
    "rebuild_index",
    "verify_dataset",
    "write_dataset_json",
]

SCHEMA_VERSION = 1
NUM_JOINTS = 17  # COCO-17
# index.csv: the DESIGN columns, then `persons` (M kept, for `epam-data info` and filtering), `total_frames`
# (frames in the source video, against `frames` kept), `video` (clips cut from one PKU-MMD video share it;
# `splits --exclude` matches on it) and `source` (the input file, to trace a sample back).
INDEX_COLUMNS = ("sample_id", "shard", "label", "label_name", "subject", "camera", "setup", "view", "replication",
                 "frames", "status", "persons", "total_frames", "video", "source")
FAILURE_COLUMNS = ("sample_id", "source", "reason", "time")
SAMPLE_FIELDS = tuple(f.name for f in dataclasses.fields(Sample))
# Group attributes owned by the schema; every other attribute of a sample group is one of its `extra` items.
RESERVED_ATTRS = frozenset(SAMPLE_FIELDS) | {"total_frames", "original_hw", "fps", "crop_box", "num_person_raw",
                                             "source", "status"}
ARRAY_DATASETS = ("keypoints", "scores", "boxes", "frame_indices")
HEATMAP_DATASETS = ("joint_heatmaps", "limb_heatmaps")
# Heatmap volumes are chunked along time in pieces of about this size: a 100-frame 17 x 64 x 64 volume is
# two chunks, and a window of frames decompresses only the chunks it touches.
HEATMAP_CHUNK_BYTES = 4 << 20
HEATMAP_GZIP_LEVEL = 1  # gzip, so that every HDF5 tool reads it; level 1: the volumes are mostly zeros
# HDF5 file-format bounds: files that HDF5 1.10 and later read, whatever library version writes them.
HDF5_LIBVER = ("v108", "v110")
_SHARD_FILE = re.compile(r"^shard-(?:p\d+of\d+-)?\d{5,}\.h5$")
_FORBIDDEN_IN_ID = re.compile(r"[/\x00\r\n]")


@dataclass(frozen=True, eq=False)
class PreparedSample:
    """One sample as the pipeline made it and a shard stores it; validated on construction.

    Layouts (M persons kept, T frames kept, in the order of `frame_indices`):
        keypoints      float32 [M, T, 17, 2]  COCO-17 (x, y) in original-frame pixels; missing joints are 0
        scores         float16 [M, T, 17]     keypoint confidence in [0, 1]; missing joints have score 0
        boxes          float32 [M, T, 5]      person box x1, y1, x2, y2 (original pixels) and its score
        rgb            JPEG bytes per frame (T of them), cropped to `crop_box` and resized; None without RGB
        joint_heatmaps, limb_heatmaps  uint8 [T', C, H, W] pre-rendered volumes, or None
        frame_indices  int32 [T]              index in the source video of each kept frame
    `total_frames` counts the frames of the source video, `original_hw` is its (height, width) and `fps` its
    frame rate (0.0 when unknown). `crop_box` is the square x1, y1, x2, y2 in original pixels that the RGB
    frames were cut from (it may leave the frame; the outside is zero-padded), so keypoints map into crop
    pixels as (keypoints - (x1, y1)) * rgb_size / (x2 - x1). `num_person_raw` is how many persons the
    tracker saw before the M best were kept; `source` is the video path relative to the input root;
    `status` goes to the index ("ok" is usable; the pipeline flags e.g. "no_person"). `extra` holds more
    group attributes (strings, numbers, booleans, small numeric arrays; lists become arrays).

    Construction checks dtypes, shapes against each other and value ranges, and raises ValueError (TypeError
    for a value of the wrong kind) with the fix in the message: a bad sample is a bug in the code that made
    it, better caught here than in a training run weeks later.
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
            raise TypeError(f"PreparedSample.sample must be a Sample, got {type(self.sample).__name__}")
        sample_id = self.sample.sample_id
        if not sample_id or sample_id in (".", "..") or _FORBIDDEN_IN_ID.search(sample_id):
            raise ValueError(f"sample id {sample_id!r} cannot name an HDF5 group: it must be non-empty, not '.' or "
                             "'..', without '/', NUL or line breaks")
        where = f"PreparedSample {sample_id}"
        persons, frames = _check_array(where, "keypoints", self.keypoints, np.float32, (None, None, NUM_JOINTS, 2))[:2]
        if frames == 0:
            raise ValueError(f"{where}: no frames (keypoints {self.keypoints.shape}); record it with "
                             "ShardWriter.fail instead")
        _check_array(where, "scores", self.scores, np.float16, (persons, frames, NUM_JOINTS))
        _check_array(where, "boxes", self.boxes, np.float32, (persons, frames, 5))
        for name in ("keypoints", "scores", "boxes"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"{where}: {name} contain NaN or inf; missing joints are 0 with score 0")
        for name in HEATMAP_DATASETS:
            if getattr(self, name) is not None:
                _check_array(where, name, getattr(self, name), np.uint8, (None, None, None, None))
        total_frames = _check_int(where, "total_frames", self.total_frames, minimum=1)
        indices = np.asarray(self.frame_indices)
        if indices.shape != (frames,) or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"{where}: frame_indices must be {frames} integers (one per kept frame), got "
                             f"{indices.dtype} {indices.shape}")
        if indices.min() < 0 or indices.max() >= total_frames:
            raise ValueError(f"{where}: frame_indices must lie in 0..{total_frames - 1} (total_frames), got "
                             f"{indices.min()}..{indices.max()}")
        hw = tuple(self.original_hw)
        if len(hw) != 2 or any(not isinstance(v, (int, np.integer)) or v < 1 for v in hw):
            raise ValueError(f"{where}: original_hw must be (height, width) in pixels, got {self.original_hw!r}")
        if not isinstance(self.fps, (int, float, np.floating, np.integer)) or not math.isfinite(self.fps) \
                or self.fps < 0:
            raise ValueError(f"{where}: fps must be a finite number >= 0 (0 when unknown), got {self.fps!r}")
        crop_box = None
        if self.crop_box is not None:
            crop_box = tuple(float(v) for v in self.crop_box)
            if len(crop_box) != 4 or not all(map(math.isfinite, crop_box)) or crop_box[2] <= crop_box[0] \
                    or crop_box[3] <= crop_box[1]:
                raise ValueError(f"{where}: crop_box must be x1, y1, x2, y2 with x2 > x1 and y2 > y1, got "
                                 f"{self.crop_box!r}")
        rgb = None if self.rgb is None else _check_jpegs(where, self.rgb, frames)
        num_person_raw = _check_int(where, "num_person_raw", self.num_person_raw, minimum=0)
        if not isinstance(self.source, str):
            raise TypeError(f"{where}: source must be a path string, got {type(self.source).__name__}")
        texts = {**dataclasses.asdict(self.sample), "source": self.source}
        for name, text in texts.items():
            if isinstance(text, str) and "\x00" in text:  # HDF5 strings end at NUL
                raise ValueError(f"{where}: {name} contains a NUL character, which an HDF5 attribute cannot hold")
        if not isinstance(self.status, str) or not self.status or _FORBIDDEN_IN_ID.search(self.status):
            raise ValueError(f"{where}: status must be a non-empty one-line string such as 'ok', got {self.status!r}")
        extra = _check_extra(where, self.extra)
        normalized = {"frame_indices": indices.astype(np.int32), "original_hw": (int(hw[0]), int(hw[1])),
                      "fps": float(self.fps), "crop_box": crop_box, "rgb": rgb, "total_frames": total_frames,
                      "num_person_raw": num_person_raw, "extra": extra}
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


def _check_array(where: str, name: str, array: Any, dtype: type, shape: tuple[int | None, ...]) -> tuple[int, ...]:
    """The array's shape, after checking its type, dtype and the dimensions that are fixed (None: any)."""
    layout = "[" + ", ".join("?" if size is None else str(size) for size in shape) + "]"
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{where}: {name} must be a numpy array {np.dtype(dtype).name} {layout}, got "
                         f"{type(array).__name__}")
    if array.dtype != dtype:
        raise ValueError(f"{where}: {name} must be {np.dtype(dtype).name} {layout}, got {array.dtype}; convert it "
                         f"with .astype(np.{np.dtype(dtype).name})")
    if array.ndim != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape)):
        raise ValueError(f"{where}: {name} must be {np.dtype(dtype).name} {layout}, got shape {array.shape}")
    return array.shape


def _check_int(where: str, name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_jpegs(where: str, rgb: Sequence[Any], frames: int) -> tuple[bytes, ...]:
    """rgb frames as a tuple of bytes; each must be a JPEG (starts with the SOI marker FF D8)."""
    if isinstance(rgb, (bytes, bytearray, np.ndarray)) or len(rgb) != frames:
        got = f"{type(rgb).__name__}" if isinstance(rgb, (bytes, bytearray, np.ndarray)) else f"{len(rgb)} items"
        raise ValueError(f"{where}: rgb must be a list of {frames} JPEG byte strings (one per kept frame), got {got}")
    jpegs = []
    for position, item in enumerate(rgb):
        data = item.tobytes() if isinstance(item, np.ndarray) else bytes(item)
        if data[:2] != b"\xff\xd8":
            raise ValueError(f"{where}: rgb frame {position} is not JPEG data (starts with {data[:4]!r}); encode "
                             "each cropped frame as JPEG")
        jpegs.append(data)
    return tuple(jpegs)


def _check_extra(where: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `extra` whose values HDF5 stores as attributes and gives back equal (lists become arrays)."""
    if not isinstance(extra, Mapping):
        raise TypeError(f"{where}: extra must be a dict of attributes, got {type(extra).__name__}")
    checked = {}
    for key, value in extra.items():
        if not isinstance(key, str) or not key or "/" in key or key in RESERVED_ATTRS:
            raise ValueError(f"{where}: extra key {key!r} is not allowed (empty, has '/', or is one of the schema's "
                             f"own attributes: {', '.join(sorted(RESERVED_ATTRS))})")
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf" or value.nbytes > 32768:
                raise ValueError(f"{where}: extra {key!r} must be a small numeric array (at most 32 KiB), got "
                                 f"{value.dtype} {value.shape}; store large data as a dataset")
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(f"{where}: extra {key!r} contains a NUL character, which an HDF5 attribute cannot hold")
        if not isinstance(value, (str, bool, int, float, np.ndarray)):
            raise TypeError(f"{where}: extra {key!r} must be a string, number, boolean or numeric array, got "
                             f"{type(value).__name__}")
        checked[key] = value
    return checked


def _sample_attrs(prepared: PreparedSample) -> dict[str, Any]:
    """The group attributes of a sample: the Sample's fields (None ones left out), the schema's, then extra."""
    attrs: dict[str, Any] = {name: value for name, value in dataclasses.asdict(prepared.sample).items()
                             if value is not None}
    attrs.update(total_frames=prepared.total_frames, original_hw=np.asarray(prepared.original_hw, dtype=np.int64),
                 fps=prepared.fps, num_person_raw=prepared.num_person_raw, source=prepared.source,
                 status=prepared.status)
    if prepared.crop_box is not None:
        attrs["crop_box"] = np.asarray(prepared.crop_box, dtype=np.float64)
    attrs.update(prepared.extra)
    return attrs


def _plain(value: Any) -> Any:
    """An attribute value as written: numpy scalars back to Python scalars, arrays kept."""
    return value.item() if isinstance(value, np.generic) else value


def _index_row(attrs: Mapping[str, Any], persons: int, frames: int, shard: str) -> dict[str, str]:
    """One index.csv row from a sample's attributes; missing values are empty cells."""
    row = {column: "" if attrs.get(column) is None else str(_plain(attrs[column])) for column in INDEX_COLUMNS}
    row.update(shard=shard, frames=str(frames), persons=str(persons))
    return row


def _heatmap_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    per_frame = int(np.prod(shape[1:]))
    return (max(1, min(shape[0], HEATMAP_CHUNK_BYTES // max(per_frame, 1))), *shape[1:])


def _write_group(h5file: h5py.File, prepared: PreparedSample) -> dict[str, Any]:
    """Write one sample group (small arrays contiguous, rgb variable-length, heatmaps chunked + gzip)."""
    group = h5file.create_group(prepared.sample_id)
    for name in ARRAY_DATASETS:
        group.create_dataset(name, data=getattr(prepared, name))  # contiguous: one read each
    if prepared.rgb is not None:
        jpegs = np.empty(len(prepared.rgb), dtype=object)
        for position, data in enumerate(prepared.rgb):
            jpegs[position] = np.frombuffer(data, dtype=np.uint8)
        group.create_dataset("rgb", data=jpegs, dtype=h5py.vlen_dtype(np.uint8))
    for name in HEATMAP_DATASETS:
        volume = getattr(prepared, name)
        if volume is not None:
            group.create_dataset(name, data=volume, chunks=_heatmap_chunks(volume.shape) if volume.size else None,
                                 compression="gzip" if volume.size else None,
                                 compression_opts=HEATMAP_GZIP_LEVEL if volume.size else None)
    attrs = _sample_attrs(prepared)
    for key, value in attrs.items():
        group.attrs[key] = value
    return attrs


def _take(dataset: h5py.Dataset, frames: np.ndarray | None, axis: int) -> np.ndarray:
    """The dataset, or only the given positions along `axis` (any order, repeats allowed), read once each."""
    if frames is None:
        return dataset[()]
    unique, inverse = np.unique(frames, return_inverse=True)
    if axis == 0 and dataset.chunks is not None:
        # One slice over the span: each compressed chunk is inflated once. A point selection would inflate a
        # chunk per frame when chunks exceed HDF5's 1 MiB chunk cache (measured: 133 ms instead of 6 for 32 frames).
        return dataset[int(unique[0]):int(unique[-1]) + 1][frames - unique[0]]
    if axis == 0 and len(unique) < dataset.shape[0]:
        return dataset[unique][inverse]  # reads only the rows touched (rgb: only the JPEGs asked for)
    return np.take(dataset[()], frames, axis=axis)


def _read_group(group: h5py.Group, *, frames: np.ndarray | None = None, rgb: bool = True,
                heatmaps: bool = True) -> PreparedSample:
    """A sample group back into a PreparedSample (validated again), optionally a subset of its frames."""
    attrs = {key: _plain(value) for key, value in group.attrs.items()}
    sample = Sample(**{f.name: attrs.get(f.name, None if f.default is dataclasses.MISSING else f.default)
                       for f in dataclasses.fields(Sample)})  # None-valued fields are not stored
    arrays = {name: _take(group[name], frames, axis=0 if name == "frame_indices" else 1) for name in ARRAY_DATASETS}
    jpegs = None
    if rgb and "rgb" in group:
        jpegs = tuple(item.tobytes() for item in _take(group["rgb"], frames, axis=0))
    volumes = {}
    for name in HEATMAP_DATASETS:
        if heatmaps and name in group:
            if frames is not None and group[name].shape[0] != group["keypoints"].shape[1]:
                raise ValueError(f"{group.name}: {name} has {group[name].shape[0]} frames, not one per kept frame; "
                                 "read it whole (frames=None)")
            volumes[name] = _take(group[name], frames, axis=0)
    crop_box = attrs.get("crop_box")
    return PreparedSample(
        sample=sample, **arrays, total_frames=int(attrs["total_frames"]),
        original_hw=tuple(int(v) for v in attrs["original_hw"]), fps=float(attrs.get("fps", 0.0)), rgb=jpegs,
        **volumes, crop_box=None if crop_box is None else tuple(float(v) for v in crop_box),
        num_person_raw=int(attrs.get("num_person_raw", 0)), source=str(attrs.get("source", "")),
        status=str(attrs.get("status", "ok")),
        extra={key: value for key, value in attrs.items() if key not in RESERVED_ATTRS},
    )


def _csv_text(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV written by this module."""
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


class _FileLock:
    """An exclusive `flock` on a small file; released by the kernel when the process dies, even by kill -9.

    Where the platform or file system has no such locks (Windows, NFS without a lock manager), acquiring
    always succeeds: atomic renames still keep every file whole, only concurrent writers lose their guard.
    """

    def __init__(self, path: Path):
        self.path = path
        self._stream: Any = None

    def acquire(self, *, blocking: bool = True) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows
            return True
        self._stream = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(self._stream.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self._stream.close()
            self._stream = None
            return False
        except OSError:  # ENOLCK, EOPNOTSUPP: no locks on this file system
            return True
        return True

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text(encoding="utf-8").strip()
        return ""

    def note_holder(self) -> None:
        if self._stream is not None:
            self._stream.seek(0)
            self._stream.truncate()
            self._stream.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            self._stream.flush()

    def release(self) -> None:
        if self._stream is not None:
            self._stream.close()  # closing the descriptor releases the lock
            self._stream = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _shards_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "shards"


def _finished_shards(out_dir: Path) -> list[Path]:
    folder = _shards_dir(out_dir)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if _SHARD_FILE.match(path.name))


def _sidecar(shard: Path) -> Path:
    return shard.with_suffix(".csv")


def _open_h5(path: Path, mode: str = "r", **kwargs: Any) -> h5py.File:
    """HDF5's own file locking is off: finished shards never change and partial ones have one writer (our lock),
    and that locking fails on many network file systems ("unable to lock file")."""
    return h5py.File(path, mode, locking=False, **kwargs)


def _scan_shard_rows(shard: Path) -> list[dict[str, str]]:
    """Index rows of a finished shard, read from the shard itself (its sample groups and their attributes)."""
    with _open_h5(shard) as h5file:
        return [_index_row(group.attrs, group["keypoints"].shape[0], group["keypoints"].shape[1], shard.name)
                for group in h5file.values()]


def _shard_rows(shard: Path, *, rescan: bool = False, repair: bool = False) -> list[dict[str, str]]:
    """Index rows of a finished shard: its sidecar when present and whole, else the shard (rewriting the sidecar
    when `repair`)."""
    sidecar = _sidecar(shard)
    if not rescan and sidecar.is_file():
        with contextlib.suppress(OSError, csv.Error):
            header, rows = _read_csv(sidecar)
            if tuple(header) == INDEX_COLUMNS:
                return rows
    rows = _scan_shard_rows(shard)
    if repair:
        write_text_atomic(sidecar, _csv_text(rows, INDEX_COLUMNS))
    return rows


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _now() -> str:
    """UTC time in ISO 8601 with milliseconds: sortable as text across machines and time zones."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def rebuild_index(out_dir: str | Path, *, rescan: bool = False) -> int:
    """Rewrite index.csv from the finished shards and failures.csv from the writers' failure logs.

    Safe while other writers run: it holds `<out>/.index.lock` and replaces both files atomically. Sidecars
    are trusted unless `rescan`, which re-reads every shard (and rewrites its sidecar). A sample found in two
    shards (parts that overlapped) is listed once, from the first shard in name order; `verify_dataset`
    reports it. A shard that cannot be opened is left out with a warning. Returns the number of samples.
    """
    out_dir = Path(out_dir)
    shards_dir = _shards_dir(out_dir)
    shards_dir.mkdir(parents=True, exist_ok=True)
    with _FileLock(out_dir / ".index.lock"):
        rows: list[dict[str, str]] = []
        seen: set[str] = set()
        for shard in _finished_shards(out_dir):
            try:
                shard_rows = _shard_rows(shard, rescan=rescan, repair=True)
            except (OSError, KeyError) as err:
                warnings.warn(f"{shard}: cannot be read ({err}); left out of index.csv", stacklevel=2)
                continue
            for row in shard_rows:
                if row["sample_id"] not in seen:
                    seen.add(row["sample_id"])
                    rows.append(row)
        write_text_atomic(out_dir / "index.csv", _csv_text(rows, INDEX_COLUMNS))
        latest: dict[str, dict[str, str]] = {}
        for log in sorted(shards_dir.glob("*.failures.csv")):
            with contextlib.suppress(OSError, csv.Error):
                for row in sorted(_read_csv(log)[1], key=lambda r: r.get("time", "")):
                    if row.get("sample_id"):
                        latest[row["sample_id"]] = row
        failures = [row for sample_id, row in sorted(latest.items()) if sample_id not in seen]
        write_text_atomic(out_dir / "failures.csv", _csv_text(failures, FAILURE_COLUMNS))
        for stale in [*out_dir.glob(".index.csv.*.tmp"), *out_dir.glob(".failures.csv.*.tmp"),
                      *out_dir.glob(".dataset.json.*.tmp")]:
            stale.unlink(missing_ok=True)  # left by a writer killed mid-write; we hold the lock, so none is live
    return len(rows)


def _done_shards(out_dir: Path) -> dict[str, str]:
    """sample_id -> shard file name, over the finished shards (first shard in name order wins)."""
    done: dict[str, str] = {}
    for shard in _finished_shards(out_dir):
        try:
            rows = _shard_rows(shard)
        except (OSError, KeyError) as err:  # its samples count as not done, so a re-run redoes them
            warnings.warn(f"{shard}: cannot be read ({err}); its samples count as not done", stacklevel=3)
            continue
        for row in rows:
            done.setdefault(row["sample_id"], shard.name)
    return done


def done_ids(out_dir: str | Path) -> set[str]:
    """Ids of the samples in finished shards: a re-run skips these and (re)does everything else.

    Read from the shards and their sidecars, not from index.csv, so it is right even when a writer was
    killed between finishing a shard and rebuilding the index.
    """
    return set(_done_shards(Path(out_dir)))


class ShardWriter:
    """Writes PreparedSamples into `<out>/shards/`, `samples_per_shard` to a file, and keeps the index current.

    ```
    with ShardWriter(out_dir, samples_per_shard=256, part=(0, 4)) as writer:
        for prepared in samples:        # PreparedSample, any order
            writer.write(prepared)
        writer.fail(sample, "no video stream")
    ```
    Each shard is written as `*.h5.partial` and renamed to `.h5` when full or when the writer closes; only
    then do its rows reach index.csv. `part=(i, n)` (0 <= i < n) puts `p{i}of{n}` into the file names so
    that parts running on several machines write into one folder without collisions. Opening the writer
    takes the part's lock (a second writer of the same part is refused), deletes the `.partial` files a
    killed run of the same part left (never another part's) and rebuilds the index. Leaving the `with`
    block on an exception still finishes the shard, so completed samples are kept.
    """

    def __init__(self, out_dir: str | Path, *, samples_per_shard: int = 256, part: tuple[int, int] | None = None):
        if isinstance(samples_per_shard, bool) or not isinstance(samples_per_shard, int) or samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be a positive integer, got {samples_per_shard!r}")
        if part is not None:
            index, count = part
            if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
                raise ValueError(f"part must be (i, n) with 0 <= i < n, got {part!r}")
        self.out_dir = Path(out_dir)
        self.samples_per_shard = samples_per_shard
        self.part = part
        self.prefix = "shard" if part is None else f"shard-p{part[0]:03d}of{part[1]:03d}"
        self.samples_written = 0
        self.failures_recorded = 0
        self.shards_finished: list[str] = []
        self._shards_dir = _shards_dir(self.out_dir)
        self._shards_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _FileLock(self._shards_dir / f".{self.prefix}.lock")
        if not self._lock.acquire(blocking=False):
            which = "the single writer" if part is None else f"part {part[0]}/{part[1]}"
            raise ShardError(f"{self.out_dir}: another writer for {which} is running ({self._lock.holder()}); "
                             "wait for it to finish, or give this run another --part")
        self._lock.note_holder()
        self._file: h5py.File | None = None
        self._partial: Path | None = None
        self._rows: list[dict[str, str]] = []
        self._closed = False
        try:
            self._next_number = self._remove_stale()
            self._done = _done_shards(self.out_dir)
            rebuild_index(self.out_dir)  # publishes what a killed run of any part had finished
        except BaseException:
            self._lock.release()
            raise

    def _own(self, name: str) -> re.Match[str] | None:
        return re.fullmatch(rf"\.?{re.escape(self.prefix)}-(\d{{5,}})\.(h5\.partial|h5|csv|csv\.\w+\.tmp)", name)

    def _remove_stale(self) -> int:
        """Delete this part's leftovers of a killed run; the number the next shard gets."""
        numbers = [-1]
        for path in self._shards_dir.iterdir():
            match = self._own(path.name)
            if match is None:
                continue
            kind = match.group(2)
            stale = kind == "h5.partial" or kind.endswith(".tmp") or (
                kind == "csv" and not path.with_suffix(".h5").exists())
            if stale:
                path.unlink(missing_ok=True)
            elif kind == "h5":
                numbers.append(int(match.group(1)))
        return max(numbers) + 1

    def _open_shard(self) -> None:
        name = f"{self.prefix}-{self._next_number:05d}.h5"
        self._partial = self._shards_dir / f"{name}.partial"
        self._file = _open_h5(self._partial, "w", libver=HDF5_LIBVER, track_order=True)  # groups in write order
        self._file.attrs.update({"schema_version": SCHEMA_VERSION, "epam_version": __version__,
                                 "part": "" if self.part is None else f"{self.part[0]}/{self.part[1]}",
                                 "created": _now()})

    def _finish_shard(self) -> None:
        """Close the partial file, write its sidecar, rename it: the commit point. Then rebuild the index."""
        assert self._file is not None and self._partial is not None
        final = self._partial.with_suffix("")  # shard-00000.h5.partial -> shard-00000.h5
        self._file.attrs["samples"] = len(self._rows)
        self._file.close()
        self._file = None
        with open(self._partial, "rb") as stream:
            os.fsync(stream.fileno())
        write_text_atomic(_sidecar(final), _csv_text(self._rows, INDEX_COLUMNS))
        os.replace(self._partial, final)
        fsync_dir(self._shards_dir)
        self._partial = None
        self._rows = []
        self._next_number += 1
        self.shards_finished.append(final.name)
        rebuild_index(self.out_dir)

    def write(self, prepared: PreparedSample) -> None:
        """Add one sample to the current shard (finishing the shard when it is full).

        A sample already in a finished shard, or written earlier by this writer, raises ShardError: skip
        the ids in `done_ids(out_dir)` before preparing them.
        """
        if not isinstance(prepared, PreparedSample):
            raise TypeError(f"ShardWriter.write takes a PreparedSample, got {type(prepared).__name__}")
        if self._closed:
            raise ShardError(f"{self.out_dir}: this ShardWriter is closed; open a new one to write more")
        sample_id = prepared.sample_id
        if sample_id in self._done:
            raise ShardError(f"{sample_id}: already in {self._shards_dir / self._done[sample_id]}; skip the ids in "
                             "done_ids(out_dir) before preparing samples")
        if self._file is None:
            self._open_shard()
        assert self._file is not None and self._partial is not None
        try:
            attrs = _write_group(self._file, prepared)
        except BaseException:
            with contextlib.suppress(Exception):
                if sample_id in self._file:
                    del self._file[sample_id]  # never keep half a sample
            raise
        self._rows.append(_index_row(attrs, prepared.num_persons, prepared.num_frames,
                                     self._partial.with_suffix("").name))
        self._done[sample_id] = self._partial.with_suffix("").name
        self.samples_written += 1
        if len(self._rows) >= self.samples_per_shard:
            self._finish_shard()

    def fail(self, sample: Sample | PreparedSample, reason: str) -> None:
        """Record a sample that could not be prepared; it goes to failures.csv until a later run succeeds."""
        if isinstance(sample, PreparedSample):
            sample = sample.sample
        log = self._shards_dir / f"{self.prefix}.failures.csv"
        new = not log.exists()
        with open(log, "a", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            if new:
                writer.writerow(FAILURE_COLUMNS)
            writer.writerow([sample.sample_id, sample.path or sample.video, _one_line(reason), _now()])
        self.failures_recorded += 1

    def close(self) -> None:
        """Finish the current shard (an empty one is deleted), rebuild index.csv and failures.csv, unlock."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._file is not None:
                if self._rows:
                    self._finish_shard()
                else:
                    self._file.close()
                    self._file = None
                    assert self._partial is not None
                    self._partial.unlink(missing_ok=True)
                    self._partial = None
            rebuild_index(self.out_dir)
        finally:
            self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()  # keep the samples completed before the error
        except Exception:  # noqa: BLE001 (the original error matters more; the partial is removed next run)
            warnings.warn(f"{self.out_dir}: could not finish the current shard after {exc_type.__name__}; its samples "
                          "will be redone by the next run", stacklevel=2)
        finally:
            self._lock.release()


class ShardReader(Mapping[str, PreparedSample]):
    """The samples listed in `<out>/index.csv`, as a read-only mapping `sample_id -> PreparedSample`.

    `len(reader)`, `sample_id in reader`, `reader[sample_id]`, iteration over ids in index order, and
    `reader.read(sample_id, frames=..., rgb=False)` for a window of frames or without the large parts.
    Shard files are opened on first use and per process: after a fork (DataLoader workers) the child
    opens its own handles, and a pickled reader carries no handles, so one reader can be handed to
    `torch.utils.data.DataLoader(num_workers=N)` whatever the start method. At most `max_open_files` shards
    are open at once.
    """

    def __init__(self, out_dir: str | Path, *, max_open_files: int = 64):
        self.out_dir = Path(out_dir)
        self.max_open_files = max_open_files
        index = self.out_dir / "index.csv"
        if not index.is_file():
            hint = " (shards/ exists: run rebuild_index on it)" if _finished_shards(self.out_dir) else ""
            raise ShardError(f"{self.out_dir}: no index.csv{hint}; is this a folder written by `epam-data extract`?")
        header, self.rows = _read_csv(index)
        missing = [column for column in ("sample_id", "shard") if column not in header]
        if missing:
            raise ShardError(f"{index}: no {' or '.join(missing)} column; rebuild it with rebuild_index")
        self._shard_of = {row["sample_id"]: row["shard"] for row in self.rows}
        self._files: OrderedDict[str, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    def _group(self, sample_id: str) -> h5py.Group:
        if sample_id not in self._shard_of:
            raise KeyError(f"{sample_id!r} is not in {self.out_dir / 'index.csv'}")
        if self._pid != os.getpid():  # forked: the parent's handles are not ours to use (or to close)
            self._files = OrderedDict()
            self._pid = os.getpid()
        shard = self._shard_of[sample_id]
        h5file = self._files.get(shard)
        if h5file is None:
            path = _shards_dir(self.out_dir) / shard
            try:
                h5file = _open_h5(path)
            except OSError as err:
                raise ShardError(f"{path}: cannot open the shard that index.csv lists for {sample_id} ({err}); run "
                                 "`epam-data verify` on the folder") from err
            self._files[shard] = h5file
            while len(self._files) > self.max_open_files:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(shard)
        try:
            return h5file[sample_id]
        except KeyError as err:
            raise ShardError(f"{h5file.filename}: no group {sample_id!r} although index.csv lists it there; rebuild "
                             "the index (rebuild_index)") from err

    def read(self, sample_id: str, *, frames: Sequence[int] | np.ndarray | None = None, rgb: bool = True,
             heatmaps: bool = True) -> PreparedSample:
        """One sample; `frames` picks positions along its T kept frames (any order, repeats allowed), and
        `rgb=False` / `heatmaps=False` skip those datasets. Only the data asked for is read."""
        group = self._group(sample_id)
        selected = None
        if frames is not None:
            selected = np.asarray(frames, dtype=np.int64)
            kept = group["keypoints"].shape[1]
            if selected.ndim != 1 or selected.size == 0 or selected.min() < 0 or selected.max() >= kept:
                raise IndexError(f"{sample_id}: frames must be positions in 0..{kept - 1}, got {frames!r}")
        return _read_group(group, frames=selected, rgb=rgb, heatmaps=heatmaps)

    def __getitem__(self, sample_id: str) -> PreparedSample:
        return self.read(sample_id)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._shard_of

    def __iter__(self) -> Iterator[str]:
        return iter(self._shard_of)

    def __len__(self) -> int:
        return len(self._shard_of)

    @property
    def index(self) -> pd.DataFrame:
        """index.csv as a DataFrame of strings (empty cells are '')."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(self.rows[0]) if self.rows else list(INDEX_COLUMNS), dtype=str)

    def close(self) -> None:
        if self._pid == os.getpid():
            for h5file in self._files.values():
                h5file.close()
        self._files = OrderedDict()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()


def read_dataset_json(out_dir: str | Path) -> dict[str, Any] | None:
    """`<out>/dataset.json`, or None when there is none yet."""
    path = Path(out_dir) / "dataset.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ShardError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ShardError(f"{path}: not valid JSON ({err}); restore it or remove it to start over") from err
    if not isinstance(meta, dict) or "dataset" not in meta:
        raise ShardError(f"{path}: no dataset name in it; restore it or remove it to start over")
    return meta


def write_dataset_json(out_dir: str | Path, dataset: str, options: Mapping[str, Any], *,
                       info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Create `<out>/dataset.json`, or check that an existing one describes the same dataset and options.

    `options` are the choices that shape every sample (pose backend and model ids, persons kept, RGB size,
    JPEG quality, frame stride, heatmap settings): a folder never mixes samples made with different ones, so
    a mismatch raises ShardError naming each difference. `info` (versions, command line, machine) is
    recorded when the file is created and never compared. Returns the file's content.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = json.loads(json.dumps(dict(options), sort_keys=True))  # tuples -> lists, as they will be read back
    with _FileLock(out_dir / ".index.lock"):  # parts starting together: one creates it, the others compare
        existing = read_dataset_json(out_dir)
        if existing is not None:
            if existing["dataset"] != dataset:
                raise ShardError(f"{out_dir}: holds dataset {existing['dataset']!r} (dataset.json), not {dataset!r}; "
                                 "choose another --out")
            if existing.get("schema_version") != SCHEMA_VERSION:
                raise ShardError(f"{out_dir}: written with shard schema {existing.get('schema_version')!r}, this "
                                 f"version writes {SCHEMA_VERSION}; choose another --out")
            old = existing.get("options", {})
            differ = [f"{key}: {old.get(key, '(unset)')!r} there, {options.get(key, '(unset)')!r} now"
                      for key in sorted(set(old) | set(options)) if old.get(key) != options.get(key)]
            if differ:
                raise ShardError(f"{out_dir}: prepared with other options ({'; '.join(differ)}); re-run with the "
                                 "same options, or choose another --out")
            return existing
        meta = {"dataset": dataset, "schema_version": SCHEMA_VERSION, "options": options, "created": _now(),
                "epam_version": __version__}
        if info:
            meta["info"] = json.loads(json.dumps(dict(info), sort_keys=True, default=str))
        write_text_atomic(out_dir / "dataset.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta


def _group_problems(group: h5py.Group, *, deep: bool) -> list[str]:
    """What is wrong with one sample group: missing datasets or attributes, dtypes, inconsistent shapes."""
    where = f"{Path(group.file.filename).name}:{group.name}"
    missing = [name for name in ARRAY_DATASETS if name not in group]
    missing += [name for name in ("sample_id", "total_frames", "original_hw", "status") if name not in group.attrs]
    if missing:
        return [f"{where}: missing {', '.join(missing)}"]
    problems = []
    persons, frames = group["keypoints"].shape[:2]
    expected = {"keypoints": (np.float32, (persons, frames, NUM_JOINTS, 2)),
                "scores": (np.float16, (persons, frames, NUM_JOINTS)), "boxes": (np.float32, (persons, frames, 5)),
                "frame_indices": (np.int32, (frames,))}
    if "rgb" in group and (h5py.check_vlen_dtype(group["rgb"].dtype) != np.uint8 or group["rgb"].shape != (frames,)):
        problems.append(f"{where}/rgb: {group['rgb'].dtype} {group['rgb'].shape}, expected variable-length uint8 "
                        f"({frames},)")
    for name, (dtype, shape) in expected.items():
        dataset = group[name]
        if dataset.dtype != dtype or dataset.shape != shape:
            problems.append(f"{where}/{name}: {dataset.dtype} {dataset.shape}, expected {np.dtype(dtype)} {shape}")
    for name in HEATMAP_DATASETS:
        if name in group and (group[name].dtype != np.uint8 or group[name].ndim != 4):
            problems.append(f"{where}/{name}: {group[name].dtype} {group[name].shape}, expected uint8 [T, C, H, W]")
    if group.attrs["sample_id"] != group.name.lstrip("/"):
        problems.append(f"{where}: attribute sample_id is {group.attrs['sample_id']!r}")
    if deep and not problems:
        try:
            _read_group(group)
        except (ValueError, OSError, KeyError, TypeError) as err:
            problems.append(f"{where}: {err}")
    return problems


def verify_dataset(out_dir: str | Path, *, deep: bool = False) -> list[str]:
    """Problems of a prepared dataset folder, one line each; an empty list means it is consistent.

    Checks dataset.json, that every index row names a finished shard that holds the sample with the same
    label and frame count, that every shard opens with schema version 1, that every sample in a shard is in
    the index exactly once, and the datasets and attributes of every sample group. `deep` also reads every
    array (and decompresses the heatmaps). `.partial` files are not problems: a running or killed writer
    leaves them, and the next run of that part removes them.
    """
    out_dir = Path(out_dir)
    problems: list[str] = []
    try:
        meta = read_dataset_json(out_dir)
        if meta is None:
            problems.append(f"{out_dir}: no dataset.json")
        elif meta.get("schema_version") != SCHEMA_VERSION:
            problems.append(f"{out_dir / 'dataset.json'}: schema_version {meta.get('schema_version')!r}, expected "
                            f"{SCHEMA_VERSION}")
    except ShardError as err:
        problems.append(str(err))
    index_rows: dict[str, dict[str, str]] = {}
    index_path = out_dir / "index.csv"
    if not index_path.is_file():
        problems.append(f"{out_dir}: no index.csv (rebuild it with rebuild_index)")
    else:
        header, rows = _read_csv(index_path)
        absent = [column for column in INDEX_COLUMNS if column not in header]
        if absent:
            problems.append(f"{index_path}: missing columns {', '.join(absent)}")
        for row in rows:
            if row.get("sample_id") in index_rows:
                problems.append(f"{index_path}: {row.get('sample_id')} is listed twice")
            index_rows[row.get("sample_id", "")] = row
    shards = {shard.name: shard for shard in _finished_shards(out_dir)}
    for sample_id, row in index_rows.items():
        if row.get("shard") not in shards:
            problems.append(f"{index_path}: {sample_id} is in {row.get('shard')!r}, which is not a finished shard")
    found: dict[str, str] = {}
    for name, shard in shards.items():
        try:
            h5file = _open_h5(shard)
        except OSError as err:
            problems.append(f"{shard}: cannot be opened ({err})")
            continue
        with h5file:
            if h5file.attrs.get("schema_version") != SCHEMA_VERSION:
                problems.append(f"{shard}: schema_version {h5file.attrs.get('schema_version')!r}, expected "
                                f"{SCHEMA_VERSION}")
            for sample_id, group in h5file.items():
                if sample_id in found:
                    problems.append(f"{sample_id}: in both {found[sample_id]} and {name} (overlapping parts?); the "
                                    f"index uses {found[sample_id]}")
                    continue
                found[sample_id] = name
                problems.extend(_group_problems(group, deep=deep))
                row = index_rows.get(sample_id)
                if row is None:
                    problems.append(f"{shard}: {sample_id} is not in index.csv (rebuild it with rebuild_index)")
                    continue
                if row.get("shard") != name:
                    continue  # a duplicate, reported above
                label = group.attrs.get("label")
                if row.get("label", "") != ("" if label is None else str(_plain(label))):
                    problems.append(f"{index_path}: {sample_id} has label {row.get('label')!r}, the shard says {label}")
                if "keypoints" in group and row.get("frames") != str(group["keypoints"].shape[1]):
                    problems.append(f"{index_path}: {sample_id} has {row.get('frames')} frames, the shard holds "
                                    f"{group['keypoints'].shape[1]}")
    for sample_id, row in index_rows.items():
        if row.get("shard") in shards and sample_id not in found:
            problems.append(f"{index_path}: {sample_id} is not in {row.get('shard')}")
    return problems
