"""Pictures of one prepared sample: the RGB crop with its skeleton next to its joint and limb
heatmap volumes.

A user who wants to know what EPAM-Net is fed looks at three panels per frame, all on the same
square: the RGB crop the RGB stream reads (the JPEG stored in the shard, cut to `crop_box`), with
the COCO-17 skeleton drawn where its keypoints land in that crop, and the pose stream's joint and
limb volumes (max over channels, through a colour map). A wrong crop box, a keypoint offset, swapped
axes or a left/right mix-up shows at a glance: the skeleton leaves the person, the heat leaves the
skeleton, or the colours of the two sides swap. `render_sample` writes either a PNG contact sheet (a
few evenly spaced frames, one row each: RGB + skeleton | joints | limbs) or a GIF with every frame
(`epam-data render`).

Keypoints map into a panel of side P exactly as docs/shard-schema.md 4 maps them into the crop,
(kp - (x1, y1)) * P / (x2 - x1), and onto the heatmap canvas of side S as (kp - (x1, y1)) * S /
(x2 - x1) before `heatmaps.render` (PoseC3D's maths). Volumes stored in the shard (uint8, 255 = 1.0)
are shown as stored when present, on the assumption that they were rendered on the same crop box
(they fill the square panel whatever their size). Pillow decodes the JPEGs, draws and writes the
files; everything else is numpy, and every function returns new arrays without touching its inputs.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from epam_data.errors import EpamError, ShardError
from epam_data.heatmaps import COCO17_JOINT_NAMES, COCO_LIMBS, LimbsArg, compact_box, render
from epam_data.shards import PreparedSample, ShardReader

__all__ = [
    "CENTRE_COLOUR",
    "LEFT_COLOUR",
    "RIGHT_COLOUR",
    "HeatmapSource",
    "RenderReport",
    "SheetLayout",
    "colourize",
    "compose_picture",
    "decode_jpegs",
    "draw_skeleton",
    "frame_positions",
    "joint_colours",
    "pose_planes",
    "render_dataset_sample",
    "render_pictures",
    "render_sample",
    "to_canvas",
    "view_box",
    "write_gif",
    "write_png",
]

HeatmapSource = Literal["auto", "stored", "rendered"]

# Skeleton colours by side of the body (the person's own left and right, COCO order: odd joints are
# left). Blue and orange stay apart for the common colour-vision deficiencies; green marks the
# midline.
LEFT_COLOUR = (40, 150, 255)
RIGHT_COLOUR = (255, 140, 0)
CENTRE_COLOUR = (60, 220, 90)
OUTLINE_COLOUR = (
    0,
    0,
    0,
)  # a dark rim keeps the skeleton readable on bright and on busy backgrounds
BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (235, 235, 235)
NOTE_COLOUR = (255, 210, 80)
DEFAULT_SHEET_FRAMES = 4
DEFAULT_GIF_FPS = 10.0  # when the sample does not know its frame rate
# a GIF shows at most this many frames unless --frames asks for more (~0.6 MB each in memory)
MAX_GIF_FRAMES = 300
# The "inferno" colour map (matplotlib's, sampled at 9 points, linearly interpolated): dark at 0,
# light at 1, and perceptually ordered, so heat reads the same in colour and in grey and a weak limb
# stays visible.
_INFERNO_ANCHORS = np.array(
    [
        (0, 0, 4),
        (31, 12, 72),
        (85, 15, 109),
        (136, 34, 106),
        (186, 54, 85),
        (227, 89, 51),
        (249, 140, 10),
        (249, 201, 50),
        (252, 255, 164),
    ],
    dtype=np.float64,
)
INFERNO_LUT = (
    np.stack(
        [
            np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_INFERNO_ANCHORS)), channel)
            for channel in _INFERNO_ANCHORS.T
        ],
        axis=1,
    )
    .round()
    .astype(np.uint8)
)  # [256, 3]


@dataclass(frozen=True)
class SheetLayout:
    """Where things sit in a picture: a header band, then rows of (caption band, three square
    panels).

    All sizes in pixels. A GIF frame is a picture with one row; a contact sheet has one row per
    frame shown. Tests and callers find panel pixels through `origin`, the compositor places them
    with it.
    """

    panel: int = 256
    gap: int = 6
    header_height: int = 44
    caption_height: int = 20
    columns: int = 3

    def size(self, rows: int) -> tuple[int, int]:
        """(width, height) of a picture with `rows` rows."""
        width = self.columns * self.panel + (self.columns + 1) * self.gap
        return width, self.header_height + rows * (self.caption_height + self.panel + self.gap)

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of a panel."""
        x = self.gap + column * (self.panel + self.gap)
        y = (
            self.header_height
            + row * (self.caption_height + self.panel + self.gap)
            + self.caption_height
        )
        return x, y


