"""scripts/gpu_check.py rehearsed on the CPU (--smoke): every check runs, and only those that need
CUDA or missing wheels are skipped, so the GPU session's one run is not its first."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
SKIPPED_ON_CPU = {"amp_fp16": "CUDA", "extract_scaling": "decord/TFLite"}
CLIP = ROOT.parent / "shared" / "media" / "two_players_426x240.mp4"


def check_names() -> list[str]:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return [name for name, _ in module.CHECKS]


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _movenet_files() -> bool:
    from epam_data.pose import PoseBackendError
    from epam_data.pose.npm_models import find_model

    try:
        return find_model("centernet") is not None and find_model("movenet-thunder") is not None
    except PoseBackendError:
        return False


@pytest.mark.slow
def test_smoke_run_passes_every_check(tmp_path: Path) -> None:
    """Set up as on the GPU machine: frames and the networks from `scripts/gpu_carry.py` (JPEGs,
    converted .pt files through $EPAM_BLAZEPOSE_MODELS)."""
    args = ["--smoke", "--out", str(tmp_path), "--budget-s", "1000"]
    env = dict(os.environ)
    if CLIP.is_file():
        carry = _load_script("gpu_carry").main(["--out", str(tmp_path / "carry"), "--frames", "6"])
        assert len(list((carry / "frames").glob("*.jpg"))) == 6
        assert len(list((carry / "blazepose").glob("*.pt"))) == 2
        args += ["--frames", str(carry / "frames")]
        env["EPAM_BLAZEPOSE_MODELS"] = str(carry / "blazepose")  # .pt files only, no .tflite
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    results = {r["name"]: r for r in report["checks"]}
    assert list(results) == check_names()
    for name, result in results.items():
        if name in ("blazepose_torch", "movenet") and not CLIP.is_file():
            assert result["status"] == "skipped" and "--frames" in result["reason"], result
        elif name == "movenet" and not _movenet_files():
            assert result["status"] == "skipped" and "npm_models" in result["reason"], result
        elif name in SKIPPED_ON_CPU:
            assert result["status"] == "skipped", result
            assert SKIPPED_ON_CPU[name] in result["reason"]
        else:
            assert result["status"] == "ok", result
    assert results["train_resume"]["figures"]["bit_identical"]
    assert results["render_torch"]["figures"]["joint_max_abs"] <= 1e-5
    if CLIP.is_file():  # both players tracked through the torch runtime
        assert results["blazepose_torch"]["figures"]["persons_per_frame"] == 2
    if CLIP.is_file() and _movenet_files():
        assert results["movenet"]["figures"]["same_persons_as_cpu"]
    assert {g["goal"] for g in report["goals"]} >= {"EPAM-Net training off >= 1,000 clips/s"}
    assert report["machine"]["device"] == "cpu"
    # whether NVDEC could run there: the report names both driver libraries, loaded or not
    assert set(report["machine"]["video_libraries"]) == {"libnvcuvid.so.1", "libnvidia-encode.so.1"}
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| fp32_epam | ok |" in markdown and "libnvcuvid.so.1" in markdown


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "no CUDA" in done.stderr and "--smoke" in done.stderr
    assert not (tmp_path / "gpu_check.json").exists()
