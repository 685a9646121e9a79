"""HDF5 I/O of one sample group: a PreparedSample in, a PreparedSample out, as `schema` lays it out.

Each dataset is stored as its schema row says (docs/shard-schema.md): small arrays contiguous (one
read each), RGB as variable-length JPEG bytes, heatmaps chunked along time and gzip-compressed; the
metadata are group attributes. Reads take only what is asked for: a window of frames, with or
without the large parts.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from epam_data.datasets.base import Sample
from epam_data.errors import ShardError, one_line
from epam_data.shards.sample import PreparedSample
from epam_data.shards.schema import (
    ATTRIBUTES,
    ATTRS_CRC_ATTR,
    CHUNKED,
    DATASETS,
    HEATMAP_CHUNK_BYTES,
    HEATMAP_GZIP_LEVEL,
    POSE_CRC_ATTR,
    RESERVED_ATTRS,
    VLEN,
    DatasetSpec,
    frame_crc_name,
)

POSE_DATASETS = tuple(spec for spec in DATASETS if spec.part == "pose")
# Per-frame JPEG CRCs up to 8192 frames go in an attribute (HDF5 allows 64 KiB).
CRC_ATTR_BYTES = 32 << 10
# scripts/bench_checksums.py turns this off for its baseline; readers check what is there.
WRITE_CHECKSUMS = True
# The largest dataset a read allocates (checked_dataset); the variable raises it for long clips.
MAX_BYTES_ENV = "EPAM_MAX_SAMPLE_BYTES"
DEFAULT_MAX_DATASET_BYTES = 8 << 30
REPAIR_HINT = "the file is damaged; `epam-data verify OUT --repair` moves it aside for a re-run"

__all__ = [
    "attrs_crc32",
    "foreign_parts",
    "foreign_storage",
    "frame_crc32",
    "jpeg_crc32",
    "local_group",
    "open_h5",
    "plain",
    "pose_crc32",
    "read_group",
    "sample_attrs",
    "write_group",
]


def open_h5(path: Path, mode: str = "r", **kwargs: Any) -> h5py.File:
    """HDF5's own file locking is off: finished shards never change and partial ones have one writer
    (our lock), and that locking fails on many network file systems ("unable to lock file")."""
    return h5py.File(path, mode, locking=False, **kwargs)


def plain(value: Any) -> Any:
    """An attribute value as written: numpy scalars back to Python scalars, arrays kept."""
    return value.item() if isinstance(value, np.generic) else value


def sample_attrs(prepared: PreparedSample) -> dict[str, Any]:
    """The group attributes of a sample: per `schema.ATTRIBUTES` (None values left out), then
    `extra`."""
    sample = dataclasses.asdict(prepared.sample)
    attrs: dict[str, Any] = {}
    for spec in ATTRIBUTES:
        value = sample[spec.name] if spec.kind == "sample" else getattr(prepared, spec.name)
        if value is not None:
            attrs[spec.name] = spec.encode(value)
    attrs.update(prepared.extra)
    return attrs


def _heatmap_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    per_frame = int(np.prod(shape[1:]))
    return (max(1, min(shape[0], HEATMAP_CHUNK_BYTES // max(per_frame, 1))), *shape[1:])


def pose_crc32(arrays: Iterable[np.ndarray]) -> int:
    """CRC-32 of the pose arrays' bytes, in schema order (keypoints, scores, boxes,
    frame_indices)."""
    crc = 0
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array).view(np.uint8).reshape(-1), crc)
    return crc


def attrs_crc32(attrs: Mapping[str, Any]) -> int:
    """CRC-32 of a group's attributes as h5py reads them back (names in sorted order, each value's
    bytes), leaving out `attrs_crc32` itself. Computed from the read-back values at write time too,
    so that both sides see the same types."""
    crc = 0
    for name in sorted(attrs):
        if name == ATTRS_CRC_ATTR:
            continue
        value = attrs[name]
        data = value.encode() if isinstance(value, str) else np.asarray(value).tobytes()
        crc = zlib.crc32(data, zlib.crc32(name.encode(), crc))
    return crc


def jpeg_crc32(frames: Iterable[bytes]) -> np.ndarray:
    """CRC-32 of each frame's JPEG bytes, uint32 [T]."""
    return np.array([zlib.crc32(frame) for frame in frames], dtype=np.uint32)


