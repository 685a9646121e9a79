"""Atomic writes: a reader sees the old file or the whole new one; a failed write leaves nothing
behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from epam_data.atomic import write_atomic, write_text_atomic


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
