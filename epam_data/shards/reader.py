"""ShardReader: the samples listed in index.csv as a read-only mapping, safe in DataLoader workers.

Only index.csv says which samples exist (docs/shard-schema.md): it lists finished shards only, so a
reader never sees a sample a writer is still writing.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from epam_data.errors import ShardError
from epam_data.shards.h5io import local_group, open_h5, read_group
from epam_data.shards.index import INDEX_COLUMNS
from epam_data.shards.layout import SHARD_FILE, finished_shards, read_csv, shards_dir
from epam_data.shards.sample import PreparedSample

if TYPE_CHECKING:
    import pandas as pd
    from typing_extensions import Self  # typing.Self from Python 3.11 on

__all__ = ["ShardReader"]


class ShardReader(Mapping[str, PreparedSample]):
    """The samples listed in `<out>/index.csv`, as a read-only mapping `sample_id ->
    PreparedSample`.

    `len(reader)`, `sample_id in reader`, `reader[sample_id]`, iteration over ids in index order,
    and `reader.read(sample_id, frames=..., rgb=False)` for a window of frames or without the large
    parts. Shard files are opened on first use and per process: after a fork (DataLoader workers)
    the child opens its own handles, and a pickled reader carries no handles, so one reader can be
    handed to `torch.utils.data.DataLoader(num_workers=N)` whatever the start method. At most
    `max_open_files` shards are open at once.
    """

    def __init__(self, out_dir: str | Path, *, max_open_files: int = 64):
        self.out_dir = Path(out_dir)
        self.max_open_files = max_open_files
        index = self.out_dir / "index.csv"
        if not index.is_file():
            hint = (
                " (shards/ exists: `epam-data verify --repair` rebuilds it)"
                if finished_shards(self.out_dir)
                else ""
            )
            raise ShardError(
                f"{self.out_dir}: no index.csv{hint}; "
                "is this a folder written by `epam-data extract`?"
            )
        header, self.rows = read_csv(index)
        missing = [column for column in ("sample_id", "shard") if column not in header]
        if missing:
            raise ShardError(
                f"{index}: no {' or '.join(missing)} column; rebuild it with "
                "`epam-data verify --repair`"
            )
        self._shard_of = {row["sample_id"]: row["shard"] for row in self.rows}
        self._files: OrderedDict[str, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    def _shard_file(self, sample_id: str) -> h5py.File:
        """The open shard holding `sample_id` (opened now if needed; the least recently used one
        closed)."""
        if (
            self._pid != os.getpid()
        ):  # forked: the parent's handles are not ours to use (or to close)
            self._files = OrderedDict()
            self._pid = os.getpid()
        shard = self._shard_of[sample_id]
        h5file = self._files.get(shard)
        if h5file is not None:
            self._files.move_to_end(shard)
            return h5file
        if not SHARD_FILE.match(shard):  # a hostile or broken index must not open files elsewhere
            raise ShardError(
                f"{self.out_dir / 'index.csv'}: {sample_id} names shard {shard!r}, not a shard "
                "file name (shard-NNNNN.h5); run `epam-data verify --repair` on the folder"
            )
        path = shards_dir(self.out_dir) / shard
        try:
            h5file = open_h5(path)
        except OSError as err:
            raise ShardError(
                f"{path}: cannot open the shard that index.csv lists for {sample_id} ({err}); run "
                "`epam-data verify` on the folder"
            ) from err
        self._files[shard] = h5file
        while len(self._files) > self.max_open_files:
            self._files.popitem(last=False)[1].close()
        return h5file

    def _group(self, sample_id: str) -> h5py.Group:
        if sample_id not in self._shard_of:
            raise KeyError(f"{sample_id!r} is not in {self.out_dir / 'index.csv'}")
        h5file = self._shard_file(sample_id)
        try:
            return local_group(h5file, sample_id)
        except KeyError as err:
            raise ShardError(
                f"{h5file.filename}: no group {sample_id!r} although index.csv lists it there; "
                "rebuild the index with `epam-data verify --repair`"
            ) from err

    def read(
        self,
        sample_id: str,
        *,
        frames: Sequence[int] | np.ndarray | None = None,
        rgb: bool = True,
        heatmaps: bool = True,
    ) -> PreparedSample:
        """One sample; `frames` picks positions along its T kept frames (any order, repeats
        allowed), and `rgb=False` / `heatmaps=False` skip those datasets. Only the data asked for is
        read."""
        group = self._group(sample_id)
        selected = None
        if frames is not None:
            selected = np.asarray(frames, dtype=np.int64)
            kept = group["keypoints"].shape[1]
            if (
                selected.ndim != 1
                or selected.size == 0
                or selected.min() < 0
                or selected.max() >= kept
            ):
                raise IndexError(
                    f"{sample_id}: frames must be positions in 0..{kept - 1}, got {frames!r}"
                )
        return read_group(group, frames=selected, rgb=rgb, heatmaps=heatmaps)

    def __getitem__(self, sample_id: str) -> PreparedSample:
        return self.read(sample_id)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._shard_of

    def __iter__(self) -> Iterator[str]:
        return iter(self._shard_of)

    def __len__(self) -> int:
        return len(self._shard_of)

    @property
    def index(self) -> pd.DataFrame:
        """index.csv as a DataFrame of strings (empty cells are '')."""
        import pandas as pd

        return pd.DataFrame(
            self.rows, columns=list(self.rows[0]) if self.rows else list(INDEX_COLUMNS), dtype=str
        )

    def close(self) -> None:
        if self._pid == os.getpid():
            for h5file in self._files.values():
                h5file.close()
        self._files = OrderedDict()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()