@dataclass(frozen=True)
class RenderReport:
    """What `render_sample` wrote: the file, which kept frames it shows and where the volumes came
    from."""

    path: Path
    sample_id: str
    frames: tuple[int, ...]  # source-video frame index of each frame shown
    heatmaps: str  # e.g. "rendered on 56x56, sigma 0.6" or "stored 56x56 (uint8)"
    layout: SheetLayout
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# Small pieces: frames, geometry, colours
# --------------------------------------------------------------------------------------------------


def decode_jpegs(jpegs: Sequence[bytes], *, where: str = "rgb") -> list[np.ndarray]:
    """JPEG bytes (as stored in a shard's `rgb`) -> uint8 [H, W, 3] RGB images, one per frame.

    A frame that does not decode raises ShardError naming it (`where` says whose frames these are):
    a damaged shard is the user's to fix, by extracting the sample again.
    """
    images = []
    for position, data in enumerate(jpegs):
        try:
            with Image.open(io.BytesIO(data)) as image:
                images.append(np.asarray(image.convert("RGB")))
        except (
            OSError,
            ValueError,
        ) as err:  # UnidentifiedImageError is an OSError; truncated data too
            raise ShardError(
                f"{where}: frame {position} is not a decodable JPEG ({err}); extract the sample "
                "again or render it with its pose only"
            ) from err
    return images


def frame_positions(num_frames: int, count: int | None) -> np.ndarray:
    """`count` evenly spaced positions in 0..num_frames-1, first and last included (all frames for
    None).

    Fewer come back when the sample has fewer frames than asked; never a repeat.
    """
    if count is None or count >= num_frames:
        return np.arange(num_frames)
    if count < 1:
        raise EpamError(f"--frames must be at least 1, got {count}")
    return np.unique(np.linspace(0, num_frames - 1, count).round().astype(np.int64))


def view_box(prepared: PreparedSample) -> tuple[float, float, float, float]:
    """The box x1, y1, x2, y2 (original pixels) that every panel shows.

    The sample's `crop_box` when it has one (the RGB stream's crop, so skeleton and pixels agree);
    the whole frame when it has RGB but no box; otherwise PoseC3D's PoseCompact box around the
    keypoints (what the pose stream would crop to), so that a pose-only sample still fills the
    panels.
    """
    if prepared.crop_box is not None:
        return prepared.crop_box
    height, width = prepared.original_hw
    if prepared.rgb is not None:
        return 0.0, 0.0, float(width), float(height)
    seen = np.where((prepared.scores > 0)[..., None], prepared.keypoints, 0)
    box = compact_box(seen, (height, width))
    return float(box.x0), float(box.y0), float(box.x1), float(box.y1)


