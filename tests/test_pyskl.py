"""`epam-data import-pyskl` / `export-pyskl` on real pickles, real videos, real shards and a real
SIGKILL.

The pickles are written here in the anchor format (docs/prior-art.md 2.4: protocol 2 and float16 as
mmcv / PYSKL dump them, the compressed `frame_inds` variant of 1.2), hostile ones included; the
videos are real H.264 files of the astronaut photo with a red marker painted on it, so that the
crops can be checked against the keypoints.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import pickletools
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import kill_after_first_shard, person_photo, prepared_sample
from PIL import Image
from typer.testing import CliRunner

from epam_data.cli import app
from epam_data.crops import crop_frame, person_box
from epam_data.heatmaps import CropBox
from epam_data.pyskl import UnsafePickleError, dense_pose, load_pyskl
from epam_data.shards import ShardReader, ShardWriter, verify_dataset
from epam_data.synth import write_photo_clip
from epam_data.video import read_frames

runner = CliRunner()
NTU_IDS = [
    f"S001C00{c}P{p:03d}R001A{a:03d}" for c, p, a in [(1, 1, 1), (2, 2, 50), (3, 3, 8), (1, 4, 9)]
]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def annotation(
    frame_dir: str,
    label: int,
    *,
    persons: int = 2,
    frames: int = 10,
    seed: int = 0,
    img_shape: tuple[int, int] = (1080, 1920),
) -> dict:
    """One annotation as PYSKL's NTU pickles hold it: float16 keypoints and scores, T ==
    total_frames."""
    rng = np.random.default_rng(seed)
    keypoint = (rng.random((persons, frames, 17, 2)) * np.array(img_shape[::-1]) * 0.9 + 5).astype(
        np.float16
    )
    score = rng.random((persons, frames, 17)).astype(np.float16)
    return {
        "frame_dir": frame_dir,
        "label": label,
        "img_shape": img_shape,
        "original_shape": img_shape,
        "total_frames": frames,
        "keypoint": keypoint,
        "keypoint_score": score,
    }


def write_pickle(
    path: Path, annotations: list[dict], split: dict[str, list[str]], *, protocol: int = 2
) -> Path:
    """The file layout of docs/prior-art.md 2.4, dumped the way mmcv dumps it (protocol 2) unless
    told otherwise."""
    path.write_bytes(pickle.dumps({"split": split, "annotations": annotations}, protocol=protocol))
    return path


def globals_named(data: bytes) -> set[str]:
    """The module.name of every global a pickle refers to (GLOBAL and STACK_GLOBAL opcodes)."""
    names, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":
            names.add(".".join(strings[-2:]))
        elif isinstance(arg, str):
            strings.append(arg)
    return names


# --- the uncompressed anchor format ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ntu_pickle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("pkl")
    annotations = [
        annotation(sample_id, int(sample_id[-3:]) - 1, persons=1 + index % 3, seed=index)
        for index, sample_id in enumerate(NTU_IDS)
    ]
    annotations[1]["num_person_raw"] = 5
    split = {"xsub_train": [NTU_IDS[0], NTU_IDS[1]], "xsub_val": [NTU_IDS[2], NTU_IDS[3]]}
    return write_pickle(folder / "ntu60_hrnet.pkl", annotations, split), annotations


def test_import_keeps_poses_labels_metadata_and_splits(
    ntu_pickle: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    path, annotations = ntu_pickle
    out = tmp_path / "out"
    result = runner.invoke(app, ["import-pyskl", str(path), "-d", "ntu60", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "annotations listed" in result.output and "manifest xsub_train: 2 of the 2" in result.output
    )
    with ShardReader(out) as reader:
        assert sorted(reader) == sorted(NTU_IDS)
        for source in annotations:
            prepared = reader[source["frame_dir"]]
            np.testing.assert_array_equal(prepared.keypoints, source["keypoint"].astype(np.float32))
            np.testing.assert_array_equal(prepared.scores, source["keypoint_score"])
            assert prepared.sample.label == source["label"] and prepared.original_hw == (1080, 1920)
            assert prepared.total_frames == 10 and np.array_equal(
                prepared.frame_indices, np.arange(10)
            )
            assert prepared.rgb is None and prepared.status == "ok"
            assert prepared.num_person_raw == source.get(
                "num_person_raw", source["keypoint"].shape[0]
            )
        mutual = reader[NTU_IDS[1]]
        assert mutual.sample.subject == 2 and mutual.sample.camera == 2
        assert mutual.sample.label_name == "punching/slapping other person"
        box = mutual.boxes[1, 3]  # the tight box of the joints scored > 0, and their mean score
        seen = mutual.scores[1, 3] > 0
        points = mutual.keypoints[1, 3][seen]
        assert np.allclose(box[:2], points.min(0)) and np.allclose(box[2:4], points.max(0))
        assert np.isclose(box[4], mutual.scores[1, 3][seen].astype(np.float32).mean(), atol=1e-3)
    train = read_csv(out / "manifests" / "xsub_train.csv")
    assert [row["sample_id"] for row in train] == NTU_IDS[:2]
    assert list(train[0]) == [
        "sample_id",
        "label",
        "label_name",
        "video",
        "subject",
        "camera",
        "setup",
        "replication",
    ]
    assert train[1]["label"] == "49" and train[1]["label_name"] == "punching/slapping other person"
    assert [row["sample_id"] for row in read_csv(out / "manifests" / "xsub_val.csv")] == sorted(
        NTU_IDS[2:]
    )
    classes = read_csv(out / "manifests" / "xsub_classes.csv")
    assert len(classes) == 60 and classes[0] == {"label": "0", "name": "drink water"}
    assert verify_dataset(out, deep=True) == []
    # a re-run finds everything done; --max-persons into the same folder is refused, into another
    # keeps the best 2
    again = runner.invoke(app, ["import-pyskl", str(path), "-d", "ntu60", "-o", str(out)])
    assert again.exit_code == 0 and "already done, skipped" in again.output
    other = runner.invoke(
        app, ["import-pyskl", str(path), "-d", "ntu60", "-o", str(out), "--max-persons", "2"]
    )
    assert other.exit_code == 1 and "prepared with other options" in other.output
    best = tmp_path / "best2"
    assert (
        runner.invoke(
            app, ["import-pyskl", str(path), "-d", "ntu60", "-o", str(best), "--max-persons", "2"]
        ).exit_code
        == 0
    )
    source = annotations[2]  # three persons
    ranked = np.sort(np.argsort(-source["keypoint_score"].astype(np.float32).sum(axis=(1, 2)))[:2])
    with ShardReader(best) as reader:
        np.testing.assert_array_equal(
            reader[NTU_IDS[2]].keypoints, source["keypoint"][ranked].astype(np.float32)
        )
        assert reader[NTU_IDS[2]].num_person_raw == 3


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("numpy_names", ["numpy 2.x (numpy._core)", "numpy 1.x (numpy.core)"])
def test_numpy_arrays_of_either_numpy_load(tmp_path: Path, protocol: int, numpy_names: str) -> None:
    source = annotation(NTU_IDS[0], 0, seed=3)
    source["label"] = np.int64(0)  # a numpy scalar, as some tools write labels
    data = pickle.dumps(
        {"split": {"xsub_train": [NTU_IDS[0]]}, "annotations": [source]}, protocol=protocol
    )
    if numpy_names.startswith(
        "numpy 1"
    ):  # the module names numpy 1.x writes (same opcodes, other text)
        data = rename_numpy_core(data)
        assert not any("numpy._core" in name for name in globals_named(data))
    loaded = load_pyskl(write_bytes(tmp_path / "a.pkl", data))
    assert loaded.split == {"xsub_train": [NTU_IDS[0]]}
    got = loaded.annotations[0]
    np.testing.assert_array_equal(got["keypoint"], source["keypoint"])
    assert (
        got["keypoint"].dtype == np.float16
        and got["label"] == 0
        and got["img_shape"] == (1080, 1920)
    )


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def rename_numpy_core(data: bytes) -> bytes:
    """A pickle with numpy 2.x's module names rewritten to numpy 1.x's, opcode by opcode (lengths
    fixed up)."""
    out = io.BytesIO()
    ops = list(pickletools.genops(data))
    for index, (opcode, arg, position) in enumerate(ops):
        end = ops[index + 1][2] if index + 1 < len(ops) else len(data)
        raw = data[position:end]
        if (
            isinstance(arg, str)
            and arg.startswith("numpy._core")
            and opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "GLOBAL")
        ):
            text = arg.replace("numpy._core", "numpy.core")
            if opcode.name == "GLOBAL":
                raw = b"c" + text.replace(" ", "\n").encode() + b"\n"
            elif opcode.name == "SHORT_BINUNICODE":
                raw = b"\x8c" + bytes([len(text)]) + text.encode()
            else:
                raw = b"X" + len(text).to_bytes(4, "little") + text.encode()
        elif opcode.name == "FRAME":
            continue  # frames only group bytes; their lengths would change
        out.write(raw)
    return out.getvalue()


# --- the compressed variant -----------------------------------------------------------------------


def test_compressed_frame_inds_variant_is_expanded(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frame_inds = np.array(
        [0, 0, 1, 3, 3, 3, 4], np.int16
    )  # frame 2 has nobody, frame 3 three people
    points = rng.random((7, 17, 3)).astype(np.float16) * np.array([500, 300, 1], np.float16)
    compressed = {
        "frame_dir": NTU_IDS[0],
        "label": 0,
        "img_shape": (360, 640),
        "original_shape": (360, 640),
        "total_frames": 6,
        "keypoint": points,
        "frame_inds": frame_inds,
    }
    keypoints, scores = dense_pose(compressed)
    assert keypoints.shape == (3, 6, 17, 2) and scores.shape == (3, 6, 17)
    for slot, frame, row in [
        (0, 0, 0),
        (1, 0, 1),
        (0, 1, 2),
        (0, 3, 3),
        (1, 3, 4),
        (2, 3, 5),
        (0, 4, 6),
    ]:
        np.testing.assert_array_equal(keypoints[slot, frame], points[row, :, :2].astype(np.float32))
        np.testing.assert_array_equal(scores[slot, frame], points[row, :, 2].astype(np.float32))
    assert (
        not keypoints[:, [2, 5]].any() and not scores[1:, [1, 4]].any()
    )  # empty frames and slots stay zero
    path = write_pickle(tmp_path / "k400.pkl", [compressed], {"train": [NTU_IDS[0]]})
    result = runner.invoke(
        app, ["import-pyskl", str(path), "-d", "generic", "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    with ShardReader(tmp_path / "out") as reader:
        prepared = reader[NTU_IDS[0]]
        assert (
            prepared.num_frames == 6
            and prepared.num_persons == 3
            and prepared.sample.label_name == "0"
        )
        np.testing.assert_array_equal(prepared.keypoints, keypoints)
    assert [
        row["sample_id"] for row in read_csv(tmp_path / "out" / "manifests" / "pyskl_train.csv")
    ] == [NTU_IDS[0]]


def test_unusable_annotations_fail_or_are_rejected_with_why(tmp_path: Path) -> None:
    good = annotation(NTU_IDS[0], 0)
    three_d = {**annotation(NTU_IDS[1], 49), "keypoint": np.zeros((2, 10, 25, 3), np.float32)}
    three_d.pop("keypoint_score")
    kinect = {
        **annotation(NTU_IDS[2], 7),
        "keypoint": np.zeros((1, 10, 25, 2), np.float32),
        "keypoint_score": np.zeros((1, 10, 25), np.float32),
    }
    short = {**annotation(NTU_IDS[3], 8), "total_frames": 12}
    path = write_pickle(tmp_path / "bad.pkl", [good, three_d, kinect, short, dict(good)], {})
    out = tmp_path / "out"
    result = runner.invoke(app, ["import-pyskl", str(path), "-d", "ntu60", "-o", str(out)])
    assert result.exit_code == 1, result.output
    reasons = {row["sample_id"]: row["reason"] for row in read_csv(out / "failures.csv")}
    assert "3D skeletons" in reasons[NTU_IDS[1]] and "COCO-17" in reasons[NTU_IDS[2]]
    assert "total_frames is 12" in reasons[NTU_IDS[3]]
    assert "listed twice" in read_csv(out / "rejected.csv")[0]["reason"]
    for broken, message in [
        (b"not a pickle", "cannot be read as a pickle"),
        (pickle.dumps({"annotation": []}, protocol=2), "expected {'split'"),
    ]:
        result = runner.invoke(
            app,
            [
                "import-pyskl",
                str(write_bytes(tmp_path / "x.pkl", broken)),
                "-d",
                "ntu60",
                "-o",
                str(tmp_path / "x"),
            ],
        )
        assert result.exit_code == 1 and message in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


# --- hostile pickles ------------------------------------------------------------------------------


class RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class WritesFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


class CallsSubprocess:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return subprocess.call, (["touch", str(self.marker)],)


# protocol 2 writes Python 2 names (fix_imports): __builtin__.exec, commands.call
@pytest.mark.parametrize(
    "payload, refused",
    [
        (RunsShell, r"posix\.system"),
        (WritesFile, r"(__builtin__|builtins)\.exec"),
        (CallsSubprocess, r"(subprocess|commands)\.call"),
    ],
)
def test_a_pickle_that_calls_code_is_refused_and_nothing_runs(
    tmp_path: Path, payload: type, refused: str
) -> None:
    marker = tmp_path / "marker"
    hostile = annotation(NTU_IDS[0], 0)
    hostile["label"] = payload(marker)  # hidden deep inside an otherwise normal annotation
    for protocol in (2, 4):
        path = write_pickle(
            tmp_path / f"hostile{protocol}.pkl",
            [annotation(NTU_IDS[1], 49), hostile],
            {},
            protocol=protocol,
        )
        with pytest.raises(UnsafePickleError, match=f"refused to load {refused}"):
            load_pyskl(path)
        result = runner.invoke(
            app, ["import-pyskl", str(path), "-d", "ntu60", "-o", str(tmp_path / "out")]
        )
        assert (
            result.exit_code == 1
            and "refused to load" in result.output
            and "Nothing in it was run" in result.output
        )
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not marker.exists(), "the pickle ran code"
    assert not (tmp_path / "out" / "shards").exists()
    pickle.loads(
        path.read_bytes()
    )  # the same file under plain pickle does run it: the test pickle is live
    assert marker.exists()


def test_codecs_encode_is_admitted_for_latin1_only(tmp_path: Path) -> None:
    rot13 = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(UnsafePickleError, match="only latin1"):
        load_pyskl(write_bytes(tmp_path / "rot13.pkl", rot13))


# --- export -> import round trip ------------------------------------------------------------------


def test_export_then_import_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "source"
    with ShardWriter(source, samples_per_shard=4) as writer:
        for index in range(6):
            writer.write(prepared_sample(index, persons=1 + index % 2, rgb=False))
    assert (
        runner.invoke(app, ["splits", str(source), "-d", "ntu60", "--protocol", "xsub"]).exit_code
        == 0
    )
    exported = tmp_path / "export" / "ntu60_epam.pkl"
    result = runner.invoke(app, ["export-pyskl", str(source), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    assert "6 annotations" in result.output and not list(exported.parent.glob(".*partial"))
    assert (
        exported.stat().st_mode & 0o444 == 0o444 & ~current_umask()
    )  # an ordinary file, not mkstemp's 0600
    data = exported.read_bytes()
    assert not any(
        name.startswith("numpy._core") for name in globals_named(data)
    )  # numpy 1.x reads it too
    content = pickle.loads(data)  # what PYSKL and MMAction2 do with it
    first = content["annotations"][0]
    assert set(first) == {
        "frame_dir",
        "label",
        "img_shape",
        "original_shape",
        "total_frames",
        "keypoint",
        "keypoint_score",
    }
    assert first["keypoint"].dtype == np.float32 and first["keypoint_score"].dtype == np.float32
    assert first["keypoint"].shape[1] == first["total_frames"] and first["img_shape"] == (
        1080,
        1920,
    )
    assert set(content["split"]) == {"xsub_train", "xsub_test"}

    back = tmp_path / "back"
    result = runner.invoke(app, ["import-pyskl", str(exported), "-d", "ntu60", "-o", str(back)])
    assert result.exit_code == 0, result.output
    with ShardReader(source) as one, ShardReader(back) as other:
        assert sorted(one) == sorted(other)
        for sample_id in one:
            np.testing.assert_array_equal(one[sample_id].keypoints, other[sample_id].keypoints)
            np.testing.assert_array_equal(one[sample_id].scores, other[sample_id].scores)
            assert one[sample_id].sample.label == other[sample_id].sample.label
            assert one[sample_id].sample.label_name == other[sample_id].sample.label_name
    for split in ("xsub_train", "xsub_test"):
        assert read_csv(source / "manifests" / f"{split}.csv") == read_csv(
            back / "manifests" / f"{split}.csv"
        )


# --- RGB from videos ------------------------------------------------------------------------------

FRAMES = 8
FULL_HW = (240, 320)
MARKER = np.array([64.0, 44.0])  # (x, y) in the 128 x 128 photo: the centre of a red 16 x 16 square
GRID = np.array([(x, y) for y in (16, 48, 80, 112) for x in (16, 48, 80, 112)], np.float64)


def marked_photo(scale: int) -> np.ndarray:
    """The astronaut photo at 128 / scale pixels with the red marker square (the nose joint's place)
    painted on."""
    photo = person_photo()[:: 4 * scale, :: 4 * scale].copy()
    x, y = (MARKER / scale).astype(int)
    half = 8 // scale
    photo[y - half : y + half, x - half : x + half] = (255, 0, 0)
    return photo


def full_keypoints() -> np.ndarray:
    """[1, T, 17, 2] in the full (240 x 320) frame: joint 0 on the marker, the others on a grid over
    the photo."""
    offsets = np.concatenate([MARKER[None], GRID])
    origins = np.array([(40 + 4 * t, 30 + 2 * t) for t in range(FRAMES)], np.float64)
    return (origins[:, None] + offsets[None]).astype(np.float32)[None]


@pytest.fixture(scope="module")
def video_pickle(tmp_path_factory: pytest.TempPathFactory, pyav: object) -> tuple[Path, Path]:
    """Two real clips of the marked photo moving: one at the pickle's img_shape, one at half of it
    (in a sub-folder, with NTU's `_rgb` suffix); a third annotation has no video."""
    folder = tmp_path_factory.mktemp("videos")
    videos = folder / "videos"
    (videos / "nested").mkdir(parents=True)
    write_photo_clip(
        videos / f"{NTU_IDS[0]}.mp4",
        marked_photo(1),
        num_frames=FRAMES,
        canvas_hw=FULL_HW,
        origin=(40, 30),
        step=(4, 2),
        crf=18,
    )
    write_photo_clip(
        videos / "nested" / f"{NTU_IDS[2]}_rgb.mp4",
        marked_photo(2),
        num_frames=FRAMES,
        canvas_hw=(FULL_HW[0] // 2, FULL_HW[1] // 2),
        origin=(20, 15),
        step=(2, 1),
        crf=18,
    )
    keypoints, scores = full_keypoints(), np.full((1, FRAMES, 17), 0.9, np.float32)
    annotations = [
        {
            "frame_dir": sample_id,
            "label": int(sample_id[-3:]) - 1,
            "img_shape": FULL_HW,
            "original_shape": FULL_HW,
            "total_frames": FRAMES,
            "keypoint": keypoints,
            "keypoint_score": scores,
        }
        for sample_id in (NTU_IDS[0], NTU_IDS[2], NTU_IDS[3])
    ]
    split = {"xsub_train": [NTU_IDS[0]], "xsub_val": [NTU_IDS[2], NTU_IDS[3]]}
    return write_pickle(folder / "ntu60_hrnet.pkl", annotations, split), videos


def test_videos_give_crops_aligned_with_the_keypoints(
    video_pickle: tuple[Path, Path], tmp_path: Path
) -> None:
    path, videos = video_pickle
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "import-pyskl",
            str(path),
            "-d",
            "ntu60",
            "-o",
            str(out),
            "--videos",
            str(videos),
            "--rgb-size",
            "128",
            "--heatmaps",
            "joint",
        ],
    )
    assert result.exit_code == 1, result.output  # the annotation without a video failed
    failures = read_csv(out / "failures.csv")
    assert [row["sample_id"] for row in failures] == [NTU_IDS[3]] and "no video named" in failures[
        0
    ]["reason"]
    assert [row["sample_id"] for row in read_csv(out / "manifests" / "xsub_val.csv")] == [
        NTU_IDS[2]
    ]
    with ShardReader(out) as reader:
        full, half = reader[NTU_IDS[0]], reader[NTU_IDS[2]]
    np.testing.assert_array_equal(full.keypoints, full_keypoints())
    np.testing.assert_array_equal(
        half.keypoints, full_keypoints() / 2
    )  # rescaled to the half-size video
    assert full.original_hw == FULL_HW and half.original_hw == (120, 160)
    assert half.source == f"nested/{NTU_IDS[2]}_rgb.mp4"
    assert half.extra["pyskl_img_shape"].tolist() == list(FULL_HW)
    for prepared, video in [
        (full, videos / f"{NTU_IDS[0]}.mp4"),
        (half, videos / "nested" / f"{NTU_IDS[2]}_rgb.mp4"),
    ]:
        box = person_box(
            prepared.keypoints, prepared.scores, prepared.original_hw
        )  # extract's rule
        assert prepared.crop_box == (box.x0, box.y0, box.x1, box.y1)
        assert prepared.joint_heatmaps.shape == (FRAMES, 17, 56, 56)
        frames = read_frames(video)
        side = box.x1 - box.x0
        for t in (0, FRAMES - 1):
            crop = np.asarray(Image.open(io.BytesIO(prepared.rgb[t])).convert("RGB")).astype(
                np.int16
            )
            expected = np.asarray(
                crop_frame(frames[t], CropBox(box.x0, box.y0, box.x1, box.y1), 128)
            )
            assert (
                np.abs(crop - expected.astype(np.int16)).mean() < 4
            )  # the crop extract would make
            x, y = ((prepared.keypoints[0, t, 0] - np.array([box.x0, box.y0])) * 128 / side).astype(
                int
            )
            red = crop[y - 1 : y + 2, x - 1 : x + 2].mean((0, 1))
            assert red[0] > 170 and red[1] < 90 and red[2] < 90, (
                f"the nose joint is not on the marker: {red}"
            )


# --- resume after a real kill ---------------------------------------------------------------------


def test_resume_after_a_real_kill(tmp_path: Path) -> None:
    ids = [f"S001C001P{p:03d}R001A{a:03d}" for p in range(1, 11) for a in range(1, 5)]
    path = write_pickle(
        tmp_path / "many.pkl",
        [annotation(i, int(i[-3:]) - 1, frames=48, seed=n) for n, i in enumerate(ids)],
        {"xsub_train": ids},
    )
    out = tmp_path / "out"
    args = [
        "import-pyskl",
        str(path),
        "-d",
        "ntu60",
        "-o",
        str(out),
        "--samples-per-shard",
        "1",
        "--heatmaps",
        "joint,limb",
        "--heatmap-size",
        "32",
    ]
    finished = kill_after_first_shard(args, out)
    assert 1 <= len(finished) < len(ids), "the kill came too late to test anything"
    result = runner.invoke(app, [*args, "--jobs", "2"])  # workers receive one annotation each
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "index.csv")
    assert sorted(row["sample_id"] for row in rows) == sorted(ids)  # every sample exactly once
    assert not list((out / "shards").glob("*.partial")) and verify_dataset(out) == []
    assert len(read_csv(out / "manifests" / "xsub_train.csv")) == len(ids)


