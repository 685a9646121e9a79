"""epam_model.data: clips from synthetic and real shards, RGB and heatmaps aligned, reproducible,
robust."""

from __future__ import annotations

import dataclasses
import shutil
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from epam_data.errors import EpamError
from epam_data.heatmaps import COCO17_FLIP_PERM
from epam_data.shards import ShardReader
from epam_data.synth import SYNTH_JOINT_COLOURS, make_synth_dataset
from epam_model.data import (
    RGB_MEAN,
    RGB_STD,
    ClipConfig,
    ClipDataset,
    DataConfigError,
    available_splits,
    manifest_path,
    model_inputs,
    read_class_names,
    uniform_sample_frames,
    worker_init_fn,
)

LEFT_WRIST, RIGHT_WRIST = 9, 10
SMALL = ClipConfig(
    rgb_size=112, heatmap_size=28
)  # the same geometry at half the size: 4 RGB pixels per cell


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth_dataset(
        tmp_path_factory.mktemp("data") / "synth",
        classes=4,
        samples=12,
        frames=40,
        heatmaps=("joint", "limb"),
    )


@pytest.fixture(scope="module")
def long_synth(tmp_path_factory):
    """Samples longer than 2 x 48 frames: the segment branch of UniformSampleFrames."""
    return make_synth_dataset(
        tmp_path_factory.mktemp("data") / "long", classes=2, samples=3, frames=100
    )


# --- UniformSampleFrames --------------------------------------------------------------------------


