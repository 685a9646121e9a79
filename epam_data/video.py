"""Video decoding for the extract pipeline: frames as uint8 RGB arrays, or one clear error that
names the file.

A folder of numbered images (`frames/0001/000001.jpg, ...`: Penn Action, JHMDB and other
frame-dumped datasets) is accepted wherever a video file is: each public function here hands a path
that `epam_data.frame_folder.is_frame_folder` recognises to that module, which reads the images with
Pillow in natural name order (`2.jpg` before `10.jpg`) and reports fps 0.0 (unknown). Everything
below is about video files.

Decoding goes through decord (`VideoReader` on the CPU, one decoding thread, frames fetched with
`get_batch`), the library MMAction2 and PYSKL use. Broken videos are the most common reason a long
extraction dies (docs/prior-art.md section 6, item 8: decord's "cannot find video stream" aborting
runs), so every failure becomes a `VideoDecodeError` whose one-line message names the file, what was
asked, what was found and what to do; the pipeline records it in failures.csv and carries on.

What decord 0.6 does with damaged files, measured here (numpy 2 is fine: `NDArray.asnumpy()` returns
a C-contiguous uint8 array):

* a missing, empty or non-video file, or an mp4 cut before its index (`moov` atom at the end): the
  constructor raises a bare "Error reading <file>..."; ffmpeg's reason only goes to stderr, so we
  add a hint of our own (size 0, no `moov` box, a box that runs past the end of the file);
* a "faststart" mp4 (index first) cut short: decord scans the packets when it opens the file. If the
  cut falls deep inside a packet, opening fails ("av_read_frame failed"; we say the file was cut
  short). If it falls just past a packet's start, decord lists that packet as a frame but cannot
  decode it, nor the two or three before it (decoder delay), and `get_batch` raises "Error sending
  packet" only when asked for them: decord reports more frames than it can decode. We find and name
  the first frame that fails for that request (another order of reads may fail up to the decoder
  delay earlier);
* an AVI cut short: decord silently lists only the frames that are still there. The AVI header still
  declares the original count, so `VideoInfo.declared_frames` exposes it and a request past the end
  says that the file looks truncated;
* negative indices wrap around in `get_batch`; we refuse them instead.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epam_data.errors import VideoDecodeError

__all__ = [
    "VideoInfo",
    "decoded_hw",
    "iter_frames",
    "probe_video",
    "read_frame_range",
    "read_frames",
]

TEXT_SNIFF_BYTES = 1024  # how much of a file is read to tell text (playlists) from a video
REENCODE_HINT = "re-encode it (ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4) or remove it"
# decord prefixes its messages with "[hh:mm:ss] /github/workspace/src/...cc:123: "; the rest is the
# reason.
_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+?\.(?:cc|h):\d+: ")


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, as decord sees it (or epam_data.frame_folder, for a folder of frames).

    `num_frames` is the number of frames decord lists (valid indices are 0..num_frames-1); `fps` is
    the average frame rate (0.0 when the container does not say); `frame_hw` is (height, width) in
    pixels. `declared_frames` is the count written in the container header where it is cheap to read
    (AVI), else None; a header that declares more frames than decord lists means the file lost its
    tail.
    """

    path: str
    num_frames: int
    fps: float
    frame_hw: tuple[int, int]
    declared_frames: int | None = None


