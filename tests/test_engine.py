"""epam_model.engine and `epam-train train / eval` on a synthetic prepared dataset with small clips.

Clips are 8 pose frames on a 16 x 16 canvas and 4 RGB frames of 64 x 64 (rgb_size = 4 x
heatmap_size, so both streams end on the same 2 x 2 feature map). One thread, no loader workers: the
runs are deterministic.
"""

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from epam_data.errors import EpamError
from epam_data.synth import make_synth_dataset
from epam_model.checkpoints import build_from_checkpoint, load_checkpoint
from epam_model.cli import app
from epam_model.config import TrainConfig, resolve_train_config
from epam_model.engine import METRICS_COLUMNS, evaluate, train
from epam_model.epamnet import CheckpointError, build_model, read_state_dict

runner = CliRunner()
SMALL = dict(
    pose_frames=8,
    rgb_every=2,
    rgb_size=64,
    heatmap_size=16,
    batch_size=8,
    workers=0,
    progress=False,
)
SMALL_ARGS = [
    "--pose-frames",
    "8",
    "--rgb-every",
    "2",
    "--rgb-size",
    "64",
    "--heatmap-size",
    "16",
    "--batch-size",
    "8",
    "--workers",
    "0",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    """4 classes, 32 train / 16 test samples (protocol "synth"); protocol "odd" has the same train
    split and 15 test samples; protocol "small" 16 train and 8 test samples, for the joint model
    (the slowest to train)."""
    out = make_synth_dataset(
        tmp_path_factory.mktemp("synth") / "data", classes=4, samples=48, frames=24, seed=0
    )
    manifests = out / "manifests"
    for protocol, train_rows, test_rows in (("odd", 32, 15), ("small", 16, 8)):
        shutil.copy(manifests / "synth_classes.csv", manifests / f"{protocol}_classes.csv")
        for split, rows in (("train", train_rows), ("test", test_rows)):
            lines = (
                (manifests / f"synth_{split}.csv")
                .read_text(encoding="utf-8")
                .splitlines(keepends=True)
            )
            (manifests / f"{protocol}_{split}.csv").write_text(
                "".join(lines[: rows + 1]), encoding="utf-8"
            )
    return out


def manifest_ids(synth_dir: Path, protocol: str, split: str = "test") -> list[str]:
    lines = (
        (synth_dir / "manifests" / f"{protocol}_{split}.csv")
        .read_text(encoding="utf-8")
        .splitlines()[1:]
    )
    return [line.split(",")[0] for line in lines]


def small_config(synth_dir: Path, out: Path, **options) -> TrainConfig:
    values = {
        "dataset_dir": str(synth_dir),
        "protocol": "small",
        "out": str(out),
        **SMALL,
        **options,
    }
    return TrainConfig.from_dict(values)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def epam_runs(synth_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The joint model for 2 epochs straight, and for 1 epoch, stopped, then resumed for the
    second; with 2 loader workers, as a real run has (persistent workers keep one loader iterator
    for the whole run, a resumed run makes a new one: neither may move the global RNG)."""
    root = tmp_path_factory.mktemp("epam")
    straight, resumed = root / "straight", root / "resumed"
    options = {"epochs": 2, "lr": 0.02, "workers": 2}
    train(small_config(synth_dir, straight, **options))
    train(small_config(synth_dir, resumed, **options), stop_after=1)
    assert len(read_metrics(resumed)) == 1 and load_checkpoint(resumed / "last.pt")["epoch"] == 1
    train(small_config(synth_dir, resumed, **options), resume=True)
    return straight, resumed


@pytest.fixture(scope="module")
def pose_run(synth_dir, tmp_path_factory) -> Path:
    """The pose stream trained through the CLI (the cheapest stream that learns the synthetic
    motions)."""
    run_dir = tmp_path_factory.mktemp("pose") / "run"
    result = runner.invoke(
        app,
        [
            "train",
            str(synth_dir),
            "--protocol",
            "synth",
            "--stream",
            "pose",
            "--out",
            str(run_dir),
            "--epochs",
            "8",
            "--lr",
            "0.1",
            "--seed",
            "0",
            *SMALL_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best val top1" in result.output
    return run_dir


def test_the_default_recipe_learns_the_synthetic_motions_in_six_epochs(tmp_path) -> None:
    """`epam-data synth DS --classes 4 --samples 64`, then the pose stream for 6 epochs with no
    --lr (24 SGD steps), at 16 frames of 32 px so that it runs in seconds. Measured (3 seeds, with
    and without AVX-512, 1 and 2 threads): last train loss 0.73-0.89, last val top-1 0.70-0.80.
    The defaults of before (residual scales starting at 0, running-average BN statistics): loss
    1.29-1.36, val 0.25, one class for every clip (docs/training.md)."""
    data = make_synth_dataset(tmp_path / "data", classes=4, samples=64)
    args = ["train", str(data), "--protocol", "synth", "--stream", "pose", "--epochs", "6"]
    args += ["--pose-frames", "16", "--heatmap-size", "32", "--workers", "0", "--no-progress"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    last = read_metrics(tmp_path / "run")[-1]
    assert float(last["train_loss"]) < 0.8 * math.log(4), last  # chance: ln 4 = 1.39
    assert float(last["val_top1"]) >= 0.5, last  # chance: 0.25


def test_resume_gives_the_same_next_epoch_as_an_uninterrupted_run(epam_runs) -> None:
    straight, resumed = epam_runs
    rows_a, rows_b = read_metrics(straight), read_metrics(resumed)
    assert [row["epoch"] for row in rows_b] == ["1", "2"]
    for key in ("lr", "train_loss", "train_top1", "val_top1", "val_mean_class_acc"):
        assert float(rows_b[1][key]) == pytest.approx(float(rows_a[1][key]), rel=1e-6, abs=1e-7), (
            key
        )
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_checkpoints_load_with_weights_only_and_rebuild_the_model(epam_runs) -> None:
    straight, _ = epam_runs
    payload = torch.load(straight / "last.pt", map_location="cpu", weights_only=True)
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "config",
        "model_args",
        "class_names",
        "epoch",
        "best",
    } <= set(payload)
    assert payload["model_args"] == {
        "stream": "epam",
        "num_classes": 4,
        "pose_channels": 17,
        "dropout": 0.5,
    }
    assert len(payload["class_names"]) == 4 and payload["config"]["rgb_size"] == 64
    model = build_from_checkpoint(payload)
    assert set(model.state_dict()) == set(payload["model"])
    assert set(read_state_dict(straight / "last.pt")) == set(
        payload["model"]
    )  # usable as --init-* source
    assert (straight / "best.pt").is_file() and (straight / "config.yaml").is_file()
    assert list(read_metrics(straight)[0]) == list(METRICS_COLUMNS)


def test_training_beats_chance_and_eval_agrees(pose_run, synth_dir) -> None:
    rows = read_metrics(pose_run)
    assert len(rows) == 8
    best = load_checkpoint(pose_run / "best.pt")
    assert best["best"]["metric"] == "top1"
    assert best["best"]["value"] >= 0.5, rows  # 4 classes: chance is 0.25
    result = runner.invoke(
        app, ["eval", str(pose_run), str(synth_dir), "--protocol", "synth", "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((pose_run / "eval" / "synth_test" / "metrics.json").read_text())
    assert metrics["pose"]["top1"] == pytest.approx(best["best"]["value"])
    assert metrics["pose"]["top1"] >= 0.5 and metrics["meta"]["samples"] == 16


def test_eval_writes_metrics_per_class_confusion_and_scores(epam_runs, synth_dir, tmp_path) -> None:
    straight, _ = epam_runs
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "eval",
            str(straight / "last.pt"),
            str(synth_dir),
            "--protocol",
            "small",
            "--clips",
            "2",
            "--flip",
            "--workers",
            "0",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "fused" in result.output and "mean class acc" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for head in ("rgb", "pose", "fused"):
        assert set(metrics[head]) == {"top1", "top5", "mean_class_acc"}
        assert (
            0 <= metrics[head]["top1"] <= metrics[head]["top5"] == 1.0
        )  # 4 classes: top-5 counts everything
    assert metrics["meta"]["clips"] == 2 and metrics["meta"]["flip"] is True
    with open(out / "per_class.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {"class_name", "samples", "accuracy_fused", "accuracy_rgb"} <= set(
        rows[0]
    )
    assert sum(int(row["samples"]) for row in rows) == 8
    with Image.open(out / "confusion.png") as image:
        assert image.format == "PNG" and image.size[0] > 40
    scores = np.load(out / "scores.npz")
    assert {"sample_ids", "labels", "class_names", "rgb", "pose", "fused"} <= set(scores.files)
    np.testing.assert_allclose(
        scores["fused"], scores["rgb"] + scores["pose"], rtol=1e-5, atol=1e-5
    )
    assert scores["sample_ids"].tolist() == manifest_ids(synth_dir, "small")


def test_eval_clips_and_flip_change_the_scores(epam_runs, synth_dir, tmp_path) -> None:
    straight, _ = epam_runs
    plain = evaluate(straight, synth_dir, "small", workers=0, out_dir=tmp_path / "a")
    again = evaluate(straight, synth_dir, "small", workers=0, out_dir=tmp_path / "b")
    more = evaluate(straight, synth_dir, "small", workers=0, clips=2, out_dir=tmp_path / "c")
    load = lambda result: np.load(result.files["scores"])["pose"]  # noqa: E731
    np.testing.assert_array_equal(load(plain), load(again))  # evaluation is deterministic
    assert not np.allclose(load(plain), load(more))  # the second clip sees other frames


def test_bad_checkpoints_give_one_clear_error(synth_dir, tmp_path, epam_runs) -> None:
    missing = runner.invoke(
        app, ["eval", str(tmp_path / "nope.pt"), str(synth_dir), "--protocol", "synth"]
    )
    assert (
        missing.exit_code == 1
        and "no such checkpoint" in missing.output
        and "Traceback" not in missing.output
    )
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    result = runner.invoke(app, ["eval", str(garbage), str(synth_dir), "--protocol", "synth"])
    assert result.exit_code == 1 and "cannot read it as a torch checkpoint" in result.output
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((epam_runs[0] / "last.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    bare = tmp_path / "bare.pt"
    torch.save(build_from_checkpoint(load_checkpoint(epam_runs[0] / "last.pt")).state_dict(), bare)
    with pytest.raises(CheckpointError, match="not an epam-train checkpoint"):
        load_checkpoint(bare)
    with pytest.raises(CheckpointError, match="without best.pt or last.pt"):
        evaluate(tmp_path, synth_dir, "synth")


def test_a_run_folder_is_not_overwritten_and_resume_keeps_its_options(epam_runs, synth_dir) -> None:
    straight, _ = epam_runs
    with pytest.raises(EpamError, match="already holds a run"):
        train(small_config(synth_dir, straight, epochs=2, lr=0.02))
    with pytest.raises(EpamError, match="lr: 0.02 in the checkpoint, 0.05 now"):
        train(small_config(synth_dir, straight, epochs=2, lr=0.05), resume=True)
    # `train DATA --out RUN --resume` alone takes every option from the run's last.pt
    config = resolve_train_config(synth_dir, overrides={"out": str(straight)}, resume=True)
    assert config.lr == 0.02 and config.rgb_size == 64 and config.stream == "epam"
    result = runner.invoke(app, ["train", str(synth_dir), "--out", str(straight), "--resume"])
    assert result.exit_code == 0, result.output  # all epochs done: nothing more to run
    assert len(read_metrics(straight)) == 2


def test_a_run_saved_before_the_bn_options_resumes_as_it_was(epam_runs, synth_dir, tmp_path):
    """A checkpoint written before `zero_init_residual` and `precise_bn` existed resumes with the
    values it ran with (the authors' zero init, the running averages), not today's defaults, and
    naming one of today's defaults on the command line is refused as a change."""
    straight, _ = epam_runs
    old = tmp_path / "old"
    shutil.copytree(straight, old)
    payload = load_checkpoint(old / "last.pt")
    for key in ("zero_init_residual", "precise_bn"):
        del payload["config"][key]
    torch.save(payload, old / "last.pt")
    config = resolve_train_config(synth_dir, overrides={"out": str(old)}, resume=True)
    assert config.zero_init_residual is True and config.precise_bn == 0
    result = runner.invoke(app, ["train", str(synth_dir), "--out", str(old), "--resume"])
    assert result.exit_code == 0, result.output
    with pytest.raises(EpamError, match="precise_bn: 0 in the checkpoint, 200 now"):
        train(small_config(synth_dir, old, epochs=3, lr=0.02, precise_bn=200), resume=True)


def test_yaml_config_is_overridden_by_options(synth_dir, tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "protocol: synth\nbatch-size: 4\nlr: 1e-3\nepochs: 3\nstream: pose\n", encoding="utf-8"
    )
    config = resolve_train_config(
        synth_dir, config_file=path, overrides={"out": str(tmp_path / "r"), "epochs": 5}
    )
    assert (config.batch_size, config.lr, config.epochs, config.stream) == (4, 0.001, 5, "pose")
    assert (
        config.weight_decay == 3e-4 and config.momentum == 0.9 and config.clip_grad == 40
    )  # the paper's recipe
    path.write_text("protocol: synth\nbatchsize: 4\n", encoding="utf-8")
    with pytest.raises(EpamError, match="unknown option"):
        resolve_train_config(synth_dir, config_file=path, overrides={"out": "x"})
    with pytest.raises(EpamError, match="rgb_size = 4 x heatmap_size"):
        small_config(synth_dir, tmp_path / "r", heatmap_size=32).check()
    result = runner.invoke(
        app,
        [
            "train",
            str(synth_dir),
            "--protocol",
            "synth",
            "--out",
            str(tmp_path / "r"),
            "--heatmap-size",
            "32",
            "--rgb-size",
            "64",
        ],
    )
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app,
        [
            "train",
            str(synth_dir),
            "--protocol",
            "nope",
            "--out",
            str(tmp_path / "r"),
            "--stream",
            "pose",
            *SMALL_ARGS,
        ],
    )
    assert result.exit_code == 1 and "nope_train.csv" in result.output


def test_joint_model_starts_from_stream_checkpoints(pose_run, synth_dir, tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            str(synth_dir),
            "--protocol",
            "small",
            "--out",
            str(tmp_path / "joint"),
            "--init-pose",
            str(pose_run / "best.pt"),
            "--epochs",
            "1",
            "--no-progress",
            *SMALL_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "epam.pose <- " in result.output
        and "0 missing, 0 unexpected, 0 with another shape" in result.output
    )


def train_args(synth_dir: Path, out: Path, *more: str) -> list[str]:
    return ["train", str(synth_dir), "--protocol", "small", "--out", str(out), "--no-progress"] + [
        *SMALL_ARGS,
        *more,
    ]


def test_an_init_that_leaves_the_backbone_unloaded_is_refused(pose_run, synth_dir, tmp_path):
    """A checkpoint under other key names (here `encoder.*`, as another codebase might save it)
    would load nothing: one line says so, the full list goes to RUN/init_pose.txt, and
    --init-partial overrides. (The authors' own names are converted: tests/test_authors.py.)"""
    state = read_state_dict(pose_run / "best.pt")
    foreign = tmp_path / "other_codebase.pth"
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in state.items()}}, foreign)
    out = tmp_path / "refused"
    args = ["--stream", "pose", "--init-pose", str(foreign), "--epochs", "1"]
    result = runner.invoke(app, train_args(synth_dir, out, *args))
    assert result.exit_code == 1
    assert "backbone would keep their initial values" in result.output
    assert "encoder.conv5" in result.output and "--init-partial" in result.output
    assert len(result.output.strip().splitlines()) <= 6  # not one line per key
    listed = (out / "init_pose.txt").read_text().splitlines()
    assert listed[0].startswith("pose <- ") and len(listed) > len(state)
    assert not (out / "last.pt").exists()
    result = runner.invoke(app, train_args(synth_dir, out, *args, "--init-partial"))
    assert result.exit_code == 0, result.output
    assert (out / "last.pt").is_file()


