"""Parameters and compute of EPAM-Net per stream, attention and in total, in the conventions of
docs/architecture.md 11.

Compute is counted op by op during one forward (a `TorchDispatchMode` sees every aten op, attributed
to a part of the model through `torch.utils.module_tracker.ModuleTracker`), on the meta device, so
nothing is computed and the count takes well under a second at the paper's input sizes. Two figures
come out of the same pass:

- MACs: conv and linear multiply-adds, from `torch.utils.flop_counter`'s own formulas (which count 2
  FLOPs per multiply-add; we halve them). Targets: RGB 4.262 G, pose 3.356 G, total 7.618 G.
- mmcv-1.x convention: MACs + conv bias + 2 per BN element + 1 per ReLU output + 1 per pooled input
  element (SE squeeze and classifier pool, the places the authors had AdaptiveAvgPool3d modules).
  Sigmoid, swish, products and the attention's channel max/mean are not counted, as mmcv's
  `get_model_complexity_info` does not see them. This gives 8.08 G against the paper's 8.1 GFLOPs
  (docs/architecture.md 11). The 2 x MAC figure is never called "GFLOPs" here.
"""

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry
from torch.utils.module_tracker import ModuleTracker

from epam_model.epamnet import EpamNet, build_model
from epam_model.xshiftnet import ClassifierHead, SqueezeExcite

__all__ = [
    "PAPER_RGB_SHAPE",
    "PAPER_POSE_SHAPE",
    "PartCost",
    "ModelInfo",
    "count_parameters",
    "measure_costs",
    "model_info",
]

PAPER_RGB_SHAPE: tuple[int, ...] = (3, 16, 224, 224)  # one clip, docs/architecture.md 9
PAPER_POSE_SHAPE: tuple[int, ...] = (17, 48, 56, 56)

_aten = torch.ops.aten
_BATCH_NORM_OPS = {
    _aten.native_batch_norm,
    _aten._native_batch_norm_legit,
    _aten._native_batch_norm_legit_no_training,
    _aten._native_batch_norm_legit_functional,
    _aten.cudnn_batch_norm,
    _aten.miopen_batch_norm,
}
_RELU_OPS = {_aten.relu, _aten.relu_}
_REDUCE_OPS = {_aten.mean, _aten.sum}
_POOL_MODULES = (SqueezeExcite, ClassifierHead)  # where the authors' network had pooling layers


@dataclass(frozen=True)
class PartCost:
    """Size and compute of one part of a model, for one clip."""

    name: str
    params: int
    macs: int  # conv + linear multiply-adds
    mmcv_flops: int  # mmcv-1.x convention (see module docstring)


@dataclass(frozen=True)
class ModelInfo:
    """What `epam-train model-info` prints: per-part costs at given input sizes."""

    stream: str
    num_classes: int
    input_shapes: dict[str, tuple[int, ...]]  # "rgb" / "pose" -> per-clip shape (batch 1)
    parts: tuple[PartCost, ...]
    head_params: int  # classifier weights and biases, included in `parts`

    @property
    def total(self) -> PartCost:
        return PartCost(
            "Total",
            sum(p.params for p in self.parts),
            sum(p.macs for p in self.parts),
            sum(p.mmcv_flops for p in self.parts),
        )

    def table(self) -> Any:
        """A rich Table, one row per part and the total (rich is imported here: the library does not
        need it)."""
        from rich.table import Table

        table = Table(title=f"EPAM-Net {self.stream}: {self.num_classes} classes, one clip")
        table.add_column("part")
        table.add_column("parameters", justify="right")
        table.add_column("GMACs", justify="right")
        table.add_column("GFLOPs, mmcv 1.x", justify="right")
        for i, part in enumerate((*self.parts, self.total)):
            table.add_row(
                part.name,
                f"{part.params:,}",
                _giga(part.macs),
                _giga(part.mmcv_flops),
                end_section=i == len(self.parts) - 1,
            )
        return table

    def notes(self) -> list[str]:
        """The lines printed under the table: input sizes and what each column counts."""
        inputs = ", ".join(
            f"{name} {'x'.join(map(str, shape))}" for name, shape in self.input_shapes.items()
        )
        return [
            f"input per clip: {inputs}; batch 1",
            f"parameters without the classifier heads: {self.total.params - self.head_params:,}",
            "GMACs: conv + linear multiply-adds (torch.utils.flop_counter FLOPs / 2)",
            "GFLOPs, mmcv 1.x: GMACs + conv bias + 2 per BN element + 1 per ReLU output + 1 per "
            "pooled element, the convention of the paper's 8.1 GFLOPs (docs/architecture.md 11)",
        ]


def _giga(count: int) -> str:
    return f"{count / 1e9:.3f}" if count >= 1e7 else f"{count / 1e9:.5f}"


