"""`epam-train predict` on real video (../shared/media): the same numbers as `extract` + `eval` on
the same clip, per-head top-k, windows over a long clip, the no-person case, the Python API.

The checkpoints are trained here for one epoch on the synthetic dataset (their classes are the
synthetic motions): what is tested is that prediction runs the same chain as evaluation, not what
the network knows.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from epam_data.cli import app as data_app
from epam_data.synth import make_synth_dataset
from epam_data.video import read_frames
from epam_model.cli import app
from epam_model.predict import predict_videos

runner = CliRunner()
SMALL = ["--pose-frames", "8", "--rgb-every", "2", "--rgb-size", "64", "--heatmap-size", "16"]
CLIP = "two_players_426x240.mp4"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A pose-stream and an EPAM-Net run, one epoch each on 4 synthetic classes."""
    root = tmp_path_factory.mktemp("runs")
    data = make_synth_dataset(root / "synth", classes=4, samples=16, frames=16, seed=0)
    found = {}
    for stream in ("pose", "epam"):
        out = root / stream
        args = ["train", str(data), "--protocol", "synth", "--stream", stream, "--out", str(out)]
        args += ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--no-progress", *SMALL]
        # The authors' init keeps these one-epoch networks' logits on real video small enough that
        # the probabilities compared below carry information: with the residual scales at 1 (the
        # from-scratch default) the RGB logits exceeded 88 and the softmax was [0, 0, 0, 1].
        args += ["--zero-init-residual"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        found[stream] = out
    return found


def test_predict_gives_what_extract_and_eval_give_on_the_same_clip(runs, media_dir, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(media_dir / CLIP, videos / CLIP)
    out = tmp_path / "data"
    args = ["extract", str(videos), "--dataset", "generic", "--out", str(out)]
    listing = tmp_path / "list.csv"
    listing.write_text(f"path,label\n{CLIP},0\n")
    result = runner.invoke(data_app, [*args, "--list", str(listing)])
    assert result.exit_code == 0, result.output
    (sample_id,) = [row["sample_id"] for row in csv.DictReader(open(out / "index.csv"))]
    manifests = out / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "one_test.csv").write_text(f"sample_id,label,label_name\n{sample_id},0,a\n")
    (manifests / "one_classes.csv").write_text("label,name\n0,a\n1,b\n2,c\n3,d\n")
    for stream, heads in (("pose", ["pose"]), ("epam", ["rgb", "pose", "fused"])):
        scored = tmp_path / f"eval_{stream}"
        args = ["eval", str(runs[stream]), str(out), "--protocol", "one", "--workers", "0"]
        result = runner.invoke(app, [*args, "--out", str(scored)])
        assert result.exit_code == 0, result.output
        logits = np.load(scored / "scores.npz")
        (predicted,) = predict_videos(runs[stream], [videos / CLIP], top=4, max_persons=1)
        assert predicted["status"] == "ok" and predicted["frames"] == 300
        (segment,) = predicted["segments"]
        assert list(segment["heads"]) == heads
        for head in heads:
            shifted = np.exp(logits[head][0] - logits[head][0].max())  # no overflow
            expected = shifted / shifted.sum()
            got = {item["label"]: item["probability"] for item in segment["heads"][head]}
            assert np.allclose([got[label] for label in range(4)], expected, atol=1e-5), head


def long_clip(media_dir: Path, folder: Path) -> Path:
    """A folder of 120 frames: 60 of one real clip, then 60 of the other, as an untrimmed video."""
    folder.mkdir(parents=True)
    first = read_frames(media_dir / CLIP, range(60))
    second = read_frames(media_dir / "arm_wrestling_340x256.mp4", range(60))
    for index, frame in enumerate([*first, *second]):
        image = Image.fromarray(frame).resize((426, 240))
        image.save(folder / f"{index + 1:06d}.jpg", quality=90)
    return folder


def test_windows_over_a_long_clip_and_the_json(runs, media_dir, tmp_path):
    folder = long_clip(media_dir, tmp_path / "long")
    args = ["predict", str(runs["epam"]), str(folder), "--window", "48", "--stride", "36"]
    result = runner.invoke(app, [*args, "--top", "3", "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    (video,) = json.loads((tmp_path / "p.json").read_text())
    starts = [segment["start_frame"] for segment in video["segments"]]
    assert starts == [0, 36, 72]  # the last window ends at the last frame
    assert all(segment["end_frame"] - segment["start_frame"] == 47 for segment in video["segments"])
    for segment in video["segments"]:
        for top in segment["heads"].values():
            probabilities = [item["probability"] for item in top]
            assert len(top) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert "frames 72-119" in result.output and "fused" in result.output


def test_a_video_without_anyone_gets_a_message_not_a_crash(runs, tmp_path):
    folder = tmp_path / "empty_room"
    folder.mkdir()
    for index in range(12):
        Image.new("RGB", (160, 120), (90, 90, 90)).save(folder / f"{index:03d}.png")
    result = runner.invoke(app, ["predict", str(runs["pose"]), str(folder)])
    assert result.exit_code == 0, result.output
    assert "no person found in any frame: no prediction from the pose stream" in result.output
    (predicted,) = predict_videos(runs["epam"], [folder])
    assert predicted["status"] == "no_person" and predicted["segments"] == []


def test_an_unreadable_video_fails_alone(runs, media_dir, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    results = predict_videos(runs["pose"], [broken, media_dir / CLIP], top=1)
    assert results[0]["status"] == "failed" and "broken.mp4" in results[0]["message"]
    assert results[1]["status"] == "ok" and len(results[1]["segments"][0]["heads"]["pose"]) == 1


def test_render_draws_every_frame_with_the_top3(runs, media_dir, tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for index, frame in enumerate(read_frames(media_dir / CLIP, range(0, 60, 3))):
        Image.fromarray(frame).save(folder / f"{index:04d}.jpg", quality=90)
    args = ["predict", str(runs["pose"]), str(folder), "--window", "10"]
    result = runner.invoke(app, [*args, "--render", str(tmp_path / "out.gif")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out.gif") as gif:
        assert gif.n_frames == 20 and gif.size == (256, 308)
        gif.seek(15)
        caption = np.asarray(gif.convert("RGB"))[256:]
    assert caption.max() > 200  # the top-3 text under the frame
    result = runner.invoke(app, [*args, "--render", str(tmp_path / "out.mp4")])
    assert result.exit_code == 0, result.output
    assert len(read_frames(tmp_path / "out.mp4")) == 20
    result = runner.invoke(app, [*args, "--render", str(tmp_path / "out.avi")])
    assert result.exit_code == 1 and "write a .gif or an .mp4" in result.output
