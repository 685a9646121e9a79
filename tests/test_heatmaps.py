"""epam_data.heatmaps against a plain transcription of PoseC3D's GeneratePoseTarget and PoseCompact.

`reference_render` below is PYSKL's algorithm (pyskl/datasets/pipelines/heatmap_related.py,
docs/prior-art.md 2.2): frame by frame, joint by joint (or limb by limb), person by person, one
window at a time. Everything the library renders is compared with it on every pixel within 1e-5.
scripts/bench_heatmaps.py times it too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epam_data.heatmaps import (
    COCO17_FLIP_PERM,
    COCO_LIMBS,
    COCO_LIMBS_POSEC3D_CONFIG,
    CropBox,
    LimbSet,
    compact_box,
    crop_keypoints,
    flip_heatmaps,
    flip_keypoints,
    limb_flip_perm,
    pose_compact,
    render,
    render_torch,
    resize_keypoints,
)

TOL = 1e-5
EDGE_BOUND = math.exp(
    -4.5
)  # a pixel just past 3 sigma, the most PoseC3D's lopsided window can add on one side


# --------------------------------------------------------------------------------------------------
# The reference: PoseC3D's loops, transcribed
# --------------------------------------------------------------------------------------------------


def _ref_joint_heatmap(arr, centers, max_values, sigma, eps):
    """GeneratePoseTarget.generate_a_heatmap: one joint, all persons, one frame, drawn into arr [H,
    W]."""
    img_h, img_w = arr.shape
    for center, max_value in zip(centers, max_values):
        if float(max_value) < eps:
            continue
        mu_x, mu_y = center[0], center[1]
        # PYSKL runs on numpy 1 (it uses np.Inf and np.int), where np.float32 - Python float is
        # float64; float() pins that here so the reference means the same under numpy 2.
        st_x = max(int(float(mu_x) - 3 * sigma), 0)
        ed_x = min(int(float(mu_x) + 3 * sigma) + 1, img_w)
        st_y = max(int(float(mu_y) - 3 * sigma), 0)
        ed_y = min(int(float(mu_y) + 3 * sigma) + 1, img_h)
        x = np.arange(st_x, ed_x, 1, np.float32)
        y = np.arange(st_y, ed_y, 1, np.float32)
        if not (len(x) and len(y)):
            continue
        y = y[:, None]
        patch = np.exp(-((x - mu_x) ** 2 + (y - mu_y) ** 2) / 2 / sigma**2)
        patch = patch * max_value
        arr[st_y:ed_y, st_x:ed_x] = np.maximum(arr[st_y:ed_y, st_x:ed_x], patch)


def _ref_limb_heatmap(arr, starts, ends, start_values, end_values, sigma, eps):
    """GeneratePoseTarget.generate_a_limb_heatmap: one limb, all persons, one frame, drawn into arr
    [H, W]."""
    img_h, img_w = arr.shape
    for start, end, start_value, end_value in zip(starts, ends, start_values, end_values):
        value_coeff = min(start_value, end_value)
        if float(value_coeff) < eps:
            continue
        min_x, max_x = min(start[0], end[0]), max(start[0], end[0])
        min_y, max_y = min(start[1], end[1]), max(start[1], end[1])
        min_x = max(int(float(min_x) - 3 * sigma), 0)
        max_x = min(int(float(max_x) + 3 * sigma) + 1, img_w)
        min_y = max(int(float(min_y) - 3 * sigma), 0)
        max_y = min(int(float(max_y) + 3 * sigma) + 1, img_h)
        x = np.arange(min_x, max_x, 1, np.float32)
        y = np.arange(min_y, max_y, 1, np.float32)
        if not (len(x) and len(y)):
            continue
        y = y[:, None]
        x_0 = np.zeros_like(x)
        y_0 = np.zeros_like(y)
        d2_start = (x - start[0]) ** 2 + (y - start[1]) ** 2
        d2_end = (x - end[0]) ** 2 + (y - end[1]) ** 2
        d2_ab = (start[0] - end[0]) ** 2 + (start[1] - end[1]) ** 2
        if d2_ab < 1:
            _ref_joint_heatmap(arr, start[None], start_value[None], sigma, eps)
            continue
        coeff = (d2_start - d2_end + d2_ab) / 2.0 / d2_ab
        a_dominate = coeff <= 0
        b_dominate = coeff >= 1
        seg_dominate = 1 - a_dominate - b_dominate
        position = np.stack([x + y_0, y + x_0], axis=-1)
        projection = start + np.stack([coeff, coeff], axis=-1) * (end - start)
        d2_line = position - projection
        d2_line = d2_line[:, :, 0] ** 2 + d2_line[:, :, 1] ** 2
        d2_seg = a_dominate * d2_start + b_dominate * d2_end + seg_dominate * d2_line
        patch = np.exp(-d2_seg / 2.0 / sigma**2)
        patch = patch * value_coeff
        arr[min_y:max_y, min_x:max_x] = np.maximum(arr[min_y:max_y, min_x:max_x], patch)


def reference_render(
    keypoints, scores, img_shape, kind="joint", sigma=0.6, limbs=COCO_LIMBS.limbs, eps=1e-3
):
    """GeneratePoseTarget.gen_an_aug with scaling 1: float32 [T, C, H, W] from [M, T, V, 2] canvas
    pixels."""
    all_kps = np.array(keypoints, copy=True)
    all_scores = (
        np.ones(all_kps.shape[:-1], np.float32) if scores is None else np.array(scores, copy=True)
    )
    img_h, img_w = img_shape
    num_frame, num_joints = all_kps.shape[1], all_kps.shape[2]
    num_c = num_joints if kind == "joint" else len(limbs)
    ret = np.zeros([num_frame, num_c, img_h, img_w], dtype=np.float32)
    for i in range(num_frame):
        kps, kpscores = all_kps[:, i], all_scores[:, i]
        if kind == "joint":
            for v in range(num_joints):
                _ref_joint_heatmap(ret[i, v], kps[:, v], kpscores[:, v], sigma, eps)
        else:
            for c, (a, b) in enumerate(limbs):
                _ref_limb_heatmap(
                    ret[i, c], kps[:, a], kps[:, b], kpscores[:, a], kpscores[:, b], sigma, eps
                )
    return ret


def reference_compact_box(
    kp, img_shape, padding=0.25, threshold=10, hw_ratio=(1.0, 1.0), allow_imgpad=True
):
    """MMCompact._get_box (PoseCompact's rule), transcribed; returns (x0, y0, x1, y1)."""
    h, w = img_shape
    kp = np.array(kp, copy=True)
    kp[np.isnan(kp)] = 0.0
    kp_x, kp_y = kp[..., 0], kp[..., 1]
    min_x = np.min(kp_x[kp_x != 0], initial=np.inf)
    min_y = np.min(kp_y[kp_y != 0], initial=np.inf)
    max_x = np.max(kp_x[kp_x != 0], initial=-np.inf)
    max_y = np.max(kp_y[kp_y != 0], initial=-np.inf)
    if max_x - min_x < threshold or max_y - min_y < threshold:
        return (0, 0, w, h)
    center = ((max_x + min_x) / 2, (max_y + min_y) / 2)
    half_width = (max_x - min_x) / 2 * (1 + padding)
    half_height = (max_y - min_y) / 2 * (1 + padding)
    if hw_ratio is not None:
        half_height = max(hw_ratio[0] * half_width, half_height)
        half_width = max(1 / hw_ratio[1] * half_height, half_width)
    min_x, max_x = center[0] - half_width, center[0] + half_width
    min_y, max_y = center[1] - half_height, center[1] + half_height
    if not allow_imgpad:
        min_x, min_y = int(max(0, min_x)), int(max(0, min_y))
        max_x, max_y = int(min(w, max_x)), int(min(h, max_y))
    else:
        min_x, min_y = int(min_x), int(min_y)
        max_x, max_y = int(max_x), int(max_y)
    return (min_x, min_y, max_x, max_y)


# --------------------------------------------------------------------------------------------------
# Inputs: random clips rich in edge cases
# --------------------------------------------------------------------------------------------------


def make_clip(
    seed, persons, frames, canvas_hw, sigma=0.6, dtype=np.float32, limbs=COCO_LIMBS.limbs
):
    """Keypoints [M, T, 17, 2] and scores [M, T, 17] with many edge cases mixed into random poses.

    Coordinates: uniform over the canvas and a margin of 4 px around it, some snapped to integers
    and half-integers, some set to exact edge values (0, W - 1, W, -3 sigma, -3 sigma - 0.5 ...);
    some limbs made degenerate (end within 1 px of start, or on it). Scores: uniform, with zeros,
    exact eps and just-below eps.
    """
    rng = np.random.default_rng(seed)
    h, w = canvas_hw
    shape = (persons, frames, 17)
    kp = np.stack([rng.uniform(-4, w + 4, shape), rng.uniform(-4, h + 4, shape)], axis=-1)
    pick = rng.random(kp.shape)
    kp = np.where(pick < 0.1, np.round(kp), kp)
    kp = np.where((pick >= 0.1) & (pick < 0.2), np.floor(kp) + 0.5, kp)
    half = 3 * sigma
    edges_x = np.array(
        [0, w - 1, w, -half, -half - 0.5, -half - 1.2, w - 1 + half, w + half, 0.5, 2.8]
    )
    edges_y = np.array(
        [0, h - 1, h, -half, -half - 0.5, -half - 1.2, h - 1 + half, h + half, 0.5, 2.8]
    )
    edge = rng.random(shape) < 0.08
    kp[..., 0] = np.where(edge, rng.choice(edges_x, shape), kp[..., 0])
    kp[..., 1] = np.where(rng.random(shape) < 0.08, rng.choice(edges_y, shape), kp[..., 1])
    for m in range(persons):
        for t in range(frames):
            for i, j in limbs:
                r = rng.random()
                if r < 0.06:
                    kp[m, t, j] = kp[m, t, i]
                elif r < 0.12:
                    kp[m, t, j] = kp[m, t, i] + rng.uniform(-0.7, 0.7, 2)
    scores = rng.uniform(0, 1, shape)
    pick = rng.random(shape)
    scores = np.where(pick < 0.1, 0.0, scores)
    scores = np.where((pick >= 0.1) & (pick < 0.13), 1e-3, scores)
    scores = np.where((pick >= 0.13) & (pick < 0.16), 0.9999e-3, scores)
    return kp.astype(dtype), scores.astype(dtype)


clip_cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "persons": st.integers(1, 3),
        "frames": st.integers(1, 3),
        "canvas_hw": st.sampled_from([(56, 56), (64, 64), (48, 64)]),
        "sigma": st.sampled_from([0.6, 0.7]),
    }
)


