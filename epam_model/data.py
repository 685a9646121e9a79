"""Clips for EPAM-Net: a torch Dataset over a prepared dataset folder (shards + index) and one split
manifest.

One item is one clip of one sample (docs/architecture.md section 9):

* **Time.** 48 pose frames picked by PoseC3D's `UniformSampleFrames` (docs/architecture.md 9;
  `uniform_sample_frames`): in training at random, in evaluation by the same rule with numpy's
  legacy generator reseeded with 255 for every sample, so evaluation always sees the same frames
  (PYSKL's indices exactly). The 16 RGB frames are every third of those (pose positions 0, 3, ...,
  45), so each RGB frame is one of the pose frames.
* **Space, and why both streams show the same region.** The pose box is PoseCompact's box over the
  joints of the sampled frames (padding 0.25, made square; `pose_box`). Both streams are cut from
  that one box, in the source video's pixel coordinates: the keypoints are mapped onto the heatmap
  canvas by the box, and the box is mapped into the stored RGB crop through the sample's `crop_box`
  attribute (the stored JPEGs are `crop_box` of the original frame, resized) and cut out of it,
  zero-padded where it leaves the stored crop. In training one random resized crop (area fraction in
  `scale_range`, aspect 3/4..4/3) of that box is drawn and applied to both streams, then one
  horizontal flip draw flips both (keypoints mirrored with the COCO-17 left/right swap, RGB
  mirrored). The authors' pipeline cut the RGB offline with a whole-video box and the heatmaps with
  a per-clip box, so the streams disagreed spatially (docs/architecture.md 12, item 6); here heatmap
  cell (i, j) of the 56 x 56 canvas and RGB pixels (4i..4i+3, 4j..4j+3) of the 224 x 224 frame cover
  exactly the same part of the scene.
* **Pixel convention.** Keypoints are continuous image coordinates (pixel k spans [k, k + 1)), as
  the crops and PoseC3D's Resize treat them. A heatmap pixel is rendered at its integer index, so
  the loader passes the renderer canvas coordinates minus 0.5: cell i then peaks for a joint at the
  cell's centre, and a mirror is x' = 55 - x (`flip_keypoints(convention="pixel")`), the exact
  partner of mirroring the RGB. PoseC3D renders the continuous coordinate itself (half a cell to the
  right and down) and flips with x' = 56 - x; at 56 x 56 the difference is half a cell.
* **Heatmaps.** Joint (17), limb (17) or both (34, joint then limb) volumes, sigma 0.6, rendered
  from the keypoints with `epam_data.heatmaps.render` in the loader (`render="loader"`), or returned
  as canvas keypoints and scores for `model_inputs` to render on the training device with
  `render_torch` (`render="device"`; equal to the loader's volumes within float32 rounding). With
  `ClipConfig(heatmap_source="stored")` an evaluation dataset reads the volumes `epam-data extract
  --heatmaps` stored instead of rendering: those were rendered over the sample's whole-clip
  `crop_box` with PoseC3D's convention (no half-cell shift) and quantised to uint8, so for alignment
  the RGB then shows `crop_box` too (the stored frames, resized). Training always renders.

HDF5 files are opened lazily in whichever process reads (`ShardReader`), so a dataset can be handed
to a DataLoader with any number of workers, under DDP, with fork or spawn. Training randomness is a
function of (seed, epoch, manifest position) only: the same item comes out of any worker in any
process.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from epam_data.errors import EpamError
from epam_data.heatmaps import VOLUME_KINDS, compact_box, flip_keypoints, render, render_torch
from epam_data.shards import ShardReader
from epam_data.threads import one_thread_per_process
from epam_model.epamnet import STREAMS

__all__ = [
    "RGB_MEAN",
    "RGB_STD",
    "DataConfigError",
    "ClipConfig",
    "ClipDataset",
    "clip_tensors",
    "manifest_path",
    "available_splits",
    "read_class_names",
    "read_manifest",
    "uniform_sample_frames",
    "pose_box",
    "random_resized_region",
    "model_inputs",
    "worker_init_fn",
]

logger = logging.getLogger(__name__)

RGB_MEAN = (123.675, 116.28, 103.53)  # ImageNet, on 0..255, RGB order (docs/architecture.md 9)
RGB_STD = (58.395, 57.12, 57.375)
# The pose stream's input: which heatmap volumes (epam_data.heatmaps.VOLUME_KINDS) it stacks, by
# option value.
HEATMAP_INPUTS: dict[str, tuple[str, ...]] = {
    "joint": ("joint",),
    "limb": ("limb",),
    "both": VOLUME_KINDS,
}
SPLIT_ORDER = ("train", "val", "test")
TEST_SEED = 255  # PoseC3D's UniformSampleFrames reseeds numpy with 255 for every test sample
ASPECT_RANGE = (3 / 4, 4 / 3)  # random resized crop aspect ratios (torchvision's, PoseC3D's)
MAX_SKIPS_WARNED = 20


class DataConfigError(EpamError, ValueError):
    """A loader option, manifest or class list that cannot work (unknown kind, label beyond the
    classes)."""


@dataclass(frozen=True)
class ClipConfig:
    """How a sample becomes a clip; the defaults are EPAM-Net's (docs/architecture.md 9).

    pose_frames: clip length of UniformSampleFrames; rgb_every: RGB frames are the pose positions
    [::rgb_every] (48 / 3 -> 16). rgb_size, heatmap_size: output sides in pixels. heatmap: "joint" |
    "limb" | "both" (34 channels, joint then limb); sigma in heatmap pixels. padding: PoseCompact's
    padding of the pose box. max_persons: persons kept per clip (the first ones of the shard;
    missing slots are zeros with score 0). scale_range, flip_prob: training augmentation (area
    fraction of the random resized crop, flip probability). heatmap_source: "render" (from the
    keypoints) or "stored" (read the shard's uint8 volumes; evaluation only).
    """

    pose_frames: int = 48  # PoseC3D UniformSampleFrames clip length
    rgb_every: int = 3  # RGB = pose indices [::3] -> 16 frames, aligned in time
    rgb_size: int = 224
    heatmap_size: int = 56
    heatmap: str = "joint"  # "joint" | "limb" | "both" (both = 34 channels, joint then limb)
    sigma: float = 0.6
    padding: float = 0.25
    max_persons: int = 2  # keypoint slots returned for device rendering (zero-padded / truncated)
    scale_range: tuple[float, float] = (0.56, 1.0)  # random resized crop area range in training
    flip_prob: float = 0.5
    heatmap_source: str = "render"  # "render" | "stored" (evaluation only)

    def __post_init__(self) -> None:
        if self.heatmap not in HEATMAP_INPUTS:
            raise DataConfigError(
                f"heatmap {self.heatmap!r}: choose one of {', '.join(HEATMAP_INPUTS)}"
            )
        if self.heatmap_source not in ("render", "stored"):
            raise DataConfigError(
                f"heatmap_source {self.heatmap_source!r}: choose 'render' or 'stored'"
            )
        for name in ("pose_frames", "rgb_every", "rgb_size", "heatmap_size", "max_persons"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataConfigError(f"{name} must be a positive integer, got {value!r}")
        low, high = self.scale_range
        if not 0 < low <= high <= 1:
            raise DataConfigError(
                f"scale_range must satisfy 0 < low <= high <= 1, got {self.scale_range!r}"
            )
        if not 0 <= self.flip_prob <= 1:
            raise DataConfigError(f"flip_prob must lie in [0, 1], got {self.flip_prob!r}")
        if not self.sigma > 0 or not self.padding >= 0:
            raise DataConfigError(
                f"sigma must be > 0 and padding >= 0, got {self.sigma!r} and {self.padding!r}"
            )

    @property
    def pose_channels(self) -> int:
        """17 (joint or limb) or 34 (both)."""
        return 17 * len(HEATMAP_INPUTS[self.heatmap])

    @property
    def rgb_frames(self) -> int:
        """RGB frames per clip: the pose positions 0, rgb_every, ... below pose_frames (16 by
        default)."""
        return len(range(0, self.pose_frames, self.rgb_every))


# --- manifests ------------------------------------------------------------------------------------


def _manifests_dir(dataset_dir: str | Path) -> Path:
    return Path(dataset_dir) / "manifests"


def available_splits(dataset_dir: str | Path, protocol: str) -> list[str]:
    """The splits with a manifest `<protocol>_<split>.csv`, train / val / test first, then others by
    name."""
    prefix = f"{protocol}_"
    splits = [
        path.stem[len(prefix) :] for path in _manifests_dir(dataset_dir).glob(f"{prefix}*.csv")
    ]
    splits = [split for split in splits if split and split != "classes" and "_" not in split]
    return sorted(
        splits, key=lambda split: (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else 99, split)
    )


def _available_manifests(dataset_dir: str | Path) -> list[str]:
    return sorted(
        path.stem
        for path in _manifests_dir(dataset_dir).glob("*.csv")
        if not path.stem.endswith("_classes") and path.stem != "rejected"
    )


def manifest_path(dataset_dir: str | Path, protocol: str, split: str) -> Path:
    """`DATASET/manifests/<protocol>_<split>.csv`; DataConfigError listing the manifests there when
    it is missing."""
    path = _manifests_dir(dataset_dir) / f"{protocol}_{split}.csv"
    if not path.is_file():
        found = _available_manifests(dataset_dir)
        listed = ", ".join(found) if found else "none"
        raise DataConfigError(
            f"{path}: no such manifest (protocol {protocol!r}, split {split!r}); manifests there: "
            f"{listed}. Write them with `epam-data splits {dataset_dir}` (or `epam-data synth`)"
        )
    return path


def read_manifest(path: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(sample ids, int64 labels, label names or '') of a manifest with at least the columns
    sample_id,label."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataConfigError(f"{path}: cannot read the manifest ({err})") from err
    missing = [column for column in ("sample_id", "label") if column not in frame.columns]
    if missing:
        raise DataConfigError(
            f"{path}: no {' or '.join(missing)} column; a manifest has sample_id,label,label_name"
        )
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = frame.index[labels.isna() | (labels < 0) | (labels != labels.round())]
    if len(bad):
        row = int(bad[0])
        raise DataConfigError(
            f"{path}: row {row + 2} ({frame['sample_id'][row]}) has label {frame['label'][row]!r}; "
            "labels are integers from 0"
        )
    duplicated = frame["sample_id"][frame["sample_id"].duplicated()]
    if len(duplicated):
        raise DataConfigError(f"{path}: {duplicated.iloc[0]} is listed twice")
    names = frame["label_name"].tolist() if "label_name" in frame.columns else [""] * len(frame)
    return frame["sample_id"].tolist(), labels.to_numpy(np.int64), names


def read_class_names(dataset_dir: str | Path, protocol: str) -> list[str]:
    """Class names in label order, from `<protocol>_classes.csv` (columns label,name, as `epam-data
    splits` writes them). Without that file: max label + 1 names over the protocol's manifests,
    taken from their label_name column where given, else `class_<k>`."""
    path = _manifests_dir(dataset_dir) / f"{protocol}_classes.csv"
    if path.is_file():
        import pandas as pd

        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataConfigError(f"{path}: cannot read the class list ({err})") from err
        if "name" not in frame.columns:
            raise DataConfigError(
                f"{path}: no name column; a class list has the columns label,name"
            )
        if "label" in frame.columns:
            labels = pd.to_numeric(frame["label"], errors="coerce")
            if labels.isna().any() or sorted(labels.astype(int)) != list(range(len(frame))):
                raise DataConfigError(f"{path}: labels must be 0..{len(frame) - 1}, each once")
            frame = frame.assign(label=labels.astype(int)).sort_values("label")
        return frame["name"].tolist()
    splits = available_splits(dataset_dir, protocol)
    if not splits:
        manifest_path(dataset_dir, protocol, "train")  # raises, listing what is there
    names: dict[int, str] = {}
    for split in splits:
        _, labels, label_names = read_manifest(manifest_path(dataset_dir, protocol, split))
        for label, name in zip(labels.tolist(), label_names):
            if name:
                names.setdefault(label, name)
            else:
                names.setdefault(label, "")
    count = max(names) + 1 if names else 0
    return [names.get(k) or f"class_{k}" for k in range(count)]


# --- time: which frames ---------------------------------------------------------------------------


def uniform_sample_frames(
    num_frames: int,
    clip_len: int = 48,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    clip: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """PoseC3D's UniformSampleFrames for one clip: int64 [clip_len] positions in 0..num_frames-1.

    The rules are PYSKL's (docs/architecture.md 9).

    T >= 2 clip_len: one frame in each of clip_len equal segments; clip_len <= T < 2 clip_len: T -
    clip_len random gaps skipped; T < clip_len: consecutive frames from a start, wrapped modulo T.
    Training draws from `rng`; evaluation draws from numpy's legacy generator seeded with 255 for
    every call, which reproduces PYSKL's test indices exactly (PoseC3D quirk: it reseeds the global
    numpy generator per sample), with start 0 for short clips. Multi-clip testing (evaluation only):
    clip k of num_clips is PYSKL's k-th clip, i.e. the (k+1)-th draw after the reseed, and for short
    samples the start k * T // num_clips (k when T < num_clips); clip 0 of any num_clips is the
    single test clip.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip {clip} of {num_clips}: need 0 <= clip < num_clips")
    if train:
        if rng is None or num_clips != 1:
            raise ValueError("training draws one clip from an rng (rng given, num_clips 1)")
        start = int(rng.integers(0, num_frames)) if num_frames < clip_len else 0
        return _draw_clip(
            num_frames, clip_len, start, lambda high: rng.integers(0, high), rng.choice
        )
    legacy = np.random.RandomState(TEST_SEED)
    start = clip if num_frames < num_clips else clip * num_frames // num_clips
    for _ in range(clip):  # PYSKL draws the clips one after the other from one reseed
        _draw_clip(num_frames, clip_len, start, legacy.randint, legacy.choice)
    return _draw_clip(num_frames, clip_len, start, legacy.randint, legacy.choice)


