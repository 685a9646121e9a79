"""The OpenMMLab backends (`epam_data.pose.mmlab`) and the tracker they share
(`epam_data.pose.tracking`).

Three layers, each skipping with the reason and the install command when its packages are missing:
* always: the IoU tracker (numpy only) and the one-line "how to install" errors;
* the light install (`bash scripts/install_mmlab.sh --light`: mmcv-lite + mmengine + mmpose 1.1.0):
  the top-down estimator for real, built from the packaged HRNet-W32 config with random weights
  (saved to a .pth and loaded through the checkpoint option), batching, the box -> frame-pixel
  mapping, blazepose+mmpose end to end;
* the full install (`bash scripts/install_mmlab.sh`: mmcv compiled with its ops, mmdet 3.3.0, mmpose
  1.3.2): the detector path (RTMDet-tiny, RTMPose-m, Faster R-CNN) with random weights.
Random weights find no real people, so the tests check shapes, coordinates and bookkeeping, not
accuracy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_person_clip
from typer.testing import CliRunner

from epam_data.pose import FramePoses, PoseBackendError, load_backend
from epam_data.pose.tracking import IoUTracker, box_iou, keypoint_shift

runner = CliRunner()


# --- fixtures: which layer of the stack is installed ----------------------------------------------


@pytest.fixture(scope="module")
def mmpose_stack(single_torch_thread_module: None) -> None:
    from epam_data.pose.mmlab import _import_mmpose

    try:
        _import_mmpose()
    except PoseBackendError as err:
        pytest.skip(
            f"mmpose is not importable here; `bash scripts/install_mmlab.sh --light` installs it "
            f"({str(err).split(';')[0]})"
        )


@pytest.fixture(scope="module")
def mmdet_stack(mmpose_stack: None) -> None:
    from epam_data.pose.mmlab import _import_mmdet

    try:
        _import_mmdet()
    except PoseBackendError as err:
        cause = (
            str(err).split("(")[1].split(")")[0]
        )  # e.g. ModuleNotFoundError: No module named 'mmcv._ext'
        pytest.skip(
            f"detector path: mmcv.ops / mmdet not importable here (mmcv-lite has no compiled ops); "
            f"`bash scripts/install_mmlab.sh` compiles mmcv and installs mmdet ({cause})"
        )


@pytest.fixture(scope="module")
def single_torch_thread_module():
    """One torch thread for the whole module (the backends' own `threads` option is set to 1 below
    as well)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hrnet(mmpose_stack: None):
    from epam_data.pose.mmlab import TopDownEstimator

    return TopDownEstimator("hrnet-w32", "random", device="cpu", flip_test=False)