def assert_close(actual, expected, tol=TOL):
    assert actual.shape == expected.shape and actual.dtype == np.float32
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    where = np.unravel_index(diff.argmax(), diff.shape) if diff.size else None
    assert diff.max(initial=0) <= tol, f"max abs difference {diff.max()} at {where}"


# --------------------------------------------------------------------------------------------------
# Exactness against the reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["joint", "limb"])
@settings(max_examples=30, deadline=None)
@given(case=clip_cases)
def test_render_equals_posec3d_on_random_clips(kind, case):
    kp, scores = make_clip(
        case["seed"], case["persons"], case["frames"], case["canvas_hw"], case["sigma"]
    )
    expected = reference_render(kp, scores, case["canvas_hw"], kind, case["sigma"])
    assert_close(render(kp, scores, case["canvas_hw"], kind=kind, sigma=case["sigma"]), expected)


@pytest.mark.parametrize("kind", ["joint", "limb"])
@pytest.mark.parametrize("canvas", [56, 64])
@pytest.mark.parametrize("sigma", [0.6, 0.7])
@pytest.mark.parametrize("persons", [1, 2])
def test_render_equals_posec3d_on_full_clips(kind, canvas, sigma, persons):
    kp, scores = make_clip(1000 * persons + canvas, persons, 8, (canvas, canvas), sigma)
    expected = reference_render(kp, scores, (canvas, canvas), kind, sigma)
    assert_close(render(kp, scores, (canvas, canvas), kind=kind, sigma=sigma), expected)


