"""Protocols -> manifests: one CSV per protocol and split, `<out>/manifests/<protocol>_<split>.csv`.

Input is either a list of names (video or sample names, PKU-MMD video ids with their label files) or
a prepared dataset folder (its index.csv). Membership follows the rules in `manifests/` exactly;
nothing is dropped without a reason: names that do not parse, samples that fall in no split, and
excluded names are all counted and listed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from epam_data.atomic import remove_stale_temps, safe_cell, write_text_atomic
from epam_data.datasets import (
    ROW_METADATA_DATASETS,
    Rejected,
    Sample,
    Scan,
    normalize_name,
    parse_sample_id,
)
from epam_data.datasets.pku_mmd import read_split_file
from epam_data.errors import EpamError, NameParseError, ProtocolError
from epam_data.protocols import Protocol, load_protocols

__all__ = [
    "SplitReport",
    "read_names",
    "scan_index",
    "build_manifests",
    "write_manifests",
    "make_splits",
    "manifest_frame",
]

SPLIT_ORDER = ("train", "val", "test")
# Manifest columns after sample_id,label,label_name; a column is written when the dataset fills it.
META_COLUMNS = (
    "video",
    "subject",
    "camera",
    "setup",
    "replication",
    "view",
    "start_frame",
    "end_frame",
)


# Manifest columns written as integers (pandas reads a column with an empty cell as floats).
INT_COLUMNS = ("label", "subject", "camera", "setup", "replication", "start_frame", "end_frame")


def manifest_frame(rows: Iterable[dict[str, object]] | pd.DataFrame) -> pd.DataFrame:
    """Rows as every manifest has them: sample_id,label,label_name, then the metadata columns the
    samples fill (`META_COLUMNS`, empty ones dropped), integers as integers, sorted by sample id.
    Official protocols, imported pickles and `splits --by` all write through here."""
    frame = pd.DataFrame(rows)
    columns = ["sample_id", "label", "label_name", *(c for c in META_COLUMNS if c in frame)]
    frame = frame.reindex(columns=columns).replace("", None)
    frame = frame.drop(columns=[c for c in META_COLUMNS if c in frame and frame[c].isna().all()])
    for column in INT_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    return frame.sort_values("sample_id", ignore_index=True)


@dataclass
class SplitReport:
    """What `make_splits` wrote and everything it left out, for the CLI to print."""

    manifests: dict[str, pd.DataFrame] = field(default_factory=dict)  # "xsub_train" -> rows
    counts: list[dict[str, object]] = field(
        default_factory=list
    )  # protocol, split sizes, not in protocol
    rejected: list[Rejected] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parsed: int = 0
    excluded: int = 0
    out_dir: Path | None = None


def read_names(path: Path) -> list[str]:
    """One name per line; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise EpamError(f"{path}: cannot read the name list ({err.strerror or err})") from err
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def scan_index(dataset_dir: Path, dataset: str | None = None) -> tuple[str, Scan]:
    """The finished samples of a prepared dataset folder, their metadata re-read from the sample
    ids.

    The dataset name comes from dataset.json unless given. A sample whose index label disagrees with
    its name is rejected rather than trusted either way. Datasets whose ids carry no metadata
    (`ROW_METADATA_DATASETS`: Penn Action) take it from the index row.
    """
    index_path = dataset_dir / "index.csv"
    if not index_path.is_file():
        raise EpamError(
            f"{dataset_dir}: no index.csv; is this a folder written by `epam-data extract`?"
        )
    if dataset is None:
        meta_path = dataset_dir / "dataset.json"
        try:
            dataset = json.loads(meta_path.read_text())["dataset"]
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise EpamError(
                f"{meta_path}: cannot read the dataset name ({err}); pass --dataset"
            ) from err
    index = pd.read_csv(index_path, dtype=str, keep_default_na=False)
    if "sample_id" not in index.columns:
        raise EpamError(f"{index_path}: no sample_id column")
    if "status" in index.columns:
        index = index[index["status"].isin(["ok", ""])]
    scan = Scan()
    for row in index.to_dict("records"):
        if dataset in ROW_METADATA_DATASETS:
            _add_row_sample(scan, dataset, row)
            continue
        try:
            sample = parse_sample_id(dataset, row["sample_id"])
        except NameParseError as err:
            scan.rejected.append(Rejected(row["sample_id"], str(err)))
            continue
        if row.get("label", "") not in ("", str(sample.label)):
            scan.rejected.append(
                Rejected(
                    row["sample_id"],
                    f"index.csv label {row['label']} but the name says "
                    f"{sample.label} ({sample.label_name})",
                )
            )
            continue
        scan.samples.append(sample)
    return dataset, scan


