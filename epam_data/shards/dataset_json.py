"""dataset.json: the dataset, schema version and options every sample of a folder was made with.

A folder never mixes samples made with different options (docs/shard-schema.md): the first writer
creates the file, every later run or part compares its options with it and refuses to write when
they differ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from epam_data import __version__
from epam_data.atomic import write_text_atomic
from epam_data.errors import ShardError
from epam_data.shards.layout import index_lock, utc_now
from epam_data.shards.lock import FileLock
from epam_data.shards.schema import SCHEMA_VERSION

__all__ = ["read_dataset_json", "write_dataset_json"]


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
        raise ShardError(
            f"{path}: not valid JSON ({err}); restore it or remove it to start over"
        ) from err
    if not isinstance(meta, dict) or not isinstance(meta.get("dataset"), str):
        raise ShardError(f"{path}: no dataset name in it; restore it or remove it to start over")
    if not isinstance(meta.get("options", {}), dict):
        raise ShardError(
            f"{path}: 'options' is a {type(meta['options']).__name__}, not a mapping of option "
            "names to values; restore the file or remove it to start over"
        )
    return meta


def _check_same(
    out_dir: Path, existing: Mapping[str, Any], dataset: str, options: Mapping[str, Any]
) -> None:
    """Raise ShardError naming every difference between the folder's dataset.json and this run."""
    if existing["dataset"] != dataset:
        raise ShardError(
            f"{out_dir}: holds dataset {existing['dataset']!r} (dataset.json), not {dataset!r}; "
            "choose another --out"
        )
    if existing.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(
            f"{out_dir}: written with shard schema {existing.get('schema_version')!r}, this "
            f"version writes {SCHEMA_VERSION}; choose another --out"
        )
    old = existing.get("options", {})
    differ = [
        f"{key}: {old.get(key, '(unset)')!r} there, {options.get(key, '(unset)')!r} now"
        for key in sorted(set(old) | set(options))
        if old.get(key) != options.get(key)
    ]
    if differ:
        raise ShardError(
            f"{out_dir}: prepared with other options ({'; '.join(differ)}); re-run with the "
            "same options, or choose another --out"
        )


def write_dataset_json(
    out_dir: str | Path,
    dataset: str,
    options: Mapping[str, Any],
    *,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Create `<out>/dataset.json`, or check that an existing one describes the same dataset and
    options.

    `options` are the choices that shape every sample (pose backend and model ids, persons kept, RGB
    size, JPEG quality, frame stride, heatmap settings): a folder never mixes samples made with
    different ones, so a mismatch raises ShardError naming each difference. `info` (versions,
    command line, machine) is recorded when the file is created and never compared. Returns the
    file's content.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = json.loads(
        json.dumps(dict(options), sort_keys=True)
    )  # tuples -> lists, as they will be read back
    with FileLock(
        index_lock(out_dir)
    ):  # parts starting together: one creates it, the others compare
        existing = read_dataset_json(out_dir)
        if existing is not None:
            _check_same(out_dir, existing, dataset, options)
            return existing
        meta = {
            "dataset": dataset,
            "schema_version": SCHEMA_VERSION,
            "options": options,
            "created": utc_now(),
            "epam_version": __version__,
        }
        if info:
            meta["info"] = json.loads(json.dumps(dict(info), sort_keys=True, default=str))
        write_text_atomic(
            out_dir / "dataset.json", json.dumps(meta, indent=2, sort_keys=True) + "\n"
        )
        return meta
