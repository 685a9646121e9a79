"""Any other dataset: a CSV of `path,label` rows, or a folder with one sub-folder of videos per
class.

Labels may be integers or class names. Names are numbered in alphabetical order (the convention of
the Toyota lists and of torchvision's ImageFolder), so the same classes always get the same labels.
The sample_id is the video's path relative to the root without its extension, with `/` written as
`__` so that it is one flat name (an HDF5 group, a CSV cell); two paths that map to one id are
rejected.
"""

from __future__ import annotations

import csv
from pathlib import Path

from epam_data.datasets.base import VIDEO_EXTENSIONS, Rejected, Sample, Scan
from epam_data.errors import LabelFileError

__all__ = ["generic_sample_id", "read_generic_csv", "scan_generic_csv", "scan_generic_folders"]


def generic_sample_id(relative_path: str) -> str:
    path = Path(relative_path)
    stem = path.with_suffix("") if path.suffix.lower() in VIDEO_EXTENSIONS else path
    return stem.as_posix().strip("/").replace("/", "__")


def _label_samples(rows: list[tuple[str, str]], source: str) -> Scan:
    """rows: (path, label text). Integers stay integers; names are numbered alphabetically."""
    scan = Scan()
    labels = [label for _, label in rows]
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    names = sorted(set(labels), key=int if numeric else str)
    seen: dict[str, str] = {}
    for path, label in rows:
        sample_id = generic_sample_id(path)
        if not sample_id:
            scan.rejected.append(Rejected(path, f"{source}: empty path"))
            continue
        if sample_id in seen:
            scan.rejected.append(
                Rejected(path, f"{source}: same sample id {sample_id!r} as {seen[sample_id]!r}")
            )
            continue
        if numeric and int(label) < 0:
            scan.rejected.append(Rejected(path, f"{source}: negative label {label}"))
            continue
        seen[sample_id] = path
        scan.samples.append(
            Sample(
                sample_id=sample_id,
                dataset="generic",
                label=int(label) if numeric else names.index(label),
                label_name=label,
                video=Path(path).stem,
                path=path,
            )
        )
    return scan


def read_generic_csv(csv_path: Path) -> list[dict[str, str]]:
    """Rows of a `path,label` CSV (header required), stripped; raises LabelFileError."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(
                line for line in handle if line.strip() and not line.startswith("#")
            )
            rows = [
                {key.strip(): (value or "").strip() for key, value in row.items() if key}
                for row in reader
            ]
            header = [name.strip() for name in reader.fieldnames or []]
    except OSError as err:
        raise LabelFileError(f"{csv_path}: cannot read ({err.strerror or err})") from err
    if "path" not in header or "label" not in header:
        raise LabelFileError(
            f"{csv_path}: needs a header with columns path,label (found {','.join(header)})"
        )
    return rows


def scan_generic_csv(csv_path: Path) -> Scan:
    """Samples of a `path,label` CSV; paths are relative to the video root given to extract."""
    rows = read_generic_csv(csv_path)
    scan = Scan()
    usable = []
    for number, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            scan.rejected.append(
                Rejected(
                    row["path"] or f"line {number}",
                    f"{csv_path}: line {number}: empty path or label",
                )
            )
            continue
        usable.append((row["path"], row["label"]))
    scan.extend(_label_samples(usable, str(csv_path)))
    return scan


def scan_generic_folders(root: Path) -> Scan:
    """Samples of `root/<class name>/<video>`; other files are rejected with the reason."""
    if not root.is_dir():
        raise LabelFileError(f"{root}: not a folder")
    rows = []
    scan = Scan()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):  # .DS_Store, editor swap files
            continue
        relative = path.relative_to(root)
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            scan.rejected.append(
                Rejected(relative.as_posix(), f"not a video file ({', '.join(VIDEO_EXTENSIONS)})")
            )
        elif len(relative.parts) != 2:
            scan.rejected.append(
                Rejected(relative.as_posix(), "videos must be directly in a class folder")
            )
        else:
            rows.append((relative.as_posix(), relative.parts[0]))
    scan.extend(_label_samples(rows, str(root)))
    return scan
