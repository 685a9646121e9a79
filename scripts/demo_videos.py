"""Writes a few short real videos for the demo: the astronaut photograph shipped in scikit-image's wheel, moving
across a grey canvas, under NTU RGB+D names (needs no dataset download and no ../shared)."""

import sys
from pathlib import Path

from epam_data.synth import person_photo, write_photo_clip

NAMES = ("S001C001P001R001A001_rgb.mp4", "S001C002P003R001A023_rgb.mp4", "S001C003P002R002A043_rgb.mp4")


def main(out_dir: str) -> None:
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    image = person_photo()[::2, ::2]  # 256 x 256, waist up
    for number, name in enumerate(NAMES):
        if not (folder / name).exists():
            write_photo_clip(folder / name, image if number % 2 == 0 else image[:, ::-1], num_frames=24,
                             canvas_hw=(360, 480), origin=(10, 10), step=(4 + number, 1))
    print(f"{len(NAMES)} demo videos in {folder}")


if __name__ == "__main__":
    main(sys.argv[1])
