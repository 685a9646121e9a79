"""Pose backends: RGB frames -> per-frame tracked persons with COCO-17 keypoints in original-frame
pixels.

This module is the registry: `load_backend(name)` makes a backend by name. `blazepose` is the
offline default (`epam_data.pose.blazepose`); `mmlab` and `blazepose+mmpose`
(`epam_data.pose.mmlab`) need the optional OpenMMLab install. The backend modules import only numpy
at their top; each imports its runtime (TFLite, mmdet, mmpose) when a backend is made, so `import
epam_data` works without any of them installed. The contract every backend follows is
`epam_data.pose.base`.
"""

from __future__ import annotations

from typing import Any

from epam_data.pose.base import COCO17_NAMES, FramePoses, PoseBackend, PoseBackendError
from epam_data.pose.blazepose import BlazePoseBackend
from epam_data.pose.mmlab import BlazePoseMMPoseBackend, MMLabBackend
from epam_data.pose.movenet import MoveNetBackend

__all__ = [
    "BACKENDS",
    "COCO17_NAMES",
    "FramePoses",
    "PoseBackend",
    "PoseBackendError",
    "load_backend",
]

BACKENDS: dict[str, type] = {
    "blazepose": BlazePoseBackend,
    "mmlab": MMLabBackend,
    "blazepose+mmpose": BlazePoseMMPoseBackend,
    "movenet": MoveNetBackend,
}


def load_backend(name: str, **options: Any) -> PoseBackend:
    """A pose backend by name; `options` go to its constructor (`BlazePoseBackend`, `MMLabBackend`,
    `BlazePoseMMPoseBackend`), and an option it does not take is one clear error."""
    if name not in BACKENDS:
        raise PoseBackendError(f"unknown pose backend {name!r}; choose one of {sorted(BACKENDS)}")
    try:
        return BACKENDS[name](**options)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise PoseBackendError(f"pose backend {name!r} has no such option: {err}") from None
