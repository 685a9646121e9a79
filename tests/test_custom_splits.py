"""`epam-data splits OUT --by FIELD`: splits for datasets without an official protocol.

The group choice is checked on its own (whole groups, shares, stratification, seeds) and through the
CLI on prepared folders written by the real shard writer: NTU-named samples (subject, camera in the
index) and a generic `--list` CSV whose subject column reaches the index.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import prepared_sample
from typer.testing import CliRunner

from epam_data.cli import app
from epam_data.custom_splits import hold_out_groups
from epam_data.datasets import scan_generic
from epam_data.shards import ShardWriter, write_dataset_json

runner = CliRunner()


def test_whole_groups_are_held_out_with_each_class_near_the_share():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 2000).astype(str)
    labels = rng.integers(0, 5, 2000)
    held = hold_out_groups(labels, groups, 0.2, seed=0)
    for group in np.unique(groups):  # a group is on one side only
        assert len(set(held[groups == group])) == 1
    for label in range(5):
        assert held[labels == label].mean() == pytest.approx(0.2, abs=0.05)
    assert np.array_equal(held, hold_out_groups(labels, groups, 0.2, seed=0))
    assert not np.array_equal(held, hold_out_groups(labels, groups, 0.2, seed=1))


def test_two_groups_give_one_to_each_side_whatever_the_share():
    labels, groups = np.zeros(10, int), np.array(["a"] * 9 + ["b"])
    for fraction in (0.01, 0.5, 0.99):
        held = hold_out_groups(labels, groups, fraction, seed=0)
        assert 0 < held.sum() < 10


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture
def ntu_folder(tmp_path) -> Path:
    write_dataset_json(tmp_path, "ntu60", {"pose_backend": "test"})
    with ShardWriter(tmp_path) as writer:
        for index in range(120):
            writer.write(prepared_sample(index, persons=1, frames=4, rgb=False))
    return tmp_path


def test_by_subject_keeps_every_subject_in_one_split(ntu_folder):
    result = runner.invoke(app, ["splits", str(ntu_folder), "--by", "subject", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "class balance" in result.output
    rows = {
        s: read(ntu_folder / "manifests" / f"by_subject_{s}.csv") for s in ("train", "val", "test")
    }
    subjects = {s: {r["subject"] for r in part} for s, part in rows.items()}
    assert not subjects["train"] & subjects["test"] and not subjects["val"] & subjects["train"]
    assert not subjects["val"] & subjects["test"]
    assert sum(len(part) for part in rows.values()) == 120
    assert 0.1 <= len(rows["test"]) / 120 <= 0.3
    assert list(rows["test"][0])[:4] == ["sample_id", "label", "label_name", "video"]
    classes = read(ntu_folder / "manifests" / "by_subject_classes.csv")
    assert classes[0] == {"label": "0", "name": "drink water"}


def test_named_test_values_and_random(ntu_folder):
    args = ["splits", str(ntu_folder), "--by", "camera", "--test", "2", "--val-fraction", "0"]
    result = runner.invoke(app, [*args, "--name", "cv"])
    assert result.exit_code == 0, result.output
    assert {r["camera"] for r in read(ntu_folder / "manifests" / "cv_test.csv")} == {"2"}
    assert {r["camera"] for r in read(ntu_folder / "manifests" / "cv_train.csv")} == {"1", "3"}
    assert not (ntu_folder / "manifests" / "cv_val.csv").exists()
    result = runner.invoke(app, ["splits", str(ntu_folder), "--by", "camera", "--test", "9"])
    assert (
        result.exit_code == 1 and "no sample has camera 9; values present: 1, 2, 3" in result.output
    )
    result = runner.invoke(
        app, ["splits", str(ntu_folder), "--by", "random", "--test-fraction", "0.25"]
    )
    assert result.exit_code == 0, result.output
    assert len(read(ntu_folder / "manifests" / "random_test.csv")) == 30


def test_a_generic_list_carries_its_subject_column_into_the_index(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,subject,view\na/1.mp4,wave,7,front\nb/2.mp4,jump,8,\n")
    samples = scan_generic(listing).samples
    assert [(s.subject, s.view) for s in samples] == [(7, "front"), (8, "")]
    write_dataset_json(tmp_path / "out", "generic", {"pose_backend": "test"})
    with ShardWriter(tmp_path / "out") as writer:
        for index, sample in enumerate(samples * 10):
            sample = dataclasses.replace(sample, sample_id=f"{sample.sample_id}_{index}")
            writer.write(
                dataclasses.replace(prepared_sample(index, persons=1, rgb=False), sample=sample)
            )
    result = runner.invoke(
        app, ["splits", str(tmp_path / "out"), "--by", "subject", "--val-fraction", "0"]
    )
    assert result.exit_code == 0, result.output
    test = read(tmp_path / "out" / "manifests" / "by_subject_test.csv")
    train = read(tmp_path / "out" / "manifests" / "by_subject_train.csv")
    assert len(test) == len(train) == 10 and {r["subject"] for r in test} != {
        r["subject"] for r in train
    }
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,subject\na.mp4,wave,seven\n")
    assert "subject 'seven' is not an integer" in scan_generic(bad).rejected[0].reason
