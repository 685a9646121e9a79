"""The `movenet` backend: the TensorFlow.js graph reader against TensorFlow.js itself, the batched
decoding against the graphs' own, the backend on real annotated people and a real clip, and clear
errors for missing or broken model files.

Needs the network files (`python -m epam_data.pose.npm_models`, run by `make venv`); the
comparison with TensorFlow.js also needs node and the three tfjs packages `make venv` installs
into the venv (share/epam/tfjs). Each test skips with that reason when its part is absent.

The accuracy bars (BENCHMARKS.md, pose accuracy) sit below the figures measured on this CPU's
vector paths and with torch's AVX2 and scalar kernels; with left and right swapped in the output,
the backend recalls 4 of the 19 OCHuman and PoseTrack people (PoseTrack AP 0.06) and the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from epam_data.pose import PoseBackendError, load_backend
from epam_data.pose.accuracy import coco_keypoint_ap, match_people, oks, predict_images
from epam_data.pose.annotated import AnnotatedImage
from epam_data.pose.npm_models import find_model

ROOT = Path(__file__).resolve().parents[1]
TFJS_MODULES = Path(sys.prefix) / "share" / "epam" / "tfjs" / "node_modules"
CENTERNET_HEADS = ["tower_0/keypoints", "tower_0/wh"]


@pytest.fixture(scope="module")
def models() -> Path:
    try:
        return find_model("movenet-thunder").parent
    except PoseBackendError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def sets(pose_gt_sets: dict[str, list[AnnotatedImage]]) -> dict[str, list[AnnotatedImage]]:
    return pose_gt_sets


def _photo(sets: dict[str, list[AnnotatedImage]], name: str, size: int) -> np.ndarray:
    """A real annotated photo resized to size x size, uint8 [size, size, 3]."""
    from PIL import Image

    with Image.open(sets[name][0].path) as image:
        return np.array(image.convert("RGB").resize((size, size), Image.BILINEAR))


# --- the graph reader ----------------------------------------------------------------------------


def _tensorflow_js(model: Path, array: np.ndarray, nodes: list[str], tmp: Path) -> list:
    """The nodes' values computed by TensorFlow.js (scripts/tfjs_reference.js)."""
    if shutil.which("node") is None or not (TFJS_MODULES / "@tensorflow" / "tfjs-core").is_dir():
        pytest.skip(
            f"node and TensorFlow.js in {TFJS_MODULES} are needed (make venv installs them)"
        )
    array.tofile(tmp / "input")
    header = {"dtype": str(array.dtype), "shape": list(array.shape)}
    (tmp / "input.json").write_text(json.dumps(header))
    script = ROOT / "scripts" / "tfjs_reference.js"
    env = {**os.environ, "NODE_PATH": str(TFJS_MODULES)}
    args = ["node", str(script), str(model), str(tmp / "input"), str(tmp / "out"), ",".join(nodes)]
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=300)
    outputs = []
    for index in range(len(nodes)):
        meta = json.loads((tmp / f"out.{index}.json").read_text())
        data = np.fromfile(tmp / f"out.{index}.bin", dtype=meta["dtype"])
        outputs.append(data.reshape(meta["shape"]))
    return outputs


def test_the_graph_reader_equals_tensorflow_js(
    models: Path, sets: dict[str, list[AnnotatedImage]], tmp_path: Path
) -> None:
    from epam_data.pose.tfjs_graph import TfjsGraph

    crop = _photo(sets, "mpii", 256).astype(np.int32)[None]
    thunder = models / "movenet-thunder.json"
    expected = _tensorflow_js(thunder, crop, ["Identity"], tmp_path)[0]
    got = TfjsGraph(thunder)(torch.from_numpy(crop))[0].numpy()
    assert np.abs(got - expected).max() < 1e-4  # measured 8e-7
    image = _photo(sets, "ochuman", 512).astype(np.float32)[None]
    centernet = models / "centernet.json"
    heat, sizes = _tensorflow_js(centernet, image, CENTERNET_HEADS, tmp_path)
    got_heat, got_sizes = TfjsGraph(centernet, CENTERNET_HEADS)(torch.from_numpy(image))
    assert np.abs(got_heat.numpy() - heat).max() < 1e-5  # measured 5e-7
    assert np.abs(got_sizes.numpy() - sizes).max() < 0.05  # box sides up to 280 px: 1e-3


