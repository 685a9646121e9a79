"""index.csv and failures.csv: what the finished shards hold, kept current at the cost of changes.

Index rows travel with their shard (docs/shard-schema.md): a writer writes a shard's rows to its
sidecar CSV before it renames the shard into place. index.csv is derived from the sidecars of the
finished shards, in shard-name order, and only ever replaced whole (written beside, fsynced,
renamed) under `.index.lock`, so it lists finished samples only, at any moment and after `kill -9`
at any moment. After each shard a writer calls `rebuild_index(out_dir, incremental=True)`, which
reads the old index once and the sidecars of the shards it does not list yet (normally just the one
finished), so a run of N shards costs O(N) sidecar reads, not O(N^2). A full rebuild from every
sidecar remains for recovery: when index.csv is missing or unreadable, lists a shard that is gone,
or when adding the new shards would change which copy of a sample is listed.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from epam_data.atomic import remove_stale_temps, write_atomic, write_text_atomic
from epam_data.errors import ShardError
from epam_data.shards.h5io import local_group, open_h5, plain
from epam_data.shards.layout import (
    csv_text,
    finished_shards,
    index_lock,
    parse_csv,
    read_csv,
    shards_dir,
    sidecar,
)
from epam_data.shards.lock import FileLock

__all__ = [
    "ADDED_INDEX_COLUMNS",
    "FAILURE_COLUMNS",
    "INDEX_COLUMNS",
    "done_ids",
    "done_shards",
    "index_row",
    "rebuild_index",
    "shard_rows",
]

# index.csv: the sample's identity and labels, then `persons` (M kept, for `epam-data info` and
# filtering), `total_frames` (frames in the source video, against `frames` kept), `video` (clips cut
# from one PKU-MMD video share it; `splits --exclude` matches on it) and `source` (the input file,
# to trace a sample back), then `split` (the dataset's own split flag where it has one: Penn
# Action).
INDEX_COLUMNS = (
    "sample_id",
    "shard",
    "label",
    "label_name",
    "subject",
    "camera",
    "setup",
    "view",
    "replication",
    "frames",
    "status",
    "persons",
    "total_frames",
    "video",
    "source",
    "split",
)
# Columns added after index.csv was first released: an index written before lacks them, and is
# still whole (the next shard written rewrites it with them).
ADDED_INDEX_COLUMNS = ("split",)
FAILURE_COLUMNS = ("sample_id", "source", "reason", "time")

Row = dict[str, str]


def index_row(attrs: Mapping[str, Any], persons: int, frames: int, shard: str) -> Row:
    """One index.csv row from a sample's attributes; missing values are empty cells."""
    row = {
        column: "" if attrs.get(column) is None else str(plain(attrs[column]))
        for column in INDEX_COLUMNS
    }
    row.update(shard=shard, frames=str(frames), persons=str(persons))
    return row


def _scan_shard_rows(shard: Path) -> list[Row]:
    """Index rows of a finished shard, read from the shard itself (its sample groups and their
    attributes)."""
    with open_h5(shard) as h5file:
        groups = [local_group(h5file, sample_id) for sample_id in h5file]  # links not followed
        return [
            index_row(
                group.attrs, group["keypoints"].shape[0], group["keypoints"].shape[1], shard.name
            )
            for group in groups
        ]


def shard_rows(shard: Path, *, rescan: bool = False, repair: bool = False) -> list[Row]:
    """Index rows of a finished shard: its sidecar when present and whole, else the shard (rewriting
    the sidecar when `repair`). Raises OSError, KeyError or ShardError when neither can be read."""
    path = sidecar(shard)
    if not rescan and path.is_file():
        try:
            header, rows = read_csv(path)
        except (OSError, csv.Error):
            pass
        else:
            if tuple(header) == INDEX_COLUMNS:
                return rows
    rows = _scan_shard_rows(shard)
    if repair:
        write_text_atomic(path, csv_text(rows, INDEX_COLUMNS))
    return rows


def _readable_rows(shard: Path, *, rescan: bool = False) -> list[Row] | None:
    """`shard_rows` with repair, or None (and a warning) for a shard that cannot be read: it is left
    out."""
    try:
        return shard_rows(shard, rescan=rescan, repair=True)
    except (OSError, KeyError, ShardError) as err:
        warnings.warn(f"{shard}: cannot be read ({err}); left out of index.csv", stacklevel=4)
        return None


def _full_rebuild(out_dir: Path, rescan: bool) -> list[Row]:
    """index.csv from the sidecars (or shards) of every finished shard; the first shard holding a
    sample wins."""
    rows: list[Row] = []
    seen: set[str] = set()
    for shard in finished_shards(out_dir):
        for row in _readable_rows(shard, rescan=rescan) or []:
            if row["sample_id"] not in seen:
                seen.add(row["sample_id"])
                rows.append(row)
    write_text_atomic(out_dir / "index.csv", csv_text(rows, INDEX_COLUMNS))
    return rows