def _decord_reason(err: BaseException) -> str:
    """decord's message without its timestamp / source-file prefixes and stack trace, on one
    line."""
    text = _DECORD_PREFIX.sub("", str(err)).split("Stack trace", 1)[0]
    text = " ".join(text.split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _mp4_hint(path: Path, size: int) -> str:
    """Why an ISO-BMFF file (mp4, mov, m4v) cannot be opened, from its top-level boxes; '' when it
    looks whole.

    Walks the box headers only (a few reads, whatever the file size). A box that runs past the end
    of the file, or no `moov` box, is what a copy or recording cut short leaves behind.
    """
    boxes = []
    with open(path, "rb") as stream:
        if stream.read(8)[4:8] not in (
            b"ftyp",
            b"styp",
            b"moov",
            b"free",
            b"skip",
            b"wide",
            b"mdat",
        ):
            return ""  # not an ISO-BMFF file
        offset = 0
        while offset + 8 <= size and len(boxes) < 10_000:
            stream.seek(offset)
            header = stream.read(16)
            box_size, box_type = struct.unpack(">I4s", header[:8])
            if box_size == 1 and len(header) == 16:
                box_size = struct.unpack(">Q", header[8:16])[0]
            elif box_size == 0:
                box_size = size - offset
            name = box_type.decode("latin-1")
            if box_size < 8:
                return f"damaged mp4 box {name!r} at byte {offset}"
            boxes.append(name)
            if offset + box_size > size:
                return (
                    f"the mp4 box {name!r} at byte {offset} needs {box_size} bytes but the file "
                    f"ends after {size - offset}: the file was cut short"
                )
            offset += box_size
    if "moov" not in boxes:
        return "the mp4 has no index (no 'moov' box): the recording or copy was cut short"
    return ""


def _avi_declared_frames(path: Path) -> int | None:
    """The total frame count in an AVI header (OpenDML `dmlh` if present, else `avih`), or None if
    not an AVI.

    Walks the chunks of the `hdrl` list, entering nested lists (`strl`, `odml`); reads at most 64
    KiB.
    """
    with open(path, "rb") as stream:
        head = stream.read(65536)
    if (
        head[:4] != b"RIFF"
        or head[8:12] != b"AVI "
        or head[12:16] != b"LIST"
        or head[20:24] != b"hdrl"
    ):
        return None
    end = min(20 + struct.unpack("<I", head[16:20])[0], len(head))
    position, total, grand = 24, None, None
    while position + 8 <= end:
        chunk_id, chunk_size = (
            head[position : position + 4],
            struct.unpack("<I", head[position + 4 : position + 8])[0],
        )
        data = head[position + 8 : position + 8 + chunk_size]
        if chunk_id == b"LIST":
            position += 12  # step into the list: its chunks follow its 4-byte type
            continue
        if chunk_id == b"avih" and len(data) >= 20:
            total = struct.unpack("<I", data[16:20])[0]  # MainAVIHeader.dwTotalFrames
        elif chunk_id == b"dmlh" and len(data) >= 4:
            grand = struct.unpack("<I", data[:4])[
                0
            ]  # ODMLExtendedAVIHeader.dwTotalFrames (all RIFF parts)
        position += 8 + chunk_size + (chunk_size & 1)
    declared = grand or total
    return declared or None


def describe_request(indices: np.ndarray | None, frame_range: tuple[int, int] | None = None) -> str:
    """'all frames', 'frames 10-250', '32 frames (3..97)': the request, as the error messages say
    it."""
    if frame_range is not None:
        return f"frames {frame_range[0]}-{frame_range[1]} (0-based, inclusive)"
    if indices is None:
        return "all frames"
    if len(indices) == 0:
        return "no frames"
    if len(indices) == 1:
        return f"frame {int(indices[0])}"
    return f"{len(indices)} frames ({int(indices.min())}..{int(indices.max())})"


def _check_file(path: Path, asked: str) -> int:
    """The file's size; raises when there is nothing to decode."""
    if not path.exists():
        raise VideoDecodeError(
            f"{path}: no such file (asked for {asked}); check the path or the input folder"
        )
    if not path.is_file():
        raise VideoDecodeError(
            f"{path}: not a file, nor a folder of frame images (asked for {asked}); pass a video "
            "file or a folder of numbered frames (.jpg, .jpeg, .png, .bmp)"
        )
    size = path.stat().st_size
    if size == 0:
        raise VideoDecodeError(
            f"{path}: the file is empty (0 bytes), asked for {asked}; the copy or download "
            "failed: fetch it again or remove it"
        )
    _refuse_text(path, asked)
    return size


def _refuse_text(path: Path, asked: str) -> None:
    """A text file is never a video, and some text is dangerous to hand to FFmpeg: an HLS playlist
    (#EXTM3U) or an ffconcat list makes it open the files (or URLs) the text names, so a file in
    the input folder could feed another file's frames into the dataset (seen: decord opened the
    segment an .mp4-named playlist listed). Every video container starts with binary bytes."""
    with open(path, "rb") as stream:
        head = stream.read(TEXT_SNIFF_BYTES)
    if head.startswith(b"YUV4MPEG2"):  # raw video: a text header, then pixels that may look so
        return
    if head.isascii() and all(byte >= 32 or byte in b"\t\n\r" for byte in head):
        first = head.split(b"\n", 1)[0][:40].decode("ascii", "replace").strip()
        kind = "a playlist" if first.startswith(("#EXTM3U", "ffconcat", "[playlist]")) else "text"
        raise VideoDecodeError(
            f"{path}: {kind}, not a video (it begins {first!r}; asked for {asked}); a playlist "
            "names other files, which extract does not follow: pass the videos themselves"
        )


def _narrow_frames_message(path: Path, frame_hw: tuple[int, int], asked: str) -> str:
    """decord 0.6 pads the rows of some narrow frames (16, 24, 48, 72 px wide, all under 80 px
    here) and then hands back frames of 4 or 6 "channels" or refuses to copy them
    (https://github.com/dmlc/decord/issues/336): the file is fine, so say that, not "damaged"."""
    height, width = frame_hw
    return (
        f"{path}: the video is fine but decord cannot decode its {width} x {height} px frames "
        f"(a decord bug with some frame widths under 80 px; asked for {asked}); scale it up: "
        "ffmpeg -i IN -vf scale=320:-2 -c:v libx264 -pix_fmt yuv420p OUT.mp4"
    )


def _open(
    path: str | Path, asked: str, scale_to: tuple[int, int] | None = None
) -> tuple[Any, VideoInfo]:
    """A decord VideoReader (CPU, one thread; frames scaled to `scale_to`, height and width, if
    given) and what it found; every failure is a VideoDecodeError."""
    # imported here so that `import epam_data.video` works where decord is not installed
    import decord

    path = Path(path)
    size = _check_file(path, asked)
    no_frames = f"{path}: the video stream has no frames (asked for {asked}); {REENCODE_HINT}"
    try:
        rows, columns = scale_to or (-1, -1)  # decord's -1: the video's own
        reader = decord.VideoReader(
            str(path), ctx=decord.cpu(0), num_threads=1, width=columns, height=rows
        )
    except (
        AssertionError
    ) as err:  # decord asserts a positive frame count (an assert: gone under -O, see below)
        raise VideoDecodeError(no_frames) from err
    except (decord.DECORDError, RuntimeError) as err:
        reason = _decord_reason(err)
        if "video stream" in reason:
            found = "no video stream in the file (audio only, or not a video)"
        elif (
            "av_read_frame" in reason
        ):  # a packet ends past the end of the file, or garbage where one should be
            found = _mp4_hint(path, size) or f"the container is damaged ({reason})"
        else:
            detail = (
                "" if reason.startswith("Error reading") else f"; decord: {reason}"
            )  # that one says nothing
            found = (
                _mp4_hint(path, size) or f"not a readable video container ({size} bytes{detail})"
            )
        raise VideoDecodeError(
            f"{path}: cannot open as a video: {found} (asked for {asked}); {REENCODE_HINT}"
        ) from err
    num_frames = len(reader)
    if num_frames == 0:
        raise VideoDecodeError(no_frames)
    try:
        height, width, channels = reader[0].shape  # no size accessor: decode the first frame
    except (decord.DECORDError, RuntimeError) as err:
        raise VideoDecodeError(
            f"{path}: decord lists {num_frames} frames but cannot decode the first "
            f"({_decord_reason(err)}; asked for {asked}); {REENCODE_HINT}"
        ) from err
    if channels != 3:
        raise VideoDecodeError(_narrow_frames_message(path, (height, width), asked))
    fps = float(reader.get_avg_fps())
    info = VideoInfo(
        path=str(path),
        num_frames=num_frames,
        fps=fps if np.isfinite(fps) else 0.0,
        frame_hw=(int(height), int(width)),
        declared_frames=_avi_declared_frames(path),
    )
    return reader, info


def _frames_found(info: VideoInfo, holder: str = "the video has") -> str:
    """'the video has 60 frames (0-59)', plus the truncation hint when the header declares more."""
    text = f"{holder} {info.num_frames} frames (0-{info.num_frames - 1})"
    if info.declared_frames is not None and info.declared_frames > info.num_frames:
        text += (
            f", although its header declares {info.declared_frames}: the file looks truncated; "
            "fetch it again or re-encode it"
        )
    return text


def check_indices(
    info: VideoInfo,
    indices: Sequence[int] | np.ndarray | None,
    asked: str,
    *,
    where: str = "the video",
    found: str | None = None,
) -> np.ndarray:
    """Requested indices as int64 [T], all within `where` (the video, or a folder of frames); None
    means every frame. `found` says what it holds, for the message (default: `_frames_found`)."""
    if indices is None:
        return np.arange(info.num_frames, dtype=np.int64)
    wanted = np.asarray(indices)
    if wanted.ndim != 1 or (wanted.size and not np.issubdtype(wanted.dtype, np.integer)):
        raise TypeError(
            f"frame indices must be a 1-D sequence of integers, got {wanted.dtype} {wanted.shape}"
        )
    wanted = wanted.astype(np.int64)
    bad = wanted[(wanted < 0) | (wanted >= info.num_frames)]
    if bad.size:
        raise VideoDecodeError(
            f"{info.path}: asked for {asked} but frame {int(bad[0])} is outside {where}: "
            f"{found or _frames_found(info)}; check the frame indices or range"
        )
    return wanted


def _first_undecodable(reader: Any, indices: np.ndarray) -> int | None:
    """The first of the requested frames that decord cannot decode, or None if each decodes on its
    own.

    A damaged tail (the usual case: a file cut short) is found by bisection, a few seeks; damage in
    the middle by decoding from the first requested frame on, which costs a pass over the range but
    only happens on this error path.
    """
    import decord

    def decodes(index: int) -> bool:
        try:
            reader[int(index)].asnumpy()
        except (decord.DECORDError, RuntimeError):
            return False
        return True

    ordered = np.unique(indices)
    if not decodes(ordered[-1]):
        lo, hi = 0, len(ordered) - 1  # ordered[hi] fails: find the first failing position
        while lo < hi:
            mid = (lo + hi) // 2
            if decodes(ordered[mid]):
                lo = mid + 1
            else:
                hi = mid
        return int(ordered[lo])
    wanted = set(ordered.tolist())
    try:
        reader.seek_accurate(int(ordered[0]))
    except (decord.DECORDError, RuntimeError):
        return int(ordered[0])
    for index in range(int(ordered[0]), int(ordered[-1]) + 1):
        try:
            reader.next()
        except (decord.DECORDError, RuntimeError, StopIteration):
            return index if index in wanted else min(i for i in wanted if i >= index)
    return None


def _get_batch(reader: Any, info: VideoInfo, indices: np.ndarray, asked: str) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB for valid indices; a frame decord lists but cannot decode is a
    VideoDecodeError."""
    import decord

    if len(indices) == 0:
        return np.zeros((0, *info.frame_hw, 3), dtype=np.uint8)
    try:
        return reader.get_batch(indices.tolist()).asnumpy()
    except (decord.DECORDError, RuntimeError) as err:
        first_bad = _first_undecodable(reader, indices)
        where = f"frame {first_bad}" if first_bad is not None else "some of them"
        raise VideoDecodeError(
            f"{info.path}: asked for {asked}; decord lists {info.num_frames} frames but cannot "
            f"decode {where} "
            f"({_decord_reason(err)}): the file looks truncated or damaged; {REENCODE_HINT}"
        ) from err


def _is_frame_folder(path: str | Path) -> bool:
    """Whether `path` is a folder of frame images, read by epam_data.frame_folder instead of decord.

    Imported here, not at the top: frame_folder imports VideoInfo from this module.
    """
    from epam_data.frame_folder import is_frame_folder

    return is_frame_folder(path)


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and size of a video, without decoding it all.

    Opening decodes the first frame only, so a file whose tail is damaged can still probe fine; its
    frames fail in `read_frames` with a message that says which one. A frame folder is probed from
    its listing and its first image's header (fps 0.0).
    """
    if _is_frame_folder(path):
        from epam_data.frame_folder import probe_frames

        return probe_frames(path)
    return _open(path, "its frame count and size")[1]


def read_frames(path: str | Path, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Decode the given frames (0-based, any order, repeats allowed) or, with None, every frame.

    Returns uint8 [T, H, W, 3] RGB in the order asked. A whole long video does not fit in memory at
    1080p (6 MB a frame): use `iter_frames` for those. Raises VideoDecodeError.
    """
    if _is_frame_folder(path):
        from epam_data.frame_folder import read_frame_images

        return read_frame_images(path, indices)
    asked = describe_request(None if indices is None else np.asarray(indices))
    reader, info = _open(path, asked)
    wanted = check_indices(info, indices, asked)
    return _get_batch(reader, info, wanted, asked)


def read_frame_range(path: str | Path, start: int, end: int, *, stride: int = 1) -> np.ndarray:
    """Frames start, start + stride, ... up to end, both 0-based and inclusive (PKU-MMD label
    convention).

    Returns uint8 [T, H, W, 3] RGB. A range that is empty, negative or past the end of the video
    raises VideoDecodeError (the range usually comes from a label file, so it is the user's to
    check), never a silently shorter clip.
    """
    asked = describe_request(None, (start, end))
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    if start < 0 or end < start:
        raise VideoDecodeError(
            f"{path}: asked for {asked}, which is not a valid range (start must be >= 0 and "
            "end >= start); check the label file"
        )
    if _is_frame_folder(path):
        from epam_data.frame_folder import probe_frames, read_frame_images

        info = probe_frames(path)
        if end >= info.num_frames:
            raise VideoDecodeError(
                f"{path}: asked for {asked} but {_frames_found(info, 'the folder holds')}; check "
                "the label file against the frames"
            )
        return read_frame_images(path, np.arange(start, end + 1, stride, dtype=np.int64))
    reader, info = _open(path, asked)
    if end >= info.num_frames:
        raise VideoDecodeError(
            f"{path}: asked for {asked} but {_frames_found(info)}; check the label file "
            "against the video"
        )
    return _get_batch(reader, info, np.arange(start, end + 1, stride, dtype=np.int64), asked)


def decoded_hw(frame_hw: tuple[int, int], max_height: int | None) -> tuple[int, int]:
    """The (height, width) frames are decoded at under `max_height`: the video's own where it is
    no taller, else `max_height` rows and the width in proportion, rounded to an even number (what
    video scalers and encoders want)."""
    height, width = frame_hw
    if max_height is None or height <= max_height:
        return frame_hw
    return max_height, max(2, 2 * round(width * max_height / height / 2))


def iter_frames(
    path: str | Path,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    chunk_size: int = 64,
    max_height: int | None = None,
) -> Iterator[np.ndarray]:
    """The frames of `read_frames`, in chunks of up to `chunk_size` (uint8 [t, H, W, 3] each),
    scaled down to `decoded_hw(size, max_height)` where the video is taller than `max_height`.

    For long videos (Toyota clips run minutes, PKU-MMD videos are untrimmed): memory holds one
    chunk, the decoder is opened once (twice when scaling: once to learn the size), and all
    indices are checked before the first chunk is decoded. Scaling happens inside FFmpeg (decord's
    `width` / `height`), which costs less than decoding at full size: a 1080p frame took 14.0 ms
    of a core, 8.4 ms at 540 rows (BENCHMARKS.md); frame folders are scaled with Pillow.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if _is_frame_folder(path):
        from epam_data.frame_folder import iter_frame_images

        for chunk in iter_frame_images(path, indices, chunk_size=chunk_size):
            yield _scaled(chunk, decoded_hw(chunk.shape[1:3], max_height))
        return
    asked = describe_request(None if indices is None else np.asarray(indices))
    reader, info = _open(path, asked)
    wanted = check_indices(info, indices, asked)
    size = decoded_hw(info.frame_hw, max_height)
    if size != info.frame_hw:
        reader, info = _open(path, asked, size)
    for begin in range(0, len(wanted), chunk_size):
        yield _get_batch(reader, info, wanted[begin : begin + chunk_size], asked)


def _scaled(chunk: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [t, H, W, 3] frames resized to `size` (height, width) with Pillow's antialiased
    bilinear; the chunk itself where it has that size."""
    if chunk.shape[1:3] == size:
        return chunk
    if not len(chunk):
        return np.zeros((0, *size, 3), np.uint8)
    from PIL import Image

    resized = [
        Image.fromarray(frame).resize(size[::-1], Image.Resampling.BILINEAR, reducing_gap=3.0)
        for frame in chunk
    ]
    return np.stack([np.asarray(image) for image in resized])
