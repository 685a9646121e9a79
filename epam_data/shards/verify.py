"""verify_dataset: every way a prepared folder disagrees with itself or the schema, one line each.

It checks what docs/shard-schema.md promises: dataset.json, index.csv against the finished shards,
and every sample group against `schema.DATASETS` and `schema.ATTRIBUTES` (deep: every array read
back and validated).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from epam_data.errors import ShardError, one_line
from epam_data.shards.dataset_json import read_dataset_json
from epam_data.shards.h5io import foreign_storage, local_group, open_h5, plain, read_group
from epam_data.shards.index import ADDED_INDEX_COLUMNS, INDEX_COLUMNS
from epam_data.shards.layout import finished_shards, read_csv
from epam_data.shards.sample import PreparedSample
from epam_data.shards.schema import (
    ATTRIBUTES,
    DATASETS,
    SAMPLE_DIMS,
    SCHEMA_VERSION,
    VLEN,
    DatasetSpec,
)
from epam_data.supervisor import LATE, supervised_map
from epam_data.threads import usable_cores

__all__ = ["shards_damage", "value_problems", "verify_dataset"]

Row = dict[str, str]
# A worker walking one shard is given this long, plus a second per WALK_BYTES_PER_S bytes of the
# largest shard, before it counts as looping (a deep walk decodes every JPEG; slow disks).
WALK_TIMEOUT_S = 120.0
WALK_BYTES_PER_S = 2e6


def _dataset_problem(
    where: str, group: h5py.Group, spec: DatasetSpec, dims: dict[str, int]
) -> str | None:
    """What is wrong with one dataset's dtype or shape against its schema row, or None."""
    dataset = group[spec.name]
    if foreign_storage(dataset):
        return f"{where}/{spec.name}: not stored in this shard (virtual or external storage)"
    dtype = h5py.check_vlen_dtype(dataset.dtype) if spec.storage == VLEN else dataset.dtype
    expected = spec.expected(dims)
    if (
        dtype == spec.dtype
        and dataset.ndim == len(expected)
        and all(want is None or got == want for got, want in zip(dataset.shape, expected))
    ):
        return None
    expected_text = spec.layout(dims, symbols=True)
    return f"{where}/{spec.name}: {dataset.dtype} {dataset.shape}, expected {expected_text}"


def group_problems(group: h5py.Group, *, deep: bool) -> list[str]:
    """What is wrong with one sample group: missing datasets or attributes, dtypes, inconsistent
    shapes."""
    where = f"{Path(group.file.filename).name}:{group.name}"
    missing = [spec.name for spec in DATASETS if spec.required and spec.name not in group]
    missing += [spec.name for spec in ATTRIBUTES if spec.required and spec.name not in group.attrs]
    if missing:
        return [f"{where}: missing {', '.join(missing)}"]
    dims = dict(zip(SAMPLE_DIMS, group["keypoints"].shape))  # keypoints are [M, T, ...]
    problems = [
        problem
        for spec in DATASETS
        if spec.name in group
        if (problem := _dataset_problem(where, group, spec, dims)) is not None
    ]
    if group.attrs["sample_id"] != group.name.lstrip("/"):
        problems.append(f"{where}: attribute sample_id is {group.attrs['sample_id']!r}")
    if deep and not problems:
        try:
            prepared = read_group(group)
        except Exception as err:  # noqa: BLE001 (verify reports, never raises)
            return [f"{where}: {one_line(err, 300)}"]
        problems.extend(value_problems(where, prepared))
    return problems


def value_problems(where: str, prepared: PreparedSample) -> list[str]:
    """Values no extractor writes: non-finite or far-away keypoints, scores outside [0, 1], boxes
    that are not finite, JPEGs that do not decode. One line per field."""
    height, width = prepared.original_hw
    problems = []
    keypoints = prepared.keypoints
    reach = (
        np.array([width, height], np.float64) * 3
    )  # joints may lie outside the frame, not this far
    if not np.isfinite(keypoints).all() or (np.abs(keypoints) > reach).any():
        problems.append(
            f"{where}/keypoints: values not finite or beyond 3x the {width}x{height} frame"
        )
    scores = prepared.scores.astype(np.float32)
    if not ((scores >= 0) & (scores <= 1)).all():
        problems.append(f"{where}/scores: values outside [0, 1]")
    if not np.isfinite(prepared.boxes).all():
        problems.append(f"{where}/boxes: values not finite")
    for frame, jpeg in enumerate(prepared.rgb or ()):
        if not _decodes(jpeg):
            problems.append(f"{where}/rgb: frame {frame} is not a readable JPEG")
            break
    return problems


