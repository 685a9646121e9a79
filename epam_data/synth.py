"""Test and demo data without any dataset download.

Two kinds: real videos (a photograph shipped inside a registry package, moved across a canvas frame
by frame and encoded with a real H.264 encoder: `write_photo_clip`), and small synthetic *prepared*
datasets (`make_synth_dataset`: stick figures whose classes differ by motion, written with the real
ShardWriter, with split manifests) for smoke runs of training and for the loader's tests.

The photograph is `skimage/data/astronaut.png` from scikit-image's wheel (NASA, public domain; a
person, waist up), installed with `--no-deps` by scripts/bootstrap.sh because only the file is read.
PyAV (a test extra) decodes and encodes; both are imported inside the functions, so `import
epam_data` never needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from epam_data.atomic import write_csv_atomic
from epam_data.errors import EpamError

if TYPE_CHECKING:
    from epam_data.datasets.base import Sample
    from epam_data.heatmaps import CropBox
    from epam_data.shards import PreparedSample

__all__ = [
    "SYNTH_JOINT_COLOURS",
    "SYNTH_MOTIONS",
    "make_synth_dataset",
    "person_photo",
    "synth_class_names",
    "synth_motion",
    "synth_sample",
    "write_photo_clip",
]

PHOTO_FILE = "skimage/data/astronaut.png"


def person_photo() -> np.ndarray:
    """The astronaut photograph as uint8 [512, 512, 3] RGB; EpamError when scikit-image's files are
    missing."""
    from importlib import metadata

    import av

    try:
        dist = metadata.distribution("scikit-image")
    except metadata.PackageNotFoundError as err:
        raise EpamError(
            f"needs {PHOTO_FILE} from scikit-image's wheel: pip install --no-deps scikit-image"
        ) from err
    path = next((dist.locate_file(f) for f in dist.files or () if str(f) == PHOTO_FILE), None)
    if path is None:
        raise EpamError(f"this scikit-image wheel has no {PHOTO_FILE}")
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def write_photo_clip(
    path: Path,
    image: np.ndarray,
    *,
    num_frames: int,
    canvas_hw: tuple[int, int],
    origin: tuple[int, int],
    step: tuple[int, int],
    fps: int = 25,
    crf: int | None = None,
) -> Path:
    """A real H.264 video of `image` on grey: in frame i its top-left corner is at origin + i * step
    (x, y)."""
    import av

    height, width = canvas_hw
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if crf is not None:
            stream.options = {"crf": str(crf)}
        for index in range(num_frames):
            canvas = np.full((height, width, 3), 128, np.uint8)
            x0, y0 = origin[0] + index * step[0], origin[1] + index * step[1]
            canvas[y0 : y0 + image.shape[0], x0 : x0 + image.shape[1]] = image[
                : height - y0, : width - x0
            ]
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# --- synthetic prepared datasets ------------------------------------------------------------------
# A stick figure facing the camera (its left side on the image's right), COCO-17 joints in "body
# units": y grows downwards, 0 at the hips' mid-point, 1 unit = the hip-to-shoulder height. Each
# class is one periodic motion; the motions are told apart by *which* joints move and how, never by
# left versus right alone, so that a horizontal flip (the training augmentation) keeps every class a
# class: one-sided motions pick their side at random per sample.

SYNTH_FRAME_HW = (240, 320)  # (height, width) of the imaginary source video
SYNTH_FPS = 25.0
SYNTH_MOTIONS = (
    "wave_arm",
    "raise_both_arms",
    "jump",
    "squat",
    "walk_sideways",
    "kick",
    "clap",
    "sway",
)
SYNTH_SPEEDS = ("", "_fast")  # classes 8..15 repeat the motions at twice the frequency
_STANDING = np.array(
    [  # (x, y) body units, COCO-17 order
        (0.00, -1.55),
        (0.07, -1.62),
        (-0.07, -1.62),
        (0.15, -1.58),
        (-0.15, -1.58),  # nose, eyes, ears
        (0.30, -1.00),
        (-0.30, -1.00),
        (0.38, -0.50),
        (-0.38, -0.50),
        (0.42, -0.02),
        (-0.42, -0.02),  # arms
        (0.18, 0.00),
        (-0.18, 0.00),
        (0.20, 0.75),
        (-0.20, 0.75),
        (0.21, 1.50),
        (-0.21, 1.50),  # legs
    ]
)
_LEFT_ARM, _RIGHT_ARM = (7, 9), (8, 10)  # elbow, wrist
_LEFT_LEG, _RIGHT_LEG = (13, 15), (14, 16)  # knee, ankle
# Limbs drawn into the RGB frames (the figure's "bones"), and a colour per wrist so that tests can
# find them.
_BONES = (
    (5, 6),
    (5, 7),
    (7, 9),
    (6, 8),
    (8, 10),
    (5, 11),
    (6, 12),
    (11, 12),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
    (0, 5),
    (0, 6),
)
SYNTH_JOINT_COLOURS = {9: (255, 0, 0), 10: (0, 0, 255)}  # left wrist red, right wrist blue


def synth_class_names(classes: int) -> list[str]:
    """Names of the first `classes` synthetic classes: the motions, then the same motions twice as
    fast."""
    limit = len(SYNTH_MOTIONS) * len(SYNTH_SPEEDS)
    if not 1 <= classes <= limit:
        raise EpamError(f"synthetic datasets have 1 to {limit} classes, got {classes}")
    return [f"{motion}{speed}" for speed in SYNTH_SPEEDS for motion in SYNTH_MOTIONS][:classes]


def _rotate(points: np.ndarray, pivot: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """points [T, P, 2] rotated about pivot [T, 2] by angle [T] (radians, clockwise on screen)."""
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    rel = points - pivot[:, None]
    return pivot[:, None] + np.stack(
        [rel[..., 0] * cos - rel[..., 1] * sin, rel[..., 0] * sin + rel[..., 1] * cos], axis=-1
    )


@dataclass(frozen=True)
class _Cycle:
    """The random draws and time base of one sample's motion, drawn once by `synth_motion` so that
    the per-motion functions (`_MOVES`) only shape joints and never touch the generator."""

    t: np.ndarray  # seconds since the first frame, [T]
    phase: np.ndarray  # radians, [T]
    wave: np.ndarray  # sin(phase), [T]
    amp: float
    side: int  # +1: the figure's left (image right), -1: its right


def synth_motion(label: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Body-unit joints float64 [T, 17, 2] of one sample of class `label` (see SYNTH_MOTIONS), with
    a random phase, amplitude and side; the figure's root stays near 0 except for the motions that
    move it."""
    motion = SYNTH_MOTIONS[label % len(SYNTH_MOTIONS)]
    frequency = (0.8 if label < len(SYNTH_MOTIONS) else 1.6) * rng.uniform(
        0.9, 1.1
    )  # cycles per second
    t = np.arange(frames) / SYNTH_FPS
    phase = 2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase)
    amp = rng.uniform(0.8, 1.2)
    side = 1 if rng.random() < 0.5 else -1  # +1: the figure's left (image right), -1: its right
    joints = np.repeat(_STANDING[None], frames, axis=0).copy()
    _MOVES[motion](joints, _Cycle(t=t, phase=phase, wave=wave, amp=amp, side=side))
    return joints