@pytest.mark.parametrize("kind", ["joint", "limb"])
def test_render_float64_and_no_scores(kind):
    kp, _ = make_clip(7, 2, 3, (56, 56), dtype=np.float64)
    assert_close(render(kp, None, (56, 56), kind=kind), reference_render(kp, None, (56, 56), kind))
    ones = np.ones(kp.shape[:-1], np.float32)
    assert_close(
        render(kp, None, (56, 56), kind=kind), render(kp, ones, (56, 56), kind=kind), tol=0
    )


def test_render_other_limb_lists_and_eps():
    kp, scores = make_clip(11, 2, 3, (64, 64), limbs=COCO_LIMBS_POSEC3D_CONFIG.limbs)
    for limbs in (COCO_LIMBS_POSEC3D_CONFIG, [(5, 9), (9, 5), (0, 16)]):
        pairs = limbs.limbs if isinstance(limbs, LimbSet) else limbs
        got = render(kp, scores, (64, 64), kind="limb", limbs=limbs, eps=1e-4)
        assert_close(got, reference_render(kp, scores, (64, 64), "limb", limbs=pairs, eps=1e-4))


# Hand-made cases with the value PoseC3D gives, each naming the quirk it pins down.
def one_joint(x, y, score=1.0, canvas=(56, 56), sigma=0.6, dtype=np.float32):
    kp = np.zeros((1, 1, 17, 2), dtype)
    kp[0, 0, 0] = (x, y)
    scores = np.zeros((1, 1, 17), dtype)
    scores[0, 0, 0] = score
    got = render(kp, scores, canvas, sigma=sigma)
    assert_close(torch_render(kp, scores, canvas, "joint", sigma), got)
    return got[0, 0], reference_render(kp, scores, canvas, "joint", sigma)[0, 0]


