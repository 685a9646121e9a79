"""`epam_data.render` and `epam-data render` on real prepared datasets written with ShardWriter.

The main dataset is cut from ../shared/media/two_players_426x240.mp4: 12 real frames cropped to a
square box that leaves the frame at the bottom, JPEG-encoded with Pillow, with COCO-17 keypoints
placed by hand on the two players of frame 0 (read off the frame) and drifting slightly. The checks
look at pixels: the skeleton's colours where the keypoints map in the crop, heat where the joints
are and none elsewhere. One dataset uses synthetic frames (a gradient) and needs no ../shared.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from epam_data.cli import app
from epam_data.errors import EpamError, ShardError
from epam_data.heatmaps import render as render_volume
from epam_data.render import (
    BACKGROUND,
    CENTRE_COLOUR,
    INFERNO_LUT,
    LEFT_COLOUR,
    RIGHT_COLOUR,
    SheetLayout,
    colourize,
    draw_skeleton,
    frame_positions,
    joint_colours,
    pose_planes,
    render_dataset_sample,
    render_sample,
    to_canvas,
)
from epam_data.shards import PreparedSample, ShardWriter
from tests.conftest import ntu_sample

VIDEO = "two_players_426x240.mp4"
FRAMES = 12
CROP_BOX = (
    52.0,
    60.0,
    292.0,
    300.0,
)  # square, 240 px; reaches 60 px below the 240-px frame (zero padded)
RGB_SIZE = 192
PANEL = 192
# Frame 0 of the clip, original pixels (x, y), COCO-17 order. Person 0: the shooter in white, seen
# from behind (her left side is on the image's left); person 1: the player in blue, facing the
# camera (his left is on the image's right).
SHOOTER = [
    (97, 128),
    (94, 126),
    (100, 126),
    (91, 128),
    (103, 128),
    (87, 147),
    (115, 145),
    (83, 167),
    (127, 152),
    (110, 130),
    (127, 135),
    (83, 185),
    (107, 185),
    (88, 210),
    (107, 210),
    (85, 233),
    (105, 233),
]
PLAYER = [
    (252, 122),
    (255, 119),
    (249, 119),
    (258, 121),
    (246, 121),
    (258, 133),
    (237, 133),
    (262, 148),
    (235, 153),
    (263, 163),
    (245, 163),
    (253, 172),
    (237, 172),
    (247, 197),
    (230, 197),
    (238, 225),
    (227, 218),
]
# Joints far enough apart that no other joint's dot covers them at PANEL (shoulders, elbows, wrists,
# hips, knees, ankles).
CHECKED_JOINTS = (5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
runner = CliRunner()


def hand_keypoints(frames: int) -> tuple[np.ndarray, np.ndarray]:
    """keypoints float32 [2, T, 17, 2] and scores float16 [2, T, 17]: the hand-placed poses,
    drifting a little."""
    base = np.array([SHOOTER, PLAYER], dtype=np.float32)  # [2, 17, 2]
    t = np.arange(frames, dtype=np.float32)[None, :, None]
    drift = np.stack([0.5 * t + np.sin(t / 2), 0.2 * t], axis=-1)  # [1, T, 1, 2]
    keypoints = (base[:, None] + drift).astype(np.float32)
    scores = np.full((2, frames, 17), 0.9, dtype=np.float16)
    scores[1, :, 15] = 0.1  # the player's left ankle: below the drawing threshold
    return keypoints, scores


def crop_frame(frame: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The square box cut from a frame (zero outside it), resized to size x size."""
    x1, y1, x2, y2 = (int(v) for v in box)
    canvas = Image.new("RGB", (x2 - x1, y2 - y1))
    canvas.paste(Image.fromarray(frame), (-x1, -y1))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BILINEAR))