def test_an_epam_checkpoint_initialises_one_stream(pose_run, synth_dir, tmp_path):
    """--init-pose accepts EPAM-Net's own checkpoints too: their pose.* part is loaded."""
    joint = build_model("epam", 4)
    joint.pose.load_state_dict(read_state_dict(pose_run / "best.pt"))
    torch.save({"model": joint.state_dict()}, tmp_path / "joint.pt")
    out = tmp_path / "from_joint"
    args = ["--stream", "pose", "--init-pose", str(tmp_path / "joint.pt"), "--epochs", "1"]
    result = runner.invoke(app, train_args(synth_dir, out, *args))
    assert result.exit_code == 0, result.output
    assert "0 missing, 0 unexpected, 0 with another shape" in result.output


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"model_args": {"stream": "pose", "num_classes": "four"}}, "num_classes='four'"),
        ({"model_args": {"stream": "pose", "bogus": 1}}, "bogus=1"),
        ({"model_args": ["pose"]}, "model_args=['pose']"),
        ({"drop": "head.fc.bias"}, "1 missing"),
    ],
)
def test_eval_on_a_damaged_checkpoint_is_one_line(pose_run, synth_dir, tmp_path, edit, message):
    payload = load_checkpoint(pose_run / "best.pt")
    if "drop" in edit:
        payload["model"].pop(edit["drop"])
    else:
        payload.update(edit)
    torch.save(payload, tmp_path / "edited.pt")
    args = ["eval", str(tmp_path / "edited.pt"), str(synth_dir), "--protocol", "synth"]
    result = runner.invoke(app, [*args, "--workers", "0"])
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output