def torch_render(kp, scores, canvas, kind, sigma=0.6):
    """render_torch on one clip, back as numpy."""
    return render_torch(
        torch.from_numpy(kp)[None], torch.from_numpy(scores)[None], canvas, kind=kind, sigma=sigma
    )[0].numpy()


def test_window_truncates_toward_zero_left_of_the_canvas():
    # x = -2.5: int(-2.5 + 1.8) = int(-0.7) = 0, so pixel 0 is drawn (floor would give an empty
    # window).
    got, ref = one_joint(-2.5, 10.0)
    assert got[10, 0] == pytest.approx(math.exp(-(2.5**2) / 0.72), rel=1e-5)
    assert_close(got, ref)
    got, ref = one_joint(-2.9, 10.0)  # int(-1.1) = -1: empty window
    assert not got.any() and not ref.any()


def test_window_is_lopsided():
    # mu = 10: window 8..11 (int(8.2) .. int(11.8)), so x = 8 (2 px left) is drawn and x = 12 (2 px
    # right) is not.
    got, ref = one_joint(10.0, 10.0)
    assert got[10, 8] > 0 and got[10, 12] == 0 and got[10, 11] > 0
    assert_close(got, ref)


def test_window_bounds_are_float64_like_numpy_1():
    # float32(2.8) - 1.8 is 0.99999995 in float64 (numpy 1, PoseC3D's numpy) but exactly 1.0 in
    # float32: the window starts at pixel 0 and pixel 0 gets exp(-2.8^2 / 0.72) = 1.9e-5.
    got, ref = one_joint(2.8, 10.0)
    assert got[10, 0] == pytest.approx(math.exp(-(float(np.float32(2.8)) ** 2) / 0.72), rel=1e-4)
    assert_close(got, ref)


