"""Splits for a dataset without an official protocol: `epam-data splits OUT --by FIELD`.

Samples are grouped by one column of index.csv (subject, camera, setup, view, video, or any other;
`random` makes every sample its own group) and whole groups go to test, then to val (out of what
is left for training), so that no group is in two splits: a subject never appears in both train and
test. The test groups are either named (`--test 3,7`) or chosen for a share of the samples
(`--test-fraction 0.2 --seed 0`), greedily and class by class, in the spirit of scikit-learn's
StratifiedGroupKFold: the groups are visited in a seeded random order, largest first, and each goes
to the side whose counts it brings closer to the target shares. The manifests have the
columns and names of the official ones (`manifests/<name>_<split>.csv`, `<name>_classes.csv`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from epam_data.errors import EpamError
from epam_data.protocols import Protocol
from epam_data.splits import SPLIT_ORDER, SplitReport, manifest_frame, write_manifests

__all__ = ["SplitPlan", "hold_out_groups", "make_custom_splits"]

RANDOM = "random"


@dataclass(frozen=True)
class SplitPlan:
    """How to split: the grouping column (or "random"), the test groups by value or the test share,
    the share of the remaining samples that becomes val, the seed, and the protocol name."""

    by: str
    test_values: tuple[str, ...] = ()
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    name: str = ""

    @property
    def protocol(self) -> str:
        return self.name or (RANDOM if self.by == RANDOM else f"by_{self.by}")


def hold_out_groups(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """A boolean mask of the samples held out: whole groups, about `fraction` of each class.

    Groups are visited largest first (ties in a seeded random order); each goes to the held-out side
    when that brings both sides' counts, per class and in all, closer (squared error) to `fraction`
    and 1 - `fraction` of the totals (`_cost`). At least one group is held out and one kept when
    there are two or more.
    """
    classes, label_index = np.unique(labels, return_inverse=True)
    names, group_index = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(names), len(classes)))
    np.add.at(counts, (group_index, label_index), 1)
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]
    total = counts.sum(0)
    held, kept = np.zeros(len(classes)), np.zeros(len(classes))
    chosen = np.zeros(len(names), bool)
    for group in order:
        as_held = _cost(held + counts[group], kept, total, fraction)
        as_kept = _cost(held, kept + counts[group], total, fraction)
        chosen[group] = as_held < as_kept
        held, kept = (held + counts[group], kept) if chosen[group] else (held, kept + counts[group])
    if len(names) >= 2 and not chosen.any():
        chosen[order[-1]] = True
    if len(names) >= 2 and chosen.all():
        chosen[order[0]] = False
    return chosen[group_index]


def _cost(held: np.ndarray, kept: np.ndarray, total: np.ndarray, fraction: float) -> float:
    """Squared distance of both sides from their targets, class by class and in all: the total
    fills the sides in proportion, the classes decide between groups of equal size (with a few
    samples per class, the class terms alone would keep every group)."""
    held_error, kept_error = held - fraction * total, kept - (1 - fraction) * total
    per_class = (held_error**2).sum() + (kept_error**2).sum()
    return float(per_class + held_error.sum() ** 2 + kept_error.sum() ** 2)


def _read_index(dataset_dir: Path, by: str) -> pd.DataFrame:
    """The usable rows of index.csv (status ok, with a label) and the grouping column checked."""
    path = dataset_dir / "index.csv"
    if not path.is_file():
        raise EpamError(f"{dataset_dir}: no index.csv; --by splits a prepared dataset folder")
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    index = index[index["status"].isin(["ok", ""]) & index["label"].str.isdigit()]
    if index.empty:
        raise EpamError(f"{path}: no sample with status ok and a label to split")
    if by == RANDOM:
        return index.assign(_group=index["sample_id"])
    if by not in index.columns:
        usable = [c for c in index.columns if index[c].nunique() > 1 and c not in ("shard",)]
        raise EpamError(f"--by {by}: not a column of {path}; columns that vary: {usable}")
    empty = int((index[by] == "").sum())
    if empty:
        raise EpamError(
            f"--by {by}: {empty} of {len(index)} samples have no {by}; group by another column "
            "or by random"
        )
    return index.assign(_group=index[by])


def _test_mask(index: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    if plan.test_values:
        values = set(plan.test_values)
        unknown = sorted(values - set(index["_group"]))
        if unknown:
            known = sorted(set(index["_group"]), key=_natural)[:20]
            raise EpamError(
                f"--test {','.join(unknown)}: no sample has {plan.by} {unknown[0]}; "
                f"values present: {', '.join(known)}"
            )
        return index["_group"].isin(values).to_numpy()
    if not 0 < plan.test_fraction < 1:
        raise EpamError(f"--test-fraction {plan.test_fraction}: must be between 0 and 1")
    labels = index["label"].astype(int).to_numpy()
    return hold_out_groups(labels, index["_group"].to_numpy(), plan.test_fraction, plan.seed)


def _natural(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.lstrip("-").isdigit() else (1, value)


def _classes(index: pd.DataFrame) -> tuple[str, ...]:
    """Class names by label, from the index (a label without a name is named by its number)."""
    names = index.groupby(index["label"].astype(int))["label_name"].first()
    return tuple(str(names.get(label) or label) for label in range(int(names.index.max()) + 1))


def make_custom_splits(dataset_dir: Path, plan: SplitPlan, out_dir: Path) -> SplitReport:
    """Write `<plan.protocol>_{train,val,test}.csv` and its classes file (module docstring)."""
    index = _read_index(dataset_dir, plan.by)
    is_test = _test_mask(index, plan)
    rest = index[~is_test]
    is_val = np.zeros(len(rest), bool)
    if plan.val_fraction > 0 and rest["_group"].nunique() >= 2:
        labels = rest["label"].astype(int).to_numpy()
        is_val = hold_out_groups(labels, rest["_group"].to_numpy(), plan.val_fraction, plan.seed)
    parts = {"train": rest[~is_val], "val": rest[is_val], "test": index[is_test]}
    report = SplitReport(parsed=len(index))
    name = plan.protocol
    counts: dict[str, object] = {"protocol": name}
    for split in SPLIT_ORDER:
        if len(parts[split]) or split != "val":
            report.manifests[f"{name}_{split}"] = manifest_frame(parts[split])
            counts[split] = len(parts[split])
    counts["not in protocol"], counts["in no split"] = 0, 0
    report.counts.append(counts)
    groups = {split: sorted(set(part["_group"]), key=_natural) for split, part in parts.items()}
    if plan.by != RANDOM:
        report.notes.append(
            f"{plan.by} per split: "
            + "; ".join(
                f"{s} {', '.join(v[:12])}{' ...' if len(v) > 12 else ''}"
                for s, v in groups.items()
                if v
            )
        )
    classes = _classes(index)
    protocol = Protocol("custom", name, f"grouped by {plan.by}", plan.by, {}, classes)
    write_manifests(report, {name: protocol}, out_dir)
    return report


def class_balance(report: SplitReport) -> pd.DataFrame:
    """Samples per class (rows, by name) and split (columns) of the manifests in `report`."""
    columns = {
        name.rsplit("_", 1)[1]: frame["label_name"].value_counts()
        for name, frame in report.manifests.items()
    }
    return pd.DataFrame(columns).fillna(0).astype(int).sort_index()
