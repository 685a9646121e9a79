"""Folders of numbered frame images read as videos (epam_data.frame_folder), on real frames.

The frames are the first frames of a shared real clip, decoded with decord and written here as PNG
(lossless: read back, they must equal the decoded video frames exactly) and as JPEG (close), under
unpadded names (`1.png ... 12.png`, which plain string order gets wrong) and Penn Action's
`000001.jpg`. Then: errors for broken folders, `find_videos` and the generic class-folder scan, and
one real `epam-data extract` run over a folder of frames.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from epam_data.cli import app
from epam_data.datasets import scan_generic
from epam_data.errors import VideoDecodeError
from epam_data.extract import find_videos
from epam_data.frame_folder import (
    IMAGE_EXTENSIONS,
    frame_files,
    is_frame_folder,
    probe_frames,
    read_frame_images,
)
from epam_data.pose import PoseBackendError, load_backend
from epam_data.shards import ShardReader
from epam_data.video import iter_frames, probe_video, read_frame_range, read_frames

CLIP = "two_players_426x240.mp4"  # both players in full view over the first 120 frames
CLIP_HW = (240, 426)
NUM_FRAMES = 12
FIRST_FRAME = 30  # a few frames in, where both players are well lit
runner = CliRunner()


def write_frames(folder: Path, frames: np.ndarray, name: str, **save: object) -> Path:
    """frames: uint8 [T, H, W, 3] RGB, saved as `name.format(i)` for i = 1..T (1-based, as the
    datasets number them)."""
    folder.mkdir(parents=True)
    for number, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / name.format(number), **save)
    return folder


def assert_one_line_about(err: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def video_frames(media_dir: Path) -> np.ndarray:
    """uint8 [12, 240, 426, 3]: real frames of the shared clip, as decord decodes them."""
    frames = read_frames(media_dir / CLIP, np.arange(FIRST_FRAME, FIRST_FRAME + NUM_FRAMES))
    assert frames.shape == (NUM_FRAMES, *CLIP_HW, 3)
    return frames


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, video_frames: np.ndarray) -> dict[str, Path]:
    """The same frames as PNG and JPEG folders, unpadded and Penn-style names."""
    root = tmp_path_factory.mktemp("frames")
    return {
        "png": write_frames(root / "png", video_frames, "{}.png"),
        "jpg": write_frames(root / "jpg", video_frames, "{}.jpg", quality=95),
        "penn": write_frames(root / "penn", video_frames, "{:06d}.jpg", quality=95),
    }


# --- reading --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["png", "jpg", "penn"])
def test_probe_counts_the_frames_and_reads_the_size(folders: dict[str, Path], kind: str) -> None:
    for info in (probe_frames(folders[kind]), probe_video(folders[kind])):
        assert (info.num_frames, info.frame_hw, info.fps) == (NUM_FRAMES, CLIP_HW, 0.0)
        assert info.path == str(folders[kind]) and info.declared_frames is None


def test_png_frames_equal_the_decoded_video(folders: dict[str, Path], video_frames: np.ndarray):
    folder = folders["png"]
    frames = read_frames(folder)
    assert frames.dtype == np.uint8 and frames.shape == video_frames.shape
    # lossless, and in natural order (string order would put 10.png, 11.png, 12.png after 1.png)
    np.testing.assert_array_equal(frames, video_frames)
    np.testing.assert_array_equal(read_frames(folder, [11, 2, 2, 0]), video_frames[[11, 2, 2, 0]])
    np.testing.assert_array_equal(read_frame_range(folder, 1, 10, stride=3), video_frames[1:11:3])
    chunks = list(iter_frames(folder, chunk_size=5))
    assert [len(chunk) for chunk in chunks] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), video_frames)
    np.testing.assert_array_equal(read_frame_images(folder, [3]), video_frames[3:4])


@pytest.mark.parametrize("kind", ["jpg", "penn"])
def test_jpeg_frames_are_close_to_the_decoded_video(
    folders: dict[str, Path], video_frames: np.ndarray, kind: str
) -> None:
    frames = read_frames(folders[kind])
    assert frames.dtype == np.uint8 and frames.shape == video_frames.shape
    error = np.abs(frames.astype(np.int16) - video_frames).mean(axis=(1, 2, 3))  # per frame
    assert error.max() < 3, error


def test_natural_order_of_names(tmp_path: Path) -> None:
    names = ["10.jpg", "2.PNG", "1.jpg", "frame_b.bmp", "frame_a.jpeg", "img9.jpg", "img10.jpg"]
    pixel = Image.new("RGB", (4, 2))
    for name in names:
        pixel.save(tmp_path / name, format={"PNG": "PNG", "bmp": "BMP"}.get(name[-3:], "JPEG"))
    (tmp_path / ".3.jpg").write_bytes(b"")  # hidden: skipped
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub").mkdir()
    pixel.save(tmp_path / "sub" / "0.jpg")  # below the folder: not one of its frames
    assert [path.name for path in frame_files(tmp_path)] == [
        "1.jpg",
        "2.PNG",
        "10.jpg",
        "img9.jpg",
        "img10.jpg",
        "frame_a.jpeg",  # no digits: last, by name
        "frame_b.bmp",
    ]
    assert set(IMAGE_EXTENSIONS) == {".jpg", ".jpeg", ".png", ".bmp"}
    assert is_frame_folder(tmp_path) and not is_frame_folder(tmp_path / "notes.txt")
    assert probe_frames(tmp_path).frame_hw == (2, 4)


# --- errors: one line naming the file -------------------------------------------------------------


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no frames here")
    assert not is_frame_folder(tmp_path)
    with pytest.raises(VideoDecodeError) as err:
        frame_files(tmp_path)
    assert_one_line_about(err, tmp_path, "no image files", "re-extract")
    with pytest.raises(VideoDecodeError) as err:  # through the video API: neither file nor frames
        read_frames(tmp_path)
    assert_one_line_about(err, tmp_path, "not a file", "folder of numbered frames")


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda data: data[: len(data) // 2], ["cannot decode frame 4", "truncated"]),
        (lambda data: b"\x89PNG garbage" * 10, ["cannot decode frame 4", "identify"]),
        (lambda data: b"", ["cannot decode frame 4", "empty"]),
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_corrupt_image_names_the_file(folders, tmp_path, damage, words) -> None:
    folder = shutil.copytree(folders["png"], tmp_path / "clip")
    broken = folder / "5.png"  # frame 4 (0-based)
    broken.write_bytes(damage(broken.read_bytes()))
    assert probe_video(folder).num_frames == NUM_FRAMES  # the header of the first frame only
    read_frames(folder, [0, 3, 5])  # the other frames still read
    for call in (read_frames, lambda path: list(iter_frames(path, chunk_size=4))):
        with pytest.raises(VideoDecodeError) as err:
            call(folder)
        assert_one_line_about(err, broken, *words, "re-extract")


def test_corrupt_first_image_fails_the_probe(folders, tmp_path) -> None:
    folder = shutil.copytree(folders["penn"], tmp_path / "clip")
    (folder / "000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError) as err:
        probe_video(folder)
    assert_one_line_about(err, folder / "000001.jpg", "cannot read", "re-extract")


def test_a_frame_of_another_size_is_refused(folders, tmp_path) -> None:
    folder = shutil.copytree(folders["png"], tmp_path / "clip")
    other = folder / "7.png"
    with Image.open(other) as image:
        smaller = image.resize((320, 240))
    smaller.save(other)
    with pytest.raises(VideoDecodeError) as err:
        read_frames(folder)
    assert_one_line_about(err, other, "frame 6 is 320x240", "first frame (1.png) is 426x240")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda path: read_frames(path, [0, 12]), ["frame 12 is outside", "holds 12 frames"]),
        (lambda path: read_frames(path, [-1]), ["frame -1 is outside", "(0-11"]),
        (lambda path: read_frame_range(path, 4, 12), ["frames 4-12", "holds 12 frames (0-11)"]),
        (lambda path: next(iter_frames(path, [1, 99])), ["frame 99 is outside"]),
    ],
    ids=["past-end", "negative", "range", "iter"],
)
def test_index_out_of_range_names_the_folder(folders, call, words) -> None:
    with pytest.raises(VideoDecodeError) as err:
        call(folders["png"])
    assert_one_line_about(err, folders["png"], *words)


# --- finding samples ------------------------------------------------------------------------------


def test_find_videos_returns_frame_folders_with_the_files(folders, tmp_path) -> None:
    root = tmp_path / "in"
    shutil.copytree(folders["penn"], root / "frames" / "0002")
    shutil.copytree(folders["png"], root / "frames" / "0010")
    shutil.copytree(folders["png"], root / "frames" / "0010" / "nested")  # inside a sample: no
    (root / "frames" / "0010" / "extra.mp4").write_bytes(b"")  # inside a sample: no
    shutil.copytree(folders["png"], root / ".cache" / "0003")  # hidden: no
    (root / "frames" / "0004").mkdir()  # empty: no
    (root / "videos").mkdir()
    (root / "videos" / "a.MP4").write_bytes(b"")
    (root / "frames" / "0001.avi").write_bytes(b"")
    (root / "frames" / "link").symlink_to(root / "frames" / "0002", target_is_directory=True)
    assert [path.relative_to(root).as_posix() for path in find_videos(root)] == [
        "frames/0001.avi",
        "frames/0002",
        "frames/0010",
        "frames/link",
        "videos/a.MP4",
    ]


def test_generic_class_folders_take_frame_folders(folders, tmp_path) -> None:
    root = tmp_path / "in"
    shutil.copytree(folders["penn"], root / "walk" / "clip01")
    shutil.copytree(folders["png"], root / "jump" / "clip02")
    (root / "walk" / "b.mp4").write_bytes(b"")
    (root / "jump" / "notes.txt").write_text("not a clip")
    shutil.copytree(folders["png"], root / "jump" / "deep" / "clip03")  # too deep: one rejection
    shutil.copytree(folders["png"], root / "loose")  # frames directly in a class folder: one
    scan = scan_generic(root)
    assert [(s.sample_id, s.label, s.path) for s in scan.samples] == [
        ("jump__clip02", 0, "jump/clip02"),
        ("walk__b", 1, "walk/b.mp4"),
        ("walk__clip01", 1, "walk/clip01"),
    ]
    assert sorted((r.name, "class folder" in r.reason) for r in scan.rejected) == [
        ("jump/deep/clip03", True),
        ("jump/notes.txt", False),
        ("loose", True),
    ]


# --- a real extract run over a folder of frames ---------------------------------------------------


def test_extract_cli_on_a_frame_folder(folders, tmp_path) -> None:
    try:
        load_backend("blazepose")
    except PoseBackendError as err:
        pytest.skip(f"blazepose cannot run here: {err}")
    root = tmp_path / "in"
    shutil.copytree(folders["penn"], root / "tennis" / "0001")
    out = tmp_path / "out"
    args = ["extract", str(root), "--dataset", "generic", "--out", str(out), "--rgb-size", "64"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with open(out / "index.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["sample_id"], row["status"], row["frames"]) for row in rows] == [
        ("tennis__0001", "ok", str(NUM_FRAMES))
    ]
    with ShardReader(out) as reader:
        prepared = reader["tennis__0001"]
    assert prepared.status == "ok" and prepared.num_frames == NUM_FRAMES
    assert prepared.total_frames == NUM_FRAMES and prepared.original_hw == CLIP_HW
    assert prepared.fps == 0.0 and prepared.source == "tennis/0001" and len(prepared.rgb) == 12
    assert (prepared.scores.astype(np.float32) > 0).any(-1).mean() > 0.5  # a person in most frames
