"""Move the grids the pose backends snap their crops to, to measure how much a figure owes to the
crops' sub-pixel placement (BENCHMARKS.md, "Grid luck").

Both trackers round each next crop to a grid (`blazepose.snap_roi`: half a pixel and half a
degree; `movenet.snap_crop`: half a pixel) so that every CPU takes the same path. Which path that
is stays luck: on the arm-wrestling close-up a crop moved by a fraction of a pixel changes whom
the tracker keeps. `move_grids(scale, shift)` replaces both roundings, in this process, by one on
a grid `scale` times the step, shifted by `shift` steps; `scale=1, shift=0` is the default.
Used by `bench_pose_spread.py --grid` and `bench_pose_accuracy.py --grid`.
"""

from __future__ import annotations

import numpy as np


def parse_grid(text: str) -> tuple[float, float]:
    """'SCALE:SHIFT' (e.g. '2:0.5') -> (scale, shift)."""
    scale, _, shift = text.partition(":")
    return float(scale), float(shift or 0)


def move_grids(scale: float, shift: float) -> None:
    """Snap blazepose's ROIs and movenet's crops to a grid `scale` x their step, shifted by
    `shift` steps, from now on in this process."""
    from epam_data.pose import blazepose, movenet
    from epam_data.pose.blazepose_geometry import ROI_GRID

    roi_step = np.asarray(ROI_GRID, np.float64) * scale
    crop_step = np.asarray(movenet.CROP_GRID, np.float64) * scale
    blazepose.snap_roi = lambda roi, grid=None: _snap(roi, roi_step, shift).astype(np.float32)
    movenet.snap_crop = lambda crop: _snap(crop, crop_step, shift)


def _snap(values: np.ndarray, step: np.ndarray, shift: float) -> np.ndarray:
    return (np.round(np.asarray(values, np.float64) / step - shift) + shift) * step