def frame_crc32(volume: np.ndarray) -> np.ndarray:
    """CRC-32 of each frame of a heatmap volume [T', C, H, W], uint32 [T']."""
    return np.array([zlib.crc32(np.ascontiguousarray(frame)) for frame in volume], np.uint32)


def _write_frame_crcs(group: h5py.Group, name: str, crcs: np.ndarray) -> None:
    """Per-frame CRCs beside dataset `name`: an attribute costs no extra read; a long clip's
    (past 8192 frames) need a dataset."""
    if crcs.nbytes <= CRC_ATTR_BYTES:
        group.attrs[frame_crc_name(name)] = crcs
    else:
        group.create_dataset(frame_crc_name(name), data=crcs)


def _write_dataset(group: h5py.Group, spec: DatasetSpec, value: Any) -> None:
    if spec.storage == VLEN:
        items = np.empty(len(value), dtype=object)
        for position, data in enumerate(value):
            items[position] = np.frombuffer(data, dtype=spec.dtype)
        group.create_dataset(spec.name, data=items, dtype=h5py.vlen_dtype(spec.dtype))
        if WRITE_CHECKSUMS:
            _write_frame_crcs(group, spec.name, jpeg_crc32(value))
    elif spec.storage == CHUNKED and value.size:
        group.create_dataset(
            spec.name,
            data=value,
            chunks=_heatmap_chunks(value.shape),
            compression="gzip",
            compression_opts=HEATMAP_GZIP_LEVEL,
            fletcher32=WRITE_CHECKSUMS,  # HDF5 checks each chunk when it reads it
        )
        if WRITE_CHECKSUMS:  # fletcher32 misses a damaged layout that reads back as zeros
            _write_frame_crcs(group, spec.name, frame_crc32(value))
    else:
        group.create_dataset(spec.name, data=value)  # contiguous: one read each


def write_group(h5file: h5py.File, prepared: PreparedSample) -> dict[str, Any]:
    """Write one sample group; returns the attributes written (the index row is made from them)."""
    group = h5file.create_group(prepared.sample_id)
    for spec in DATASETS:
        value = getattr(prepared, spec.name)
        if value is not None:
            _write_dataset(group, spec, value)
    attrs = sample_attrs(prepared)
    for key, value in attrs.items():
        group.attrs[key] = value
    if WRITE_CHECKSUMS:
        pose = (
            np.asarray(getattr(prepared, spec.name), dtype=spec.dtype) for spec in POSE_DATASETS
        )
        group.attrs[POSE_CRC_ATTR] = np.uint32(pose_crc32(pose))
        group.attrs[ATTRS_CRC_ATTR] = np.uint32(attrs_crc32(dict(group.attrs.items())))
    return attrs


def _take(dataset: h5py.Dataset, frames: np.ndarray | None, axis: int) -> np.ndarray:
    """The dataset, or only the given positions along `axis` (any order, repeats allowed), read once
    each."""
    if frames is None:
        return dataset[()]
    unique, inverse = np.unique(frames, return_inverse=True)
    if axis == 0 and dataset.chunks is not None:
        # One slice over the span: each compressed chunk is inflated once. A point selection would
        # inflate a chunk per frame when chunks exceed HDF5's 1 MiB chunk cache (measured: 133 ms
        # instead of 6 for 32 frames).
        return dataset[int(unique[0]) : int(unique[-1]) + 1][frames - unique[0]]
    if axis == 0 and len(unique) < dataset.shape[0]:
        return dataset[unique][
            inverse
        ]  # reads only the rows touched (rgb: only the JPEGs asked for)
    return np.take(dataset[()], frames, axis=axis)


def _damaged(group: h5py.Group, what: str) -> ShardError:
    return ShardError(f"{Path(group.file.filename).name}:{group.name}: {what}; {REPAIR_HINT}")


