"""Pose backends: RGB frames -> per-frame tracked persons with COCO-17 keypoints in original-frame pixels.

`load_backend("blazepose")` is the offline default (`epam_data.pose.blazepose`); `mmlab` comes later. Nothing
heavy is imported here: each backend imports its runtime when it is loaded.
"""

from epam_data.pose.base import COCO17_NAMES, FramePoses, PoseBackend, PoseBackendError, load_backend

__all__ = ["COCO17_NAMES", "FramePoses", "PoseBackend", "PoseBackendError", "load_backend"]
