"""Real test and demo videos without any dataset download: a photograph shipped inside a registry package, moved
across a canvas frame by frame and encoded with a real H.264 encoder.

The photograph is `skimage/data/astronaut.png` from scikit-image's wheel (NASA, public domain; a person, waist
up), installed with `--no-deps` by scripts/bootstrap.sh because only the file is read. PyAV (a test extra) decodes
and encodes; both are imported inside the functions, so `import epam_data` never needs them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from epam_data.errors import EpamError

__all__ = ["person_photo", "write_photo_clip"]

PHOTO_FILE = "skimage/data/astronaut.png"


def person_photo() -> np.ndarray:
    """The astronaut photograph as uint8 [512, 512, 3] RGB; EpamError when scikit-image's files are missing."""
    from importlib import metadata

    import av

    try:
        dist = metadata.distribution("scikit-image")
    except metadata.PackageNotFoundError as err:
        raise EpamError(f"needs {PHOTO_FILE} from scikit-image's wheel: pip install --no-deps scikit-image") from err
    path = next((dist.locate_file(f) for f in dist.files or () if str(f) == PHOTO_FILE), None)
    if path is None:
        raise EpamError(f"this scikit-image wheel has no {PHOTO_FILE}")
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def write_photo_clip(
        path: Path,
        image: np.ndarray,
        *, num_frames: int, canvas_hw: tuple[int, int], origin: tuple[int, int], step: tuple[int, int],
        fps: int = 25, crf: int | None = None,
) -> Path:
    """A real H.264 video of `image` on grey: in frame i its top-left corner is at origin + i * step (x, y)."""
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
            canvas[y0:y0 + image.shape[0], x0:x0 + image.shape[1]] = image[:height - y0, :width - x0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
