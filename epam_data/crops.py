"""RGB crops of a sample: one square box around all kept persons over the whole clip, frames cut to
it as JPEG.

The box is PoseC3D's PoseCompact box (docs/prior-art.md 2.3, `epam_data.heatmaps.compact_box`): the
tight box over every kept joint of every frame, padded by 0.25 on each side, made square, allowed to
leave the frame (the outside is zero-padded). It is computed once per sample, so the crop does not
jitter from frame to frame and the keypoints map into every crop by the same affine map,
`(keypoints - (x1, y1)) * size / (x2 - x1)`.

Only joints scored at least `min_score` count, and they are clamped to the frame first: BlazePose
also predicts joints it cannot see (legs below the frame of a close-up), often with a fair
visibility score (24 % of the confident joints of the shared arm-wrestling clip lie outside its
frame); counting them where they were predicted made that clip's box 2.7 frame widths, mostly black
padding. Top-down HRNet (PYSKL's skeletons) never places a joint outside its person box, which lies
inside the frame, so clamping keeps PoseCompact's behaviour.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from epam_data.heatmaps import CropBox, compact_box

__all__ = [
    "CROP_MIN_SCORE",
    "CROP_PADDING",
    "crop_frame",
    "encode_jpeg",
    "person_box",
    "whole_frame_box",
]

CROP_PADDING = 0.25  # PoseCompact's padding (PYSKL / MMAction2 configs)
CROP_MIN_SCORE = 0.3  # joints below this confidence do not shape the box (BlazePose visibility)


def whole_frame_box(frame_hw: tuple[int, int]) -> CropBox:
    """The square centred on the frame that holds all of it (side = the longer edge): the box of a
    sample in which nobody was found, so its RGB frames still show the whole scene."""
    height, width = frame_hw
    side = max(height, width)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return CropBox(x0, y0, x0 + side, y0 + side)


def person_box(
    keypoints: np.ndarray,
    scores: np.ndarray,
    frame_hw: tuple[int, int],
    *,
    padding: float = CROP_PADDING,
    min_score: float = CROP_MIN_SCORE,
) -> CropBox | None:
    """The square crop box of a sample (module docstring), integer pixels, or None when no joint is
    seen.

    keypoints: [M, T, 17, 2] original-frame pixels; scores: [M, T, 17]. compact_box truncates its
    bounds to integers, which can leave the sides 1 px apart; the box is made exactly square around
    the same centre.
    """
    height, width = frame_hw
    inside = np.clip(
        np.asarray(keypoints, np.float64), 1e-3, [width, height]
    )  # > 0: compact_box reads 0 as missing
    seen = np.where((np.asarray(scores) >= min_score)[..., None], inside, 0)
    if not np.any(seen):
        return None
    box = compact_box(seen, frame_hw, padding=padding, hw_ratio=1.0, allow_imgpad=True)
    side = max(
        box.x1 - box.x0, box.y1 - box.y0
    )  # compact_box gives the whole (oblong) frame for tiny boxes
    x0 = math.floor((box.x0 + box.x1 - side) / 2)
    y0 = math.floor((box.y0 + box.y1 - side) / 2)
    return CropBox(x0, y0, x0 + side, y0 + side)


def crop_frame(frame: np.ndarray, box: CropBox, size: int) -> Image.Image:
    """The square `box` of an RGB frame uint8 [H, W, 3], resized to size x size; black where it
    leaves the frame.

    Only the part of the box inside the frame is copied and resampled (bilinear with antialiasing),
    then pasted at its place on a black canvas; destination pixels are whole, so the paste is exact
    and at most one border pixel row or column next to the frame edge stays black.
    """
    height, width = frame.shape[:2]
    scale = size / (box.x1 - box.x0)
    ix0, iy0, ix1, iy1 = max(box.x0, 0), max(box.y0, 0), min(box.x1, width), min(box.y1, height)
    dx0, dy0 = math.ceil((ix0 - box.x0) * scale - 1e-6), math.ceil((iy0 - box.y0) * scale - 1e-6)
    dx1, dy1 = math.floor((ix1 - box.x0) * scale + 1e-6), math.floor((iy1 - box.y0) * scale + 1e-6)
    dx1, dy1 = min(dx1, size), min(dy1, size)
    if dx1 <= dx0 or dy1 <= dy0:
        return Image.new("RGB", (size, size))
    patch = Image.fromarray(np.ascontiguousarray(frame[iy0:iy1, ix0:ix1]))
    source = (
        box.x0 + dx0 / scale - ix0,
        box.y0 + dy0 / scale - iy0,  # the destination pixels' source area
        min(box.x0 + dx1 / scale - ix0, ix1 - ix0),
        min(box.y0 + dy1 / scale - iy0, iy1 - iy0),
    )
    patch = patch.resize(
        (dx1 - dx0, dy1 - dy0), Image.Resampling.BILINEAR, box=source, reducing_gap=3.0
    )
    if (dx0, dy0, dx1, dy1) == (0, 0, size, size):
        return patch
    canvas = Image.new("RGB", (size, size))
    canvas.paste(patch, (dx0, dy0))
    return canvas


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB picture (Pillow, 4:2:0 chroma, no optimisation pass: speed over a few
    bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
