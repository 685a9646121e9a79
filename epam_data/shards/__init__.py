"""Prepared datasets on disk: HDF5 shards (schema 1), their writer, reader, index and checks.

A prepared dataset is a folder (docs/shard-schema.md has the schema and the commit protocol in
full):

    <out>/shards/shard-00000.h5       a finished shard (`shard-p001of004-00000.h5` for part=(1, 4))
    <out>/shards/shard-00000.csv      its index rows (its sidecar), written before the rename
    <out>/shards/shard.failures.csv   the failures one writer (one part) recorded, as they happen
    <out>/index.csv                   the sidecars of all finished shards, in shard-name order
    <out>/failures.csv                the failures of all writers, minus samples done since
    <out>/dataset.json                dataset, schema version and the options samples were made with

Inside a shard, one group per sample (`/<sample_id>/`, in write order) holding the datasets of
`schema.DATASETS` and the attributes of `schema.ATTRIBUTES` (plus the sample's `extra` attributes);
any HDF5 tool opens it (file format of HDF5 1.10, whatever library version writes it).

Nothing half-written is ever read: a shard is written as `*.h5.partial` and becomes visible in one
`rename` once it is complete and on disk; its sidecar is written before that rename, and only then
are its rows added to index.csv, which is only ever replaced whole under an exclusive lock. So at
any moment, and after a `kill -9` at any moment, index.csv lists finished samples only. Several
writers (`--part i/n` jobs on several machines) share one folder: each writes only files carrying
its own part in their names.

One job per module:
    schema        the table of datasets and attributes that writing, reading and verification follow
    sample        PreparedSample and its validation
    h5io          one sample group written to and read from HDF5
    layout        file names of the folder, and the CSV and time formats its files share
    lock          the exclusive file lock (released by the kernel on kill -9)
    index         index.csv and failures.csv: full rebuild, per-shard incremental update; done_ids
    dataset_json  dataset.json: written once, compared on every later run
    writer        ShardWriter: samples into shards, each committed by a rename
    reader        ShardReader: the indexed samples as a mapping, safe in DataLoader workers
    verify        verify_dataset: every inconsistency, one line each
"""

from __future__ import annotations

# `os` stays reachable as `epam_data.shards.os`, as it was when this package was one module: the
# crash tests patch `os.replace` through it to kill a writer at its commit point.
import os  # noqa: F401

from epam_data.shards.dataset_json import read_dataset_json, write_dataset_json
from epam_data.shards.index import FAILURE_COLUMNS, INDEX_COLUMNS, done_ids, rebuild_index
from epam_data.shards.reader import ShardReader
from epam_data.shards.repair import RepairReport, repair_dataset
from epam_data.shards.sample import PreparedSample
from epam_data.shards.schema import (
    ARRAY_DATASETS,
    ATTRIBUTES,
    DATASETS,
    HDF5_LIBVER,
    HEATMAP_CHUNK_BYTES,
    HEATMAP_DATASETS,
    HEATMAP_GZIP_LEVEL,
    NUM_JOINTS,
    RESERVED_ATTRS,
    SAMPLE_FIELDS,
    SCHEMA_VERSION,
    AttributeSpec,
    DatasetSpec,
)
from epam_data.shards.verify import verify_dataset
from epam_data.shards.writer import DEFAULT_MAX_SHARD_BYTES, DEFAULT_SAMPLES_PER_SHARD, ShardWriter

__all__ = [
    "ARRAY_DATASETS",
    "ATTRIBUTES",
    "DATASETS",
    "DEFAULT_MAX_SHARD_BYTES",
    "DEFAULT_SAMPLES_PER_SHARD",
    "FAILURE_COLUMNS",
    "HDF5_LIBVER",
    "HEATMAP_CHUNK_BYTES",
    "HEATMAP_DATASETS",
    "HEATMAP_GZIP_LEVEL",
    "INDEX_COLUMNS",
    "NUM_JOINTS",
    "RESERVED_ATTRS",
    "SAMPLE_FIELDS",
    "SCHEMA_VERSION",
    "AttributeSpec",
    "DatasetSpec",
    "PreparedSample",
    "RepairReport",
    "ShardReader",
    "ShardWriter",
    "done_ids",
    "read_dataset_json",
    "rebuild_index",
    "repair_dataset",
    "verify_dataset",
    "write_dataset_json",
]