@pytest.fixture(scope="module")
def hrnet_checkpoint(hrnet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random HRNet-W32's state_dict as a .pth file, with one tensor set to a known value."""
    import torch

    state = {key: value.clone() for key, value in hrnet.model.state_dict().items()}
    state["head.final_layer.bias"].fill_(0.125)
    path = tmp_path_factory.mktemp("weights") / "hrnet_random.pth"
    torch.save({"state_dict": state, "meta": {"note": "random"}}, path)
    return path


def check_frame_poses(poses: FramePoses, frame_hw: tuple[int, int]) -> None:
    count = len(poses)
    assert poses.keypoints.shape == (count, 17, 2) and poses.keypoints.dtype == np.float32
    assert poses.scores.shape == (count, 17) and poses.scores.dtype == np.float32
    assert poses.boxes.shape == (count, 5) and poses.track_ids.shape == (count,)
    assert np.all((poses.scores >= 0) & (poses.scores <= 1))
    assert np.all(poses.boxes[:, [0, 2]] <= frame_hw[1]) and np.all(
        poses.boxes[:, [1, 3]] <= frame_hw[0]
    )
    assert np.all(poses.boxes[:, :4] >= 0) and len(set(poses.track_ids.tolist())) == count


# --- the tracker (numpy only) ---------------------------------------------------------------------


def person(x: float, y: float, size: float = 100.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A box [5] at (x, y) and keypoints [17, 2] spread inside it, all scored 0.9."""
    box = np.array([x, y, x + size, y + 2 * size, 0.9], np.float32)
    grid = np.stack([np.linspace(0.1, 0.9, 17), np.linspace(0.05, 0.95, 17)], 1)
    keypoints = (np.array([x, y]) + grid * [size, 2 * size]).astype(np.float32)
    return box, keypoints, np.full(17, 0.9, np.float32)


def frame_of(
    *people: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not people:
        return (
            np.zeros((0, 5), np.float32),
            np.zeros((0, 17, 2), np.float32),
            np.zeros((0, 17), np.float32),
        )
    return tuple(np.stack(parts) for parts in zip(*people))  # type: ignore[return-value]


def test_box_iou_and_keypoint_shift() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(boxes, boxes)
    assert iou.shape == (3, 3) and np.allclose(np.diag(iou), 1)
    assert iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0
    a, b = person(0, 0), person(10, 0)
    shift = keypoint_shift(
        a[1][None], a[2][None], a[0][None], np.stack([a[1], b[1]]), np.stack([a[2], b[2]])
    )
    assert shift[0, 0] == 0 and shift[0, 1] == pytest.approx(10 / np.sqrt(100 * 200))
    unsure = np.zeros((1, 17), np.float32)
    assert np.isinf(keypoint_shift(a[1][None], a[2][None], a[0][None], b[1][None], unsure)).all()


def test_tracker_follows_people_when_the_detector_order_swaps() -> None:
    tracker = IoUTracker()
    first = tracker.update(*frame_of(person(0, 0), person(300, 0)))
    assert first.tolist() == [0, 1]
    for step in range(
        1, 20
    ):  # both walk right 5 px per frame; the detector lists them in alternating order
        left, right = person(5 * step, 0), person(300 + 5 * step, 0)
        order = (right, left) if step % 2 else (left, right)
        ids = tracker.update(*frame_of(*order))
        assert ids.tolist() == ([1, 0] if step % 2 else [0, 1])


def test_tracker_uses_keypoints_when_the_box_jumps() -> None:
    tracker = IoUTracker()
    box, keypoints, scores = person(0, 0)
    tracker.update(*frame_of((box, keypoints, scores)))
    stretched = box.copy()
    stretched[2] += (
        250  # an arm stretched out: IoU with the last box falls to 0.29, the joints barely move
    )
    assert box_iou(box[None], stretched[None])[0, 0] < 0.5
    assert tracker.update(*frame_of((stretched, keypoints + 3, scores))).tolist() == [0]


def test_tracker_never_reuses_ids() -> None:
    tracker = IoUTracker(max_missed=3)
    assert tracker.update(*frame_of(person(0, 0))).tolist() == [0]
    for _ in range(3):  # gone for max_missed frames: still remembered
        assert tracker.update(*frame_of()).tolist() == []
    assert tracker.update(*frame_of(person(0, 0))).tolist() == [0]
    for _ in range(4):  # gone for longer: forgotten, and the id is not given again
        tracker.update(*frame_of())
    assert tracker.update(*frame_of(person(0, 0), person(400, 0))).tolist() == [1, 2]
    tracker.reset()
    assert tracker.update(*frame_of(person(0, 0))).tolist() == [0]


# --- missing packages: one line that says what to install -----------------------------------------


def test_missing_stack_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("mmcv.ops", "mmdet", "mmdet.apis"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` of a None entry raises ImportError
    with pytest.raises(
        PoseBackendError,
        match=r"mmlab pose backend needs mmdet.*bash scripts/install_mmlab\.sh"
        r".*--backend blazepose\+mmpose",
    ):
        load_backend("mmlab")
    for name in ("mmpose", "mmpose.apis"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(
        PoseBackendError, match=r"mmpose .*not installed.*install_mmlab\.sh --light"
    ):
        load_backend("blazepose+mmpose")


def test_torchvision_stub_stands_in_when_torchvision_cannot_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from epam_data.pose.mmlab import _stub_torchvision

    monkeypatch.setitem(
        sys.modules, "torchvision", None
    )  # as if absent; both entries are restored afterwards
    monkeypatch.setitem(sys.modules, "torchvision.transforms", None)
    _stub_torchvision()
    from torchvision.transforms import ToPILImage  # what mmpose >= 1.2 imports

    with pytest.raises(RuntimeError, match="torchvision is not available"):
        ToPILImage()(np.zeros((2, 2, 3), np.uint8))


def test_rtmpose_without_mmdet_says_full_install(mmpose_stack: None) -> None:
    from epam_data.pose.mmlab import TopDownEstimator, _import_mmdet

    try:
        _import_mmdet()
    except PoseBackendError:
        pass
    else:
        pytest.skip("mmdet is installed here: RTMPose builds (test_mmlab_backend_end_to_end)")
    with pytest.raises(
        PoseBackendError, match=r"rtmpose-m: cannot be built.*CSPNeXt.*install_mmlab\.sh"
    ):
        TopDownEstimator("rtmpose-m", "random", device="cpu")


def test_unknown_backend_option_is_one_error() -> None:
    with pytest.raises(PoseBackendError, match="'blazepose' has no such option.*pose_config"):
        load_backend("blazepose", pose_config="hrnet-w32")


# --- the top-down estimator (light install) -------------------------------------------------------


def test_estimator_maps_heatmap_peaks_back_to_frame_pixels(
    hrnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Joint j peaks at heatmap cell (col 2 + 2j, row 3 + 3j); its frame position follows mmpose's
    crop: the box padded by 1.25, widened to 192:256, heatmap cell = 4 input pixels (MSRAHeatmap, no
    sub-pixel shift for an isolated peak)."""
    import torch

    cols, rows = 2 + 2 * np.arange(17), 3 + 3 * np.arange(17)

    def peaks(feats):
        heatmaps = torch.zeros(feats[0].shape[0], 17, 64, 48)
        heatmaps[:, np.arange(17), rows, cols] = 0.8
        return heatmaps

    monkeypatch.setattr(hrnet.model.head, "forward", peaks)
    frames = np.zeros((2, 360, 480, 3), np.uint8)
    boxes = [
        np.array([[100, 50, 180, 290, 0.9]], np.float32),  # tall: the width is widened
        np.array([[10, 20, 410, 220, 0.9], [0, 0, 48, 64, 0.5]], np.float32),
    ]  # wide: the height is
    results = hrnet.estimate(frames, boxes)
    for frame_boxes, (keypoints, scores) in zip(boxes, results):
        assert keypoints.shape == (len(frame_boxes), 17, 2) and scores.shape == (
            len(frame_boxes),
            17,
        )
        for box, points, point_scores in zip(frame_boxes, keypoints, scores):
            width, height = (box[2] - box[0]) * 1.25, (box[3] - box[1]) * 1.25
            width, height = (
                (width, width / 0.75) if width > height * 0.75 else (height * 0.75, height)
            )
            centre = (box[:2] + box[2:4]) / 2
            expected_x = centre[0] + (cols * 4 / 192 - 0.5) * width
            expected_y = centre[1] + (rows * 4 / 256 - 0.5) * height
            assert np.allclose(points[:, 0], expected_x, atol=1e-3) and np.allclose(
                points[:, 1], expected_y, atol=1e-3
            )
            assert np.allclose(point_scores, 0.8)


def test_estimator_batches_agree_and_keep_frames_apart(hrnet) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 240, 320, 3), dtype=np.uint8)
    boxes = [
        np.array([[10, 10, 110, 200, 1], [150, 20, 300, 230, 1]], np.float32),
        np.zeros((0, 5), np.float32),
        np.array([[40, 30, 200, 220, 1]], np.float32),
    ]
    hrnet.batch_size = 1
    one = hrnet.estimate(frames, boxes)
    hrnet.batch_size = 32
    together = hrnet.estimate(frames, boxes)
    assert [len(k) for k, _ in together] == [2, 0, 1]
    for (keypoints_a, scores_a), (keypoints_b, scores_b) in zip(one, together):
        assert np.allclose(keypoints_a, keypoints_b, atol=1e-2) and np.allclose(
            scores_a, scores_b, atol=1e-4
        )
        assert np.all((scores_b >= 0) & (scores_b <= 1))
    # the same box on another frame gives other keypoints: each crop comes from its own frame
    swapped = hrnet.estimate(frames[[2, 1, 0]], [boxes[0], boxes[1], boxes[0]])
    assert not np.allclose(swapped[0][0], swapped[2][0])