def _arm_up(joints: np.ndarray, arm: tuple[int, int], shoulder: int, angle: np.ndarray) -> None:
    """Swing an arm (elbow, wrist) about its shoulder in place: the arm motions share it."""
    joints[:, list(arm)] = _rotate(joints[:, list(arm)], joints[:, shoulder], angle)


def _wave_arm(joints: np.ndarray, cycle: _Cycle) -> None:
    """One arm raised, swinging above the shoulder."""
    arm, shoulder = (_LEFT_ARM, 5) if cycle.side > 0 else (_RIGHT_ARM, 6)
    _arm_up(joints, arm, shoulder, -cycle.side * (2.4 + 0.5 * cycle.amp * cycle.wave))


def _raise_both_arms(joints: np.ndarray, cycle: _Cycle) -> None:
    """Both arms from the sides to above the head and back."""
    lift = 1.3 * cycle.amp * (1 - np.cos(cycle.phase))
    _arm_up(joints, _LEFT_ARM, 5, -lift)
    _arm_up(joints, _RIGHT_ARM, 6, lift)


def _jump(joints: np.ndarray, cycle: _Cycle) -> None:
    """The whole figure bounces."""
    joints[..., 1] -= 0.6 * cycle.amp * np.abs(cycle.wave)[:, None]


