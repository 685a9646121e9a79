"""TensorFlow.js graph models (model.json + weight shards) run as PyTorch modules.

Several good offline pose and person-detection networks reach a machine only as TensorFlow.js
graph models from the npm registry (`epam_data.pose.npm_models`): MoveNet and an 80-class COCO
CenterNet. TensorFlow itself is a large dependency with no GPU build that matches this project's
torch; these graphs use a small set of ops, so they are interpreted node by node with torch ops
instead, on any device. The format is TensorFlow.js's (https://www.tensorflow.org/js/guide/
save_load#model_json): `modelTopology` is a TensorFlow GraphDef written as JSON, and
`weightsManifest` lists the constants, stored one after another in the shard files (float16 where
the manifest says so). Tensors keep TensorFlow's NHWC layout; convolutions run in torch's NCHW on
a channels-last view, so no copy is made.

Each op follows TensorFlow's definition (https://www.tensorflow.org/api_docs/python/tf/raw_ops),
including SAME padding (the extra pixel after, not before) and the three ResizeBilinear
coordinate modes. An op this reader does not know is named in the error when the model is loaded,
not when it runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from epam_data.pose.base import PoseBackendError
from epam_data.pose.tf_padding import same_padding

__all__ = ["TfjsGraph", "load_graph_json", "read_weights"]

_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "DT_FLOAT": np.float32,
    "DT_INT32": np.int32,
    "DT_BOOL": np.bool_,
}
_QUANTIZED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_TORCH_DTYPES = {
    "DT_FLOAT": torch.float32,
    "DT_INT32": torch.int32,
    "DT_INT64": torch.int64,
    "DT_BOOL": torch.bool,
}


def load_graph_json(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed model.json of a TensorFlow.js graph model (clear error if it is not one)."""
    path = Path(path)
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PoseBackendError(f"cannot read the TensorFlow.js model {path}: {error}") from None
    if not isinstance(model, dict) or "modelTopology" not in model:
        raise PoseBackendError(f"{path} is not a TensorFlow.js graph model (no modelTopology)")
    return model


def read_weights(
    model: dict[str, Any], folder: Path, digest: Any | None = None
) -> dict[str, np.ndarray]:
    """Every constant of the manifest by name, dequantized to float32 where it was stored
    smaller; the shard files are read from `folder` in the manifest's order, once: `digest` (a
    hashlib object) is fed their bytes on the way."""
    weights: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        data = b"".join((folder / name).read_bytes() for name in group["paths"])
        if digest is not None:
            digest.update(data)
        offset = 0
        for spec in group["weights"]:
            array, offset = _one_weight(spec, data, offset)
            weights[spec["name"]] = array
        if offset != len(data):
            raise PoseBackendError(
                f"TensorFlow.js weights {group['paths']}: {len(data)} bytes, the manifest "
                f"describes {offset}"
            )
    return weights


def _one_weight(spec: dict[str, Any], data: bytes, offset: int) -> tuple[np.ndarray, int]:
    """One manifest entry read from `data` at `offset`: (array, offset after it)."""
    shape = [int(size) for size in spec["shape"]]
    count = int(np.prod(shape, dtype=np.int64))
    quantization = spec.get("quantization")
    stored = _QUANTIZED[quantization["dtype"]] if quantization else _DTYPES[spec["dtype"]]
    end = offset + count * np.dtype(stored).itemsize
    if end > len(data):
        raise PoseBackendError(f"TensorFlow.js weight {spec['name']} runs past its shard files")
    array = np.frombuffer(data[offset:end], dtype=stored).reshape(shape)
    if quantization and quantization["dtype"] != "float16":
        array = array * quantization["scale"] + quantization["min"]
    return array.astype(_DTYPES[spec["dtype"]]), end


# --- attributes ----------------------------------------------------------------------------------


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    """A node attribute as a Python value (ints, floats, bools, strings, lists, dtypes)."""
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        items = value["list"]
        if "i" in items:
            return [int(i) for i in items["i"]]
        if "s" in items:
            return [base64.b64decode(s).decode() for s in items["s"]]
        return [float(f) for f in items.get("f", [])]
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    return value


def _const_from_attr(node: dict[str, Any]) -> np.ndarray:
    """A Const node whose value lives in its `value` attribute rather than in the weights."""
    tensor = node["attr"]["value"]["tensor"]
    dtype = _DTYPES[tensor.get("dtype", "DT_FLOAT")]
    shape = [int(d.get("size", 1)) for d in tensor.get("tensorShape", {}).get("dim", [])]
    if "tensorContent" in tensor:
        return np.frombuffer(base64.b64decode(tensor["tensorContent"]), dtype).reshape(shape).copy()
    values = tensor.get("floatVal") or tensor.get("intVal") or tensor.get("boolVal") or [0]
    return np.broadcast_to(np.asarray(values, dtype), shape).copy()


