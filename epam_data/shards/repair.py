"""repair_dataset: damaged shards moved aside, the index rebuilt, so that a re-run re-creates their
samples.

A finished shard that fails `verify --deep` (cut short, bit rot caught by its checksums, values no
extractor writes) is never edited in place: it moves with its sidecar to OUT/damaged/, where a
person can still look at it, and index.csv is rebuilt from the shards that remain. Its samples are
then simply not done, and the next `epam-data extract` (or `import-pyskl`) with the same options
prepares exactly those again. Run it while no writer works on OUT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from epam_data.atomic import fsync_dir
from epam_data.shards.index import rebuild_index
from epam_data.shards.layout import finished_shards, sidecar
from epam_data.shards.verify import shards_damage

__all__ = ["DAMAGED_DIR", "RepairReport", "repair_dataset"]

DAMAGED_DIR = "damaged"


@dataclass
class RepairReport:
    """What `repair_dataset` did: shards moved (with why) and how many samples the index lists
    now."""

    moved: dict[str, list[str]] = field(default_factory=dict)  # shard name -> its problems
    samples: int = 0


def _move_aside(shard: Path, target_dir: Path) -> None:
    """The shard and its sidecar into `target_dir`, never over an earlier file of the same name."""
    target_dir.mkdir(exist_ok=True)
    for path in (shard, sidecar(shard)):
        if not path.exists():
            continue
        target, copy = target_dir / path.name, 1
        while target.exists():
            target, copy = target_dir / f"{path.stem}.{copy}{path.suffix}", copy + 1
        path.rename(target)
    fsync_dir(shard.parent)
    fsync_dir(target_dir)


def repair_dataset(out_dir: str | Path, *, deep: bool = True) -> RepairReport:
    """Move every damaged finished shard of `out_dir` to OUT/damaged/ and rebuild index.csv (module
    docstring). deep=False only catches shards that do not open or whose groups break the
    schema."""
    out_dir = Path(out_dir)
    report = RepairReport()
    for shard, problems in shards_damage(finished_shards(out_dir), deep=deep).items():
        _move_aside(shard, out_dir / DAMAGED_DIR)
        report.moved[shard.name] = problems
    report.samples = rebuild_index(out_dir)
    return report
