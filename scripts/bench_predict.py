"""`epam-train predict` on one 1080p clip against `epam-data extract` + `epam-train eval` on it.

Both run the same chain (pose backend, crops, EPAM-Net at the paper's clip size); predict keeps
everything in memory, the other way writes a dataset folder and reads it back. The network has
random weights (speed does not depend on them). Without `--video`, the shared two-player clip is
scaled to 1920 x 1080 first (300 frames).

    .venv/bin/python scripts/bench_predict.py [--video CLIP.mp4] [--work /tmp/bench_predict]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from epam_data.video import read_frames
from epam_model.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint
from epam_model.config import TrainConfig
from epam_model.epamnet import build_model
from epam_model.predict import predict_videos

ROOT = Path(__file__).resolve().parent.parent
SHARED_CLIP = ROOT.parent / "shared" / "media" / "two_players_426x240.mp4"
BIN = Path(sys.executable).parent


def make_1080p(source: Path, out: Path) -> Path:
    """The clip scaled to 1920 x 1080, H.264, same frame count."""
    import av
    from PIL import Image

    frames = read_frames(source)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for frame in frames:
            image = Image.fromarray(frame).resize((1920, 1080))
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return out


def random_checkpoint(path: Path, classes: int = 4) -> Path:
    """An EPAM-Net checkpoint at the paper's clip sizes with random weights."""
    model = build_model("epam", classes)
    config = TrainConfig(dataset_dir="(bench)", protocol="one", out="(bench)", stream="epam")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "model_args": {
            "stream": "epam",
            "num_classes": classes,
            "pose_channels": 17,
            "dropout": 0.5,
        },
        "config": config.to_dict(),
        "class_names": [str(i) for i in range(classes)],
        "epoch": 0,
    }
    return save_checkpoint(path, payload)


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def extract_and_eval(video: Path, checkpoint: Path, work: Path) -> tuple[float, float]:
    """Seconds of `epam-data extract` and of `epam-train eval` on a one-sample dataset."""
    videos, data = work / "videos", work / "data"
    shutil.rmtree(data, ignore_errors=True)
    videos.mkdir(exist_ok=True)
    shutil.copy(video, videos / video.name)
    listing = work / "list.csv"
    listing.write_text(f"path,label\n{video.name},0\n")
    extract = [str(BIN / "epam-data"), "extract", str(videos), "-d", "generic", "-o", str(data)]
    extract_s = timed([*extract, "--list", str(listing)])
    (data / "manifests").mkdir(exist_ok=True)
    sample_id = video.stem
    (data / "manifests" / "one_test.csv").write_text(
        f"sample_id,label,label_name\n{sample_id},0,0\n"
    )
    (data / "manifests" / "one_classes.csv").write_text("label,name\n0,0\n1,1\n2,2\n3,3\n")
    evaluate = [str(BIN / "epam-train"), "eval", str(checkpoint), str(data), "--protocol", "one"]
    eval_s = timed([*evaluate, "--workers", "0", "--threads", "1", "--out", str(work / "eval")])
    return extract_s, eval_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_predict"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    video = args.video or make_1080p(SHARED_CLIP, args.work / "two_players_1080p.mp4")
    checkpoint = random_checkpoint(args.work / "epam_random.pt")
    torch.set_num_threads(1)
    start = time.perf_counter()
    (result,) = predict_videos(checkpoint, [video], max_persons=1)
    predict_s = time.perf_counter() - start
    extract_s, eval_s = extract_and_eval(video, checkpoint, args.work)
    frames = result["frames"]
    print(json.dumps({"video": str(video), "frames": frames}))
    print(
        f"predict: {predict_s:.1f} s ({frames / predict_s:.1f} frames/s): extraction "
        f"{result['extract_s']:.1f} s, model {result['model_s']:.1f} s, loading the rest\n"
        f"extract + eval: {extract_s + eval_s:.1f} s ({frames / (extract_s + eval_s):.1f} frames/s)"
        f": extract {extract_s:.1f} s, eval {eval_s:.1f} s (each a new process)"
    )


if __name__ == "__main__":
    main()
