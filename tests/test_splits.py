"""Protocol membership on constructed name lists and on the official lists in ../shared."""

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import read_list, read_shared_csv

from epam_data.datasets import scan_names
from epam_data.errors import EpamError, ProtocolError
from epam_data.splits import make_splits, scan_index


def ntu_names(setups, cameras, subjects, replications, actions, suffix="_rgb.avi"):
    return [
        f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{a:03d}{suffix}"
        for s, c, p, r, a in itertools.product(setups, cameras, subjects, replications, actions)
    ]


def manifest(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "manifests" / f"{name}.csv")


def test_ntu60_rules_on_a_constructed_grid(tmp_path):
    names = ntu_names(range(1, 3), range(1, 4), range(1, 41), (1, 2), (1, 50, 60))
    report = make_splits(scan_names("ntu60", names), "ntu60", tmp_path)
    per_subject = 2 * 3 * 2 * 3
    assert len(manifest(tmp_path, "xsub_train")) == 20 * per_subject
    assert len(manifest(tmp_path, "xsub_test")) == 20 * per_subject
    per_camera = 2 * 40 * 2 * 3
    assert len(manifest(tmp_path, "xview_train")) == 2 * per_camera
    assert len(manifest(tmp_path, "xview_test")) == per_camera
    train = manifest(tmp_path, "xsub_train")
    assert set(train["subject"]) == {
        1,
        2,
        4,
        5,
        8,
        9,
        13,
        14,
        15,
        16,
        17,
        18,
        19,
        25,
        27,
        28,
        31,
        34,
        35,
        38,
    }
    assert set(manifest(tmp_path, "xview_test")["camera"]) == {1}
    assert set(train["label"]) == {0, 49, 59}
    assert list(train.columns[:3]) == ["sample_id", "label", "label_name"]
    assert train["sample_id"].is_monotonic_increasing
    assert report.rejected == [] and report.protocol_errors == []


def test_ntu120_xset_and_xsub_on_a_constructed_grid(tmp_path):
    names = ntu_names(range(1, 33), (1,), (1, 3, 45, 41), (1,), (1, 120))
    make_splits(scan_names("ntu120", names), "ntu120", tmp_path)
    assert set(manifest(tmp_path, "xset_train")["setup"]) == set(range(2, 33, 2))
    assert set(manifest(tmp_path, "xset_test")["setup"]) == set(range(1, 32, 2))
    assert set(manifest(tmp_path, "xsub_train")["subject"]) == {1, 45}
    assert set(manifest(tmp_path, "xsub_test")["subject"]) == {3, 41}
    classes = pd.read_csv(tmp_path / "manifests" / "xsub_classes.csv")
    assert len(classes) == 120 and classes["label"].tolist() == list(range(120))


# Samples on the official missing-skeleton lists per split = split size with all samples minus the
# published size without them (protocols/ntu_split_sizes.csv); the lists are real NTU names.
@pytest.mark.parametrize("dataset", ["ntu60", "ntu120"])
def test_missing_lists_fall_in_splits_like_the_published_sizes(protocols_dir, tmp_path, dataset):
    names = read_list(protocols_dir / f"{dataset}_missing.txt")
    report = make_splits(scan_names(dataset, names), dataset, tmp_path)
    assert report.rejected == []
    for row in read_shared_csv(protocols_dir / "ntu_split_sizes.csv"):
        if row["dataset"] != dataset:
            continue
        for split in ("train", "test"):
            expected = int(row[f"{split}_all"]) - int(row[f"{split}_without_missing"])
            assert len(manifest(tmp_path, f"{row['benchmark']}_{split}")) == expected


def test_exclude_list_removes_exactly_its_samples(protocols_dir, tmp_path):
    missing = read_list(protocols_dir / "ntu60_missing.txt")[:40]
    names = [f"{name}_rgb.avi" for name in missing] + ntu_names((1,), (1,), (1, 3), (1,), (1, 2))
    exclude = missing + ["S001C001P001R001A001_rgb.avi", "S099C001P001R001A001"]
    report = make_splits(scan_names("ntu60", names), "ntu60", tmp_path, exclude=exclude)
    assert report.excluded == 41
    kept = pd.concat([manifest(tmp_path, "xsub_train"), manifest(tmp_path, "xsub_test")])
    assert sorted(kept["sample_id"]) == [
        "S001C001P001R001A002",
        "S001C001P003R001A001",
        "S001C001P003R001A002",
    ]
    assert any("1 of the 42 excluded names matched no sample" in note for note in report.notes)


