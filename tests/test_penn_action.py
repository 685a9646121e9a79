"""Penn Action on its real annotation files (../shared/data/penn_action): the dataset adapter, the
joint mapping, import-penn-action (killed and resumed, with and without frames), the official
splits, extract on Penn's frame folders, and a short training run that learns.

Every test skips with the reason when ../shared is absent.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, kill_after_first_shard
from PIL import Image
from typer.testing import CliRunner

from epam_data.cli import app
from epam_data.datasets import scan_names
from epam_data.datasets.penn_action import PENN_CLASSES, read_penn_label
from epam_data.protocols import load_protocols
from epam_data.shards import ShardReader
from epam_data.splits import build_manifests
from epam_data.video import read_frames

PENN = SHARED / "data" / "penn_action"
runner = CliRunner()


@pytest.fixture(scope="module")
def labels() -> Path:
    if not (PENN / "labels").is_dir():
        pytest.skip(f"{PENN}/labels not found: the real Penn Action annotations live in ../shared")
    return PENN / "labels"


def read_index(out: Path) -> list[dict[str, str]]:
    with open(out / "index.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_release_has_2326_clips_15_classes_and_the_official_split(labels):
    names = sorted(path.stem for path in labels.glob("*.mat"))
    scan = scan_names("penn_action", names, labels_dir=labels)
    assert not scan.rejected
    assert len(scan.samples) == 2326
    assert {s.label_name for s in scan.samples} == set(PENN_CLASSES)
    assert [s.split for s in scan.samples].count("train") == 1258
    assert [s.split for s in scan.samples].count("test") == 1068
    assert {s.view for s in scan.samples} == {"front", "back", "left", "right"}
    frames, outside, rejected = build_manifests(
        scan.samples, load_protocols("penn_action")["official"]
    )
    assert (outside, rejected) == (0, [])
    sizes = {split: len(frame) for split, frame in frames.items()}
    assert sizes == {"train": 1131, "val": 127, "test": 1068}
    val, train = frames["val"], frames["train"]
    assert not set(val.sample_id) & set(train.sample_id)
    per_class = val.groupby("label").size()
    totals = (val.groupby("label").size() + train.groupby("label").size()).loc[per_class.index]
    assert len(per_class) == 15 and ((per_class - totals * 0.1).abs() <= 0.5).all()


def test_val_does_not_depend_on_the_other_clips_present(labels):
    names = sorted(path.stem for path in labels.glob("*.mat"))
    scan = scan_names("penn_action", names, labels_dir=labels)
    protocol = load_protocols("penn_action")["official"]
    full = build_manifests(scan.samples, protocol)[0]["val"]
    fewer = build_manifests(scan.samples[::2], protocol)[0]["val"]
    kept = set(s.sample_id for s in scan.samples[::2])
    assert set(fewer.sample_id) <= set(full.sample_id) | kept
    # a clip in val with everything present stays in val when half the clips are gone, mostly
    stayed = set(full.sample_id) & kept
    assert len(stayed & set(fewer.sample_id)) >= 0.6 * len(stayed)


def test_joints_map_to_coco17_on_a_known_frame(labels):
    label = read_penn_label(labels / "0001.mat")
    sample = label.sample
    assert (sample.sample_id, sample.label_name, sample.view, sample.split) == (
        "0001",
        "baseball_pitch",
        "back",
        "test",
    )
    assert label.keypoints.shape == (1, 151, 17, 2) and label.img_hw == (360, 480)
    # frame 0 of 0001.mat: head y 71.25, left shoulder y 102.75, right ankle y 321.0
    y = label.keypoints[0, 0, :, 1]
    assert y[0] == pytest.approx(71.25) and y[5] == pytest.approx(102.75)
    assert y[16] == pytest.approx(321.0)
    assert not label.keypoints[0, :, 1:5].any() and not label.scores[0, :, 1:5].any()
    scipy_io = pytest.importorskip("scipy.io")
    visibility = scipy_io.loadmat(labels / "0001.mat")["visibility"]
    coco = [0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert np.array_equal(label.scores[0][:, coco], visibility.astype(np.float32))


def test_import_is_killed_and_resumed_to_the_same_index(labels, tmp_path):
    out = tmp_path / "penn"
    args = ["import-penn-action", str(labels), "--out", str(out)]
    args += ["--limit", "400", "--samples-per-shard", "20", "--pose-only"]
    finished = kill_after_first_shard(args, out)
    assert finished and len(read_index(out)) < 400
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = read_index(out)
    assert len(rows) == 400 and len({row["sample_id"] for row in rows}) == 400
    assert {row["split"] for row in rows} == {"train", "test"}
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
    result = runner.invoke(app, ["splits", str(out)])
    assert result.exit_code == 0, result.output
    flags = {row["sample_id"]: row["split"] for row in rows if row["status"] == "ok"}
    for split in ("train", "val", "test"):
        with open(out / "manifests" / f"official_{split}.csv", newline="") as stream:
            ids = [row["sample_id"] for row in csv.DictReader(stream)]
        assert ids and all(flags[i] == ("test" if split == "test" else "train") for i in ids)


def write_penn_root(labels: Path, root: Path, clips: list[str], media: Path) -> None:
    """A Penn_Action/ folder: real label files, and frame folders of the label's size and length
    made from a real clip (a stand-in for the release's frames, which ../shared does not hold)."""
    (root / "labels").mkdir(parents=True)
    video = read_frames(media / "two_players_426x240.mp4", list(range(0, 40, 2)))
    for clip in clips:
        (root / "labels" / f"{clip}.mat").symlink_to(labels / f"{clip}.mat")
        label = read_penn_label(labels / f"{clip}.mat")
        height, width = label.img_hw
        folder = root / "frames" / clip
        folder.mkdir(parents=True)
        for index in range(label.keypoints.shape[1]):
            image = Image.fromarray(video[index % len(video)]).resize((width, height))
            image.save(folder / f"{index + 1:06d}.jpg", quality=85)


def test_import_with_frames_stores_rgb_cut_from_them(labels, media_dir, tmp_path):
    root = tmp_path / "Penn_Action"
    write_penn_root(labels, root, ["1114", "1959"], media_dir)
    out = tmp_path / "penn"
    args = ["import-penn-action", str(root), "--out", str(out), "--rgb-size", "64"]
    result = runner.invoke(app, [*args, "--heatmaps", "joint", "--heatmap-size", "32"])
    assert result.exit_code == 0, result.output
    reader = ShardReader(out)
    sample = reader.read("1959")
    assert sample.num_frames == 18 and len(sample.rgb) == 18
    assert sample.original_hw == (360, 480) and sample.joint_heatmaps.shape[1:] == (17, 32, 32)
    assert sample.boxes[0, :, 4].all()  # the annotated boxes, score 1
    assert sample.sample.label_name == "strum_guitar" and sample.sample.split == "test"
    assert sample.sample.path == "frames/1959"
    options = json.loads((out / "dataset.json").read_text())["options"]
    assert options["pose_backend"] == "penn-action-annotations" and options["rgb_size"] == 64


def test_import_reports_a_clip_whose_frames_are_missing(labels, media_dir, tmp_path):
    root = tmp_path / "Penn_Action"
    write_penn_root(labels, root, ["1114"], media_dir)
    (root / "labels" / "1117.mat").symlink_to(labels / "1117.mat")
    out = tmp_path / "penn"
    result = runner.invoke(app, ["import-penn-action", str(root), "--out", str(out)])
    assert result.exit_code == 1
    with open(out / "failures.csv", newline="") as stream:
        failures = list(csv.DictReader(stream))
    assert [row["sample_id"] for row in failures] == ["1117"]
    assert "no frame folder" in failures[0]["reason"]
    assert [row["sample_id"] for row in read_index(out)] == ["1114"]


def test_extract_runs_the_pose_backend_on_penn_frame_folders(labels, media_dir, tmp_path):
    frames = tmp_path / "frames" / "0001"
    frames.mkdir(parents=True)
    for index, frame in enumerate(read_frames(media_dir / "two_players_426x240.mp4", range(8))):
        Image.fromarray(frame).save(frames / f"{index + 1:06d}.jpg", quality=90)
    out = tmp_path / "penn_est"
    result = runner.invoke(
        app,
        [
            "extract",
            str(tmp_path / "frames"),
            "--dataset",
            "penn_action",
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--rgb-size",
            "64",
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = read_index(out)
    assert (row["sample_id"], row["label_name"], row["split"], row["view"]) == (
        "0001",
        "baseball_pitch",
        "test",
        "back",
    )
    assert row["frames"] == "8" and row["status"] == "ok"


CHANCE_LOSS = math.log(4)


def test_the_pose_stream_learns_penn_from_scratch_with_the_default_recipe(labels, tmp_path):
    """Four classes of real annotated skeletons, 16 training clips each, no --lr: the training loss
    ends well below chance and the held-out clips are mostly right."""
    out = tmp_path / "penn"
    result = runner.invoke(app, ["import-penn-action", str(labels), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [row for row in read_index(out) if row["status"] == "ok"]
    chosen = ("bench_press", "jumping_jacks", "pullup", "tennis_serve")
    write_subset(out, rows, chosen, per_class={"train": 16, "test": 8})
    from epam_model.cli import app as train_app

    run = tmp_path / "run"
    args = ["train", str(out), "--protocol", "four", "--stream", "pose", "--out", str(run)]
    args += ["--epochs", "12", "--pose-frames", "8", "--heatmap-size", "24", "--batch-size", "8"]
    args += ["--workers", "0", "--no-progress", "--seed", "0"]
    result = runner.invoke(train_app, args)
    assert result.exit_code == 0, result.output
    with open(run / "metrics.csv", newline="") as stream:
        metrics = list(csv.DictReader(stream))
    assert float(metrics[-1]["train_loss"]) < 0.5 * CHANCE_LOSS
    assert max(float(row["val_top1"]) for row in metrics) >= 0.75


def write_subset(out: Path, rows: list[dict], chosen: tuple[str, ...], per_class: dict) -> None:
    """manifests/four_{train,test,classes}.csv: the first clips of each chosen class by the
    official flag."""
    folder = out / "manifests"
    folder.mkdir(exist_ok=True)
    for split, count in per_class.items():
        picked = []
        for label, name in enumerate(chosen):
            ids = [r["sample_id"] for r in rows if r["label_name"] == name and r["split"] == split]
            picked += [(sample_id, label, name) for sample_id in ids[:count]]
        with open(folder / f"four_{split}.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["sample_id", "label", "label_name"])
            writer.writerows(picked)
    with open(folder / "four_classes.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["label", "name"])
        writer.writerows(enumerate(chosen))


@pytest.mark.parametrize("in_flight", ["1", "2"])
def test_extract_starts_on_the_annotated_person_box(labels, media_dir, tmp_path, in_flight):
    """With Penn Action's labels, extract starts its track on the label's person box, so with one
    person kept it is the annotated one, not whoever the detector finds first: a label boxing the
    left player keeps the left player, one boxing the right player the right one; the same with
    two clips tracked together (`--in-flight 2`: each clip's tracker gets its own box)."""
    import scipy.io

    from epam_data.pose import load_backend

    video = read_frames(media_dir / "two_players_426x240.mp4", range(8))
    clips = ["0001", "0002"] if in_flight == "2" else ["0001"]
    for clip in clips:
        frames = tmp_path / "frames" / clip
        frames.mkdir(parents=True)
        for index, frame in enumerate(video):
            Image.fromarray(frame).save(frames / f"{index + 1:06d}.jpg", quality=95)
    players = load_backend("blazepose", max_persons=2).estimate(video[:1])[0].boxes[:, :4]
    assert len(players) == 2
    mat = scipy.io.loadmat(labels / "0001.mat")
    kept_x = {}
    for side, box in zip(("left", "right"), sorted(players.tolist())):
        label_dir = tmp_path / f"labels_{side}"
        label_dir.mkdir()
        boxes = np.tile(np.asarray(box, np.float64), (mat["x"].shape[0], 1))
        fields = {key: value for key, value in mat.items() if not key.startswith("__")}
        for clip in clips:
            scipy.io.savemat(label_dir / f"{clip}.mat", {**fields, "bbox": boxes})
        out = tmp_path / f"out_{side}"
        args = ["extract", str(tmp_path / "frames"), "--dataset", "penn_action", "--max-persons"]
        args += ["1", "--labels", str(label_dir), "--out", str(out), "--no-rgb"]
        result = runner.invoke(app, [*args, "--in-flight", in_flight])
        assert result.exit_code == 0, result.output
        for clip in clips:
            sample = ShardReader(out).read(clip)
            kept_x[side] = float(np.median(sample.keypoints[0, :, [5, 6, 11, 12], 0]))
            assert box[0] <= kept_x[side] <= box[2], (side, box, kept_x[side])
    assert kept_x["left"] < kept_x["right"]
