"""scripts/grid_luck.py, which the benchmarks' `--grid` uses to move the trackers' snapping grids:
at scale 1 and shift 0 it must be the backends' own rounding, or every grid-luck table in
BENCHMARKS.md would compare against something the backends never do."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from epam_data.pose import blazepose, movenet

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "grid_luck.py"


@pytest.fixture
def grid_luck() -> Iterator[object]:
    """The script as a module; the backends' own snapping restored afterwards."""
    own = blazepose.snap_roi, movenet.snap_crop
    spec = importlib.util.spec_from_file_location("grid_luck", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    blazepose.snap_roi, movenet.snap_crop = own


def test_unmoved_grids_are_the_backends_own(grid_luck: object) -> None:
    rng = np.random.default_rng(0)
    rois = np.column_stack([rng.uniform(0, 1920, (500, 3)), rng.uniform(-3.2, 3.2, 500)])
    crops = rng.uniform(-50, 1920, (500, 3))
    expected_rois = [blazepose.snap_roi(roi) for roi in rois]
    expected_crops = [movenet.snap_crop(crop) for crop in crops]
    grid_luck.move_grids(*grid_luck.parse_grid("1:0"))
    assert all(np.array_equal(blazepose.snap_roi(r), e) for r, e in zip(rois, expected_rois))
    assert all(np.array_equal(movenet.snap_crop(c), e) for c, e in zip(crops, expected_crops))
    grid_luck.move_grids(*grid_luck.parse_grid("2:0.5"))  # moved: on the odd half-steps now
    moved = np.stack([movenet.snap_crop(crop) for crop in crops])
    assert np.allclose((moved / np.array(movenet.CROP_GRID) - 1) % 2, 0)
