"""epam_model: EPAM-Net (two X-ShiftNet streams, pose-guided attention, late fusion) and its
training.

`build_model("epam" | "rgb" | "pose", num_classes)` builds a network;
`epam_model.complexity.model_info` and `epam_model.export.export_onnx` back the `epam-train
model-info` and `export` commands; `predict_videos(checkpoint, videos)` backs `epam-train predict`
(imported on first use: it brings the video and pose pipeline).
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
    "predict_videos",
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


def __getattr__(name: str) -> object:
    """`predict_videos` on first use, so that importing the model does not load the pipeline."""
    if name == "predict_videos":
        from epam_model.predict import predict_videos

        return predict_videos
    raise AttributeError(f"module 'epam_model' has no attribute {name!r}")
