"""Joint and limb heatmap volumes for the pose stream, as PoseC3D renders them, without its
per-joint loops.

The pose stream of EPAM-Net (and PoseC3D) reads pseudo-heatmap volumes: one Gaussian per joint, or
one "Gaussian tube" around each limb segment, scaled by the detector's score and merged over persons
by an element-wise max. The maths follows PYSKL's `GeneratePoseTarget`
(pyskl/datasets/pipelines/heatmap_related.py, docs/prior-art.md section 2.2) pixel for pixel, window
truncation included; only the loops are gone:

* `render` (numpy in, numpy out) computes each joint's window as a fixed-size separable patch and
  each limb's window as a ragged list of pixels, then max-merges them into the zeroed volume. Pixels
  outside every window are never touched (over 95% of a volume is zero).
* `render_torch` runs the same algorithm on a batch of clips on any torch device with float64
  support (CPU, CUDA), for use in the training step; it equals `render` within float32 rounding.

Also here: the COCO-17 joint and limb lists with their left/right flip permutations (`LimbSet`),
horizontal flips of keypoints and of rendered volumes that agree with each other, and PoseCompact's
box with the crop / resize mappings that bring keypoints onto the canvas before rendering
(docs/prior-art.md section 2.3).

Anchor quirks we keep on purpose are marked `# PoseC3D quirk:` where they happen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from epam_data.skeleton import (
    COCO17_FLIP_PERM,
    COCO17_JOINT_NAMES,
    COCO_LIMBS,
    COCO_LIMBS_POSEC3D_CONFIG,
    LimbsArg,
    LimbSet,
    limb_flip_perm,
)

if TYPE_CHECKING:  # torch is imported inside the torch functions, so the numpy path never loads it
    import torch

__all__ = [
    "VOLUME_KINDS",
    "COCO17_JOINT_NAMES",
    "COCO17_FLIP_PERM",
    "LimbSet",
    "COCO_LIMBS",
    "COCO_LIMBS_POSEC3D_CONFIG",
    "CropBox",
    "limb_flip_perm",
    "render",
    "render_torch",
    "flip_keypoints",
    "flip_heatmaps",
    "compact_box",
    "crop_keypoints",
    "resize_keypoints",
    "pose_compact",
]

Kind = Literal["joint", "limb"]
VOLUME_KINDS: tuple[str, ...] = (
    "joint",
    "limb",
)  # the two heatmap volumes: one channel per joint, per limb
Layout = Literal["NTCHW", "NCTHW"]


@dataclass(frozen=True)
class CropBox:
    """An integer pixel box [x0, x1) x [y0, y1) of the source image; it may reach outside the
    image."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def canvas_hw(self) -> tuple[int, int]:
        """(height, width) of the cropped canvas."""
        return self.y1 - self.y0, self.x1 - self.x0


# --------------------------------------------------------------------------------------------------
# Small pieces shared by both back ends
# --------------------------------------------------------------------------------------------------


def _limb_pairs(limbs: LimbsArg, num_joints: int) -> np.ndarray:
    """Limbs as an int64 [K, 2] array, checked against the number of joints."""
    pairs = limbs.limbs if isinstance(limbs, LimbSet) else limbs
    arr = (
        np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(pairs)
        else np.zeros((0, 2), np.int64)
    )
    if arr.size and (arr.min() < 0 or arr.max() >= num_joints):
        raise ValueError(
            f"limbs use joint indices {arr.min()}..{arr.max()} but keypoints have {num_joints} "
            "joints; pass a limb list for this skeleton"
        )
    return arr