def test_resume_with_more_epochs_replans_the_schedule(synth_dir, tmp_path):
    """A 2-epoch run resumed with --epochs 3 takes, in epoch 3, the lr of a run planned for 3
    epochs from the start; fewer epochs than done is refused."""
    pose = dict(stream="pose", protocol="synth")
    planned = tmp_path / "planned"
    train(small_config(synth_dir, planned, epochs=3, **pose))
    extended = tmp_path / "extended"
    train(small_config(synth_dir, extended, epochs=2, **pose))
    with pytest.raises(EpamError, match="--epochs 1 but 2 epochs are done"):
        train(small_config(synth_dir, extended, epochs=1, **pose), resume=True)
    train(small_config(synth_dir, extended, epochs=3, **pose), resume=True)
    rows_planned, rows_extended = read_metrics(planned), read_metrics(extended)
    assert [row["epoch"] for row in rows_extended] == ["1", "2", "3"]
    assert float(rows_extended[2]["lr"]) == pytest.approx(float(rows_planned[2]["lr"]), rel=1e-9)
    assert float(rows_extended[1]["lr"]) != pytest.approx(float(rows_planned[1]["lr"]), rel=1e-3)
    saved = load_checkpoint(extended / "last.pt")
    assert saved["config"]["epochs"] == 3
    assert (
        saved["scheduler"]["last_epoch"]
        == load_checkpoint(planned / "last.pt")["scheduler"]["last_epoch"]
    )


