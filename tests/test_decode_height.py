"""`extract --decode-height`: tall videos decoded scaled down (in FFmpeg for video files, with
Pillow for frame folders), the poses, boxes and crop box still in the video's own pixels.

The shared two-player clip is 426 x 240, so these runs decode it at 160 rows (2/3) where a user
would decode 1080p at 540. Measured here against the full-size run: the two players kept in every
frame before 120, matched joints a median 1.6 px apart (2.4 px at 120 rows; the players are about
200 px tall), crop boxes within 3 px. Had the poses stayed in decoded pixels, the joints would sit
a third of the way towards the origin, tens of pixels off."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from epam_data.cli import app
from epam_data.datasets import parse_sample_id
from epam_data.extract import ExtractOptions, VideoSpec, prepare_video
from epam_data.shards import PreparedSample
from epam_data.video import decoded_hw, iter_frames, read_frames

CLIP = "two_players_426x240.mp4"
SAMPLE_ID = "S002C001P003R001A050"  # NTU mutual action: M = 2
FULL_VIEW = 120  # both players are in view before this frame


def _prepare(
    clip: Path,
    decode_height: int | None,
    max_persons: int = 2,
    person_boxes: np.ndarray | None = None,
) -> PreparedSample:
    """Every third frame of the clip through extract's preparation."""
    options = ExtractOptions(max_persons=max_persons, frame_stride=3, decode_height=decode_height)
    sample = parse_sample_id("ntu60", SAMPLE_ID)
    return prepare_video(VideoSpec(sample, str(clip), clip.name, options, person_boxes))


def _matched_distance(a: PreparedSample, b: PreparedSample) -> float:
    """Median distance of the joints both runs are sure of, the persons matched either way."""
    medians = []
    for order in ([0, 1], [1, 0]):
        distance = np.linalg.norm(
            a.keypoints.astype(np.float64) - b.keypoints[order].astype(np.float64), axis=-1
        )
        sure = (a.scores.astype(np.float32) > 0.5) & (b.scores[order].astype(np.float32) > 0.5)
        medians.append(float(np.median(distance[sure])))
    return min(medians)


def test_the_decoded_size() -> None:
    assert decoded_hw((1080, 1920), 540) == (540, 960)
    assert decoded_hw((240, 426), 160) == (160, 284)
    assert decoded_hw((241, 427), 100) == (100, 178)  # width in proportion, even
    assert decoded_hw((240, 426), 240) == decoded_hw((240, 426), None) == (240, 426)


def test_frames_decoded_smaller_look_like_the_frames_resized(
    media_dir: Path, tmp_path: Path
) -> None:
    """FFmpeg's scaling inside decord against Pillow's of the full frames (measured: a mean
    difference of 1.1 of 255), and a frame folder scaled the same way."""
    indices = np.arange(0, 120, 10)
    full = read_frames(media_dir / CLIP, indices)
    expected = np.stack(
        [np.asarray(Image.fromarray(frame).resize((284, 160), Image.BILINEAR)) for frame in full]
    ).astype(np.int16)
    small = np.concatenate(list(iter_frames(media_dir / CLIP, indices, max_height=160)))
    assert small.shape == (len(indices), 160, 284, 3)
    assert np.abs(small - expected).mean() < 3
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(full):
        Image.fromarray(frame).save(folder / f"{index + 1:06d}.png")
    from_folder = np.concatenate(list(iter_frames(folder, chunk_size=5, max_height=160)))
    assert from_folder.shape == small.shape and np.abs(from_folder - expected).mean() < 1


@pytest.fixture(scope="module")
def full(media_dir: Path) -> PreparedSample:
    """The sample decoded at its own size."""
    return _prepare(media_dir / CLIP, None)


def test_poses_and_boxes_stay_in_the_video_pixels(media_dir: Path, full: PreparedSample) -> None:
    small = _prepare(media_dir / CLIP, 160)
    assert small.original_hw == full.original_hw == (240, 426)
    present = (small.scores.astype(np.float32) > 0).any(-1)
    assert present.all(0)[small.frame_indices < FULL_VIEW].mean() >= 0.9
    assert _matched_distance(full, small) < 5.0
    assert np.abs(np.subtract(small.crop_box, full.crop_box)).max() <= 8
    crop = Image.open(io.BytesIO(small.rgb[0]))
    assert crop.size == (256, 256)


def test_the_annotated_start_box_is_moved_onto_the_decoded_frames(
    media_dir: Path, full: PreparedSample
) -> None:
    """A track started from a box in the video's pixels (Penn Action's labels) follows that
    person when the frames are decoded smaller. Measured: without a box the tracker holding one
    person takes the left player at 160 rows; from the right player's box it keeps the right one
    (hips 0.3 px from the full-size run), and from the box left unscaled it finds nobody there."""
    right = int(np.argmax(full.keypoints[:, 0, [11, 12], 0].mean(1)))
    sure = full.scores[right, 0].astype(np.float32) > 0.3
    joints = full.keypoints[right, 0][sure].astype(np.float32)
    box = np.concatenate([joints.min(0), joints.max(0)])
    boxes = np.tile(box, (full.total_frames, 1))
    kept = _prepare(media_dir / CLIP, 160, max_persons=1, person_boxes=boxes)
    hips = kept.keypoints[0, 0, [11, 12]].mean(0)
    assert np.linalg.norm(hips - full.keypoints[right, 0, [11, 12]].mean(0)) < 10


def test_the_cli_records_it_and_a_rerun_must_match(media_dir: Path, tmp_path: Path) -> None:
    videos = tmp_path / "in"
    videos.mkdir()
    shutil.copy(media_dir / CLIP, videos / f"{SAMPLE_ID}_rgb.mp4")
    out = tmp_path / "out"
    args = ["extract", str(videos), "--dataset", "ntu60", "--out", str(out), "--frame-stride", "6"]
    runner = CliRunner()
    done = runner.invoke(app, [*args, "--decode-height", "160"])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "dataset.json").read_text())["options"]["decode_height"] == 160
    other = runner.invoke(app, [*args, "--decode-height", "120"])
    assert other.exit_code != 0 and "decode_height" in other.output
    too_small = runner.invoke(app, [*args, "--decode-height", "8"])
    assert too_small.exit_code != 0 and "--decode-height must be at least 64" in too_small.output


def test_no_scaling_where_the_video_is_not_taller(media_dir: Path, full: PreparedSample) -> None:
    """At the video's height nothing changes: the same sample as without the option."""
    same = _prepare(media_dir / CLIP, 240)
    assert np.array_equal(full.keypoints, same.keypoints) and full.rgb == same.rgb