def _decodes(jpeg: bytes) -> bool:
    """Whether the bytes are a JPEG that Pillow can decode."""
    from PIL import Image, UnidentifiedImageError

    if not jpeg.startswith(b"\xff\xd8"):
        return False
    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            image.load()
    except (OSError, UnidentifiedImageError, ValueError):
        return False
    return True


def _meta_problems(out_dir: Path) -> list[str]:
    try:
        meta = read_dataset_json(out_dir)
    except ShardError as err:
        return [str(err)]
    if meta is None:
        return [f"{out_dir}: no dataset.json"]
    if meta.get("schema_version") != SCHEMA_VERSION:
        return [
            f"{out_dir / 'dataset.json'}: schema_version {meta.get('schema_version')!r}, expected "
            f"{SCHEMA_VERSION}"
        ]
    return []


def _read_index(index_path: Path, problems: list[str]) -> dict[str, Row]:
    """index.csv's rows by sample id, noting missing columns and ids listed twice."""
    index_rows: dict[str, Row] = {}
    if not index_path.is_file():
        problems.append(
            f"{index_path.parent}: no index.csv (`epam-data verify OUT --repair` rebuilds it)"
        )
        return index_rows
    header, rows = read_csv(index_path)
    absent = [c for c in INDEX_COLUMNS if c not in header and c not in ADDED_INDEX_COLUMNS]
    if absent:
        problems.append(f"{index_path}: missing columns {', '.join(absent)}")
    for row in rows:
        if row.get("sample_id") in index_rows:
            problems.append(f"{index_path}: {row.get('sample_id')} is listed twice")
        index_rows[row.get("sample_id", "")] = row
    return index_rows


def _row_problems(index_path: Path, facts: _GroupFacts, row: Row) -> list[str]:
    """Where the index row of a sample disagrees with its group (label, frame count)."""
    problems = []
    if row.get("label", "") != facts.label:
        problems.append(
            f"{index_path}: {facts.sample_id} has label {row.get('label')!r}, the shard says "
            f"{facts.label or None}"
        )
    if facts.frames is not None and row.get("frames") != str(facts.frames):
        problems.append(
            f"{index_path}: {facts.sample_id} has {row.get('frames')} frames, the shard holds "
            f"{facts.frames}"
        )
    return problems


@dataclass(frozen=True)
class _GroupFacts:
    """What verify needs to know of one sample group, read in a worker process."""

    sample_id: str
    problems: list[str]
    label: str  # "" when the group has none
    frames: int | None  # keypoints' T, None when it has no keypoints


@dataclass(frozen=True)
class _ShardFacts:
    """Problems of the file itself, and the facts of each of its groups in file order."""

    problems: list[str]
    groups: list[_GroupFacts]


def _group_facts(shard: Path, h5file: h5py.File, sample_id: str, deep: bool) -> _GroupFacts:
    try:
        group = local_group(h5file, sample_id)
        problems = group_problems(group, deep=deep)
        label = group.attrs.get("label")
        frames = group["keypoints"].shape[1] if "keypoints" in group else None
    except Exception as err:  # noqa: BLE001 (damaged metadata: verify reports, never raises)
        problems = [f"{shard.name}:/{sample_id}: cannot be checked ({one_line(err, 300)})"]
        return _GroupFacts(sample_id, problems, "", None)
    return _GroupFacts(sample_id, problems, "" if label is None else str(plain(label)), frames)


def _walk_shard(shard: Path, deep: bool) -> tuple[Path, _ShardFacts]:
    """Everything verify learns from one shard file. Never raises: a shard too damaged to walk is
    one problem line. Runs in a supervised worker process (`_walk_shards`)."""
    try:
        h5file = open_h5(shard)
    except OSError as err:
        return shard, _ShardFacts([f"{shard}: cannot be opened ({one_line(err, 300)})"], [])
    problems: list[str] = []
    groups: list[_GroupFacts] = []
    try:
        with h5file:
            if h5file.attrs.get("schema_version") != SCHEMA_VERSION:
                problems.append(
                    f"{shard}: schema_version {h5file.attrs.get('schema_version')!r}, expected "
                    f"{SCHEMA_VERSION}"
                )
            for sample_id in h5file:  # names: a link is not followed before it is checked
                groups.append(_group_facts(shard, h5file, sample_id, deep))
    except Exception as err:  # noqa: BLE001 (verify reports, never raises)
        problems.append(f"{shard}: cannot be read to the end ({one_line(err, 300)})")
    return shard, _ShardFacts(problems, groups)


