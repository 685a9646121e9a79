"""scripts/gpu_check.py rehearsed on the CPU (--smoke): every check runs, and only those that need
CUDA or missing wheels are skipped, so the GPU session's one run is not its first."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.slow
def test_smoke_run_passes_every_check(tmp_path: Path) -> None:
    frames = tmp_path / "frames"  # blazepose_torch needs frames with people: a shared clip's
    if CLIP.is_file():
        from PIL import Image

        from epam_data.video import read_frames

        frames.mkdir()
        for index, frame in enumerate(read_frames(CLIP, list(range(6)))):
            Image.fromarray(frame).save(frames / f"{index + 1:06d}.jpg", quality=95)
    args = ["--smoke", "--out", str(tmp_path), "--budget-s", "1000"]
    args += ["--frames", str(frames)] if CLIP.is_file() else []
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    results = {r["name"]: r for r in report["checks"]}
    assert list(results) == check_names()
    for name, result in results.items():
        if name == "blazepose_torch" and not CLIP.is_file():
            assert result["status"] == "skipped" and "--frames" in result["reason"], result
        elif name in SKIPPED_ON_CPU:
            assert result["status"] == "skipped", result
            assert SKIPPED_ON_CPU[name] in result["reason"]
        else:
            assert result["status"] == "ok", result
    assert results["train_resume"]["figures"]["bit_identical"]
    assert results["render_torch"]["figures"]["joint_max_abs"] <= 1e-5
    if CLIP.is_file():  # both players tracked through the torch runtime
        assert results["blazepose_torch"]["figures"]["persons_per_frame"] == 2
    assert {g["goal"] for g in report["goals"]} >= {"EPAM-Net training off >= 1,000 clips/s"}
    assert report["machine"]["device"] == "cpu"
    assert "| fp32_epam | ok |" in (tmp_path / "gpu_check.md").read_text()


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