def test_toyota_rules_reproduce_the_authors_lists(protocols_dir, tmp_path):
    """Rules applied to all clips of the authors' CS lists give back their CS, CV1 and CV2 lists
    exactly."""

    def listed(protocol, part):
        return {
            name.removesuffix(".mp4")
            for name in read_list(protocols_dir / f"toyota_i3d_{protocol}_{part}.txt")
            if not name.startswith("Pour.Fromcup")
        }

    clips = [
        name
        for part in ("train", "validation", "test")
        for name in read_list(protocols_dir / f"toyota_i3d_cs_{part}.txt")
    ]
    report = make_splits(scan_names("toyota", clips), "toyota", tmp_path)
    assert len(report.rejected) == 14 and all("Pour.Fromcup" in r.name for r in report.rejected)
    for protocol in ("cs", "cv1", "cv2"):
        for part, split in (("train", "train"), ("validation", "val"), ("test", "test")):
            assert set(manifest(tmp_path, f"{protocol}_{split}")["sample_id"]) == listed(
                protocol, part
            )
    sizes = {row["protocol"]: row for row in report.counts}
    assert (sizes["cs"]["train"], sizes["cs"]["val"], sizes["cs"]["test"]) == (8829, 1853, 5433)
    assert sizes["cv1"]["in no split"] == 0


def test_toyota_cv_labels_are_indices_in_the_19_class_list(tmp_path):
    clips = [
        "Walk_p03_r00_v01_c01.mp4",
        "Cook.Cut_p03_r00_v01_c01.mp4",
        "Cutbread_p03_r00_v01_c02.mp4",
    ]
    make_splits(scan_names("toyota", clips), "toyota", tmp_path)
    cv_train = manifest(tmp_path, "cv2_train")
    assert cv_train[["sample_id", "label", "label_name"]].values.tolist() == [
        ["Walk_p03_r00_v01_c01", 18, "Walk"]
    ]
    cs_train = manifest(tmp_path, "cs_train")
    assert dict(zip(cs_train["label_name"], cs_train["label"])) == {
        "Walk": 29,
        "Cook.Cut": 2,
        "Cutbread": 5,
    }


@pytest.fixture
def pku_labels(protocols_dir, tmp_path):
    """Label files with the official number of instances per video (pku_mmd_videos.csv)."""
    videos = read_shared_csv(protocols_dir / "pku_mmd_videos.csv")
    labels = tmp_path / "labels"
    labels.mkdir()
    for row in videos:
        lines = [f"{k % 51 + 1},{k * 100},{k * 100 + 60},1" for k in range(int(row["instances"]))]
        (labels / f"{row['video_id']}.txt").write_text("\n".join(lines) + "\n")
    splits_dir = tmp_path / "split"
    splits_dir.mkdir()
    for ours, theirs in (
        ("pku_mmd_cross_subject.txt", "cross-subject.txt"),
        ("pku_mmd_cross_view.txt", "cross-view.txt"),
    ):
        (splits_dir / theirs).write_text("\n".join(read_list(protocols_dir / ours)) + "\n")
    return videos, labels, splits_dir


def test_pku_split_files_give_the_official_clip_counts(pku_labels, tmp_path):
    videos, labels, splits_dir = pku_labels
    scan = scan_names("pku_mmd", [row["video_id"] for row in videos], labels_dir=labels)
    out = tmp_path / "out"
    report = make_splits(scan, "pku_mmd", out, splits_dir=splits_dir)
    sizes = {row["protocol"]: (row["train"], row["test"]) for row in report.counts}
    assert sizes == {"cs": (18841, 2704), "cv": (14357, 7188)}
    cs_test_videos = set(manifest(out, "cs_test")["video"])
    assert cs_test_videos == {
        row["video_id"] for row in videos if row["cross_subject"] == "validation"
    }
    assert set(manifest(out, "cv_test")["view"]) == {"M"}
    first = manifest(out, "cs_train").iloc[0]
    assert (first["sample_id"], first["start_frame"], first["end_frame"]) == (
        "0002-L-A01-N01",
        0,
        60,
    )