def _lost_walk(shard: Path, reason: str) -> tuple[Path, _ShardFacts]:
    why = "loops" if reason.startswith(LATE) else "crashes"
    line = (
        f"{shard}: the HDF5 library {why} reading it ({reason}): the file is damaged; "
        "`epam-data verify OUT --repair` moves it aside"
    )
    return shard, _ShardFacts([line], [])


def _walk_shards(shards: Sequence[Path], deep: bool) -> list[tuple[Path, _ShardFacts]]:
    """(shard, facts) for every shard, in the order given. Each shard is walked in a worker process
    watched by epam_data.supervisor: bytes flipped in an HDF5 file's heap can make the library loop
    forever or crash, which must cost one problem line, not the verify (found by fuzzing)."""
    if not shards:
        return []
    largest = max(shard.stat().st_size if shard.exists() else 0 for shard in shards)
    timeout = WALK_TIMEOUT_S + largest / WALK_BYTES_PER_S
    walked = dict(
        supervised_map(
            functools.partial(_walk_shard, deep=deep),
            shards,
            workers=min(len(shards), usable_cores()),
            timeout=timeout,
            on_lost=_lost_walk,
        )
    )
    return [(shard, walked[shard]) for shard in shards]


def shards_damage(shards: Sequence[Path], *, deep: bool = True) -> dict[Path, list[str]]:
    """What is wrong inside each finished shard, without looking at the index (for `repair`): it
    does not open, cannot be walked, or a sample group fails its schema, checksums or value
    checks. Shards without a problem are left out."""
    damage = {}
    for shard, facts in _walk_shards(shards, deep):
        problems = facts.problems + [line for group in facts.groups for line in group.problems]
        if problems:
            damage[shard] = problems
    return damage


def _shard_problems(
    shard: Path,
    facts: _ShardFacts,
    index_path: Path,
    index_rows: dict[str, Row],
    found: dict[str, str],
) -> list[str]:
    """Problems of one walked shard and of its samples' index rows; records in `found` which shard
    holds each sample first (a sample in two shards is reported once, as that)."""
    problems = list(facts.problems)
    for group in facts.groups:
        if group.sample_id in found:
            problems.append(
                f"{group.sample_id}: in both {found[group.sample_id]} and {shard.name} "
                f"(overlapping parts?); the index uses {found[group.sample_id]}"
            )
            continue
        found[group.sample_id] = shard.name
        problems.extend(group.problems)
        row = index_rows.get(group.sample_id)
        if row is None:
            problems.append(
                f"{shard}: {group.sample_id} is not in index.csv (`epam-data verify OUT --repair` "
                "rebuilds it)"
            )
        elif row.get("shard") == shard.name:  # else a duplicate, reported above
            problems.extend(_row_problems(index_path, group, row))
    return problems


def verify_dataset(out_dir: str | Path, *, deep: bool = False) -> list[str]:
    """Problems of a prepared dataset folder, one line each; an empty list means it is consistent.

    Checks dataset.json, that every index row names a finished shard that holds the sample with the
    same label and frame count, that every shard opens with schema version 1, that every sample in a
    shard is in the index exactly once, and the datasets and attributes of every sample group.
    `deep` also reads every array (and decompresses the heatmaps). `.partial` files are not
    problems: a running or killed writer leaves them, and the next run of that part removes them.
    """
    out_dir = Path(out_dir)
    problems = _meta_problems(out_dir)
    index_path = out_dir / "index.csv"
    index_rows = _read_index(index_path, problems)
    shards = {shard.name: shard for shard in finished_shards(out_dir)}
    for sample_id, row in index_rows.items():
        if row.get("shard") not in shards:
            problems.append(
                f"{index_path}: {sample_id} is in {row.get('shard')!r}, "
                "which is not a finished shard"
            )
    found: dict[str, str] = {}
    for shard, facts in _walk_shards(list(shards.values()), deep):
        problems.extend(_shard_problems(shard, facts, index_path, index_rows, found))
    for sample_id, row in index_rows.items():
        if row.get("shard") in shards and sample_id not in found:
            problems.append(f"{index_path}: {sample_id} is not in {row.get('shard')}")
    return problems