def _current_index(path: Path) -> tuple[bytes, list[Row]] | None:
    """index.csv's bytes and rows, or None when it is missing, unreadable or not in this package's
    format."""
    try:
        data = path.read_bytes()
        header, rows = parse_csv(io.StringIO(data.decode("utf-8"), newline=""))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if tuple(header) != INDEX_COLUMNS or not data.endswith(b"\n"):
        return None
    return data, rows


def _new_rows(out_dir: Path, rows: list[Row]) -> list[Row] | None:
    """Rows of the finished shards that `rows` do not list, in name order; None when only a full
    rebuild is right (a listed shard is gone, or a new shard sorts before the one listing a sample
    they share)."""
    finished = {shard.name: shard for shard in finished_shards(out_dir)}
    listed_shards = {row["shard"] for row in rows}
    if not listed_shards <= finished.keys():
        return None
    listed = {}
    for row in rows:
        listed.setdefault(row["sample_id"], row["shard"])
    new: list[Row] = []
    for name in sorted(finished.keys() - listed_shards):
        for row in _readable_rows(finished[name]) or []:
            first = listed.setdefault(row["sample_id"], name)
            if first == name:
                new.append(row)
            elif first > name:  # the full rebuild would list this shard's copy instead
                return None
    return new


def _incremental_update(out_dir: Path) -> list[Row] | None:
    """Add the rows of the shards index.csv lacks (old bytes + new rows, replaced atomically); all
    rows now, or None when a full rebuild is needed. Costs one read of index.csv and one sidecar per
    new shard."""
    path = out_dir / "index.csv"
    current = _current_index(path)
    if current is None:
        return None
    data, rows = current
    new = _new_rows(out_dir, rows)
    if new is None:
        return None
    if not new:
        return rows
    if not rows or min(row["shard"] for row in new) > max(
        row["shard"] for row in rows
    ):  # usual: new sort last
        tail = csv_text(new, INDEX_COLUMNS, header=False).encode("utf-8")
        write_atomic(path, lambda stream: (stream.write(data), stream.write(tail)))
        return rows + new
    merged = sorted(
        rows + new, key=lambda row: row["shard"]
    )  # another part's shards: keep name order
    write_text_atomic(path, csv_text(merged, INDEX_COLUMNS))
    return merged


def _write_failures(out_dir: Path, indexed: set[str]) -> None:
    """failures.csv: each writer's latest failure per sample, minus the samples now in the
    index."""
    latest: dict[str, Row] = {}
    for log in sorted(shards_dir(out_dir).glob("*.failures.csv")):
        try:
            logged = read_csv(log)[1]
        except (OSError, csv.Error):
            continue
        for row in sorted(logged, key=lambda r: r.get("time", "")):
            if row.get("sample_id"):
                latest[row["sample_id"]] = row
    failures = [row for sample_id, row in sorted(latest.items()) if sample_id not in indexed]
    write_text_atomic(out_dir / "failures.csv", csv_text(failures, FAILURE_COLUMNS))


def rebuild_index(out_dir: str | Path, *, rescan: bool = False, incremental: bool = False) -> int:
    """Rewrite index.csv from the finished shards and failures.csv from the writers' failure logs.

    Safe while other writers run: it holds `<out>/.index.lock` and replaces both files atomically.
    Sidecars are trusted unless `rescan`, which re-reads every shard (and rewrites its sidecar). A
    sample found in two shards (parts that overlapped) is listed once, from the first shard in name
    order; `verify_dataset` reports it. A shard that cannot be opened is left out with a warning.
    `incremental` (what ShardWriter uses after each shard) reads only the sidecars of the shards
    index.csv lacks and gives the same file; it falls back to the full rebuild when the index is
    missing or lists a shard that is gone. Returns the number of samples in index.csv.
    """
    if rescan and incremental:
        raise ValueError("rebuild_index: rescan re-reads every shard, so it cannot be incremental")
    out_dir = Path(out_dir)
    shards_dir(out_dir).mkdir(parents=True, exist_ok=True)
    with FileLock(index_lock(out_dir)):
        rows = _incremental_update(out_dir) if incremental else None
        if rows is None:
            rows = _full_rebuild(out_dir, rescan)
        _write_failures(out_dir, {row["sample_id"] for row in rows})
        # left by writers killed mid-write (index, failures, rejected, dataset.json); we hold the
        # lock, so none is live
        remove_stale_temps(out_dir)
    return len(rows)


def done_shards(out_dir: Path) -> dict[str, str]:
    """sample_id -> shard file name, over the finished shards (first shard in name order wins)."""
    done: dict[str, str] = {}
    for shard in finished_shards(out_dir):
        try:
            rows = shard_rows(shard)
        except (OSError, KeyError, ShardError) as err:  # its samples count as not done: redone
            warnings.warn(
                f"{shard}: cannot be read ({err}); its samples count as not done", stacklevel=3
            )
            continue
        for row in rows:
            done.setdefault(row["sample_id"], shard.name)
    return done


def done_ids(out_dir: str | Path) -> set[str]:
    """Ids of the samples in finished shards: a re-run skips these and (re)does everything else.

    Read from the shards and their sidecars, not from index.csv, so it is right even when a writer
    was killed between finishing a shard and updating the index.
    """
    return set(done_shards(Path(out_dir)))