def pyskl_uniform_sample_frames(num_frames, clip_len, train, seed=255):
    """PYSKL's UniformSampleFrames (num_clips 1), transcribed: global numpy reseeded with 255 in
    test mode."""
    if not train:
        np.random.seed(seed)
    if num_frames < clip_len:
        start = np.random.randint(0, num_frames) if train else 0
        inds = np.arange(start, start + clip_len)
    elif clip_len <= num_frames < 2 * clip_len:
        basic = np.arange(clip_len)
        inds = np.random.choice(clip_len + 1, num_frames - clip_len, replace=False)
        offset = np.zeros(clip_len + 1, dtype=np.int64)
        offset[inds] = 1
        offset = np.cumsum(offset)
        inds = basic + offset[:-1]
    else:
        bids = np.array([i * num_frames // clip_len for i in range(clip_len + 1)])
        bsize = np.diff(bids)
        bst = bids[:clip_len]
        offset = np.random.randint(bsize)
        inds = bst + offset
    return np.mod(inds, num_frames)


@pytest.mark.parametrize("num_frames", [1, 20, 47, 48, 60, 95, 96, 150, 301])
def test_eval_indices_are_pyskl_test_indices(num_frames):
    expected = pyskl_uniform_sample_frames(num_frames, 48, train=False)
    got = uniform_sample_frames(num_frames, 48, train=False)
    assert got.dtype == np.int64 and np.array_equal(got, expected)
    assert np.array_equal(
        uniform_sample_frames(num_frames, 48, train=False), got
    )  # the same every time


def pyskl_test_clips(num_frames, clip_len, num_clips):
    """PYSKL's UniformSampleFrames._get_test_clips, transcribed: [num_clips, clip_len]."""
    np.random.seed(255)
    if num_frames < clip_len:
        if num_frames < num_clips:
            start_inds = list(range(num_clips))
        else:
            start_inds = [i * num_frames // num_clips for i in range(num_clips)]
        inds = np.concatenate([np.arange(i, i + clip_len) for i in start_inds])
    elif clip_len <= num_frames < clip_len * 2:
        all_inds = []
        for _ in range(num_clips):
            basic = np.arange(clip_len)
            inds = np.random.choice(clip_len + 1, num_frames - clip_len, replace=False)
            offset = np.zeros(clip_len + 1, dtype=np.int64)
            offset[inds] = 1
            all_inds.append(basic + np.cumsum(offset)[:-1])
        inds = np.concatenate(all_inds)
    else:
        bids = np.array([i * num_frames // clip_len for i in range(clip_len + 1)])
        all_inds = [bids[:clip_len] + np.random.randint(np.diff(bids)) for _ in range(num_clips)]
        inds = np.concatenate(all_inds)
    return np.mod(inds, num_frames).reshape(num_clips, clip_len)


@pytest.mark.parametrize("num_frames", [3, 20, 60, 150])
def test_multi_clip_eval_indices_are_pyskl_test_clips(num_frames):
    expected = pyskl_test_clips(num_frames, 48, num_clips=5)
    got = np.stack(
        [uniform_sample_frames(num_frames, 48, train=False, clip=k, num_clips=5) for k in range(5)]
    )
    assert np.array_equal(got, expected)
    assert np.array_equal(
        got[0], uniform_sample_frames(num_frames, 48, train=False)
    )  # clip 0 = the single clip
    if num_frames >= 48:
        assert len({row.tobytes() for row in got}) == 5
    with pytest.raises(ValueError, match="clip 5 of 5"):
        uniform_sample_frames(num_frames, 48, train=False, clip=5, num_clips=5)


@pytest.mark.parametrize("num_frames", [20, 60, 150])
def test_train_indices_follow_the_rules(num_frames):
    draws = [
        uniform_sample_frames(num_frames, 48, train=True, rng=np.random.default_rng(seed))
        for seed in range(20)
    ]
    assert all(d.shape == (48,) and d.min() >= 0 and d.max() < num_frames for d in draws)
    assert len({d.tobytes() for d in draws}) > 10
    if num_frames >= 48:
        assert all((np.diff(d) >= 1).all() for d in draws)  # increasing, no repeats
    if num_frames >= 96:
        bounds = np.array([i * num_frames // 48 for i in range(49)])
        assert all(
            ((d >= bounds[:-1]) & (d < bounds[1:])).all() for d in draws
        )  # one frame per segment


# --- shapes, labels, manifests --------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["epam", "rgb", "pose"])
@pytest.mark.parametrize("render", ["loader", "device"])
@pytest.mark.parametrize("heatmap", ["joint", "both"])
def test_shapes_and_dtypes(synth, stream, render, heatmap):
    config = ClipConfig(heatmap=heatmap)
    dataset = ClipDataset(
        synth, "synth", "train", stream=stream, train=True, render=render, config=config
    )
    item = dataset[1]
    expected = {"label", "index"}
    if stream in ("epam", "rgb"):
        expected.add("rgb")
        assert item["rgb"].shape == (3, 16, 224, 224) and item["rgb"].dtype == torch.float32
    if stream in ("epam", "pose"):
        if render == "loader":
            expected.add("pose")
            assert (
                item["pose"].shape == (config.pose_channels, 48, 56, 56)
                and item["pose"].dtype == torch.float32
            )
            assert 0.5 < item["pose"].max() <= 1.0
        else:
            expected |= {"keypoints", "scores"}
            assert (
                item["keypoints"].shape == (2, 48, 17, 2)
                and item["keypoints"].dtype == torch.float32
            )
            assert item["scores"].shape == (2, 48, 17) and item["scores"].dtype == torch.float32
            assert (item["scores"][1] == 0).all() and (
                item["scores"][0] > 0.8
            ).all()  # one person, one empty slot
    assert set(item) == expected
    assert (
        item["label"].dtype == torch.int64
        and item["label"].shape == ()
        and item["index"].item() == 1
    )
    batch = torch.utils.data.default_collate([dataset[0], dataset[2]])
    rgb, pose = model_inputs(batch, torch.device("cpu"), config)
    assert (rgb is None) == (stream == "pose") and (pose is None) == (stream == "rgb")
    if pose is not None:
        assert pose.shape == (2, config.pose_channels, 48, 56, 56)


def test_labels_and_classes_come_from_the_manifests(synth):
    for split in ("train", "test"):
        dataset = ClipDataset(synth, "synth", split, stream="pose")
        manifest = pd.read_csv(synth / "manifests" / f"synth_{split}.csv")
        assert dataset.sample_ids == manifest["sample_id"].tolist()
        assert dataset.labels.dtype == np.int64 and np.array_equal(
            dataset.labels, manifest["label"].to_numpy()
        )
        assert [dataset[i]["label"].item() for i in range(len(dataset))] == manifest[
            "label"
        ].tolist()
        assert (
            dataset.class_names == ["wave_arm", "raise_both_arms", "jump", "squat"]
            and dataset.num_classes == 4
        )
    assert available_splits(synth, "synth") == ["train", "test"]


def test_manifest_errors_and_class_fallback(synth, tmp_path):
    with pytest.raises(DataConfigError, match="no such manifest.*synth_test, synth_train"):
        manifest_path(synth, "synth", "val")
    folder = tmp_path / "d"
    shutil.copytree(synth, folder)
    (folder / "manifests" / "synth_classes.csv").unlink()
    assert read_class_names(folder, "synth") == [
        "wave_arm",
        "raise_both_arms",
        "jump",
        "squat",
    ]  # label_name column
    train = pd.read_csv(folder / "manifests" / "synth_train.csv")
    train.drop(columns="label_name").assign(label=train["label"] + 2).to_csv(
        folder / "manifests" / "x_train.csv", index=False
    )
    assert read_class_names(folder, "x") == [
        "class_0",
        "class_1",
        "class_2",
        "class_3",
        "class_4",
        "class_5",
    ]
    pd.DataFrame({"label": [0, 1], "name": ["a", "b"]}).to_csv(
        folder / "manifests" / "x_classes.csv", index=False
    )
    with pytest.raises(DataConfigError, match=r"has label \d but x has 2 classes"):
        ClipDataset(folder, "x", "train")
    with pytest.raises(DataConfigError, match="heatmap 'bones'"):
        ClipConfig(heatmap="bones")
    with pytest.raises(DataConfigError, match="stored"):
        ClipDataset(synth, "synth", "train", train=True, config=ClipConfig(heatmap_source="stored"))


# --- RGB and heatmaps show the same place ---------------------------------------------------------


def blob_centre(rgb_frame, colour):
    """Centre (x, y) in continuous pixels of the pixels of a drawn colour in a normalised [3, H, W]
    frame."""
    image = rgb_frame.numpy() * np.array(RGB_STD)[:, None, None] + np.array(RGB_MEAN)[:, None, None]
    target = np.array(colour)[:, None, None]
    mask = (np.abs(image - target) < 80).all(axis=0)
    if mask.sum() < 5:
        return None
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


def heat_centre(plane):
    """Centre (x, y) of a heatmap plane's Gaussian in continuous canvas pixels (cell i spans [i, i +
    1))."""
    if plane.max() < 0.25:
        return None
    weights = np.where(plane > 0.2 * plane.max(), plane, 0)
    ys, xs = np.mgrid[: plane.shape[0], : plane.shape[1]]
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum() + 0.5


def alignment_errors(item, config, mirrored=False):
    """Distances (RGB pixels) between each wrist's drawn disk and the heatmap of the joint that
    carries it: the same joint, or its left/right twin in a mirrored clip."""
    pose, rgb = item["pose"].numpy(), item["rgb"]
    ratio = config.rgb_size / config.heatmap_size
    errors = []
    for k in range(config.rgb_frames):
        for joint, colour in SYNTH_JOINT_COLOURS.items():
            blob = blob_centre(rgb[:, k], colour)
            heat = heat_centre(
                pose[COCO17_FLIP_PERM[joint] if mirrored else joint, k * config.rgb_every]
            )
            if blob is not None and heat is not None:
                errors.append(np.hypot(*(blob - heat * ratio)))
    return errors


def flipped(item):
    """Whether the clip was mirrored: the red disk (the figure's left wrist) is drawn where channel
    10 is."""
    config = SMALL
    for k in range(config.rgb_frames):
        blob = blob_centre(item["rgb"][:, k], SYNTH_JOINT_COLOURS[LEFT_WRIST])
        left, right = (
            heat_centre(item["pose"][j, k * config.rgb_every].numpy())
            for j in (LEFT_WRIST, RIGHT_WRIST)
        )
        if (
            blob is not None
            and left is not None
            and right is not None
            and np.hypot(*(left - right)) > 3
        ):
            ratio = config.rgb_size / config.heatmap_size
            return np.hypot(*(blob - right * ratio)) < np.hypot(*(blob - left * ratio))
    return None


def test_rgb_and_heatmaps_aligned_in_eval(synth):
    dataset = ClipDataset(synth, "synth", "test", config=SMALL)
    errors = [e for i in range(len(dataset)) for e in alignment_errors(dataset[i], SMALL)]
    assert len(errors) > 40
    assert np.median(errors) < 1.0 and max(errors) < 2.5  # RGB pixels; one heatmap cell is 4


def test_rgb_and_heatmaps_aligned_in_training_with_crops_and_flips(synth):
    """With random resized crops and flips, each wrist's disk still sits on its heatmap, and the
    disk of the figure's left wrist moves to the right-wrist channel exactly when the clip is
    mirrored."""
    dataset = ClipDataset(synth, "synth", "train", train=True, config=SMALL, seed=7)
    errors, flips, scales = [], [], []
    eval_dataset = ClipDataset(synth, "synth", "train", config=SMALL)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(0, len(dataset), 2):
            item = dataset[i]
            flips.append(flipped(item))
            if flips[-1] is not None:
                errors += alignment_errors(item, SMALL, mirrored=flips[-1])
            # the crop zooms in: the figure's extent on the canvas grows against evaluation's
            extent = [
                np.ptp(np.nonzero(v["pose"].numpy().max(axis=(0, 1)))[1])
                for v in (item, eval_dataset[i])
            ]
            scales.append(extent[0] / extent[1])
    assert len(errors) > 100
    assert np.median(errors) < 1.0 and max(errors) < 3.0
    assert {True, False} <= set(flips) and flips.count(None) < len(flips) / 4
    assert max(scales) > 1.1
    for prob in (0.0, 1.0):  # the disks change channel exactly when the dataset mirrors
        mirror = ClipDataset(
            synth, "synth", "train", train=True, config=dataclasses.replace(SMALL, flip_prob=prob)
        )
        assert {flipped(mirror[i]) for i in range(0, len(mirror), 2)} - {None} == {bool(prob)}


# --- reproducibility ------------------------------------------------------------------------------


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_eval_is_deterministic(synth):
    first = ClipDataset(synth, "synth", "test", config=SMALL)
    second = ClipDataset(synth, "synth", "test", config=SMALL, seed=3)
    second.set_epoch(5)
    assert same(first[2], second[2]) and same(first[2], first[2])


def test_training_randomness_is_a_function_of_seed_epoch_index(synth):
    config = SMALL
    a = ClipDataset(synth, "synth", "train", train=True, config=config, seed=1)
    b = ClipDataset(synth, "synth", "train", train=True, config=config, seed=1)
    c = ClipDataset(synth, "synth", "train", train=True, config=config, seed=2)
    a.set_epoch(3)
    b.set_epoch(3)
    assert same(a[4], b[4])
    assert not same(a[4], c[4])
    item = a[4]
    a.set_epoch(4)
    assert not torch.equal(item["pose"], a[4]["pose"])


@pytest.mark.parametrize("persistent", [False, True])
def test_dataloader_with_two_workers_gives_the_same_items(synth, persistent):
    dataset = ClipDataset(
        synth, "synth", "train", train=True, config=SMALL, seed=5, render="device"
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=3,
        num_workers=2,
        worker_init_fn=worker_init_fn,
        persistent_workers=persistent,
    )
    for epoch in (0, 1):
        dataset.set_epoch(epoch)  # reaches persistent workers too
        batches = list(loader)
        got = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}
        expected = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
        assert same(got, expected), f"epoch {epoch}"
        rgb, pose = model_inputs(batches[0], torch.device("cpu"), SMALL)
        assert rgb.shape == (3, 3, 16, 112, 112) and pose.shape == (3, 17, 48, 28, 28)


# --- device rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize("heatmap", ["joint", "limb", "both"])
@pytest.mark.parametrize("train", [False, True])
def test_device_rendering_equals_loader_rendering(synth, heatmap, train):
    config = ClipConfig(heatmap=heatmap, rgb_size=32)
    loader = ClipDataset(synth, "synth", "train", stream="pose", train=train, config=config, seed=2)
    device = ClipDataset(
        synth, "synth", "train", stream="pose", train=train, config=config, seed=2, render="device"
    )
    indices = [0, 3, 5]
    _, rendered = model_inputs(
        torch.utils.data.default_collate([device[i] for i in indices]), torch.device("cpu"), config
    )
    expected = torch.stack([loader[i]["pose"] for i in indices])
    assert rendered.shape == expected.shape and (rendered - expected).abs().max() < 1e-5


# --- bad samples ----------------------------------------------------------------------------------


def test_missing_sample_raises_or_is_replaced(synth, tmp_path):
    folder = tmp_path / "d"
    shutil.copytree(synth, folder)
    manifest = pd.read_csv(folder / "manifests" / "synth_train.csv")
    ghost = pd.DataFrame({"sample_id": ["synth99999_ghost"], "label": [2], "label_name": ["jump"]})
    pd.concat([manifest.iloc[:2], ghost, manifest.iloc[2:]]).to_csv(
        folder / "manifests" / "bad_train.csv", index=False
    )
    shutil.copy(
        folder / "manifests" / "synth_classes.csv", folder / "manifests" / "bad_classes.csv"
    )
    with pytest.raises(EpamError, match="synth99999_ghost"):
        ClipDataset(folder, "bad", "train")
    with pytest.warns(UserWarning, match="synth99999_ghost"):
        dataset = ClipDataset(folder, "bad", "train", skip_bad=True, stream="pose")
    assert len(dataset) == len(manifest) + 1
    item = dataset[2]
    assert (
        item["index"].item() == 3 and item["label"].item() == manifest["label"][2]
    )  # the next one, its label


def test_a_damaged_frame_count_in_the_index_is_one_error_line(synth, tmp_path):
    folder = tmp_path / "d"
    shutil.copytree(synth, folder)
    index = pd.read_csv(folder / "index.csv", dtype=str, keep_default_na=False)
    index.loc[1, "frames"] = "abc"
    index.to_csv(folder / "index.csv", index=False)
    with pytest.raises(EpamError, match=r"has frames 'abc', not a count.*verify DATA --repair"):
        ClipDataset(folder, "synth", "train", stream="pose")


def test_unreadable_sample_raises_or_is_replaced(synth, tmp_path):
    folder = tmp_path / "d"
    shutil.copytree(synth, folder)
    dataset = ClipDataset(folder, "synth", "test", config=SMALL)
    victim = dataset.sample_ids[1]
    shard = ShardReader(folder).rows[
        [row["sample_id"] for row in ShardReader(folder).rows].index(victim)
    ]["shard"]
    with h5py.File(folder / "shards" / shard, "r+") as h5file:
        del h5file[victim]["rgb"]
    dataset = ClipDataset(folder, "synth", "test", config=SMALL)
    with pytest.raises(EpamError, match=f"{victim} .*{shard}.*no RGB frames"):
        dataset[1]
    assert dataset.stream == "epam" and dataset[0]["index"].item() == 0  # the others still read
    skipping = ClipDataset(folder, "synth", "test", config=SMALL, skip_bad=True)
    with pytest.warns(UserWarning, match=victim):
        item = skipping[1]
    assert item["index"].item() == 2 and item["label"].item() == skipping.labels[2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert skipping[1]["index"].item() == 2  # known bad: replaced without a new warning
    assert (
        ClipDataset(folder, "synth", "test", stream="pose")[1]["index"].item() == 1
    )  # pose needs no RGB


# --- stored heatmaps ------------------------------------------------------------------------------


def test_stored_heatmaps_in_eval(synth):
    config = ClipConfig(heatmap="both", heatmap_source="stored", rgb_size=64)
    dataset = ClipDataset(synth, "synth", "test", config=config)
    item = dataset[0]
    assert item["pose"].shape == (34, 48, 56, 56) and item["rgb"].shape == (3, 16, 64, 64)
    stored = ShardReader(synth)[dataset.sample_ids[0]]
    indices = uniform_sample_frames(stored.num_frames, 48, train=False)
    expected = np.concatenate([stored.joint_heatmaps, stored.limb_heatmaps], axis=1)[indices] / 255
    assert np.allclose(item["pose"].numpy(), expected.transpose(1, 0, 2, 3), atol=1e-6)
    with pytest.raises(DataConfigError, match="stored"):
        ClipDataset(synth, "synth", "test", config=config, render="device")


def test_flip_permutation_used_for_keypoints(synth):
    """Device keypoints of a mirrored clip are the mirrored keypoints with left and right
    swapped."""
    config = ClipConfig(flip_prob=1.0, scale_range=(1.0, 1.0))
    plain = ClipDataset(
        synth,
        "synth",
        "train",
        train=True,
        render="device",
        config=ClipConfig(flip_prob=0.0, scale_range=(1.0, 1.0)),
    )
    mirrored = ClipDataset(synth, "synth", "train", train=True, render="device", config=config)
    a, b = plain[0], mirrored[0]
    seen = a["scores"] > 0
    expected_x = 55 - a["keypoints"][..., 0][:, :, list(COCO17_FLIP_PERM)]
    # same frames only when the random draws before the flip agree: both datasets use seed 0, epoch
    # 0, index 0
    assert torch.allclose(b["keypoints"][..., 0][seen], expected_x[seen], atol=1e-4)
    assert torch.allclose(
        b["keypoints"][..., 1][seen], a["keypoints"][..., 1][:, :, list(COCO17_FLIP_PERM)][seen]
    )


def test_long_samples(long_synth):
    dataset = ClipDataset(long_synth, "synth", "train", train=True, config=SMALL)
    assert dataset[0]["pose"].shape == (17, 48, 28, 28)


# --- real shards (extract on a real video with the real pose model) -------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory, pyav):
    from conftest import write_person_clip

    from epam_data.extract import ExtractOptions, extract_dataset
    from epam_data.pose import PoseBackendError, load_backend
    from epam_data.splits import make_splits, scan_index

    try:
        load_backend("blazepose")
    except PoseBackendError as err:
        pytest.skip(f"blazepose cannot run here: {err}")
    videos = tmp_path_factory.mktemp("real_videos")
    write_person_clip(videos / "S001C001P001R001A001_rgb.mp4", num_frames=20)
    out = tmp_path_factory.mktemp("real") / "out"
    extract_dataset(videos, out, "ntu60", options=ExtractOptions(rgb_size=128, heatmaps=("joint",)))
    dataset, scan = scan_index(out)
    make_splits(scan, dataset, out, protocols=["xsub"])
    return out


@pytest.mark.slow
def test_real_shards(real):
    dataset = ClipDataset(real, "xsub", "train", config=SMALL)
    assert dataset.num_classes == 60 and len(dataset) == 1
    item = dataset[0]
    assert item["rgb"].shape == (3, 16, 112, 112) and item["pose"].shape == (17, 48, 28, 28)
    assert torch.isfinite(item["rgb"]).all() and item["pose"].max() > 0.5
    # the nose heatmap lies on the photo (not on the grey background or the zero padding)
    pose, rgb = (
        item["pose"].numpy(),
        item["rgb"].numpy() * np.array(RGB_STD)[:, None, None, None]
        + np.array(RGB_MEAN)[:, None, None, None],
    )
    for k in (0, 8, 15):
        centre = heat_centre(pose[0, 3 * k])
        if centre is not None:
            x, y = (centre * 4).astype(int)
            patch = rgb[:, k, max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4]
            assert np.abs(patch - 128).mean() > 10
    train = ClipDataset(real, "xsub", "train", train=True, config=SMALL, render="device")
    assert train[0]["keypoints"].shape == (2, 48, 17, 2)
    stored = ClipDataset(
        real, "xsub", "train", config=ClipConfig(heatmap_source="stored", rgb_size=64)
    )
    assert stored[0]["pose"].shape == (17, 48, 56, 56)
