"""epam_model: EPAM-Net (two X-ShiftNet streams, pose-guided attention, late fusion) and its
training.

`build_model("epam" | "rgb" | "pose", num_classes)` builds a network;
`epam_model.complexity.model_info` and `epam_model.export.export_onnx` back the `epam-train
model-info` and `export` commands.
"""

from epam_model.attention import PoseGuidedAttention
from epam_model.epamnet import (
    CheckpointError,
    EpamNet,
    EpamOutput,
    LoadReport,
    ModelConfigError,
    build_model,
    load_stream_weights,
    load_weights,
    read_state_dict,
)
from epam_model.xshiftnet import XShiftNet, build_xshiftnet, xshiftnet_pose, xshiftnet_rgb

__all__ = [
    "build_model",
    "EpamNet",
    "EpamOutput",
    "XShiftNet",
    "PoseGuidedAttention",
    "build_xshiftnet",
    "xshiftnet_rgb",
    "xshiftnet_pose",
    "LoadReport",
    "load_weights",
    "load_stream_weights",
    "read_state_dict",
    "CheckpointError",
    "ModelConfigError",
]
