"""One crashing or hanging worker costs one sample: real worker processes killed by SIGABRT /
SIGSEGV or stopped at the time limit (epam_data.supervisor), through the real run loop and real
videos."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from conftest import write_person_clip
from worker_crashes import ABORT_ID, HANG_ID, SEGFAULT_ID, prepare_or_crash, square

from epam_data.extract import ExtractOptions, VideoSpec, list_samples, prepare_video
from epam_data.runloop import ExtractReport, run_samples
from epam_data.shards import ShardReader, write_dataset_json
from epam_data.supervisor import supervised_map

IDS = ["S001C001P001R001A001", ABORT_ID, SEGFAULT_ID, HANG_ID, "S001C001P005R001A009"]


def test_crashes_and_hangs_cost_one_item_each(workers_import_tests: None) -> None:
    results = list(
        supervised_map(square, range(9), workers=2, timeout=8, on_lost=lambda i, why: (i, why))
    )
    lost = dict(result for result in results if isinstance(result, tuple))
    assert sorted(value for value in results if not isinstance(value, tuple)) == [
        0,
        1,
        4,
        16,
        36,
        64,
    ]
    assert sorted(lost) == [3, 5, 7]
    assert "SIGABRT" in lost[3] and "SIGSEGV" in lost[5] and "longer than 8 s" in lost[7]


def test_a_crashing_video_fails_alone_and_the_rerun_retries_it(
    workers_import_tests: None, tmp_path: Path, pyav: object
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    clip = write_person_clip(tmp_path / "clip.mp4", num_frames=8)
    for sample_id in IDS:
        shutil.copy(clip, videos / f"{sample_id}_rgb.mp4")
    out = tmp_path / "out"
    options = ExtractOptions(rgb_size=64)
    samples, _ = list_samples(videos, "ntu60")
    specs = [VideoSpec(sample, str(path), sample.path, options) for sample, path in samples]
    write_dataset_json(out, "ntu60", options.dataset_options({}))

    report = run_samples(
        specs, prepare_or_crash, out, ExtractReport(out), jobs=2, sample_timeout=30
    )
    reasons = dict(report.failures)
    assert report.ok == 2 and sorted(reasons) == sorted([ABORT_ID, SEGFAULT_ID, HANG_ID])
    assert "SIGABRT" in reasons[ABORT_ID] and "std::bad_alloc" in reasons[ABORT_ID]
    assert "SIGSEGV" in reasons[SEGFAULT_ID] and "longer than 30 s" in reasons[HANG_ID]
    with open(out / "failures.csv", newline="", encoding="utf-8") as stream:
        rows = {row["sample_id"]: row for row in csv.DictReader(stream)}
    assert sorted(rows) == sorted(reasons) and f"{ABORT_ID}_rgb.mp4" in rows[ABORT_ID]["reason"]
    with ShardReader(out) as reader:
        assert sorted(reader) == [IDS[0], IDS[-1]]  # the finished samples were kept

    again = run_samples(specs, prepare_video, out, ExtractReport(out), jobs=2, sample_timeout=30)
    assert again.already_done == 2 and again.ok == 3 and not again.failures
    with ShardReader(out) as reader:
        assert sorted(reader) == sorted(IDS)


def test_fuzzed_videos_never_stop_extract(tmp_path: Path, pyav: object) -> None:
    """Seeded mutations of a real H.264 clip (byte flips, truncations, an empty file) through the
    real CLI: every video ends up in a shard or as one failures.csv row, the run completes, no
    traceback."""
    from typer.testing import CliRunner

    from epam_data.cli import app

    clip = write_person_clip(tmp_path / "clip.mp4", num_frames=8).read_bytes()
    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(11)
    names = [f"S001C001P{person:03d}R001A001" for person in range(1, 11)]
    for position, name in enumerate(names):
        data = bytearray(clip)
        if position < 5:  # flips anywhere, headers included
            for offset in rng.integers(0, len(data), 8):
                data[offset] ^= int(rng.integers(1, 256))
        elif position < 9:  # cut short at several places
            data = data[: int(len(data) * (position - 4) / 5)]
        else:
            data = bytearray()
        (videos / f"{name}_rgb.mp4").write_bytes(bytes(data))
    out = tmp_path / "out"
    arguments = [
        "extract",
        str(videos),
        "-d",
        "ntu60",
        "-o",
        str(out),
        "--rgb-size",
        "64",
        "--sample-timeout",
        "120",
    ]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code in (0, 1) and isinstance(result.exception, (SystemExit, type(None)))
    assert "Traceback" not in result.output
    with open(out / "failures.csv", newline="", encoding="utf-8") as stream:
        failed = {row["sample_id"] for row in csv.DictReader(stream)}
    with ShardReader(out) as reader:
        written = set(reader)
    print(f"{len(written)} written, {len(failed)} failed")
    assert written | failed == set(names) and not written & failed
    assert names[-1] in failed and written  # the empty file fails; flips in the picture data do not