def _check_args(
    kp_shape: tuple[int, ...],
    sc_shape: tuple[int, ...] | None,
    img_shape: Sequence[int],
    kind: str,
    sigma: float,
    batched: bool,
) -> tuple[int, int]:
    """Validate what both back ends accept; returns the canvas (H, W)."""
    want, names = (5, "[N, M, T, V, 2]") if batched else (4, "[M, T, V, 2]")
    if len(kp_shape) != want or kp_shape[-1] != 2:
        raise ValueError(
            f"keypoints must be {names} canvas pixels (x, y), got shape {tuple(kp_shape)}"
        )
    if sc_shape is not None and tuple(sc_shape) != tuple(kp_shape[:-1]):
        raise ValueError(
            f"scores must have shape {tuple(kp_shape[:-1])} (keypoints without the last axis), "
            f"got {tuple(sc_shape)}; pass None for all ones"
        )
    if kind not in ("joint", "limb"):
        raise ValueError(f"unknown heatmap kind {kind!r}; choose 'joint' or 'limb'")
    if not (isinstance(sigma, (int, float, np.floating)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(
            f"sigma must be a positive number of canvas pixels (PoseC3D uses 0.6), got {sigma!r}"
        )
    if len(img_shape) != 2 or any(int(s) != s or s < 1 for s in img_shape):
        raise ValueError(
            f"img_shape must be the canvas (height, width) as positive integers, got {img_shape!r}"
        )
    return int(img_shape[0]), int(img_shape[1])


def _patch_size(sigma: float) -> int:
    """Largest number of pixels a joint window spans along one axis (plus a guard against rounding).

    The window is trunc(mu - 3 sigma) .. trunc(mu + 3 sigma) inclusive, so it spans at most floor(6
    sigma) + 2 pixels; the 1e-6 covers 6 sigma landing a rounding error away from an integer.
    """
    return math.floor(6 * sigma + 1e-6) + 2


# --------------------------------------------------------------------------------------------------
# limb maths shared by both back ends (`xp` is numpy or torch: where, exp and operators agree)
# --------------------------------------------------------------------------------------------------


def _short_limbs_to_start(xp: Any, a: Any, b: Any, s_a: Any, value: Any) -> tuple[Any, Any, Any]:
    """(B, |A - B|^2, value) with PoseC3D's quirk for limbs shorter than a pixel applied (see
    `_limb_segments_np`): B = A, |A - B|^2 = 1, value = the start joint's score. |A - B|^2 is
    computed in the keypoints' dtype, as the anchor does."""
    d2_ab = (a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2
    degenerate = d2_ab < 1
    return (
        xp.where(degenerate[..., None], a, b),
        xp.where(degenerate, 1.0, d2_ab),
        xp.where(degenerate, s_a, value),
    )


def _limb_distance2(xp: Any, px: Any, py: Any, a: tuple, b: tuple, pixel_rows: tuple) -> Any:
    """Squared distance of pixels (px, py) to segment AB: a = (ax, ay), b = (bx, by, |A - B|^2),
    pixel_rows = ((py - ay)^2, (py - by)^2), per pixel. PoseC3D's limb maths step by step, in its
    dtype and its order of operations, so the float32 rounding matches too (a cleaner formula
    drifts ~1e-5 from it on long limbs): the projection coefficient of the pixel on AB, then the
    squared distance to A before A, to B after B, else to the projection."""
    (ax, ay), (bx, by, d2ab), (dya2, dyb2) = a, b, pixel_rows
    ex, ey = bx - ax, by - ay
    d2_start = (px - ax) ** 2 + dya2
    d2_end = (px - bx) ** 2 + dyb2
    coeff = (d2_start - d2_end + d2ab) / 2 / d2ab
    d2_line = (px - (ax + coeff * ex)) ** 2 + (py - (ay + coeff * ey)) ** 2
    return xp.where(coeff <= 0, d2_start, xp.where(coeff >= 1, d2_end, d2_line))


# --------------------------------------------------------------------------------------------------
# numpy back end
# --------------------------------------------------------------------------------------------------


def _windows_np(
    lo: np.ndarray, hi: np.ndarray, half: float, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Window [start, end) per axis around coordinates lo <= hi (float64), clamped to the canvas.

    PoseC3D quirk: bounds are int(lo - 3 sigma) and int(hi + 3 sigma) + 1, i.e. truncation toward
    zero (not floor), computed in float64 (numpy 1 promoted the float32 coordinate with the Python
    float 3 * sigma). The window is therefore lopsided: it reaches 3 sigma + 1 pixel to the left but
    3 sigma to the right, and a joint up to 3 sigma + 1 pixel left of (or above) the canvas still
    lights pixel 0.
    """
    start = np.clip(np.trunc(lo - half), 0, size)  # PoseC3D quirk: trunc, not floor; float64
    end = np.clip(np.trunc(hi + half) + 1, 0, size)
    return start.astype(np.int64), end.astype(np.int64)


def _merge_persons_np(
    out: np.ndarray, index: np.ndarray, values: np.ndarray, bounds: np.ndarray
) -> None:
    """out[index] = max(out[index], values), in place, one person after another (PoseC3D's max over
    persons).

    Entries are person-major and `bounds` holds where each person starts. A person has one window
    per plane, so its indices are distinct and a plain gather / max / assign is exact; the first
    person lands on zeros.
    """
    for person, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        idx, val = index[lo:hi], values[lo:hi]
        out[idx] = val if person == 0 else np.maximum(out[idx], val)


def _render_joints_np(
    kp: np.ndarray, sc: np.ndarray, H: int, W: int, sigma: float, eps: float
) -> np.ndarray:
    M, T, V, _ = kp.shape
    out = np.zeros(T * V * H * W, dtype=np.float32)
    mu = kp.reshape(-1, 2).astype(np.float64)  # [M*T*V, 2], person-major
    finite = np.isfinite(mu).all(-1)
    mu[~finite] = 0  # skipped below; keeps the casts quiet
    size = np.array([W, H])
    start, end = _windows_np(mu, mu, 3 * sigma, size)  # [M*T*V, 2] each
    # PoseC3D: a person's joint is drawn when its score >= eps and its window is not empty.
    keep = (sc.reshape(-1).astype(np.float64) >= eps) & (end > start).all(-1) & finite
    ids = np.flatnonzero(keep)
    if ids.size == 0:
        return out.reshape(T, V, H, W)
    mu, start, end, value = mu[ids], start[ids], end[ids], sc.reshape(-1)[ids].astype(np.float64)
    person, plane = np.divmod(ids, T * V)

    # A fixed P x P patch per joint, its origin moved inside the canvas; pixels outside the window
    # get 0, which leaves the zeroed volume unchanged under the max. The Gaussian is separable, the
    # window a box.
    p_x, p_y = min(_patch_size(sigma), W), min(_patch_size(sigma), H)
    origin = np.minimum(start, size - np.array([p_x, p_y]))  # [L, 2]
    xs = origin[:, :1] + np.arange(p_x)  # [L, Px]
    ys = origin[:, 1:] + np.arange(p_y)  # [L, Py]
    scale = -1.0 / (2 * sigma**2)
    gx = np.exp((xs - mu[:, :1]) ** 2 * scale) * ((xs >= start[:, :1]) & (xs < end[:, :1]))
    gy = (
        np.exp((ys - mu[:, 1:]) ** 2 * scale)
        * ((ys >= start[:, 1:]) & (ys < end[:, 1:]))
        * value[:, None]
    )
    patch = gy.astype(np.float32)[:, :, None] * gx.astype(np.float32)[:, None, :]  # [L, Py, Px]
    index = (plane[:, None] * (H * W) + ys * W)[:, :, None] + xs[:, None, :]  # [L, Py, Px]
    bounds = np.searchsorted(person, np.arange(M + 1)) * (p_x * p_y)
    _merge_persons_np(out, index.reshape(-1), patch.reshape(-1), bounds)
    return out.reshape(T, V, H, W)


def _limb_segments_np(kp: np.ndarray, sc: np.ndarray, pairs: np.ndarray, eps: float):
    """Per (person, frame, limb), flat and person-major: endpoints A, B and |A - B|^2 in the
    keypoints' dtype, the value (float64), and whether to draw.

    PoseC3D quirk: a limb shorter than 1 pixel (|A - B|^2 < 1, computed in the keypoints' dtype as
    the anchor does) becomes a joint Gaussian at its *start* joint, valued with the start joint's
    score (not the min of both), in that joint's own window. Setting B = A and |A - B|^2 = 1 makes
    the limb formula produce exactly that: the projection coefficient is 0.5, the projection is A,
    the distance is the distance to A.
    """
    a, b = kp[:, :, pairs[:, 0]], kp[:, :, pairs[:, 1]]  # [M, T, K, 2] in the input dtype
    s_a, s_b = sc[:, :, pairs[:, 0]].astype(np.float64), sc[:, :, pairs[:, 1]].astype(np.float64)
    value = np.minimum(s_a, s_b)
    finite = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
    keep = (value >= eps) & finite
    a, b = (
        np.where(finite[..., None], a, 0),
        np.where(finite[..., None], b, 0),
    )  # skipped; keeps casts quiet
    b, d2_ab, value = _short_limbs_to_start(np, a, b, s_a, value)  # see the docstring
    return (
        a.reshape(-1, 2),
        b.reshape(-1, 2),
        d2_ab.reshape(-1),
        value.reshape(-1),
        keep.reshape(-1),
    )


def _render_limbs_np(
    kp: np.ndarray, sc: np.ndarray, pairs: np.ndarray, H: int, W: int, sigma: float, eps: float
) -> np.ndarray:
    M, T, _, _ = kp.shape
    K = len(pairs)
    out = np.zeros(T * K * H * W, dtype=np.float32)
    if K == 0:
        return out.reshape(T, K, H, W)
    a, b, d2_ab, value, keep = _limb_segments_np(kp, sc, pairs, eps)  # [M*T*K, ...], person-major
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    start, end = _windows_np(
        np.minimum(a64, b64), np.maximum(a64, b64), 3 * sigma, np.array([W, H])
    )
    keep &= (end > start).all(-1)
    ids = np.flatnonzero(keep)
    if ids.size == 0:
        return out.reshape(T, K, H, W)
    a, b, d2_ab, value, start, end = a[ids], b[ids], d2_ab[ids], value[ids], start[ids], end[ids]
    person, plane = np.divmod(ids, T * K)
    dtype = a.dtype.type  # the anchor computes in this dtype

    # Windows as ragged runs: first one entry per window row, then one per pixel of each row.
    width, height = (end - start).T
    row_in_window = np.arange(height.sum()) - np.repeat(np.cumsum(height) - height, height)  # [R]
    per_limb = np.stack(
        [
            start[:, 0],
            a[:, 0],
            a[:, 1],
            b[:, 0],
            b[:, 1],
            d2_ab,
            value,
        ]
    ).astype(dtype)
    rows = np.repeat(per_limb, height, axis=1)  # [7, R]
    py = (np.repeat(start[:, 1], height) + row_in_window).astype(dtype)  # pixel y of each row
    rows = np.concatenate(
        [rows, py[None], ((py - rows[2]) ** 2)[None], ((py - rows[4]) ** 2)[None]]
    )
    row_start = (
        np.repeat(plane * (H * W) + start[:, 1] * W + start[:, 0], height) + row_in_window * W
    )
    row_width = np.repeat(width, height)
    col = np.arange(row_width.sum()) - np.repeat(np.cumsum(row_width) - row_width, row_width)  # [P]
    x0, ax, ay, bx, by, d2ab, val, py, dya2, dyb2 = np.repeat(rows, row_width, axis=1)  # [P] each
    px = x0 + col.astype(dtype)
    d2 = _limb_distance2(np, px, py, (ax, ay), (bx, by, d2ab), (dya2, dyb2))
    heat = (np.exp(-d2 / 2 / dtype(sigma**2)) * val).astype(np.float32, copy=False)
    index = np.repeat(row_start, row_width) + col
    area = np.concatenate([[0], np.cumsum(width * height)])
    bounds = area[np.searchsorted(person, np.arange(M + 1))]
    _merge_persons_np(out, index, heat, bounds)
    return out.reshape(T, K, H, W)


# --------------------------------------------------------------------------------------------------
# torch back end (same algorithm, batched, any device)
# --------------------------------------------------------------------------------------------------


def _windows_torch(lo: torch.Tensor, hi: torch.Tensor, half: float, size: torch.Tensor):
    """`_windows_np` for tensors (float64, so truncation decides exactly as the anchor)."""
    import torch

    start = torch.minimum(
        torch.trunc(lo - half).clamp(min=0), size
    )  # PoseC3D quirk: see _windows_np
    end = torch.minimum((torch.trunc(hi + half) + 1).clamp(min=0), size)
    return start.long(), end.long()


def _channel_base(
    n: torch.Tensor, t: torch.Tensor, c: torch.Tensor, T: int, C: int, plane: int, layout: Layout
):
    """Flat offset of the (clip, frame, channel) plane in the output layout."""
    if layout == "NTCHW":
        return ((n * T + t) * C + c) * plane
    return ((n * C + c) * T + t) * plane


def _render_joints_torch(
    kp: torch.Tensor, sc: torch.Tensor, H: int, W: int, sigma: float, eps: float, layout: Layout
) -> torch.Tensor:
    import torch

    N, M, T, V, _ = kp.shape
    dev = kp.device
    out = torch.zeros(N * T * V * H * W, dtype=torch.float32, device=dev)
    half = 3 * sigma
    mu = kp.double()  # [N, M, T, V, 2]
    finite = torch.isfinite(mu).all(-1)
    mu = torch.where(finite[..., None], mu, 0.0)
    size = torch.tensor([W, H], dtype=torch.float64, device=dev)
    start, end = _windows_torch(mu, mu, half, size)
    keep = (sc.double() >= eps) & (end > start).all(-1) & finite
    value = torch.where(keep, sc.double(), 0.0)  # dropped joints draw zeros

    # Static shapes (no host sync): every joint gets a P x P patch, dropped ones a patch of zeros.
    p_x, p_y = min(_patch_size(sigma), W), min(_patch_size(sigma), H)
    origin = torch.minimum(start, torch.tensor([W - p_x, H - p_y], device=dev))
    xs = origin[..., :1] + torch.arange(p_x, device=dev)  # [N, M, T, V, Px]
    ys = origin[..., 1:] + torch.arange(p_y, device=dev)  # [N, M, T, V, Py]
    scale = -1.0 / (2 * sigma**2)
    gx = torch.exp((xs - mu[..., :1]) ** 2 * scale) * ((xs >= start[..., :1]) & (xs < end[..., :1]))
    gy = torch.exp((ys - mu[..., 1:]) ** 2 * scale) * ((ys >= start[..., 1:]) & (ys < end[..., 1:]))
    patch = (
        (gy * value[..., None])[..., :, None] * gx[..., None, :]
    ).float()  # [N, M, T, V, Py, Px]
    n = torch.arange(N, device=dev).view(N, 1, 1, 1)
    t = torch.arange(T, device=dev).view(1, 1, T, 1)
    v = torch.arange(V, device=dev).view(1, 1, 1, V)
    base = _channel_base(n, t, v, T, V, H * W, layout)  # [N, 1, T, V]
    index = base[..., None, None] + ys[..., :, None] * W + xs[..., None, :]  # [N, M, T, V, Py, Px]
    out.scatter_reduce_(0, index.reshape(-1), patch.reshape(-1), reduce="amax")
    return out


def _limb_windows_torch(
    kp: torch.Tensor,
    sc: torch.Tensor,
    pairs: np.ndarray,
    H: int,
    W: int,
    sigma: float,
    eps: float,
) -> tuple[torch.Tensor, ...]:
    """The limbs to draw, as `_limb_segments_np` and `_render_limbs_np` pick them: A, B (input
    dtype), |A - B|^2, value (float64), window start and end, and their clip, frame and limb."""
    import torch

    dev = kp.device
    i, j = torch.as_tensor(pairs[:, 0], device=dev), torch.as_tensor(pairs[:, 1], device=dev)
    a, b = kp[:, :, :, i], kp[:, :, :, j]  # [N, M, T, K, 2], input dtype
    s_a, s_b = sc[:, :, :, i].double(), sc[:, :, :, j].double()
    value = torch.minimum(s_a, s_b)
    finite = (torch.isfinite(a).all(-1) & torch.isfinite(b).all(-1))[..., None]
    keep = (value >= eps) & finite[..., 0]
    a, b = torch.where(finite, a, 0.0), torch.where(finite, b, 0.0)
    b, d2_ab, value = _short_limbs_to_start(torch, a, b, s_a, value)  # see _limb_segments_np
    size = torch.tensor([W, H], dtype=torch.float64, device=dev)
    start, end = _windows_torch(
        torch.minimum(a, b).double(), torch.maximum(a, b).double(), 3 * sigma, size
    )
    keep &= (end > start).all(-1)
    n, m, t, k = keep.nonzero(as_tuple=True)  # host sync: the number of limbs
    a, b, d2_ab, value = a[n, m, t, k], b[n, m, t, k], d2_ab[n, m, t, k], value[n, m, t, k]
    start, end = start[n, m, t, k], end[n, m, t, k]
    return a, b, d2_ab, value, start, end, n, t, k


def _run_offsets_torch(lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Ragged runs of `lengths`: each entry's offset within its run, and the total (one host
    sync, so that repeat_interleave needs no second one)."""
    import torch

    total = int(lengths.sum())  # host sync
    offsets = torch.arange(total, device=lengths.device) - torch.repeat_interleave(
        torch.cumsum(lengths, 0) - lengths, lengths, output_size=total
    )
    return offsets, total


def _limb_rows_torch(
    segments: tuple[torch.Tensor, ...],
    start: torch.Tensor,
    height: torch.Tensor,
    row_in_window: torch.Tensor,
    num_rows: int,
) -> torch.Tensor:
    """One column per window row, in the anchor's dtype: x0, ax, ay, bx, by, |A - B|^2, value,
    the row's pixel y and its squared y distances to A and B (as the rows of _render_limbs_np)."""
    import torch

    a, b, d2_ab, value = segments
    dtype = a.dtype
    per_limb = torch.stack(
        [
            start[:, 0].to(dtype),
            a[:, 0],
            a[:, 1],
            b[:, 0],
            b[:, 1],
            d2_ab,
            value.to(dtype),
        ]
    )
    rows = torch.repeat_interleave(per_limb, height, dim=1, output_size=num_rows)  # [7, R]
    py = (torch.repeat_interleave(start[:, 1], height, output_size=num_rows) + row_in_window).to(
        dtype
    )
    return torch.cat([rows, py[None], ((py - rows[2]) ** 2)[None], ((py - rows[4]) ** 2)[None]])


def _render_limbs_torch(
    kp: torch.Tensor,
    sc: torch.Tensor,
    pairs: np.ndarray,
    H: int,
    W: int,
    sigma: float,
    eps: float,
    layout: Layout,
) -> torch.Tensor:
    import torch

    N, M, T, _, _ = kp.shape
    K = len(pairs)
    dev = kp.device
    out = torch.zeros(N * T * K * H * W, dtype=torch.float32, device=dev)
    if K == 0:
        return out
    a, b, d2_ab, value, start, end, n, t, k = _limb_windows_torch(kp, sc, pairs, H, W, sigma, eps)
    dtype = a.dtype

    # Ragged runs and the anchor's arithmetic, as in _render_limbs_np.
    width, height = (end - start).unbind(-1)
    row_in_window, num_rows = _run_offsets_torch(height)
    rows = _limb_rows_torch((a, b, d2_ab, value), start, height, row_in_window, num_rows)
    plane = _channel_base(n, t, k, T, K, H * W, layout)
    row_start = torch.repeat_interleave(
        plane + start[:, 1] * W + start[:, 0], height, output_size=num_rows
    )
    row_start += row_in_window * W
    row_width = torch.repeat_interleave(width, height, output_size=num_rows)
    col, num_pixels = _run_offsets_torch(row_width)
    x0, ax, ay, bx, by, d2ab, val, py, dya2, dyb2 = torch.repeat_interleave(
        rows, row_width, dim=1, output_size=num_pixels
    )
    px = x0 + col.to(dtype)
    d2 = _limb_distance2(torch, px, py, (ax, ay), (bx, by, d2ab), (dya2, dyb2))
    heat = (torch.exp(-d2 / 2 / torch.tensor(sigma**2, dtype=dtype)) * val).float()
    index = torch.repeat_interleave(row_start, row_width, output_size=num_pixels) + col
    out.scatter_reduce_(0, index, heat, reduce="amax")  # max over persons (PoseC3D)
    return out


# --------------------------------------------------------------------------------------------------
# Flips and PoseCompact
# --------------------------------------------------------------------------------------------------


def flip_keypoints(
    keypoints,
    scores,
    canvas_width: int,
    *,
    flip_perm: Sequence[int] = COCO17_FLIP_PERM,
    convention: Literal["pixel", "posec3d"] = "pixel",
):
    """Mirror keypoints left-right on a canvas and swap left/right joints; numpy arrays or torch
    tensors.

    keypoints: [..., V, 2] canvas pixels; scores: [..., V] or None (returned as None). Returns new
    (keypoints, scores); the inputs are not modified.

    convention "pixel": x' = W - 1 - x for every joint. Pixel centres sit at integer x (0 .. W-1) in
        the renderer, so this is the exact mirror of `flip_heatmaps`: render(flip_keypoints(kp))
        equals flip_heatmaps(render(kp)) except on the window edge, where PoseC3D's lopsided window
        (see `_windows_np`) puts pixels worth at most exp(-4.5) * score ~= 0.011 * score on one side
        only, and except for a degenerate limb that mirrors onto itself reversed (the hips, (11,
        12)): PoseC3D draws its start joint, which the flip swaps for the other hip. Missing joints
        are told by their score 0, which travels with them.
    convention "posec3d": PoseC3D's Flip: x' = W - x for non-zero x; x == 0 stays 0 (its "missing"
        marker). This renders one pixel to the right of the mirrored volume: the same offset PoseC3D
        has between its training-time keypoint flip and its test-time volume flip (`double`).
    """
    if convention not in ("pixel", "posec3d"):
        raise ValueError(f"unknown flip convention {convention!r}; choose 'pixel' or 'posec3d'")
    if keypoints.shape[-1] != 2 or keypoints.shape[-2] != len(flip_perm):
        raise ValueError(
            f"keypoints must be [..., {len(flip_perm)}, 2] for a {len(flip_perm)}-joint flip_perm, "
            f"got shape {tuple(keypoints.shape)}"
        )
    perm = list(flip_perm)
    x = keypoints[..., 0]
    if isinstance(keypoints, np.ndarray):
        # PoseC3D quirk ("posec3d"): W - x, and zeros stay zeros as the missing marker.
        new_x = (
            (canvas_width - 1) - x
            if convention == "pixel"
            else np.where(x != 0, canvas_width - x, x)
        )
        flipped = keypoints.copy()
        flipped[..., 0] = new_x
        return flipped[..., perm, :], None if scores is None else np.asarray(scores)[..., perm]
    import torch

    new_x = (
        (canvas_width - 1) - x
        if convention == "pixel"
        else torch.where(x != 0, canvas_width - x, x)
    )
    flipped = torch.stack([new_x.to(keypoints.dtype), keypoints[..., 1]], dim=-1)
    return flipped[..., perm, :], None if scores is None else scores[..., perm]


def flip_heatmaps(volume, flip_perm: Sequence[int], *, channel_axis: int = -3):
    """Mirror a rendered volume along W (the last axis) and permute its channels; numpy array or
    torch tensor.

    volume: [..., C, H, W] with channels on `channel_axis` (-3 for [T, C, H, W] and [N, T, C, H, W];
    use 1 for the model layout [N, C, T, H, W]). flip_perm: COCO17_FLIP_PERM for joints,
    `limbs.flip_perm` for limbs. Same as PoseC3D's `double` (`heatmap[..., ::-1][:, indices]`).
    Returns a new array or tensor.
    """
    if volume.shape[channel_axis] != len(flip_perm):
        raise ValueError(
            f"volume has {volume.shape[channel_axis]} channels on axis {channel_axis} but "
            f"flip_perm has {len(flip_perm)}; pass the permutation of this joint or limb list"
        )
    if isinstance(volume, np.ndarray):
        return np.take(volume[..., ::-1], list(flip_perm), axis=channel_axis)
    import torch

    index = torch.as_tensor(list(flip_perm), device=volume.device)
    return volume.flip(-1).index_select(channel_axis % volume.dim(), index)


def compact_box(
    keypoints: np.ndarray,
    img_shape: tuple[int, int],
    *,
    padding: float = 0.25,
    threshold: float = 10,
    hw_ratio: float | tuple[float, float] | None = 1.0,
    allow_imgpad: bool = True,
) -> CropBox:
    """PoseC3D's PoseCompact / MMCompact box: one box over every person and frame, padded, made
    square.

    keypoints: [M, T, V, 2] image pixels of the sampled frames. The tight box spans all non-zero x
    and all non-zero y (separately; 0 means missing, and so do NaN and inf here). Its centre is
    kept, its half extents grow by `padding`; with `hw_ratio` r (or (r0, r1)) the height becomes at
    least r0 * width and the width at least height / r1, so 1.0 makes it square. If the tight box is
    under `threshold` pixels in width or height, the whole image is returned. With `allow_imgpad`
    False the box is clamped to the image (and may stop being square), as EPAM-Net's pipeline does;
    PoseC3D's configs allow padding. Bounds become integers by truncation toward zero (PoseC3D
    quirk: int(-3.7) == -3).
    """
    h, w = img_shape
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim < 1 or kp.shape[-1] != 2:
        raise ValueError(f"keypoints must be [..., 2] pixels (x, y), got shape {kp.shape}")
    x, y = kp[..., 0], kp[..., 1]
    # PoseC3D quirk: every non-zero x and every non-zero y counts, separately and whatever the
    # scores.
    x, y = x[np.isfinite(x) & (x != 0)], y[np.isfinite(y) & (y != 0)]
    if x.size == 0 or y.size == 0:
        return CropBox(0, 0, int(w), int(h))
    min_x, max_x, min_y, max_y = float(x.min()), float(x.max()), float(y.min()), float(y.max())
    if max_x - min_x < threshold or max_y - min_y < threshold:
        return CropBox(0, 0, int(w), int(h))
    center_x, center_y = (max_x + min_x) / 2, (max_y + min_y) / 2
    half_w = (max_x - min_x) / 2 * (1 + padding)
    half_h = (max_y - min_y) / 2 * (1 + padding)
    if hw_ratio is not None:
        r0, r1 = (hw_ratio, hw_ratio) if isinstance(hw_ratio, (int, float)) else hw_ratio
        half_h = max(r0 * half_w, half_h)
        half_w = max(1 / r1 * half_h, half_w)
    x0, x1 = center_x - half_w, center_x + half_w
    y0, y1 = center_y - half_h, center_y + half_h
    if not allow_imgpad:
        x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
    return CropBox(int(x0), int(y0), int(x1), int(y1))  # PoseC3D quirk: int() truncates toward zero


def crop_keypoints(
    keypoints: np.ndarray, box: CropBox, *, zero_is_missing: bool = True
) -> np.ndarray:
    """Keypoints in the crop's pixels: a new array with (x0, y0) subtracted.

    zero_is_missing True follows PoseCompact: only non-zero x (and, separately, non-zero y) move, so
    0 keeps meaning "missing". False follows PoseC3D's RandomCrop / RandomResizedCrop, which shift
    every value.
    """
    kp = np.array(keypoints, copy=True)
    if kp.shape[-1] != 2:
        raise ValueError(f"keypoints must be [..., 2] pixels (x, y), got shape {kp.shape}")
    for axis, offset in ((0, box.x0), (1, box.y0)):
        coord = kp[..., axis]
        if zero_is_missing:
            coord[coord != 0] -= offset  # PoseC3D quirk: x and y tested separately
        else:
            coord -= offset
    return kp


def resize_keypoints(
    keypoints: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]
) -> np.ndarray:
    """Keypoints on a canvas resized from src_hw to dst_hw (PoseC3D's Resize: x * W'/W, y * H'/H); a
    new array.

    Zeros stay zeros, so missing joints stay missing. Pass the canvas you will render on as dst_hw.
    """
    kp = np.asarray(keypoints)
    if kp.shape[-1] != 2:
        raise ValueError(f"keypoints must be [..., 2] pixels (x, y), got shape {kp.shape}")
    dtype = kp.dtype if np.issubdtype(kp.dtype, np.floating) else np.float32
    factor = np.array([dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0]], dtype=dtype)
    return kp.astype(dtype) * factor


def pose_compact(
    keypoints: np.ndarray,
    img_shape: tuple[int, int],
    **box_options: float | tuple[float, float] | bool | None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """PoseCompact in one call: (keypoints in the box, the box's (height, width)). Options as
    `compact_box`."""
    box = compact_box(keypoints, img_shape, **box_options)
    return crop_keypoints(keypoints, box), box.canvas_hw


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def render(
    keypoints: np.ndarray,
    scores: np.ndarray | None,
    img_shape: tuple[int, int],
    *,
    kind: Kind = "joint",
    sigma: float = 0.6,
    limbs: LimbsArg = COCO_LIMBS,
    eps: float = 1e-3,
) -> np.ndarray:
    """Heatmap volume of one clip, equal to PoseC3D's GeneratePoseTarget (within float32 rounding).

    keypoints: [M, T, V, 2] (x, y) in canvas pixels, pixel centres at integers; scores: [M, T, V]
    detector confidences (None = all ones, PoseC3D's use_score=False); img_shape: the canvas (H, W),
    i.e. after crop and resize. kind "joint" gives one channel per joint, "limb" one per limb of
    `limbs`. Returns a new float32 [T, C, H, W] array; inputs are not modified.

    Per person, a joint with score s >= eps adds s * exp(-d^2 / (2 sigma^2)) inside its window, a
    limb adds min(s_i, s_j) * exp(-D^2 / (2 sigma^2)) with D the distance to the segment; persons
    merge by max. PoseC3D's quirks are kept (lopsided truncated windows, start-joint degenerate
    limbs); eps is PYSKL's 1e-3 (MMAction2 uses 1e-4). Joints with non-finite coordinates are
    skipped like missing ones (PoseC3D would crash).
    """
    kp = np.asarray(keypoints)
    if not np.issubdtype(kp.dtype, np.floating):
        kp = kp.astype(np.float32)
    H, W = _check_args(
        kp.shape, None if scores is None else np.shape(scores), img_shape, kind, sigma, False
    )
    sc = np.ones(kp.shape[:-1], np.float32) if scores is None else np.asarray(scores)
    if kind == "joint":
        return _render_joints_np(kp, sc, H, W, sigma, eps)
    return _render_limbs_np(kp, sc, _limb_pairs(limbs, kp.shape[2]), H, W, sigma, eps)


def render_torch(
    keypoints: torch.Tensor,
    scores: torch.Tensor | None,
    img_shape: tuple[int, int],
    *,
    kind: Kind = "joint",
    sigma: float = 0.6,
    limbs: LimbsArg = COCO_LIMBS,
    eps: float = 1e-3,
    layout: Layout = "NTCHW",
) -> torch.Tensor:
    """Heatmap volumes of a batch of clips on the keypoints' device; equal to `render` clip by clip.

    keypoints: [N, M, T, V, 2] canvas pixels (clips with fewer persons pad with score 0); scores:
    [N, M, T, V] or None (all ones). Returns float32 [N, T, C, H, W] ("NTCHW") or the model's [N, C,
    T, H, W] ("NCTHW"), on the same device; inputs are not modified. Joints need no host
    synchronisation; limbs need one (the number of window pixels), like any ragged computation.
    Half-precision keypoints are read as float32.
    """
    import torch

    H, W = _check_args(
        tuple(keypoints.shape),
        None if scores is None else tuple(scores.shape),
        img_shape,
        kind,
        sigma,
        True,
    )
    if layout not in ("NTCHW", "NCTHW"):
        raise ValueError(f"unknown layout {layout!r}; choose 'NTCHW' or 'NCTHW' (the model's)")
    if scores is not None and scores.device != keypoints.device:
        raise ValueError(
            f"scores are on {scores.device} but keypoints on {keypoints.device}; move them together"
        )
    kp = keypoints if keypoints.dtype in (torch.float32, torch.float64) else keypoints.float()
    sc = (
        torch.ones(kp.shape[:-1], dtype=torch.float32, device=kp.device)
        if scores is None
        else scores
    )
    N, _, T, V, _ = kp.shape
    if kind == "joint":
        flat, C = _render_joints_torch(kp, sc, H, W, sigma, eps, layout), V
    else:
        pairs = _limb_pairs(limbs, V)
        flat, C = _render_limbs_torch(kp, sc, pairs, H, W, sigma, eps, layout), len(pairs)
    return flat.view(N, T, C, H, W) if layout == "NTCHW" else flat.view(N, C, T, H, W)