def test_ddp_two_cpu_processes_score_every_sample_once(synth_dir, tmp_path) -> None:
    """A real torchrun job (gloo, 2 processes) trains, then evaluates 15 test samples: each is
    scored once."""
    run_dir, report = tmp_path / "ddp", tmp_path / "ddp_eval"
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, torch\ntorch.set_num_threads(1)\nfrom epam_model.cli import "
        f"app\napp(['train', {str(synth_dir)!r}, '--protocol', 'odd', '--stream', 'pose', '--out', "
        f"{str(run_dir)!r}, '--epochs', '1', '--device', 'cpu', '--no-progress', *{SMALL_ARGS!r}], "
        f"standalone_mode=False)\napp(['eval', {str(run_dir)!r}, {str(synth_dir)!r}, '--protocol', "
        "'odd', '--workers', '0', '--batch-size', '4', '--device', 'cpu', '--out', "
        f"{str(report)!r}], standalone_mode=False)\n",
        encoding="utf-8",
    )
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = job.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)  # torchrun and its two workers, nothing else
        stdout, stderr = job.communicate()
        pytest.fail(f"torchrun job hung:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    assert job.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert len(read_metrics(run_dir)) == 1  # only rank 0 writes
    assert "2 x batch 8" in stdout
    assert "BN statistics re-estimated on 2 batches" in stdout  # per rank, then averaged
    scores = np.load(report / "scores.npz")
    assert len(manifest_ids(synth_dir, "odd")) == 15
    assert scores["sample_ids"].tolist() == manifest_ids(synth_dir, "odd")
    assert json.loads((report / "metrics.json").read_text())["meta"]["samples"] == 15
    single = evaluate(
        run_dir, synth_dir, "odd", workers=0, batch_size=4, out_dir=tmp_path / "single"
    )
    np.testing.assert_allclose(
        np.load(single.files["scores"])["pose"], scores["pose"], rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("heatmap", ["joint", "limb", "both"])
def test_flip_inputs_mirror_and_swap_channels(heatmap) -> None:
    from epam_data.heatmaps import COCO17_FLIP_PERM
    from epam_model.engine import flip_inputs, flip_perm

    perm = flip_perm(heatmap)
    assert sorted(perm) == list(range(34 if heatmap == "both" else 17))
    assert [perm[i] for i in perm] == list(range(len(perm)))  # a flip undoes itself
    if heatmap != "limb":
        assert perm[:17] == list(COCO17_FLIP_PERM)
    rgb, pose = torch.randn(2, 3, 4, 8, 8), torch.randn(2, len(perm), 8, 4, 4)
    flipped_rgb, flipped_pose = flip_inputs(rgb, pose, heatmap)
    torch.testing.assert_close(flipped_rgb, rgb.flip(-1))
    torch.testing.assert_close(flipped_pose[:, 0], pose[:, perm[0]].flip(-1))
    torch.testing.assert_close(flip_inputs(*flip_inputs(rgb, pose, heatmap), heatmap)[1], pose)


def test_an_empty_split_is_refused_before_training(synth_dir, tmp_path) -> None:
    """An empty train or validation manifest: refused (it trained on 0 clips, or printed a best.pt
    it never wrote)."""
    manifests = synth_dir / "manifests"
    for split in ("train", "test"):
        for name in ("classes", "train", "test"):
            shutil.copy(manifests / f"synth_{name}.csv", manifests / f"empty{split}_{name}.csv")
        header = (manifests / f"synth_{split}.csv").read_text(encoding="utf-8").splitlines()[0]
        (manifests / f"empty{split}_{split}.csv").write_text(header + "\n", encoding="utf-8")
        config = small_config(synth_dir, tmp_path / split, protocol=f"empty{split}")
        with pytest.raises(EpamError, match="split lists no samples"):
            train(config)
        assert not (tmp_path / split / "last.pt").exists()


def test_process_group_backend_follows_the_device_unless_told(monkeypatch) -> None:
    """nccl on CUDA, gloo on the CPU; $EPAM_DIST_BACKEND=gloo lets several ranks share one GPU
    (scripts/gpu_check.py rehearses DDP that way on a one-GPU machine)."""
    from epam_model.distributed import BACKEND_ENV, process_group_backend

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert process_group_backend(torch.device("cpu")) == "gloo"
    assert process_group_backend(torch.device("cuda", 0)) == "nccl"
    monkeypatch.setenv(BACKEND_ENV, "gloo")
    assert process_group_backend(torch.device("cuda", 0)) == "gloo"