def test_checkpoint_option_loads_a_local_file(
    hrnet_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    import torch

    from epam_data.pose.mmlab import TopDownEstimator

    estimator = TopDownEstimator(
        "hrnet-w32", str(hrnet_checkpoint), device="cpu", flip_test="false", batch_size=4
    )
    assert torch.all(estimator.model.head.final_layer.bias == 0.125)
    digest = hashlib.sha256(hrnet_checkpoint.read_bytes()).hexdigest()[:12]
    assert estimator.model_ids["pose_checkpoint"] == f"hrnet_random.pth sha256:{digest}"
    assert estimator.model_ids["pose"].endswith("td-hm_hrnet-w32_8xb64-210e_coco-256x192.py")
    assert (
        estimator.model_ids["pose"].startswith("mmpose ")
        and estimator.model_ids["pose_test"] == "flip_test=False"
    )
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"backbone.nothing": torch.zeros(1)}}, wrong)
    with pytest.raises(PoseBackendError, match="not a checkpoint of this config"):
        TopDownEstimator("hrnet-w32", str(wrong), device="cpu")
    with pytest.raises(PoseBackendError, match="no such file"):
        TopDownEstimator("hrnet-w32", str(tmp_path / "missing.pth"), device="cpu")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(PoseBackendError, match="cannot download it.*pass the file instead"):
        TopDownEstimator("hrnet-w32", "http://127.0.0.1:9/hrnet.pth", device="cpu")
    with pytest.raises(PoseBackendError, match="not a model name"):
        TopDownEstimator("hrnet-w99", device="cpu")


