"""Shards on real HDF5 files: round trips, rollover, the index, resume after a real `kill -9`,
parallel parts."""

from __future__ import annotations

import csv
import dataclasses
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ntu_sample, prepared_sample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from epam_data.cli import app
from epam_data.datasets.base import Sample
from epam_data.errors import EpamError, ShardError
from epam_data.shards import (
    INDEX_COLUMNS,
    RESERVED_ATTRS,
    PreparedSample,
    ShardReader,
    ShardWriter,
    done_ids,
    read_dataset_json,
    rebuild_index,
    verify_dataset,
    write_dataset_json,
)
from epam_data.splits import scan_index

pytestmark = pytest.mark.usefixtures("pyav")  # the samples carry real JPEG frames encoded by ffmpeg

TESTS = Path(__file__).resolve().parent
ARRAYS = ("keypoints", "scores", "boxes", "frame_indices", "joint_heatmaps", "limb_heatmaps")
runner = CliRunner()
OPTIONS = {"backend": "blazepose", "max_persons": 2, "rgb_size": 256, "frame_stride": 1}

# A writer in its own process, as `epam-data extract` runs it: skip what is done, write the rest,
# report each sample on stdout. argv: out, number of samples, samples per shard, part index, part
# count ("-" for none), and a kill point ("" for none) at which the process SIGKILLs itself.
WORKER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[7])
    from conftest import ntu_sample, prepared_sample
    import epam_data.shards as shards

    out, count, per_shard, part_index, part_count, kill_at = sys.argv[1:7]
    part = None if part_index == "-" else (int(part_index), int(part_count))
    if kill_at == "before_rename":  # shard and sidecar complete, rename not yet done
        real_replace = os.replace
        def replace(src, dst):
            if str(src).endswith(".h5.partial"):
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
        shards.os.replace = replace
    if kill_at == "before_index":  # shard renamed, index.csv not yet rebuilt
        real_rebuild, calls = shards.rebuild_index, []
        def rebuild(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:  # the first call is the writer's own start-up rebuild
                os.kill(os.getpid(), signal.SIGKILL)
            return real_rebuild(*args, **kwargs)
        shards.rebuild_index = rebuild
    shards.write_dataset_json(out, "ntu60", {"backend": "blazepose", "max_persons": 2,
                                             "rgb_size": 256, "frame_stride": 1})
    todo = [i for i in range(int(count)) if part is None or i % part[1] == part[0]]
    done = shards.done_ids(out)
    with shards.ShardWriter(out, samples_per_shard=int(per_shard), part=part) as writer:
        skipped = 0
        for i in todo:
            prepared = prepared_sample(i, frames=8, heatmaps=True)
            if prepared.sample_id in done:
                skipped += 1
                continue
            if i % 11 == 5 and not os.environ.get("EPAM_TEST_FIXED"):
                writer.fail(prepared.sample, f"simulated decode error for sample {i}")
                continue
            writer.write(prepared)
            print("wrote", prepared.sample_id, flush=True)
    print("skipped", skipped, flush=True)
""")


def start_writer(
    out: Path,
    count: int,
    per_shard: int,
    part: tuple[int, int] | None = None,
    kill_at: str = "",
    fixed: bool = False,
) -> subprocess.Popen:
    args = [
        sys.executable,
        "-c",
        WORKER,
        str(out),
        str(count),
        str(per_shard),
        *(("-", "-") if part is None else map(str, part)),
        kill_at,
        str(TESTS),
    ]
    env = {**os.environ, **({"EPAM_TEST_FIXED": "1"} if fixed else {})}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def all_ids(count: int) -> set[str]:
    return {ntu_sample(i).sample_id for i in range(count)}


NUMBER_OF = {ntu_sample(i).sample_id: i for i in range(120)}


def index_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "index.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def failure_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "failures.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def finished_shards(out: Path) -> list[str]:
    return sorted(path.name for path in (out / "shards").glob("*.h5"))


def assert_same_sample(got: PreparedSample, want: PreparedSample) -> None:
    assert got.sample == want.sample
    for name in ARRAYS:
        expected = getattr(want, name)
        if expected is None:
            assert getattr(got, name) is None, name
        else:
            assert getattr(got, name).dtype == expected.dtype, name
            np.testing.assert_array_equal(getattr(got, name), expected, err_msg=name)
    assert got.rgb == want.rgb
    scalars = (
        "total_frames",
        "original_hw",
        "fps",
        "crop_box",
        "num_person_raw",
        "source",
        "status",
        "extra",
    )
    for name in scalars:
        assert getattr(got, name) == getattr(want, name), name


def assert_consistent(out: Path) -> list[dict[str, str]]:
    """What must hold after any kill: the index lists only finished shards, each row once, all
    readable."""
    rows = index_rows(out)
    ids = [row["sample_id"] for row in rows]
    assert len(ids) == len(set(ids))
    assert set(ids) == done_ids(out)
    assert {row["shard"] for row in rows} <= set(finished_shards(out))
    reader = ShardReader(out)
    for sample_id in reader:
        assert_same_sample(
            reader[sample_id], prepared_sample(NUMBER_OF[sample_id], frames=8, heatmaps=True)
        )
    reader.close()
    return rows


# --- PreparedSample -------------------------------------------------------------------------------


def test_prepared_sample_normalises_what_it_is_given():
    sample = prepared_sample(1)
    assert sample.sample_id == "S001C002P002R001A002" and sample.sample.label == 1
    assert (sample.num_persons, sample.num_frames) == (2, 12)
    assert isinstance(sample.rgb, tuple) and sample.frame_indices.dtype == np.int32
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.status = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"keypoints": np.zeros((2, 12, 17, 2))},
            "keypoints must be float32 .* got float64; convert it",
        ),
        (
            {"keypoints": np.zeros((2, 12, 25, 2), np.float32)},
            r"keypoints must be float32 \[\?, \?, 17, 2\]",
        ),
        (
            {"scores": np.zeros((2, 11, 17), np.float16)},
            r"scores must be float16 \[2, 12, 17\], got shape",
        ),
        ({"scores": np.zeros((2, 12, 17), np.float32)}, "scores must be float16"),
        ({"boxes": np.zeros((1, 12, 5), np.float32)}, r"boxes must be float32 \[2, 12, 5\]"),
        ({"keypoints": np.full((2, 12, 17, 2), np.nan, np.float32)}, "NaN"),
        ({"rgb": [b"\x89PNG"] * 12}, "rgb frame 0 is not JPEG data"),
        ({"rgb": [b"\xff\xd8"] * 11}, "rgb must be a list of 12 JPEG"),
        ({"joint_heatmaps": np.zeros((12, 17, 8, 8), np.float32)}, "joint_heatmaps must be uint8"),
        ({"frame_indices": np.arange(11)}, "frame_indices must be 12 integers"),
        ({"frame_indices": np.arange(12) + 20}, r"frame_indices must lie in 0\.\.24"),
        ({"total_frames": 0}, "total_frames must be an integer >= 1"),
        ({"original_hw": (1080,)}, "original_hw must be"),
        ({"crop_box": (10, 10, 5, 20)}, "crop_box must be"),
        ({"status": ""}, "status must be"),
        ({"extra": {"label": 3}}, "extra key 'label' is not allowed"),
        ({"extra": {"nested": {"a": 1}}}, "extra 'nested' must be"),
        ({"extra": {"note": "a\x00b"}}, "extra 'note' contains a NUL"),
        ({"source": "video\x00.avi"}, "source contains a NUL"),
        ({"sample": Sample("a/b", "ntu60", 1, "x")}, "cannot name an HDF5 group"),
        (
            {
                "keypoints": np.zeros((2, 0, 17, 2), np.float32),
                "scores": np.zeros((2, 0, 17), np.float16),
                "boxes": np.zeros((2, 0, 5), np.float32),
            },
            "no frames",
        ),
    ],
)
def test_prepared_sample_refuses_bad_arrays_and_metadata_with_a_clear_message(change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        dataclasses.replace(prepared_sample(1), **change)


# --- writer and reader ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persons", "rgb", "heatmaps"), [(2, True, True), (1, True, False), (0, False, False)]
)
def test_round_trip_write_read_is_exact(tmp_path, persons, rgb, heatmaps):
    samples = [prepared_sample(i, persons=persons, rgb=rgb, heatmaps=heatmaps) for i in range(5)]
    samples[3] = dataclasses.replace(
        samples[3],
        crop_box=None,
        fps=0.0,
        status="no_person",
        extra={},
        sample=dataclasses.replace(samples[3].sample, label=None, subject=None),
    )
    with ShardWriter(tmp_path, samples_per_shard=2) as writer:
        for sample in reversed(samples):
            writer.write(sample)
    reader = ShardReader(tmp_path)
    assert len(reader) == 5 and list(reader) == [s.sample_id for s in reversed(samples)]
    for sample in samples:
        assert sample.sample_id in reader
        assert_same_sample(reader[sample.sample_id], sample)
    assert "S999" not in reader
    with pytest.raises(KeyError, match="S999"):
        reader["S999"]
    assert verify_dataset(tmp_path, deep=True) == [f"{tmp_path}: no dataset.json"]


_ids = st.text(
    st.characters(blacklist_characters="/\x00\r\n", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=30,
).filter(lambda text: text not in (".", ".."))
_extra_values = st.one_of(
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20),
    st.integers(-(2**62), 2**62),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample_ids=st.lists(_ids, min_size=1, max_size=4, unique=True),
    persons=st.integers(0, 3),
    frames=st.integers(1, 20),
    rgb=st.booleans(),
    heatmap_frames=st.none() | st.integers(1, 6),
    extra=st.dictionaries(
        st.text(  # HDF5 stores names as UTF-8: no lone surrogates (the writer refuses those)
            st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
            min_size=1,
            max_size=10,
        ).filter(lambda key: key not in RESERVED_ATTRS),
        _extra_values,
        max_size=4,
    ),
)
def test_round_trip_of_any_ids_shapes_and_attributes(
    sample_ids, persons, frames, rgb, heatmap_frames, extra
):
    """Generic datasets name samples after paths: any id that can name an HDF5 group survives, as do
    extras."""
    samples = []
    for number, sample_id in enumerate(sample_ids):
        template = prepared_sample(number, persons=persons, frames=frames, rgb=rgb)
        volume = (
            None
            if heatmap_frames is None
            else np.full((heatmap_frames, 3, 4, 5), number, dtype=np.uint8)
        )
        samples.append(
            dataclasses.replace(
                template,
                sample=Sample(sample_id, "generic", number, "class"),
                joint_heatmaps=volume,
                extra=extra,
            )
        )
    with tempfile.TemporaryDirectory() as out:
        with ShardWriter(out, samples_per_shard=3) as writer:
            for sample in samples:
                writer.write(sample)
        with ShardReader(out) as reader:
            assert list(reader) == sample_ids
            for sample in samples:
                assert_same_sample(reader[sample.sample_id], sample)
        assert done_ids(out) == set(sample_ids) and verify_dataset(out, deep=True) == [
            f"{out}: no dataset.json"
        ]


def test_reader_reads_a_window_of_frames_and_can_skip_the_large_parts(tmp_path):
    sample = prepared_sample(7, heatmaps=True)
    with ShardWriter(tmp_path) as writer:
        writer.write(sample)
    reader = ShardReader(tmp_path)
    window = [9, 2, 2, 5]
    part = reader.read(sample.sample_id, frames=window)
    np.testing.assert_array_equal(part.keypoints, sample.keypoints[:, window])
    np.testing.assert_array_equal(part.scores, sample.scores[:, window])
    np.testing.assert_array_equal(part.boxes, sample.boxes[:, window])
    np.testing.assert_array_equal(part.frame_indices, sample.frame_indices[window])
    np.testing.assert_array_equal(part.joint_heatmaps, sample.joint_heatmaps[window])
    np.testing.assert_array_equal(part.limb_heatmaps, sample.limb_heatmaps[window])
    assert part.rgb == tuple(sample.rgb[i] for i in window)
    light = reader.read(sample.sample_id, rgb=False, heatmaps=False)
    assert light.rgb is None and light.joint_heatmaps is None and light.limb_heatmaps is None
    np.testing.assert_array_equal(light.keypoints, sample.keypoints)
    with pytest.raises(IndexError, match="0..11"):
        reader.read(sample.sample_id, frames=[12])


def test_shard_layout_is_plain_hdf5(tmp_path):
    """The h5py snippet of docs/shard-schema.md, section 10: any HDF5 tool reads a sample without
    epam."""
    sample = prepared_sample(3, heatmaps=True)
    with ShardWriter(tmp_path) as writer:
        writer.write(sample)
    with h5py.File(tmp_path / "shards" / "shard-00000.h5", "r") as shard:
        assert shard.attrs["schema_version"] == 1 and shard.attrs["samples"] == 1
        group = shard[sample.sample_id]
        assert (
            group["keypoints"].dtype == np.float32 and group["keypoints"].chunks is None
        )  # contiguous
        assert group["scores"].dtype == np.float16 and group["boxes"].shape == (2, 12, 5)
        assert h5py.check_vlen_dtype(group["rgb"].dtype) == np.uint8
        assert bytes(group["rgb"][0]) == sample.rgb[0]
        heatmaps = group["joint_heatmaps"]
        assert heatmaps.compression == "gzip" and heatmaps.chunks == (
            12,
            17,
            16,
            16,
        )  # one chunk per sample here
        assert group.attrs["label"] == 3 and group.attrs["label_name"] == sample.sample.label_name
        assert (
            tuple(group.attrs["original_hw"]) == (1080, 1920)
            and group.attrs["pose_backend"] == "blazepose"
        )


def test_shards_roll_over_and_the_index_lists_only_finished_ones(tmp_path):
    samples = [prepared_sample(i) for i in range(7)]
    writer = ShardWriter(tmp_path, samples_per_shard=3)
    for sample in samples[:2]:
        writer.write(sample)
    assert finished_shards(tmp_path) == [] and index_rows(tmp_path) == []
    assert (tmp_path / "shards" / "shard-00000.h5.partial").is_file()
    assert len(ShardReader(tmp_path)) == 0 and done_ids(tmp_path) == set()
    for sample in samples[2:5]:
        writer.write(sample)
    assert finished_shards(tmp_path) == ["shard-00000.h5"]
    assert [row["sample_id"] for row in index_rows(tmp_path)] == [s.sample_id for s in samples[:3]]
    assert (tmp_path / "shards" / "shard-00001.h5.partial").is_file()
    for sample in samples[5:]:
        writer.write(sample)
    writer.close()
    assert finished_shards(tmp_path) == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    assert not list((tmp_path / "shards").glob("*.partial"))
    rows = index_rows(tmp_path)
    assert [row["shard"] for row in rows] == ["shard-00000.h5"] * 3 + ["shard-00001.h5"] * 3 + [
        "shard-00002.h5"
    ]
    assert tuple(rows[0]) == INDEX_COLUMNS
    first = samples[0]
    assert rows[0] == {
        "sample_id": "S001C001P001R001A001",
        "shard": "shard-00000.h5",
        "label": "0",
        "label_name": "drink water",
        "subject": "1",
        "camera": "1",
        "setup": "1",
        "view": "",
        "replication": "1",
        "frames": "12",
        "status": "ok",
        "persons": "2",
        "total_frames": "25",
        "video": "S001C001P001R001A001",
        "source": "nturgb+d_rgb/S001C001P001R001A001_rgb.avi",
        "split": "",
    }
    assert first.sample_id == rows[0]["sample_id"]


def test_index_is_what_splits_reads(tmp_path):
    with ShardWriter(tmp_path) as writer:
        for i in (1, 2):
            writer.write(prepared_sample(i))
        writer.write(dataclasses.replace(prepared_sample(3), status="no_person"))
    _, scan = scan_index(tmp_path, "ntu60")
    assert sorted(s.sample_id for s in scan.samples) == sorted(
        prepared_sample(i).sample_id for i in (1, 2)
    )
    assert not scan.rejected


def test_writing_a_sample_twice_is_refused(tmp_path):
    with ShardWriter(tmp_path, samples_per_shard=2) as writer:
        writer.write(prepared_sample(1))
        with pytest.raises(ShardError, match="already in .*shard-00000.h5"):
            writer.write(prepared_sample(1))
    with ShardWriter(tmp_path) as writer, pytest.raises(ShardError, match="done_ids"):
        writer.write(prepared_sample(1))


def test_a_closed_writer_refuses_more_samples(tmp_path):
    writer = ShardWriter(tmp_path)
    writer.write(prepared_sample(1))
    writer.close()
    writer.close()  # closing twice is harmless
    with pytest.raises(ShardError, match="closed"):
        writer.write(prepared_sample(2))
    assert done_ids(tmp_path) == {prepared_sample(1).sample_id}


def test_an_error_inside_the_with_block_keeps_the_samples_written_before_it(tmp_path):
    with pytest.raises(RuntimeError, match="pose backend crashed"), ShardWriter(tmp_path) as writer:
        writer.write(prepared_sample(1))
        writer.write(prepared_sample(2))
        raise RuntimeError("pose backend crashed")
    assert done_ids(tmp_path) == {prepared_sample(1).sample_id, prepared_sample(2).sample_id}
    assert len(index_rows(tmp_path)) == 2 and not list((tmp_path / "shards").glob("*.partial"))


def test_a_second_writer_for_the_same_part_is_refused_and_other_parts_are_left_alone(tmp_path):
    shards_dir = tmp_path / "shards"
    with ShardWriter(tmp_path, part=(0, 2)) as writer:
        writer.write(prepared_sample(0))
        with pytest.raises(ShardError, match=r"another writer for part 0/2 is running \(pid"):
            ShardWriter(tmp_path, part=(0, 2))
        with ShardWriter(
            tmp_path, part=(1, 2)
        ) as other:  # starting part 1 leaves part 0's partial alone
            assert (shards_dir / "shard-p000of002-00000.h5.partial").is_file()
            other.write(prepared_sample(1))
    assert finished_shards(tmp_path) == ["shard-p000of002-00000.h5", "shard-p001of002-00000.h5"]


def test_stale_partials_of_the_same_part_are_removed_on_start_never_another_parts(tmp_path):
    shards_dir = tmp_path / "shards"
    shards_dir.mkdir()
    stale = {
        name: shards_dir / name
        for name in (
            "shard-00003.h5.partial",
            "shard-p000of002-00001.h5.partial",
            "shard-p001of002-00000.h5.partial",
            "shard-p000of004-00000.h5.partial",
        )
    }
    for path in stale.values():
        h5py.File(path, "w").close()
    (shards_dir / "shard-p000of002-00007.csv").write_text(
        "orphan sidecar of a shard never renamed\n"
    )
    with ShardWriter(tmp_path, part=(0, 2)) as writer:
        writer.write(prepared_sample(1))
    left = sorted(path.name for path in shards_dir.iterdir() if not path.name.startswith("."))
    assert left == [
        "shard-00003.h5.partial",
        "shard-p000of002-00000.csv",
        "shard-p000of002-00000.h5",
        "shard-p000of004-00000.h5.partial",
        "shard-p001of002-00000.h5.partial",
    ]
    with ShardWriter(tmp_path):  # the single writer removes only shard-NNNNN.h5.partial
        pass
    assert not (shards_dir / "shard-00003.h5.partial").exists()
    assert (shards_dir / "shard-p001of002-00000.h5.partial").exists()


def test_failures_are_recorded_then_forgotten_when_a_retry_succeeds(tmp_path):
    broken, flaky, good = prepared_sample(1), prepared_sample(2), prepared_sample(3)
    with ShardWriter(tmp_path) as writer:
        writer.write(good)
        writer.fail(broken.sample, "cannot open as a video:\nno video stream")
        writer.fail(flaky, "no person found")
        assert writer.failures_recorded == 2
    failures = failure_rows(tmp_path)
    assert [(row["sample_id"], row["source"], row["reason"]) for row in failures] == [
        (broken.sample_id, broken.sample.path, "cannot open as a video: no video stream"),
        (flaky.sample_id, flaky.sample.path, "no person found"),
    ]
    assert all(row["time"] for row in failures)
    todo = [s for s in (broken, flaky, good) if s.sample_id not in done_ids(tmp_path)]
    assert todo == [broken, flaky]  # a re-run retries the failed samples
    with ShardWriter(tmp_path) as writer:
        writer.write(flaky)
        writer.fail(broken.sample, "still broken")
    assert [(row["sample_id"], row["reason"]) for row in failure_rows(tmp_path)] == [
        (broken.sample_id, "still broken")
    ]
    assert done_ids(tmp_path) == {flaky.sample_id, good.sample_id}


def test_dataset_json_is_written_once_and_refuses_another_dataset_or_options(tmp_path):
    meta = write_dataset_json(
        tmp_path, "ntu60", {**OPTIONS, "size": (256, 256)}, info={"command": "epam-data extract"}
    )
    assert meta["schema_version"] == 1 and meta["options"]["size"] == [256, 256]
    assert read_dataset_json(tmp_path) == meta
    assert (
        write_dataset_json(tmp_path, "ntu60", {**OPTIONS, "size": [256, 256]}) == meta
    )  # same: accepted
    with pytest.raises(
        ShardError, match="holds dataset 'ntu60' .* not 'ntu120'; choose another --out"
    ):
        write_dataset_json(tmp_path, "ntu120", OPTIONS)
    with pytest.raises(
        ShardError, match=r"rgb_size: 256 there, 224 now; size: \[256, 256\] there, '\(unset\)' now"
    ):
        write_dataset_json(tmp_path, "ntu60", {**OPTIONS, "rgb_size": 224})
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(EpamError, match="not valid JSON"):
        read_dataset_json(tmp_path)


def test_rebuild_index_from_the_shards_alone(tmp_path):
    with ShardWriter(tmp_path, samples_per_shard=2) as writer:
        for i in range(5):
            writer.write(prepared_sample(i))
    before = index_rows(tmp_path)
    (tmp_path / "index.csv").unlink()
    for sidecar in (tmp_path / "shards").glob("*.csv"):
        if not sidecar.name.endswith("failures.csv"):
            sidecar.unlink()
    with pytest.raises(ShardError, match="verify --repair` rebuilds it"):
        ShardReader(tmp_path)
    assert done_ids(tmp_path) == {
        row["sample_id"] for row in before
    }  # read from the shards themselves
    assert rebuild_index(tmp_path) == 5
    assert index_rows(tmp_path) == before
    assert rebuild_index(tmp_path, rescan=True) == 5 and index_rows(tmp_path) == before


def test_verify_reports_what_is_wrong(tmp_path):
    write_dataset_json(tmp_path, "ntu60", OPTIONS)
    with ShardWriter(tmp_path, samples_per_shard=2) as writer:
        for i in range(6):
            writer.write(prepared_sample(i, heatmaps=True))
    assert verify_dataset(tmp_path, deep=True) == []
    shards_dir = tmp_path / "shards"
    with h5py.File(shards_dir / "shard-00001.h5", "a") as shard:  # a sample the index does not know
        shard.copy(shard[prepared_sample(2).sample_id], "EXTRA")
        shard["EXTRA"].attrs["sample_id"] = "EXTRA"
    expected = (
        f"{shards_dir / 'shard-00001.h5'}: EXTRA is not in index.csv "
        "(`epam-data verify OUT --repair` rebuilds it)"
    )
    assert verify_dataset(tmp_path) == [expected]
    data = (shards_dir / "shard-00000.h5").read_bytes()
    (shards_dir / "shard-00000.h5").write_bytes(data[: len(data) // 3])  # a shard cut short
    (shards_dir / "shard-00002.h5").unlink()  # a shard gone
    problems = verify_dataset(tmp_path)
    assert any(
        problem.startswith(f"{shards_dir / 'shard-00000.h5'}: cannot be opened")
        for problem in problems
    )
    assert any(
        f"{prepared_sample(4).sample_id} is in 'shard-00002.h5', which is not a finished shard"
        in problem
        for problem in problems
    )
    assert rebuild_index(tmp_path) == 4  # sidecars are trusted: shard-00000's rows are still listed
    with pytest.warns(UserWarning, match="shard-00000.h5: cannot be read"):
        assert rebuild_index(tmp_path, rescan=True) == 3  # only shard-00001, with EXTRA
    assert any("cannot be opened" in problem for problem in verify_dataset(tmp_path))


_FORK_READER: ShardReader | None = None


def _keypoint_sum(sample_id: str) -> float:
    assert _FORK_READER is not None
    return float(_FORK_READER[sample_id].keypoints.sum())


def test_reader_works_in_forked_and_pickled_workers(tmp_path):
    """DataLoader workers: forked children inherit a reader whose parent already opened shard
    files."""
    global _FORK_READER
    with ShardWriter(tmp_path, samples_per_shard=3) as writer:
        for i in range(6):
            writer.write(prepared_sample(i))
    reader = _FORK_READER = ShardReader(tmp_path)
    ids = list(reader)
    first = reader[ids[0]]  # opens shard-00000.h5 in the parent before the fork
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        sums = pool.map(_keypoint_sum, ids)
    finally:
        _FORK_READER = None
        # close + join, not the context manager's terminate: a child forked after an in-process
        # Ray test inherits Ray's SIGTERM handler, and terminate() then waited for it forever
        pool.close()
        pool.join()
    assert sums == pytest.approx([float(prepared_sample(i).keypoints.sum()) for i in range(6)])
    assert_same_sample(reader[ids[0]], first)  # the parent's handles still work
    clone = pickle.loads(pickle.dumps(reader))
    assert_same_sample(clone[ids[0]], first)
    reader.close()
    clone.close()


# --- real processes -------------------------------------------------------------------------------


def test_kill_9_then_rerun_yields_every_sample_exactly_once(tmp_path):
    """A real writer process, SIGKILLed twice mid-run, then re-run to the end."""
    count, per_shard = 48, 4
    for kill_after in (9, 7):
        process = start_writer(tmp_path, count, per_shard)
        written = 0
        for line in process.stdout:
            written += line.startswith("wrote")
            if written == kill_after:
                process.send_signal(
                    signal.SIGKILL
                )  # wherever it is: inside a sample, a shard close, the index
                break
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL, process.stderr.read()
        assert_consistent(tmp_path)
    assert len(done_ids(tmp_path)) >= 8  # two shards at least were finished before the kills
    process = start_writer(tmp_path, count, per_shard, fixed=True)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"skipped {len(done_ids(tmp_path)) - out.count('wrote')}" in out
    rows = assert_consistent(tmp_path)
    assert sorted(row["sample_id"] for row in rows) == sorted(all_ids(count))
    assert not list((tmp_path / "shards").glob("*.partial"))
    assert (
        failure_rows(tmp_path) == []
    )  # the simulated failures of the killed runs succeeded on the re-run
    assert verify_dataset(tmp_path, deep=True) == []


@pytest.mark.parametrize("kill_at", ["before_rename", "before_index"])
def test_kill_9_at_the_commit_point_loses_nothing_and_lists_nothing_unfinished(tmp_path, kill_at):
    process = start_writer(tmp_path, 10, 3, kill_at=kill_at)
    out, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, err
    assert out.count("wrote") == 2  # killed inside the third write, which commits the first shard
    if kill_at == "before_rename":  # shard and sidecar written, not renamed: not listed, redone
        assert done_ids(tmp_path) == set() and index_rows(tmp_path) == []
        assert (tmp_path / "shards" / "shard-00000.csv").is_file()
    else:  # renamed, index not rebuilt: the shard counts as done, and the next start lists it
        assert len(done_ids(tmp_path)) == 3 and index_rows(tmp_path) == []
    process = start_writer(tmp_path, 10, 3, fixed=True)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    rows = assert_consistent(tmp_path)
    assert sorted(row["sample_id"] for row in rows) == sorted(all_ids(10))
    assert finished_shards(tmp_path) == [f"shard-0000{k}.h5" for k in range(4)]
    assert sorted(path.name for path in (tmp_path / "shards").glob("shard-*.csv")) == [
        f"shard-0000{k}.csv" for k in range(4)
    ]


def test_two_parts_write_into_one_folder_at_the_same_time(tmp_path):
    count = 30
    processes = [
        start_writer(tmp_path, count, 2, part=(index, 2), fixed=True) for index in range(2)
    ]
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert out.count("wrote") == count // 2
    shards = finished_shards(tmp_path)
    assert len(shards) == 16 and {name[:15] for name in shards} == {
        "shard-p000of002",
        "shard-p001of002",
    }
    rows = assert_consistent(tmp_path)  # index.csv as the last writer to finish left it
    assert sorted(row["sample_id"] for row in rows) == sorted(all_ids(count))
    before = index_rows(tmp_path)
    assert rebuild_index(tmp_path, rescan=True) == count
    assert index_rows(tmp_path) == before
    assert verify_dataset(tmp_path) == []


# --- the index update costs one shard; shards also end at a byte bound --------------------------


def test_each_finished_shard_reads_only_its_own_sidecar(tmp_path, monkeypatch):
    """Writing shard N opens no sidecar or file of shards 0..N-1: a run costs O(shards)."""
    import builtins

    import epam_data.shards.index as index_module

    with ShardWriter(tmp_path, samples_per_shard=1) as writer:
        for i in range(3):
            writer.write(prepared_sample(i))
    sidecars_read, shards_opened = [], []
    real_open, real_open_h5 = builtins.open, index_module.open_h5

    def spy_open(file, mode="r", *args, **kwargs):
        name = Path(str(file)).name
        if name.startswith("shard-") and name.endswith(".csv") and "r" in mode and "+" not in mode:
            sidecars_read.append(name)
        return real_open(file, mode, *args, **kwargs)

    def spy_open_h5(path, *args, **kwargs):
        shards_opened.append(Path(path).name)
        return real_open_h5(path, *args, **kwargs)

    writer = ShardWriter(tmp_path, samples_per_shard=1)  # opening reads each sidecar (done_ids)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(index_module, "open_h5", spy_open_h5)
    for i in range(3, 7):
        sidecars_read.clear()
        writer.write(prepared_sample(i))
        assert sidecars_read == [f"shard-{i:05d}.csv"] and shards_opened == []
    writer.close()
    monkeypatch.undo()
    incremental = (tmp_path / "index.csv").read_bytes()
    assert rebuild_index(tmp_path) == 7 and (tmp_path / "index.csv").read_bytes() == incremental


def test_interleaved_parts_keep_the_index_equal_to_a_full_rebuild(tmp_path):
    """Part 0's new shards sort before part 1's listed ones: merged in name order, as rebuilt."""
    first = ShardWriter(tmp_path, samples_per_shard=1, part=(0, 2))
    second = ShardWriter(tmp_path, samples_per_shard=1, part=(1, 2))
    for i in range(6):
        (first if i % 2 == 0 else second).write(prepared_sample(i))
        incremental = (tmp_path / "index.csv").read_bytes()
        assert rebuild_index(tmp_path) == i + 1
        assert (tmp_path / "index.csv").read_bytes() == incremental
    first.close()
    second.close()
    assert [row["shard"] for row in index_rows(tmp_path)] == sorted(finished_shards(tmp_path))


def test_incremental_update_recovers_a_missing_stale_or_short_index(tmp_path):
    with ShardWriter(tmp_path, samples_per_shard=2) as writer:
        for i in range(6):
            writer.write(prepared_sample(i))
    full = index_rows(tmp_path)
    text = (tmp_path / "index.csv").read_text()
    short = "".join(text.splitlines(keepends=True)[:-2])  # as left by a kill before the last update
    (tmp_path / "index.csv").write_text(short)
    assert rebuild_index(tmp_path, incremental=True) == 6 and index_rows(tmp_path) == full
    (tmp_path / "index.csv").unlink()
    assert rebuild_index(tmp_path, incremental=True) == 6 and index_rows(tmp_path) == full
    (tmp_path / "shards" / "shard-00001.h5").unlink()  # a listed shard gone: rebuilt from sidecars
    assert rebuild_index(tmp_path, incremental=True) == 4
    assert index_rows(tmp_path) == [row for row in full if row["shard"] != "shard-00001.h5"]
    with pytest.raises(ValueError, match="rescan"):
        rebuild_index(tmp_path, rescan=True, incremental=True)


def shard_sizes(out: Path) -> list[tuple[int, int]]:
    """(samples, bytes) of each finished shard, in name order."""
    sizes = []
    for name in finished_shards(out):
        with h5py.File(out / "shards" / name, "r") as shard:
            sizes.append((int(shard.attrs["samples"]), (out / "shards" / name).stat().st_size))
    return sizes


def test_shards_also_close_when_they_reach_max_shard_bytes(tmp_path):
    samples = [prepared_sample(i, heatmaps=True) for i in range(6)]  # ~110 KB each (heatmaps)
    for name, count in (("one", 1), ("two", 2)):
        with ShardWriter(tmp_path / name) as writer:
            for sample in samples[:count]:
                writer.write(sample)
    one, two = shard_sizes(tmp_path / "one")[0][1], shard_sizes(tmp_path / "two")[0][1]
    bound = (one + two) // 2  # one sample stays under it, a second one takes the shard over it
    with ShardWriter(tmp_path / "bytes", max_shard_bytes=bound) as writer:
        for sample in samples:
            writer.write(sample)
    sizes = shard_sizes(tmp_path / "bytes")
    assert [count for count, _ in sizes] == [2, 2, 2] and all(size >= bound for _, size in sizes)
    with ShardWriter(tmp_path / "both", samples_per_shard=3, max_shard_bytes=10 * two) as writer:
        for sample in samples:  # the samples limit comes first here
            writer.write(sample)
    assert [count for count, _ in shard_sizes(tmp_path / "both")] == [3, 3]
    with ShardWriter(tmp_path / "tiny", max_shard_bytes=1) as writer:  # each sample over the bound
        for sample in samples[:3]:
            writer.write(sample)
    assert [count for count, _ in shard_sizes(tmp_path / "tiny")] == [1, 1, 1]
    rows = assert_consistent_ids(tmp_path / "bytes")
    assert rows == [sample.sample_id for sample in samples]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_shard_bytes must be a positive integer"):
            ShardWriter(tmp_path / "bad", max_shard_bytes=bad)


def assert_consistent_ids(out: Path) -> list[str]:
    assert verify_dataset(out, deep=True) == [f"{out}: no dataset.json"]
    return [row["sample_id"] for row in index_rows(out)]


def test_the_byte_bound_reaches_the_writer_from_extract_and_its_cli():
    import inspect

    from epam_data.cli import extract
    from epam_data.extract import extract_dataset
    from epam_data.runloop import run_samples
    from epam_data.shards import DEFAULT_MAX_SHARD_BYTES

    assert DEFAULT_MAX_SHARD_BYTES == 2 << 30
    for function in (extract, extract_dataset, run_samples):
        parameter = inspect.signature(function).parameters["max_shard_bytes"]
        assert parameter.default == DEFAULT_MAX_SHARD_BYTES


# --- checksums, damage, repair (each shard dataset checked; verify never raises) ------------------


def _flip_bytes(path: Path, offset: int, count: int = 8) -> None:
    with open(path, "r+b") as stream:
        stream.seek(offset)
        data = bytearray(stream.read(count))
        stream.seek(offset)
        stream.write(bytes(value ^ 0xFF for value in data))


def _offset(shard: Path, sample_id: str, name: str, index: int = 0) -> int:
    """Where in the file a dataset's bytes start (a JPEG's, for `rgb`)."""
    with h5py.File(shard, "r") as h5file:
        dataset = h5file[sample_id][name]
        if name != "rgb":
            return dataset.id.get_offset()
        jpeg = bytes(dataset[index])
    return shard.read_bytes().index(jpeg) + len(jpeg) // 2  # inside the JPEG's entropy-coded data


@pytest.mark.parametrize("field", ["keypoints", "scores", "rgb", "joint_heatmaps"])
def test_flipped_bytes_are_caught_by_the_checksums(tmp_path, field):
    """Eight flipped bytes in any dataset: reading the sample fails with one line naming shard,
    sample and what is wrong, and `verify --deep` reports it (it used to print ok)."""
    sample = prepared_sample(1, heatmaps=True)
    write_dataset_json(tmp_path, "ntu60", OPTIONS)
    with ShardWriter(tmp_path) as writer:
        writer.write(sample)
    shard = tmp_path / "shards" / "shard-00000.h5"
    if field == "joint_heatmaps":  # compressed: flip inside its one chunk
        with h5py.File(shard, "r") as h5file:
            offset = h5file[sample.sample_id][field].id.get_chunk_info(0).byte_offset + 20
    else:
        offset = _offset(shard, sample.sample_id, field)
    _flip_bytes(shard, offset)
    with (
        ShardReader(tmp_path) as reader,
        pytest.raises(ShardError, match=sample.sample_id) as caught,
    ):
        reader.read(sample.sample_id)
    assert "--repair" in str(caught.value) and "\n" not in str(caught.value)
    problems = verify_dataset(tmp_path, deep=True)
    assert len(problems) == 1 and sample.sample_id in problems[0], problems


def test_verify_deep_flags_values_no_extractor_writes(tmp_path):
    """Keypoints of 3.4e38 (written with a matching checksum, so only the range check can see
    them)."""
    import dataclasses

    good = prepared_sample(4)
    keypoints = good.keypoints.copy()
    keypoints[0, 0, 0] = [3.4e38, 10.0]
    bad = dataclasses.replace(good, keypoints=keypoints)
    write_dataset_json(tmp_path, "ntu60", OPTIONS)
    with ShardWriter(tmp_path) as writer:
        writer.write(bad)
    problems = verify_dataset(tmp_path, deep=True)
    assert problems == [
        f"shard-00000.h5:/{good.sample_id}/keypoints: values not finite or beyond 3x the "
        "1920x1080 frame"
    ]


def test_verify_never_raises_on_damaged_metadata(tmp_path):
    """Bytes flipped all over a shard's metadata: every outcome is problem lines, never a
    traceback."""
    with ShardWriter(tmp_path, samples_per_shard=4) as writer:
        for i in range(4):
            writer.write(prepared_sample(i, heatmaps=True))
    shard = tmp_path / "shards" / "shard-00000.h5"
    original = shard.read_bytes()
    rng = np.random.default_rng(7)
    for _ in range(25):
        data = bytearray(original)
        for position in rng.integers(
            0, 4096, 6
        ):  # the superblock, object headers and B-trees live up front
            data[position] ^= int(rng.integers(1, 256))
        shard.write_bytes(bytes(data))
        problems = verify_dataset(tmp_path, deep=True)
        assert all(isinstance(problem, str) and "\n" not in problem for problem in problems)


def test_repair_moves_damaged_shards_aside_and_extract_recreates_them(tmp_path):
    write_dataset_json(tmp_path, "ntu60", OPTIONS)
    with ShardWriter(tmp_path, samples_per_shard=2) as writer:
        for i in range(6):
            writer.write(prepared_sample(i))
    shards_dir = tmp_path / "shards"
    cut = shards_dir / "shard-00000.h5"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # truncated
    flipped = shards_dir / "shard-00001.h5"
    _flip_bytes(flipped, _offset(flipped, prepared_sample(2).sample_id, "keypoints"))  # bit rot
    assert len(verify_dataset(tmp_path, deep=True)) >= 2
    result = runner.invoke(app, ["verify", str(tmp_path), "--repair"])
    assert result.exit_code == 0, result.output
    assert "moved shard-00000.h5" in result.output and "moved shard-00001.h5" in result.output
    assert sorted(path.name for path in (tmp_path / "damaged").iterdir()) == [
        "shard-00000.csv",
        "shard-00000.h5",
        "shard-00001.csv",
        "shard-00001.h5",
    ]
    assert done_ids(tmp_path) == {prepared_sample(i).sample_id for i in (4, 5)}
    with ShardWriter(tmp_path, samples_per_shard=2) as writer:  # what a re-run of extract does
        for i in range(6):
            if prepared_sample(i).sample_id not in done_ids(tmp_path):
                writer.write(prepared_sample(i))
    assert verify_dataset(tmp_path, deep=True) == []
    with ShardReader(tmp_path) as reader:
        assert sorted(reader) == sorted(prepared_sample(i).sample_id for i in range(6))
        np.testing.assert_array_equal(
            reader[prepared_sample(2).sample_id].keypoints, prepared_sample(2).keypoints
        )


def test_an_index_row_cannot_send_the_reader_outside_the_shards(tmp_path):
    """An index row naming `../../outside.h5` is refused in one line; nothing outside is opened."""
    with ShardWriter(tmp_path) as writer:
        writer.write(prepared_sample(0))
    index = tmp_path / "index.csv"
    index.write_text(index.read_text().replace("shard-00000.h5", "../../outside.h5"))
    with ShardReader(tmp_path) as reader, pytest.raises(ShardError, match="not a shard file name"):
        reader.read(prepared_sample(0).sample_id)


def test_a_full_disk_is_one_line_and_keeps_the_finished_samples(tmp_path, monkeypatch):
    """The free-space check refuses the sample that would not fit (h5py segfaulted on ENOSPC
    before); the samples written so far are committed, and a re-run with space writes the rest."""
    from epam_data.shards import writer as writer_module

    write_dataset_json(tmp_path, "ntu60", OPTIONS)
    with ShardWriter(tmp_path, samples_per_shard=10) as writer:
        writer.write(prepared_sample(0))
        free = __import__("shutil").disk_usage(tmp_path).free
        monkeypatch.setattr(
            writer_module, "SPACE_MARGIN_BYTES", free + 1
        )  # as if the disk were full
        with pytest.raises(ShardError, match=r"^no space left on .*MB needed to write .*MB free"):
            writer.write(prepared_sample(1))
    assert done_ids(tmp_path) == {prepared_sample(0).sample_id}
    monkeypatch.undo()
    with ShardWriter(tmp_path) as writer:
        writer.write(prepared_sample(1))
    assert verify_dataset(tmp_path, deep=True) == []


def test_runs_with_and_without_part_are_not_mixed(tmp_path):
    """One writer with --part and one without on a folder would prepare every sample twice."""
    with ShardWriter(tmp_path, part=(0, 2)):
        with pytest.raises(ShardError, match="a run with --part is writing here"):
            ShardWriter(tmp_path)
        with ShardWriter(tmp_path, part=(1, 2)):  # another part is fine
            pass
    with ShardWriter(tmp_path):
        with pytest.raises(ShardError, match="a run without --part is writing here"):
            ShardWriter(tmp_path, part=(1, 2))


def test_declared_sizes_must_be_backed_by_the_file(tmp_path, monkeypatch):
    """A small shard whose keypoints declare 3e7 frames is refused before anything is allocated (it
    took a training run from 1 GB to 5 GB); a size limit the user can raise bounds every dataset."""
    sample = prepared_sample(2)
    write_dataset_json(tmp_path, "ntu60", OPTIONS)
    with ShardWriter(tmp_path) as writer:
        writer.write(sample)
    shard = tmp_path / "shards" / "shard-00000.h5"
    with h5py.File(shard, "a") as h5file:
        group = h5file[sample.sample_id]
        del group["keypoints"]
        group.create_dataset("keypoints", shape=(2, 30_000_000, 17, 2), dtype=np.float32)
    assert shard.stat().st_size < 1 << 20
    with ShardReader(tmp_path) as reader, pytest.raises(ShardError, match="but the file holds 0"):
        reader.read(sample.sample_id)
    assert any(sample.sample_id in line for line in verify_dataset(tmp_path, deep=True))

    other = tmp_path / "other"
    with ShardWriter(other) as writer:
        writer.write(sample)
    monkeypatch.setenv("EPAM_MAX_SAMPLE_BYTES", "1000")
    with (
        ShardReader(other) as reader,
        pytest.raises(ShardError, match="above EPAM_MAX_SAMPLE_BYTES"),
    ):
        reader.read(sample.sample_id)


def test_an_index_written_before_the_split_column_still_verifies_and_is_upgraded(tmp_path):
    """index.csv and sidecars from before `split` existed: verify finds nothing wrong, and the next
    shard written brings every row's split column back."""
    write_dataset_json(tmp_path, "ntu60", OPTIONS)
    with ShardWriter(tmp_path, samples_per_shard=2) as writer:
        for i in range(2):
            writer.write(prepared_sample(i))
    old_csvs = [tmp_path / "index.csv", *(tmp_path / "shards").glob("*.csv")]
    for path in old_csvs:
        with open(path, newline="") as stream:
            rows = list(csv.DictReader(stream))
        with open(path, "w", newline="") as stream:
            writer_csv = csv.DictWriter(stream, [c for c in rows[0] if c != "split"])
            writer_csv.writeheader()
            writer_csv.writerows({k: v for k, v in row.items() if k != "split"} for row in rows)
    assert "split" not in (tmp_path / "index.csv").read_text().splitlines()[0]
    assert verify_dataset(tmp_path, deep=True) == []
    with ShardWriter(tmp_path) as writer:
        writer.write(prepared_sample(5))
    rows = index_rows(tmp_path)
    assert len(rows) == 3 and all(row["split"] == "" for row in rows)


def test_the_fix_the_reader_names_works(tmp_path):
    """`epam-data verify --repair`, which the reader's message names, rebuilds a lost index.csv."""
    from epam_data.shards import repair_dataset

    with ShardWriter(tmp_path, samples_per_shard=2) as writer:
        for i in range(3):
            writer.write(prepared_sample(i))
    before = index_rows(tmp_path)
    (tmp_path / "index.csv").unlink()
    assert repair_dataset(tmp_path).samples == 3 and index_rows(tmp_path) == before
    assert len(ShardReader(tmp_path).rows) == 3
