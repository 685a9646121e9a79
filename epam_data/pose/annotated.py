"""Real images with hand-annotated people, in one form: COCO-17 keypoints with visibility, a person
box and an OKS area per person.

Pose test sets come in their own formats (COCO JSON with 17 joints, PoseTrack's head points,
CrowdPose's 14 joints, JHMDB's 15, MPII's list of 16); a backend's accuracy is measured the same way
on all of them only once each is mapped to COCO-17. A joint a set does not annotate gets visibility
0, which COCO's OKS leaves out (https://cocodataset.org/#keypoints-eval), so a set is scored on the
joints it shares with COCO:

* `coco17` (OCHuman, Human-Art, Halpe's first 17): as they are;
* `posetrack18`: PoseTrack's head_bottom / head_top stand where COCO has the eyes and are dropped;
  the image's ignore mask (crowds nobody annotated) is kept, so that a benchmark can leave out
  predictions there, as PoseTrack's own evaluation does;
* `crowdpose`: the 12 body joints (head and neck dropped); `jhmdb`: its 12 limb joints (neck, belly,
  head dropped); `mpii`: its 12 limb joints (pelvis, thorax, neck, head top dropped; MPII has no
  boxes, so the box is the square of side 200 x scale around `center`, MPII's person scale).

Where a set gives no `area` (the segment area COCO's OKS divides by), the box area stands in.
`load_folder` recognises the layout of each folder of mmpose's test data
(https://github.com/open-mmlab/mmpose/tree/main/tests/data), the sample that ships beside this
project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["AnnotatedImage", "load_folder", "load_sets"]

# Index of each COCO-17 joint in the set's own order (-1: the set does not annotate it).
_CROWDPOSE = [-1] * 5 + list(range(12))
_JHMDB = [-1] * 5 + [4, 3, 8, 7, 12, 11, 6, 5, 10, 9, 14, 13]
_MPII = [-1] * 5 + [13, 12, 14, 11, 15, 10, 3, 2, 4, 1, 5, 0]
_POSETRACK = [0, -1, -1, 3, 4] + list(range(5, 17))


@dataclass(frozen=True)
class AnnotatedImage:
    """One image and the people annotated in it.

    Attributes:
        path: the image file.
        keypoints: float32 [P, 17, 3], COCO-17 (x, y, visibility) in pixels; visibility 0 where
            the joint is not annotated (or not part of the set's skeleton).
        boxes: float32 [P, 4], (x, y, width, height) in pixels, as COCO writes them.
        areas: float32 [P], the OKS scale s^2 of each person.
        ignore_mask: the file of a mask (white = nobody annotated there), or None.
    """

    path: Path
    keypoints: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    ignore_mask: Path | None = None

    def rgb(self) -> np.ndarray:
        """The image, uint8 [H, W, 3] RGB."""
        from PIL import Image

        with Image.open(self.path) as image:
            return np.asarray(image.convert("RGB"))

    def labelled_boxes(self) -> np.ndarray:
        """The boxes (x1, y1, x2, y2) of the people with at least one labelled joint, [P', 4]."""
        boxes = self.boxes[(self.keypoints[:, :, 2] > 0).any(1)]
        return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)

    def ignored(self, points: np.ndarray) -> np.ndarray:
        """bool [N]: which points (x, y) [N, 2] fall where nobody was annotated (the ignore mask,
        white); all False without a mask."""
        points = np.asarray(points).reshape(-1, 2)
        if self.ignore_mask is None or not len(points):
            return np.zeros(len(points), bool)
        from PIL import Image

        with Image.open(self.ignore_mask) as image:
            mask = np.asarray(image.convert("L")) > 127
        x = np.clip(points[:, 0].astype(int), 0, mask.shape[1] - 1)
        y = np.clip(points[:, 1].astype(int), 0, mask.shape[0] - 1)
        return mask[y, x]

    @property
    def people(self) -> int:
        """Annotated people with at least one labelled joint (those COCO's evaluation counts)."""
        return int(((self.keypoints[:, :, 2] > 0).sum(1) > 0).sum())


def _remap(keypoints: np.ndarray, order: list[int]) -> np.ndarray:
    """[P, K, 3] in a set's order -> [P, 17, 3] in COCO order, zeros where `order` is -1."""
    out = np.zeros((len(keypoints), 17, 3), np.float32)
    for coco, own in enumerate(order):
        if own >= 0:
            out[:, coco] = keypoints[:, own]
    return out


def _find_image(folder: Path, file_name: str) -> Path:
    """The image a JSON names, relative to the set's folder; leading folders that the sample does
    not keep (Human-Art's `HumanArt/images/`) are dropped until the file exists."""
    parts = Path(file_name).parts
    for start in range(len(parts)):
        candidate = folder.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: image {file_name} not found")


def _from_coco_json(
    folder: Path, annotations: Path, order: list[int] | None
) -> list[AnnotatedImage]:
    """Images of a COCO-format keypoint file, people mapped to COCO-17 through `order`."""
    data = json.loads(annotations.read_text(encoding="utf-8"))
    images = []
    for image in data["images"]:
        people = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        raw = np.array([a["keypoints"] for a in people], np.float32).reshape(len(people), -1, 3)
        keypoints = raw if order is None else _remap(raw, order)
        boxes = np.array([a["bbox"] for a in people], np.float32).reshape(-1, 4)
        areas = np.array(
            [a.get("area") or box[2] * box[3] for a, box in zip(people, boxes)], np.float32
        )
        mask = image.get("mask_file")
        images.append(
            AnnotatedImage(
                _find_image(folder, image["file_name"]),
                keypoints[:, :17],
                boxes,
                areas,
                _find_image(folder, mask) if mask else None,
            )
        )
    return images


def _from_mpii(folder: Path, annotations: Path) -> list[AnnotatedImage]:
    """MPII's list of people (`joints`, `joints_vis`, `center`, `scale`), grouped by image."""
    by_image: dict[str, list[dict]] = {}
    for person in json.loads(annotations.read_text(encoding="utf-8")):
        by_image.setdefault(person["image"], []).append(person)
    images = []
    for name, people in by_image.items():
        joints = np.array([p["joints"] for p in people], np.float32)
        visible = np.array([p["joints_vis"] for p in people], np.float32)[..., None]
        keypoints = _remap(np.concatenate([joints, visible * 2], axis=2), _MPII)
        side = np.array([200 * p["scale"] for p in people], np.float32)
        centre = np.array([p["center"] for p in people], np.float32)
        boxes = np.concatenate([centre - side[:, None] / 2, np.stack([side, side], 1)], axis=1)
        images.append(AnnotatedImage(folder / name, keypoints, boxes, side * side))
    return images


def load_folder(folder: str | Path) -> list[AnnotatedImage]:
    """The annotated images of one folder of the sample (`ochuman/`, `posetrack18/`, ...); empty
    when the folder has annotations but no images (Halpe's)."""
    folder = Path(folder)
    name = folder.name
    if name == "mpii":
        return _from_mpii(folder, folder / "test_mpii.json")
    if name == "posetrack18":
        return _from_coco_json(
            folder, folder / "annotations" / "test_posetrack18_val.json", _POSETRACK
        )
    orders = {"crowdpose": _CROWDPOSE, "jhmdb": _JHMDB}
    files = sorted(
        path for path in folder.glob("test_*.json") if "_det_" not in path.name
    )  # `*_det_AP_*.json` are detector outputs, not annotations
    if not files:
        raise FileNotFoundError(f"{folder}: no test_*.json annotation file")
    try:
        return _from_coco_json(folder, files[0], orders.get(name))
    except FileNotFoundError:
        return []


def load_sets(root: str | Path) -> dict[str, list[AnnotatedImage]]:
    """Every set under `root` that has images, by folder name (sorted)."""
    sets = {}
    for folder in sorted(Path(root).iterdir()):
        if folder.is_dir():
            images = load_folder(folder)
            if images:
                sets[folder.name] = images
    return sets
