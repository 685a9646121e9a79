"""The shard schema as data: one table of a sample group's datasets and one of its attributes.

docs/shard-schema.md describes the schema (version 1) for people; this module states it for the
code. Writing and reading groups (`h5io`), validating a PreparedSample (`sample`) and checking a
finished folder (`verify`) all take names, dtypes, shape rules, storage and what is required from
`DATASETS` and `ATTRIBUTES`, so a change to the schema is made here once and reaches all four.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from epam_data.datasets.base import Sample

__all__ = [
    "ARRAY_DATASETS",
    "ATTRIBUTES",
    "DATASETS",
    "HDF5_LIBVER",
    "HEATMAP_CHUNK_BYTES",
    "HEATMAP_DATASETS",
    "HEATMAP_GZIP_LEVEL",
    "NUM_JOINTS",
    "ATTRS_CRC_ATTR",
    "POSE_CRC_ATTR",
    "RESERVED_ATTRS",
    "frame_crc_name",
    "SAMPLE_DIMS",
    "SAMPLE_FIELDS",
    "SCHEMA_VERSION",
    "AttributeSpec",
    "DatasetSpec",
]

SCHEMA_VERSION = 1
NUM_JOINTS = 17  # COCO-17
# Shape symbols shared by every dataset of a sample: M persons kept, T frames kept. Any other letter
# in a shape rule (the heatmaps' T', C, H, W) is that dataset's own free size.
SAMPLE_DIMS = ("M", "T")
FRAME_DIMS = ("T", "T'")  # the axis a window of frames is taken along

# How a dataset is stored: contiguous (one read each), variable-length (one JPEG per frame), or
# chunked along time and gzip-compressed (heatmap volumes, mostly zeros).
CONTIGUOUS, VLEN, CHUNKED = "contiguous", "vlen", "chunked"
# Heatmap volumes are chunked along time in pieces of about this size: a 100-frame 17 x 64 x 64
# volume is two chunks, and a window of frames decompresses only the chunks it touches.
HEATMAP_CHUNK_BYTES = 4 << 20
HEATMAP_GZIP_LEVEL = (
    1  # gzip, so that every HDF5 tool reads it; level 1: the volumes are mostly zeros
)
# HDF5 file-format bounds: files that HDF5 1.10 and later read, whatever library version writes
# them.
HDF5_LIBVER = ("v108", "v110")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a sample group.

    `shape` holds fixed sizes (ints) and symbols: `SAMPLE_DIMS` must agree across the sample's
    datasets, other symbols are free. `dtype` is the element type (for `vlen`, of each frame's
    bytes). `part` names what a reader may skip: "pose" is always read, "rgb" and "heatmaps" are the
    large parts.
    """

    name: str
    dtype: type
    shape: tuple[int | str, ...]
    required: bool
    storage: str
    part: str
    meaning: str

    @property
    def frame_axis(self) -> int:
        """The axis of the kept frames, along which a reader takes a window."""
        return next(axis for axis, dim in enumerate(self.shape) if dim in FRAME_DIMS)

    @property
    def one_per_kept_frame(self) -> bool:
        """Whether the frame axis is T itself (heatmaps have their own T', which may differ)."""
        return self.shape[self.frame_axis] == "T"

    def expected(self, dims: Mapping[str, int]) -> tuple[int | None, ...]:
        """The shape this dataset must have given the sample's known dims (None: any size)."""
        return tuple(dim if isinstance(dim, int) else dims.get(dim) for dim in self.shape)

    def layout(self, dims: Mapping[str, int], *, symbols: bool = False) -> str:
        """`float32 [2, 12, 17, 2]`-style text for messages; a size not fixed yet shows as `?`, or
        as its symbol (`T'`) with `symbols`."""
        sizes = ", ".join(
            str(size) if size is not None else str(dim) if symbols else "?"
            for dim, size in zip(self.shape, self.expected(dims))
        )
        kind = "variable-length " if self.storage == VLEN else ""
        return f"{kind}{np.dtype(self.dtype).name} [{sizes}]"


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute of a sample group.

    `kind` is how the value is stored and given back: "sample" (a field of `Sample`, left out when
    None), "int", "float", "str", or "int64[2]" / "float64[4]" (small arrays, read back as tuples).
    `default` is what a reader assumes when an optional attribute is absent.
    """

    name: str
    kind: str
    required: bool
    default: Any
    meaning: str

    def encode(self, value: Any) -> Any:
        """The value as stored in HDF5."""
        if "[" in self.kind:
            return np.asarray(value, dtype=self.kind.split("[")[0])
        return value

    def decode(self, value: Any) -> Any:
        """The stored value as PreparedSample holds it."""
        if value is None or self.kind == "sample":
            return value
        if "[" in self.kind:
            element = int if self.kind.startswith("int") else float
            return tuple(element(item) for item in value)
        return {"int": int, "float": float, "str": str}[self.kind](value)


DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "keypoints",
        np.float32,
        ("M", "T", NUM_JOINTS, 2),
        True,
        CONTIGUOUS,
        "pose",
        "COCO-17 (x, y) in original-frame pixels; missing joints are 0",
    ),
    DatasetSpec(
        "scores",
        np.float16,
        ("M", "T", NUM_JOINTS),
        True,
        CONTIGUOUS,
        "pose",
        "keypoint confidence in [0, 1]; missing joints have score 0",
    ),
    DatasetSpec(
        "boxes",
        np.float32,
        ("M", "T", 5),
        True,
        CONTIGUOUS,
        "pose",
        "person box x1, y1, x2, y2 (original pixels) and its score",
    ),
    DatasetSpec(
        "frame_indices",
        np.int32,
        ("T",),
        True,
        CONTIGUOUS,
        "pose",
        "index in the source video of each kept frame "
        "(a dataset: it can outgrow an attribute's 64 KiB)",
    ),
    DatasetSpec(
        "rgb",
        np.uint8,
        ("T",),
        False,
        VLEN,
        "rgb",
        "JPEG bytes of each kept frame, cropped to crop_box and resized",
    ),
    DatasetSpec(
        "joint_heatmaps",
        np.uint8,
        ("T'", "C", "H", "W"),
        False,
        CHUNKED,
        "heatmaps",
        "pre-rendered joint heatmap volume",
    ),
    DatasetSpec(
        "limb_heatmaps",
        np.uint8,
        ("T'", "C", "H", "W"),
        False,
        CHUNKED,
        "heatmaps",
        "pre-rendered limb heatmap volume",
    ),
)

_SAMPLE_ATTRIBUTES = tuple(
    AttributeSpec(
        f.name,
        "sample",
        f.name == "sample_id",
        None if f.default is dataclasses.MISSING else f.default,
        "field of the Sample (epam_data.datasets.base); absent when None",
    )
    for f in dataclasses.fields(Sample)
)
ATTRIBUTES: tuple[AttributeSpec, ...] = (
    *_SAMPLE_ATTRIBUTES,
    AttributeSpec("total_frames", "int", True, None, "frames of the source video"),
    AttributeSpec("original_hw", "int64[2]", True, None, "(height, width) of the source video"),
    AttributeSpec("fps", "float", False, 0.0, "frame rate of the source video; 0.0 when unknown"),
    AttributeSpec(
        "crop_box",
        "float64[4]",
        False,
        None,
        "square x1, y1, x2, y2 in original pixels the RGB frames were cut from; absent without RGB",
    ),
    AttributeSpec(
        "num_person_raw", "int", False, 0, "persons the tracker saw before the M best were kept"
    ),
    AttributeSpec("source", "str", False, "", "video path relative to the input root"),
    AttributeSpec(
        "status", "str", True, "ok", "'ok' is usable; the pipeline flags e.g. 'no_person'"
    ),
)

SAMPLE_FIELDS = tuple(f.name for f in dataclasses.fields(Sample))
# Checksums (docs/shard-schema.md): CRC-32 of the pose arrays and of the other attributes (one group
# attribute each), of each JPEG and each heatmap frame (an attribute, or a dataset beside the data
# past 8192 frames), and HDF5's fletcher32 on the heatmap chunks. Readers check what they read;
# shards written before a checksum existed are read without it.
POSE_CRC_ATTR = "pose_crc32"
ATTRS_CRC_ATTR = "attrs_crc32"  # of every other attribute of the group (names and values)


def frame_crc_name(dataset: str) -> str:
    """Where the per-frame CRC-32s of `rgb` or a heatmap dataset are kept: 'rgb_crc32'."""
    return f"{dataset}_crc32"


CHECKSUM_ATTRS = frozenset(
    {POSE_CRC_ATTR, ATTRS_CRC_ATTR}
    | {frame_crc_name(spec.name) for spec in DATASETS if spec.storage in (VLEN, CHUNKED)}
)
# Group attributes owned by the schema; every other attribute of a sample group is one of its
# `extra` items.
RESERVED_ATTRS = frozenset(spec.name for spec in ATTRIBUTES) | CHECKSUM_ATTRS
ARRAY_DATASETS = tuple(spec.name for spec in DATASETS if spec.storage == CONTIGUOUS)
HEATMAP_DATASETS = tuple(spec.name for spec in DATASETS if spec.part == "heatmaps")
