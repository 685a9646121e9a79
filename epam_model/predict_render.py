"""`epam-train predict --render`: the video as the network saw it, with the skeletons and the
current top-3 drawn on every frame, as a GIF or an MP4.

Frames are the sample's square RGB crops (what the RGB stream is cut from), the skeletons the kept
persons mapped into them (`epam_data.render`), and under each frame the top three classes of the
main head (fused for EPAM-Net) of the latest segment that contains the frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from epam_data.errors import EpamError
from epam_data.render import decode_jpegs, draw_skeleton, to_canvas, view_box, write_gif
from epam_data.shards import PreparedSample

__all__ = ["render_prediction"]

PANEL = 256
TEXT_HEIGHT = 52
MAX_FRAMES = 600  # a longer video is shown at a reduced frame rate, every n-th frame


def _segment_of(frame: int, segments: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest-starting segment whose frame range holds `frame` (windows may overlap)."""
    holding = [s for s in segments if s["start_frame"] <= frame <= s["end_frame"]]
    return holding[-1] if holding else None


def _caption(segment: dict[str, Any] | None) -> list[str]:
    if segment is None:
        return ["(no prediction)"]
    heads = segment["heads"]
    head = "fused" if "fused" in heads else next(iter(heads))
    return [f"{item['name']} {100 * item['probability']:.0f} %" for item in heads[head][:3]]


def _picture(image: np.ndarray, lines: list[str]) -> np.ndarray:
    canvas = Image.new("RGB", (PANEL, PANEL + TEXT_HEIGHT), (0, 0, 0))
    canvas.paste(Image.fromarray(image).resize((PANEL, PANEL)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(lines):
        draw.text((4, PANEL + 2 + 16 * row), line, fill=(255, 255, 255))
    return np.asarray(canvas)


def _write_mp4(pictures: list[np.ndarray], path: Path, fps: float) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.height, stream.width = pictures[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for picture in pictures:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())


def render_prediction(
    prepared: PreparedSample, segments: list[dict[str, Any]], path: str | Path
) -> Path:
    """Draw `prepared` (with RGB crops) and its predicted `segments` to a .gif or .mp4 file."""
    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise EpamError(f"--render {path}: write a .gif or an .mp4")
    if prepared.rgb is None:
        raise EpamError("--render needs the RGB crops, which this video did not give")
    step = max(1, -(-prepared.num_frames // MAX_FRAMES))
    positions = np.arange(0, prepared.num_frames, step)
    frames = decode_jpegs([prepared.rgb[int(p)] for p in positions])
    box = view_box(prepared)
    pictures = []
    for position, frame in zip(positions, frames):
        keypoints = to_canvas(prepared.keypoints[:, position], box, frame.shape[:2])
        image = draw_skeleton(frame.copy(), keypoints, prepared.scores[:, position])
        segment = _segment_of(int(prepared.frame_indices[position]), segments)
        pictures.append(_picture(image, _caption(segment)))
    fps = (prepared.fps or 10.0) / step
    if path.suffix.lower() == ".gif":
        write_gif(pictures, path, fps=fps)
    else:
        _write_mp4(pictures, path, fps)
    return path