@pytest.mark.parametrize("x", [0.0, 55.0, 56.0, 57.8, 57.9, 58.3, -1.8, -0.5])
@pytest.mark.parametrize("sigma", [0.6, 0.7])
def test_joints_at_and_beyond_the_edge(x, sigma):
    got, ref = one_joint(x, x, 0.7, sigma=sigma)
    assert_close(got, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_score_threshold_is_inclusive(dtype):
    got, _ = one_joint(20.0, 20.0, score=1e-3, dtype=dtype)
    assert got[20, 20] == pytest.approx(1e-3, rel=1e-6)
    got, _ = one_joint(20.0, 20.0, score=0.9999e-3)
    assert not got.any()


def limb_clip(a, b, s_a, s_b, dtype=np.float32):
    kp = np.zeros((1, 1, 17, 2), dtype)
    scores = np.zeros((1, 1, 17), dtype)
    kp[0, 0, 5], kp[0, 0, 7] = a, b  # limb (5, 7) is channel 5 of COCO_LIMBS
    scores[0, 0, 5], scores[0, 0, 7] = s_a, s_b
    return kp, scores


@pytest.mark.parametrize("end", [(20.0, 30.0), (20.5, 30.4), (20.99, 30.0), (21.0, 30.0)])
def test_degenerate_limb_is_its_start_joint(end):
    kp, scores = limb_clip((20.0, 30.0), end, 0.9, 0.4)
    got = render(kp, scores, (56, 56), kind="limb")[0, 5]
    assert_close(got, reference_render(kp, scores, (56, 56), "limb")[0, 5])
    assert_close(torch_render(kp, scores, (56, 56), "limb")[0, 5], got)
    if (end[0] - 20) ** 2 + (end[1] - 30) ** 2 < 1:
        # PoseC3D quirk: the start joint's score (0.9), not min(0.9, 0.4), at the start joint only.
        assert got[30, 20] == pytest.approx(0.9, rel=1e-6)
    else:
        assert got.max() == pytest.approx(0.4, rel=1e-6)


def test_degenerate_limb_still_needs_both_scores():
    kp, scores = limb_clip((20.0, 30.0), (20.0, 30.0), 0.9, 0.0)
    assert not render(kp, scores, (56, 56), kind="limb").any()


def test_limb_leaving_the_canvas():
    kp, scores = limb_clip((50.0, 10.0), (80.0, -20.0), 0.8, 0.6)
    got = render(kp, scores, (56, 56), kind="limb")
    assert got.any()
    assert_close(got, reference_render(kp, scores, (56, 56), "limb"))
    assert_close(torch_render(kp, scores, (56, 56), "limb"), got)


def test_persons_merge_by_max():
    kp = np.zeros((2, 1, 17, 2), np.float32)
    kp[:, 0, 0] = (20.0, 20.0), (20.6, 20.0)
    scores = np.zeros((2, 1, 17), np.float32)
    scores[:, 0, 0] = 0.5, 0.8
    got = render(kp, scores, (56, 56))[0, 0]
    assert_close(got, reference_render(kp, scores, (56, 56))[0, 0])
    single = [render(kp[m : m + 1], scores[m : m + 1], (56, 56))[0, 0] for m in range(2)]
    assert np.array_equal(got, np.maximum(*single))


def test_non_finite_joints_are_skipped():
    kp, scores = make_clip(3, 2, 2, (56, 56))
    kp[0, 0, 3] = np.nan
    kp[1, 1, 11, 0] = np.inf
    dropped = scores.copy()
    dropped[0, 0, 3] = dropped[1, 1, 11] = 0
    clean = np.nan_to_num(kp, nan=0.0, posinf=0.0)
    for kind in ("joint", "limb"):
        assert_close(
            render(kp, scores, (56, 56), kind=kind),
            reference_render(clean, dropped, (56, 56), kind),
        )


def test_empty_inputs():
    kp, scores = make_clip(5, 2, 2, (56, 56))
    zeros = np.zeros_like(scores)
    for kind in ("joint", "limb"):
        assert not render(kp, zeros, (56, 56), kind=kind).any()
    assert render(kp[:0], scores[:0], (56, 56)).shape == (2, 17, 56, 56)
    assert render(kp, scores, (56, 56), kind="limb", limbs=[]).shape == (2, 0, 56, 56)


def test_inputs_are_not_modified():
    kp, scores = make_clip(9, 2, 3, (56, 56))
    kp_before, scores_before = kp.copy(), scores.copy()
    for kind in ("joint", "limb"):
        render(kp, scores, (56, 56), kind=kind)
        render_torch(
            torch.from_numpy(kp)[None], torch.from_numpy(scores)[None], (56, 56), kind=kind
        )
    flip_keypoints(kp, scores, 56)
    flip_keypoints(kp, scores, 56, convention="posec3d")
    box = compact_box(kp, (56, 56), threshold=1)
    crop_keypoints(kp, box)
    resize_keypoints(kp, (56, 56), (64, 64))
    pose_compact(kp, (56, 56), threshold=1)
    assert np.array_equal(kp, kp_before) and np.array_equal(scores, scores_before)


# --------------------------------------------------------------------------------------------------
# torch path
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["joint", "limb"])
@pytest.mark.parametrize("sigma", [0.6, 0.7])
def test_torch_equals_numpy(kind, sigma):
    clips = [make_clip(20 + n, 3, 4, (56, 56), sigma) for n in range(4)]
    kp = torch.from_numpy(np.stack([c[0] for c in clips]))
    scores = torch.from_numpy(np.stack([c[1] for c in clips]))
    got = render_torch(kp, scores, (56, 56), kind=kind, sigma=sigma)
    assert (
        got.shape == (4, 4, 17, 56, 56) and got.dtype == torch.float32 and got.device == kp.device
    )
    for n, (k, s) in enumerate(clips):
        expected = render(k, s, (56, 56), kind=kind, sigma=sigma)
        assert_close(got[n].numpy(), expected)
        assert_close(got[n].numpy(), reference_render(k, s, (56, 56), kind, sigma))
    model_layout = render_torch(kp, scores, (56, 56), kind=kind, sigma=sigma, layout="NCTHW")
    assert torch.equal(model_layout, got.transpose(1, 2))