def pillow_jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_sample(
    index: int,
    keypoints: np.ndarray,
    scores: np.ndarray,
    crops: list[np.ndarray] | None,
    *,
    heatmaps: tuple[np.ndarray, np.ndarray] | None = None,
    fps: float = 29.97,
    crop_box=CROP_BOX,
    stride: int = 1,
) -> PreparedSample:
    persons, frames = keypoints.shape[:2]
    boxes = np.zeros((persons, frames, 5), np.float32)
    return PreparedSample(
        sample=dataclasses.replace(ntu_sample(index), label_name="shoot ball"),
        keypoints=keypoints,
        scores=scores,
        boxes=boxes,
        frame_indices=np.arange(frames) * stride,
        total_frames=stride * frames,
        original_hw=(240, 426),
        fps=fps,
        rgb=None if crops is None else [pillow_jpeg(crop) for crop in crops],
        crop_box=crop_box,
        joint_heatmaps=None if heatmaps is None else heatmaps[0],
        limb_heatmaps=None if heatmaps is None else heatmaps[1],
    )


def quantised_volumes(
    keypoints: np.ndarray, scores: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    canvas = to_canvas(keypoints, CROP_BOX, (size, size))
    return tuple(
        (render_volume(canvas, scores.astype(np.float32), (size, size), kind=kind) * 255)
        .round()
        .astype(np.uint8)
        for kind in ("joint", "limb")
    )


@pytest.fixture(scope="module")
def basketball(media_dir, tmp_path_factory):
    """A prepared dataset of three samples of the same clip: with RGB, without RGB, with stored
    volumes (64x64)."""
    from epam_data.video import read_frames

    frames = read_frames(media_dir / VIDEO, np.arange(FRAMES))  # the camera barely moves in these
    crops = [crop_frame(frame, CROP_BOX, RGB_SIZE) for frame in frames]
    keypoints, scores = hand_keypoints(FRAMES)
    samples = [
        make_sample(0, keypoints, scores, crops),
        make_sample(1, keypoints, scores, None),
        make_sample(2, keypoints, scores, crops, heatmaps=quantised_volumes(keypoints, scores, 64)),
    ]
    out = tmp_path_factory.mktemp("basketball")
    with ShardWriter(out, samples_per_shard=2) as writer:
        for sample in samples:
            writer.write(sample)
    return out, [sample.sample_id for sample in samples], keypoints, scores


def panel_pixel(
    picture: np.ndarray, layout: SheetLayout, row: int, column: int, xy: np.ndarray
) -> np.ndarray:
    x0, y0 = layout.origin(row, column)
    x, y = (round(float(v)) for v in xy)
    return picture[y0 + y, x0 + x].astype(int)


def panel_max_near(
    picture: np.ndarray, layout: SheetLayout, row: int, column: int, xy: np.ndarray, reach: int
) -> int:
    """Brightest pixel (sum of channels) within `reach` panel pixels of xy."""
    x0, y0 = layout.origin(row, column)
    x, y = (round(float(v)) for v in xy)
    window = picture[
        y0 + max(0, y - reach) : y0 + y + reach + 1, x0 + max(0, x - reach) : x0 + x + reach + 1
    ]
    return int(window.astype(int).sum(axis=-1).max())


def check_skeleton_and_heat(picture, layout, row, keypoints, scores, t, *, tolerance=0):
    """Joint colours at the mapped joints of frame t, heat there, darkness in the panel corners."""
    mapped = to_canvas(keypoints[:, t], CROP_BOX, (layout.panel, layout.panel))  # [M, 17, 2]
    colours = joint_colours()
    for person in range(keypoints.shape[0]):
        for joint in CHECKED_JOINTS:
            if scores[person, t, joint] < 0.3:
                continue
            got = panel_pixel(picture, layout, row, 0, mapped[person, joint])
            assert np.abs(got - colours[joint]).max() <= tolerance, (
                person,
                joint,
                got,
                colours[joint],
            )
            for column in (
                1,
                2,
            ):  # joints panel, limbs panel: bright at the joint (a limb ends at every joint here)
                assert (
                    panel_max_near(
                        picture, layout, row, column, mapped[person, joint], layout.panel // 56 + 1
                    )
                    > 280
                ), (
                    person,
                    joint,
                    column,
                )  # inferno at 0.4: the peak of a joint between canvas pixels
    between = to_canvas(
        np.array([170.0, 150.0]), CROP_BOX, (layout.panel, layout.panel)
    )  # open court
    for column in (1, 2):
        assert panel_max_near(picture, layout, row, column, between, 8) < 3 * 20 + tolerance * 3
        for corner in (
            (2, 2),
            (layout.panel - 3, 2),
            (2, layout.panel - 3),
            (layout.panel - 3, layout.panel - 3),
        ):
            assert (
                panel_pixel(picture, layout, row, column, np.array(corner)).sum()
                < 3 * 20 + tolerance * 3
            )


def test_png_contact_sheet_shows_the_skeleton_where_the_keypoints_map(basketball, tmp_path):
    out, ids, keypoints, scores = basketball
    report = render_dataset_sample(out, ids[0], tmp_path / "sheet.png", frames=3, panel=PANEL)
    assert report.frames == (0, 6, 11)  # evenly spaced, first and last included
    assert report.heatmaps.startswith("rendered on 56x56") and not report.notes
    with Image.open(report.path) as image:
        assert image.format == "PNG" and image.size == report.layout.size(3)
        picture = np.asarray(image.convert("RGB"))
    for row, t in enumerate((0, 6, 11)):
        check_skeleton_and_heat(picture, report.layout, row, keypoints, scores, t)
    # the player's left ankle (score 0.1) is not drawn: its pixel keeps the photo's colour, not a
    # joint colour
    ankle = to_canvas(keypoints[1, 0, 15], CROP_BOX, (PANEL, PANEL))
    assert tuple(panel_pixel(picture, report.layout, 0, 0, ankle)) not in (
        LEFT_COLOUR,
        RIGHT_COLOUR,
        CENTRE_COLOUR,
    )
    # below the frame the crop is zero-padded: the RGB panel is black there, as the model sees it
    assert panel_pixel(picture, report.layout, 0, 0, np.array([PANEL // 2, PANEL - 4])).max() < 30


def test_gif_has_every_frame_at_the_expected_size(basketball, tmp_path):
    out, ids, keypoints, scores = basketball
    report = render_dataset_sample(out, ids[0], tmp_path / "clip.gif", panel=PANEL)
    assert report.frames == tuple(range(FRAMES))
    with Image.open(report.path) as image:
        assert (
            image.format == "GIF"
            and image.n_frames == FRAMES
            and image.size == report.layout.size(1)
        )
        assert (
            image.info["loop"] == 0 and image.info["duration"] == 30
        )  # 29.97 fps, rounded to hundredths of a second
        image.seek(5)
        picture = np.asarray(image.convert("RGB"))
    check_skeleton_and_heat(
        picture, report.layout, 0, keypoints, scores, 5, tolerance=40
    )  # 256-colour palette


def test_sample_without_rgb_still_shows_its_pose(basketball, tmp_path):
    out, ids, keypoints, scores = basketball
    report = render_dataset_sample(out, ids[1], tmp_path / "pose.png", frames=2, panel=PANEL)
    assert any("no RGB" in note for note in report.notes)
    with Image.open(report.path) as image:
        picture = np.asarray(image.convert("RGB"))
    for row, t in enumerate((0, 11)):
        check_skeleton_and_heat(picture, report.layout, row, keypoints, scores, t)


def test_stored_volumes_are_shown_and_person_filter_renders(basketball, tmp_path):
    out, ids, keypoints, scores = basketball
    report = render_dataset_sample(out, ids[2], tmp_path / "stored.png", frames=2, panel=PANEL)
    assert report.heatmaps == "stored 64x64 (uint8)"
    with Image.open(report.path) as image:
        check_skeleton_and_heat(
            np.asarray(image.convert("RGB")), report.layout, 0, keypoints, scores, 0
        )
    one = render_dataset_sample(out, ids[2], tmp_path / "one.png", frames=1, panel=PANEL, person=1)
    assert one.heatmaps.startswith("rendered") and any("--person" in note for note in one.notes)
    with Image.open(one.path) as image:
        picture = np.asarray(image.convert("RGB"))
    shooter, player = (to_canvas(keypoints[m, 0, 5], CROP_BOX, (PANEL, PANEL)) for m in (0, 1))
    assert tuple(panel_pixel(picture, one.layout, 0, 0, player)) == LEFT_COLOUR
    assert tuple(panel_pixel(picture, one.layout, 0, 0, shooter)) != LEFT_COLOUR
    assert (
        panel_max_near(picture, one.layout, 0, 1, shooter, 4) < 60
    )  # no heat for the other person
    with pytest.raises(EpamError, match="--person 2"):
        render_dataset_sample(out, ids[2], tmp_path / "x.png", person=2)
    with pytest.raises(EpamError, match="no stored volumes"):
        render_dataset_sample(out, ids[0], tmp_path / "x.png", heatmaps="stored")


def test_cli_writes_png_and_gif(basketball, tmp_path):
    out, ids, _, _ = basketball
    for name, args in (
        ("cli.png", ["--frames", "2"]),
        ("cli.gif", ["--frames", "3", "--fps", "5"]),
    ):
        result = runner.invoke(
            app, ["render", str(out), ids[0], "--out", str(tmp_path / name), "--panel", "96", *args]
        )
        assert result.exit_code == 0, result.output
        assert name in result.output
        with Image.open(tmp_path / name) as image:
            assert image.size == SheetLayout(panel=96).size(2 if name.endswith("png") else 1)
            assert getattr(image, "n_frames", 1) == (1 if name.endswith("png") else 3)


def test_unknown_sample_names_ids_that_exist(basketball, tmp_path):
    out, ids, _, _ = basketball
    wrong = ids[0][:-1] + "9"
    with pytest.raises(ShardError, match="not in .*index.csv; closest"):
        render_dataset_sample(out, wrong, tmp_path / "x.png")
    result = runner.invoke(app, ["render", str(out), "nope", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and ids[0] in lines[0], result.output
    assert not (tmp_path / "x.png").exists()
    result = runner.invoke(app, ["render", str(out), ids[0], "--out", str(tmp_path / "x.jpg")])
    assert result.exit_code == 1 and ".png" in result.output and "Traceback" not in result.output


# --- no ../shared needed --------------------------------------------------------------------------


def gradient_sample(frames: int = 6, *, size: int = 128) -> PreparedSample:
    """A synthetic sample: gradient frames, one person standing in the middle of a 256-px crop
    box."""
    y, x = np.mgrid[0:size, 0:size]
    crops = [
        np.stack([x * 2 % 256, y * 2 % 256, np.full_like(x, 40 + 20 * t)], axis=-1).astype(np.uint8)
        for t in range(frames)
    ]
    # Coordinates in the box are multiples of 4, so on a 64-px canvas (256 / 64 = 4) every joint
    # sits on a canvas pixel centre, where its Gaussian peaks at exactly its score.
    figure = np.array(
        [
            (128, 40),
            (124, 36),
            (132, 36),
            (116, 40),
            (140, 40),
            (100, 72),
            (156, 72),
            (88, 112),
            (168, 112),
            (84, 152),
            (172, 152),
            (108, 152),
            (148, 152),
            (104, 196),
            (152, 196),
            (104, 236),
            (152, 236),
        ],
        dtype=np.float32,
    )
    keypoints = (
        figure[None, None] + np.arange(frames, dtype=np.float32)[None, :, None, None] * (4, 0)
    ) + (10, 20)
    scores = np.ones((1, frames, 17), np.float16)
    return make_sample(
        7,
        keypoints.astype(np.float32),
        scores,
        crops,
        crop_box=(10.0, 20.0, 266.0, 276.0),
        fps=25.0,
        stride=2,
    )


def test_render_sample_on_synthetic_frames(tmp_path):
    prepared = gradient_sample()
    report = render_sample(prepared, tmp_path / "gradient.png", frames=2, panel=128, size=64)
    layout = report.layout
    with Image.open(report.path) as image:
        assert image.size == layout.size(2)
        picture = np.asarray(image.convert("RGB"))
    colours = joint_colours()
    for row, t in enumerate((0, 5)):
        mapped = to_canvas(prepared.keypoints[0, t], prepared.crop_box, (128, 128))
        for joint in CHECKED_JOINTS:
            assert tuple(panel_pixel(picture, layout, row, 0, mapped[joint])) == colours[joint]
            for column in (
                1,
                2,
            ):  # the joint's (and its limbs') peak, score 1: the top of the colour map
                assert tuple(panel_pixel(picture, layout, row, column, mapped[joint])) == tuple(
                    INFERNO_LUT[255]
                )
    # between the panels the background shows, so panels never touch
    x_gap = layout.origin(0, 1)[0] - 2
    assert tuple(picture[layout.origin(0, 0)[1] + 10, x_gap]) == BACKGROUND
    gif = render_sample(prepared, tmp_path / "gradient.gif", panel=64)
    with Image.open(gif.path) as image:
        assert image.n_frames == 6 and image.info["duration"] == 80  # 25 fps over a stride of 2


def test_damaged_jpeg_is_one_clear_error(tmp_path):
    prepared = dataclasses.replace(
        gradient_sample(frames=2), rgb=(b"\xff\xd8broken", b"\xff\xd8broken")
    )
    with pytest.raises(ShardError, match="frame 0 is not a decodable JPEG"):
        render_sample(prepared, tmp_path / "broken.png")


def test_long_gif_is_thinned_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr("epam_data.render.MAX_GIF_FRAMES", 4)
    prepared = gradient_sample(frames=10)
    report = render_sample(prepared, tmp_path / "long.gif", panel=64)
    assert report.frames == (0, 6, 12, 18) and "4 of 10 frames" in report.notes[0]
    with Image.open(report.path) as image:
        assert image.n_frames == 4
    assert len(render_sample(prepared, tmp_path / "all.gif", panel=64, frames=10).frames) == 10


def test_draw_skeleton_is_pure_and_skips_low_scores():
    image = np.full((64, 64, 3), 128, np.uint8)
    keypoints = np.zeros((1, 17, 2), np.float32)
    keypoints[0, :, 0] = np.linspace(4, 60, 17).round()
    keypoints[0, :, 1] = 32
    keypoints[0, 9] = (10, 58)  # the left wrist, away from every other joint and limb
    scores = np.ones((1, 17), np.float32)
    scores[0, 9] = 0.2
    drawn = draw_skeleton(
        image, keypoints, scores, min_score=0.3, radius=1, width=1, label_persons=False
    )
    assert (image == 128).all() and drawn is not image
    assert tuple(drawn[32, int(keypoints[0, 5, 0])]) == LEFT_COLOUR
    assert tuple(drawn[32, int(keypoints[0, 6, 0])]) == RIGHT_COLOUR
    assert tuple(drawn[32, int(keypoints[0, 0, 0])]) == CENTRE_COLOUR
    assert tuple(drawn[58, 10]) == (128, 128, 128)  # score 0.2 < 0.3: not drawn, nor its limb
    assert (drawn[40:, :] == 128).all()


def test_pose_planes_peak_under_the_joint_and_colourize_aligns():
    keypoints = np.zeros((1, 1, 17, 2), np.float32)
    keypoints[0, 0, :, 0] = np.arange(17) * 3 + 2
    keypoints[0, 0, :, 1] = 20
    joints, limbs = pose_planes(keypoints, np.ones((1, 1, 17)), 56)
    assert joints.shape == limbs.shape == (1, 56, 56)
    assert joints[0, 20, 2] == pytest.approx(1.0) and joints[0, 40].max() == 0
    panel = colourize(joints[0], 224)  # 4 panel pixels per canvas pixel, centres at 0, 4, 8, ...
    assert tuple(panel[80, 8]) == tuple(INFERNO_LUT[255]) and tuple(panel[0, 0]) == tuple(
        INFERNO_LUT[0]
    )
    assert (
        INFERNO_LUT.astype(int).sum(axis=1)[1:] >= INFERNO_LUT.astype(int).sum(axis=1)[:-1]
    ).all()


def test_frame_positions_are_evenly_spaced():
    assert frame_positions(12, 3).tolist() == [0, 6, 11]
    assert frame_positions(3, 10).tolist() == [0, 1, 2]
    assert frame_positions(5, None).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(EpamError):
        frame_positions(5, 0)