def _squat(joints: np.ndarray, cycle: _Cycle) -> None:
    """Hips and everything above go down, knees bend outwards."""
    depth = 0.45 * cycle.amp * (1 - np.cos(cycle.phase)) / 2
    joints[:, :13, 1] += depth[:, None]
    joints[:, 13, 0] += 1.2 * depth
    joints[:, 14, 0] -= 1.2 * depth
    joints[:, 13:15, 1] += 0.3 * depth[:, None]


def _walk_sideways(joints: np.ndarray, cycle: _Cycle) -> None:
    """The figure travels sideways, legs scissoring."""
    t, wave = cycle.t, cycle.wave
    joints[..., 0] += cycle.side * (1.2 * cycle.amp * (t / max(t[-1], 1e-9)) - 0.6)[:, None]
    joints[:, [13, 15], 0] += 0.25 * wave[:, None] * np.array([0.5, 1.0])
    joints[:, [14, 16], 0] -= 0.25 * wave[:, None] * np.array([0.5, 1.0])


def _kick(joints: np.ndarray, cycle: _Cycle) -> None:
    """One leg swings up sideways from the hip."""
    leg, hip = (_LEFT_LEG, 11) if cycle.side > 0 else (_RIGHT_LEG, 12)
    joints[:, list(leg)] = _rotate(
        joints[:, list(leg)],
        joints[:, hip],
        -cycle.side * 0.9 * cycle.amp * np.maximum(cycle.wave, 0),
    )


def _clap(joints: np.ndarray, cycle: _Cycle) -> None:
    """Hands meet in front of the chest and part again."""
    closing = cycle.amp * (1 - np.cos(cycle.phase)) / 2
    for wrist, elbow, sign in ((9, 7, 1), (10, 8, -1)):
        target = np.array([sign * 0.04, -0.75])
        joints[:, wrist] += closing[:, None] * (target - joints[:, wrist])
        joints[:, elbow] += (
            closing[:, None] * (np.array([sign * 0.35, -0.7]) - joints[:, elbow]) * 0.7
        )


def _sway(joints: np.ndarray, cycle: _Cycle) -> None:
    """The upper body tilts left and right about the hips."""
    frames = len(joints)
    joints[:, :11] = _rotate(joints[:, :11], np.zeros((frames, 2)), 0.35 * cycle.amp * cycle.wave)


# SYNTH_MOTIONS name -> the function that moves a standing figure's joints [T, 17, 2] in place.
_MOVES: dict[str, Callable[[np.ndarray, _Cycle], None]] = {
    "wave_arm": _wave_arm,
    "raise_both_arms": _raise_both_arms,
    "jump": _jump,
    "squat": _squat,
    "walk_sideways": _walk_sideways,
    "kick": _kick,
    "clap": _clap,
    "sway": _sway,
}


