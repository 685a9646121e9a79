"""Shared fixtures. Tests that read ../shared (protocol lists, media) skip with a reason when it is
absent."""

from __future__ import annotations

import csv
import dataclasses
import fractions
import functools
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from epam_data.datasets import Sample, parse_sample_id
from epam_data.shards import PreparedSample

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PROTOCOLS = SHARED / "research" / "protocols"


def read_list(path: Path) -> list[str]:
    """Lines of a ../shared list file, without its `#` provenance line."""
    return [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]


def read_shared_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(read_list(path)))


@pytest.fixture(scope="session")
def protocols_dir() -> Path:
    """The official protocol lists in ../shared/research/protocols (skips when the checkout has no
    shared/)."""
    if not PROTOCOLS.is_dir():
        pytest.skip(
            f"{PROTOCOLS} not found: these checks need the shared/ folder beside the checkout"
        )
    return PROTOCOLS


# --- media and shards made on the fly (tests/test_video.py, tests/test_shards.py) -----------------
# Videos are written by a real encoder (PyAV's bundled ffmpeg); JPEG frames by ffmpeg's mjpeg
# encoder.

MEDIA = SHARED / "media"


def frame_level(index: int) -> int:
    """The grey level of frame `index` in the videos `write_video` makes, so tests can tell frames
    apart."""
    return 16 + (index * 5) % 224


def write_video(
    path: Path,
    num_frames: int,
    *,
    hw: tuple[int, int] = (48, 64),
    codec: str = "libx264",
    fps: int = 25,
    noise: bool = False,
    faststart: bool = False,
) -> Path:
    """A real video: frame i is grey level `frame_level(i)` with a white bar at x = 2 i (mod width).

    `noise` fills half the pixels with random values so that frames are large (a truncated file then
    loses whole frames); `faststart` puts the mp4 index first, as streaming tools do.
    """
    import av

    rng = np.random.default_rng(0)
    height, width = hw
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = (
            2_000_000  # mpeg4 defaults to 200 kb/s, too coarse to tell grey levels apart
        )
        for index in range(num_frames):
            image = np.full((height, width, 3), frame_level(index), dtype=np.uint8)
            if noise:
                image[::2] = rng.integers(0, 256, image[::2].shape, dtype=np.uint8)
            image[:, (2 * index) % width] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def encode_jpeg(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] RGB (even H and W) -> JPEG bytes, with ffmpeg's mjpeg encoder."""
    import av

    context = av.CodecContext.create("mjpeg", "w")
    context.width, context.height, context.pix_fmt = image.shape[1], image.shape[0], "yuvj420p"
    context.time_base = fractions.Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(packet) for packet in [*context.encode(frame), *context.encode(None)])


@functools.cache
def jpeg_pool(count: int = 8, size: int = 32) -> tuple[bytes, ...]:
    """A few distinct real JPEG frames, encoded once per process and reused by
    `prepared_sample`."""
    rng = np.random.default_rng(1)
    return tuple(
        encode_jpeg(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)
    )


def ntu_sample(index: int) -> Sample:
    """A valid NTU RGB+D 60 sample, distinct for each index below 120, with its metadata parsed from
    the name."""
    name = (
        f"S001C{index % 3 + 1:03d}P{index % 40 + 1:03d}"
        f"R{index // 60 % 2 + 1:03d}A{index % 60 + 1:03d}"
    )
    return dataclasses.replace(parse_sample_id("ntu60", name), path=f"nturgb+d_rgb/{name}_rgb.avi")


def prepared_sample(
    index: int, *, persons: int = 2, frames: int = 12, rgb: bool = True, heatmaps: bool = False
) -> PreparedSample:
    """A deterministic PreparedSample of `ntu_sample(index)`: the same for the same arguments, in
    any process."""
    rng = np.random.default_rng(index)
    sample = ntu_sample(index)
    pool = jpeg_pool()
    keypoints = (rng.random((persons, frames, 17, 2)) * 200).astype(np.float32)
    scores = rng.random((persons, frames, 17)).astype(np.float16)
    boxes = rng.random((persons, frames, 5), dtype=np.float32)
    jpegs = [pool[int(k)] for k in rng.integers(0, len(pool), frames)] if rgb else None
    joint = rng.integers(0, 256, (frames, 17, 16, 16), dtype=np.uint8) if heatmaps else None
    limb = rng.integers(0, 256, (frames, 19, 16, 16), dtype=np.uint8) if heatmaps else None
    return PreparedSample(
        sample=sample,
        keypoints=keypoints,
        scores=scores,
        boxes=boxes,
        frame_indices=np.arange(frames) * 2,
        total_frames=2 * frames + 1,
        original_hw=(1080, 1920),
        fps=30.0,
        rgb=jpegs,
        joint_heatmaps=joint,
        limb_heatmaps=limb,
        crop_box=(100.5, 20.0, 700.5, 620.0),
        num_person_raw=persons + 1,
        source=sample.path,
        extra={
            "pose_backend": "blazepose",
            "jpeg_quality": 90,
            "tracked": True,
            "mean_score": 0.75,
        },
    )


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """The real clips in ../shared/media (skips when the checkout has no shared/)."""
    if not MEDIA.is_dir():
        pytest.skip(
            f"{MEDIA} not found: these checks decode the real clips in the shared/ folder beside "
            "the checkout"
        )
    return MEDIA


