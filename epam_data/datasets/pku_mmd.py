"""PKU-MMD phase 1: untrimmed videos `NNNN-V` (V = L, M or R view) cut into one sample per label
line.

A label file `NNNN-V.txt` holds lines `action_id,start_frame,end_frame,confidence` (action ids
1..51). Each usable line becomes the clip `{video}-A{action:02d}-N{k:02d}`, the name EPAM-Net's
trimming script gives it: k numbers the lines 1, 2, ... after sorting them by start frame, and
frames are 0-based and inclusive, as that script reads them. Unusable lines (start > end occurs in
the real 0043-L.txt, a bad action id, a missing field) are rejected with the file, line and reason,
never guessed at. A rejected line keeps its number k, so the ids of the other clips stay those of
the authors' files.
"""

from __future__ import annotations

import re
from pathlib import Path

from epam_data.datasets.base import Rejected, Sample, Scan, strip_video_extension
from epam_data.errors import LabelFileError, NameParseError
from epam_data.protocols import class_names

__all__ = [
    "VIDEO_ID",
    "SAMPLE_ID",
    "parse_video_id",
    "parse_pku_sample_id",
    "read_label_file",
    "scan_pku",
    "read_split_file",
]

VIDEO_ID = re.compile(r"^(\d{4})-([LMR])$")
SAMPLE_ID = re.compile(r"^(\d{4}-[LMR])-A(\d{2})-N(\d{2,})$")
NUM_ACTIONS = 51


def parse_video_id(name: str) -> str:
    """`0002-L`, `0002-L.avi` or a path to it -> `0002-L`; anything else raises NameParseError."""
    video = strip_video_extension(name)
    if video.endswith(".txt"):
        video = video[:-4]
    if VIDEO_ID.match(video) is None:
        raise NameParseError(
            f"{name!r} is not a PKU-MMD video id NNNN-V with V in L, M, R (e.g. 0002-L)"
        )
    return video


def _clip(video: str, action: int, k: int, start: int | None, end: int | None, path: str) -> Sample:
    return Sample(
        sample_id=f"{video}-A{action:02d}-N{k:02d}",
        dataset="pku_mmd",
        label=action - 1,
        label_name=class_names("pku_mmd")[action - 1],
        video=video,
        view=video[-1],
        start_frame=start,
        end_frame=end,
        path=path,
    )


def parse_pku_sample_id(sample_id: str) -> Sample:
    """A clip id `0002-L-A05-N03` -> its `Sample` (without frame range, which only the label file
    knows)."""
    match = SAMPLE_ID.match(sample_id)
    if match is None:
        raise NameParseError(
            f"{sample_id!r} is not a PKU-MMD clip id NNNN-V-Aaa-Nkk (e.g. 0002-L-A05-N03)"
        )
    video, action, k = match.group(1), int(match.group(2)), int(match.group(3))
    if not 1 <= action <= NUM_ACTIONS:
        raise NameParseError(f"{sample_id!r}: action {action} is outside PKU-MMD's 1-{NUM_ACTIONS}")
    return _clip(video, action, k, None, None, "")


def _parse_line(line: str) -> tuple[int, int, int]:
    fields = [field.strip() for field in line.split(",")]
    if len(fields) < 3 or any(not field.lstrip("-").isdigit() for field in fields[:3]):
        raise ValueError(f"expected action_id,start_frame,end_frame,confidence, got {line!r}")
    action, start, end = (int(field) for field in fields[:3])
    if not 1 <= action <= NUM_ACTIONS:
        raise ValueError(f"action id {action} is outside 1-{NUM_ACTIONS}")
    if start < 0:
        raise ValueError(f"start frame {start} is negative")
    if start > end:
        raise ValueError(f"start frame {start} is after end frame {end}")
    return action, start, end


def read_label_file(path: Path, video: str | None = None) -> Scan:
    """All clips of one video's label file, with its unusable lines as `Rejected` entries."""
    video = video or parse_video_id(path.name)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise LabelFileError(f"{path}: cannot read the label file ({err.strerror or err})") from err
    lines = [
        (number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()
    ]

    def start_key(
        item: tuple[int, str],
    ) -> int:  # sort like the authors' script; unparsable lines last
        fields = item[1].split(",")
        try:
            return int(fields[1])
        except (IndexError, ValueError):
            return 1 << 62

    scan = Scan()
    for k, (number, line) in enumerate(sorted(lines, key=start_key), start=1):
        try:
            action, start, end = _parse_line(line)
        except ValueError as err:
            scan.rejected.append(
                Rejected(f"{path.name}:{number}", f"{path}: line {number}: {err}; line left out")
            )
            continue
        scan.samples.append(_clip(video, action, k, start, end, video))
    return scan


def scan_pku(video_ids: list[str], labels_dir: Path) -> Scan:
    """Clips of many videos; a bad id or a missing label file rejects that video with the
    reason."""
    scan = Scan()
    for name in video_ids:
        try:
            video = parse_video_id(name)
        except NameParseError as err:
            scan.rejected.append(Rejected(name, str(err)))
            continue
        label_file = labels_dir / f"{video}.txt"
        if not label_file.is_file():
            scan.rejected.append(Rejected(name, f"no label file {label_file}"))
            continue
        scan.extend(read_label_file(label_file, video))
    return scan


def read_split_file(path: Path) -> dict[str, frozenset[str]]:
    """An official `cross-subject.txt` / `cross-view.txt` -> {"train": ids, "test": ids}.

    Format as the dataset ships it: a `Training videos:` line, a line of comma-separated video ids,
    a `Validataion videos:` line (sic; `Validation` is accepted too), a line of ids. The second list
    is returned as `test`, the set the literature reports on.
    """
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except OSError as err:
        raise LabelFileError(f"{path}: cannot read the split file ({err.strerror or err})") from err
    lines = [line for line in lines if line and not line.startswith("#")]
    headers = {
        "training videos:": "train",
        "validataion videos:": "test",
        "validation videos:": "test",
    }
    parts: dict[str, set[str]] = {}
    current: str | None = None
    for line in lines:
        if line.lower() in headers:
            current = headers[line.lower()]
            parts.setdefault(current, set())
            continue
        if current is None:
            raise LabelFileError(
                f"{path}: ids before a 'Training videos:' line; is this a PKU-MMD split file?"
            )
        for token in filter(None, (token.strip() for token in line.split(","))):
            if VIDEO_ID.match(token) is None:
                raise LabelFileError(f"{path}: {token!r} is not a video id like 0002-L")
            parts[current].add(token)
    if set(parts) != {"train", "test"} or not parts["train"] or not parts["test"]:
        raise LabelFileError(
            f"{path}: expected a 'Training videos:' and a 'Validataion videos:' list of ids"
        )
    both = parts["train"] & parts["test"]
    if both:
        raise LabelFileError(
            f"{path}: {len(both)} videos are in both lists, e.g. {sorted(both)[0]}"
        )
    return {split: frozenset(ids) for split, ids in parts.items()}