@pytest.mark.parametrize("kind", ["joint", "limb"])
def test_torch_float64_no_scores_and_rectangular_canvas(kind):
    kp, _ = make_clip(31, 2, 3, (48, 64), dtype=np.float64)
    got = render_torch(torch.from_numpy(kp)[None], None, (48, 64), kind=kind)
    assert_close(got[0].numpy(), reference_render(kp, None, (48, 64), kind))


def test_torch_non_finite_and_empty():
    kp, scores = make_clip(3, 2, 2, (56, 56))
    kp[0, 0, 3] = np.nan
    for kind in ("joint", "limb"):
        got = render_torch(
            torch.from_numpy(kp)[None], torch.from_numpy(scores)[None], (56, 56), kind=kind
        )
        assert_close(got[0].numpy(), render(kp, scores, (56, 56), kind=kind))
        none = render_torch(
            torch.from_numpy(kp)[None], torch.zeros(1, *scores.shape), (56, 56), kind=kind
        )
        assert not none.any()


# --------------------------------------------------------------------------------------------------
# Flips
# --------------------------------------------------------------------------------------------------


def pyskl_flip_indices(num, left, right):
    """How GeneratePoseTarget (double) and Flip build their index maps from left/right lists."""
    indices = list(range(num))
    for lft, rgt in zip(left, right):
        indices[lft], indices[rgt] = rgt, lft
    return tuple(indices)


def test_flip_permutations_match_posec3d():
    assert COCO17_FLIP_PERM == pyskl_flip_indices(
        17, (1, 3, 5, 7, 9, 11, 13, 15), (2, 4, 6, 8, 10, 12, 14, 16)
    )
    assert COCO_LIMBS.flip_perm == pyskl_flip_indices(
        17, (0, 2, 4, 5, 6, 10, 11, 12), (1, 3, 7, 8, 9, 13, 14, 15)
    )
    assert COCO_LIMBS_POSEC3D_CONFIG.flip_perm == pyskl_flip_indices(
        17, (0, 2, 3, 6, 7, 8, 12, 14), (1, 4, 5, 9, 10, 11, 13, 15)
    )
    for limb_set in (COCO_LIMBS, COCO_LIMBS_POSEC3D_CONFIG):
        assert limb_flip_perm(limb_set.limbs, COCO17_FLIP_PERM) == limb_set.flip_perm
        assert LimbSet.from_joint_flip(limb_set.limbs, COCO17_FLIP_PERM) == limb_set


def test_flip_heatmaps_is_posec3d_double():
    kp, scores = make_clip(41, 2, 3, (56, 56))
    for kind, perm in (("joint", COCO17_FLIP_PERM), ("limb", COCO_LIMBS.flip_perm)):
        volume = render(kp, scores, (56, 56), kind=kind)
        expected = volume[..., ::-1][:, list(perm)]
        assert np.array_equal(flip_heatmaps(volume, perm), expected)
        batch = torch.from_numpy(volume)[None]
        assert np.array_equal(flip_heatmaps(batch, perm).numpy()[0], expected)
        assert np.array_equal(
            flip_heatmaps(batch.transpose(1, 2), perm, channel_axis=1).transpose(1, 2).numpy()[0],
            expected,
        )
        assert np.array_equal(flip_heatmaps(flip_heatmaps(volume, perm), perm), volume)


def assert_flip_consistent(flipped_render, rendered_flip, max_score):
    """Equal except where only PoseC3D's lopsided window reaches: there at most exp(-4.5) * score
    apart."""
    diff = np.abs(flipped_render - rendered_flip)
    bound = EDGE_BOUND * max_score
    assert diff.max(initial=0) <= bound + TOL
    strong = np.maximum(flipped_render, rendered_flip) > bound + TOL
    assert diff[strong].max(initial=0) <= TOL