def test_batched_decoding_equals_the_graphs_own(
    models: Path, sets: dict[str, list[AnnotatedImage]]
) -> None:
    from epam_data.pose.movenet_networks import PERSON, MoveNet, decode_centernet
    from epam_data.pose.tfjs_graph import TfjsGraph

    for variant, side in (("thunder", 256), ("lightning", 192)):
        crops = np.stack([_photo(sets, name, side) for name in ("mpii", "ochuman", "crowdpose")])
        batched = MoveNet(variant, models)(torch.from_numpy(crops).float())
        whole = TfjsGraph(models / f"movenet-{variant}.json")
        for index, crop in enumerate(crops):
            one = whole(torch.from_numpy(crop.astype(np.int32))[None])[0][0, 0]
            assert (batched[index] - one).abs().max() < 1e-5
    graph = TfjsGraph(models / "centernet.json", [*CENTERNET_HEADS, "tower_0/detections"])
    heat, sizes, detections = graph(torch.from_numpy(_photo(sets, "crowdpose", 512)).float()[None])
    ours = decode_centernet(heat[0, ..., PERSON], sizes[0], 0.2)
    theirs = detections[0][(detections[0, :, 5] == PERSON) & (detections[0, :, 4] >= 0.2)]
    assert len(ours) == len(theirs) >= 2
    assert (ours - theirs[:, :5]).abs().max() < 1e-3


def test_broken_model_files_are_one_clear_error(models: Path, tmp_path: Path) -> None:
    from epam_data.pose.tfjs_graph import TfjsGraph

    with pytest.raises(PoseBackendError, match="npm_models"):
        load_backend("movenet", models=tmp_path)
    model = json.loads((models / "movenet-thunder.json").read_text())
    shutil.copy(models / "movenet-thunder.bin", tmp_path / "movenet-thunder.bin")
    with open(tmp_path / "movenet-thunder.bin", "r+b") as stream:
        stream.truncate(1000)
    (tmp_path / "movenet-thunder.json").write_text(json.dumps(model))
    with pytest.raises(PoseBackendError, match="runs past|bytes"):
        TfjsGraph(tmp_path / "movenet-thunder.json")
    shutil.copy(models / "movenet-thunder.bin", tmp_path / "movenet-thunder.bin")
    for node in model["modelTopology"]["node"]:
        if node["op"] == "Sigmoid":
            node["op"] = "FancySigmoid"
    (tmp_path / "movenet-thunder.json").write_text(json.dumps(model))
    with pytest.raises(PoseBackendError, match="FancySigmoid"):
        TfjsGraph(tmp_path / "movenet-thunder.json")
    (tmp_path / "movenet-thunder.json").write_text("{not json")
    with pytest.raises(PoseBackendError, match="cannot read"):
        TfjsGraph(tmp_path / "movenet-thunder.json")


# --- the backend ---------------------------------------------------------------------------------


def _recall_and_ap(backend: object, images: list[AnnotatedImage]) -> tuple[int, float]:
    predictions = predict_images(backend, images)[0]
    recalled = sum(
        sum(value >= 0.5 for _, _, value in match_people(oks(p.keypoints, i.keypoints, i.areas)))
        for p, i in zip(predictions, images)
    )
    return recalled, coco_keypoint_ap(images, predictions)["AP"]


