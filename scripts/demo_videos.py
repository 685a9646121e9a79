"""Writes a few short real videos for the demo: the astronaut photograph shipped in scikit-image's wheel, moving
across a grey canvas, under NTU RGB+D names (needs no dataset download and no ../shared)."""

import sys
from importlib import metadata
from pathlib import Path

import av
import numpy as np

NAMES = ("S001C001P001R001A001_rgb.mp4", "S001C002P003R001A023_rgb.mp4", "S001C003P002R002A043_rgb.mp4")


def photo() -> np.ndarray:
    dist = metadata.distribution("scikit-image")
    path = next(dist.locate_file(f) for f in dist.files or () if str(f) == "skimage/data/astronaut.png")
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def write_clip(path: Path, image: np.ndarray, step: tuple[int, int], frames: int = 24) -> None:
    height, width = 360, 480
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            canvas = np.full((height, width, 3), 128, np.uint8)
            x0, y0 = 10 + index * step[0], 10 + index * step[1]
            canvas[y0:y0 + image.shape[0], x0:x0 + image.shape[1]] = image[:height - y0, :width - x0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main(out_dir: str) -> None:
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    image = photo()[::2, ::2]  # 256 x 256, waist up
    for number, name in enumerate(NAMES):
        if not (folder / name).exists():
            write_clip(folder / name, image if number % 2 == 0 else image[:, ::-1], (4 + number, 1))
    print(f"{len(NAMES)} demo videos in {folder}")


if __name__ == "__main__":
    main(sys.argv[1])