# --- ops -----------------------------------------------------------------------------------------

Op = Callable[[dict[str, Any], list[Any]], Any]


def _pad_nchw(
    x: torch.Tensor, node: dict[str, Any], kernel: Sequence[int], value: float = 0.0
) -> torch.Tensor:
    """`x` [N, C, H, W] padded as the node's `padding` attribute says (SAME or VALID)."""
    if _attr(node, "padding") != "SAME":
        return x
    strides, dilations = _attr(node, "strides"), _attr(node, "dilations", [1, 1, 1, 1])
    top, bottom = same_padding(x.shape[2], kernel[0], strides[1], dilations[1])
    left, right = same_padding(x.shape[3], kernel[1], strides[2], dilations[2])
    if not (top or bottom or left or right):
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _fused(
    node: dict[str, Any], y: torch.Tensor, extra: list[Any], *, biased: bool
) -> torch.Tensor:
    """The ops fused after a convolution: BiasAdd (unless the convolution added it: `biased`),
    then an activation, in place (`y` is the convolution's own fresh output)."""
    for name in _attr(node, "fused_ops", []):
        if name == "BiasAdd":
            y = y if biased else y + extra[0]
        elif name == "Relu":
            y = y.relu_()
        elif name == "Relu6":
            y = y.clamp_(0, 6)
        elif name == "LeakyRelu":
            y = F.leaky_relu(y, _attr(node, "leakyrelu_alpha", 0.2), inplace=True)
        else:
            raise PoseBackendError(f"fused op {name} in {node['name']} is not supported")
    return y


def _conv(node: dict[str, Any], args: list[Any], *, depthwise: bool) -> torch.Tensor:
    """Conv2D / DepthwiseConv2dNative (and their fused forms) on NHWC tensors; the weight comes
    pre-arranged for torch (`TfjsGraph._arrange`).

    A 1 x 1 convolution with stride 1 is one matrix product over the NHWC pixels (`torch.addmm`,
    bias included): torch would send it, on one thread, to its slow convolution, which converts
    the layout both ways; that was half of MoveNet Thunder's time on a CPU."""
    x, weight = args[0], args[1]
    kernel = weight.shape[2:]
    strides, dilations = _attr(node, "strides"), _attr(node, "dilations", [1, 1, 1, 1])
    fused = _attr(node, "fused_ops", [])
    bias = args[2] if fused[:1] == ["BiasAdd"] else None
    if not depthwise and tuple(kernel) == (1, 1) and strides[1:3] == [1, 1]:
        flat = x.reshape(-1, x.shape[3])
        matrix = weight.reshape(weight.shape[0], -1).t()
        y = flat @ matrix if bias is None else torch.addmm(bias, flat, matrix)
        y = y.reshape(*x.shape[:3], -1)
    else:
        xc = _pad_nchw(x.permute(0, 3, 1, 2), node, kernel)
        y = F.conv2d(
            xc,
            weight,
            bias,
            stride=tuple(strides[1:3]),
            dilation=tuple(dilations[1:3]),
            groups=x.shape[3] if depthwise else 1,
        ).permute(0, 2, 3, 1)
    return _fused(node, y, args[2:], biased=bias is not None)


