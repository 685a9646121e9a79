"""Dataset adapters: file names and label files -> `Sample`s with labels and metadata.

One module per dataset; this package maps a dataset name to its functions with plain dicts, so an
unknown name fails here with the list of known ones.
"""

from __future__ import annotations

from pathlib import Path

from epam_data.datasets.base import Rejected, Sample, Scan, strip_video_extension
from epam_data.datasets.generic import scan_generic_csv, scan_generic_folders
from epam_data.datasets.ntu import parse_ntu_name, scan_ntu_names
from epam_data.datasets.penn_action import scan_penn
from epam_data.datasets.pku_mmd import parse_pku_sample_id, scan_pku
from epam_data.datasets.toyota import parse_toyota_name, scan_toyota_names
from epam_data.errors import EpamError, NameParseError

__all__ = [
    "DATASET_NAMES",
    "ROW_METADATA_DATASETS",
    "Rejected",
    "Sample",
    "Scan",
    "normalize_name",
    "parse_sample_id",
    "scan_generic",
    "scan_names",
]

DATASET_NAMES = ("ntu60", "ntu120", "pku_mmd", "toyota", "penn_action", "generic")
# Datasets whose sample ids carry no metadata: label, view and split come from their label files
# when a sample is listed, and from index.csv afterwards.
ROW_METADATA_DATASETS = ("penn_action", "generic")


def _check(dataset: str) -> None:
    if dataset not in DATASET_NAMES:
        raise EpamError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")


def scan_names(dataset: str, names: list[str], *, labels_dir: Path | None = None) -> Scan:
    """Samples for a list of video (or sample) names; PKU-MMD names are video ids and Penn Action
    names clip numbers, read with their label files."""
    _check(dataset)
    if dataset in ("ntu60", "ntu120"):
        return scan_ntu_names(names, dataset)
    if dataset == "toyota":
        return scan_toyota_names(names)
    if dataset == "pku_mmd":
        if labels_dir is None:
            raise EpamError(
                "PKU-MMD names are video ids (0002-L); pass --labels DIR, the folder of their "
                "label files 0002-L.txt (Train_Label_PKU_final in the release)"
            )
        if not labels_dir.is_dir():
            raise EpamError(f"--labels {labels_dir}: not a folder")
        return scan_pku(names, labels_dir)
    if dataset == "penn_action":
        if labels_dir is None or not labels_dir.is_dir():
            raise EpamError(
                "Penn Action clips are named by number (0001); pass --labels DIR, the release's "
                "labels/ folder of 0001.mat ..."
            )
        return scan_penn(names, labels_dir)
    raise EpamError(
        "generic datasets are listed by a CSV (path,label) or a folder per class, not by names"
    )


def scan_generic(source: Path) -> Scan:
    """A generic dataset from a `path,label` CSV file or a folder with one sub-folder per class."""
    return scan_generic_csv(source) if source.is_file() else scan_generic_folders(source)


def parse_sample_id(dataset: str, sample_id: str) -> Sample:
    """Rebuild a sample's metadata from its id alone (ids of the four benchmarks carry all of
    it)."""
    _check(dataset)
    parsers = {
        "ntu60": lambda name: parse_ntu_name(name, "ntu60"),
        "ntu120": lambda name: parse_ntu_name(name, "ntu120"),
        "pku_mmd": parse_pku_sample_id,
        "toyota": parse_toyota_name,
    }
    if dataset not in parsers:
        raise NameParseError(f"{sample_id!r}: {dataset} sample ids carry no metadata")
    return parsers[dataset](sample_id)


def normalize_name(name: str) -> str:
    """A name as users list it (path, extension, NTU `_rgb` suffix) -> the id it stands for."""
    return strip_video_extension(name).removesuffix("_rgb")
