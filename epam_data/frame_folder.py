"""A folder of numbered images read as one video: how Penn Action, JHMDB and others ship clips.

Those datasets ship each clip as `frames/0001/000001.jpg, 000002.jpg, ...` instead of a video file,
so `epam_data.video` hands such a folder here and the rest of the pipeline sees the same `VideoInfo`
and uint8 [T, H, W, 3] RGB frames it gets from decord.

Frames are the image files directly in the folder (hidden files skipped), in natural order of their
names: `2.jpg` before `10.jpg`, so unpadded numbers work as well as Penn's zero-padded ones; names
without a digit come last, by name. Images are decoded with Pillow, one file per frame, only when
asked for; a probe reads the first image's header only. As with videos, every failure is one
`VideoDecodeError` line that names the folder or the image and says what to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from epam_data.errors import VideoDecodeError
from epam_data.video import VideoInfo, check_indices, describe_request

__all__ = [
    "IMAGE_EXTENSIONS",
    "frame_files",
    "is_frame_folder",
    "iter_frame_images",
    "probe_frames",
    "read_frame_images",
]

# Formats frame dumps use (ffmpeg, OpenCV, dataset releases); matched case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
REEXTRACT_HINT = "re-extract the frames of this clip or remove the folder"
_DIGITS = re.compile(r"(\d+)")


def _is_image(entry: os.DirEntry[str]) -> bool:
    """A visible image file (by extension, case-insensitive); symbolic links to files count."""
    if entry.name.startswith("."):
        return False
    if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
        return False
    try:
        return entry.is_file()
    except OSError:  # a link into a folder we may not read
        return False


def _natural_key(path: Path) -> tuple[int, tuple[str | int, ...], str]:
    """Sort key: names with digits first, compared run by run with digit runs as numbers
    (`frame2` < `frame10`), then names without digits; the full name breaks ties (`1.jpg`,
    `01.jpg`)."""
    parts = _DIGITS.split(path.stem.casefold())  # text, number, text, ...: same types line up
    if len(parts) == 1:
        return (1, (parts[0],), path.name)
    return (0, tuple(int(part) if i % 2 else part for i, part in enumerate(parts)), path.name)


def _reason(path: Path, err: BaseException) -> str:
    """Pillow's complaint on one short line, without the file name it repeats."""
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        return "the file is empty (0 bytes)" if size == 0 else "not an image Pillow can identify"
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:200] + ("..." if len(text) > 200 else "")


def is_frame_folder(path: str | Path) -> bool:
    """Whether `path` is a folder that directly holds at least one image file (one clip's frames).

    Stops at the first image, so it is cheap on folders of thousands of frames; sub-folders are
    not searched (a clip is the images themselves, not what lies below them).
    """
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        with os.scandir(path) as entries:
            return any(_is_image(entry) for entry in entries)
    except OSError:
        return False


def frame_files(folder: str | Path) -> list[Path]:
    """The image files directly in `folder`, in frame order (module docstring).

    Raises VideoDecodeError when the folder is missing, unreadable or holds no image: an empty
    clip folder is a failed frame dump, never a clip of zero frames.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        raise VideoDecodeError(f"{folder}: {what}; pass a folder of numbered frames or a video")
    try:
        with os.scandir(folder) as entries:
            files = [Path(entry.path) for entry in entries if _is_image(entry)]
    except OSError as err:
        raise VideoDecodeError(
            f"{folder}: cannot list the frames ({err.strerror or err}); check its permissions"
        ) from err
    if not files:
        raise VideoDecodeError(
            f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) directly in the folder; a "
            f"frame folder holds one clip as numbered images (000001.jpg, ...): {REEXTRACT_HINT}"
        )
    return sorted(files, key=_natural_key)


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header; Pillow's open is lazy and decodes no pixels."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise VideoDecodeError(
            f"{path}: cannot read this frame image ({_reason(path, err)}); {REEXTRACT_HINT}"
        ) from err
    return int(height), int(width)


def _open(folder: str | Path) -> tuple[list[Path], VideoInfo]:
    """The frame files of `folder` and what they hold (fps 0.0: image files carry no frame rate)."""
    files = frame_files(folder)
    info = VideoInfo(
        path=str(folder), num_frames=len(files), fps=0.0, frame_hw=_image_size(files[0])
    )
    return files, info


def probe_frames(folder: str | Path) -> VideoInfo:
    """Frame count and size of a frame folder, from its listing and the first image's header.

    fps is 0.0 (unknown: image files carry no frame rate). Sizes of the other frames are checked
    when they are read, so probing a folder of thousands of frames opens one file.
    """
    return _open(folder)[1]


def _check_indices(
    info: VideoInfo, indices: Sequence[int] | np.ndarray | None, asked: str
) -> np.ndarray:
    """Requested indices as int64 [T], all within the folder; None means every frame."""
    holds = f"it holds {info.num_frames} frames (0-{info.num_frames - 1}, in name order)"
    return check_indices(info, indices, asked, where="the folder", found=holds)


def _decode(files: list[Path], info: VideoInfo, indices: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB of valid indices; each distinct file is decoded once."""
    from PIL import Image

    frames = np.empty((len(indices), *info.frame_hw, 3), dtype=np.uint8)
    done: dict[int, int] = {}  # frame index -> row of `frames` that holds it
    for row, index in enumerate(indices.tolist()):
        if index in done:
            frames[row] = frames[done[index]]
            continue
        path = files[index]
        try:
            with Image.open(path) as image:
                picture = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:
            raise VideoDecodeError(
                f"{path}: cannot decode frame {index} ({_reason(path, err)}); the image is "
                f"damaged: {REEXTRACT_HINT}"
            ) from err
        if picture.shape[:2] != info.frame_hw:
            (height, width), (first_h, first_w) = picture.shape[:2], info.frame_hw
            raise VideoDecodeError(
                f"{path}: frame {index} is {width}x{height} pixels but the first frame "
                f"({files[0].name}) is {first_w}x{first_h}; all frames of a clip must have one "
                f"size: {REEXTRACT_HINT}"
            )
        frames[row] = picture
        done[index] = row
    return frames


def read_frame_images(
    folder: str | Path, indices: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """The given frames (0-based positions in frame order, any order, repeats allowed) or, with
    None, every frame, as uint8 [N, H, W, 3] RGB in the order asked. Raises VideoDecodeError."""
    asked = describe_request(None if indices is None else np.asarray(indices))
    files, info = _open(folder)
    return _decode(files, info, _check_indices(info, indices, asked))


def iter_frame_images(
    folder: str | Path, indices: Sequence[int] | np.ndarray | None = None, *, chunk_size: int = 64
) -> Iterator[np.ndarray]:
    """The frames of `read_frame_images` in chunks of up to `chunk_size`: the folder is listed and
    all indices are checked before the first chunk is decoded, and memory holds one chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    asked = describe_request(None if indices is None else np.asarray(indices))
    files, info = _open(folder)
    wanted = _check_indices(info, indices, asked)
    for begin in range(0, len(wanted), chunk_size):
        yield _decode(files, info, wanted[begin : begin + chunk_size])
