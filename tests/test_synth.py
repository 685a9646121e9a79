"""epam_data.synth.make_synth_dataset: valid prepared datasets whose classes differ by motion, and
`epam-data synth`."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from epam_data.cli import app
from epam_data.errors import EpamError, ShardError
from epam_data.heatmaps import COCO17_FLIP_PERM
from epam_data.shards import ShardReader, read_dataset_json, verify_dataset
from epam_data.synth import SYNTH_MOTIONS, make_synth_dataset, synth_class_names, synth_sample


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return make_synth_dataset(
        tmp_path_factory.mktemp("synth") / "data",
        classes=8,
        samples=48,
        frames=40,
        heatmaps=("joint", "limb"),
    )


def test_files_are_valid(synth_dir):
    assert verify_dataset(synth_dir, deep=True) == []
    meta = read_dataset_json(synth_dir)
    assert meta["dataset"] == "synth" and meta["options"]["classes"] == 8
    reader = ShardReader(synth_dir)
    assert len(reader) == 48
    sample = reader["synth00009_raise_both_arms"]
    assert sample.keypoints.shape == (1, 40, 17, 2) and sample.sample.label == 1
    assert sample.original_hw == (240, 320) and len(sample.rgb) == 40
    assert sample.joint_heatmaps.shape == (40, 17, 56, 56) and sample.limb_heatmaps.shape == (
        40,
        17,
        56,
        56,
    )
    x1, y1, x2, y2 = sample.crop_box
    assert x2 - x1 == y2 - y1  # square, as extract cuts it
    kp = sample.keypoints[0]
    assert (
        (kp[..., 0] > x1).all()
        and (kp[..., 0] < x2).all()
        and (kp[..., 1] > y1).all()
        and (kp[..., 1] < y2).all()
    )


def test_manifests_are_stratified_and_readable(synth_dir):
    folder = synth_dir / "manifests"
    classes = pd.read_csv(folder / "synth_classes.csv")
    assert list(classes.columns) == ["label", "name"] and classes[
        "name"
    ].tolist() == synth_class_names(8)
    train, test = pd.read_csv(folder / "synth_train.csv"), pd.read_csv(folder / "synth_test.csv")
    assert list(train.columns) == ["sample_id", "label", "label_name"]
    assert set(train["sample_id"]).isdisjoint(test["sample_id"]) and len(train) + len(test) == 48
    assert train["label"].value_counts().to_dict() == {k: 4 for k in range(8)}
    assert test["label"].value_counts().to_dict() == {k: 2 for k in range(8)}
    index = pd.read_csv(synth_dir / "index.csv")
    labels = dict(zip(index["sample_id"], index["label"]))
    for frame in (train, test):
        assert all(labels[sid] == label for sid, label in zip(frame["sample_id"], frame["label"]))
        assert (frame["label_name"] == [synth_class_names(8)[k] for k in frame["label"]]).all()


def motion_features(keypoints):
    """Per joint, the spread of positions and the mean step between frames, in units of the figure's
    size; a joint and its mirror twin are summed, since one-sided motions pick their side at
    random."""
    kp = keypoints[0].astype(np.float64)  # [T, 17, 2]
    size = np.ptp(kp[..., 1], axis=1).mean()
    per_joint = (
        np.concatenate([kp.std(0), np.abs(np.diff(kp, axis=0)).mean(0)], axis=1) / size
    )  # [17, 4]
    return (per_joint + per_joint[list(COCO17_FLIP_PERM)]).ravel()


def test_classes_differ_by_motion(tmp_path):
    """A nearest-centroid classifier on simple motion statistics tells the classes apart on held-out
    samples."""
    folder = make_synth_dataset(tmp_path / "d", classes=16, samples=96, frames=40)
    reader = ShardReader(folder)
    features = {sid: motion_features(reader.read(sid, rgb=False).keypoints) for sid in reader}
    train = pd.read_csv(folder / "manifests" / "synth_train.csv")
    test = pd.read_csv(folder / "manifests" / "synth_test.csv")
    centroids = np.stack(
        [
            np.mean([features[s] for s in train["sample_id"][train["label"] == k]], axis=0)
            for k in range(16)
        ]
    )
    predicted = [
        int(np.argmin(np.linalg.norm(centroids - features[s], axis=1))) for s in test["sample_id"]
    ]
    accuracy = np.mean(np.array(predicted) == test["label"].to_numpy())
    assert accuracy >= 0.9, list(zip(predicted, test["label"]))


def test_rgb_shows_the_figure_where_the_keypoints_are(synth_dir):
    """The red disk of the left wrist in a stored frame sits where crop_box maps the left-wrist
    keypoint."""
    import io

    from PIL import Image

    sample = ShardReader(synth_dir)["synth00002_jump"]
    x1, y1, x2, _ = sample.crop_box
    for t in (0, 17, 39):
        image = np.asarray(Image.open(io.BytesIO(sample.rgb[t])).convert("RGB")).astype(int)
        red = (image[..., 0] > 150) & (image[..., 1] < 90) & (image[..., 2] < 90)
        ys, xs = np.nonzero(red)
        scale = image.shape[1] / (x2 - x1)
        expected = (sample.keypoints[0, t, 9] - (x1, y1)) * scale
        assert np.hypot(xs.mean() + 0.5 - expected[0], ys.mean() + 0.5 - expected[1]) < 1.5


def test_deterministic_and_resumable(tmp_path):
    a = synth_sample(5, 1, "raise_both_arms", frames=12, seed=3)
    b = synth_sample(5, 1, "raise_both_arms", frames=12, seed=3)
    c = synth_sample(5, 1, "raise_both_arms", frames=12, seed=4)
    assert np.array_equal(a.keypoints, b.keypoints) and a.rgb == b.rgb
    assert not np.array_equal(a.keypoints, c.keypoints)
    folder = make_synth_dataset(tmp_path / "d", classes=2, samples=6, frames=8)
    first = (folder / "index.csv").read_text()
    make_synth_dataset(
        folder, classes=2, samples=6, frames=8
    )  # same options: nothing to do, nothing changes
    assert (folder / "index.csv").read_text() == first
    with pytest.raises(ShardError, match="frames: 8 there, 9 now"):
        make_synth_dataset(folder, classes=2, samples=6, frames=9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"classes": 0}, "1 to 16 classes"),
        ({"classes": 17}, "1 to 16 classes"),
        ({"classes": 4, "samples": 3}, "at least one sample per class"),
        ({"heatmaps": ("bones",)}, "unknown kind 'bones'"),
    ],
)
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(EpamError, match=match):
        make_synth_dataset(tmp_path / "d", **kwargs)


def test_cli(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "synth",
            str(tmp_path / "s"),
            "--classes",
            "3",
            "--samples",
            "6",
            "--frames",
            "10",
            "--seed",
            "1",
            "--heatmaps",
            "joint",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "synth_train.csv" in result.output and str(tmp_path / "s") in result.output
    assert verify_dataset(tmp_path / "s") == []
    assert len(pd.read_csv(tmp_path / "s" / "manifests" / "synth_test.csv")) == 3
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "t"), "--classes", "40"])
    assert result.exit_code == 1 and "1 to 16 classes" in result.output


def test_motions_are_listed():
    assert len(SYNTH_MOTIONS) == 8 and synth_class_names(9)[8] == "wave_arm_fast"
