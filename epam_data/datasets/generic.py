"""Any other dataset: a CSV of `path,label` rows, or a folder with one sub-folder of videos per
class. A clip may also be a folder of numbered frame images (`epam_data.frame_folder`) wherever a
video file may be.

Labels may be integers or class names. Names are numbered in alphabetical order (the convention of
the Toyota lists and of torchvision's ImageFolder), so the same classes always get the same labels.
The sample_id is the video's path relative to the root without its extension, with `/` written as
`__` so that it is one flat name (an HDF5 group, a CSV cell); two paths that map to one id are
rejected.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from epam_data.datasets.base import VIDEO_EXTENSIONS, Rejected, Sample, Scan
from epam_data.errors import LabelFileError

__all__ = ["generic_sample_id", "read_generic_csv", "scan_generic_csv", "scan_generic_folders"]


def generic_sample_id(relative_path: str) -> str:
    path = Path(relative_path)
    stem = path.with_suffix("") if path.suffix.lower() in VIDEO_EXTENSIONS else path
    return stem.as_posix().strip("/").replace("/", "__")


# Columns of a `--list` CSV besides path,label that become the Sample's metadata (index.csv
# columns, so that `epam-data splits OUT --by subject` can group by them).
INT_META = ("subject", "camera", "setup", "replication")
TEXT_META = ("view",)


def _metadata(row: dict[str, str], where: str) -> dict[str, int | str]:
    """The metadata columns of one CSV row; a non-integer subject / camera / ... is refused."""
    found: dict[str, int | str] = {}
    for column in INT_META:
        value = row.get(column, "")
        if value:
            if not value.lstrip("-").isdigit():
                raise ValueError(f"{where}: {column} {value!r} is not an integer")
            found[column] = int(value)
    found.update({column: row[column] for column in TEXT_META if row.get(column)})
    return found


def _label_samples(
    rows: list[tuple[str, str]], source: str, metadata: list[dict] | None = None
) -> Scan:
    """rows: (path, label text), with each row's metadata (`_metadata`) when given. Integers stay
    integers; names are numbered alphabetically."""
    scan = Scan()
    labels = [label for _, label in rows]
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    names = sorted(set(labels), key=int if numeric else str)
    seen: dict[str, str] = {}
    for position, (path, label) in enumerate(rows):
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
                **(metadata[position] if metadata else {}),
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
    """Samples of a `path,label` CSV; paths are relative to the video root given to extract.
    Optional columns subject, camera, setup, replication (integers) and view are kept as the
    samples' metadata."""
    rows = read_generic_csv(csv_path)
    scan = Scan()
    usable, metadata = [], []
    for number, row in enumerate(rows, start=2):
        where = f"{csv_path}: line {number}"
        if not row["path"] or not row["label"]:
            scan.rejected.append(
                Rejected(row["path"] or f"line {number}", f"{where}: empty path or label")
            )
            continue
        try:
            metadata.append(_metadata(row, where))
        except ValueError as err:
            scan.rejected.append(Rejected(row["path"], str(err)))
            continue
        usable.append((row["path"], row["label"]))
    scan.extend(_label_samples(usable, str(csv_path), metadata))
    return scan


def scan_generic_folders(root: Path) -> Scan:
    """Samples of `root/<class name>/<video>` and `root/<class name>/<clip folder of frames>`;
    other files are rejected with the reason.

    A clip folder is one that directly holds image files (`epam_data.frame_folder`, e.g.
    `walk/clip01/000001.jpg, ...`): it is one sample, its images are its frames and are neither
    searched nor rejected one by one, and one at another depth is rejected once, as a whole.
    Folders whose path has a hidden part are never clip folders.
    """
    from epam_data.frame_folder import is_frame_folder

    if not root.is_dir():
        raise LabelFileError(f"{root}: not a folder")
    found: list[tuple[Path, bool]] = []  # (path, is a clip folder of frames)
    for folder, subfolders, names in os.walk(root):
        here = Path(folder)
        hidden = any(part.startswith(".") for part in here.relative_to(root).parts)
        if here != root and not hidden and is_frame_folder(here):
            found.append((here, True))
            subfolders.clear()  # its images are its frames
            continue
        if not hidden:  # a link to a clip folder counts, as a link to a video does
            found.extend(
                (here / name, True)
                for name in subfolders
                if not name.startswith(".")
                and (here / name).is_symlink()
                and is_frame_folder(here / name)
            )
        found.extend(
            (here / name, False)
            for name in names
            if not name.startswith(".")  # .DS_Store, editor swap files
            and (here / name).is_file()
        )
    rows = []
    scan = Scan()
    for path, is_clip_folder in sorted(found):
        relative = path.relative_to(root)
        if not is_clip_folder and path.suffix.lower() not in VIDEO_EXTENSIONS:
            scan.rejected.append(
                Rejected(relative.as_posix(), f"not a video file ({', '.join(VIDEO_EXTENSIONS)})")
            )
        elif len(relative.parts) != 2:
            reason = (
                "clip folders of frames must be directly in a class folder "
                "(ROOT/<class>/<clip>/000001.jpg)"
                if is_clip_folder
                else "videos must be directly in a class folder"
            )
            scan.rejected.append(Rejected(relative.as_posix(), reason))
        else:
            rows.append((relative.as_posix(), relative.parts[0]))
    scan.extend(_label_samples(rows, str(root)))
    return scan
