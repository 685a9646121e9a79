"""MoveNet (Thunder, Lightning) and the CenterNet person detector as batched torch networks, with
their decoding.

Both come as TensorFlow.js graphs (`epam_data.pose.npm_models`) run by `TfjsGraph`. The graphs
end in decoding written for one image at a time; here each graph runs only to its heads, for a
batch, and the decoding is done in torch for the whole batch. It is the graphs' own decoding,
op for op (the test checks equality with the full graph):

* MoveNet (https://www.tensorflow.org/hub/tutorials/movenet): the person centre is the argmax of
  the centre heatmap divided by a fixed centre-distance map (the graph's constant); each joint is
  regressed from that centre, and the joint's heatmap, divided by the distance to the regressed
  position plus 1.8, picks the joint's cell; its sub-cell offset is added. Output (y, x, score)
  in [0, 1] of the crop.
* CenterNet (https://github.com/610265158/mobilenetv3_centernet): the 'person' channel of the
  class heatmap at stride 4, peaks that equal their 3 x 3 maximum, and the box as the four
  distances regressed at the peak.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from epam_data.pose.base import PoseBackendError
from epam_data.pose.npm_models import find_model
from epam_data.pose.tfjs_graph import TfjsGraph
from epam_data.pose.upload import to_device

__all__ = ["CROP_SIDES", "CenterNetDetector", "MoveNet", "MoveNetNetworks", "sample_crops"]

CROP_SIDES = {"thunder": 256, "lightning": 192}  # each MoveNet's input side
_MOVENET = "StatefulPartitionedCall/"
_MOVENET_HEADS = [
    _MOVENET + "kpt_heatmap_0/conv2d_5/BiasAdd",
    _MOVENET + "center_0/conv2d_4/BiasAdd",
    _MOVENET + "kpt_regress_0/conv2d_6/BiasAdd",
    _MOVENET + "kpt_offset_0/conv2d_7/BiasAdd",
]
_MOVENET_INPUT = _MOVENET + "stack"  # the float image, after the graph's batch-of-one unstacking
_CENTRE_WEIGHT = "ConstantFolding/StatefulPartitionedCall/truediv_2_recip"
_DISTANCE_BIAS = _MOVENET + "add_5/y"
_CELL_SIZE = _MOVENET + "Reshape_13"  # 1 / cells per side, as the graph stores it (float16)
_CENTERNET_HEADS = ["tower_0/keypoints", "tower_0/wh"]
PERSON = 0  # CenterNet's COCO class index of 'person'


class MoveNet:
    """Crops uint8-valued float [B, S, S, 3] (RGB; S = `CROP_SIDES[variant]`) -> keypoints
    [B, 17, 3] (y, x, score), y and x in [0, 1] of the crop, COCO-17 order. Thunder and Lightning
    are one architecture at two sizes (the same graph, node for node)."""

    def __init__(
        self,
        variant: str = "thunder",
        folder: str | os.PathLike | None = None,
        device: str = "cpu",
    ) -> None:
        if variant not in CROP_SIDES:
            raise PoseBackendError(f"MoveNet is {' or '.join(CROP_SIDES)}, not {variant!r}")
        self.side = CROP_SIDES[variant]
        self.path = find_model(f"movenet-{variant}", folder)
        consts = [_CENTRE_WEIGHT, _DISTANCE_BIAS, _CELL_SIZE]
        self.graph = TfjsGraph(self.path, _MOVENET_HEADS + consts, input_name=_MOVENET_INPUT)
        self.device = torch.device(device)
        self.graph.to(self.device)

    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        heads = self.graph(crops.to(self.device).float())
        return decode_movenet(*heads)


def decode_movenet(
    heat: torch.Tensor,
    centre: torch.Tensor,
    regress: torch.Tensor,
    offset: torch.Tensor,
    centre_weight: torch.Tensor,
    distance_bias: torch.Tensor,
    cell_size: torch.Tensor,
) -> torch.Tensor:
    """MoveNet's decoding, batched: heads [B, S, S, 17 | 1 | 34 | 34] -> [B, 17, 3]. The three
    constants are the graph's own (the centre weighting, 1.8, and 1 / S rounded to float16 as
    stored: Lightning's 1 / 48 is not exact), so the result equals the graph's."""
    batch, size = heat.shape[0], heat.shape[1]
    heat, rows = torch.sigmoid(heat), torch.arange(batch, device=heat.device)
    centre_index = (torch.sigmoid(centre) * centre_weight).reshape(batch, -1).argmax(1)
    cy, cx = centre_index // size, centre_index % size
    vector = regress[rows, cy, cx].reshape(batch, 17, 2)
    target_y = cy[:, None].float() + vector[..., 0]
    target_x = cx[:, None].float() + vector[..., 1]
    grid = torch.arange(size, dtype=torch.float32, device=heat.device)
    distance = torch.sqrt(
        (grid[None, :, None, None] - target_y[:, None, None, :]) ** 2
        + (grid[None, None, :, None] - target_x[:, None, None, :]) ** 2
    )
    joint_index = (heat / (distance + distance_bias)).reshape(batch, -1, 17).argmax(1)
    ky, kx = joint_index // size, joint_index % size  # [B, 17]
    joints = torch.arange(17, device=heat.device)
    cell = offset.reshape(batch, size, size, 17, 2)[rows[:, None], ky, kx, joints[None]]
    y = (ky.float() + cell[..., 0]) * cell_size.reshape(-1)[0]
    x = (kx.float() + cell[..., 1]) * cell_size.reshape(-1)[1]
    score = heat[rows[:, None], ky, kx, joints[None]]
    return torch.stack([y, x, score], -1)


@dataclass(frozen=True)
class CenterNetDetector:
    """Person boxes in a uint8 RGB frame, from CenterNet run with the frame's long side resized
    to `long_side` (rounded up to a multiple of 32, padded at the bottom / right)."""

    graph: TfjsGraph
    long_side: int
    device: torch.device

    @classmethod
    def load(
        cls, folder: str | os.PathLike | None = None, long_side: int = 768, device: str = "cpu"
    ) -> CenterNetDetector:
        path: Path = find_model("centernet", folder)
        graph = TfjsGraph(path, _CENTERNET_HEADS, any_size=True).to(torch.device(device))
        return cls(graph, long_side, torch.device(device))

    @torch.inference_mode()
    def __call__(self, frame: torch.Tensor, min_score: float) -> np.ndarray:
        """float32 [N, 5] (x1, y1, x2, y2, score) in frame pixels, best first, for a uint8 RGB
        frame [H, W, 3] on the device (`MoveNetNetworks.image`)."""
        height, width = frame.shape[:2]
        scale = self.long_side / max(height, width)
        rows, columns = round(height * scale), round(width * scale)
        image = frame.permute(2, 0, 1)[None].float()
        image = F.interpolate(
            image, size=(rows, columns), mode="bilinear", align_corners=False, antialias=True
        )
        image = F.pad(image, (0, -columns % 32, 0, -rows % 32))
        heat, sizes = self.graph(image.permute(0, 2, 3, 1))
        boxes = decode_centernet(heat[0, ..., PERSON], sizes[0], min_score)
        boxes[:, :4] /= scale
        return boxes.cpu().numpy()


def decode_centernet(heat: torch.Tensor, sizes: torch.Tensor, min_score: float) -> torch.Tensor:
    """One class's heatmap [h, w] and the box distances [h, w, 4] (left, top, right, bottom, in
    input pixels) -> [N, 5] (x1, y1, x2, y2, score) in input pixels, best first."""
    peaks = heat == F.max_pool2d(heat[None, None], 3, 1, 1)[0, 0]
    ys, xs = torch.nonzero(peaks & (heat >= min_score), as_tuple=True)
    distance = sizes[ys, xs]
    stride = 4
    boxes = torch.stack(
        [
            xs * stride - distance[:, 0],
            ys * stride - distance[:, 1],
            xs * stride + distance[:, 2],
            ys * stride + distance[:, 3],
            heat[ys, xs],
        ],
        1,
    )
    return boxes[boxes[:, 4].argsort(descending=True)]


def sample_crops(frame: torch.Tensor, crops: np.ndarray, size: int) -> torch.Tensor:
    """Bilinear samples of `frame` (uint8 [H, W, 3]) in square crops [B, 3] (x0, y0, side) ->
    float [B, size, size, 3], rounded to whole values as the network's integer input is; zeros
    outside the frame. Only the pixels under each crop (and one more around) become floats: a
    1080p frame as floats costs more than the crops."""
    height, width = frame.shape[:2]
    steps = (torch.arange(size, device=frame.device, dtype=torch.float64) + 0.5) / size
    samples = []
    for x0, y0, side in np.asarray(crops, np.float64):
        left, top = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
        right = min(int(np.ceil(x0 + side)) + 1, width)
        bottom = min(int(np.ceil(y0 + side)) + 1, height)
        if right <= left or bottom <= top:  # the crop lies off the frame
            samples.append(torch.zeros(size, size, 3, device=frame.device))
            continue
        region = frame[top:bottom, left:right].permute(2, 0, 1)[None].float()
        # sample j sits at the centre of the crop's j-th cell, in the region's [-1, 1]
        xs = ((x0 - left + steps * side) / (right - left) * 2 - 1).float()
        ys = ((y0 - top + steps * side) / (bottom - top) * 2 - 1).float()
        grid = torch.stack([xs[None, :].expand(size, -1), ys[:, None].expand(-1, size)], -1)
        sampled = F.grid_sample(region, grid[None], align_corners=False, padding_mode="zeros")
        samples.append(sampled[0].permute(1, 2, 0))
    return torch.stack(samples).round().clamp(0, 255)


@dataclass(frozen=True)
class MoveNetNetworks:
    """What the `movenet` backend runs, on one device: the detector and the pose network."""

    detector: CenterNetDetector
    pose: MoveNet
    device: torch.device

    @classmethod
    def load(
        cls, folder: str | os.PathLike | None, detector_side: int, variant: str, device: str
    ) -> MoveNetNetworks:
        detector = CenterNetDetector.load(folder, detector_side, device)
        return cls(detector, MoveNet(variant, folder, device), torch.device(device))

    def model_ids(self) -> dict[str, str]:
        """For dataset.json: which network files made the skeletons."""
        return {"detector": self.detector.graph.model_id, "landmarks": self.pose.graph.model_id}

    def image(self, frame: np.ndarray) -> torch.Tensor:
        """A uint8 RGB frame [H, W, 3] on the device, once per frame: the crops and the detector
        read it there (`to_device`: through pinned memory on a GPU; a read-only frame is copied
        on a CPU, since torch warns about those)."""
        return to_device(frame, self.device)

    def poses(self, image: torch.Tensor, crops: np.ndarray) -> np.ndarray:
        """float64 [B, 17, 3] (y, x, score in the crop) for square crops [B, 3] of `image`."""
        crops_t = sample_crops(image, crops, self.pose.side)
        return self.pose(crops_t).cpu().numpy().astype(np.float64)