def to_canvas(
    keypoints: np.ndarray, box: Sequence[float], canvas_hw: tuple[int, int]
) -> np.ndarray:
    """Keypoints [..., 2] in original pixels -> pixels of a canvas of (H, W) showing `box`; a new
    float32 array.

    (kp - (x1, y1)) * (W / (x2 - x1), H / (y2 - y1)): the crop mapping of docs/shard-schema.md 4,
    for the crop resized to any size (the RGB panel, the heatmap canvas). Pixel centres sit at
    integers, as in `heatmaps.render`.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    scale = np.array([canvas_hw[1] / (x2 - x1), canvas_hw[0] / (y2 - y1)], dtype=np.float64)
    return ((np.asarray(keypoints, dtype=np.float64) - (x1, y1)) * scale).astype(np.float32)


def joint_colours(num_joints: int = len(COCO17_JOINT_NAMES)) -> list[tuple[int, int, int]]:
    """Colour of each joint: the person's left side, right side, or midline (by its COCO-17
    name)."""
    colours = []
    for name in COCO17_JOINT_NAMES[:num_joints]:
        side = (
            LEFT_COLOUR
            if name.startswith("left_")
            else RIGHT_COLOUR
            if name.startswith("right_")
            else None
        )
        colours.append(side or CENTRE_COLOUR)
    return colours + [CENTRE_COLOUR] * (num_joints - len(colours))


def _limb_colour(i: int, j: int, colours: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    """A limb takes its side when its joints are on one side (or one side and the midline), else the
    midline."""
    sides = {colours[i], colours[j]} - {CENTRE_COLOUR}
    return sides.pop() if len(sides) == 1 else CENTRE_COLOUR


def colourize(plane: np.ndarray, size: int) -> np.ndarray:
    """A heatmap plane [S, S] with values in [0, 1] -> uint8 [size, size, 3] through the inferno
    colour map.

    Upsampled by nearest neighbour with canvas pixel centres at integers (panel pixel p shows canvas
    pixel round(p * S / size)), the convention `to_canvas` and `heatmaps.render` use: a joint's peak
    then sits under the joint drawn on the RGB panel, not half a canvas pixel away from it.
    """
    height, width = plane.shape
    rows = np.clip(np.rint(np.arange(size) * height / size), 0, height - 1).astype(np.int64)
    cols = np.clip(np.rint(np.arange(size) * width / size), 0, width - 1).astype(np.int64)
    levels = np.rint(np.clip(np.nan_to_num(plane, nan=0.0), 0.0, 1.0) * 255).astype(np.int64)
    return INFERNO_LUT[levels[rows[:, None], cols[None, :]]]


def pose_planes(
    keypoints: np.ndarray,
    scores: np.ndarray,
    canvas_size: int,
    *,
    sigma: float = 0.6,
    limbs: LimbsArg = COCO_LIMBS,
) -> tuple[np.ndarray, np.ndarray]:
    """Joint and limb volumes of canvas keypoints [M, T, V, 2], each reduced to float32 [T, S, S] by
    a max over channels: one picture per frame of everything the pose stream sees, every person and
    joint at once."""
    canvas_hw = (canvas_size, canvas_size)
    scores = np.asarray(scores, dtype=np.float32)
    joints = render(keypoints, scores, canvas_hw, kind="joint", sigma=sigma).max(
        axis=1, initial=0.0
    )
    limb_planes = render(keypoints, scores, canvas_hw, kind="limb", sigma=sigma, limbs=limbs).max(
        axis=1, initial=0.0
    )
    return joints, limb_planes


def draw_skeleton(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    *,
    min_score: float = 0.3,
    limbs: LimbsArg = COCO_LIMBS,
    radius: int | None = None,
    width: int | None = None,
    label_persons: bool = True,
) -> np.ndarray:
    """A copy of `image` (uint8 [H, W, 3]) with each person's skeleton drawn on it.

    keypoints: [M, V, 2] in the image's pixels; scores: [M, V]. Only joints with a finite position
    and score >= min_score are drawn, and limbs between two such joints. Limbs go under joints and
    every person's limbs under every joint, so a drawn joint's centre pixel shows its side colour
    (`joint_colours`) unless another joint's dot lies within a radius of it. With `label_persons`,
    the person's index is written above its highest joint (to use with --person).
    """
    height, width_px = image.shape[:2]
    radius = max(3, min(height, width_px) // 64) if radius is None else radius
    width = max(2, min(height, width_px) // 128) if width is None else width
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(picture)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    visible = np.isfinite(keypoints).all(axis=-1) & (
        np.asarray(scores, dtype=np.float32) >= min_score
    )
    colours = joint_colours(keypoints.shape[1])
    pairs = getattr(limbs, "limbs", limbs)  # a LimbSet or a plain list of joint pairs
    _draw_limbs(draw, keypoints, visible, pairs, colours, width=width)
    _draw_joints(draw, keypoints, visible, colours, radius=radius)
    if label_persons:
        _label_persons(draw, keypoints, visible, radius=radius)
    return np.asarray(picture)


def _draw_limbs(
    draw: ImageDraw.ImageDraw,
    keypoints: np.ndarray,
    visible: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    colours: Sequence[tuple[int, int, int]],
    *,
    width: int,
) -> None:
    """Every person's outlined limbs between two visible joints; drawn first, so that no limb
    covers a joint."""
    for person in range(keypoints.shape[0]):
        for i, j in pairs:
            if visible[person, i] and visible[person, j]:
                segment = [tuple(keypoints[person, i]), tuple(keypoints[person, j])]
                draw.line(segment, fill=OUTLINE_COLOUR, width=width + 2)
                draw.line(segment, fill=_limb_colour(i, j, colours), width=width)


def _draw_joints(
    draw: ImageDraw.ImageDraw,
    keypoints: np.ndarray,
    visible: np.ndarray,
    colours: Sequence[tuple[int, int, int]],
    *,
    radius: int,
) -> None:
    """Every person's visible joints as outlined dots in their side colour, over all the limbs."""
    for person in range(keypoints.shape[0]):
        for joint in np.flatnonzero(visible[person]):
            x, y = keypoints[person, joint]
            draw.ellipse(
                (x - radius - 1, y - radius - 1, x + radius + 1, y + radius + 1),
                fill=OUTLINE_COLOUR,
            )
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colours[joint])


