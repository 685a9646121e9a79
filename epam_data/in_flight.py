"""`extract --in-flight K`: the videos of a worker tracked K at a time by one BlazePose backend, so
that the person crops of all K go to the landmark network in one batch, and the regions any of them
asks the detector to see in another (`epam_data.pose.blazepose.track_videos`). This is how a GPU is
kept busy (`--device cuda`): one video offers one or two crops a frame, far too little for it.

The unit of work becomes a group of videos (`prepare_videos`, run by the run loop's workers as
`run_group`), but failures stay per video: a video that cannot be probed, whose decoder fails part
way, or whose crops or heatmaps fail, fails alone, with the same reason a one-video run gives, and
the others of its group are written. Each video is decoded a chunk ahead by its own thread (decord
releases the GIL, so threads serve as well as processes would: `scripts/bench_decode_gil.py`),
keeps its own tracks, M and annotated start box, and is finished (persons, crops, heatmaps:
`extract.finish_sample`) as soon as its last frame is tracked, so the same samples come out as from
`extract.prepare_video`, up to the landmark network's batch-size rounding.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epam_data.extract import (
    SamplePlan,
    VideoSpec,
    check_decoded,
    decoded_chunks,
    finish_sample,
    plan_sample,
    start_tracking,
    worker_backend,
)
from epam_data.runloop import Outcome, StageTimes, failed_outcome, task_outcome
from epam_data.shards import PreparedSample

__all__ = ["prepare_videos"]


@dataclass
class _Video:
    """One planned video of a group: its spec, times and plan, the chunks held for its crops, and
    its outcome once known. `waits` counts the decode waits while it is tracked apart from `times`,
    since the tracking time is shared out among the group (`_share_pose_time`)."""

    spec: VideoSpec
    times: StageTimes
    plan: SamplePlan
    waits: StageTimes = field(default_factory=StageTimes)
    outcome: Outcome | None = None
    held: list[np.ndarray] = field(default_factory=list)
    error: Exception | None = None

    def frames(self) -> Iterator[np.ndarray]:
        """The sample's frames one by one, decoded a chunk ahead in a thread; a decoder error
        ends them and is kept for the outcome, so the group goes on without this video."""
        try:
            for chunk in decoded_chunks(self.spec, self.plan.indices, self.waits):
                if self.plan.hold:
                    self.held.append(chunk)
                yield from chunk
        except Exception as err:  # noqa: BLE001 (this video's failure, told in its outcome)
            self.error = err

    def finish(self, poses: list[Any]) -> PreparedSample:
        """The prepared sample from its tracked frames, or this video's decoder error."""
        if self.error is not None:
            self.held.clear()
            raise self.error
        check_decoded(self.spec, len(poses), len(self.plan.indices))
        held = self.held if self.plan.hold else None
        return finish_sample(self.spec, self.plan, poses, held, self.times)


def prepare_videos(specs: Sequence[VideoSpec]) -> list[Outcome]:
    """One Outcome per spec, in order, the videos tracked `specs[0].options.in_flight` at a time
    (module docstring). Raises only for what no one video caused (the backend cannot load, a
    network call fails): the run loop then prepares the group one video at a time."""
    outcomes: list[Outcome | None] = [None] * len(specs)
    planned: list[tuple[int, _Video]] = []
    for position, spec in enumerate(specs):
        times = StageTimes()
        try:
            planned.append((position, _Video(spec, times, plan_sample(spec, times))))
        except Exception as err:  # noqa: BLE001 (this video's failure, told in its outcome)
            outcomes[position] = failed_outcome(spec, times, err)
    _track([video for _, video in planned])
    for position, video in planned:
        outcomes[position] = video.outcome
    if None in outcomes:  # the tracker lost a video: prepare the group again one at a time
        raise RuntimeError("track_videos returned fewer videos than it was given")
    return [outcome for outcome in outcomes if outcome is not None]


def _track(videos: list[_Video]) -> None:
    """Track `videos` together and finish each as it ends; the tracking time is shared out by
    frames (the decode waits inside it are each video's own)."""
    if not videos:
        return
    options = videos[0].spec.options
    backend = worker_backend(options, 1)  # shares its networks; each video's tracker gets its own M

    def setup(index: int, tracker: Any) -> None:
        tracker.max_persons = videos[index].plan.max_persons
        start_tracking(tracker, videos[index].spec, videos[index].plan)

    tracking = _timed_tracking(
        backend, (video.frames() for video in videos), options.in_flight, setup
    )
    tracked_s = 0.0
    for index, poses, seconds in tracking:
        tracked_s += seconds
        video = videos[index]
        video.outcome = task_outcome(
            video.spec, video.times, functools.partial(video.finish, poses)
        )
    _share_pose_time(videos, tracked_s)


def _timed_tracking(
    backend: Any,
    frames: Iterable[Iterable[np.ndarray]],
    in_flight: int,
    setup: Callable[[int, Any], None],
) -> Iterator[tuple[int, list[Any], float]]:
    """`track_videos`, with the seconds spent in it (decoding and tracking) since the previous
    video ended."""
    from epam_data.pose.blazepose import track_videos

    tracking = iter(track_videos(backend, frames, in_flight=in_flight, setup=setup))
    while True:
        start = time.perf_counter()
        ended = next(tracking, None)
        seconds = time.perf_counter() - start
        if ended is None:
            return
        yield ended[0], ended[1], seconds


def _share_pose_time(videos: list[_Video], tracked_s: float) -> None:
    """Each video's decode waits into its `times`, and its share, by frames, of the tracking time
    less all the waits into `times.pose`."""
    frames = [len(video.plan.indices) for video in videos]
    pose_s = max(0.0, tracked_s - sum(video.waits.decode for video in videos))
    for video, count in zip(videos, frames):
        video.times.decode += video.waits.decode
        video.times.pose += pose_s * count / max(1, sum(frames))