@pytest.mark.parametrize("kind", ["joint", "limb"])
@settings(max_examples=15, deadline=None)
@given(case=clip_cases)
def test_render_of_flipped_keypoints_is_flipped_render(kind, case):
    h, w = case["canvas_hw"]
    kp, scores = make_clip(
        case["seed"], case["persons"], case["frames"], case["canvas_hw"], case["sigma"]
    )
    # The hips limb (11, 12) mirrors onto itself reversed; when it is degenerate PoseC3D draws its
    # start joint, which the flip turns into the other hip: keep the hips at least 1 px apart here.
    close = ((kp[:, :, 11] - kp[:, :, 12]) ** 2).sum(-1) < 1
    kp[:, :, 12][close] = kp[:, :, 11][close] + 2
    perm = COCO17_FLIP_PERM if kind == "joint" else COCO_LIMBS.flip_perm
    flipped_kp, flipped_scores = flip_keypoints(kp, scores, w)
    rendered_flip = render(flipped_kp, flipped_scores, (h, w), kind=kind, sigma=case["sigma"])
    flipped_render = flip_heatmaps(render(kp, scores, (h, w), kind=kind, sigma=case["sigma"]), perm)
    assert_flip_consistent(flipped_render, rendered_flip, scores.max())


def test_flip_keypoints_conventions():
    kp, scores = make_clip(43, 2, 3, (56, 56))
    kp[0, 0, 1] = (0.0, 7.0)
    flipped, flipped_scores = flip_keypoints(kp, scores, 56)
    assert np.array_equal(flipped[..., 0], 55 - kp[..., list(COCO17_FLIP_PERM), 0])
    assert np.array_equal(flipped_scores, scores[..., list(COCO17_FLIP_PERM)])
    twice, _ = flip_keypoints(flipped, flipped_scores, 56)
    assert np.allclose(twice, kp, rtol=0, atol=1e-5)  # float32 rounding of 55 - x
    # PoseC3D's Flip._flip_kps, transcribed: x' = W - x for non-zero x, then the joint swap.
    expected = kp.copy()
    x = expected[..., 0]
    x[x != 0] = 56 - x[x != 0]
    expected = expected[:, :, list(COCO17_FLIP_PERM)]
    posec3d, _ = flip_keypoints(kp, scores, 56, convention="posec3d")
    assert np.array_equal(posec3d, expected)
    assert posec3d[0, 0, 2, 0] == 0  # joint 1 (x == 0) became joint 2 and stayed missing
    for convention in ("pixel", "posec3d"):
        t_kp, t_sc = flip_keypoints(
            torch.from_numpy(kp), torch.from_numpy(scores), 56, convention=convention
        )
        n_kp, n_sc = flip_keypoints(kp, scores, 56, convention=convention)
        assert np.array_equal(t_kp.numpy(), n_kp) and np.array_equal(t_sc.numpy(), n_sc)
    assert flip_keypoints(kp, None, 56)[1] is None


# --------------------------------------------------------------------------------------------------
# PoseCompact, crop and resize
# --------------------------------------------------------------------------------------------------


def person_box(x0, y0, x1, y1, frames=2):
    """One person whose joints span exactly [x0, x1] x [y0, y1], plus zeros (missing joints)."""
    kp = np.zeros((1, frames, 17, 2), np.float32)
    kp[0, 0, 0], kp[0, 0, 1] = (x0, y0), (x1, y1)
    kp[0, -1, 5] = ((x0 + x1) / 2, (y0 + y1) / 2)
    return kp


def test_compact_box_hand_made():
    # 100 x 200 person, centre (150, 150): half extents 62.5 x 125, made square at 125.
    assert compact_box(person_box(100, 50, 200, 250), (480, 640)) == CropBox(25, 25, 275, 275)
    assert compact_box(person_box(100, 50, 200, 250), (480, 640)).canvas_hw == (250, 250)
    # Near the left edge: x0 = 60.2 - 125 = -64.8 truncates to -64 (toward zero), x1 = 185.2 -> 185.
    assert compact_box(person_box(10.4, 100, 110, 300), (480, 640)) == CropBox(-64, 75, 185, 325)
    # EPAM-Net's allow_imgpad=False clamps to the image, and the box stops being square.
    assert compact_box(person_box(10.4, 100, 110, 300), (480, 640), allow_imgpad=False) == CropBox(
        0, 75, 185, 325
    )
    # hw_ratio None keeps the aspect: 62.5 and 125 half extents.
    assert compact_box(person_box(100, 50, 200, 250), (480, 640), hw_ratio=None) == CropBox(
        87, 25, 212, 275
    )
    # Smaller than the 10 px threshold in either direction: the whole image.
    assert compact_box(person_box(100, 50, 109, 250), (480, 640)) == CropBox(0, 0, 640, 480)
    assert compact_box(np.zeros((2, 3, 17, 2)), (480, 640)) == CropBox(0, 0, 640, 480)


