"""Person selection on constructed tracks: which tracks are kept, in which slot, and what missing
frames hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from epam_data.datasets import parse_sample_id
from epam_data.persons import PersonTracks, default_max_persons, select_persons, stitch_tracks
from epam_data.pose import FramePoses


def person(
    track_id: int, frame: int, score: float
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """One person of track `track_id` in frame `frame`: keypoints that encode both, so slots can be
    checked."""
    keypoints = np.stack(
        [np.full(17, 100.0 * track_id + frame), np.arange(17, dtype=np.float64)], axis=1
    )
    box = np.array([track_id, frame, track_id + 50, frame + 80, score])
    return (
        track_id,
        keypoints.astype(np.float32),
        np.full(17, score, np.float32),
        box.astype(np.float32),
    )


def frame_of(*persons: tuple[int, np.ndarray, np.ndarray, np.ndarray]) -> FramePoses:
    if not persons:
        return FramePoses.empty()
    ids, keypoints, scores, boxes = zip(*persons)
    return FramePoses(
        np.stack(keypoints), np.stack(scores), np.stack(boxes), np.array(ids, np.int64)
    )


def build(tracks: dict[int, dict[int, float]], num_frames: int) -> list[FramePoses]:
    """tracks: track id -> {frame: mean score}; persons listed in a shuffled order in each
    frame."""
    rng = np.random.default_rng(0)
    frames = []
    for t in range(num_frames):
        here = [person(track_id, t, seen[t]) for track_id, seen in tracks.items() if t in seen]
        frames.append(frame_of(*[here[i] for i in rng.permutation(len(here))]))
    return frames


def test_best_tracks_by_score_times_length() -> None:
    # track 0: 10 frames x 0.9 = 9.0; track 1: 4 frames x 1.0 = 4.0; track 2: 10 frames x 0.5 = 5.0;
    # track 3: 20 frames x 0.3 = 6.0 -> keep 0, then 3
    tracks = {
        0: {t: 0.9 for t in range(10)},
        1: {t: 1.0 for t in range(4)},
        2: {t: 0.5 for t in range(10, 20)},
        3: {t: 0.3 for t in range(20)},
    }
    result = select_persons(build(tracks, 20), max_persons=2)
    assert isinstance(result, PersonTracks)
    assert result.track_ids.tolist() == [0, 3]
    assert result.num_person_raw == 4
    assert result.keypoints.shape == (2, 20, 17, 2) and result.keypoints.dtype == np.float32
    assert result.scores.shape == (2, 20, 17) and result.boxes.shape == (2, 20, 5)
    one = select_persons(build(tracks, 20), max_persons=1)
    assert one.track_ids.tolist() == [0] and one.num_person_raw == 4


def test_slots_hold_the_same_person_and_missing_frames_are_zero() -> None:
    tracks = {5: {t: 0.8 for t in range(12) if t not in (3, 4)}, 9: {t: 0.7 for t in range(6, 12)}}
    result = select_persons(build(tracks, 12), max_persons=2)
    assert result.track_ids.tolist() == [5, 9]
    for slot, track_id in enumerate([5, 9]):
        for t in range(12):
            if t in tracks[track_id]:
                np.testing.assert_array_equal(result.keypoints[slot, t, :, 0], 100.0 * track_id + t)
                np.testing.assert_array_equal(
                    result.scores[slot, t], np.float32(tracks[track_id][t])
                )
                assert result.boxes[slot, t, 0] == track_id and result.boxes[slot, t, 1] == t
            else:
                assert not result.keypoints[slot, t].any() and not result.scores[slot, t].any()
                assert not result.boxes[slot, t].any()
    assert result.present.tolist() == [
        [t not in (3, 4) for t in range(12)],
        [t >= 6 for t in range(12)],
    ]


def test_fewer_tracks_than_slots_and_empty_video() -> None:
    result = select_persons(build({2: {t: 0.6 for t in range(5)}}, 5), max_persons=2)
    assert result.track_ids.tolist() == [2, -1] and result.num_person_raw == 1
    assert result.present[0].all() and not result.present[1].any() and not result.keypoints[1].any()
    nobody = select_persons([FramePoses.empty()] * 3, max_persons=2)
    assert (
        nobody.keypoints.shape == (2, 3, 17, 2)
        and not nobody.scores.any()
        and nobody.num_person_raw == 0
    )
    assert nobody.track_ids.tolist() == [-1, -1]


def test_ties_go_to_the_older_track_and_scores_fit_float16() -> None:
    tracks = {7: {t: 0.5 for t in range(4)}, 3: {t: 0.5 for t in range(4)}}
    result = select_persons(build(tracks, 4), max_persons=1)
    assert result.track_ids.tolist() == [3]
    assert np.array_equal(
        result.scores.astype(np.float16).astype(np.float32), result.scores
    )  # 0.5 is exact
    assert result.scores.max() <= 1 and result.scores.min() >= 0


def test_inputs_are_not_changed() -> None:
    frames = build({0: {t: 0.9 for t in range(3)}}, 3)
    before = [f.keypoints.copy() for f in frames]
    result = select_persons(frames, max_persons=1)
    result.keypoints[:] = -1
    assert all(np.array_equal(f.keypoints, b) for f, b in zip(frames, before))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="max_persons must be at least 1"):
        select_persons([], max_persons=0)
    twice = frame_of(person(1, 0, 0.5), person(1, 0, 0.6))
    with pytest.raises(ValueError, match=r"track ids \[1, 1\]"):
        select_persons([twice], max_persons=1)


@pytest.mark.parametrize(
    "name, dataset, override, expected",
    [
        ("S001C001P001R001A050", "ntu60", None, 2),
        ("S001C001P001R001A060", "ntu60", None, 2),
        ("S001C001P001R001A049", "ntu60", None, 1),
        ("S018C001P001R001A106", "ntu120", None, 2),
        ("S018C001P001R001A120", "ntu120", None, 2),
        ("S018C001P001R001A061", "ntu120", None, 1),
        ("S001C001P001R001A050", "ntu60", 1, 1),
        ("0002-L-A12-N01", "pku_mmd", None, 1),
        ("Walk_p03_r00_v01_c01", "toyota", None, 1),
        ("Walk_p03_r00_v01_c01", "toyota", 3, 3),
    ],
)
def test_default_max_persons(name: str, dataset: str, override: int | None, expected: int) -> None:
    assert default_max_persons(parse_sample_id(dataset, name), override) == expected


# --- stitching broken tracks ----------------------------------------------------------------------


def walker(
    track_id: int, frame: int, x: float, score: float = 0.9
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """A 50 x 100 px person whose box starts at x: keypoints hold the frame index, so slots can be
    checked."""
    keypoints = np.stack([np.full(17, x + 25.0), np.full(17, float(frame))], axis=1).astype(
        np.float32
    )
    box = np.array([x, 100, x + 50, 200, score], np.float32)
    return track_id, keypoints, np.full(17, score, np.float32), box


def scene(pieces: list[tuple[int, range, float, float]], num_frames: int) -> list[FramePoses]:
    """pieces: (track id, frames, x at the first frame, x step per frame)."""
    frames = []
    for t in range(num_frames):
        here = [
            walker(tid, t, x0 + step * (t - span.start))
            for tid, span, x0, step in pieces
            if t in span
        ]
        frames.append(frame_of(*here))
    return frames


def test_broken_track_is_stitched_into_one_slot() -> None:
    # person A walks right at 2 px a frame and is lost twice (tracks 0, 2, 5); person B stands at
    # x=400 (1, 4)
    walk = [(0, range(20), 0.0, 2.0), (2, range(25, 50), 50.0, 2.0), (5, range(60, 80), 120.0, 2.0)]
    stand = [(1, range(30), 400.0, 0.0), (4, range(40, 80), 400.0, 0.0)]
    frames = scene(walk + stand, 80)
    assert stitch_tracks(frames) == {0: 0, 1: 1, 2: 0, 4: 1, 5: 0}
    result = select_persons(frames, max_persons=2)
    assert result.track_ids.tolist() == [1, 0] and result.num_person_raw == 5  # B: 70 frames, A: 65
    walking = np.isin(np.arange(80), np.r_[0:20, 25:50, 60:80])
    standing = ~np.isin(np.arange(80), np.r_[30:40])
    assert (
        result.present[0].tolist() == standing.tolist()
        and result.present[1].tolist() == walking.tolist()
    )
    # each slot stays on its person
    assert np.all(result.keypoints[0, standing, 0, 0] == 425) and np.all(
        result.keypoints[1, walking, 0, 0] < 300
    )
    unstitched = select_persons(frames, max_persons=2, max_gap=-1)
    assert unstitched.present.sum() < result.present.sum() - 40


def test_no_stitch_across_a_long_gap_a_jump_or_an_overlap() -> None:
    far_in_time = scene(
        [(0, range(10), 0.0, 0.0), (1, range(45, 60), 0.0, 0.0)], 60
    )  # 34 frames unseen
    assert stitch_tracks(far_in_time) == {0: 0, 1: 1}
    assert stitch_tracks(far_in_time, max_gap=40) == {0: 0, 1: 0}
    far_away = scene(
        [(0, range(10), 0.0, 0.0), (1, range(12, 20), 300.0, 0.0)], 20
    )  # 300 px / 71 px box
    assert stitch_tracks(far_away) == {0: 0, 1: 1}
    overlapping = scene([(0, range(10), 0.0, 0.0), (1, range(9, 20), 5.0, 0.0)], 20)
    assert stitch_tracks(overlapping) == {0: 0, 1: 1}
    # a track joins the nearer of two chains that ended
    two_ends = scene(
        [(0, range(10), 0.0, 0.0), (1, range(10), 60.0, 0.0), (2, range(12, 20), 55.0, 0.0)], 20
    )
    assert stitch_tracks(two_ends) == {0: 0, 1: 1, 2: 1}


@pytest.fixture(scope="module")
def arm_wrestling_poses(media_dir: Path) -> list[FramePoses]:
    from epam_data.pose import PoseBackendError, load_backend
    from epam_data.video import read_frames

    try:
        backend = load_backend("blazepose", max_persons=2)
    except PoseBackendError as err:
        pytest.skip(f"blazepose cannot run here: {err}")
    return backend.estimate(
        read_frames(media_dir / "arm_wrestling_340x256.mp4", np.arange(0, 280, 2))
    )


@pytest.mark.quality
def test_stitching_on_the_real_close_up(arm_wrestling_poses: list[FramePoses]) -> None:
    """The arm wrestlers are close up and cut off by the frame, so the tracker keeps losing them.
    Stitched, the two slots hold someone in far more frames, and the two slots stay two different
    people."""
    counts = np.array([len(p) for p in arm_wrestling_poses])
    whole = select_persons(arm_wrestling_poses, max_persons=2, max_gap=-1)
    stitched = select_persons(arm_wrestling_poses, max_persons=2)
    print(
        f"raw: >=1 person in {np.mean(counts >= 1):.0%}, 2 in {np.mean(counts >= 2):.0%} of "
        f"frames; slots filled {whole.present.mean():.0%} whole tracks vs "
        f"{stitched.present.mean():.0%} stitched ({whole.num_person_raw} tracks)"
    )
    assert whole.num_person_raw >= 6
    assert stitched.present.mean() >= whole.present.mean() + 0.1
    assert stitched.present.any(0).mean() >= 0.8
    both = stitched.present.all(0)
    hips = stitched.keypoints[:, both][:, :, [11, 12]].mean(2)  # [2, frames with both, 2]
    assert both.sum() >= 5 and np.median(np.linalg.norm(hips[0] - hips[1], axis=-1)) > 30