def foreign_parts(group: h5py.Group) -> list[str]:
    """Members of a sample group that are links (an external link opens another file, a soft link
    points elsewhere): the writer makes none, and a forged shard could read any file the user may
    read through them. Read from the link table, nothing is resolved (0.03 ms a group)."""
    links = group.id.links
    return [
        f"{name} (a link)"
        for name in group
        if links.get_info(name.encode()).type != h5py.h5l.TYPE_HARD
    ]


def foreign_storage(dataset: h5py.Dataset) -> bool:
    """Whether a dataset's values live in other files (virtual or external storage)."""
    return dataset.is_virtual or bool(dataset.external)


def local_group(h5file: h5py.File, sample_id: str) -> h5py.Group:
    """h5file[sample_id] when it and everything in it are stored in this shard (foreign_parts);
    KeyError when there is no such member, ShardError naming what points outside."""
    link = h5file.get(sample_id, getlink=True)
    if link is None:
        raise KeyError(sample_id)
    where = f"{Path(h5file.filename).name}:/{sample_id}"
    if not isinstance(link, h5py.HardLink):
        raise ShardError(
            f"{where}: a {type(link).__name__}, not a group of this shard; {REPAIR_HINT}"
        )
    group = h5file[sample_id]
    foreign = foreign_parts(group)
    if foreign:
        raise _damaged(group, f"{', '.join(foreign)}: not stored in this shard (refused)")
    return group