def test_pku_cv_falls_back_to_the_view_rule_and_cs_needs_its_file(pku_labels, tmp_path):
    videos, labels, _ = pku_labels
    scan = scan_names("pku_mmd", [row["video_id"] for row in videos], labels_dir=labels)
    report = make_splits(scan, "pku_mmd", tmp_path)
    assert [row["protocol"] for row in report.counts] == ["cv"]
    assert (report.counts[0]["train"], report.counts[0]["test"]) == (14357, 7188)
    assert "used the official rule on view" in report.notes[0]
    assert (
        "pass --splits-dir DIR" in report.protocol_errors[0]
        and "cross-subject.txt" in report.protocol_errors[0]
    )
    assert not (tmp_path / "manifests" / "cs_train.csv").exists()


def test_pku_video_in_no_list_is_reported(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    for video in ("0002-L", "0001-L"):
        (labels / f"{video}.txt").write_text("1,0,10,1\n")
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    (split_dir / "cross-subject.txt").write_text(
        "Training videos: \n0002-L, \nValidataion videos: \n0003-L,\n"
    )
    report = make_splits(
        scan_names("pku_mmd", ["0002-L", "0001-L"], labels_dir=labels),
        "pku_mmd",
        tmp_path,
        protocols=["cs"],
        splits_dir=split_dir,
    )
    assert [r.name for r in report.rejected] == ["0001-L-A01-N01"]
    assert "video 0001-L is in no split of pku_mmd cs" in report.rejected[0].reason


def test_splits_from_a_prepared_dataset_folder(tmp_path):
    index = pd.DataFrame(
        {
            "sample_id": [
                "S001C001P001R001A001",
                "S001C002P003R001A002",
                "S001C003P002R001A003",
                "S001C001P001R001A004",
            ],
            "shard": ["shards/shard-00000.h5"] * 4,
            "label": [0, 1, 2, 7],
            "status": ["ok", "ok", "failed", "ok"],
        }
    )
    index.to_csv(tmp_path / "index.csv", index=False)
    (tmp_path / "dataset.json").write_text(json.dumps({"dataset": "ntu60", "schema_version": 1}))
    dataset, scan = scan_index(tmp_path)
    assert dataset == "ntu60"
    assert [s.sample_id for s in scan.samples] == ["S001C001P001R001A001", "S001C002P003R001A002"]
    assert "index.csv label 7 but the name says 3" in scan.rejected[0].reason
    make_splits(scan, dataset, tmp_path)
    assert manifest(tmp_path, "xsub_train")["sample_id"].tolist() == ["S001C001P001R001A001"]
    assert manifest(tmp_path, "xsub_test")["sample_id"].tolist() == ["S001C002P003R001A002"]


def test_index_without_dataset_name(tmp_path):
    pd.DataFrame({"sample_id": ["S001C001P001R001A001"]}).to_csv(
        tmp_path / "index.csv", index=False
    )
    with pytest.raises(EpamError, match="pass --dataset"):
        scan_index(tmp_path)
    with pytest.raises(EpamError, match="no index.csv"):
        scan_index(tmp_path / "nowhere")


def test_nothing_parsed_and_unknown_protocol_are_errors(tmp_path):
    with pytest.raises(EpamError, match="no usable ntu60 sample"):
        make_splits(scan_names("ntu60", ["nope.avi"]), "ntu60", tmp_path)
    with pytest.raises(ProtocolError, match="unknown protocol xset for ntu60"):
        make_splits(
            scan_names("ntu60", ["S001C001P001R001A001"]), "ntu60", tmp_path, protocols=["xset"]
        )


def test_rerun_overwrites_and_leaves_no_partial_files(tmp_path):
    names = ntu_names((1,), (1, 2), (1, 3), (1,), (1,))
    make_splits(scan_names("ntu60", names + ["bad"]), "ntu60", tmp_path)
    assert (tmp_path / "manifests" / "rejected.csv").exists()
    make_splits(scan_names("ntu60", names), "ntu60", tmp_path)
    files = sorted(p.name for p in (tmp_path / "manifests").iterdir())
    assert files == [
        "xsub_classes.csv",
        "xsub_test.csv",
        "xsub_train.csv",
        "xview_classes.csv",
        "xview_test.csv",
        "xview_train.csv",
    ]