@pytest.mark.quality
def test_finds_the_annotated_people(
    models: Path, sets: dict[str, list[AnnotatedImage]], single_torch_thread: None
) -> None:
    backend = load_backend("movenet", max_persons=48)
    figures = {name: _recall_and_ap(backend, images) for name, images in sets.items()}
    # The bars sit below the figures measured with every crop moved by 0.1 to 0.9 of its snapping
    # grid (BENCHMARKS.md), a far larger change than any CPU's rounding makes: OCHuman + PoseTrack
    # 14-15 of 19, PoseTrack AP 0.49-0.54; MPII + CrowdPose + JHMDB 11-12 of 12, their mean AP
    # 0.68-0.81 (JHMDB alone 0.53-0.81: one person of three comes and goes).
    assert figures["ochuman"][0] + figures["posetrack18"][0] >= 13
    assert figures["posetrack18"][1] >= 0.40
    others = ("mpii", "crowdpose", "jhmdb")
    assert sum(figures[name][0] for name in others) >= 11
    assert np.mean([figures[name][1] for name in others]) >= 0.6


def test_follows_two_people_through_a_real_clip(
    models: Path, media_dir: Path, single_torch_thread: None
) -> None:
    from epam_data.video import read_frames

    frames = read_frames(media_dir / "two_players_426x240.mp4", np.arange(40))
    backend = load_backend("movenet", max_persons=2)
    poses = backend.estimate(frames)
    assert all(len(p) == 2 for p in poses[5:])
    assert {tuple(sorted(p.track_ids)) for p in poses[5:]} == {(0, 1)}  # the same two people
    for frame in poses:
        assert frame.keypoints.shape[1:] == (17, 2) and frame.scores.shape[1:] == (17,)
        inside = (frame.keypoints >= -20) & (frame.keypoints <= [446, 260])
        assert inside.mean() > 0.95
    backend.reset()
    chunked = backend.estimate(frames[:20]) + backend.estimate(frames[20:])
    for a, b in zip(poses, chunked):  # tracking carries over between calls
        assert np.array_equal(a.track_ids, b.track_ids)
        assert np.allclose(a.keypoints, b.keypoints, atol=1e-3)


def test_crops_sit_on_the_grid_so_tiny_differences_give_the_same_crop(
    models: Path, media_dir: Path, single_torch_thread: None
) -> None:
    """Why: a heatmap difference of 2e-5 between CPUs' vector code must not move the next crop
    (`snap_crop`); without the snap every perturbed crop below differs."""
    from epam_data.pose.movenet import CROP_GRID, crop_from_keypoints, snap_crop
    from epam_data.video import read_frames

    rng = np.random.default_rng(0)
    same = 0
    for _ in range(200):
        keypoints, scores = rng.uniform(0, 400, (17, 2)), rng.uniform(0, 1, 17)
        crop = snap_crop(crop_from_keypoints(keypoints, scores))
        assert np.array_equal(crop, snap_crop(crop))
        assert np.allclose(crop / CROP_GRID, np.round(crop / CROP_GRID))
        moved = keypoints + rng.normal(0, 1e-3, keypoints.shape)  # a far larger slip than 2e-5
        same += np.array_equal(crop, snap_crop(crop_from_keypoints(moved, scores)))
    assert same >= 190  # differs only where a value sits within the slip of a grid line

    backend = load_backend("movenet", max_persons=2)
    seen: list[np.ndarray] = []
    networks_poses = backend._networks.poses
    object.__setattr__(  # record what the real network is given; it still runs
        backend._networks,
        "poses",
        lambda image, crops: seen.append(crops) or networks_poses(image, crops),
    )
    backend.estimate(read_frames(media_dir / "arm_wrestling_340x256.mp4", np.arange(12)))
    crops = np.concatenate(seen)
    assert len(crops) >= 12 and np.array_equal(crops, np.stack([snap_crop(c) for c in crops]))


# --- the reader's op semantics, on a graph written here (no model files needed) -------------------


