"""Exceptions for problems a user can fix. The CLIs print them as one line, without a traceback."""

__all__ = [
    "EpamError",
    "LabelFileError",
    "NameParseError",
    "PoseBackendError",
    "ProtocolError",
    "ShardError",
    "VideoDecodeError",
    "one_line",
]


class EpamError(Exception):
    """A problem the user can fix; the message names the file or value and what would work."""


class NameParseError(EpamError):
    """A file or sample name does not follow the dataset's naming scheme."""


class LabelFileError(EpamError):
    """A label or split file is missing, unreadable or malformed."""


class ProtocolError(EpamError):
    """A protocol cannot be built from what was given (unknown name, missing split file)."""


class VideoDecodeError(EpamError):
    """A video cannot be opened or decoded, or a requested frame is not in it (the extract loop
    records it)."""


class ShardError(EpamError):
    """A prepared dataset folder (shards, index.csv, dataset.json) is inconsistent or cannot be
    written."""


class PoseBackendError(EpamError):
    """A pose backend cannot be loaded (model files or runtime missing, unknown backend, bad
    option)."""


def one_line(text: object, limit: int | None = None) -> str:
    """`text` with every run of whitespace (newlines included) as one space, cut to `limit`
    characters: a reason that fits one row of failures.csv or one line of a terminal, whatever a
    library put in its message."""
    flat = " ".join(str(text).split())
    return flat if limit is None or len(flat) <= limit else flat[:limit]
