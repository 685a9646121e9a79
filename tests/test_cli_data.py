"""`epam-data` and `epam-train` through typer's CliRunner, on the real commands and real files."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from epam_data.cli import app as data_app
from epam_model.cli import app as train_app

runner = CliRunner()


def invoke(app, args):
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize("app,command", [(data_app, "splits")])
def test_help_lists_commands_with_one_line_each(app, command):
    result = invoke(app, ["--help"])
    assert result.exit_code == 0
    assert command in result.output


def test_epam_train_help_works():
    result = invoke(train_app, ["--help"])
    assert result.exit_code == 0 and "EPAM-Net" in result.output


def test_splits_from_names(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text(
        "# NTU sample\nS001C001P001R001A001_rgb.avi\nS001C002P003R002A050.mp4\nnot-a-name.avi\n"
    )
    result = invoke(
        data_app, ["splits", "--dataset", "ntu60", "--names", names, "--out", tmp_path / "out"]
    )
    assert result.exit_code == 0, result.output
    assert "xsub" in result.output and "xview" in result.output
    assert "1 names or lines left out" in result.output and "not-a-name.avi" in result.output
    train = pd.read_csv(tmp_path / "out" / "manifests" / "xsub_train.csv")
    assert train["sample_id"].tolist() == ["S001C001P001R001A001"]
    rejected = pd.read_csv(tmp_path / "out" / "manifests" / "rejected.csv")
    assert rejected["name"].tolist() == ["not-a-name.avi"]


def test_splits_from_a_dataset_folder_writes_into_it(tmp_path):
    pd.DataFrame(
        {"sample_id": ["Walk_p03_r00_v01_c01", "Walk_p02_r00_v01_c02"], "status": ["ok", "ok"]}
    ).to_csv(tmp_path / "index.csv", index=False)
    (tmp_path / "dataset.json").write_text(json.dumps({"dataset": "toyota"}))
    result = invoke(data_app, ["splits", tmp_path, "--protocol", "cs", "-p", "cv2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "manifests").glob("*_t*.csv")) == [
        "cs_test.csv",
        "cs_train.csv",
        "cv2_test.csv",
        "cv2_train.csv",
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (["splits"], "give either a prepared DATASET_DIR or --names FILE"),
        (
            ["splits", "--dataset", "kinetics", "--names", "{names}", "--out", "{tmp}"],
            "unknown dataset 'kinetics'",
        ),
        (
            ["splits", "--dataset", "ntu60", "--names", "{tmp}/absent.txt", "--out", "{tmp}"],
            "cannot read the name list",
        ),
        (
            ["splits", "--dataset", "ntu60", "--names", "{names}"],
            "--names needs --dataset and --out",
        ),
        (
            ["splits", "--dataset", "ntu60", "--names", "{names}", "--out", "{tmp}"],
            "no usable ntu60 sample",
        ),
        (
            ["splits", "--dataset", "pku_mmd", "--names", "{names}", "--out", "{tmp}"],
            "pass --labels DIR",
        ),
        (["splits", "{tmp}"], "no index.csv"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, args, message):
    names = tmp_path / "names.txt"
    names.write_text("garbage\n")
    result = invoke(data_app, [arg.format(names=names, tmp=tmp_path) for arg in args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1


def test_pku_without_split_files_writes_cv_and_fails_on_cs(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    for video in ("0002-L", "0002-M", "0002-R"):
        (labels / f"{video}.txt").write_text("1,0,10,1\n2,20,30,1\n")
    names = tmp_path / "videos.txt"
    names.write_text("0002-L\n0002-M\n0002-R\n")
    result = invoke(
        data_app,
        ["splits", "-d", "pku_mmd", "--names", names, "--labels", labels, "--out", tmp_path],
    )
    assert result.exit_code == 1
    assert (
        "cross-subject.txt" in result.output and "used the official rule on view" in result.output
    )
    assert len(pd.read_csv(tmp_path / "manifests" / "cv_train.csv")) == 4
    assert len(pd.read_csv(tmp_path / "manifests" / "cv_test.csv")) == 2


def test_out_that_is_a_file_is_one_line(tmp_path) -> None:
    """OUT given as an existing file: one error line naming it, exit code 1, no traceback."""
    (tmp_path / "videos").mkdir()
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    arguments = ["extract", str(tmp_path / "videos"), "-d", "ntu60", "-o", str(out)]
    result = runner.invoke(data_app, arguments)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and str(out) in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_a_run_with_nothing_to_prepare_exits_1_and_says_why(tmp_path):
    """An empty folder, or one whose every name is left out, is an error for a script, not a
    success with a table of zeros."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(
        data_app, ["extract", str(empty), "-d", "ntu60", "-o", str(tmp_path / "a")]
    )
    assert result.exit_code == 1
    assert f"nothing to prepare: no video file or frame folder in {empty}" in result.output
    named = tmp_path / "named"
    named.mkdir()
    (named / "holiday.mp4").write_bytes(b"")
    result = runner.invoke(
        data_app, ["extract", str(named), "-d", "ntu60", "-o", str(tmp_path / "b")]
    )
    assert result.exit_code == 1
    assert "all 1 names found in" in result.output and "left out (rejected.csv)" in result.output
    assert (tmp_path / "b" / "rejected.csv").is_file()


@pytest.mark.parametrize("options", [[1, 2], "fast", 3])
def test_info_on_a_dataset_json_whose_options_are_not_a_mapping(tmp_path, options):
    from epam_data.shards import write_dataset_json

    write_dataset_json(tmp_path, "ntu60", {"pose_backend": "blazepose"})
    meta = json.loads((tmp_path / "dataset.json").read_text())
    (tmp_path / "dataset.json").write_text(json.dumps({**meta, "options": options}))
    result = invoke(data_app, ["info", tmp_path])
    assert result.exit_code == 1 and "'options' is a" in result.output
    assert "Traceback" not in result.output


def test_heatmaps_both_is_joint_and_limb_as_in_epam_train(tmp_path):
    """`--heatmaps both` stores what `epam-train --heatmap both` reads: joint and limb volumes."""
    out = tmp_path / "synth"
    args = ["synth", out, "--classes", "2", "--samples", "2", "--frames", "4", "--heatmaps", "both"]
    result = invoke(data_app, args)
    assert result.exit_code == 0, result.output
    options = json.loads((out / "dataset.json").read_text())["options"]
    assert options["heatmaps"] == ["joint", "limb"]
