"""Which persons a sample keeps: per-frame tracked persons -> M fixed person slots over the whole
sample.

A pose backend (`epam_data.pose`) reports, per frame, the persons it tracks with a track id that
stays the same while it holds that person. Here the tracks of a sample are ranked by (mean keypoint
score x number of frames), PYSKL's rule for choosing the M persons of an NTU sample
(docs/prior-art.md 2.1), and the best M become slots 0..M-1: slot m is the same track in every
frame, so a model never sees two people swap places mid-clip. A frame where a kept person was not
found holds zeros with score 0, which the heatmap renderer draws as nothing. NTU mutual actions
(A050-A060, A106-A120) keep two persons by default, every other sample one.

Trackers lose people: in a close-up or an occlusion one person becomes several short tracks, and
keeping whole tracks then leaves a slot empty for most of the clip (the shared arm-wrestling clip:
16 tracks in 280 frames). So before ranking, tracks are stitched into chains: a track that starts
after another one ended, within `max_gap` frames and near where that one was last seen (box centres
at most `max_shift` box sizes apart), is taken to be the same person. Chains never overlap in time,
so a slot still holds one person per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from epam_data.datasets.base import Sample
from epam_data.datasets.ntu import is_mutual_action
from epam_data.pose.base import FramePoses

__all__ = ["PersonTracks", "default_max_persons", "select_persons", "stitch_tracks"]

NUM_KEYPOINTS = 17
STITCH_MAX_GAP = 30  # frames (about 1 s at NTU's 30 fps) a person may go unseen between two tracks
STITCH_MAX_SHIFT = (
    1.0  # box-centre shift allowed across the gap, in units of the box size (sqrt of its area)
)


@dataclass(frozen=True)
class PersonTracks:
    """The persons kept for one sample, in fixed slots.

    Attributes:
        keypoints: float32 [M, T, 17, 2], COCO-17 (x, y) in original-frame pixels; 0 where the
            person is missing.
        scores: float32 [M, T, 17], clipped to [0, 1] so the shards' float16 holds them (to about 3
            decimals); 0 where the person is missing.
        boxes: float32 [M, T, 5], (x1, y1, x2, y2, score); all 0 where the person is missing.
        track_ids: int64 [M], the backend track each slot holds (the first track of its chain), best
            first; -1 for a slot no track filled.
        num_person_raw: how many distinct tracks the backend reported for the sample, before
            selection (PYSKL's `num_person_raw`).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    track_ids: np.ndarray
    num_person_raw: int

    @property
    def present(self) -> np.ndarray:
        """bool [M, T]: whether slot m holds a person in frame t."""
        return self.scores.any(-1) | self.boxes.any(-1)


def default_max_persons(sample: Sample, override: int | None = None) -> int:
    """M for a sample: `override` when given, else 2 for NTU mutual actions, else 1."""
    if override is not None:
        if override < 1:
            raise ValueError(f"max_persons must be at least 1, got {override}")
        return override
    if sample.dataset in ("ntu60", "ntu120") and sample.label is not None:
        return 2 if is_mutual_action(sample.label + 1) else 1  # label = action - 1
    return 1


@dataclass
class _Span:
    """Where one track starts and ends (frame index and box x1, y1, x2, y2 there)."""

    first: int
    last: int
    first_box: np.ndarray
    last_box: np.ndarray


def _spans(frames: Sequence[FramePoses]) -> dict[int, _Span]:
    spans: dict[int, _Span] = {}
    for frame_index, poses in enumerate(frames):
        for row, track_id in enumerate(poses.track_ids.tolist()):
            box = poses.boxes[row, :4]
            span = spans.get(track_id)
            if span is None:
                spans[track_id] = _Span(frame_index, frame_index, box, box)
            else:
                span.last, span.last_box = frame_index, box
    return spans


def _centre_shift(before: np.ndarray, after: np.ndarray) -> float:
    """Distance between two box centres in units of the first box's size (sqrt of its area, at least
    1 px)."""
    size = max(float(np.sqrt(max((before[2] - before[0]) * (before[3] - before[1]), 0.0))), 1.0)
    shift = (after[:2] + after[2:]) / 2 - (before[:2] + before[2:]) / 2
    return float(np.hypot(*shift)) / size


def stitch_tracks(
    frames: Sequence[FramePoses],
    *,
    max_gap: int = STITCH_MAX_GAP,
    max_shift: float = STITCH_MAX_SHIFT,
) -> dict[int, int]:
    """Track id -> chain id (the chain's first track id): tracks taken to be one person (module
    docstring).

    Tracks are visited by start frame; each joins the chain that ended at most `max_gap` frames
    before it started with the smallest box-centre shift, if that shift is at most `max_shift`, else
    starts a chain. max_gap=0 still joins a track that starts in the frame right after another
    ended; max_gap < 0 stitches nothing.
    """
    spans = _spans(frames)
    chains: list[tuple[int, _Span]] = []  # (chain id, span of its last track)
    chain_of: dict[int, int] = {}
    for track_id in sorted(spans, key=lambda key: (spans[key].first, key)):
        span = spans[track_id]
        best, best_shift = None, max_shift
        for position, (_, end) in enumerate(chains):
            if not 0 <= span.first - end.last - 1 <= max_gap:
                continue
            shift = _centre_shift(end.last_box, span.first_box)
            if shift <= best_shift:
                best, best_shift = position, shift
        if best is None:
            chains.append((track_id, span))
            chain_of[track_id] = track_id
        else:
            chain_id = chains[best][0]
            chains[best] = (chain_id, span)
            chain_of[track_id] = chain_id
    return chain_of


def select_persons(
    frames: Sequence[FramePoses],
    max_persons: int,
    *,
    max_gap: int = STITCH_MAX_GAP,
    max_shift: float = STITCH_MAX_SHIFT,
) -> PersonTracks:
    """Keep the best `max_persons` persons of a sample in fixed slots (see the module docstring).

    frames: one `FramePoses` per kept frame, in order (T = len(frames)). Tracks are first stitched
    into chains (`stitch_tracks` with max_gap, max_shift; max_gap=-1 keeps tracks as they are). A
    chain's rank is the sum over its frames of its mean keypoint score, i.e. mean score x length;
    ties go to the older (smaller) id. Always returns M = max_persons slots; slots beyond the number
    of chains stay empty (track id -1).
    """
    if max_persons < 1:
        raise ValueError(f"max_persons must be at least 1, got {max_persons}")
    num_frames = len(frames)
    for poses in frames:
        if len(set(poses.track_ids.tolist())) != len(poses.track_ids):
            raise ValueError(
                f"a frame lists track ids {poses.track_ids.tolist()}: each person must appear once"
            )
    chain_of = stitch_tracks(frames, max_gap=max_gap, max_shift=max_shift)
    totals: dict[int, float] = {}
    for poses in frames:
        for track_id, person_scores in zip(poses.track_ids.tolist(), poses.scores):
            chain_id = chain_of[track_id]
            totals[chain_id] = totals.get(chain_id, 0.0) + float(np.mean(person_scores))
    ranked = sorted(totals, key=lambda chain_id: (-totals[chain_id], chain_id))[:max_persons]
    slot_of = {chain_id: slot for slot, chain_id in enumerate(ranked)}

    keypoints = np.zeros((max_persons, num_frames, NUM_KEYPOINTS, 2), np.float32)
    scores = np.zeros((max_persons, num_frames, NUM_KEYPOINTS), np.float32)
    boxes = np.zeros((max_persons, num_frames, 5), np.float32)
    for frame_index, poses in enumerate(frames):
        for row, track_id in enumerate(poses.track_ids.tolist()):
            slot = slot_of.get(chain_of[track_id])
            if slot is not None:
                keypoints[slot, frame_index] = poses.keypoints[row]
                scores[slot, frame_index] = np.clip(poses.scores[row], 0.0, 1.0)
                boxes[slot, frame_index] = poses.boxes[row]
    track_ids = np.full(max_persons, -1, np.int64)
    track_ids[: len(ranked)] = ranked
    return PersonTracks(
        keypoints=keypoints,
        scores=scores,
        boxes=boxes,
        track_ids=track_ids,
        num_person_raw=len(chain_of),
    )
