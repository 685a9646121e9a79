"""`extract --in-flight K`: videos tracked K at a time by one backend (epam_data.in_flight) give
the shards one video at a time gives and fail one by one, and a worker lost in a group costs only
the sample that killed it; the real clips, real worker processes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_person_clip
from typer.testing import CliRunner
from worker_crashes import ABORT_ID, prepare_group_or_crash, prepare_or_crash

from epam_data.cli import _default_in_flight, app
from epam_data.extract import (
    ExtractOptions,
    VideoSpec,
    extract_dataset,
    list_samples,
    prepare_video,
)
from epam_data.runloop import ExtractReport, run_group, run_samples
from epam_data.shards import ShardReader, write_dataset_json

CLIPS = ("two_players_426x240.mp4", "arm_wrestling_340x256.mp4")


@pytest.fixture
def clip_classes(tmp_path: Path, media_dir: Path) -> Path:
    """The two real clips, a second copy of one, and a copy cut short, as a generic dataset."""
    root = tmp_path / "videos"
    for name in CLIPS:
        (root / name.split("_")[0]).mkdir(parents=True)
        shutil.copy(media_dir / name, root / name.split("_")[0] / name)
    shutil.copy(media_dir / CLIPS[0], root / "two" / "again.mp4")
    data = (media_dir / CLIPS[1]).read_bytes()
    (root / "arm" / "cut.mp4").write_bytes(data[: len(data) // 3])
    return root


def _extract(
    root: Path, out: Path, in_flight: int, runtime: str = "tflite", decode_height: int | None = None
) -> ExtractReport:
    options = ExtractOptions(
        max_persons=2,
        frame_stride=5,
        rgb_size=64,
        in_flight=in_flight,
        backend_options=(("runtime", runtime),),
        decode_height=decode_height,
    )
    return extract_dataset(root, out, "generic", options=options)


@pytest.mark.parametrize(
    ("runtime", "decode_height"), [("tflite", None), ("torch", None), ("tflite", 160)]
)
def test_videos_in_flight_give_the_same_shards(
    clip_classes: Path, tmp_path: Path, runtime: str, decode_height: int | None
) -> None:
    """Two real two-person clips and a copy, two in flight (the third starts when one ends), with
    either runtime, against TFLite one at a time: the same samples, persons within 0.25 px (1e-3 of
    the 256 px crop; measured 0.0 with TFLite, 0.012 px with torch), the same crops; the clip cut
    short fails alone, in both runs, with the same reason. With the frames decoded smaller
    (`--decode-height`), both runs alike."""
    if runtime == "torch":
        pytest.importorskip("torch")
    alone = _extract(clip_classes, tmp_path / "alone", 1, decode_height=decode_height)
    together = _extract(clip_classes, tmp_path / "together", 2, runtime, decode_height)
    assert alone.ok == together.ok == 3
    assert dict(alone.failures) == dict(together.failures) and len(alone.failures) == 1
    assert together.times.pose > 0
    with ShardReader(tmp_path / "alone") as first, ShardReader(tmp_path / "together") as second:
        assert sorted(first) == sorted(second)
        for sample_id in first:
            ours, theirs = second[sample_id], first[sample_id]
            assert ours.keypoints.shape == theirs.keypoints.shape
            assert np.abs(ours.keypoints - theirs.keypoints).max() < 0.25
            scores = ours.scores.astype(np.float32), theirs.scores.astype(np.float32)
            assert np.abs(scores[0] - scores[1]).max() < 2e-3
            assert np.abs(np.subtract(ours.crop_box, theirs.crop_box)).max() <= 1
            if runtime == "tflite":
                assert ours.crop_box == theirs.crop_box and ours.rgb == theirs.rgb
        assert (first["two__again"].keypoints == first["two__two_players_426x240"].keypoints).all()


def test_a_worker_lost_in_a_group_costs_the_culprit_only(
    workers_import_tests: None,
    tmp_path: Path,
    pyav: object,
) -> None:
    """A worker killed while preparing a group of two: the two samples are prepared again one at
    a time, so only the one that kills its worker alone fails; the other groups are written."""
    videos = tmp_path / "videos"
    videos.mkdir()
    clip = write_person_clip(tmp_path / "clip.mp4", num_frames=8)
    ids = ["S001C001P001R001A001", ABORT_ID, "S001C001P005R001A009", "S001C001P006R001A009"]
    for sample_id in ids:
        shutil.copy(clip, videos / f"{sample_id}_rgb.mp4")
    out = tmp_path / "out"
    options = ExtractOptions(rgb_size=64, in_flight=2)
    samples, _ = list_samples(videos, "ntu60")
    specs = [VideoSpec(sample, str(path), sample.path, options) for sample, path in samples]
    write_dataset_json(out, "ntu60", options.dataset_options({}))
    grouped = {"prepare_group": prepare_group_or_crash, "in_flight": 2}  # 2 workers, 2 each
    report = run_samples(specs, prepare_or_crash, out, ExtractReport(out), jobs=2, **grouped)
    reasons = dict(report.failures)
    assert sorted(reasons) == [ABORT_ID] and report.ok == 3
    assert "SIGABRT" in reasons[ABORT_ID] and "std::bad_alloc" in reasons[ABORT_ID]
    assert report.prepared_alone == 2 and "worker crashed" in report.group_failure
    with ShardReader(out) as reader:
        assert sorted(reader) == sorted(set(ids) - {ABORT_ID})


def _group_fails(specs: list[VideoSpec]) -> list[object]:
    raise RuntimeError("the group as a whole failed")


def test_a_group_that_fails_as_a_whole_is_prepared_one_by_one(tmp_path: Path, pyav: object) -> None:
    """`run_group` never raises: a group that fails for no one sample's fault (a network call, the
    backend) is prepared again video by video."""
    clip = write_person_clip(tmp_path / "S001C001P001R001A001_rgb.mp4", num_frames=6)
    shutil.copy(clip, tmp_path / "S001C001P002R001A001_rgb.mp4")
    samples, _ = list_samples(tmp_path, "ntu60")
    options = ExtractOptions(rgb_size=64, in_flight=2)
    specs = [VideoSpec(sample, str(path), sample.path, options) for sample, path in samples]
    outcomes = run_group(prepare_video, _group_fails, specs)
    assert [outcome.prepared is not None for outcome in outcomes] == [True, True]
    assert all("the group as a whole failed" in o.group_failure for o in outcomes)
    assert [o.sample.sample_id for o in outcomes] == [s.sample_id for s, _ in samples]


def test_in_flight_defaults_and_refusals(tmp_path: Path) -> None:
    """8 in flight for blazepose on a GPU, else 1; other backends refuse it in one line."""
    assert _default_in_flight("blazepose", (("device", "cuda:1"),)) == 8
    assert _default_in_flight("blazepose", ()) == 1
    assert _default_in_flight("mmlab", (("device", "cuda"),)) == 1
    (tmp_path / "in").mkdir()
    args = ["extract", str(tmp_path / "in"), "-d", "generic", "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--backend", "mmlab", "--in-flight", "4"])
    assert result.exit_code == 1 and "only the blazepose backend" in result.output
    result = CliRunner().invoke(app, [*args, "--in-flight", "0"])
    assert result.exit_code == 1 and "--in-flight must be at least 1" in result.output