def test_compact_box_uses_coordinates_not_scores():
    # PoseC3D quirk: the box spans every non-zero x and every non-zero y, x and y apart, and takes
    # no scores (a joint with score 0 but coordinates counts).
    kp = person_box(100, 50, 200, 250)
    kp[0, 1, 9] = (0.0, 400.0)  # x == 0 is missing, y = 400 still counts
    # y 50..400: centre 225, half 175 * 1.25 = 218.75 both ways (square) around x centre 150.
    assert compact_box(kp, (480, 640)) == CropBox(-68, 6, 368, 443)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    allow_imgpad=st.booleans(),
    hw_ratio=st.sampled_from([1.0, None, (0.75, 1.25)]),
    padding=st.sampled_from([0.0, 0.25]),
)
def test_compact_box_equals_mmcompact(seed, allow_imgpad, hw_ratio, padding):
    rng = np.random.default_rng(seed)
    kp = rng.uniform(-50, 700, (2, 4, 17, 2)).astype(np.float32) * (rng.random((2, 4, 17, 1)) < 0.8)
    kp[rng.random(kp.shape) < 0.05] = np.nan
    pair = (
        None
        if hw_ratio is None
        else (hw_ratio, hw_ratio)
        if isinstance(hw_ratio, float)
        else hw_ratio
    )
    expected = reference_compact_box(kp, (480, 640), padding, 10, pair, allow_imgpad)
    box = compact_box(kp, (480, 640), padding=padding, hw_ratio=hw_ratio, allow_imgpad=allow_imgpad)
    assert (box.x0, box.y0, box.x1, box.y1) == expected


def test_crop_and_resize_keypoints():
    kp = np.array([[[[30.0, 40.0], [0.0, 40.0], [0.0, 0.0]]]], np.float32)
    box = CropBox(10, 20, 110, 120)
    assert np.array_equal(crop_keypoints(kp, box), [[[[20, 20], [0, 20], [0, 0]]]])
    assert np.array_equal(
        crop_keypoints(kp, box, zero_is_missing=False), [[[[20, 20], [-10, 20], [-10, -20]]]]
    )
    resized = resize_keypoints(crop_keypoints(kp, box), box.canvas_hw, (56, 28))
    assert resized.dtype == np.float32
    assert np.allclose(resized, [[[[20 * 0.28, 20 * 0.56], [0, 20 * 0.56], [0, 0]]]])
    cropped, canvas_hw = pose_compact(person_box(100, 50, 200, 250), (480, 640))
    assert canvas_hw == (250, 250) and cropped[0, 0, 0].tolist() == [75, 25]


# --------------------------------------------------------------------------------------------------
# Errors a caller can act on
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda kp, sc: render(kp[0], sc[0], (56, 56)), r"\[M, T, V, 2\]"),
        (lambda kp, sc: render(kp, sc[:, :1], (56, 56)), "scores must have shape"),
        (lambda kp, sc: render(kp, sc, (56, 56), kind="bones"), "'joint' or 'limb'"),
        (lambda kp, sc: render(kp, sc, (56, 56), sigma=0), "sigma"),
        (lambda kp, sc: render(kp, sc, (56,)), "img_shape"),
        (lambda kp, sc: render(kp, sc, (56, 56), kind="limb", limbs=[(0, 17)]), "17 joints"),
        (lambda kp, sc: render_torch(torch.from_numpy(kp), None, (56, 56)), r"\[N, M, T, V, 2\]"),
        (
            lambda kp, sc: render_torch(torch.from_numpy(kp)[None], None, (56, 56), layout="NHWC"),
            "layout",
        ),
        (lambda kp, sc: flip_keypoints(kp, sc, 56, convention="mirror"), "convention"),
        (lambda kp, sc: flip_heatmaps(np.zeros((2, 5, 8, 8)), COCO17_FLIP_PERM), "channels"),
        (lambda kp, sc: LimbSet(((0, 1), (0, 2)), (0, 0)), "not a permutation"),
        (lambda kp, sc: limb_flip_perm([(0, 1)], COCO17_FLIP_PERM), r"mirrors to \(0, 2\)"),
    ],
)
def test_errors_name_the_value(call, match):
    kp, scores = make_clip(1, 2, 2, (56, 56))
    with pytest.raises(ValueError, match=match):
        call(kp, scores)
