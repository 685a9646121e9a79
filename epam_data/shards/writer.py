"""ShardWriter: PreparedSamples into shards, each committed by one rename; the index kept current.

The commit protocol (docs/shard-schema.md): a shard is written as `*.h5.partial`; when it holds
`samples_per_shard` samples or reaches `max_shard_bytes`, or the writer closes, it is fsynced, its
sidecar CSV (the shard's index rows) is written, and it is renamed to `.h5`. Only then are its rows
added to index.csv, at the cost of that shard alone (`index.rebuild_index(..., incremental=True)`).
A kill at any point leaves index.csv listing finished samples only; the next run of the part removes
its leftovers.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import h5py

from epam_data import __version__
from epam_data.atomic import fsync_dir, write_text_atomic
from epam_data.datasets.base import Sample
from epam_data.errors import ShardError
from epam_data.shards.h5io import open_h5, write_group
from epam_data.shards.index import FAILURE_COLUMNS, INDEX_COLUMNS, done_shards, index_row
from epam_data.shards.layout import csv_text, one_line, shards_dir, sidecar, utc_now
from epam_data.shards.lock import FileLock
from epam_data.shards.sample import PreparedSample
from epam_data.shards.schema import ARRAY_DATASETS, HDF5_LIBVER, HEATMAP_DATASETS, SCHEMA_VERSION

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11 on

__all__ = ["DEFAULT_MAX_SHARD_BYTES", "DEFAULT_SAMPLES_PER_SHARD", "ShardWriter"]

DEFAULT_SAMPLES_PER_SHARD = 256
# 2 GiB: large enough that a shard is hundreds of RGB clips (few files, few opens), small enough to
# copy, checksum or re-transfer one shard cheaply, and to stay under the per-file limits of some
# file systems.
SPACE_MARGIN_BYTES = 64 << 20  # free space kept for the index files and HDF5's own metadata
DEFAULT_MAX_SHARD_BYTES = 2 << 30


def _update_index(out_dir: Path) -> None:
    """Add the shards index.csv lacks (a crash's leftovers at start, the shard just finished later).

    Looked up on the package at each call, not imported once, so that a wrapper installed as
    `epam_data.shards.rebuild_index` sees every update the writer makes (the crash tests kill a
    writer there).
    """
    import epam_data.shards as package

    package.rebuild_index(out_dir, incremental=True)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class ShardWriter:
    """Writes PreparedSamples into `<out>/shards/`, `samples_per_shard` to a file, and keeps the
    index current.

    ```
    with ShardWriter(out_dir, samples_per_shard=256, part=(0, 4)) as writer:
        for prepared in samples:        # PreparedSample, any order
            writer.write(prepared)
        writer.fail(sample, "no video stream")
    ```
    Each shard is written as `*.h5.partial` and renamed to `.h5` when full or when the writer
    closes; only then do its rows reach index.csv. Full means `samples_per_shard` samples, or
    `max_shard_bytes` bytes or more (checked after each sample, so a shard ends at the first sample
    that takes it to the bound; one sample larger than the bound gets a shard of its own). `part=(i,
    n)` (0 <= i < n) puts `p{i}of{n}` into the file names so that parts running on several machines
    write into one folder without collisions. Opening the writer takes the part's lock (a second
    writer of the same part is refused), deletes the `.partial` files a killed run of the same part
    left (never another part's) and brings the index up to date. Leaving the `with` block on an
    exception still finishes the shard, so completed samples are kept.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
        part: tuple[int, int] | None = None,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    ):
        self.samples_per_shard = _positive_int("samples_per_shard", samples_per_shard)
        self.max_shard_bytes = _positive_int("max_shard_bytes", max_shard_bytes)
        if part is not None:
            index, count = part
            if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
                raise ValueError(f"part must be (i, n) with 0 <= i < n, got {part!r}")
        self.out_dir = Path(out_dir)
        self.part = part
        self.prefix = "shard" if part is None else f"shard-p{part[0]:03d}of{part[1]:03d}"
        self.samples_written = 0
        self.failures_recorded = 0
        self.shards_finished: list[str] = []
        self._shards_dir = shards_dir(self.out_dir)
        self._shards_dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self._shards_dir / f".{self.prefix}.lock")
        self._no_part_guard: FileLock | None = None
        if not self._lock.acquire(blocking=False):
            parts = self._part_writers() if part is None else ""
            if parts:
                raise ShardError(
                    f"{self.out_dir}: a run with --part is writing here ({parts}); runs with and "
                    "without --part on one folder would prepare the same samples twice"
                )
            which = "the single writer" if part is None else f"part {part[0]}/{part[1]}"
            raise ShardError(
                f"{self.out_dir}: another writer for {which} is running ({self._lock.holder()}); "
                "wait for it to finish, or give this run another --part"
            )
        self._lock.note_holder()
        try:
            self._refuse_mixed_runs()
        except BaseException:
            self._release_locks()
            raise
        self._file: h5py.File | None = None
        self._partial: Path | None = None
        self._rows: list[dict[str, str]] = []
        self._closed = False
        try:
            self._next_number = self._remove_stale()
            self._done = done_shards(self.out_dir)
            _update_index(self.out_dir)  # publishes what a killed run of any part had finished
        except BaseException:
            self._release_locks()
            raise

    def _refuse_mixed_runs(self) -> None:
        """A run with --part and one without on the same folder would both prepare every sample. A
        part writer holds `.shard.lock` shared for its lifetime (parts do not exclude each other),
        the writer without --part holds it exclusively (its own lock), so the two kinds exclude."""
        if self.part is None:
            return
        self._no_part_guard = FileLock(self._shards_dir / ".shard.lock")
        if not self._no_part_guard.acquire(blocking=False, shared=True):
            raise ShardError(
                f"{self.out_dir}: a run without --part is writing here "
                f"({self._no_part_guard.holder()}); runs with and without --part on one folder "
                "would prepare the same samples twice"
            )

    def _release_locks(self) -> None:
        if self._no_part_guard is not None:
            self._no_part_guard.release()
        self._lock.release()

    def _part_writers(self) -> str:
        """'pid 12 on host, ...' of the --part writers running on this folder ('' when none)."""
        holders = []
        for path in self._shards_dir.glob(".shard-p*.lock"):
            probe = FileLock(path)
            if probe.acquire(blocking=False):
                probe.release()
            else:
                holders.append(probe.holder())
        return ", ".join(holders)

    def _own(self, name: str) -> re.Match[str] | None:
        return re.fullmatch(
            rf"\.?{re.escape(self.prefix)}-(\d{{5,}})\.(h5\.partial|h5|csv|csv\.\w+\.tmp)", name
        )

    def _remove_stale(self) -> int:
        """Delete this part's leftovers of a killed run; the number the next shard gets."""
        numbers = [-1]
        for path in self._shards_dir.iterdir():
            match = self._own(path.name)
            if match is None:
                continue
            kind = match.group(2)
            stale = (
                kind == "h5.partial"
                or kind.endswith(".tmp")
                or (kind == "csv" and not path.with_suffix(".h5").exists())
            )
            if stale:
                path.unlink(missing_ok=True)
            elif kind == "h5":
                numbers.append(int(match.group(1)))
        return max(numbers) + 1

    def _open_shard(self) -> None:
        name = f"{self.prefix}-{self._next_number:05d}.h5"
        self._partial = self._shards_dir / f"{name}.partial"
        self._file = open_h5(
            self._partial, "w", libver=HDF5_LIBVER, track_order=True
        )  # groups in write order
        self._file.attrs.update(
            {
                "schema_version": SCHEMA_VERSION,
                "epam_version": __version__,
                "part": "" if self.part is None else f"{self.part[0]}/{self.part[1]}",
                "created": utc_now(),
            }
        )

    def _full(self) -> bool:
        """Whether the current shard has reached one of its bounds (samples, or bytes on disk so
        far)."""
        assert self._file is not None
        return (
            len(self._rows) >= self.samples_per_shard
            or self._file.id.get_filesize() >= self.max_shard_bytes
        )

    def _finish_shard(self) -> None:
        """Close the partial file, write its sidecar, rename it: the commit point. Then update the
        index."""
        assert self._file is not None and self._partial is not None
        final = self._partial.with_suffix("")  # shard-00000.h5.partial -> shard-00000.h5
        self._file.attrs["samples"] = len(self._rows)
        self._file.close()
        self._file = None
        with open(self._partial, "rb") as stream:
            os.fsync(stream.fileno())
        write_text_atomic(sidecar(final), csv_text(self._rows, INDEX_COLUMNS))
        os.replace(self._partial, final)
        fsync_dir(self._shards_dir)
        self._partial = None
        self._rows = []
        self._next_number += 1
        self.shards_finished.append(final.name)
        _update_index(self.out_dir)

    def write(self, prepared: PreparedSample) -> None:
        """Add one sample to the current shard (finishing the shard when it is full).

        A sample already in a finished shard, or written earlier by this writer, raises ShardError:
        skip the ids in `done_ids(out_dir)` before preparing them.
        """
        if not isinstance(prepared, PreparedSample):
            raise TypeError(
                f"ShardWriter.write takes a PreparedSample, got {type(prepared).__name__}"
            )
        if self._closed:
            raise ShardError(
                f"{self.out_dir}: this ShardWriter is closed; open a new one to write more"
            )
        sample_id = prepared.sample_id
        if sample_id in self._done:
            raise ShardError(
                f"{sample_id}: already in {self._shards_dir / self._done[sample_id]}; skip the ids "
                "in done_ids(out_dir) before preparing samples"
            )
        self._check_space(prepared)
        if self._file is None:
            self._open_shard()
        assert self._file is not None and self._partial is not None
        try:
            attrs = write_group(self._file, prepared)
        except BaseException:
            with contextlib.suppress(Exception):
                if sample_id in self._file:
                    del self._file[sample_id]  # never keep half a sample
            raise
        shard = self._partial.with_suffix("").name
        self._rows.append(index_row(attrs, prepared.num_persons, prepared.num_frames, shard))
        self._done[sample_id] = shard
        self.samples_written += 1
        if self._full():
            self._finish_shard()

    def _check_space(self, prepared: PreparedSample) -> None:
        """Refuse a sample the disk cannot take, before HDF5 runs out of space mid-write (h5py has
        been seen to segfault then). Twice the sample's bytes plus a margin for the index files."""
        arrays = (getattr(prepared, name) for name in ARRAY_DATASETS + HEATMAP_DATASETS)
        size = sum(array.nbytes for array in arrays if array is not None)
        size += sum(len(frame) for frame in prepared.rgb or ())
        need, free = 2 * size + SPACE_MARGIN_BYTES, shutil.disk_usage(self._shards_dir).free
        if free < need:
            raise ShardError(
                f"no space left on {self.out_dir}: about {need >> 20} MB needed to write "
                f"{prepared.sample_id}, {free >> 20} MB free; free some space and re-run (finished "
                "samples are kept)"
            )

    def fail(self, sample: Sample | PreparedSample, reason: str) -> None:
        """Record a sample that could not be prepared; it goes to failures.csv until a later run
        succeeds."""
        if isinstance(sample, PreparedSample):
            sample = sample.sample
        log = self._shards_dir / f"{self.prefix}.failures.csv"
        new = not log.exists()
        with open(log, "a", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            if new:
                writer.writerow(FAILURE_COLUMNS)
            writer.writerow(
                [sample.sample_id, sample.path or sample.video, one_line(reason), utc_now()]
            )
        self.failures_recorded += 1

    def close(self) -> None:
        """Finish the current shard (an empty one is deleted), update index.csv and failures.csv,
        unlock."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._file is not None and self._rows:
                self._finish_shard()  # updates the index and failures.csv
                return
            if self._file is not None:
                self._file.close()
                self._file = None
                assert self._partial is not None
                self._partial.unlink(missing_ok=True)
                self._partial = None
            _update_index(self.out_dir)  # failures recorded since the last shard reach failures.csv
        finally:
            self._release_locks()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()  # keep the samples completed before the error
        except Exception:  # noqa: BLE001
            # The original error matters more; the partial is removed by the next run.
            warnings.warn(
                f"{self.out_dir}: could not finish the current shard after "
                f"{exc_type.__name__}; its samples will be redone by the next run",
                stacklevel=2,
            )
        finally:
            self._release_locks()
