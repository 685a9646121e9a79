"""Files that readers see whole or not at all: written next to their place, flushed to disk, then
renamed.

Every file epam writes that another process (or a re-run after `kill -9`) may read goes through
here: index.csv, failures.csv, dataset.json, manifests, exported pickles, checkpoints, metrics. The
temporary file is hidden (`.<name>.<random>.tmp`) in the target's folder, so the rename never
crosses a file system, and it is removed when writing fails; only a killed process can leave one
behind, and nothing reads it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TypeVar

__all__ = [
    "fsync_dir",
    "remove_stale_temps",
    "safe_cell",
    "write_atomic",
    "write_csv_atomic",
    "write_text_atomic",
]

Result = TypeVar("Result")


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Result]) -> Result:
    """`write(stream)` into a binary temporary file beside `path`, then rename it over `path`;
    returns what `write` returned. The file gets the usual permissions (mkstemp alone would make it
    private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)
        with os.fdopen(handle, "wb", buffering=1 << 20) as stream:
            result = write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return result


def remove_stale_temps(folder: str | Path, pattern: str = "*") -> list[Path]:
    """Delete the temporary files that killed writers left in `folder` (`.<name>.<random>.tmp` for
    names matching `pattern`); returns them. Call it only where no live writer can be mid-write
    (under the folder's lock, or before a run starts writing there): a `kill -9` leaves them, and
    nothing else removes them."""
    stale = sorted(Path(folder).glob(f".{pattern}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_text_atomic(path: str | Path, text: str) -> None:
    """`text` as UTF-8 into `path`, atomically (see `write_atomic`)."""
    write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula (`=HYPERLINK(...)`, `+cmd|...`, `@SUM`)
    gets a leading apostrophe, as OWASP advises for CSV files; numbers (`-1`) and other text stay.
    For free text (label names, reasons), never for ids and paths that programs read back."""
    if not isinstance(value, str) or not value.startswith(FORMULA_START):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def write_csv_atomic(
    path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    """A CSV (header, then rows; "\n" line ends) that readers see whole or not at all; text cells
    that would run as spreadsheet formulas are neutralised (`safe_cell`)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
    write_text_atomic(path, buffer.getvalue())
