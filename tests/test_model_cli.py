"""`epam-train model-info` and `epam-train export` through typer's CliRunner on the real app."""

import pytest
import torch
from typer.testing import CliRunner

from epam_model import build_model
from epam_model.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_model_info_prints_the_paper_figures() -> None:
    result = runner.invoke(app, ["model-info"])
    assert result.exit_code == 0, result.output
    for figure in (
        "2,006,010",
        "532,600",
        "107",
        "2,538,717",
        "2,499,717",
        "4.262",
        "3.356",
        "7.618",
        "4.499",
        "3.576",
        "8.075",
    ):
        assert figure in result.output, figure
    assert (
        "RGB stream" in result.output and "Attention" in result.output and "mmcv" in result.output
    )


def test_model_info_single_stream_other_classes() -> None:
    result = runner.invoke(
        app, ["model-info", "--stream", "pose", "--classes", "120", "--pose-channels", "34"]
    )
    assert result.exit_code == 0, result.output
    assert f"{519_580 + 17 * 24 * 9 + 217 * 120:,}" in result.output  # 17 more stem input channels
    assert "RGB stream" not in result.output


def test_model_info_user_error_is_one_red_line() -> None:
    result = runner.invoke(app, ["model-info", "--pose-channels", "20"])
    assert result.exit_code == 1
    assert "error:" in result.output and "pose_channels=20" in result.output
    assert "Traceback" not in result.output


def test_export_reports_a_missing_checkpoint(tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "export",
            "--stream",
            "rgb",
            "--weights",
            str(tmp_path / "nope.pt"),
            "--out",
            str(tmp_path / "rgb.onnx"),
        ],
    )
    assert result.exit_code == 1
    assert "no such checkpoint file" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app,
        [
            "export",
            "--stream",
            "rgb",
            "--rgb-weights",
            str(tmp_path / "x.pt"),
            "--out",
            str(tmp_path / "rgb.onnx"),
        ],
    )
    assert result.exit_code == 1 and "use --weights" in result.output


@pytest.mark.slow
def test_export_pose_stream_with_weights(tmp_path) -> None:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    weights = tmp_path / "pose.pt"
    torch.save(build_model("pose", 60).state_dict(), weights)
    out = tmp_path / "pose.onnx"
    result = runner.invoke(
        app, ["export", "--stream", "pose", "--weights", str(weights), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and "max abs diff" in result.output
    assert "0 missing, 0 unexpected" in result.output
