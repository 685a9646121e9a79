"""Atomic writes: a reader sees the old file or the whole new one; a failed write leaves nothing
behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from epam_data.atomic import remove_stale_temps, write_atomic, write_text_atomic


def test_replaces_whole_and_returns_the_writers_result(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "index.csv"
    write_text_atomic(path, "a,b\n1,2\n")
    assert path.read_text() == "a,b\n1,2\n"
    assert write_atomic(path, lambda stream: stream.write(b"new")) == 3
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.csv"]  # no temporary file left


def test_a_failing_writer_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text("old")

    def half_then_fail(stream) -> None:
        stream.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.json"]


def test_usual_permissions(tmp_path: Path) -> None:
    path = tmp_path / "export.pkl"
    write_atomic(path, lambda stream: stream.write(b"x"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0o600


def test_csv_cells_that_spreadsheets_would_run_are_neutralised(tmp_path) -> None:
    """Label names such as `=HYPERLINK(...)` reach CSV files as text, not formulas; numbers stay."""
    import csv

    from epam_data.atomic import safe_cell, write_csv_atomic

    assert safe_cell("=1+2") == "'=1+2" and safe_cell("@SUM(A1)") == "'@SUM(A1)"
    assert safe_cell("-1") == "-1" and safe_cell("wave") == "wave" and safe_cell(-3) == -3
    path = tmp_path / "per_class.csv"
    write_csv_atomic(
        path, ["class_name", "accuracy"], [["+cmd|' /C calc'!A0", "0.5"], ["wave", "-1"]]
    )
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    assert rows[1] == ["'+cmd|' /C calc'!A0", "0.5"] and rows[2] == ["wave", "-1"]


def _killed_writer_leftovers(folder: Path, *names: str) -> list[Path]:
    """What `kill -9` during `write_atomic` leaves: the hidden temporary beside each target."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f".{name}.k1ll3d.tmp" for name in names]
    for path in paths:
        path.write_bytes(b"half a file")
    return paths


def test_stale_temporaries_are_cleared_where_no_writer_is_live(tmp_path: Path) -> None:
    """Left by killed writers, they are removed: by the function itself (only `.NAME.*.tmp`, never
    the real files), by an index rebuild (under the index lock), by `splits` in manifests/ and by
    a training run in its folder."""
    from epam_data.shards import rebuild_index

    keep = tmp_path / "index.csv"
    keep.write_text("real\n")
    stale = _killed_writer_leftovers(tmp_path, "index.csv", "rejected.csv", "dataset.json")
    assert remove_stale_temps(tmp_path) == sorted(stale) and keep.read_text() == "real\n"
    stale = _killed_writer_leftovers(tmp_path, "rejected.csv", "failures.csv")
    keep.unlink()
    rebuild_index(tmp_path)
    assert not any(path.exists() for path in stale)


def test_splits_and_training_clear_their_folders_leftovers(tmp_path: Path) -> None:
    from epam_data.splits import SplitReport, write_manifests
    from epam_model.config import TrainConfig
    from epam_model.distributed import DistEnv
    from epam_model.engine import _open_run_dir

    stale = _killed_writer_leftovers(tmp_path / "manifests", "xsub_train.csv")
    write_manifests(SplitReport(), {}, tmp_path)
    stale += _killed_writer_leftovers(tmp_path / "run", "last.pt", "metrics.csv")
    _open_run_dir(tmp_path / "run", TrainConfig(), DistEnv(), resume=False)
    assert not any(path.exists() for path in stale)
