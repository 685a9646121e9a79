"""NTU RGB+D 60 / 120: metadata from the file name `SsssCcccPpppRrrrAaaa[_rgb].<ext>`.

Setup S, camera C, performer P (the subject of the cross-subject protocols), replication R and
action A are 1-based; label = A - 1 (the convention of the official README, PYSKL and MMAction2).
NTU60 is the subset with setups S001-S017 and actions A001-A060; a name outside it is rejected with
a hint to use ntu120 rather than given a label the 60-class model cannot have.
"""

from __future__ import annotations

import re

from epam_data.datasets.base import Rejected, Sample, Scan, strip_video_extension
from epam_data.errors import NameParseError
from epam_data.protocols import class_names

__all__ = ["NTU_NAME", "MUTUAL_ACTIONS", "parse_ntu_name", "scan_ntu_names", "is_mutual_action"]

NTU_NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
# Two-person (mutual) actions: A050-A060 and A106-A120 (official README, docs/protocols.md section
# 2).
MUTUAL_ACTIONS = frozenset([*range(50, 61), *range(106, 121)])
# Limits of each release: (setups, cameras, performers, replications, actions).
_LIMITS = {"ntu60": (17, 3, 40, 2, 60), "ntu120": (32, 3, 106, 2, 120)}


def is_mutual_action(action: int) -> bool:
    """True for the 26 NTU actions performed by two people; extract keeps two persons for them."""
    return action in MUTUAL_ACTIONS


def parse_ntu_name(name: str, dataset: str = "ntu60") -> Sample:
    """One NTU file or sample name -> a `Sample`; raises `NameParseError` saying what is wrong.

    Accepts a bare sample name, a `_rgb` video name, and any path or video extension; the
    sample_id is always the 20-character `SsssCcccPpppRrrrAaaa`.
    """
    if dataset not in _LIMITS:
        raise ValueError(f"unknown NTU release {dataset!r}; choose ntu60 or ntu120")
    stem = strip_video_extension(name)
    sample_id = stem[:-4] if stem.endswith("_rgb") else stem
    match = NTU_NAME.match(sample_id)
    if match is None:
        raise NameParseError(f"{name!r} is not an NTU name SsssCcccPpppRrrrAaaa[_rgb].<ext>")
    setup, camera, subject, replication, action = (int(g) for g in match.groups())
    values = (setup, camera, subject, replication, action)
    fields = ("setup", "camera", "performer", "replication", "action")
    for field_name, value, limit, limit_120 in zip(
        fields, values, _LIMITS[dataset], _LIMITS["ntu120"]
    ):
        if not 1 <= value <= limit:
            hint = (
                "; it belongs to NTU RGB+D 120: use --dataset ntu120" if value <= limit_120 else ""
            )
            raise NameParseError(
                f"{name!r}: {field_name} {value} is outside {dataset} (1-{limit}){hint}"
            )
    names = class_names(dataset)
    return Sample(
        sample_id=sample_id,
        dataset=dataset,
        label=action - 1,
        label_name=names[action - 1],
        video=stem,
        subject=subject,
        camera=camera,
        setup=setup,
        replication=replication,
        path=name.strip(),
    )


def scan_ntu_names(names: list[str], dataset: str = "ntu60") -> Scan:
    """Parse many names; the ones that fail are returned as `Rejected` with the reason, never
    dropped."""
    scan = Scan()
    for name in names:
        try:
            scan.samples.append(parse_ntu_name(name, dataset))
        except NameParseError as err:
            scan.rejected.append(Rejected(name, str(err)))
    return scan
