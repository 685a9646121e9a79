"""Penn Action (Zhang, Zhu and Derpanis, ICCV 2013): 2,326 clips of 15 sports and exercise actions.

The release ships each clip as a folder of frames `frames/NNNN/000001.jpg ...` and one MATLAB file
`labels/NNNN.mat` holding the action, the camera view, 13 joints per frame (x, y, visibility), a
person box, the image size and the official split flag (`train`: 1 train, -1 test). The sample id
is the clip number `NNNN`; its metadata cannot be read from that name, so it comes from the label
file here and travels with the sample (index.csv's `view` and `split`).

Joints become COCO-17 with `PENN_TO_COCO`: Penn's head is COCO's nose, eyes and ears have no Penn
joint and stay missing (0, score 0), and each joint's score is its visibility (1 visible, 0
occluded; occluded joints keep the annotator's estimated position, which crop boxes use and
heatmaps do not draw).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epam_data.datasets.base import Rejected, Sample, Scan, strip_video_extension
from epam_data.errors import EpamError, LabelFileError

__all__ = [
    "PENN_CLASSES",
    "PENN_JOINTS",
    "PENN_TO_COCO",
    "PennLabel",
    "find_penn_labels",
    "read_penn_label",
    "scan_penn",
]

DATASET = "penn_action"
# Penn Action's 15 actions in alphabetical order; a label is the position here.
PENN_CLASSES = (
    "baseball_pitch",
    "baseball_swing",
    "bench_press",
    "bowl",
    "clean_and_jerk",
    "golf_swing",
    "jump_rope",
    "jumping_jacks",
    "pullup",
    "pushup",
    "situp",
    "squat",
    "strum_guitar",
    "tennis_forehand",
    "tennis_serve",
)
PENN_JOINTS = (
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
# COCO-17 index of each Penn joint: head -> nose (0), then shoulders .. ankles (5 .. 16) in order.
PENN_TO_COCO = np.array([0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], dtype=np.int64)
SPLIT_OF_FLAG = {1: "train", -1: "test"}


@dataclass(frozen=True)
class PennLabel:
    """One clip's label file: its sample, the joints as COCO-17 and the image size.

    keypoints float32 [1, T, 17, 2] (image pixels), scores float32 [1, T, 17] (visibility; 0 for the
    four COCO joints Penn lacks), boxes float32 [1, T, 4] (the annotated person box x1, y1, x2, y2),
    img_hw (height, width).
    """

    sample: Sample
    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    img_hw: tuple[int, int]


def _field(mat: dict, name: str, path: Path) -> np.ndarray:
    if name not in mat:
        raise LabelFileError(f"{path}: no '{name}' field; is it a Penn Action label file?")
    return np.asarray(mat[name])


def _text(mat: dict, name: str, path: Path) -> str:
    value = _field(mat, name, path).reshape(-1)
    return str(value[0]).strip() if value.size else ""


def _joints(mat: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x, y, visibility [T, 13] -> COCO-17 keypoints [1, T, 17, 2] and scores [1, T, 17]."""
    x, y = _field(mat, "x", path), _field(mat, "y", path)
    visibility = _field(mat, "visibility", path)
    if x.ndim != 2 or x.shape[1] != len(PENN_JOINTS) or not x.shape == y.shape == visibility.shape:
        raise LabelFileError(
            f"{path}: x, y and visibility must be [frames, 13], got {x.shape}, {y.shape}, "
            f"{visibility.shape}"
        )
    frames = x.shape[0]
    keypoints = np.zeros((1, frames, 17, 2), np.float32)
    scores = np.zeros((1, frames, 17), np.float32)
    keypoints[0][:, PENN_TO_COCO] = np.stack([x, y], axis=-1)
    scores[0][:, PENN_TO_COCO] = (visibility > 0).astype(np.float32)
    broken = ~np.isfinite(keypoints).all(-1)
    keypoints[broken], scores[broken] = 0, 0
    return keypoints, scores


def _boxes(mat: dict, path: Path, frames: int) -> np.ndarray:
    """bbox [T', 4] -> [1, T, 4]. Two release files (1154, 1865) hold one box fewer than joint
    rows; frames without a box get zeros (no box), the joints stay."""
    boxes = _field(mat, "bbox", path).astype(np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] > frames:
        raise LabelFileError(f"{path}: bbox must be [frames, 4], got {boxes.shape}")
    padded = np.zeros((1, frames, 4), np.float32)
    padded[0, : boxes.shape[0]] = boxes
    return padded


def _img_hw(mat: dict, path: Path) -> tuple[int, int]:
    dims = _field(mat, "dimensions", path).reshape(-1)
    if dims.size < 2 or int(dims[0]) < 1 or int(dims[1]) < 1:
        raise LabelFileError(f"{path}: dimensions {dims.tolist()} is not [height, width, frames]")
    return int(dims[0]), int(dims[1])


def read_penn_label(path: str | Path) -> PennLabel:
    """One `NNNN.mat` -> its PennLabel. Raises LabelFileError for a file that is not one."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError, NotImplementedError) as err:
        raise LabelFileError(f"{path}: cannot be read as a MATLAB file ({err})") from None
    action = _text(mat, "action", path)
    if action not in PENN_CLASSES:
        raise LabelFileError(f"{path}: action {action!r} is not one of Penn Action's 15")
    flag = int(_field(mat, "train", path).reshape(-1)[0])
    if flag not in SPLIT_OF_FLAG:
        raise LabelFileError(f"{path}: train flag {flag}; Penn Action uses 1 (train), -1 (test)")
    keypoints, scores = _joints(mat, path)
    boxes = _boxes(mat, path, keypoints.shape[1])
    clip = strip_video_extension(path.stem)
    sample = Sample(
        sample_id=clip,
        dataset=DATASET,
        label=PENN_CLASSES.index(action),
        label_name=action,
        video=clip,
        view=_text(mat, "pose", path),
        split=SPLIT_OF_FLAG[flag],
    )
    return PennLabel(sample, keypoints, scores, boxes, _img_hw(mat, path))


def find_penn_labels(root: Path) -> tuple[Path, Path | None]:
    """(labels folder, frames folder or None) of a Penn Action root, or of a labels folder
    itself."""
    root = Path(root)
    if not root.is_dir():
        raise EpamError(f"{root}: not a folder; give Penn_Action/ or its labels/ folder")
    labels = root / "labels" if (root / "labels").is_dir() else root
    if not any(labels.glob("*.mat")):
        raise EpamError(f"{root}: no labels/NNNN.mat files; give Penn_Action/ or its labels/")
    frames = labels.parent / "frames"
    return labels, frames if frames.is_dir() else None


def scan_penn(names: list[str], labels_dir: Path) -> Scan:
    """Samples for clip names (`0001`, a frame folder's name) with their metadata from
    `labels_dir/NNNN.mat`; a name without a readable label file is rejected with why."""
    scan = Scan()
    for name in names:
        clip = strip_video_extension(name)
        path = labels_dir / f"{clip}.mat"
        if not path.is_file():
            scan.rejected.append(Rejected(name, f"no label file {path}"))
            continue
        try:
            scan.samples.append(read_penn_label(path).sample)
        except LabelFileError as err:
            scan.rejected.append(Rejected(name, str(err)))
    return scan