class _RunsCode:
    """Pickled as a call of os.system: loading it with weights_only=False would create the marker
    file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_code_is_refused_unless_trusted(
    hrnet_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from epam_data.pose.mmlab import TopDownEstimator

    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pth"
    state = torch.load(hrnet_checkpoint, weights_only=True)
    torch.save({**state, "meta": {"hook": _RunsCode(marker)}}, hostile)
    monkeypatch.delenv("EPAM_TRUST_CHECKPOINTS", raising=False)
    with pytest.raises(PoseBackendError, match="could run code.*EPAM_TRUST_CHECKPOINTS=1"):
        TopDownEstimator("hrnet-w32", str(hostile), device="cpu")
    assert not marker.exists()  # nothing in the file ran
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(
        PoseBackendError, match="not a torch checkpoint, or it holds Python objects"
    ):
        TopDownEstimator("hrnet-w32", str(garbage), device="cpu")
    monkeypatch.setenv("EPAM_TRUST_CHECKPOINTS", "1")
    with pytest.raises(PoseBackendError, match="cannot read it as a torch checkpoint"):
        TopDownEstimator("hrnet-w32", str(garbage), device="cpu")


@pytest.fixture(scope="module")
def blazepose_ready() -> None:
    try:
        load_backend("blazepose")
    except PoseBackendError as err:
        pytest.skip(f"blazepose cannot run here: {err}")


def test_blazepose_mmpose_backend_on_a_person(
    mmpose_stack: None, blazepose_ready: None, hrnet_checkpoint: Path, person_clip: Path
) -> None:
    from epam_data.pose.blazepose import BlazePoseBackend
    from epam_data.video import read_frames

    frames = read_frames(person_clip)[:6]
    backend = load_backend(
        "blazepose+mmpose",
        pose_checkpoint=str(hrnet_checkpoint),
        flip_test="false",
        threads="1",
        max_persons=2,
    )
    assert backend.name == "blazepose+mmpose"
    assert set(backend.model_ids) == {
        "boxes_detector",
        "boxes_landmarks",
        "pose",
        "pose_checkpoint",
        "pose_test",
    }
    found = backend.estimate(frames[:3]) + backend.estimate(
        frames[3:]
    )  # tracking carries across chunks
    reference = BlazePoseBackend(max_persons=2).estimate(frames)
    for poses, expected in zip(found, reference):
        check_frame_poses(poses, frames.shape[1:3])
        assert (
            poses.track_ids.tolist() == expected.track_ids.tolist()
        )  # BlazePose's people, boxes and ids
        assert np.array_equal(poses.boxes, expected.boxes)
    assert sum(len(poses) for poses in found) >= 5  # the astronaut is found
    backend.reset()
    assert backend.estimate(frames[:1])[0].track_ids.tolist() == [0]


def test_extract_records_models_and_refuses_others(
    mmpose_stack: None, blazepose_ready: None, hrnet_checkpoint: Path, tmp_path: Path, pyav: object
) -> None:
    import shutil

    import torch

    from epam_data.cli import app
    from epam_data.shards import ShardReader

    videos = tmp_path / "videos"
    videos.mkdir()
    write_person_clip(videos / "S001C001P001R001A001_rgb.mp4", num_frames=6)
    out = tmp_path / "out"
    args = [
        "extract",
        str(videos),
        "-d",
        "ntu60",
        "-o",
        str(out),
        "--backend",
        "blazepose+mmpose",
        "--rgb-size",
        "64",
        "--pose-checkpoint",
        str(hrnet_checkpoint),
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    options = json.loads((out / "dataset.json").read_text())["options"]
    assert options["pose_backend"] == "blazepose+mmpose"
    assert options["pose_models"]["pose_checkpoint"].startswith("hrnet_random.pth sha256:")
    assert options["pose_backend_options"] == {
        "pose_checkpoint": str(hrnet_checkpoint)
    }  # no device / threads
    sample = ShardReader(out)["S001C001P001R001A001"]
    assert sample.keypoints.shape == (1, 6, 17, 2) and sample.scores.any()
    # other weights for the same folder: refused, with the difference named
    other = tmp_path / "other.pth"
    shutil.copy(hrnet_checkpoint, other)
    state = torch.load(other, weights_only=True)
    state["state_dict"]["head.final_layer.bias"].fill_(0.5)
    torch.save(state, other)
    result = runner.invoke(app, [*args[:-6], "--pose-checkpoint", str(other), "--threads", "1"])
    assert result.exit_code == 1 and "prepared with other options" in result.output, result.output


# --- the detector path (full install: mmcv with ops, mmdet) ---------------------------------------


@pytest.fixture(scope="module")
def rtmdet(mmdet_stack: None):
    from epam_data.pose.mmlab import PersonDetector

    # Untrained heads score about 0.01 everywhere and predict empty boxes (dropped):
    # `lift_rtmdet_box_sizes`.
    detector = PersonDetector(
        "rtmdet-tiny",
        "random",
        device="cpu",
        score_thr=0.0,
        area_thr=0.0,
        max_detections=3,
        batch_size=4,
    )
    lift_rtmdet_box_sizes(detector.model)
    return detector


def lift_rtmdet_box_sizes(model) -> None:
    """Make an untrained RTMDet predict boxes 4 strides wide (its ltrb distances start near 0) and
    score the person class 0.5 (the others keep their prior, 0.01), so that person boxes are not
    crowded out by the 79 others."""
    import torch

    with torch.no_grad():
        for conv in model.bbox_head.rtm_reg:
            conv.bias.fill_(2.0)
        for conv in model.bbox_head.rtm_cls:
            conv.bias[0] = 0.0


def test_detector_boxes_and_batching(rtmdet) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (3, 240, 320, 3), dtype=np.uint8)
    together = rtmdet.detect(frames)
    rtmdet.batch_size = 1
    one = rtmdet.detect(frames)
    rtmdet.batch_size = 4
    assert len(together) == 3
    for boxes_a, boxes_b in zip(one, together):
        assert boxes_b.shape == (3, 5) and boxes_b.dtype == np.float32
        assert np.all(np.diff(boxes_b[:, 4]) <= 0)  # best first
        assert (
            np.all(boxes_b[:, [0, 2]] <= 320)
            and np.all(boxes_b[:, [1, 3]] <= 240)
            and np.all(boxes_b >= 0)
        )
        assert np.allclose(boxes_a, boxes_b, atol=0.5)
    assert rtmdet.person_label == 0
    assert (
        rtmdet.model_ids["detector"].startswith("mmdet ")
        and "rtmdet_tiny" in rtmdet.model_ids["detector"]
    )
    assert rtmdet.model_ids["person_boxes"] == "score >= 0, area >= 0 px^2, best 3"


def test_mmlab_backend_end_to_end(rtmdet, tmp_path: Path) -> None:
    import torch

    path = tmp_path / "rtmdet_random.pth"
    torch.save({"state_dict": rtmdet.model.state_dict()}, path)
    backend = load_backend(
        "mmlab",
        det_config="rtmdet-tiny",
        det_checkpoint=str(path),
        pose_config="rtmpose-m",
        pose_checkpoint="random",
        det_score_thr="0",
        det_area_thr="0",
        max_detections="2",
        flip_test="false",
        threads="1",
        device="cpu",
        max_persons=2,
        detect_every=10,
    )
    assert backend.name == "mmlab"
    assert backend.model_ids["detector_checkpoint"].startswith("rtmdet_random.pth sha256:")
    assert backend.model_ids["pose_checkpoint"] == "random init (no checkpoint)"
    assert "rtmpose-m" in backend.model_ids["pose"] and "tracker" in backend.model_ids
    frames = np.random.default_rng(2).integers(0, 256, (4, 240, 320, 3), dtype=np.uint8)
    frames[1:] = frames[0]  # a still scene: the same boxes every frame, so the same two track ids
    found = backend.estimate(frames)
    for poses in found:
        check_frame_poses(poses, (240, 320))
        assert len(poses) == 2
        assert np.all(poses.boxes[:, 4] >= 0)
    assert all(sorted(poses.track_ids.tolist()) == [0, 1] for poses in found)
    backend.reset()
    assert sorted(backend.estimate(frames[:1])[0].track_ids.tolist()) == [0, 1]


@pytest.mark.slow
def test_faster_rcnn_person_runs(mmdet_stack: None) -> None:
    """The default detector (two-stage: RPN NMS and RoIAlign from mmcv.ops); untrained, it keeps no
    box."""
    from epam_data.pose.mmlab import PersonDetector

    detector = PersonDetector(
        "faster-rcnn-person", "random", device="cpu", score_thr=0.0, area_thr=0.0
    )
    assert detector.person_label == 0
    boxes = detector.detect(np.zeros((1, 240, 320, 3), np.uint8))
    assert len(boxes) == 1 and boxes[0].shape[1] == 5
