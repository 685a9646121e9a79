"""What every dataset adapter returns: samples with metadata, and the names it could not use, with
why.

Adapters never drop a name silently: a name that does not parse, a label line that cannot be used or
a class that is in no list becomes a `Rejected` entry that the CLI prints and writes to a CSV.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import PurePath

__all__ = ["Sample", "Rejected", "Scan", "VIDEO_EXTENSIONS", "strip_video_extension"]

# Containers seen in the four datasets and in user folders; matched case-insensitively.
VIDEO_EXTENSIONS = (
    ".avi",
    ".mp4",
    ".mkv",
    ".mov",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
)


@dataclass(frozen=True)
class Sample:
    """One clip to prepare and classify.

    `sample_id` is stable across runs and machines: it is derived from the file name alone (never
    from a folder position or a run order), so shards, manifests and checkpoints from different runs
    agree. `start_frame` / `end_frame` are 0-based and inclusive, set only for clips cut from
    untrimmed videos (PKU-MMD); None means the whole video. Ids (subject, camera, setup,
    replication) are the integers in the name; `view` is a dataset's view letter or name where it
    has one. `split` is the split the dataset's own annotation assigns to this clip, for datasets
    whose official split is a per-clip flag rather than a rule on the ids (Penn Action's `train`);
    "" elsewhere.
    """

    sample_id: str
    dataset: str
    label: int | None
    label_name: str
    video: str = ""
    subject: int | None = None
    camera: int | None = None
    setup: int | None = None
    replication: int | None = None
    view: str = ""
    start_frame: int | None = None
    end_frame: int | None = None
    path: str = ""
    split: str = ""

    def as_row(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Rejected:
    """A name or label line that an adapter could not turn into a sample, and why."""

    name: str
    reason: str


@dataclass
class Scan:
    """The samples an adapter found and what it rejected, in input order."""

    samples: list[Sample] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def extend(self, other: Scan) -> None:
        self.samples.extend(other.samples)
        self.rejected.extend(other.rejected)


def strip_video_extension(name: str) -> str:
    """`path/to/S001C001P001R001A001_rgb.avi` -> `S001C001P001R001A001_rgb`; other suffixes are
    kept."""
    base = PurePath(name.strip()).name
    stem, dot, ext = base.rpartition(".")
    if dot and f".{ext.lower()}" in VIDEO_EXTENSIONS:
        return stem
    return base