def test_parts_cover_every_annotation_once(
    ntu_pickle: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    path, _ = ntu_pickle
    out = tmp_path / "out"
    for part in ("1/2", "2/2"):
        result = runner.invoke(
            app, ["import-pyskl", str(path), "-d", "ntu60", "-o", str(out), "--part", part]
        )
        assert result.exit_code == 0, result.output
    assert sorted(row["sample_id"] for row in read_csv(out / "index.csv")) == sorted(NTU_IDS)
    assert sorted(p.name for p in (out / "shards").glob("*.h5")) == [
        "shard-p000of002-00000.h5",
        "shard-p001of002-00000.h5",
    ]
    assert (
        len(read_csv(out / "manifests" / "xsub_train.csv")) == 2
    )  # the last part to finish lists every sample
    info = runner.invoke(app, ["info", str(out)], terminal_width=200)
    assert info.exit_code == 0 and "pyskl-import" in info.output and "xsub_train: 2" in info.output


class _ForgedArray:
    """Pickles as numpy's own `_reconstruct(ndarray, shape, b"b")` call, with a shape of 16 GiB."""

    def __reduce__(self):
        return (np.zeros(1).__reduce__()[0], (np.ndarray, (1 << 34,), b"b"))


class _ForgedBytes:
    """Pickles as `bytes(10**10)`: ten gigabytes of zeros asked for by a few bytes of pickle."""

    def __reduce__(self):
        return (bytes, (10**10,))


@pytest.mark.parametrize("forged", [_ForgedArray(), _ForgedBytes()], ids=["array", "bytes"])
def test_a_small_pickle_cannot_ask_for_gigabytes(tmp_path, forged) -> None:
    """A pickle of a few hundred bytes asking numpy or bytes() for gigabytes is refused before
    anything is allocated (one such file asked for 12.7 GiB)."""
    path = tmp_path / "forged.pkl"
    path.write_bytes(
        pickle.dumps({"split": {}, "annotations": [{"frame_dir": forged}]}, protocol=2)
    )
    assert path.stat().st_size < 1000
    with pytest.raises(UnsafePickleError, match="not in the file"):
        load_pyskl(path)
