"""Writes short real videos for the demo: the astronaut photograph shipped in scikit-image's wheel,
moving on a grey canvas, under NTU RGB+D names (needs no dataset download and no ../shared).

Two actions that differ by motion, so that a short training run has something to learn: A008 "sit
down" (the person moves down the frame) and A009 "stand up" (moves up). Vertical, because training
flips clips horizontally. Subjects 1, 2, 4 and 5 fall in NTU's cross-subject training set, 3 and 6
in its test set.
"""

import sys
from pathlib import Path

from epam_data.synth import person_photo, write_photo_clip

SUBJECTS = (1, 2, 3, 4, 5, 6)
ACTIONS = {8: 3, 9: -3}  # NTU action -> vertical step in pixels per frame (down, up)
FRAMES = 32


def demo_names() -> list[tuple[str, int, int]]:
    """(file name, subject, action) of every demo video."""
    return [
        (f"S001C{1 + subject % 3:03d}P{subject:03d}R001A{action:03d}_rgb.mp4", subject, action)
        for subject in SUBJECTS
        for action in ACTIONS
    ]


def main(out_dir: str) -> None:
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    image = person_photo()[::2, ::2]  # 256 x 256, waist up
    names = demo_names()
    for name, subject, action in names:
        if (folder / name).exists():
            continue
        step_y = ACTIONS[action]
        start_y = 4 if step_y > 0 else 4 - step_y * (FRAMES - 1)
        write_photo_clip(
            folder / name,
            image if subject % 2 else image[:, ::-1],
            num_frames=FRAMES,
            canvas_hw=(360, 480),
            origin=(20 + 20 * subject, start_y),
            step=(subject % 3 - 1, step_y),
        )
    print(f"{len(names)} demo videos in {folder}")


if __name__ == "__main__":
    main(sys.argv[1])