def _draw_figure(
    points: np.ndarray, frame_hw: tuple[int, int], background: tuple[int, int, int], width: int
) -> Image.Image:
    """One RGB frame: the figure's bones as thick light lines, its head as a disk, the wrists as
    coloured disks."""
    from PIL import ImageDraw

    height, frame_width = frame_hw
    image = Image.new("RGB", (frame_width, height), background)
    draw = ImageDraw.Draw(image)
    xy = [(float(x), float(y)) for x, y in points]
    for i, j in _BONES:
        draw.line([xy[i], xy[j]], fill=(225, 225, 215), width=width)
    head = 1.4 * width
    draw.ellipse(
        [xy[0][0] - head, xy[0][1] - head, xy[0][0] + head, xy[0][1] + head], fill=(225, 225, 215)
    )
    radius = 0.9 * width
    for joint, colour in SYNTH_JOINT_COLOURS.items():
        x, y = xy[joint]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    return image


def _synth_pose(
    label: int, frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """(keypoints float32 [1, T, 17, 2] in source pixels, scores float16 [1, T, 17], pixels per
    body unit): the figure placed at a random size and spot of the source frame, with pixel noise;
    the first draws of a sample, so they come before those of its RGB frames."""
    height, width = SYNTH_FRAME_HW
    unit = rng.uniform(40, 55)  # pixels per body unit: the figure is 125-170 px tall
    root = np.array([rng.uniform(0.4, 0.6) * width, rng.uniform(0.48, 0.56) * height])
    body = synth_motion(label, frames, rng)
    keypoints = (root + unit * body + rng.normal(0, 0.6, body.shape)).astype(np.float32)[
        None
    ]  # [1, T, 17, 2]
    scores = rng.uniform(0.85, 1.0, keypoints.shape[:-1]).astype(np.float16)
    return keypoints, scores, unit


def _synth_boxes(keypoints: np.ndarray, unit: float) -> np.ndarray:
    """float32 [1, T, 5] person boxes (x1, y1, x2, y2, score 1) around the joints with a margin of
    0.1 body unit, standing in for a detector's boxes."""
    frames = keypoints.shape[1]
    low, high = keypoints.min(axis=2), keypoints.max(axis=2)  # [1, T, 2]
    return np.concatenate(
        [low - 0.1 * unit, high + 0.1 * unit, np.ones((1, frames, 1), np.float32)], axis=-1
    ).astype(np.float32)


def _synth_jpegs(
    keypoints: np.ndarray, box: CropBox, unit: float, rgb_size: int, rng: np.random.Generator
) -> list[bytes]:
    """The RGB frames of a sample: the figure drawn on a random grey, cut to `box` and encoded
    exactly as `epam-data extract` does (`crops.crop_frame`, `crops.encode_jpeg`)."""
    from epam_data.crops import crop_frame, encode_jpeg

    grey = int(rng.integers(50, 110))
    background = (grey, grey + int(rng.integers(0, 20)), grey)
    line_width = max(2, round(0.12 * unit))
    return [
        encode_jpeg(
            crop_frame(
                np.asarray(_draw_figure(points, SYNTH_FRAME_HW, background, line_width)),
                box,
                rgb_size,
            )
        )
        for points in keypoints[0]
    ]


def _synth_volumes(
    keypoints: np.ndarray,
    scores: np.ndarray,
    box: CropBox,
    heatmaps: tuple[str, ...],
    heatmap_size: int,
    heatmap_sigma: float,
) -> dict[str, np.ndarray]:
    """{"<kind>_heatmaps": uint8 [T, C, S, S]} rendered on the crop canvas and quantised as extract
    stores them; {} without `heatmaps`."""
    from epam_data.heatmaps import crop_keypoints, render, resize_keypoints

    volumes = {}
    if heatmaps:
        canvas = resize_keypoints(
            crop_keypoints(keypoints, box), box.canvas_hw, (heatmap_size, heatmap_size)
        )
        for kind in heatmaps:
            volume = render(
                canvas,
                scores.astype(np.float32),
                (heatmap_size, heatmap_size),
                kind=kind,
                sigma=heatmap_sigma,
            )
            volumes[f"{kind}_heatmaps"] = np.rint(np.clip(volume, 0.0, 1.0) * 255.0).astype(
                np.uint8
            )
    return volumes


def _synth_meta(index: int, label: int, class_name: str) -> Sample:
    """The Sample (metadata) of synthetic sample `index`: 100 samples per subject."""
    from epam_data.datasets.base import Sample

    sample_id = f"synth{index:05d}_{class_name}"
    return Sample(
        sample_id=sample_id,
        dataset="synth",
        label=label,
        label_name=class_name,
        video=sample_id,
        subject=index // 100 + 1,
    )


def synth_sample(
    index: int,
    label: int,
    class_name: str,
    *,
    frames: int = 40,
    rgb_size: int = 64,
    seed: int = 0,
    heatmaps: tuple[str, ...] = (),
    heatmap_size: int = 56,
    heatmap_sigma: float = 0.6,
) -> PreparedSample:
    """One synthetic PreparedSample, a function of (seed, index, label) alone.

    Keypoints are COCO-17 in the pixels of a 320x240 source frame (one person, scores 0.85-1.0); the
    RGB frames are that frame drawn with Pillow, cut to the sample's square person box and
    JPEG-encoded exactly as `epam-data extract` does (`crops.person_box`, `crops.crop_frame`,
    `crops.encode_jpeg`), so `crop_box` maps the keypoints onto the RGB the same way as for a real
    video.
    """
    from epam_data.crops import person_box
    from epam_data.shards import PreparedSample

    rng = np.random.default_rng([seed, index, label])
    keypoints, scores, unit = _synth_pose(label, frames, rng)
    boxes = _synth_boxes(keypoints, unit)
    box = person_box(keypoints, scores, SYNTH_FRAME_HW)
    assert box is not None  # every joint is scored >= 0.85
    jpegs = _synth_jpegs(keypoints, box, unit, rgb_size, rng)
    volumes = _synth_volumes(keypoints, scores, box, heatmaps, heatmap_size, heatmap_sigma)
    sample = _synth_meta(index, label, class_name)
    extra: dict[str, object] = {"max_persons": 1, "frame_stride": 1}
    if heatmaps:
        extra.update(heatmap_size=heatmap_size, heatmap_sigma=heatmap_sigma)
    return PreparedSample(
        sample=sample,
        keypoints=keypoints,
        scores=scores,
        boxes=boxes,
        frame_indices=np.arange(frames, dtype=np.int32),
        total_frames=frames,
        original_hw=SYNTH_FRAME_HW,
        fps=SYNTH_FPS,
        rgb=jpegs,
        crop_box=(box.x0, box.y0, box.x1, box.y1),
        num_person_raw=1,
        source=f"synth/{sample.sample_id}",
        extra=extra,
        **volumes,
    )


def _check_synth_options(
    classes: int, samples: int, frames: int, rgb_size: int, heatmaps: tuple[str, ...]
) -> tuple[list[str], tuple[str, ...]]:
    """(class names, heatmap kinds without repeats), or EpamError for options that cannot make a
    dataset, before anything is written."""
    names = synth_class_names(classes)
    if samples < classes:
        raise EpamError(f"--samples {samples}: need at least one sample per class ({classes})")
    if frames < 1 or rgb_size < 16:
        raise EpamError(f"frames must be >= 1 and rgb_size >= 16, got {frames} and {rgb_size}")
    unknown = [kind for kind in heatmaps if kind not in ("joint", "limb")]
    if unknown:
        raise EpamError(f"--heatmaps: unknown kind {unknown[0]!r}; use joint, limb or joint,limb")
    return names, tuple(dict.fromkeys(heatmaps))


def _synth_options(
    classes: int, samples: int, frames: int, rgb_size: int, seed: int, heatmaps: tuple[str, ...]
) -> dict[str, object]:
    """The options dataset.json records, so that a re-run with other options is refused."""
    return {
        "generator": "epam_data.synth.make_synth_dataset",
        "pose_backend": "synthetic",
        "classes": classes,
        "samples": samples,
        "frames": frames,
        "rgb_size": rgb_size,
        "seed": seed,
        "frame_hw": list(SYNTH_FRAME_HW),
        "heatmaps": list(heatmaps),
        "heatmap_size": 56 if heatmaps else None,
        "heatmap_sigma": 0.6 if heatmaps else None,
        "heatmap_quantisation": "uint8 = round(value * 255)" if heatmaps else None,
    }


def _plan_synth_samples(
    names: list[str], samples: int, done: set[str]
) -> tuple[dict[str, list[list[object]]], list[tuple[int, int, str]]]:
    """(manifest rows per split, (index, label, name) of the samples still to write): the split of
    every sample is fixed by its place in its class, whether or not an earlier run wrote it."""
    classes = len(names)
    rows: dict[str, list[list[object]]] = {"train": [], "test": []}
    prepared = []
    for label, name in enumerate(names):
        members = list(range(label, samples, classes))
        train_count = max(1, round(len(members) * 2 / 3)) if len(members) > 1 else 1
        for position, index in enumerate(members):
            sample_id = f"synth{index:05d}_{name}"
            rows["train" if position < train_count else "test"].append([sample_id, label, name])
            if sample_id not in done:
                prepared.append((index, label, name))
    return rows, prepared


def _write_synth_manifests(
    out_dir: Path, names: list[str], rows: dict[str, list[list[object]]]
) -> None:
    """manifests/synth_train.csv, synth_test.csv and synth_classes.csv, as `epam-data splits`
    writes them."""
    folder = out_dir / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        write_csv_atomic(
            folder / f"synth_{split}.csv", ["sample_id", "label", "label_name"], sorted(split_rows)
        )
    write_csv_atomic(
        folder / "synth_classes.csv",
        ["label", "name"],
        [[label, name] for label, name in enumerate(names)],
    )


def make_synth_dataset(
    out_dir: str | Path,
    *,
    classes: int = 4,
    samples: int = 48,
    frames: int = 40,
    rgb_size: int = 64,
    seed: int = 0,
    heatmaps: tuple[str, ...] = (),
) -> Path:
    """A small synthetic prepared dataset: real shards, index.csv, dataset.json (dataset "synth")
    and manifests.

    Sample n has class n % classes (`synth_class_names`); the classes differ by motion only (a stick
    figure waving, jumping, squatting, ...: `synth_motion`). Per class, the first two thirds of its
    samples (rounded) form `manifests/synth_train.csv`, the rest `synth_test.csv`;
    `synth_classes.csv` lists the class names as `epam-data splits` writes them (label,name).
    Deterministic from `seed`; a re-run on the same folder keeps the samples already written (the
    same ones) and adds the rest; other options than the first run's raise ShardError. `heatmaps`
    ("joint", "limb") also stores uint8 volumes on a 56x56 canvas, as extract does. Returns the
    folder.
    """
    from epam_data.shards import ShardWriter, done_ids, write_dataset_json

    out_dir = Path(out_dir)
    names, heatmaps = _check_synth_options(classes, samples, frames, rgb_size, heatmaps)
    options = _synth_options(classes, samples, frames, rgb_size, seed, heatmaps)
    write_dataset_json(out_dir, "synth", options)
    rows, prepared = _plan_synth_samples(names, samples, done_ids(out_dir))
    with ShardWriter(out_dir, samples_per_shard=max(16, -(-samples // 4))) as writer:
        for index, label, name in sorted(prepared):
            writer.write(
                synth_sample(
                    index,
                    label,
                    name,
                    frames=frames,
                    rgb_size=rgb_size,
                    seed=seed,
                    heatmaps=heatmaps,
                )
            )
    _write_synth_manifests(out_dir, names, rows)
    return out_dir