def count_parameters(module: nn.Module) -> int:
    """Learnable parameters (BN affine included, running statistics not), as docs/architecture.md 11
    counts them."""
    return sum(p.numel() for p in module.parameters())


class _CostMode(TorchDispatchMode):
    """Counts MACs and mmcv-convention FLOPs of every aten op, keyed by the model part that runs
    it."""

    def __init__(
        self, tracker: ModuleTracker, parts: dict[str, str], modules: dict[str, nn.Module]
    ) -> None:
        super().__init__()
        self.tracker = tracker
        self.parts = parts  # part name -> module-tracker name prefix
        self.modules = modules  # module-tracker name -> module
        self.macs: dict[str, int] = defaultdict(int)
        self.mmcv: dict[str, int] = defaultdict(int)

    def _part(self) -> str:
        for name, prefix in self.parts.items():
            if any(
                parent == prefix or parent.startswith(prefix + ".")
                for parent in self.tracker.parents
            ):
                return name
        return "other"

    def _innermost(self) -> nn.Module | None:
        names = [name for name in self.tracker.parents if name in self.modules]
        return self.modules[max(names, key=lambda n: n.count("."))] if names else None

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        macs = (
            flop_registry[packet](*args, **kwargs, out_val=out) // 2
            if packet in flop_registry
            else 0
        )
        extra = 0
        if packet is _aten.convolution and args[2] is not None:
            extra = out.numel()  # one add per output element for the bias
        elif packet in _BATCH_NORM_OPS:
            extra = args[0].numel() * (2 if args[1] is not None else 1)
        elif packet in _RELU_OPS:
            extra = out.numel()
        elif (
            packet in _REDUCE_OPS
            and args[0].dim() >= 4
            and isinstance(self._innermost(), _POOL_MODULES)
        ):
            extra = args[0].numel()  # the spatial reduction of a pool; the small
            # follow-up over time is part of the same pool
        if macs or extra:
            part = self._part()
            self.macs[part] += macs
            self.mmcv[part] += macs + extra
        return out


def measure_costs(
    model: nn.Module, inputs: tuple[Tensor, ...], parts: dict[str, str]
) -> dict[str, tuple[int, int]]:
    """Run `model(*inputs)` once under the counter (no grad) and return part -> (MACs, mmcv FLOPs).

    Args:
        model: any module; put it in eval mode first for inference figures.
        inputs: positional inputs; meta tensors work (nothing is computed).
        parts: part name -> attribute path of the submodule ("rgb", "attention"); "" is the whole
            model. Ops outside every listed part are reported under "other".
    """
    root = type(model).__name__
    modules = {f"{root}.{name}" if name else root: module for name, module in model.named_modules()}
    prefixes = {name: f"{root}.{path}" if path else root for name, path in parts.items()}
    with torch.no_grad(), ModuleTracker() as tracker, _CostMode(tracker, prefixes, modules) as mode:
        model(*inputs)
    names = [*parts, *(["other"] if "other" in mode.macs else [])]
    return {name: (mode.macs.get(name, 0), mode.mmcv.get(name, 0)) for name in names}


def model_info(
    stream: str = "epam",
    num_classes: int = 60,
    *,
    pose_channels: int = 17,
    rgb_shape: tuple[int, ...] = PAPER_RGB_SHAPE,
    pose_shape: tuple[int, ...] | None = None,
) -> ModelInfo:
    """Parameters and compute of `build_model(stream, num_classes)` for one clip at the paper's
    input sizes.

    The model is built on the meta device, so this is fast and allocates no activations.
    """
    pose_shape = pose_shape or (pose_channels, *PAPER_POSE_SHAPE[1:])
    with torch.device("meta"):
        model = build_model(stream, num_classes, pose_channels=pose_channels).eval()
        rgb = torch.empty(1, *rgb_shape)
        pose = torch.empty(1, *pose_shape)
    if isinstance(model, EpamNet):
        streams = {"RGB stream": model.rgb, "Pose stream": model.pose, "Attention": model.attention}
        paths = dict(zip(streams, ("rgb", "pose", "attention")))
        costs = measure_costs(model, (rgb, pose), paths)
        input_shapes = {"rgb": tuple(rgb_shape), "pose": tuple(pose_shape)}
        heads = [model.rgb.head, model.pose.head]
    else:
        name = "RGB stream" if stream == "rgb" else "Pose stream"
        streams = {name: model}
        costs = measure_costs(model, (rgb if stream == "rgb" else pose,), {name: ""})
        input_shapes = {stream: tuple(rgb_shape if stream == "rgb" else pose_shape)}
        heads = [model.head]
    parts = tuple(
        PartCost(name, count_parameters(module), *costs[name]) for name, module in streams.items()
    )
    if "other" in costs:
        parts += (PartCost("other", 0, *costs["other"]),)
    return ModelInfo(
        stream, num_classes, input_shapes, parts, sum(count_parameters(h) for h in heads)
    )
