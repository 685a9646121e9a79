"""Toyota Smarthome (trimmed): metadata from `Activity_pSS_rRR_vVV_cCC.mp4`.

p is the subject, c the camera, r the recording and v the video of that recording (kept in the id
only). The label is the activity's index in the alphabetical 31-class list; the cross-view protocols
relabel with their 19-class list by name. An activity that is in no list (the real split lists
contain `Pour.Fromcup`) is rejected, never given a wrong or "last class" label (the authors' loader
maps it to -1).
"""

from __future__ import annotations

import re

from epam_data.datasets.base import Rejected, Sample, Scan, strip_video_extension
from epam_data.errors import NameParseError
from epam_data.protocols import class_names

__all__ = ["TOYOTA_NAME", "parse_toyota_name", "scan_toyota_names"]

TOYOTA_NAME = re.compile(r"^([A-Za-z][A-Za-z.]*)_p(\d+)_r(\d+)_v(\d+)_c(\d+)$")


def parse_toyota_name(name: str) -> Sample:
    """One clip name or path -> a `Sample` labelled by the 31-class list; raises NameParseError."""
    stem = strip_video_extension(name)
    match = TOYOTA_NAME.match(stem)
    if match is None:
        raise NameParseError(
            f"{name!r} is not a Toyota Smarthome name Activity_pSS_rRR_vVV_cCC.mp4"
        )
    activity, subject, recording, _video, camera = match.groups()
    classes = class_names("toyota")
    if activity not in classes:
        raise NameParseError(
            f"{name!r}: activity {activity!r} is in none of the Toyota class lists; left out"
        )
    return Sample(
        sample_id=stem,
        dataset="toyota",
        label=classes.index(activity),
        label_name=activity,
        video=stem,
        subject=int(subject),
        camera=int(camera),
        replication=int(recording),
        path=name.strip(),
    )


def scan_toyota_names(names: list[str]) -> Scan:
    """Parse many names; the ones that fail are returned as `Rejected` with the reason, never
    dropped."""
    scan = Scan()
    for name in names:
        try:
            scan.samples.append(parse_toyota_name(name))
        except NameParseError as err:
            scan.rejected.append(Rejected(name, str(err)))
    return scan