def _max_pool(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
    size, strides = _attr(node, "ksize"), _attr(node, "strides")
    xc = _pad_nchw(args[0].permute(0, 3, 1, 2), node, size[1:3], value=-torch.inf)
    y = F.max_pool2d(xc, tuple(size[1:3]), tuple(strides[1:3]))
    return y.permute(0, 2, 3, 1)


def _resize_axis(
    in_size: int, out_size: int, align: bool, half: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lower, upper, lerp) of one axis, as TensorFlow's resize_bilinear_op computes them."""
    if align and out_size > 1:
        scale = (in_size - 1) / (out_size - 1)
    else:
        scale = in_size / out_size
    position = torch.arange(out_size, dtype=torch.float32, device=device)
    source = (position + 0.5) * scale - 0.5 if half else position * scale
    floor = source.floor()
    lower = floor.clamp(min=0).long()
    upper = source.ceil().clamp(max=in_size - 1).long()
    return lower, upper, source - floor


def _resize_bilinear(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x, size = args[0], [int(s) for s in args[1].tolist()]
    align, half = _attr(node, "align_corners", False), _attr(node, "half_pixel_centers", False)
    y0, y1, wy = _resize_axis(x.shape[1], size[0], align, half, x.device)
    x0, x1, wx = _resize_axis(x.shape[2], size[1], align, half, x.device)
    wy, wx = wy[None, :, None, None], wx[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - wx) + x[:, y0][:, :, x1] * wx
    bottom = x[:, y1][:, :, x0] * (1 - wx) + x[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bottom * wy


def _strided_slice(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
    """StridedSlice with begin / end / shrink-axis masks (no ellipsis or new axes)."""
    x = args[0]
    begin, end, strides = (a.tolist() for a in args[1:4])
    if _attr(node, "ellipsis_mask", 0) or _attr(node, "new_axis_mask", 0):
        raise PoseBackendError(f"StridedSlice {node['name']}: ellipsis / new-axis masks")
    begin_mask, end_mask = _attr(node, "begin_mask", 0), _attr(node, "end_mask", 0)
    shrink = _attr(node, "shrink_axis_mask", 0)
    index: list[Any] = []
    for axis, (b, e, s) in enumerate(zip(begin, end, strides)):
        if shrink >> axis & 1:
            index.append(b)
            continue
        start = None if begin_mask >> axis & 1 else b
        stop = None if end_mask >> axis & 1 else e
        if s < 0:
            raise PoseBackendError(f"StridedSlice {node['name']}: negative strides")
        index.append(slice(start, stop, s))
    return x[tuple(index)]


def _gather_nd(params: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    indices = indices.long()
    return params[tuple(indices[..., k] for k in range(indices.shape[-1]))]


def _gather_v2(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
    params, indices, axis = args[0], args[1].long(), int(args[2])
    axis %= params.ndim
    taken = params.index_select(axis, indices.reshape(-1))
    return taken.reshape(params.shape[:axis] + indices.shape + params.shape[axis + 1 :])


def _cast(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
    return args[0].to(_TORCH_DTYPES[_attr(node, "DstT")])


def _floor_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


def _axes(value: Any) -> list[int]:
    return [int(v) for v in torch.as_tensor(value).reshape(-1).tolist()]


def _reduce(fn: Callable[..., Any]) -> Op:
    def run(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
        keep = bool(_attr(node, "keep_dims", False))
        return fn(args[0], dim=_axes(args[1]), keepdim=keep)

    return run


def _max_reduce(x: torch.Tensor, dim: list[int], keepdim: bool) -> torch.Tensor:
    return x.amax(dim=dim, keepdim=keepdim)


def _binary(fn: Callable[[Any, Any], Any]) -> Op:
    return lambda node, args: fn(args[0], args[1])


def _unary(fn: Callable[[Any], Any]) -> Op:
    return lambda node, args: fn(args[0])


def _top_k(node: dict[str, Any], args: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    values, indices = torch.topk(args[0], int(args[1]), dim=-1, sorted=True)
    return values, indices.to(torch.int32)


def _arg_max(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
    dtype = _TORCH_DTYPES[_attr(node, "output_type", "DT_INT64")]
    return args[0].argmax(dim=int(args[1])).to(dtype)


def _squeeze(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
    dims = _attr(node, "squeeze_dims", [])
    x = args[0]
    if not dims:
        return x.squeeze()
    for dim in sorted((d % x.ndim for d in dims), reverse=True):
        x = x.squeeze(dim)
    return x


def _split(node: dict[str, Any], args: list[Any]) -> tuple[torch.Tensor, ...]:
    axis, x = int(args[0]), args[1]
    return torch.chunk(x, _attr(node, "num_split"), dim=axis)


def _split_v(node: dict[str, Any], args: list[Any]) -> tuple[torch.Tensor, ...]:
    return torch.split(args[0], _axes(args[1]), dim=int(args[2]))


def _pad(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
    pairs = args[1].tolist()
    flat = [p for pair in reversed(pairs) for p in pair]
    value = float(args[2]) if len(args) > 2 else 0.0
    return F.pad(args[0], flat, value=value)


def _relu6(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 6)


def _shape(node: dict[str, Any], args: list[Any]) -> torch.Tensor:
    return torch.tensor(list(args[0].shape), dtype=torch.int32, device=args[0].device)


OPS: dict[str, Op] = {
    "Identity": lambda node, args: args[0],
    "Conv2D": lambda node, args: _conv(node, args, depthwise=False),
    "_FusedConv2D": lambda node, args: _conv(node, args, depthwise=False),
    "DepthwiseConv2dNative": lambda node, args: _conv(node, args, depthwise=True),
    "FusedDepthwiseConv2dNative": lambda node, args: _conv(node, args, depthwise=True),
    "MaxPool": _max_pool,
    "ResizeBilinear": _resize_bilinear,
    "Add": _binary(torch.add),
    "AddV2": _binary(torch.add),
    "BiasAdd": _binary(torch.add),
    "AddN": lambda node, args: sum(args[1:], args[0]),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "RealDiv": _binary(torch.div),
    "FloorDiv": _binary(_floor_div),
    "FloorMod": _binary(torch.remainder),
    "Maximum": _binary(torch.maximum),
    "Minimum": _binary(torch.minimum),
    "SquaredDifference": _binary(lambda a, b: (a - b) * (a - b)),
    "Equal": _binary(torch.eq),
    "Less": _binary(torch.lt),
    "Greater": _binary(torch.gt),
    "GreaterEqual": _binary(torch.ge),
    "LogicalAnd": _binary(torch.logical_and),
    "Select": lambda node, args: torch.where(args[0], args[1], args[2]),
    "Sigmoid": _unary(torch.sigmoid),
    "Relu": _unary(torch.relu),
    "Relu6": _unary(_relu6),
    "Exp": _unary(torch.exp),
    "Sqrt": _unary(torch.sqrt),
    "Abs": _unary(torch.abs),
    "Reciprocal": _unary(torch.reciprocal),
    "LeakyRelu": lambda node, args: F.leaky_relu(args[0], _attr(node, "alpha", 0.2)),
    "Cast": _cast,
    "Reshape": lambda node, args: args[0].reshape(_axes(args[1])),
    "ExpandDims": lambda node, args: args[0].unsqueeze(int(args[1])),
    "Squeeze": _squeeze,
    "Pack": lambda node, args: torch.stack(args, dim=_attr(node, "axis", 0)),
    "Unpack": lambda node, args: args[0].unbind(_attr(node, "axis", 0)),
    "ConcatV2": lambda node, args: torch.cat(args[:-1], dim=int(args[-1])),
    "Transpose": lambda node, args: args[0].permute(_axes(args[1])),
    "StridedSlice": _strided_slice,
    "GatherNd": lambda node, args: _gather_nd(args[0], args[1]),
    "GatherV2": _gather_v2,
    "TopKV2": _top_k,
    "ArgMax": _arg_max,
    "Mean": _reduce(torch.mean),
    "Sum": _reduce(torch.sum),
    "Max": _reduce(_max_reduce),
    "Shape": _shape,
    "Split": _split,
    "SplitV": _split_v,
    "Pad": _pad,
    "PadV2": _pad,
    "Tile": lambda node, args: args[0].repeat(*_axes(args[1])),
}


# --- the module ----------------------------------------------------------------------------------


def _source(name: str) -> tuple[str, int]:
    """'node:1' -> ('node', 1); 'node' -> ('node', 0)."""
    node, _, index = name.partition(":")
    return node, int(index or 0)


class TfjsGraph(nn.Module):
    """A TensorFlow.js graph model as a torch module: `forward(x)` returns the tensors named by
    `outputs` (default: the model's signature outputs, in its order) for the input `x`.

    The constants become buffers, so `.to(device)` moves the whole model; convolution weights
    are stored in torch's layout once, at load.
    """

    def __init__(
        self,
        model_json: str | os.PathLike,
        outputs: Sequence[str] | None = None,
        *,
        input_name: str | None = None,
        any_size: bool = False,
    ) -> None:
        super().__init__()
        path = Path(model_json)
        model = load_graph_json(path)
        nodes = {node["name"]: node for node in model["modelTopology"]["node"]}
        self.output_names = list(outputs or self._signature_outputs(model))
        placeholders = [name for name, node in nodes.items() if node["op"] == "Placeholder"]
        if not (input_name or placeholders):
            raise PoseBackendError(f"{path.name}: no input (Placeholder) node")
        self.input_name = input_name or placeholders[0]
        self._order = self._schedule(nodes, self.output_names, self.input_name)
        ops = {nodes[n]["op"] for n in self._order if n != self.input_name}
        unknown = sorted(ops - set(OPS) - {"Const"})
        if unknown:
            raise PoseBackendError(f"{path.name}: TensorFlow.js ops not supported: {unknown}")
        self._nodes = {name: nodes[name] for name in self._order}
        digest = hashlib.sha256(path.read_bytes())  # model.json and its shards: the model's id
        weights = read_weights(model, path.parent, digest)
        self.model_id = f"{path.stem} sha256:{digest.hexdigest()[:12]}"
        self._const_index: dict[str, int] = {}
        for name in self._order:
            if nodes[name]["op"] == "Const":
                array = weights[name] if name in weights else _const_from_attr(nodes[name])
                self._const_index[name] = len(self._const_index)
                self.register_buffer(f"c{len(self._const_index) - 1}", torch.from_numpy(array))
        self._arrange()
        self._resize_ratios: dict[str, tuple[float, float]] = {}
        if any_size:
            self._resize_ratios = self._measure_resize_ratios(model)

    def _measure_resize_ratios(self, model: dict[str, Any]) -> dict[str, tuple[float, float]]:
        """For graphs exported at one input size whose upsampling layers name a fixed output
        size (an FPN's 2x steps): each such resize's (rows, columns) ratio, measured in one run
        at the signature's input size, so that other input sizes are upsampled alike."""
        inputs = model.get("signature", {}).get("inputs", {})
        dims = [int(d["size"]) for d in next(iter(inputs.values()))["tensorShape"]["dim"]]
        if min(dims) < 1:
            raise PoseBackendError("any_size needs a signature with a fixed input size")
        seen: dict[str, tuple[float, float]] = {}
        self._record_resizes = seen
        try:
            self.forward(torch.zeros(dims))
        finally:
            del self._record_resizes
        return seen

    @staticmethod
    def _signature_outputs(model: dict[str, Any]) -> list[str]:
        outputs = model.get("signature", {}).get("outputs", {})
        return [spec["name"].split(":")[0] for spec in outputs.values()]

    @staticmethod
    def _schedule(nodes: dict[str, Any], outputs: Sequence[str], start: str) -> list[str]:
        """The nodes that `outputs` depend on, each after its inputs (iterative DFS); the
        graph is cut at `start`, the node that the input replaces."""
        order: list[str] = []
        state: dict[str, int] = {}
        for output in outputs:
            stack = [(_source(output)[0], False)]
            while stack:
                name, done = stack.pop()
                if done:
                    state[name] = 2
                    order.append(name)
                    continue
                if state.get(name):
                    continue
                if name not in nodes:
                    raise PoseBackendError(f"TensorFlow.js graph has no node {name!r}")
                state[name] = 1
                stack.append((name, True))
                for source in nodes[name].get("input", []) if name != start else []:
                    if not source.startswith("^"):
                        stack.append((_source(source)[0], False))
        return order

    def _const(self, name: str) -> torch.Tensor:
        return getattr(self, f"c{self._const_index[name]}")

    def _arrange(self) -> None:
        """Convolution weights from TensorFlow's [kh, kw, in, out] (depthwise: [kh, kw, in, m])
        to torch's [out, in / groups, kh, kw], in place, once (a weight two convolutions share
        is arranged once)."""
        arranged_buffers: set[str] = set()
        for name in self._order:
            node = self._nodes[name]
            if node["op"] not in ("Conv2D", "_FusedConv2D", *_DEPTHWISE):
                continue
            weight_name = _source(node["input"][1])[0]
            buffer = f"c{self._const_index[weight_name]}"
            if buffer in arranged_buffers:
                continue
            arranged_buffers.add(buffer)
            weight = getattr(self, buffer)
            if node["op"] in _DEPTHWISE:
                kh, kw, channels, multiplier = weight.shape
                arranged = weight.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)
            else:
                arranged = weight.permute(3, 2, 0, 1)
            setattr(self, buffer, arranged.contiguous())

    def _resize_args(self, name: str, args: list[Any]) -> list[Any]:
        """A resize's (input, size): recorded during the measuring run, scaled with the input
        afterwards (`any_size`)."""
        rows, columns = args[0].shape[1:3]
        recording = getattr(self, "_record_resizes", None)
        if recording is not None:
            size = args[1].tolist()
            recording[name] = (size[0] / rows, size[1] / columns)
        elif name in self._resize_ratios:
            ratio = self._resize_ratios[name]
            size = [round(rows * ratio[0]), round(columns * ratio[1])]
            return [args[0], torch.tensor(size)]
        return args

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        values: dict[str, Any] = {}
        for name in self._order:
            node = self._nodes[name]
            op = node["op"]
            if name == self.input_name:
                values[name] = x
                continue
            if op == "Const":
                values[name] = self._const(name)
                continue
            args = []
            for source in node.get("input", []):
                if source.startswith("^"):
                    continue
                producer, index = _source(source)
                value = values[producer]
                args.append(value[index] if isinstance(value, tuple | list) else value)
            if op == "ResizeBilinear":
                args = self._resize_args(name, args)
            values[name] = OPS[op](node, args)
        results = []
        for output in self.output_names:
            producer, index = _source(output)
            value = values[producer]
            results.append(value[index] if isinstance(value, tuple | list) else value)
        return results


_DEPTHWISE = ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")