def _draw_clip(num_frames: int, clip_len: int, start: int, randint, choice) -> np.ndarray:
    """One UniformSampleFrames clip (the three cases of `uniform_sample_frames`); `start` serves
    short samples."""
    if num_frames < clip_len:
        indices = np.arange(start, start + clip_len)
    elif num_frames < 2 * clip_len:
        chosen = choice(clip_len + 1, num_frames - clip_len, replace=False)
        offset = np.zeros(clip_len + 1, dtype=np.int64)
        offset[chosen] = 1
        indices = np.arange(clip_len) + np.cumsum(offset)[:-1]
    else:
        bounds = np.array([i * num_frames // clip_len for i in range(clip_len + 1)])
        indices = bounds[:-1] + randint(np.diff(bounds))
    return np.mod(indices, num_frames).astype(np.int64)


# --- space: which region --------------------------------------------------------------------------


def pose_box(
    keypoints: np.ndarray, scores: np.ndarray, frame_hw: tuple[int, int], *, padding: float = 0.25
) -> tuple[float, float, float, float]:
    """The clip's square region x0, y0, x1, y1 in source pixels: PoseCompact's box over the joints
    seen (score > 0) of the sampled frames, padded and made square (`compact_box`, image padding
    allowed).

    Joints predicted outside the frame are clamped to it first, as `epam_data.crops.person_box`
    does, so that a pose model's guesses for unseen legs do not blow the box up. Without a seen
    joint, or when they span under 10 pixels, the box is the square around the whole frame.
    """
    height, width = frame_hw
    inside = np.clip(
        np.asarray(keypoints, np.float64), 1e-3, [width, height]
    )  # > 0: compact_box reads 0 as missing
    seen = np.where((np.asarray(scores) > 0)[..., None], inside, 0.0)
    box = compact_box(seen, frame_hw, padding=padding, hw_ratio=1.0, allow_imgpad=True)
    side = max(
        box.x1 - box.x0, box.y1 - box.y0
    )  # compact_box's fallback is the whole (oblong) frame
    x0, y0 = (box.x0 + box.x1 - side) / 2, (box.y0 + box.y1 - side) / 2
    return float(x0), float(y0), float(x0 + side), float(y0 + side)


def random_resized_region(
    region: Sequence[float],
    rng: np.random.Generator,
    *,
    scale_range: tuple[float, float] = (0.56, 1.0),
    aspect_range: tuple[float, float] = ASPECT_RANGE,
) -> tuple[float, float, float, float]:
    """A random sub-box of `region` (x0, y0, x1, y1): area fraction uniform in scale_range, aspect
    ratio log-uniform in aspect_range, position uniform (torchvision's / PoseC3D's
    RandomResizedCrop, in continuous coordinates). After 10 draws that do not fit, the whole
    region."""
    x0, y0, x1, y1 = region
    width, height = x1 - x0, y1 - y0
    log_low, log_high = math.log(aspect_range[0]), math.log(aspect_range[1])
    for _ in range(10):
        area = width * height * rng.uniform(*scale_range)
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_w, crop_h = math.sqrt(area * aspect), math.sqrt(area / aspect)
        if crop_w <= width and crop_h <= height:
            left = x0 + rng.uniform(0, width - crop_w)
            top = y0 + rng.uniform(0, height - crop_h)
            return float(left), float(top), float(left + crop_w), float(top + crop_h)
    return float(x0), float(y0), float(x1), float(y1)


def _canvas_keypoints(
    keypoints: np.ndarray, scores: np.ndarray, region: Sequence[float], size: int, flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Source-pixel keypoints [M, T, 17, 2] -> renderer coordinates on the size x size canvas
    showing `region` (cell centres at integers: continuous canvas coordinate minus 0.5), mirrored
    when `flip`. Missing joints (score 0) become (0, 0) with score 0. Returns new float32
    arrays."""
    x0, y0, x1, y1 = region
    scale = np.array([size / (x1 - x0), size / (y1 - y0)])
    canvas = (keypoints.astype(np.float64) - (x0, y0)) * scale - 0.5
    scores = scores.astype(np.float32)
    canvas = np.where((scores > 0)[..., None], canvas, 0.0).astype(np.float32)
    if flip:
        canvas, scores = flip_keypoints(canvas, scores, size, convention="pixel")
    return np.ascontiguousarray(canvas), np.ascontiguousarray(scores)


def _render_volume(keypoints: np.ndarray, scores: np.ndarray, config: ClipConfig) -> np.ndarray:
    """Loader rendering: float32 [C, T, S, S] from canvas keypoints [M, T, 17, 2] (numpy `render`).

    Joint planes are independent of each other, so rendering the keypoints with frames and joints
    swapped ([M, 17, T, 2]) yields the joint volume directly in the model's [C, T] order, without a
    10 MB transpose. A limb plane joins two joints, so limb volumes are rendered [T, C] and
    transposed.
    """
    size = (config.heatmap_size, config.heatmap_size)
    volumes = []
    for kind in HEATMAP_INPUTS[config.heatmap]:
        if kind == "joint":
            volumes.append(
                render(
                    keypoints.swapaxes(1, 2),
                    scores.swapaxes(1, 2),
                    size,
                    kind="joint",
                    sigma=config.sigma,
                )
            )
        else:
            volume = render(
                keypoints, scores, size, kind="limb", sigma=config.sigma
            )  # [T, C, S, S]
            volumes.append(np.ascontiguousarray(volume.transpose(1, 0, 2, 3)))
    return volumes[0] if len(volumes) == 1 else np.concatenate(volumes, axis=0)


def _cut_rgb(
    jpeg: bytes, crop_box: Sequence[float], region: Sequence[float], size: int, flip: bool
) -> np.ndarray:
    """`region` (source pixels) of a stored frame (`crop_box` of the source, resized) as uint8
    [size, size, 3].

    Zero outside the stored crop. The JPEG is decoded at a reduced scale when the region needs under
    half its resolution (`Image.draft`, the decoder's DCT scaling). The part of the region inside
    the stored frame is resized (Pillow, bilinear, pixel centres aligned; it antialiases when
    shrinking) into the whole output pixels it covers, as `epam_data.crops.crop_frame` does: at most
    one border row or column next to the padding stays black. A resize with a source box is twice as
    fast as Pillow's affine transform with its fill.
    """
    image = Image.open(io.BytesIO(jpeg))
    stored_w, stored_h = image.size
    cx0, cy0, cx1, cy1 = crop_box
    sx, sy = stored_w / (cx1 - cx0), stored_h / (cy1 - cy0)
    x0, y0, x1, y1 = region
    need_w = math.ceil(size / max((x1 - x0) * sx, 1e-6) * stored_w)
    need_h = math.ceil(size / max((y1 - y0) * sy, 1e-6) * stored_h)
    if need_w <= stored_w // 2 and need_h <= stored_h // 2:
        image.draft("RGB", (need_w, need_h))
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    sx, sy = sx * width / stored_w, sy * height / stored_h
    x0, x1 = (x0 - cx0) * sx, (x1 - cx0) * sx  # region in decoded-image pixels
    y0, y1 = (y0 - cy0) * sy, (y1 - cy0) * sy
    scale_x, scale_y = size / (x1 - x0), size / (y1 - y0)
    dx0 = min(max(math.ceil((max(x0, 0.0) - x0) * scale_x - 1e-6), 0), size)
    dy0 = min(max(math.ceil((max(y0, 0.0) - y0) * scale_y - 1e-6), 0), size)
    dx1 = max(min(math.floor((min(x1, width) - x0) * scale_x + 1e-6), size), 0)
    dy1 = max(min(math.floor((min(y1, height) - y0) * scale_y + 1e-6), size), 0)
    if dx1 <= dx0 or dy1 <= dy0:
        return np.zeros((size, size, 3), np.uint8)
    source = (
        max(x0 + dx0 / scale_x, 0.0),
        max(y0 + dy0 / scale_y, 0.0),
        min(x0 + dx1 / scale_x, width),
        min(y0 + dy1 / scale_y, height),
    )
    patch = np.asarray(image.resize((dx1 - dx0, dy1 - dy0), Image.Resampling.BILINEAR, box=source))
    if (dx0, dy0, dx1, dy1) == (0, 0, size, size):
        out = patch
    else:
        out = np.zeros((size, size, 3), np.uint8)
        out[dy0:dy1, dx0:dx1] = patch
    return out[:, ::-1] if flip else out


_RGB_SCALE = (1 / np.array(RGB_STD)).astype(np.float32)
_RGB_SHIFT = (np.array(RGB_MEAN) / np.array(RGB_STD)).astype(np.float32)


def _normalise(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] -> ImageNet-normalised float32 [3, T, H, W]: x / std - mean / std, one
    channel at a time (two passes over strided input; twice as fast as a lookup table or a torch
    permute + convert)."""
    out = np.empty((3, *frames.shape[:3]), np.float32)
    for channel in range(3):
        np.multiply(frames[..., channel], _RGB_SCALE[channel], out=out[channel], dtype=np.float32)
        np.subtract(out[channel], _RGB_SHIFT[channel], out=out[channel])
    return out


def _persons(array: np.ndarray, count: int) -> np.ndarray:
    """The first `count` persons of [M, ...], zero-padded when M < count."""
    if array.shape[0] >= count:
        return array[:count]
    return np.concatenate(
        [array, np.zeros((count - array.shape[0], *array.shape[1:]), array.dtype)]
    )


# --- the dataset ----------------------------------------------------------------------------------


def _frame_counts(rows: Sequence[dict[str, str]], index_path: Path) -> dict[str, int]:
    """Kept frames per sample id from index.csv rows; a cell that is not a count is one error
    line naming the sample, not a ValueError from deep inside a DataLoader."""
    counts = {}
    for row in rows:
        text = row.get("frames") or "0"
        if not text.isdigit():
            raise EpamError(
                f"{index_path}: {row['sample_id']} has frames {text!r}, not a count; the index is "
                "damaged: `epam-data verify DATA --repair` rebuilds it from the shards"
            )
        counts[row["sample_id"]] = int(text)
    return counts


def _check_dataset_options(
    stream: str,
    train: bool,
    config: ClipConfig,
    *,
    seed: int,
    render: str,
    clip: int,
    num_clips: int,
) -> None:
    """Refuse a `ClipDataset` option (or combination) that cannot work, with one line saying
    what to choose, before any file is read."""
    if stream not in STREAMS:
        raise DataConfigError(f"stream {stream!r}: choose one of {', '.join(STREAMS)}")
    if render not in ("loader", "device"):
        raise DataConfigError(
            f"render {render!r}: choose 'loader' (numpy, in the workers) or 'device'"
        )
    if config.heatmap_source == "stored" and (train or render == "device"):
        raise DataConfigError(
            "heatmap_source 'stored' reads the shard's volumes for evaluation with render "
            "'loader' only; training crops at random, so it renders from the keypoints"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if not 0 <= clip < num_clips or (train and num_clips != 1):
        raise DataConfigError(
            f"clip {clip} of {num_clips}: need 0 <= clip < num_clips, and one clip in training"
        )


class ClipDataset(torch.utils.data.Dataset):
    """Clips of the samples a manifest lists (module docstring), as dicts of tensors.

    Keys: "label" int64 scalar (from the manifest), "index" int64 scalar (the position in the
    manifest of the sample actually returned); "rgb" float32 [3, 16, 224, 224] ImageNet-normalised
    when stream is "epam" or "rgb"; with stream "epam" or "pose", "pose" float32 [C, 48, 56, 56]
    heatmaps (render "loader"), or "keypoints" float32 [max_persons, 48, 17, 2] canvas coordinates
    and "scores" float32 [max_persons, 48, 17] for `model_inputs` to render (render "device").

    train: random frames, random resized crop and flip, drawn from a generator seeded with (seed,
    epoch, index): call `set_epoch` before each epoch (it reaches DataLoader workers, persistent
    ones included, through shared memory). Evaluation (train False) is deterministic. skip_bad: a
    sample missing from the index or unreadable raises EpamError naming it and its shard; with
    skip_bad it is reported (warnings + logging) and the next readable sample of the manifest is
    returned instead, with its own label and index.
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        protocol: str,
        split: str,
        *,
        stream: str = "epam",
        train: bool = False,
        config: ClipConfig = ClipConfig(),
        skip_bad: bool = False,
        seed: int = 0,
        render: str = "loader",
        clip: int = 0,
        num_clips: int = 1,
    ):
        _check_dataset_options(
            stream, train, config, seed=seed, render=render, clip=clip, num_clips=num_clips
        )
        self.dataset_dir = Path(dataset_dir)
        self.protocol, self.split = protocol, split
        self.stream, self.train, self.config, self.render = stream, bool(train), config, render
        self.skip_bad, self.seed = skip_bad, seed
        self.clip, self.num_clips = clip, num_clips
        self.manifest = manifest_path(self.dataset_dir, protocol, split)
        self.sample_ids, self.labels, _ = read_manifest(self.manifest)
        self.class_names = read_class_names(self.dataset_dir, protocol)
        self.num_classes = len(self.class_names)
        self._check_labels()
        self.reader = ShardReader(self.dataset_dir)
        self._shard_of = {row["sample_id"]: row.get("shard", "") for row in self.reader.rows}
        self._frames_of = _frame_counts(self.reader.rows, self.dataset_dir / "index.csv")
        self._bad: set[int] = self._missing_positions()
        self._skips = 0
        # The epoch lives in shared memory so that set_epoch reaches DataLoader workers already
        # started.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def _check_labels(self) -> None:
        """Refuse a manifest label beyond the protocol's classes now, naming the first such row,
        rather than as an index error inside the loss."""
        beyond = np.flatnonzero(self.labels >= self.num_classes)
        if beyond.size:
            row = int(beyond[0])
            raise DataConfigError(
                f"{self.manifest}: {self.sample_ids[row]} has label {self.labels[row]} but "
                f"{self.protocol} has {self.num_classes} classes "
                f"(labels 0..{self.num_classes - 1})"
            )

    def _missing_positions(self) -> set[int]:
        """Manifest positions whose sample is not in the index: an error listing them, or with
        skip_bad a warning (pointing at the dataset's caller) and the set to skip."""
        missing = [
            position
            for position, sample_id in enumerate(self.sample_ids)
            if sample_id not in self.reader
        ]
        if missing:
            listed = ", ".join(self.sample_ids[position] for position in missing[:10])
            message = (
                f"{self.manifest}: {len(missing)} of {len(self.sample_ids)} samples are not in "
                f"{self.dataset_dir / 'index.csv'} ({listed}{', ...' if len(missing) > 10 else ''})"
            )
            if not self.skip_bad:
                raise EpamError(
                    f"{message}; prepare them (epam-data extract), remove them from the manifest, "
                    "or pass skip_bad=True to use other samples in their place"
                )
            warnings.warn(f"{message}; other samples are returned in their place", stacklevel=3)
            logger.warning("%s; other samples are returned in their place", message)
        return set(missing)

    # -- public ------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the training randomness of this epoch; same (seed, epoch, index) -> same clip,
        anywhere."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise DataConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = int(i) % len(self)
        for attempt in range(len(self)):
            position = (i + attempt) % len(self)
            if position in self._bad:
                if not self.skip_bad:
                    raise EpamError(self._describe(position, "is not in the index"))
                continue
            try:
                return self._clip(position)
            except (EpamError, OSError, KeyError, ValueError, IndexError) as err:
                message = self._describe(position, f"cannot be read ({type(err).__name__}: {err})")
                if not self.skip_bad:
                    raise EpamError(
                        message
                        + "; run `epam-data verify --deep` on the folder (`--repair` moves damaged "
                        "shards aside for a re-run of extract), or pass skip_bad=True to use other "
                        "samples in its place"
                    ) from err
                self._bad.add(position)
                self._skips += 1
                if self._skips <= MAX_SKIPS_WARNED:
                    warnings.warn(f"{message}; returning another sample in its place", stacklevel=2)
                logger.warning("%s; returning another sample in its place", message)
        raise EpamError(f"{self.manifest}: none of its {len(self)} samples can be read")

    # -- one clip ----------------------------------------------------------------------------------

    def _describe(self, position: int, what: str) -> str:
        sample_id = self.sample_ids[position]
        shard = self._shard_of.get(sample_id) or "(no shard)"
        return (
            f"{sample_id} (shard {self.dataset_dir / 'shards' / shard}, {self.manifest.name} row "
            f"{position + 2}) {what}"
        )

    def _rng(self, position: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, position])

    def _clip(self, position: int) -> dict[str, torch.Tensor]:
        config = self.config
        sample_id = self.sample_ids[position]
        stored = config.heatmap_source == "stored"
        want_pose = self.stream in ("epam", "pose")
        want_rgb = self.stream in ("epam", "rgb")
        num_frames = self._frames_of[sample_id]
        rng = self._rng(position) if self.train else None
        indices = uniform_sample_frames(
            num_frames,
            config.pose_frames,
            train=self.train,
            rng=rng,
            clip=self.clip,
            num_clips=self.num_clips,
        )
        # One read for both streams: the keypoints of the 48 frames and the JPEGs of all of them (16
        # are decoded); measured faster than a second read of the 16 JPEGs alone.
        pose = self.reader.read(
            sample_id, frames=indices, rgb=want_rgb, heatmaps=stored and want_pose
        )
        item = {
            "label": torch.tensor(int(self.labels[position]), dtype=torch.int64),
            "index": torch.tensor(position, dtype=torch.int64),
        }
        if stored and want_pose:
            item["pose"] = torch.from_numpy(self._stored_volume(pose))
        item.update(
            clip_tensors(pose, config, self.stream, rng=rng, render=self.render, stored=stored)
        )
        return item

    def _stored_volume(self, pose) -> np.ndarray:
        """The shard's uint8 volumes of the sampled frames as float32 [C, T, S, S] in 0..1."""
        volumes = []
        for kind in HEATMAP_INPUTS[self.config.heatmap]:
            volume = getattr(pose, f"{kind}_heatmaps")
            if volume is None:
                raise EpamError(
                    f"has no stored {kind} heatmaps (extract with --heatmaps {kind}), which "
                    "heatmap_source 'stored' reads"
                )
            if volume.shape[1] != 17 or volume.shape[2:] != (self.config.heatmap_size,) * 2:
                raise EpamError(
                    f"stores {kind} heatmaps of shape {volume.shape[1:]}, not (17, "
                    f"{self.config.heatmap_size}, {self.config.heatmap_size})"
                )
            volumes.append(volume)
        volume = volumes[0] if len(volumes) == 1 else np.concatenate(volumes, axis=1)
        return np.ascontiguousarray(volume.transpose(1, 0, 2, 3), dtype=np.float32) / np.float32(
            255
        )


def clip_tensors(
    pose: Any,
    config: ClipConfig,
    stream: str,
    *,
    rng: np.random.Generator | None = None,
    render: str = "loader",
    stored: bool = False,
) -> dict[str, torch.Tensor]:
    """The model inputs of one clip from its sampled frames (a PreparedSample holding only them, as
    `ShardReader.read(frames=...)` returns and `epam_model.predict` builds in memory): "rgb" and
    "pose" (or canvas "keypoints" and "scores" for render "device"), as the module docstring says.
    rng draws the training crop and flip; None is evaluation. With `stored`, the caller supplies
    "pose" from the stored volumes and the region is the sample's crop_box."""
    want_pose, want_rgb = stream in ("epam", "pose"), stream in ("epam", "rgb")
    keypoints = _persons(pose.keypoints, config.max_persons)  # [M, T, 17, 2]
    scores = _persons(pose.scores, config.max_persons).astype(np.float32)  # [M, T, 17]
    if stored:
        if pose.crop_box is None:
            raise EpamError("has no crop_box attribute, which stored heatmaps are rendered over")
        region = pose.crop_box
    else:
        region = pose_box(keypoints, scores, pose.original_hw, padding=config.padding)
    flip = False
    if rng is not None:
        region = random_resized_region(region, rng, scale_range=config.scale_range)
        flip = bool(rng.random() < config.flip_prob)
    item: dict[str, torch.Tensor] = {}
    if want_rgb:
        if pose.rgb is None or pose.crop_box is None:
            raise EpamError("has no RGB frames (extracted with --no-rgb?); use stream 'pose'")
        jpegs = pose.rgb[:: config.rgb_every]  # RGB = pose frames [::3]
        frames = np.empty((len(jpegs), config.rgb_size, config.rgb_size, 3), np.uint8)
        for k, jpeg in enumerate(jpegs):
            frames[k] = _cut_rgb(jpeg, pose.crop_box, region, config.rgb_size, flip)
        item["rgb"] = torch.from_numpy(_normalise(frames))  # [3, T, H, W]
    if want_pose and not stored:
        canvas, canvas_scores = _canvas_keypoints(
            keypoints, scores, region, config.heatmap_size, flip
        )
        if render == "device":
            item["keypoints"] = torch.from_numpy(canvas)
            item["scores"] = torch.from_numpy(canvas_scores)
        else:
            item["pose"] = torch.from_numpy(_render_volume(canvas, canvas_scores, config))
    return item


# --- the training step's side ---------------------------------------------------------------------


def model_inputs(
    batch: dict[str, torch.Tensor], device: torch.device, config: ClipConfig
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(rgb [N, 3, 16, 224, 224], pose [N, C, 48, 56, 56]) on `device`; None for a stream the batch
    lacks.

    A batch from a `render="device"` dataset carries canvas keypoints and scores instead of volumes:
    they are moved to the device and rendered there with `render_torch` (joint, limb, or both
    concatenated), equal to what the loader would have rendered.
    """
    non_blocking = torch.device(device).type == "cuda"
    rgb = batch["rgb"].to(device, non_blocking=non_blocking) if "rgb" in batch else None
    pose = None
    if "pose" in batch:
        pose = batch["pose"].to(device, non_blocking=non_blocking)
    elif "keypoints" in batch:
        keypoints = batch["keypoints"].to(device, non_blocking=non_blocking)
        scores = batch["scores"].to(device, non_blocking=non_blocking)
        size = (config.heatmap_size, config.heatmap_size)
        volumes = [
            render_torch(keypoints, scores, size, kind=kind, sigma=config.sigma, layout="NCTHW")
            for kind in HEATMAP_INPUTS[config.heatmap]
        ]
        pose = volumes[0] if len(volumes) == 1 else torch.cat(volumes, dim=1)
    return rgb, pose


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker set-up: one thread for torch, OpenCV and BLAS pools started later, so that
    N workers do not start N x cores threads. The clip randomness needs no seeding here (it is a
    function of the item)."""
    one_thread_per_process()