def _tiny_graph(folder: Path, resize: dict[str, bool], weight: np.ndarray) -> Path:
    """x -> ResizeBilinear to 7 x 9 (flags `resize`) and x -> Conv2D 3 x 3 stride 2 SAME, with the
    weight stored as float16 the way the npm models store theirs."""
    import base64

    def flag(value: bool) -> dict[str, bool]:
        return {"b": value}

    same = base64.b64encode(b"SAME").decode()
    nodes = [
        {"name": "x", "op": "Placeholder", "attr": {}},
        {"name": "size", "op": "Const", "attr": {}},
        {"name": "w", "op": "Const", "attr": {}},
        {
            "name": "resized",
            "op": "ResizeBilinear",
            "input": ["x", "size"],
            "attr": {key: flag(value) for key, value in resize.items()},
        },
        {
            "name": "conv",
            "op": "Conv2D",
            "input": ["x", "w"],
            "attr": {"strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": {"s": same}},
        },
    ]
    weights = [
        {"name": "size", "shape": [2], "dtype": "int32"},
        {
            "name": "w",
            "shape": list(weight.shape),
            "dtype": "float32",
            "quantization": {"dtype": "float16"},
        },
    ]
    data = np.array([7, 9], np.int32).tobytes() + weight.astype(np.float16).tobytes()
    (folder / "tiny.bin").write_bytes(data)
    model = {
        "format": "graph-model",
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["tiny.bin"], "weights": weights}],
    }
    path = folder / "tiny.json"
    path.write_text(json.dumps(model))
    return path


def _same_conv(image: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """TensorFlow's SAME convolution of one channel, written out: the odd padding pixel after."""
    size, kernel = image.shape[0], weight.shape[0]
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    padded = np.pad(image, (total // 2, total - total // 2))
    return np.array(
        [
            [
                (
                    padded[i * stride : i * stride + kernel, j * stride : j * stride + kernel]
                    * weight
                ).sum()
                for j in range(out)
            ]
            for i in range(out)
        ]
    )


@pytest.mark.parametrize("size", [5, 6])
def test_the_reader_pads_and_resizes_as_tensorflow(tmp_path: Path, size: int) -> None:
    import torch.nn.functional as F

    from epam_data.pose.tfjs_graph import TfjsGraph

    rng = np.random.default_rng(size)
    image = rng.random((size, size)).astype(np.float32)
    weight = rng.random((3, 3)).astype(np.float16).astype(np.float32)
    x = torch.from_numpy(image)[None, :, :, None]
    for flags, align in (({"half_pixel_centers": True}, False), ({"align_corners": True}, True)):
        graph = TfjsGraph(
            _tiny_graph(tmp_path, flags, weight[:, :, None, None]), ["resized", "conv"]
        )
        resized, conv = graph(x)
        expected = F.interpolate(
            x.permute(0, 3, 1, 2), (7, 9), mode="bilinear", align_corners=align
        )
        assert torch.allclose(resized[..., 0], expected[:, 0], atol=1e-6)
        assert np.allclose(conv[0, :, :, 0].numpy(), _same_conv(image, weight, 2), atol=1e-5)


def test_extract_runs_it_end_to_end(models: Path, media_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from epam_data.cli import app
    from epam_data.shards import ShardReader

    videos = tmp_path / "in"
    videos.mkdir()
    shutil.copy(media_dir / "two_players_426x240.mp4", videos / "S002C001P003R001A050_rgb.mp4")
    out = tmp_path / "out"
    args = ["extract", str(videos), "-d", "ntu60", "-o", str(out), "--frame-stride", "6"]
    result = CliRunner().invoke(app, [*args, "--backend", "movenet", "--threads", "1"])
    assert result.exit_code == 0, result.output
    options = json.loads((out / "dataset.json").read_text())["options"]
    assert options["pose_backend"] == "movenet"
    assert options["pose_models"]["landmarks"].startswith("movenet-thunder sha256:")
    with ShardReader(out) as reader:
        prepared = reader["S002C001P003R001A050"]
        present = (prepared.scores.astype(np.float32) > 0).any(-1)  # [2, T]
        assert prepared.num_persons == 2 and present[:, prepared.frame_indices < 120].all()
