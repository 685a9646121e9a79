"""The protocol facts shipped in `manifests/` (installed as `epam_manifests`): class names and split
rules.

Everything dataset-specific that is a fact rather than code (subject ids, cameras, setups, class
names) lives in those YAML and CSV files; this module only reads and checks them.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from epam_data.errors import ProtocolError

__all__ = ["DATASETS", "Protocol", "class_names", "load_protocols", "protocol_names"]

DATASETS = ("ntu60", "ntu120", "pku_mmd", "toyota", "penn_action")


@dataclass(frozen=True)
class Protocol:
    """One benchmark: which metadata field decides the split, and the ids of each split.

    `key` is a `Sample` attribute (subject, camera, setup, view, video). `splits` maps a split name
    (train, val, test) to the ids it holds; it is empty for protocols read from a `split_file` at
    run time (PKU-MMD), where `fallback` may hold a rule to use when the file is not given.
    `classes` are the protocol's class names by label; a sample whose class is not among them is not
    part of it, nor is one whose key is in `unused` (ids a protocol leaves out on purpose, like
    Toyota CV1's cameras 3, 4, 6 and 7). Any other key value in no split is an error in the data and
    is reported. With `val_fraction` > 0 a `val` split is carved from `train`: that fraction of each
    class's train samples, chosen by a hash of (`val_seed`, sample id) (Penn Action, whose release
    has no validation split).
    """

    dataset: str
    name: str
    description: str
    key: str
    splits: dict[str, frozenset[Any]]
    classes: tuple[str, ...]
    split_file: str | None = None
    fallback: Protocol | None = None
    unused: frozenset[Any] = frozenset()
    val_fraction: float = 0.0
    val_seed: int = 0

    def split_of(self, value: Any) -> str | None:
        """The split whose ids contain `value`, or None when no split does."""
        for split, ids in self.splits.items():
            if value in ids:
                return split
        return None


def _manifest_file(name: str) -> str:
    return resources.files("epam_manifests").joinpath(name).read_text(encoding="utf-8")


@functools.cache
def _read_classes(file_name: str) -> tuple[str, ...]:
    lines = [
        line for line in _manifest_file(file_name).splitlines() if line and not line.startswith("#")
    ]
    rows = list(csv.DictReader(lines))
    names = tuple(row["name"] for row in sorted(rows, key=lambda row: int(row["label"])))
    assert [int(row["label"]) for row in rows] == list(range(len(rows))), (
        f"{file_name}: labels not 0..n-1"
    )
    return names


@functools.cache
def _read_dataset(dataset: str) -> dict[str, Any]:
    if dataset not in DATASETS:
        raise ProtocolError(
            f"unknown dataset {dataset!r}; protocols exist for {', '.join(DATASETS)}"
        )
    return yaml.safe_load(_manifest_file(f"{dataset}.yaml"))


def class_names(dataset: str, protocol: str | None = None) -> tuple[str, ...]:
    """Class names indexed by label: the dataset's full list, or the list of one protocol (Toyota
    CV: 19)."""
    if protocol is not None:
        return load_protocols(dataset)[protocol].classes
    spec = _read_dataset(dataset)
    return _read_classes(spec["classes"])[: spec["num_classes"]]


def _build_protocol(
    dataset: str, name: str, spec: dict[str, Any], classes: tuple[str, ...]
) -> Protocol:
    splits = {split: frozenset(ids) for split, ids in (spec.get("splits") or {}).items()}
    fallback = spec.get("fallback")
    return Protocol(
        dataset=dataset,
        name=name,
        description=spec.get("description", ""),
        key=spec["key"],
        splits=splits,
        classes=_read_classes(spec["classes"]) if "classes" in spec else classes,
        split_file=spec.get("split_file"),
        fallback=_build_protocol(dataset, name, fallback, classes) if fallback else None,
        unused=frozenset(spec.get("unused", ())),
        val_fraction=float(spec.get("val_fraction", 0.0)),
        val_seed=int(spec.get("val_seed", 0)),
    )


@functools.cache
def load_protocols(dataset: str) -> dict[str, Protocol]:
    """All protocols of a dataset by name, in the order of its manifest file."""
    spec = _read_dataset(dataset)
    classes = class_names(dataset)
    return {
        name: _build_protocol(dataset, name, proto, classes)
        for name, proto in spec["protocols"].items()
    }


def protocol_names(dataset: str) -> list[str]:
    return list(load_protocols(dataset))