POSE_GT = SHARED / "data" / "pose_gt"


@pytest.fixture(scope="session")
def pose_gt_sets() -> dict:
    """The real annotated sets in ../shared/data/pose_gt by name (`epam_data.pose.annotated`);
    skips when the checkout has no shared/."""
    from epam_data.pose.annotated import load_sets

    if not POSE_GT.is_dir():
        pytest.skip(
            f"{POSE_GT} not found: these checks need the shared/ folder beside the checkout"
        )
    return load_sets(POSE_GT)


@pytest.fixture(scope="session")
def pyav() -> object:
    """PyAV, the encoder the media fixtures write real videos and JPEGs with (a test extra)."""
    return pytest.importorskip("av", reason="PyAV writes the test videos: pip install -e '.[test]'")


# --- a real person, without ../shared (tests/test_pose.py) ----------------------------------------
# scikit-image's wheel ships astronaut.png (Eileen Collins, NASA, public domain; 512x512, waist up).
# Only the file is used, so `pip install --no-deps scikit-image` is enough; it is decoded with PyAV.


def person_photo() -> np.ndarray:
    """The astronaut photograph as uint8 [512, 512, 3] RGB; skips when scikit-image's files are not
    installed."""
    from epam_data.errors import EpamError
    from epam_data.synth import person_photo as read_photo

    try:
        return read_photo()
    except EpamError as err:
        pytest.skip(str(err))


PERSON_CLIP_FRAMES = 16
PERSON_CLIP_STEP = (4, 2)  # (dx, dy) pixels per frame


def write_person_clip(
    path: Path,
    *,
    num_frames: int = PERSON_CLIP_FRAMES,
    canvas_hw: tuple[int, int] = (480, 640),
    step: tuple[int, int] = PERSON_CLIP_STEP,
    fps: int = 25,
) -> Path:
    """A real H.264 video of the astronaut photo (scaled to 384x384) on grey, moved by `step` pixels
    per frame.

    Frame i shows the photo's top-left corner at (8 + i * dx, 8 + i * dy) on a (480, 640) canvas.
    """
    from epam_data.synth import write_photo_clip

    photo = (
        person_photo()[::4, ::4].repeat(3, 0).repeat(3, 1)
    )  # 384x384: nearest-neighbour, exact and cheap
    return write_photo_clip(
        path,
        photo,
        num_frames=num_frames,
        canvas_hw=canvas_hw,
        origin=(8, 8),
        step=step,
        fps=fps,
        crf=18,
    )


@pytest.fixture(scope="session")
def person_clip(tmp_path_factory: pytest.TempPathFactory, pyav: object) -> Path:
    """`write_person_clip` once per session: a real video of a real person that needs no
    ../shared."""
    return write_person_clip(tmp_path_factory.mktemp("person") / "astronaut.mp4")


@pytest.fixture
def single_torch_thread():
    """The model tests use small tensors: with 2 OpenMP threads fork/join dominates, and on a busy
    2-core machine a forward that takes 30 ms on one thread took 1-4 s. One thread keeps them fast
    and steady; restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def workers_import_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker interpreters find tests/worker_crashes.py by name, as they would a user's module."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent))


def kill_after_first_shard(args: list[str], out: Path, *, timeout_s: float = 60) -> list[Path]:
    """Run `epam-data ARGS` in a real process, SIGKILL it as soon as its first shard under `out` is
    finished, and return the finished shards. Fails if the run ends first or no shard appears within
    `timeout_s`."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from epam_data.cli import app; app()", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while not list(out.glob("shards/*.h5")):
        assert process.poll() is None, "the run ended before its first shard was seen"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return list((out / "shards").glob("*.h5"))