def _label_persons(
    draw: ImageDraw.ImageDraw, keypoints: np.ndarray, visible: np.ndarray, *, radius: int
) -> None:
    """ "P<index>" above each drawn person's highest joint, so that --person can name it."""
    font = _font(max(10, radius * 3))
    for person in range(keypoints.shape[0]):
        if visible[person].any():
            points = keypoints[person][visible[person]]
            top = points[np.argmin(points[:, 1])]
            anchor_y = max(0.0, top[1] - 2 * radius - 2)
            draw.text(
                (top[0], anchor_y),
                f"P{person}",
                fill=TEXT_COLOUR,
                font=font,
                anchor="mb",
                stroke_width=2,
                stroke_fill=OUTLINE_COLOUR,
            )


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _blank_panel(size: int) -> np.ndarray:
    """The RGB panel of a sample stored without RGB: dark grey, saying so in its corner."""
    picture = Image.new("RGB", (size, size), (40, 40, 40))
    ImageDraw.Draw(picture).text(
        (6, 4),
        "no RGB stored\n(extract --no-rgb)",
        fill=NOTE_COLOUR,
        font=_font(max(10, size // 20)),
    )
    return np.asarray(picture)


def _resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """The decoded crop stretched to a size x size panel (bilinear; the crop is square by
    construction)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


# --------------------------------------------------------------------------------------------------
# Composition and files
# --------------------------------------------------------------------------------------------------


def compose_picture(
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    *,
    title: str,
    headings: Sequence[str],
    layout: SheetLayout,
    notes: Sequence[str] = (),
) -> np.ndarray:
    """Panels (uint8 [P, P, 3] each, `layout.columns` per row) laid out under a header -> uint8 [H,
    W, 3].

    The header holds the title and, over each column, its heading; each row has its caption above
    it. Notes (e.g. "no RGB stored") go in the header, right of the title, in yellow.
    """
    if len(rows) != len(captions):
        raise ValueError(f"{len(rows)} rows but {len(captions)} captions")
    width, height = layout.size(len(rows))
    picture = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    title_font, text_font = _font(15), _font(13)
    draw.text((layout.gap, 4), title, fill=TEXT_COLOUR, font=title_font)
    if notes:
        left = layout.gap + draw.textlength(title, font=title_font) + 3 * layout.gap
        draw.text(
            (left, 5),
            _fit("; ".join(notes), width - left - layout.gap, draw, text_font),
            fill=NOTE_COLOUR,
            font=text_font,
        )
    for column, heading in enumerate(headings):
        x = layout.origin(0, column)[0]
        bar = (
            column > 0 and layout.panel >= 160
        )  # heat columns get a colour bar: 0 at its left end, 1 at its right
        room = layout.panel - (76 if bar else 0)
        draw.text(
            (x, layout.header_height - 18),
            _fit(heading, room, draw, text_font),
            fill=TEXT_COLOUR,
            font=text_font,
        )
        if bar:
            _colour_bar(
                picture, draw, (x + layout.panel - 64, layout.header_height - 15), text_font
            )
    for row, (panels, caption) in enumerate(zip(rows, captions)):
        x, y = layout.origin(row, 0)
        draw.text((x, y - layout.caption_height + 3), caption, fill=TEXT_COLOUR, font=text_font)
        for column, panel in enumerate(panels):
            if panel.shape != (layout.panel, layout.panel, 3):
                raise ValueError(
                    f"panel {row},{column} is {panel.shape}, expected ({layout.panel}, "
                    f"{layout.panel}, 3)"
                )
            picture.paste(Image.fromarray(panel), layout.origin(row, column))
    return np.asarray(picture)


def _fit(
    text: str,
    room: float,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> str:
    """The text, cut with an ellipsis so that it fits `room` pixels (a long note must not run off
    the picture)."""
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + "…", font=font) > room:
        text = text[:-1]
    return text + "…" if text else ""


def _colour_bar(
    picture: Image.Image,
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    """A 48 x 8 strip of the colour map from 0 to 1, labelled at both ends, so panel colours read as
    values."""
    x, y = xy
    strip = np.repeat(
        INFERNO_LUT[np.linspace(0, 255, 48).round().astype(np.int64)][None], 8, axis=0
    )
    draw.text((x - 2, y + 4), "0", fill=TEXT_COLOUR, font=font, anchor="rm")
    picture.paste(Image.fromarray(strip), (x, y))
    draw.text((x + 50, y + 4), "1", fill=TEXT_COLOUR, font=font, anchor="lm")


def write_png(picture: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 [H, W, 3] picture as PNG (lossless: the skeleton keeps its exact colours)."""
    path = Path(path)
    Image.fromarray(picture).save(path, format="PNG", optimize=False)
    return path


def write_gif(pictures: Sequence[np.ndarray], path: str | Path, *, fps: float) -> Path:
    """Write uint8 [H, W, 3] pictures as a looping GIF at `fps` frames per second.

    GIF frames have 256 colours each (adaptive palette per frame) and a delay in hundredths of a
    second, so the rate is rounded to what GIF can say; every picture stays a frame (captions differ
    per frame, so Pillow's merging of identical neighbours does not drop any).
    """
    if not pictures:
        raise ValueError("no pictures to write")
    if not (math.isfinite(fps) and fps > 0):
        raise EpamError(f"--fps must be a positive number of frames per second, got {fps}")
    path = Path(path)
    frames = [
        Image.fromarray(picture).quantize(256, method=Image.Quantize.MEDIANCUT)
        for picture in pictures
    ]
    delay_ms = max(20, round(100 / fps) * 10)  # most viewers treat delays under 20 ms as 100 ms
    frames[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=delay_ms,
        loop=0,
        disposal=1,
        optimize=False,
    )
    return path


# --------------------------------------------------------------------------------------------------
# The panels of a sample
# --------------------------------------------------------------------------------------------------


def _volumes(
    prepared: PreparedSample,
    positions: np.ndarray,
    box: Sequence[float],
    *,
    size: int,
    sigma: float,
    person: int | None,
    heatmaps: HeatmapSource,
    limbs: LimbsArg,
) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    """Joint and limb planes [K, S, S] of the frames at `positions` (only those are rendered), where
    they came from, and notes for the user."""
    stored = [prepared.joint_heatmaps, prepared.limb_heatmaps]
    usable = all(volume is not None and volume.shape[0] == prepared.num_frames for volume in stored)
    notes: list[str] = []
    if heatmaps == "stored" and not usable:
        what = (
            "has no stored volumes"
            if all(v is None for v in stored)
            else "has stored volumes that do not cover both kinds, one per kept frame"
        )
        raise EpamError(f"{prepared.sample_id} {what}; use --heatmaps rendered (or auto)")
    if heatmaps == "stored" and person is not None:
        raise EpamError(
            "stored volumes merge all persons; --person needs --heatmaps rendered (or auto)"
        )
    if usable and heatmaps != "rendered" and person is None:
        joint, limb = (
            volume[positions].max(axis=1).astype(np.float32) / 255.0 for volume in stored
        )
        return joint, limb, f"stored {joint.shape[1]}x{joint.shape[2]} (uint8)", notes
    if heatmaps == "auto" and any(volume is not None for volume in stored):
        notes.append(
            "stored volumes not shown ("
            + ("--person" if person is not None and usable else "not one per kept frame")
            + "); rendered instead"
        )
    persons = slice(None) if person is None else slice(person, person + 1)
    keypoints, scores = (
        prepared.keypoints[persons][:, positions],
        prepared.scores[persons][:, positions],
    )
    joint, limb = pose_planes(
        to_canvas(keypoints, box, (size, size)), scores, size, sigma=sigma, limbs=limbs
    )
    return joint, limb, f"rendered on {size}x{size}, sigma {sigma:g}", notes


def _caption(prepared: PreparedSample, t: int) -> str:
    """Which frame a row shows, by its index in the source video: true also when only some frames
    were read."""
    source = int(prepared.frame_indices[t])
    seconds = f" ({source / prepared.fps:.2f} s)" if prepared.fps > 0 else ""
    return f"source frame {source} of {prepared.total_frames}{seconds}"


def _title(prepared: PreparedSample, person: int | None) -> str:
    label = prepared.sample.label_name or (
        f"label {prepared.sample.label}" if prepared.sample.label is not None else ""
    )
    who = (
        f"person {person} of {prepared.num_persons}"
        if person is not None
        else f"{prepared.num_persons} person(s)"
    )
    return " · ".join(part for part in (prepared.sample_id, label, who) if part)


def _frames_shown(num_frames: int, frames: int | None, kind: str) -> tuple[int | None, list[str]]:
    """How many frames to show (None: all) and a note when a long GIF is thinned by default."""
    if frames is not None:
        return frames, []
    if kind == ".png":
        return DEFAULT_SHEET_FRAMES, []
    if num_frames > MAX_GIF_FRAMES:
        return MAX_GIF_FRAMES, [
            (
                f"{MAX_GIF_FRAMES} of {num_frames} frames, evenly spaced (--frames {num_frames} "
                "for all)"
            )
        ]
    return None, []


def _check_picture_options(
    prepared: PreparedSample, *, size: int, sigma: float, person: int | None, heatmaps: str
) -> None:
    """Refuse options `render_pictures` cannot draw with, naming the command-line flag at fault."""
    if not (isinstance(size, int) and size >= 4):
        raise EpamError(f"--size must be a heatmap canvas of at least 4 pixels, got {size}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise EpamError(
            f"--sigma must be a positive number of canvas pixels (PoseC3D uses 0.6), got {sigma}"
        )
    if person is not None and not 0 <= person < prepared.num_persons:
        raise EpamError(
            f"{prepared.sample_id} has {prepared.num_persons} person(s) "
            f"(0..{prepared.num_persons - 1}); --person {person} is not one of them"
        )
    if heatmaps not in ("auto", "stored", "rendered"):
        raise EpamError(f"--heatmaps must be auto, stored or rendered, got {heatmaps!r}")


def _rgb_images(
    prepared: PreparedSample, positions: np.ndarray, notes: list[str]
) -> list[np.ndarray] | None:
    """The decoded RGB crops at `positions`, or None (and a note) for a sample stored without RGB,
    which then gets its skeleton on a dark panel."""
    if prepared.rgb is None:
        notes.append("no RGB stored (extract --no-rgb)")
        return None
    return decode_jpegs(
        [prepared.rgb[int(t)] for t in positions], where=f"{prepared.sample_id} rgb"
    )


def render_pictures(
    prepared: PreparedSample,
    *,
    frames: Sequence[int] | None = None,
    size: int = 56,
    sigma: float = 0.6,
    person: int | None = None,
    min_score: float = 0.3,
    heatmaps: HeatmapSource = "auto",
    layout: SheetLayout = SheetLayout(),
    limbs: LimbsArg = COCO_LIMBS,
) -> tuple[list[list[np.ndarray]], list[str], str, list[str]]:
    """The three panels of each asked frame of a sample, with a caption per frame.

    frames: positions among the kept frames (None: all). Returns (rows of [rgb+skeleton, joints,
    limbs] uint8 [P, P, 3] panels, captions, where the volumes came from, notes). A sample without
    RGB gets the skeleton on a dark panel and a note.
    """
    _check_picture_options(prepared, size=size, sigma=sigma, person=person, heatmaps=heatmaps)
    positions = (
        np.arange(prepared.num_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    )
    box = view_box(prepared)
    joint, limb, source, notes = _volumes(
        prepared,
        positions,
        box,
        size=size,
        sigma=sigma,
        person=person,
        heatmaps=heatmaps,
        limbs=limbs,
    )
    keypoints, scores = prepared.keypoints, prepared.scores.astype(np.float32)
    images = _rgb_images(prepared, positions, notes)
    panel = layout.panel
    panel_keypoints = to_canvas(keypoints, box, (panel, panel))  # [M, T, V, 2] panel pixels
    if (
        person is not None
    ):  # the others stay in the arrays (their indices keep their labels) but are not drawn
        scores = np.where((np.arange(prepared.num_persons) == person)[:, None, None], scores, -1.0)
    rows, captions = [], []
    for k, t in enumerate(positions):
        t = int(t)
        base = _blank_panel(panel) if images is None else _resize_rgb(images[k], panel)
        rgb = draw_skeleton(
            base, panel_keypoints[:, t], scores[:, t], min_score=min_score, limbs=limbs
        )
        rows.append([rgb, colourize(joint[k], panel), colourize(limb[k], panel)])
        captions.append(_caption(prepared, t))
    return rows, captions, source, notes


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def _panel_headings(
    prepared: PreparedSample, source: str, min_score: float
) -> tuple[str, str, str]:
    """The three column headings; the volumes' channel counts come from wherever they were taken
    (the shard's stored volumes or the keypoints rendered here), so the heading says what is
    maxed."""
    if source.startswith("stored"):
        joint, limb = prepared.joint_heatmaps, prepared.limb_heatmaps
        channels = (joint.shape[1], limb.shape[1])  # type: ignore[union-attr]
    else:
        channels = (prepared.keypoints.shape[2], len(COCO_LIMBS))
    return (
        f"RGB crop + skeleton (score >= {min_score:g})",
        f"joints: max of {channels[0]} channels",
        f"limbs: max of {channels[1]} channels",
    )


def _real_time_fps(prepared: PreparedSample, positions: np.ndarray) -> float:
    """The GIF rate that plays the frames shown in real time: the source rate over their median
    spacing in source frames (DEFAULT_GIF_FPS when the sample does not know its rate)."""
    shown = prepared.frame_indices[positions]
    stride = float(np.median(np.diff(shown))) if shown.size > 1 else 1.0
    return prepared.fps / max(stride, 1.0) if prepared.fps > 0 else DEFAULT_GIF_FPS


def _picture_kind(path: Path, panel: int) -> str:
    """The picture's kind (".png" or ".gif", from its suffix), once the path and the panel side
    are known to be drawable, so that a bad option fails before any rendering."""
    kind = path.suffix.lower()
    if kind not in (".png", ".gif"):
        raise EpamError(f"{path}: the picture must end in .png (contact sheet) or .gif (animation)")
    if not (isinstance(panel, int) and panel >= 32):
        raise EpamError(f"--panel must be at least 32 pixels, got {panel}")
    return kind


def _compose_pictures(
    kind: str,
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    *,
    title: str,
    headings: Sequence[str],
    layout: SheetLayout,
    notes: Sequence[str],
) -> list[np.ndarray]:
    """What gets written: a PNG is one contact sheet with every row; a GIF has one picture per
    frame, each a one-row sheet under the same header."""
    if kind == ".png":
        return [
            compose_picture(
                rows, captions, title=title, headings=headings, layout=layout, notes=notes
            )
        ]
    return [
        compose_picture(
            [row], [caption], title=title, headings=headings, layout=layout, notes=notes
        )
        for row, caption in zip(rows, captions)
    ]


def render_sample(
    prepared: PreparedSample,
    path: str | Path,
    *,
    frames: int | None = None,
    fps: float | None = None,
    size: int = 56,
    sigma: float = 0.6,
    person: int | None = None,
    min_score: float = 0.3,
    heatmaps: HeatmapSource = "auto",
    panel: int = 256,
) -> RenderReport:
    """Draw a sample to `path`: a PNG contact sheet or, for a `.gif` path, an animation.

    PNG: `frames` evenly spaced frames (default 4), one row each: RGB + skeleton | joints | limbs.
    GIF: every kept frame (or `frames` evenly spaced ones) at `fps` (default: the sample's rate
    divided by its frame stride, so it plays in real time). size and sigma shape rendered volumes
    (stored ones are shown as stored unless heatmaps="rendered"); `person` draws one person only;
    joints under `min_score` are left off the skeleton (the volumes weigh them by score anyway).
    `panel` is each panel's side.
    """
    path = Path(path)
    kind = _picture_kind(path, panel)
    count, thinned = _frames_shown(prepared.num_frames, frames, kind)
    positions = frame_positions(prepared.num_frames, count)
    layout = SheetLayout(panel=panel)
    rows, captions, source, notes = render_pictures(
        prepared,
        frames=positions,
        size=size,
        sigma=sigma,
        person=person,
        min_score=min_score,
        heatmaps=heatmaps,
        layout=layout,
    )
    notes = thinned + notes
    headings = _panel_headings(prepared, source, min_score)
    title = f"{_title(prepared, person)} · heatmaps {source}"
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = _compose_pictures(
        kind, rows, captions, title=title, headings=headings, layout=layout, notes=notes
    )
    if kind == ".png":
        write_png(pictures[0], path)
    else:
        if fps is None:
            fps = _real_time_fps(prepared, positions)
        write_gif(pictures, path, fps=fps)
    return RenderReport(
        path=path,
        sample_id=prepared.sample_id,
        frames=tuple(int(f) for f in prepared.frame_indices[positions]),
        heatmaps=source,
        layout=layout,
        notes=tuple(notes),
    )


def _unknown_sample(reader: ShardReader, sample_id: str) -> ShardError:
    ids = list(reader)
    if not ids:
        return ShardError(
            f"{reader.out_dir}: index.csv lists no samples; run `epam-data extract` first"
        )
    close = difflib.get_close_matches(sample_id, ids, n=3, cutoff=0.6)
    examples = close or ids[:5]
    more = f" (of {len(ids)})" if len(ids) > len(examples) else ""
    which = "closest" if close else "e.g."
    return ShardError(
        f"{sample_id!r} is not in {reader.out_dir / 'index.csv'}; {which}{more}: "
        f"{', '.join(examples)}"
    )


def render_dataset_sample(
    out_dir: str | Path,
    sample_id: str,
    path: str | Path,
    *,
    frames: int | None = None,
    **options: object,
) -> RenderReport:
    """`render_sample` on one sample of a prepared dataset folder, reading only the frames it shows.

    An unknown id raises ShardError naming the closest ids that exist (or a few, when none is
    close). options: those of `render_sample` (fps, size, sigma, person, min_score, heatmaps,
    panel).
    """
    with ShardReader(out_dir) as reader:
        if sample_id not in reader:
            raise _unknown_sample(reader, sample_id)
        kind = Path(path).suffix.lower()
        total = int(
            next(row["frames"] for row in reader.rows if row["sample_id"] == sample_id) or 0
        )
        count, thinned = _frames_shown(total, frames, kind)
        positions = frame_positions(total, count) if total else None
        if positions is not None and len(positions) == total:
            positions = None  # all frames: one plain read
        try:
            prepared = reader.read(sample_id, frames=positions)
        except (
            ValueError
        ):  # stored volumes with another frame count cannot be sliced: leave them out
            prepared = reader.read(sample_id, frames=positions, heatmaps=False)
    # The frames were picked while reading, so the renderer shows every frame read; captions and the
    # GIF's rate come from their source frame indices, which a partial read keeps.
    report = render_sample(
        prepared, path, frames=None if positions is None else len(positions), **options
    )  # type: ignore[arg-type]
    return dataclasses.replace(report, notes=(*thinned, *report.notes))
