"""Decoding real videos (written here by ffmpeg through PyAV, and the shared clips), and the errors
for broken ones."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import frame_level, write_video

from epam_data.errors import EpamError, VideoDecodeError
from epam_data.video import VideoInfo, iter_frames, probe_video, read_frame_range, read_frames

NUM_FRAMES = 40


@pytest.fixture(scope="module")
def videos(tmp_path_factory, pyav):
    """One whole video per container/codec the datasets use, plus damaged copies of them."""
    folder = tmp_path_factory.mktemp("videos")
    made = {
        "mp4": write_video(folder / "clip.mp4", NUM_FRAMES),
        "avi": write_video(folder / "clip.avi", NUM_FRAMES, codec="mpeg4"),
        "mkv": write_video(folder / "clip.mkv", NUM_FRAMES, codec="libx264"),
    }
    # Files cut short, as an interrupted copy leaves them. A faststart mp4 cut 8 bytes into its 31st
    # frame's packet: decord lists 31 frames and cannot decode the last few.
    noisy_mp4 = write_video(folder / "noisy.mp4", 60, hw=(96, 128), noise=True, faststart=True)
    with pyav.open(str(noisy_mp4)) as container:
        packet_starts = [packet.pos for packet in container.demux(video=0) if packet.size]
    made["noisy.mp4"], made["packet_starts"] = noisy_mp4, packet_starts
    noisy_avi = write_video(folder / "noisy.avi", 60, hw=(96, 128), codec="mpeg4", noise=True)
    index_last_mp4 = write_video(folder / "index_last.mp4", 60, hw=(96, 128), noise=True)
    for name, source, keep in [
        ("tail_cut.mp4", noisy_mp4, packet_starts[30] + 8),
        ("tail_cut.avi", noisy_avi, noisy_avi.stat().st_size * 6 // 10),
        ("index_lost.mp4", index_last_mp4, index_last_mp4.stat().st_size // 2),
    ]:
        (folder / name).write_bytes(source.read_bytes()[:keep])
        made[name] = folder / name
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are not frames\n" * 50)
    (folder / "noise.avi").write_bytes(
        np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    )
    made.update({name: folder / name for name in ("empty.mp4", "notes.mp4", "noise.avi")})
    made["audio.m4a"] = _write_audio_only(folder / "audio.m4a")
    return made


def _write_audio_only(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def assert_one_line_about(err: pytest.ExceptionInfo, path, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("kind", ["mp4", "avi", "mkv"])
def test_probe_and_read_all_frames(videos, kind):
    info = probe_video(videos[kind])
    assert info == VideoInfo(
        str(videos[kind]), NUM_FRAMES, 25.0, (48, 64), NUM_FRAMES if kind == "avi" else None
    )
    frames = read_frames(videos[kind])
    assert (
        frames.dtype == np.uint8
        and frames.shape == (NUM_FRAMES, 48, 64, 3)
        and frames.flags.c_contiguous
    )
    grey = frames[:, :, -8:].mean(
        axis=(1, 2, 3)
    )  # right edge: the bar is elsewhere in frames 0..27
    expected = np.array([frame_level(i) for i in range(NUM_FRAMES)])
    assert (
        np.abs(grey[:28] - expected[:28]).max() < 4
    )  # lossy codec, but each frame is where it should be


@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_indices_in_any_order_with_repeats_match_a_full_decode(videos, kind):
    full = read_frames(videos[kind])
    indices = [5, 0, 5, 39, 17, 16]
    np.testing.assert_array_equal(read_frames(videos[kind], indices), full[indices])
    np.testing.assert_array_equal(
        read_frames(videos[kind], np.array(indices, dtype=np.int32)), full[indices]
    )
    assert read_frames(videos[kind], []).shape == (0, 48, 64, 3)


def test_frame_range_is_zero_based_and_inclusive(videos):
    full = read_frames(videos["mp4"])
    np.testing.assert_array_equal(read_frame_range(videos["mp4"], 3, 10), full[3:11])
    np.testing.assert_array_equal(read_frame_range(videos["mp4"], 3, 10, stride=3), full[[3, 6, 9]])
    np.testing.assert_array_equal(read_frame_range(videos["mp4"], 39, 39), full[39:40])


def test_iter_frames_yields_the_same_frames_in_chunks(videos):
    indices = list(range(0, NUM_FRAMES, 3))
    chunks = list(iter_frames(videos["avi"], indices, chunk_size=4))
    assert [len(chunk) for chunk in chunks] == [4, 4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), read_frames(videos["avi"], indices))


@pytest.mark.parametrize(
    ("request_kind", "words"),
    [
        ("index", ["frame 40 is outside the video", "40 frames (0-39)"]),
        ("negative", ["frame -1 is outside the video"]),
        ("range_end", ["frames 30-45 (0-based, inclusive)", "40 frames (0-39)", "label file"]),
        ("range_reversed", ["frames 12-10", "not a valid range"]),
    ],
)
def test_requests_outside_the_video_name_the_file_and_what_it_has(videos, request_kind, words):
    path = videos["mp4"]
    calls = {
        "index": lambda: read_frames(path, [0, 40]),
        "negative": lambda: read_frames(path, [-1]),
        "range_end": lambda: read_frame_range(path, 30, 45),
        "range_reversed": lambda: read_frame_range(path, 12, 10),
    }
    with pytest.raises(VideoDecodeError) as err:
        calls[request_kind]()
    assert_one_line_about(err, path, *words)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("missing.mp4", ["no such file"]),
        ("empty.mp4", ["empty (0 bytes)", "fetch it again"]),
        ("notes.mp4", ["text, not a video", "'these are not frames'"]),
        ("noise.avi", ["cannot open as a video", "re-encode"]),
        ("audio.m4a", ["no video stream"]),
        ("index_lost.mp4", ["cut short", "re-encode"]),
    ],
)
def test_unreadable_files_raise_video_decode_error_naming_the_file(videos, tmp_path, name, words):
    path = videos.get(name, tmp_path / name)
    for call in (
        probe_video,
        read_frames,
        lambda p: read_frame_range(p, 0, 5),
        lambda p: next(iter_frames(p)),
    ):
        with pytest.raises(VideoDecodeError) as err:
            call(path)
        assert_one_line_about(err, path, *words)
        assert isinstance(err.value, EpamError)


@pytest.mark.parametrize("width", [16, 48])
def test_narrow_frames_decord_cannot_copy_are_not_called_damaged(pyav, tmp_path, width):
    """decord 0.6 mangles frames of some widths under 80 px (dmlc/decord#336); the message says the
    file is fine and how to scale it, where it used to say "truncated or damaged"."""
    path = write_video(tmp_path / f"narrow{width}.mp4", 10, hw=(40, width))
    for call in (probe_video, read_frames):
        with pytest.raises(VideoDecodeError) as err:
            call(path)
        assert_one_line_about(err, path, "the video is fine", f"{width} x 40 px", "scale=")
        assert "damaged" not in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{segment}\n#EXT-X-ENDLIST\n",
        "ffconcat version 1.0\nfile '{segment}'\n",
    ],
)
def test_a_playlist_named_like_a_video_is_refused_before_ffmpeg_follows_it(videos, tmp_path, text):
    """An HLS or ffconcat playlist saved as .mp4 made decord open the video it names (seen with
    strace): another file's frames would enter the dataset. It is refused before decord sees it."""
    path = tmp_path / "S001C001P001R001A001_rgb.mp4"
    path.write_text(text.format(segment=videos["mp4"]))
    for call in (probe_video, read_frames):
        with pytest.raises(VideoDecodeError) as err:
            call(path)
        assert_one_line_about(err, path, "a playlist, not a video", "does not follow")


def test_raw_y4m_video_whose_first_kb_looks_like_text_still_decodes(pyav, tmp_path):
    """YUV4MPEG2 is a text header then raw pixels; a flat frame of luma 100 makes its first KB pure
    ASCII, which the playlist guard must not take for text."""
    path = tmp_path / "flat.y4m"
    with pyav.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            frame = np.full((48, 64, 3), 100, np.uint8)
            for packet in stream.encode(pyav.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert path.read_bytes()[:1024].isascii()
    assert read_frames(path).shape == (5, 48, 64, 3)


def test_a_folder_is_not_a_video(tmp_path):
    with pytest.raises(VideoDecodeError, match="not a file"):
        probe_video(tmp_path)


def test_mp4_cut_short_lists_frames_it_cannot_decode(videos):
    """decord lists the packets present, but the last of them cannot be decoded: we say which frame
    fails."""
    path = videos["tail_cut.mp4"]
    info = probe_video(path)
    assert info.num_frames == 31  # fewer than the 60 written, more than it can decode
    with pytest.raises(VideoDecodeError) as err:
        read_frames(path)
    assert_one_line_about(
        err,
        path,
        "all frames",
        f"decord lists {info.num_frames} frames",
        "cannot decode frame",
        "truncated",
    )
    first_bad = int(str(err.value).split("cannot decode frame ")[1].split()[0])
    assert 0 < first_bad < info.num_frames
    assert (
        read_frames(path, range(first_bad)).shape[0] == first_bad
    )  # the frames before it still decode
    # Other access orders name a frame at most the decoder delay (4 frames) earlier: decord fails on
    # the frames before a broken packet too, depending on what it was asked before (seen: 24 when
    # reading in chunks of 8, 28 when reading all at once).
    for read in (
        lambda: list(iter_frames(path, chunk_size=8)),
        lambda: read_frame_range(path, first_bad - 1, info.num_frames - 1),
    ):
        with pytest.raises(VideoDecodeError, match="cannot decode frame") as other:
            read()
        named = int(str(other.value).split("cannot decode frame ")[1].split()[0])
        assert first_bad - 4 <= named <= first_bad, (named, first_bad)


@pytest.mark.parametrize("quarter", [1, 2, 3])
def test_mp4_cut_inside_a_packet_never_decodes_silently(videos, tmp_path, quarter):
    """Depending on where the cut falls, decord refuses to open the file or lists frames it cannot
    decode; either way reading every frame raises, and the message names the file."""
    starts = videos["packet_starts"]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(
        videos["noisy.mp4"].read_bytes()[: starts[20] + (starts[21] - starts[20]) * quarter // 4]
    )
    with pytest.raises(VideoDecodeError) as err:
        read_frames(cut)
    assert_one_line_about(err, cut, "re-encode")


def test_avi_cut_short_is_reported_against_its_header(videos):
    """An AVI that lost its tail decodes the frames left; a range past them says the file looks
    truncated."""
    path = videos["tail_cut.avi"]
    info = probe_video(path)
    assert info.declared_frames == 60 and info.num_frames < 60
    assert read_frames(path).shape[0] == info.num_frames
    with pytest.raises(VideoDecodeError) as err:
        read_frame_range(path, 0, 59)
    assert_one_line_about(
        err, path, f"the video has {info.num_frames} frames", "header declares 60", "truncated"
    )


@pytest.mark.parametrize(
    ("name", "frames", "hw", "fps"),
    [
        ("two_players_426x240.mp4", 300, (240, 426), 29.97),
        ("arm_wrestling_340x256.mp4", 280, (256, 340), 28.0),
    ],
)
def test_shared_clips_decode(media_dir, name, frames, hw, fps):
    path = media_dir / name
    info = probe_video(path)
    assert (info.num_frames, info.frame_hw) == (frames, hw) and info.fps == pytest.approx(
        fps, abs=0.01
    )
    clip = read_frame_range(path, 100, 131)
    assert clip.shape == (32, *hw, 3) and clip.std() > 20  # real picture content, not a blank frame
    np.testing.assert_array_equal(clip[::8], read_frames(path, [100, 108, 116, 124]))
    np.testing.assert_array_equal(
        read_frames(path, [frames - 1]), read_frame_range(path, frames - 1, frames - 1)
    )


def test_the_callers_indices_are_left_untouched(videos):
    indices = np.array([3, 1, 2])
    read_frames(videos["mp4"], indices)
    np.testing.assert_array_equal(indices, [3, 1, 2])
