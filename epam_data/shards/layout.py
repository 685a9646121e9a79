"""The files of a prepared dataset folder: their names, and the CSV and time formats they share.

The folder layout is described in docs/shard-schema.md; every module of the package finds files
through the functions here, so a name is spelled once.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from epam_data.atomic import safe_cell
from epam_data.errors import one_line  # re-exported: writer and index use it from here

__all__ = [
    "SHARD_FILE",
    "csv_text",
    "finished_shards",
    "index_lock",
    "one_line",
    "parse_csv",
    "read_csv",
    "shards_dir",
    "sidecar",
    "utc_now",
]

SHARD_FILE = re.compile(r"^shard-(?:p\d+of\d+-)?\d{5,}\.h5$")


def shards_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "shards"


def index_lock(out_dir: str | Path) -> Path:
    """The lock held while index.csv, failures.csv, rejected.csv or dataset.json are replaced (and
    while the stale temporary files of killed writers are cleared)."""
    return Path(out_dir) / ".index.lock"


def finished_shards(out_dir: str | Path) -> list[Path]:
    """The finished (renamed) shards, in name order: the order of index.csv."""
    folder = shards_dir(out_dir)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if SHARD_FILE.match(path.name))


def sidecar(shard: Path) -> Path:
    """The CSV of a shard's index rows: written before the shard is renamed, so it travels with
    it."""
    return shard.with_suffix(".csv")


FREE_TEXT = ("label_name", "reason")  # the columns whose text cells `safe_cell` neutralises


def csv_text(
    rows: Sequence[Mapping[str, str]], columns: Sequence[str], *, header: bool = True
) -> str:
    """Rows as CSV text, as every CSV of the folder is written (so texts written apart can be
    joined)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore"
    )
    if header:
        writer.writeheader()
    writer.writerows(
        {key: safe_cell(value) if key in FREE_TEXT else value for key, value in row.items()}
        for row in rows
    )
    return buffer.getvalue()


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV written by this package."""
    with open(path, newline="", encoding="utf-8") as stream:
        return parse_csv(stream)


def parse_csv(stream: io.TextIOBase | io.StringIO) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of CSV text already open (index.csv read once, then parsed and copied)."""
    reader = csv.DictReader(stream)
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def utc_now() -> str:
    """UTC time in ISO 8601 with milliseconds: sortable as text across machines and time zones."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
