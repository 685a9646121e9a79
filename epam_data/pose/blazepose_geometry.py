"""BlazePose's geometry, without the networks: detector anchors and decoding, person ROIs, rotated
crops and letterboxes, where the detector looks, and the landmark heatmap refinement.

Pure numpy, so it is tested without any model, and shared by every runtime of the networks
(`epam_data.pose.blazepose_runtime`). The backend that tracks people with it is
`epam_data.pose.blazepose` (its module docstring says which mediapipe calculator each function
follows).
"""

from __future__ import annotations

import math

import numpy as np

from epam_data.pose.tracking import box_iou

DETECTOR_SIZE = 224
LANDMARK_SIZE = 256
HEATMAP_KERNEL = 7  # RefineLandmarksFromHeatmapCalculator options in pose_landmark_full's graph
HEATMAP_MIN_CONFIDENCE = 0.5
ROI_SCALE = 1.25


def ssd_anchors(
    input_size: int = DETECTOR_SIZE,
    strides: tuple[int, ...] = (8, 16, 32, 32, 32),
    anchors_per_layer: int = 2,
) -> np.ndarray:
    """Anchor centres of pose_detection.tflite, float32 [2254, 2] (x, y) normalised to the 224x224
    input.

    Follows SsdAnchorsCalculator with fixed_anchor_size (every anchor is 1 x 1, so only centres
    matter): consecutive layers with the same stride share one grid, and each grid cell lists all
    their anchors in turn.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        stride, per_cell = strides[layer], 0
        while layer < len(strides) and strides[layer] == stride:
            per_cell += anchors_per_layer
            layer += 1
        cells = math.ceil(input_size / stride)
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), clipped so that float32 never overflows (mediapipe clips detector logits
    at 100)."""
    return 1 / (1 + np.exp(-np.clip(logits, -80, 80)))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with each row of boxes [N, 4]."""
    return box_iou(box[None], boxes)[0]


def decode_detections(
    raw_boxes: np.ndarray,
    raw_scores: np.ndarray,
    anchors: np.ndarray,
    *,
    min_score: float = 0.5,
    iou_threshold: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """The detector's raw outputs -> (boxes [N, 4] x1 y1 x2 y2, keypoints [N, 4, 2]), normalised,
    best first.

    raw_boxes: [2254, 12] (cx, cy, w, h and 4 keypoints, offsets in input pixels from the anchor
    centre); raw_scores: [2254] logits. Scores are sigmoid(clip(logit, -100, 100)), kept from
    `min_score`, then merged by mediapipe's weighted NMS: each kept detection is the score-weighted
    mean of the detections overlapping it by more than `iou_threshold`. The tracker needs only the
    order (best first), so scores are not returned.
    """
    scores = _sigmoid(raw_scores)
    keep = np.flatnonzero(scores >= min_score)
    if len(keep) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0, 4, 2), np.float32)
    raw = raw_boxes[keep] / DETECTOR_SIZE
    centre = raw[:, :2] + anchors[keep]
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:12].reshape(-1, 4, 2) + anchors[keep][:, None, :]
    scores = scores[keep]
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    merged_boxes, merged_keypoints = [], []
    remaining = np.arange(len(scores))
    while len(remaining):
        overlap = _iou(boxes[remaining[0]], boxes[remaining]) > iou_threshold
        group = remaining[overlap]
        weights = scores[group][:, None] / scores[group].sum()
        merged_boxes.append((boxes[group] * weights).sum(0))
        merged_keypoints.append((keypoints[group] * weights[:, :, None]).sum(0))
        remaining = remaining[~overlap]
    return np.asarray(merged_boxes, np.float32), np.asarray(merged_keypoints, np.float32)


def roi_from_points(centre: np.ndarray, scale_point: np.ndarray) -> np.ndarray:
    """ROI (cx, cy, side, angle) in pixels / radians from two points in pixels, [..., 2] each ->
    [..., 4].

    mediapipe's AlignmentPointsRectsCalculator (target angle 90 deg) then
    RectTransformationCalculator (scale 1.25, square_long): the box is centred on `centre`, its side
    is twice the distance to `scale_point`, and it is rotated so that `scale_point` (above the head)
    is straight up in the crop.
    """
    delta = scale_point - centre
    side = 2 * np.hypot(delta[..., 0], delta[..., 1]) * ROI_SCALE
    angle = np.pi / 2 - np.arctan2(-delta[..., 1], delta[..., 0])
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    return np.stack([centre[..., 0], centre[..., 1], side, angle], axis=-1).astype(np.float32)


# ROI side / the longer side of a person's box: a tracked person's ROI is 1.4-1.6x the extent of
# their body landmarks on the shared clips (median 1.48 and 1.60), centred within 3% of the box.
BOX_ROI_SCALE = 1.5


def roi_from_box(boxes: np.ndarray, scale: float = BOX_ROI_SCALE) -> np.ndarray:
    """ROIs (cx, cy, side, angle) [N, 4] for person boxes [N, 4+] (x1, y1, x2, y2, pixels): centred
    on the box, side `scale` x its longer side, upright.

    A box says nothing about which way the person leans, so the angle is 0; the landmarks found in
    this crop give the rotated ROI of the next pass (`settle_new`) or the next frame.
    """
    boxes = np.asarray(boxes, np.float32).reshape(len(boxes), -1)[:, :4]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = scale * (boxes[:, 2:] - boxes[:, :2]).max(1)
    return np.concatenate([centre, side[:, None], np.zeros((len(boxes), 1))], 1).astype(np.float32)


def roi_from_keypoints(
    keypoints: np.ndarray, scores: np.ndarray, min_score: float = 0.05
) -> np.ndarray:
    """ROIs (cx, cy, side, angle) [P, 4] for persons given as COCO-17 keypoints [P, 17, 2] with
    scores [P, 17] (a bottom-up proposer's): centred on the hips when both are found (where the
    landmark model wants the body's centre), else on the found joints' box; side `BOX_ROI_SCALE` x
    the longer side of that box; turned so that the shoulders are above the hips when both pairs
    are found, else upright."""
    keypoints = np.asarray(keypoints, np.float64)
    found = np.asarray(scores) > min_score
    low = np.where(found[..., None], keypoints, np.inf).min(1)
    high = np.where(found[..., None], keypoints, -np.inf).max(1)
    low, high = np.where(np.isfinite(low), low, 0), np.where(np.isfinite(high), high, 0)
    hips, shoulders = keypoints[:, 11:13].mean(1), keypoints[:, 5:7].mean(1)
    has_hips = found[:, 11] & found[:, 12]
    centre = np.where(has_hips[:, None], hips, (low + high) / 2)
    up = np.where((has_hips & found[:, 5] & found[:, 6])[:, None], shoulders - hips, [0.0, -1.0])
    up /= np.maximum(np.hypot(up[:, 0], up[:, 1]), 1e-9)[:, None]
    side = BOX_ROI_SCALE * np.maximum((high - low).max(1), 1.0)
    return roi_from_points(centre, centre + up * (side / (2 * ROI_SCALE))[:, None])


ROI_GRID = (0.5, 0.5, 1.0, math.radians(0.5))  # cx, cy, side (pixels), angle (radians)


def snap_roi(roi: np.ndarray, grid: tuple[float, ...] = ROI_GRID) -> np.ndarray:
    """A tracked ROI rounded to a fixed grid, so the next crop is the same on every CPU.

    The next frame's crop comes from this frame's landmarks, and the landmark model is sensitive to
    its crop when people are cut off or close together: a difference in the last bit of a landmark
    (which numpy's and XNNPACK's vector code make differently on AVX-512, AVX2 or SSE CPUs) grew to
    a 0.5 difference in presence within four frames, and the tracks went apart. Rounded, ulp-sized
    differences give the same crop, except in the rare frame where a value sits on a grid line; half
    a pixel and half a degree are far below what the crop needs (the model is trained on ROIs
    jittered by several percent).
    """
    step = np.asarray(grid, np.float64)
    return (np.round(np.asarray(roi, np.float64) / step) * step).astype(np.float32)


def _crop_rotated(image: np.ndarray, roi: np.ndarray, out: np.ndarray) -> None:
    """Bilinear, rotated square crop of `roi` into out float32 [S, S, 3], values scaled to [0, 1].

    Crop pixel (u, v) samples the frame at centre + side * R(angle) @ ((u + 0.5) / S - 0.5, (v +
    0.5) / S - 0.5); pixels outside the frame repeat the border (ImageToTensorCalculator's default
    on CPU).
    """
    size = out.shape[0]
    height, width = image.shape[:2]
    cx, cy, side, angle = (float(value) for value in roi)
    cos, sin = math.cos(angle) * side / size, math.sin(angle) * side / size
    grid = np.arange(size, dtype=np.float32) + 0.5 - size / 2
    xs = (
        (cx - 0.5) + cos * grid[None, :] - sin * grid[:, None]
    )  # [S, S] source x of each crop pixel
    ys = (cy - 0.5) + sin * grid[None, :] + cos * grid[:, None]
    _bilinear(image.reshape(-1, 3), width, height, xs, ys, out, 1 / 255)


def _bilinear(
    flat: np.ndarray,
    width: int,
    height: int,
    xs: np.ndarray,
    ys: np.ndarray,
    out: np.ndarray,
    scale: float,
    offset: float = 0.0,
) -> None:
    """out = bilinear samples of the [H * W, 3] uint8 image at (xs, ys) * scale + offset, edges
    repeated.

    Written for speed (about 2 ms for a 256x256 crop): one index array, `np.take`, and the weights
    repeated per channel so that every operation runs over a flat contiguous array (broadcasting
    over a trailing axis of 3 is several times slower). Clamping the top-left neighbour to [0, W -
    2] and the fraction to [0, 1] repeats the border exactly.
    """
    x0 = np.clip(np.floor(xs), 0, max(width - 2, 0))
    y0 = np.clip(np.floor(ys), 0, max(height - 2, 0))
    fx = np.clip(xs - x0, 0, 1).ravel()
    fy = np.clip(ys - y0, 0, 1).ravel()
    index = (y0.astype(np.intp) * width + x0.astype(np.intp)).ravel()
    step_x, step_y = min(1, width - 1), width * min(1, height - 1)
    gx, gy = (1 - fx) * scale, 1 - fy
    fx = fx * scale
    acc = np.take(flat, index, axis=0).reshape(-1) * np.repeat(gx * gy, 3)
    acc += np.take(flat, index + step_x, axis=0).reshape(-1) * np.repeat(fx * gy, 3)
    acc += np.take(flat, index + step_y, axis=0).reshape(-1) * np.repeat(gx * fy, 3)
    acc += np.take(flat, index + step_x + step_y, axis=0).reshape(-1) * np.repeat(fx * fy, 3)
    if offset:
        acc += offset
    out[...] = acc.reshape(out.shape)


def _letterbox(
    image: np.ndarray, region: tuple[int, int, int, int], out: np.ndarray
) -> tuple[float, float, float]:
    """The frame's region (x1, y1, x2, y2) scaled to fit out float32 [224, 224, 3], centred, values
    in [-1, 1].

    Padding is black (-1), as ImageToTensorCalculator's BORDER_ZERO gives: OpenCV pads the image
    with 0 before the range conversion. Returns (scale, pad_x, pad_y): frame pixel = (letterbox
    pixel - pad) / scale + (x1, y1).
    """
    height, width = image.shape[:2]
    left, top, right, bottom = region
    size = out.shape[0]
    scale = size / max(right - left, bottom - top)
    pad_x, pad_y = (size - (right - left) * scale) / 2, (size - (bottom - top) * scale) / 2
    cells = np.arange(size, dtype=np.float32) + 0.5
    inside_x = np.flatnonzero((cells > pad_x) & (cells < size - pad_x))
    inside_y = np.flatnonzero((cells > pad_y) & (cells < size - pad_y))
    out[:] = -1.0
    xs = (cells[inside_x] - pad_x) / scale - 0.5 + left
    ys = (cells[inside_y] - pad_y) / scale - 0.5 + top
    xs, ys = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    block = np.empty((len(inside_y), len(inside_x), 3), np.float32)
    _bilinear(image.reshape(-1, 3), width, height, xs, ys, block, 2 / 255, -1.0)
    out[inside_y[0] : inside_y[-1] + 1, inside_x[0] : inside_x[-1] + 1] = block
    return scale, pad_x, pad_y


def detection_stages(
    height: int, width: int, *, grid: bool = False
) -> list[list[tuple[int, int, int, int]]]:
    """Where the detector looks, in the order it looks, in stages whose regions can run as one
    batch: the whole frame; then, for frames at least 1.3x wider than tall (or taller than wide),
    two overlapping tiles, each 60% of the long side (at least square), at the two ends; then,
    with `grid`, the grid tiles (`grid_tiles`).

    The detector sees its input at 224x224, so small or distant people (a 240p clip, a far corner of
    a 1080p one) are missed on the whole frame; a tile shows them about 1.6x larger (measured on
    two_players_426x240: the whole frame finds nobody at frame 100, each half finds its player).
    A stage runs only when the ones before left a tracking slot empty.
    """
    stages = [[(0, 0, width, height)]]
    long_side, short_side = max(height, width), min(height, width)
    if long_side >= 1.3 * short_side:
        tile = max(short_side, math.ceil(0.6 * long_side))
        if width >= height:
            stages.append([(0, 0, tile, height), (width - tile, 0, width, height)])
        else:
            stages.append([(0, 0, width, tile), (0, height - tile, width, height)])
    if grid:
        stages.append(grid_tiles(height, width))
    return stages


def detection_regions(
    height: int, width: int, *, grid: bool = False
) -> list[tuple[int, int, int, int]]:
    """The regions of `detection_stages`, in order, in one list."""
    return [region for stage in detection_stages(height, width, grid=grid) for region in stage]


GRID_TILE = 2 / 3  # side of a grid tile / the frame's short side
GRID_OVERLAP = 0.25  # how much neighbouring grid tiles overlap (a fraction of the tile)


def grid_tiles(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Square tiles of side 2/3 of the short side, overlapping by a quarter, covering the frame:
    the detector sees a person 1.5x (portrait / square frames) to 2.9x (16:9) larger than on the
    whole frame. At 1080p: 4 x 2 tiles of 720 px, where a 250 px tall person is 78 px high at the
    detector's 224x224 instead of 29.
    """
    side = math.ceil(GRID_TILE * min(height, width))
    step = side * (1 - GRID_OVERLAP)

    def starts(length: int) -> list[int]:
        count = max(1, math.ceil((length - side) / step) + 1)
        return [round(i * (length - side) / max(count - 1, 1)) for i in range(count)]

    return [(x, y, x + side, y + side) for y in starts(height) for x in starts(width)]


def _refine_with_heatmap(landmarks: np.ndarray, heatmap: np.ndarray) -> None:
    """RefineLandmarksFromHeatmapCalculator, in place: x, y (crop pixels) of landmarks [B, 39, 5]
    from heatmap logits [B, 64, 64, 39], as the confidence-weighted mean cell of a 7x7 window where
    its peak is >= 0.5.

    Follows mediapipe's quirk on purpose: the mean cell index is divided by the heatmap size without
    the +0.5.
    """
    batch, rows, cols, count = heatmap.shape
    half = HEATMAP_KERNEL // 2
    offsets = np.arange(-half, half + 1)
    centre_col = (landmarks[:, :, 0] / LANDMARK_SIZE * cols).astype(np.intp)  # [B, 39]
    centre_row = (landmarks[:, :, 1] / LANDMARK_SIZE * rows).astype(np.intp)
    inside = (centre_col >= 0) & (centre_col < cols) & (centre_row >= 0) & (centre_row < rows)
    win_cols = centre_col[..., None] + offsets  # [B, 39, 7]
    win_rows = centre_row[..., None] + offsets
    valid = ((win_rows >= 0) & (win_rows < rows))[..., :, None] & (
        (win_cols >= 0) & (win_cols < cols)
    )[..., None, :]
    b = np.arange(batch)[:, None, None, None]
    k = np.arange(count)[None, :, None, None]
    logits = heatmap[
        b,
        np.clip(win_rows, 0, rows - 1)[..., :, None],
        np.clip(win_cols, 0, cols - 1)[..., None, :],
        k,
    ]
    confidence = np.where(valid, _sigmoid(logits), 0.0)  # [B, 39, 7, 7]
    total = confidence.sum((2, 3))
    refine = inside & (confidence.max((2, 3)) >= HEATMAP_MIN_CONFIDENCE) & (total > 0)
    mean_col = (confidence * win_cols[..., None, :]).sum((2, 3)) / np.maximum(total, 1e-9)
    mean_row = (confidence * win_rows[..., :, None]).sum((2, 3)) / np.maximum(total, 1e-9)
    landmarks[:, :, 0] = np.where(refine, mean_col / cols * LANDMARK_SIZE, landmarks[:, :, 0])
    landmarks[:, :, 1] = np.where(refine, mean_row / rows * LANDMARK_SIZE, landmarks[:, :, 1])