def _add_row_sample(scan: Scan, dataset: str, row: dict[str, str]) -> None:
    """A sample of a dataset whose ids carry no metadata, from its index.csv row."""
    if not row.get("label", "").isdigit():
        scan.rejected.append(Rejected(row["sample_id"], "index.csv gives it no label"))
        return
    scan.samples.append(
        Sample(
            sample_id=row["sample_id"],
            dataset=dataset,
            label=int(row["label"]),
            label_name=row.get("label_name", ""),
            video=row.get("video", ""),
            view=row.get("view", ""),
            split=row.get("split", ""),
        )
    )


def _carve_val(frames: dict[str, pd.DataFrame], protocol: Protocol) -> None:
    """Move `protocol.val_fraction` of each class's train rows (rounded, at least one of a class
    with two or more) to a new `val` split. Rows are ranked by a hash of (val_seed, sample id), so
    a sample's split does not depend on the other samples present."""
    train = frames["train"]
    rank = train["sample_id"].map(
        lambda sample_id: hashlib.blake2b(
            f"{protocol.val_seed}:{sample_id}".encode(), digest_size=8
        ).hexdigest()
    )
    order = train.assign(_rank=rank).sort_values(["label", "_rank"])
    position = order.groupby("label").cumcount()
    size = order.groupby("label")["sample_id"].transform("size")
    wanted = (size * protocol.val_fraction).round().clip(lower=(size >= 2).astype(int))
    is_val = position < wanted
    frames["val"] = train.loc[order.index[is_val]].sort_values("sample_id", ignore_index=True)
    frames["train"] = train.loc[order.index[~is_val]].sort_values("sample_id", ignore_index=True)


def _exclude(samples: list[Sample], names: list[str]) -> tuple[list[Sample], int, int]:
    """Drop samples listed by id or by video (a PKU-MMD video id drops all its clips)."""
    listed = {normalize_name(name) for name in names}
    kept = [
        s for s in samples if s.sample_id not in listed and normalize_name(s.video) not in listed
    ]
    present = {s.sample_id for s in samples} | {normalize_name(s.video) for s in samples}
    return kept, len(samples) - len(kept), len(listed - present)


def _resolve(protocol: Protocol, splits_dir: Path | None) -> tuple[Protocol, str | None]:
    """A protocol with its split ids filled in from its split file, or its fallback rule, plus a
    note."""
    if protocol.split_file is None:
        return protocol, None
    path = splits_dir / protocol.split_file if splits_dir is not None else None
    if path is not None and path.is_file():
        return dataclasses.replace(
            protocol, splits=read_split_file(path), split_file=None, fallback=None
        ), None
    where = f"{path} does not exist" if path is not None else "no --splits-dir given"
    if protocol.fallback is not None:
        rule = ", ".join(
            f"{split} {' '.join(map(str, sorted(ids)))}"
            for split, ids in protocol.fallback.splits.items()
        )
        return protocol.fallback, (
            f"{protocol.name}: {where}; used the official rule on {protocol.fallback.key} ({rule})"
        )
    raise ProtocolError(
        f"{protocol.dataset} {protocol.name} is defined by the official {protocol.split_file} "
        f"({where}): pass --splits-dir DIR, the folder holding it (Split/ in the release)"
    )


