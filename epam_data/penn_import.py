"""`epam-data import-penn-action`: Penn Action's annotated skeletons (and its frames) into shards.

Each `labels/NNNN.mat` becomes one sample whose skeleton is the annotation mapped to COCO-17
(`epam_data.datasets.penn_action`), not a pose model's estimate. When the release's
`frames/NNNN/` folders are there, the RGB crops (and optional heatmaps) are cut from them by
import-pyskl's code (`pyskl.prepare_annotation`: extract's crop box, crops and JPEG code); without
them the shards hold poses only, which is all the pose stream trains on. The run loop is extract's
(`runloop.run_samples`): resume, `--part`, failures.csv, progress and summary.

The person boxes stored are the annotated ones (score 1; 0 for the few frames without one). Labels
follow `PENN_CLASSES` (alphabetical), and the official split flag travels with each sample
(index.csv's `split`), from which `epam-data splits OUT` writes the official protocol.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from epam_data.datasets import Rejected
from epam_data.datasets.penn_action import DATASET, PennLabel, find_penn_labels, read_penn_label
from epam_data.errors import EpamError, LabelFileError
from epam_data.extract import ExtractOptions
from epam_data.frame_folder import is_frame_folder
from epam_data.pyskl import AnnotationSpec, prepare_annotation
from epam_data.runloop import (
    ExtractReport,
    Outcome,
    StageTimes,
    check_jobs,
    run_samples,
    write_rejected,
)
from epam_data.shards import PreparedSample, write_dataset_json

__all__ = ["import_penn_action", "penn_annotation", "prepare_penn"]


def penn_annotation(label: PennLabel) -> dict[str, Any]:
    """A clip's label as the PYSKL annotation dict `prepare_annotation` reads (one person)."""
    return {
        "frame_dir": label.sample.sample_id,
        "label": label.sample.label,
        "img_shape": label.img_hw,
        "total_frames": label.keypoints.shape[1],
        "keypoint": label.keypoints,
        "keypoint_score": label.scores,
        "penn_boxes": label.boxes,
    }


def prepare_penn(spec: AnnotationSpec, *, times: StageTimes | None = None) -> PreparedSample:
    """One Penn clip -> a PreparedSample: import-pyskl's preparation, with the annotated person
    boxes (rescaled like the joints when the frames' size differs from the label's) stored."""
    prepared = prepare_annotation(spec, times=times)
    boxes = np.asarray(spec.annotation["penn_boxes"], np.float32)
    img_h, img_w = spec.annotation["img_shape"]
    frame_h, frame_w = prepared.original_hw
    scale = np.array([frame_w / img_w, frame_h / img_h] * 2, np.float32)
    has_box = boxes.any(-1, keepdims=True).astype(np.float32)
    stored = np.concatenate([boxes * scale, has_box], axis=-1)
    extra = {key: value for key, value in prepared.extra.items() if key != "pyskl_img_shape"}
    extra["label_img_shape"] = list(spec.annotation["img_shape"])
    return dataclasses.replace(prepared, boxes=stored, extra=extra)


def _recorded_options(options: ExtractOptions, frames: bool) -> dict[str, Any]:
    """What dataset.json records, and a resumed import must match."""
    recorded = options.dataset_options({"annotations": "Penn Action labels/*.mat"})
    recorded.pop("detect_every")
    recorded.update(
        pose_backend="penn-action-annotations",
        max_persons=1,
        rgb_size=options.rgb_size if frames else None,
        boxes="the annotated person box of each frame (score 1)",
        joints="Penn's 13 mapped to COCO-17: head -> nose; eyes and ears missing; score = "
        "visibility",
    )
    if not frames:
        recorded["jpeg_quality"] = None
    return recorded


def _specs(
    labels_dir: Path, frames_dir: Path | None, options: ExtractOptions
) -> tuple[list[AnnotationSpec], list[Rejected]]:
    """One spec per readable label file (sorted by id); unreadable ones are rejected with why. A
    clip whose frame folder is missing fails in the run, like a video that cannot be decoded."""
    specs, rejected = [], []
    for path in sorted(labels_dir.glob("*.mat")):
        try:
            label = read_penn_label(path)
        except LabelFileError as err:
            rejected.append(Rejected(path.name, str(err)))
            continue
        sample, folder, missing = label.sample, "", ""
        if frames_dir is not None:
            candidate = frames_dir / sample.sample_id
            if is_frame_folder(candidate):
                folder = str(candidate)
                sample = dataclasses.replace(sample, path=f"frames/{sample.sample_id}")
            else:
                missing = f"{candidate}: no frame folder for {sample.sample_id}"
        annotation = penn_annotation(label)
        source = f"labels/{path.name}"
        specs.append(AnnotationSpec(sample, source, annotation, folder, options, missing=missing))
    return specs, rejected


def import_penn_action(
    root: str | Path,
    out_dir: str | Path,
    *,
    frames_dir: str | Path | None = None,
    with_frames: bool = True,
    options: ExtractOptions | None = None,
    jobs: int = 1,
    part: tuple[int, int] | None = None,
    samples_per_shard: int = 256,
    limit: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Outcome], None] | None = None,
    info: dict[str, Any] | None = None,
) -> ExtractReport:
    """Import Penn Action (module docstring) from `root` (Penn_Action/ or its labels/ folder).

    frames_dir: the folder of frame folders (default: `frames/` beside `labels/` when present);
    with_frames False ignores frames (pose-only shards). limit: the first N clips by id. Safe to
    re-run: finished samples are skipped, failures retried.
    """
    out_dir = Path(out_dir)
    check_jobs(jobs)
    started = time.perf_counter()
    labels_dir, found_frames = find_penn_labels(Path(root))
    frames = Path(frames_dir) if frames_dir is not None else found_frames
    if frames is not None and not frames.is_dir():
        raise EpamError(f"--frames {frames}: not a folder")
    if not with_frames:
        frames = None
    options = options if options is not None else ExtractOptions(max_persons=1)
    if frames is None:
        options = dataclasses.replace(options, rgb_size=None)
    specs, rejected = _specs(labels_dir, frames, options)
    specs = specs[:limit] if limit is not None else specs
    report = ExtractReport(out_dir=out_dir, listed=len(specs), rejected=rejected)
    write_dataset_json(out_dir, DATASET, _recorded_options(options, frames is not None), info=info)
    write_rejected(out_dir, rejected)
    run_samples(
        specs,
        prepare_penn,
        out_dir,
        report,
        jobs=jobs,
        part=part,
        samples_per_shard=samples_per_shard,
        on_start=on_start,
        on_result=on_result,
    )
    report.elapsed_s = time.perf_counter() - started
    return report