def _check_chunks(group: h5py.Group, name: str, dataset: h5py.Dataset) -> None:
    """Every chunk of a chunked dataset is in the file with all its filters applied. Found by
    fuzzing the shards: a lost chunk address reads back as zeros, and a chunk whose filter mask
    says "filters skipped" is read raw, both without an error and without fletcher32 ever being
    checked."""
    chunks = int(np.prod([-(-n // c) for n, c in zip(dataset.shape, dataset.chunks)]))
    stored = dataset.id.get_num_chunks()
    if stored != chunks:
        raise _damaged(group, f"{name} has {stored} of its {chunks} chunks in the file")
    if any(dataset.id.get_chunk_info(i).filter_mask for i in range(stored)):
        raise _damaged(group, f"{name} has a chunk marked as stored without its filters")


def checked_dataset(group: h5py.Group, name: str) -> h5py.Dataset:
    """A dataset whose declared size is backed by the file, before anything is allocated for it.

    A small forged or damaged shard can declare 3e7 frames: reading it would allocate gigabytes of
    fill values. An unfiltered dataset must hold exactly its declared bytes, a chunked one all its
    chunks; any dataset must stay under `EPAM_MAX_SAMPLE_BYTES` (default 8 GiB, raise it for very
    long clips).
    """
    dataset = group[name]
    if foreign_storage(dataset):
        raise _damaged(group, f"{name}: not stored in this shard (virtual or external; refused)")
    declared = dataset.size * dataset.dtype.itemsize
    limit = int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_DATASET_BYTES))
    if declared > limit:
        raise _damaged(
            group,
            f"{name} declares {dataset.shape}, {declared >> 20} MB, above {MAX_BYTES_ENV}="
            f"{limit >> 20} MB (set it higher if the clip is really that long)",
        )
    if dataset.chunks is not None and dataset.size:
        _check_chunks(group, name, dataset)
    if (
        h5py.check_vlen_dtype(dataset.dtype) is None
        and not dataset.id.get_create_plist().get_nfilters()
    ):
        if dataset.id.get_storage_size() != declared:
            raise _damaged(
                group,
                f"{name} declares {dataset.shape} ({declared} bytes) but the file holds "
                f"{dataset.id.get_storage_size()} bytes of it",
            )
    return dataset


def _pose_arrays(group: h5py.Group) -> dict[str, np.ndarray]:
    """The pose arrays, read whole once (they are small) and checked against the group's CRC-32."""
    arrays = {spec.name: checked_dataset(group, spec.name)[()] for spec in POSE_DATASETS}
    expected = group.attrs.get(POSE_CRC_ATTR)
    if expected is not None and pose_crc32(arrays.values()) != int(expected):
        raise _damaged(group, "the pose arrays do not match their checksum")
    return arrays


def _check_frames(
    group: h5py.Group, name: str, frames: np.ndarray | None, crcs: np.ndarray
) -> None:
    """The frames read of `rgb` or a heatmap dataset (CRC-32 of each) against the stored ones."""
    key = frame_crc_name(name)
    expected = group.attrs.get(key)
    if expected is None and key in group:
        expected = group[key][()]
    if expected is None:
        return
    if frames is not None:
        expected = expected[np.asarray(frames)]
    bad = np.flatnonzero(crcs != expected)
    if len(bad):
        frame = int(bad[0] if frames is None else np.asarray(frames)[bad[0]])
        raise _damaged(group, f"{name} frame {frame} does not match its checksum")


def _read_datasets(group: h5py.Group, frames: np.ndarray | None, parts: set[str]) -> dict[str, Any]:
    """The datasets of the parts asked for, as PreparedSample's fields (absent optional ones left
    out), each checked against its checksum where the shard has one."""
    try:
        return _read_checked(group, frames, parts)
    except OSError as err:  # HDF5: a chunk failing fletcher32, a truncated file, a broken header
        raise _damaged(group, f"cannot be read ({one_line(err, 200)})") from err


def _read_checked(group: h5py.Group, frames: np.ndarray | None, parts: set[str]) -> dict[str, Any]:
    pose = _pose_arrays(group)
    kept = pose["keypoints"].shape[1]
    values: dict[str, Any] = {}
    for spec in DATASETS:
        if spec.part not in parts or (not spec.required and spec.name not in group):
            continue
        dataset = checked_dataset(group, spec.name)  # a required one that is missing: KeyError
        if (
            frames is not None
            and not spec.one_per_kept_frame
            and dataset.shape[spec.frame_axis] != kept
        ):
            raise ValueError(
                f"{group.name}: {spec.name} has {dataset.shape[spec.frame_axis]} frames, not one "
                "per kept frame; read it whole (frames=None)"
            )
        if spec.name in pose:
            array = pose[spec.name]
            value = array if frames is None else np.take(array, frames, axis=spec.frame_axis)
        else:
            value = _take(dataset, frames, axis=spec.frame_axis)
        values[spec.name] = (
            tuple(item.tobytes() for item in value) if spec.storage == VLEN else value
        )
        if spec.storage == VLEN:
            _check_frames(group, spec.name, frames, jpeg_crc32(values[spec.name]))
        elif spec.storage == CHUNKED and value.size:
            _check_frames(group, spec.name, frames, frame_crc32(value))
    return values


def read_group(
    group: h5py.Group, *, frames: np.ndarray | None = None, rgb: bool = True, heatmaps: bool = True
) -> PreparedSample:
    """A sample group back into a PreparedSample (validated again), optionally a subset of its
    frames. Take the group from `local_group`, which refuses members stored outside the shard."""
    stored = dict(group.attrs.items())
    expected = stored.get(ATTRS_CRC_ATTR)
    if expected is not None and attrs_crc32(stored) != int(expected):
        raise _damaged(
            group, "the attributes (label, source, sizes ...) do not match their checksum"
        )
    attrs: Mapping[str, Any] = {key: plain(value) for key, value in stored.items()}
    parts = {"pose"} | ({"rgb"} if rgb else set()) | ({"heatmaps"} if heatmaps else set())
    fields: dict[str, Any] = {}
    sample: dict[str, Any] = {}
    for spec in ATTRIBUTES:
        if spec.kind == "sample":
            sample[spec.name] = attrs.get(
                spec.name, spec.default
            )  # None-valued fields are not stored
        else:
            fields[spec.name] = spec.decode(
                attrs[spec.name]
                if spec.required and spec.default is None
                else attrs.get(spec.name, spec.default)
            )
    return PreparedSample(
        sample=Sample(**sample),
        **_read_datasets(group, frames, parts),
        **fields,
        extra={key: value for key, value in attrs.items() if key not in RESERVED_ATTRS},
    )