def build_manifests(
    samples: list[Sample], protocol: Protocol
) -> tuple[dict[str, pd.DataFrame], int, list[Rejected]]:
    """Rows of each split of one protocol; also the number of samples outside it and the rejects.

    The label is the index of the sample's class name in the protocol's own class list (Toyota's
    cross-view protocols relabel 19 classes), so manifests never depend on integer labels elsewhere.
    """
    rows: dict[str, list[dict[str, object]]] = {split: [] for split in protocol.splits}
    outside = 0
    rejected = []
    for sample in samples:
        value = getattr(sample, protocol.key)
        if sample.label_name not in protocol.classes or value in protocol.unused:
            outside += 1
            continue
        split = protocol.split_of(value)
        if split is None:
            rejected.append(
                Rejected(
                    sample.sample_id,
                    f"{protocol.key} {value} is in no split of {protocol.dataset} {protocol.name}",
                )
            )
            continue
        row = {
            "sample_id": sample.sample_id,
            "label": protocol.classes.index(sample.label_name),
            "label_name": sample.label_name,
        }
        row.update({column: getattr(sample, column) for column in META_COLUMNS})
        rows[split].append(row)
    frames = {}
    for split in sorted(
        rows, key=lambda name: SPLIT_ORDER.index(name) if name in SPLIT_ORDER else 99
    ):
        frames[split] = manifest_frame(rows[split])
    if protocol.val_fraction > 0 and "train" in frames:
        _carve_val(frames, protocol)
        frames = {split: frames[split] for split in SPLIT_ORDER if split in frames}
    return frames, outside, rejected


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write next to the target and rename, so a reader never sees half a manifest; label names
    that a spreadsheet would run as formulas are neutralised (`safe_cell`)."""
    if "label_name" in frame.columns:
        frame = frame.assign(label_name=frame["label_name"].map(safe_cell))
    write_text_atomic(path, frame.to_csv(index=False, lineterminator="\n"))


def write_manifests(report: SplitReport, protocols: dict[str, Protocol], out_dir: Path) -> None:
    """`<out>/manifests/<protocol>_<split>.csv`, `<protocol>_classes.csv` and `rejected.csv` (if
    any)."""
    folder = out_dir / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)  # from a `splits` killed mid-write
    for name, frame in report.manifests.items():
        _write_csv_atomic(frame, folder / f"{name}.csv")
    for name, protocol in protocols.items():
        classes = pd.DataFrame({"label": range(len(protocol.classes)), "name": protocol.classes})
        _write_csv_atomic(classes, folder / f"{name}_classes.csv")
    rejected = folder / "rejected.csv"
    if report.rejected:
        _write_csv_atomic(
            pd.DataFrame([(r.name, r.reason) for r in report.rejected], columns=["name", "reason"]),
            rejected,
        )
    else:
        rejected.unlink(missing_ok=True)
    report.out_dir = folder


def _wanted_protocols(
    dataset: str, protocols: list[str] | None
) -> tuple[dict[str, Protocol], list[str]]:
    """The dataset's protocols by name and the names asked for (all by default), checked before
    any manifest is built, so that a typo fails with the valid choices."""
    if dataset == "generic":
        raise EpamError(
            "generic datasets have no official protocol; make one with `epam-data splits OUT --by "
            "random` (or --by subject, camera, video ...: no group in two splits)"
        )
    available = load_protocols(dataset)
    wanted = protocols or list(available)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ProtocolError(
            f"unknown protocol {', '.join(unknown)} for {dataset}; choose from "
            f"{', '.join(available)}"
        )
    return available, wanted


def make_splits(
    scan: Scan,
    dataset: str,
    out_dir: Path,
    *,
    protocols: list[str] | None = None,
    splits_dir: Path | None = None,
    exclude: list[str] | None = None,
) -> SplitReport:
    """Assign the scanned samples to every requested protocol of the dataset and write the
    manifests.

    A protocol that cannot be built (PKU-MMD cs without its split file) is reported in
    `protocol_errors`; the others are still written. Raises EpamError when no name parsed at all.
    """
    available, wanted = _wanted_protocols(dataset, protocols)
    report = SplitReport(rejected=list(scan.rejected), parsed=len(scan.samples))
    if not scan.samples:
        raise EpamError(
            f"no usable {dataset} sample among the names ({len(scan.rejected)} rejected; first: "
            f"{scan.rejected[0].reason if scan.rejected else 'the list is empty'})"
        )
    samples = scan.samples
    if exclude is not None:
        samples, report.excluded, unmatched = _exclude(samples, exclude)
        if unmatched:
            report.notes.append(
                f"{unmatched} of the {len(set(exclude))} excluded names matched no sample"
            )
    built = {}
    for name in wanted:
        try:
            protocol, note = _resolve(available[name], splits_dir)
        except ProtocolError as err:
            report.protocol_errors.append(str(err))
            continue
        if note:
            report.notes.append(note)
        frames, outside, rejected = build_manifests(samples, protocol)
        report.rejected.extend(rejected)
        built[name] = protocol
        counts: dict[str, object] = {"protocol": name}
        for split, frame in frames.items():
            report.manifests[f"{name}_{split}"] = frame
            counts[split] = len(frame)
        counts["not in protocol"] = outside
        counts["in no split"] = len(rejected)
        report.counts.append(counts)
    write_manifests(report, built, out_dir)
    return report
