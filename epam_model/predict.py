"""What action is in this video? `epam-train predict` and `predict_videos`, from a checkpoint.

Each video (a file or a folder of frames) goes through extract's own preparation
(`epam_data.extract.prepare_video`: the pose backend, the kept persons, the square RGB crop) in
memory, nothing written; then through the clips `eval` scores (`uniform_sample_frames` in test mode,
`clip_tensors`: the same box, heatmaps and RGB cut), and the checkpoint's network. With `window`,
a long untrimmed video gives one prediction per segment of `window` kept frames every `stride`.

A result is a plain dict per video: its frames and status, and per segment the top-k classes with
their probabilities for each head (`rgb`, `pose`, `fused` for EPAM-Net; the stream's own head
otherwise). The probabilities are the softmax of the logits averaged over the clips, as `eval`
averages them. A video in which nobody is found gets no prediction from a network that needs the
pose stream, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from epam_data.datasets import Sample
from epam_data.errors import EpamError
from epam_data.extract import ExtractOptions, VideoSpec, prepare_video
from epam_data.shards import PreparedSample
from epam_model.authors import load_any_checkpoint
from epam_model.checkpoints import build_from_checkpoint, find_checkpoint
from epam_model.config import TrainConfig
from epam_model.data import clip_tensors, model_inputs, uniform_sample_frames
from epam_model.distributed import resolve_device
from epam_model.engine import forward_heads
from epam_model.predict_render import render_prediction

__all__ = ["Predictor", "predict_videos"]

RGB_CROP_SIZE = 256  # extract's default crop, which training clips were cut from


class Predictor:
    """A checkpoint's network with the clip settings it was trained with."""

    def __init__(
        self,
        source: str | Path,
        *,
        device: str = "auto",
        backend: str = "blazepose",
        max_persons: int = 2,
        keep_rgb: bool = False,
    ):
        self.checkpoint = find_checkpoint(source)
        payload = load_any_checkpoint(self.checkpoint)
        self.stream = payload["model_args"]["stream"]
        self.class_names = list(payload["class_names"])
        self.config = TrainConfig.from_dict(payload["config"]).clip_config()
        self.device = resolve_device(device)
        self.model = build_from_checkpoint(payload).to(self.device).eval()
        self.options = ExtractOptions(
            backend=backend,
            max_persons=max_persons,
            rgb_size=RGB_CROP_SIZE if keep_rgb or self.stream in ("epam", "rgb") else None,
        )

    def prepare(self, video: Path) -> PreparedSample:
        """Extract's preparation of one video, in memory."""
        sample = Sample(video.stem, "generic", None, "", video=video.stem, path=video.name)
        return prepare_video(VideoSpec(sample, str(video), video.name, self.options))

    @torch.no_grad()
    def logits(self, prepared: PreparedSample, start: int, stop: int, clips: int) -> dict:
        """Logits per head of kept frames start..stop-1, averaged over `clips` test clips."""
        items = []
        for clip in range(clips):
            positions = start + uniform_sample_frames(
                stop - start, self.config.pose_frames, train=False, clip=clip, num_clips=clips
            )
            items.append(clip_tensors(_frames(prepared, positions), self.config, self.stream))
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        rgb, pose = model_inputs(batch, self.device, self.config)
        heads = forward_heads(self.model, self.stream, rgb, pose)
        return {head: values.float().mean(0).cpu() for head, values in heads.items()}


def _frames(prepared: PreparedSample, positions: np.ndarray) -> SimpleNamespace:
    """The kept frames at `positions` (repeats allowed), as `clip_tensors` reads a sample."""
    rgb = None if prepared.rgb is None else [prepared.rgb[int(p)] for p in positions]
    return SimpleNamespace(
        keypoints=prepared.keypoints[:, positions],
        scores=prepared.scores[:, positions],
        original_hw=prepared.original_hw,
        crop_box=prepared.crop_box,
        rgb=rgb,
    )


def _segments(frames: int, window: int | None, stride: int | None) -> list[tuple[int, int]]:
    """(start, stop) of each segment: the whole video, or windows of `window` kept frames every
    `stride` (default: window), the last one ending at the last frame."""
    if window is None or window >= frames:
        return [(0, frames)]
    step = stride or window
    if window < 1 or step < 1:
        raise EpamError(f"--window {window} --stride {step}: both must be at least 1")
    starts = list(range(0, frames - window + 1, step))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return [(start, start + window) for start in starts]


def _top(logits: torch.Tensor, names: Sequence[str], k: int) -> list[dict[str, Any]]:
    probabilities = torch.softmax(logits, dim=0)
    values, labels = probabilities.topk(min(k, len(names)))
    return [
        {"label": int(label), "name": names[int(label)], "probability": float(value)}
        for value, label in zip(values, labels)
    ]


def _render_path(render: str | Path | None, video: Path, several: bool) -> Path | None:
    """Where --render writes for `video`: the path itself, or `<stem>_<video><suffix>` when
    several videos are predicted."""
    if render is None:
        return None
    render = Path(render)
    return render.with_name(f"{render.stem}_{video.stem}{render.suffix}") if several else render


def _predict_one(
    predictor: Predictor,
    video: Path,
    top: int,
    clips: int,
    window: int | None,
    stride: int | None,
    render: Path | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"video": str(video), "segments": []}
    try:
        prepared = predictor.prepare(video)
    except EpamError as err:
        return {**result, "status": "failed", "message": str(err)}
    extracted = time.perf_counter() - started
    frames = prepared.num_frames
    fps = prepared.fps or 0.0
    result.update(frames=frames, fps=fps, status=prepared.status, extract_s=extracted)
    if prepared.status == "no_person" and predictor.stream in ("epam", "pose"):
        result["message"] = "no person found in any frame: no prediction from the pose stream"
        return result
    for start, stop in _segments(frames, window, stride):
        heads = predictor.logits(prepared, start, stop, clips)
        result["segments"].append(
            {
                "start_frame": int(prepared.frame_indices[start]),
                "end_frame": int(prepared.frame_indices[stop - 1]),
                "start_s": prepared.frame_indices[start] / fps if fps else None,
                "heads": {head: _top(v, predictor.class_names, top) for head, v in heads.items()},
            }
        )
    result["model_s"] = time.perf_counter() - started - extracted
    if render is not None:
        result["render"] = str(render_prediction(prepared, result["segments"], render))
    return result


def predict_videos(
    source: str | Path,
    videos: Sequence[str | Path],
    *,
    top: int = 5,
    clips: int = 1,
    window: int | None = None,
    stride: int | None = None,
    device: str = "auto",
    backend: str = "blazepose",
    max_persons: int = 2,
    render: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Predictions for each video (module docstring) from a checkpoint file or run folder. A video
    that cannot be read is a result with status "failed" and its one-line message; the others go
    on. render: also draw each video with its skeletons and top-3 (`predict_render`), to this
    .gif / .mp4 path (with the video's name added when there are several)."""
    if top < 1 or clips < 1:
        raise EpamError(f"--top {top} --clips {clips}: both must be at least 1")
    if render is not None and Path(render).suffix.lower() not in (".gif", ".mp4"):
        raise EpamError(f"--render {render}: write a .gif or an .mp4")
    predictor = Predictor(
        source, device=device, backend=backend, max_persons=max_persons, keep_rgb=bool(render)
    )
    several = len(videos) > 1
    return [
        _predict_one(
            predictor, Path(v), top, clips, window, stride, _render_path(render, Path(v), several)
        )
        for v in videos
    ]
