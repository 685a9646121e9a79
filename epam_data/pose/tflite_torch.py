"""BlazePose's two .tflite networks (or any float .tflite graph over the same small op set) as
PyTorch modules, so that a GPU can run them, batched.

Why: the blazepose backend runs mediapipe's `pose_detection.tflite` and `pose_landmark_full.tflite`
with the TFLite interpreter, one CPU thread per process. The same weights in torch run on a GPU with
any batch of crops, and on a CPU with torch's own kernels.

How: the flatbuffer is read with the schema reader that ships inside the `ai_edge_litert` wheel
(`schema_py_generated.py`), generated from TFLite's schema, at
https://github.com/tensorflow/tensorflow/blob/master/tensorflow/compiler/mlir/lite/schema/schema.fbs
so neither TensorFlow nor a converter is needed. Constant operators (DENSIFY of sparse float16
weights, DEQUANTIZE float16 -> float32) are folded once, in numpy; the others become a list of
steps, a "graph description" made of plain dicts, lists, numbers, strings and tensors, that
`TFLiteModule` runs in the file's operator order (TFLite stores operators in execution order).
Everything an operator needs (weights in torch layout, explicit paddings, axes) is worked out when
the description is made, so the forward pass is a loop of torch calls. Activations are NCHW to
torch, as its convolutions want, and channels-last in memory: the NHWC input, permuted once at the
entry, is exactly that. On the CPU every convolution is one oneDNN call with its weights reordered
once and its activation fused, as torch.compile's CPU backend emits them; on a GPU
they are plain torch calls, 1x1 convolutions one matrix product over the pixels. 4-D outputs are
permuted back to NHWC once at the exit; RESHAPE, CONCATENATION and PAD translate their NHWC axes.
The module returns a tuple in the order of the interpreter's `get_output_details()`, or the outputs
a caller keeps (`TFLiteModule.keep_outputs`: only the steps they need run).

TFLite semantics kept (and checked against the interpreter by tests/test_tflite_torch.py):

* SAME padding puts the odd pixel after (bottom / right), as TFLite's `ComputePaddingWithOffset`
  does; torch's symmetric `padding=` is used only where both sides are equal. A zero PAD that feeds
  only a VALID convolution becomes that convolution's padding.
* MAX_POOL_2D's SAME padding never wins the max (padded with -inf).
* Fused activations NONE, RELU, RELU_N1_TO_1, RELU6 are clamps, as in TFLite's float kernels.
* RESIZE_BILINEAR: half_pixel_centers is torch's `align_corners=False`; align_corners is torch's
  `align_corners=True`; neither flag is TF's legacy `src = dst * in / out`, which torch lacks and
  which runs here as a gather with precomputed indices and weights.
* DEPTH_TO_SPACE: TF's channel order is (block row, block column, channel), not pixel_shuffle's
  (channel, block row, block column); it runs as a reshape and permute.
* RESHAPE and CONCATENATION see NHWC axes; the leading dimension is the batch, so a graph saved with
  batch 1 runs any batch (the interpreter would need `resize_tensor_input`).

The description is cached as a weights-only torch file (`torch.save` of plain containers and
tensors, loaded with `torch.load(weights_only=True)`) named after the .tflite file's sha256, so a
machine without ai_edge_litert and without the .tflite files builds the modules from the cache
alone (`load_cached_module`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from epam_data.atomic import write_atomic
from epam_data.errors import PoseBackendError, one_line
from epam_data.pose.tf_padding import same_padding

__all__ = [
    "CACHE_ENV",
    "FORMAT",
    "SUPPORTED_OPS",
    "TFLiteModule",
    "cache_file_for",
    "default_cache_dir",
    "load_cached_module",
    "load_tflite_module",
    "onednn_available",
    "read_tflite_graph",
]

FORMAT = "epam-tflite-torch/1"  # bump when the description changes: older caches are rebuilt
CACHE_ENV = "EPAM_CACHE"
CACHE_SUBDIR = "blazepose_torch"
RUNTIME_INSTALL = "pip install ai-edge-litert==2.3.0"

# Operators that run in torch; FOLDED_OPS must have constant inputs and are computed at load time.
RUNTIME_OPS = (
    "ADD",
    "CONCATENATION",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "DEPTH_TO_SPACE",
    "LOGISTIC",
    "MAX_POOL_2D",
    "PAD",
    "RESHAPE",
    "RESIZE_BILINEAR",
)
FOLDED_OPS = ("DENSIFY", "DEQUANTIZE")
SUPPORTED_OPS = tuple(sorted(RUNTIME_OPS + FOLDED_OPS))

# Fused activations as TFLite's float kernels apply them: a clamp. TANH and SIGN_BIT are not clamps,
# and those kernels silently ignore them, so they are refused rather than guessed.
_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
_NUMPY_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "INT32": np.int32,
    "INT64": np.int64,
    "INT8": np.int8,
    "UINT8": np.uint8,
}
_NHWC_TO_NCHW = (0, 3, 1, 2)
_SAME, _VALID = 0, 1  # the schema's Padding enum
_CSR = 1  # the schema's DimensionType.SPARSE_CSR


# --- reading the flatbuffer -----------------------------------------------------------------------


def _schema() -> Any:
    """The schema module shipped in the ai_edge_litert wheel (imported only to read a .tflite)."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise PoseBackendError(
            f"reading a .tflite file needs ai_edge_litert's schema reader; run `{RUNTIME_INSTALL}` "
            f"or build the module from its cache (load_cached_module)"
        ) from None
    return schema_py_generated


def _enum_names(enum: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


def _parse_model(data: bytes, name: str) -> Any:
    """The flatbuffer unpacked into the schema's object API (`ModelT`), or a one-line error."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise PoseBackendError(f"{name} is not a TFLite model (no TFL3 file identifier)")
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as err:  # flatbuffers raises whatever a bad offset leads to
        raise PoseBackendError(
            f"{name} is not a readable TFLite model ({type(err).__name__}: {one_line(err, 200)})"
        ) from None
    if not model.subgraphs:
        raise PoseBackendError(f"{name} has no subgraph")
    return model


@dataclass
class _Reader:
    """One .tflite graph and its constants while it is being turned into a description."""

    name: str
    model: Any
    raw: bytes
    consts: dict[int, np.ndarray] = field(default_factory=dict)
    sparse: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        schema = _schema()
        self.graph = self.model.subgraphs[0]
        self.op_names = _enum_names(schema.BuiltinOperator)
        self.type_names = _enum_names(schema.TensorType)
        for index, tensor in enumerate(self.graph.tensors):
            values = self._buffer_values(tensor)
            if values is None:
                continue
            if tensor.sparsity is not None:
                self.sparse[index] = values
            else:
                self.consts[index] = values.reshape(self.shape(index))

    def _buffer_values(self, tensor: Any) -> np.ndarray | None:
        """A constant tensor's values, flat (None for a tensor computed at run time)."""
        buffer = (
            self.model.buffers[tensor.buffer] if tensor.buffer < len(self.model.buffers) else None
        )
        if buffer is None:
            return None
        if buffer.offset > 1:  # models over 2 GB keep their buffers after the flatbuffer
            data: Any = self.raw[buffer.offset : buffer.offset + buffer.size]
        elif buffer.data is not None and len(buffer.data):
            data = np.asarray(buffer.data, np.uint8).tobytes()
        else:
            return None
        type_name = self.type_names.get(tensor.type, str(tensor.type))
        if type_name not in _NUMPY_TYPES:
            raise PoseBackendError(f"{self.name}: constant tensor type {type_name} not supported")
        return np.frombuffer(data, _NUMPY_TYPES[type_name]).copy()

    def shape(self, index: int) -> list[int]:
        shape = self.graph.tensors[index].shape
        return [] if shape is None else [int(size) for size in shape]

    def tensor_name(self, index: int) -> str:
        name = self.graph.tensors[index].name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)

    def op_name(self, op: Any) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        number = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = self.op_names.get(number, f"builtin {number}")
        if name == "CUSTOM":
            custom = code.customCode
            return f"CUSTOM {custom.decode() if isinstance(custom, bytes) else custom}"
        return name

    def const(self, index: int, what: str) -> np.ndarray:
        if index not in self.consts:
            raise PoseBackendError(f"{self.name}: {what} must be a constant tensor")
        return self.consts[index]

    def check_float(self, index: int) -> None:
        type_name = self.type_names.get(self.graph.tensors[index].type)
        if type_name != "FLOAT32":
            raise PoseBackendError(
                f"{self.name}: tensor {self.tensor_name(index)!r} is {type_name}; only float32 "
                f"activations are supported (quantized models are not)"
            )


# --- constant folding: DENSIFY and DEQUANTIZE -----------------------------------------------------


def _index_vector(vector: Any) -> np.ndarray:
    """The values of a SparseIndexVector union member (Int32Vector, Uint16Vector, Uint8Vector)."""
    values = getattr(vector, "values", None)
    return np.zeros(0, np.int64) if values is None else np.asarray(values, np.int64)


def _level_coordinates(metadata: Sequence[Any]) -> tuple[list[np.ndarray], np.ndarray]:
    """Every stored value's coordinate at each traversal level, in storage order, and the last
    level's positions.

    Follows TFLite's FormatConverter::Populate: a DENSE level enumerates 0..dense_size-1 (position
    prev * size + i), a SPARSE_CSR level enumerates indices[segments[prev]:segments[prev + 1]]
    (position = the index into `indices`); the leaves come out in the order the values are stored.
    """
    coords: list[np.ndarray] = []
    prev = np.zeros(1, np.int64)
    for meta in metadata:
        if meta.format == _CSR:
            segments, indices = _index_vector(meta.arraySegments), _index_vector(meta.arrayIndices)
            starts, counts = segments[prev], segments[prev + 1] - segments[prev]
            owner = np.repeat(np.arange(len(prev)), counts)
            prev = (
                starts[owner]
                + np.arange(len(owner))
                - np.repeat(np.cumsum(counts) - counts, counts)
            )
            coords = [level[owner] for level in coords] + [indices[prev]]
        else:
            size = int(meta.denseSize)
            step = np.tile(np.arange(size), len(prev))
            coords = [np.repeat(level, size) for level in coords] + [step]
            prev = np.repeat(prev, size) * size + step
    return coords, prev


def _densify(values: np.ndarray, shape: Sequence[int], sparsity: Any, name: str) -> np.ndarray:
    """The dense tensor of a sparse constant (the schema's SparsityParameters: traversal_order,
    block_map, dim_metadata with DENSE / SPARSE_CSR levels), as TFLite's DENSIFY computes it."""
    order = [int(dim) for dim in sparsity.traversalOrder]
    block_map = [] if sparsity.blockMap is None else [int(dim) for dim in sparsity.blockMap]
    metadata = sparsity.dimMetadata or []
    rank = len(shape)
    if len(metadata) != len(order) or len(order) != rank + len(block_map):
        raise PoseBackendError(f"{name}: inconsistent sparsity parameters")
    coords, leaves = _level_coordinates(metadata)
    if len(leaves) != len(values):
        raise PoseBackendError(
            f"{name}: sparse tensor has {len(values)} values, its index arrays {len(leaves)}"
        )
    dense_sizes = [int(meta.denseSize) for meta in metadata]
    block_sizes = [dense_sizes[order[rank + block]] for block in range(len(block_map))]
    original: list[np.ndarray] = [np.zeros(0)] * rank
    for level in range(rank):
        original[order[level]] = coords[level]
    for level in range(rank, len(order)):
        block = order[level] - rank
        dim = block_map[block]
        original[dim] = original[dim] * block_sizes[block] + coords[level]
    dense = np.zeros(shape, values.dtype)
    dense[tuple(original)] = values
    return dense


def _fold(reader: _Reader, op: Any, name: str) -> None:
    """Computes a DENSIFY or DEQUANTIZE whose input is constant; its output becomes a constant."""
    source, target = int(op.inputs[0]), int(op.outputs[0])
    if name == "DENSIFY":
        if source not in reader.sparse:
            raise PoseBackendError(f"{reader.name}: DENSIFY of a tensor that is not sparse")
        sparsity = reader.graph.tensors[source].sparsity
        reader.consts[target] = _densify(
            reader.sparse[source], reader.shape(source), sparsity, reader.name
        )
        return
    values = reader.const(source, "DEQUANTIZE's input (float16 weights)")
    if values.dtype != np.float16:
        raise PoseBackendError(
            f"{reader.name}: DEQUANTIZE of {values.dtype} is not supported (float16 only)"
        )
    reader.consts[target] = values.astype(np.float32)


# --- runtime operators -> steps -------------------------------------------------------------------


def _activation(reader: _Reader, options: Any) -> str:
    code = int(getattr(options, "fusedActivationFunction", 0))
    if code not in _ACTIVATIONS:
        raise PoseBackendError(
            f"{reader.name}: fused activation {code} (TANH / SIGN_BIT) is not supported"
        )
    return _ACTIVATIONS[code]


def _same_or_valid(padding: int, size: int, kernel: int, stride: int, dilation: int) -> list[int]:
    """[before, after] padding and output size along one axis, as TFLite's padding.h computes."""
    if padding == _SAME:
        return [*same_padding(size, kernel, stride, dilation), (size + stride - 1) // stride]
    return [0, 0, (size + stride - ((kernel - 1) * dilation + 1)) // stride]


def _window_padding(reader: _Reader, op: Any, kernel: Sequence[int], options: Any) -> list[int]:
    """Explicit (top, bottom, left, right) padding of a convolution or pooling window; checks the
    output size the file states."""
    _, height, width, _ = reader.shape(int(op.inputs[0]))
    dilation = (getattr(options, "dilationHFactor", 1), getattr(options, "dilationWFactor", 1))
    rows = _same_or_valid(options.padding, height, kernel[0], options.strideH, dilation[0])
    cols = _same_or_valid(options.padding, width, kernel[1], options.strideW, dilation[1])
    out = reader.shape(int(op.outputs[0]))
    if [rows[2], cols[2]] != out[1:3]:
        raise PoseBackendError(
            f"{reader.name}: window output {out[1:3]} differs from TFLite's {[rows[2], cols[2]]}"
        )
    return rows[:2] + cols[:2]


def _bias(reader: _Reader, op: Any) -> dict[str, torch.Tensor]:
    if len(op.inputs) < 3 or int(op.inputs[2]) < 0:
        return {}
    return {"bias": torch.from_numpy(reader.const(int(op.inputs[2]), "a bias").astype(np.float32))}


def _conv_step(reader: _Reader, op: Any, depthwise: bool) -> dict[str, Any]:
    """CONV_2D (weights [O, KH, KW, I]) or DEPTHWISE_CONV_2D (weights [1, KH, KW, I * M], output
    channel i * M + m, which is torch's grouped order) -> torch's conv2d."""
    options = op.builtinOptions
    weights = reader.const(int(op.inputs[1]), "convolution weights").astype(np.float32)
    in_channels = reader.shape(int(op.inputs[0]))[3]
    if depthwise:
        weight = torch.from_numpy(weights[0].transpose(2, 0, 1)[:, None].copy())
        groups = in_channels
    else:
        weight = torch.from_numpy(weights.transpose(0, 3, 1, 2).copy())
        groups = in_channels // weights.shape[3]
    attrs = {
        "stride": [int(options.strideH), int(options.strideW)],
        "dilation": [int(options.dilationHFactor), int(options.dilationWFactor)],
        "padding": _window_padding(reader, op, weights.shape[1:3], options),
        "groups": int(groups),
        "activation": _activation(reader, options),
    }
    return {"op": "conv2d", "attrs": attrs, "tensors": {"weight": weight, **_bias(reader, op)}}


def _pool_step(reader: _Reader, op: Any) -> dict[str, Any]:
    options = op.builtinOptions
    kernel = [int(options.filterHeight), int(options.filterWidth)]
    attrs = {
        "kernel": kernel,
        "stride": [int(options.strideH), int(options.strideW)],
        "padding": _window_padding(reader, op, kernel, options),
        "activation": _activation(reader, options),
    }
    return {"op": "max_pool2d", "attrs": attrs}


def _torch_pads(nhwc_pads: np.ndarray) -> list[int]:
    """[[before, after]] per TFLite axis -> F.pad's flat list, last torch axis first."""
    pairs = [nhwc_pads[axis] for axis in _NHWC_TO_NCHW] if len(nhwc_pads) == 4 else list(nhwc_pads)
    return [int(value) for pair in reversed(pairs) for value in pair]


def _pad_step(reader: _Reader, op: Any) -> dict[str, Any]:
    pads = reader.const(int(op.inputs[1]), "PAD's paddings").reshape(-1, 2)
    if (pads < 0).any() or pads[0].any():
        raise PoseBackendError(
            f"{reader.name}: PAD with negative or batch padding is not supported"
        )
    return {"op": "pad", "attrs": {"pads": _torch_pads(pads)}}


def _to_runtime_layout(values: np.ndarray, rank: int) -> torch.Tensor:
    """A constant operand broadcast against a rank-`rank` activation, in that activation's layout
    (NCHW for rank 4)."""
    values = values.astype(np.float32).reshape((1,) * (rank - values.ndim) + values.shape)
    if rank == 4:
        values = values.transpose(_NHWC_TO_NCHW)
    return torch.from_numpy(np.ascontiguousarray(values))


def _add_step(reader: _Reader, op: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "op": "add",
        "attrs": {"activation": _activation(reader, op.builtinOptions)},
    }
    const = [int(index) for index in op.inputs if int(index) in reader.consts]
    if len(const) == 2:
        raise PoseBackendError(f"{reader.name}: ADD of two constants is not supported")
    ranks = {len(reader.shape(int(index))) for index in op.inputs if int(index) not in const}
    if len(ranks) > 1:  # NHWC broadcasting across ranks does not carry over to NCHW
        raise PoseBackendError(f"{reader.name}: ADD of activations of different ranks")
    if const:
        rank = len(reader.shape(int(op.outputs[0])))
        step["tensors"] = {"other": _to_runtime_layout(reader.consts[const[0]], rank)}
    return step


def _resize_step(reader: _Reader, op: Any) -> dict[str, Any]:
    options = op.builtinOptions
    size = [int(value) for value in reader.const(int(op.inputs[1]), "RESIZE_BILINEAR's size")]
    if options.alignCorners and options.halfPixelCenters:
        raise PoseBackendError(
            f"{reader.name}: RESIZE_BILINEAR with both align_corners and half_pixel_centers"
        )
    mode = "align_corners" if options.alignCorners else "half_pixel"
    if not (options.alignCorners or options.halfPixelCenters):
        mode = "legacy"
    in_size = reader.shape(int(op.inputs[0]))[1:3]
    return {"op": "resize_bilinear", "attrs": {"size": size, "in_size": in_size, "mode": mode}}


def _depth_to_space_step(reader: _Reader, op: Any) -> dict[str, Any]:
    return {"op": "depth_to_space", "attrs": {"block": int(op.builtinOptions.blockSize)}}


def _reshape_step(reader: _Reader, op: Any) -> dict[str, Any]:
    """RESHAPE to the output's stated shape, its leading dimension taken as the batch."""
    in_shape, out_shape = reader.shape(int(op.inputs[0])), reader.shape(int(op.outputs[0]))
    if not in_shape or not out_shape or in_shape[0] != out_shape[0]:
        raise PoseBackendError(
            f"{reader.name}: RESHAPE {in_shape} -> {out_shape} changes the batch dimension"
        )
    attrs = {"in_rank": len(in_shape), "shape": out_shape[1:]}
    return {"op": "reshape", "attrs": attrs}


def _concat_step(reader: _Reader, op: Any) -> dict[str, Any]:
    options = op.builtinOptions
    rank = len(reader.shape(int(op.outputs[0])))
    axis = int(options.axis) % rank
    if axis == 0:
        raise PoseBackendError(f"{reader.name}: CONCATENATION along the batch is not supported")
    if rank == 4:
        axis = _NHWC_TO_NCHW.index(axis)
    return {"op": "concat", "attrs": {"axis": axis, "activation": _activation(reader, options)}}


_STEP_MAKERS: dict[str, Callable[[_Reader, Any], dict[str, Any]]] = {
    "ADD": _add_step,
    "CONCATENATION": _concat_step,
    "CONV_2D": lambda reader, op: _conv_step(reader, op, depthwise=False),
    "DEPTHWISE_CONV_2D": lambda reader, op: _conv_step(reader, op, depthwise=True),
    "DEPTH_TO_SPACE": _depth_to_space_step,
    "LOGISTIC": lambda reader, op: {"op": "logistic"},
    "MAX_POOL_2D": _pool_step,
    "PAD": _pad_step,
    "RESHAPE": _reshape_step,
    "RESIZE_BILINEAR": _resize_step,
}


def _runtime_inputs(reader: _Reader, op: Any, name: str) -> list[int]:
    """The op's inputs computed at run time (constant shapes, weights and paddings are folded into
    the step)."""
    if name in ("PAD", "RESHAPE", "RESIZE_BILINEAR"):
        indices = [int(op.inputs[0])]
    else:
        indices = [int(index) for index in op.inputs if int(index) >= 0]
        indices = [index for index in indices if index not in reader.consts]
    if name.endswith("CONV_2D"):
        indices = indices[:1]
    return indices


def _make_step(reader: _Reader, op: Any, name: str, known: set[int]) -> dict[str, Any]:
    inputs = _runtime_inputs(reader, op, name)
    for index in inputs + [int(op.outputs[0])]:
        reader.check_float(index)
    missing = [reader.tensor_name(index) for index in inputs if index not in known]
    if missing:
        raise PoseBackendError(f"{reader.name}: {name} reads {missing[0]!r} before it is computed")
    step = _STEP_MAKERS[name](reader, op)
    step.setdefault("attrs", {})
    step.setdefault("tensors", {})
    step.update(inputs=inputs, output=int(op.outputs[0]), source=name)
    return step


def _unsupported(reader: _Reader, op_index: int, name: str) -> PoseBackendError:
    return PoseBackendError(
        f"{reader.name}: operator {op_index} is {name}, which epam_data.pose.tflite_torch does not "
        f"support (supported: {', '.join(SUPPORTED_OPS)})"
    )


def _steps(reader: _Reader) -> list[dict[str, Any]]:
    """The runtime operators as steps, in the file's (execution) order; constants folded."""
    known = {int(index) for index in reader.graph.inputs}
    steps = []
    for op_index, op in enumerate(reader.graph.operators):
        name = reader.op_name(op)
        if name in FOLDED_OPS:
            if any(int(i) not in reader.consts and int(i) not in reader.sparse for i in op.inputs):
                raise PoseBackendError(
                    f"{reader.name}: operator {op_index} is {name} of a tensor computed at run "
                    f"time; only {name} of constant weights is supported"
                )
            _fold(reader, op, name)
        elif name in RUNTIME_OPS:
            steps.append(_make_step(reader, op, name, known))
            known.add(int(op.outputs[0]))
        else:
            raise _unsupported(reader, op_index, name)
    return steps


def _fold_pads(steps: list[dict[str, Any]], outputs: Sequence[int]) -> list[dict[str, Any]]:
    """A PAD of H and W only, read by nothing but one convolution, becomes that convolution's
    padding (zero padding then a convolution is exactly a padded convolution): one copy fewer."""
    readers: dict[int, list[dict[str, Any]]] = {}
    for step in steps:
        for index in step["inputs"]:
            readers.setdefault(index, []).append(step)
    kept = []
    for step in steps:
        users = readers.get(step["output"], [])
        pads = step["attrs"].get("pads", [])
        if (
            step["op"] == "pad"
            and len(pads) == 8
            and not any(pads[4:])
            and len(users) == 1
            and users[0]["op"] == "conv2d"
            and step["output"] not in outputs
        ):
            left, right, top, bottom = pads[:4]
            conv = users[0]
            conv["attrs"]["padding"] = [
                value + extra
                for value, extra in zip(conv["attrs"]["padding"], [top, bottom, left, right])
            ]
            conv["inputs"] = [step["inputs"][0]]
            continue
        kept.append(step)
    return kept


def read_tflite_graph(path: str | os.PathLike, data: bytes | None = None) -> dict[str, Any]:
    """The graph description of a .tflite file: what `TFLiteModule` runs and the cache stores.

    Keys: format, source (file name, sha256), inputs / outputs (tensor index, name, NHWC shape as
    stated in the file, in the order of the interpreter's get_input_details / get_output_details),
    steps (op, source op name, runtime input and output tensor indices, attrs, tensors in torch
    layout). Raises PoseBackendError for an unreadable file or an unsupported operator.
    """
    path = Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise PoseBackendError(f"cannot read {path}: {one_line(err)}") from None
    try:
        reader = _Reader(path.name, _parse_model(data, path.name), data)
        steps = _fold_pads(_steps(reader), [int(index) for index in reader.graph.outputs])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as err:
        # A well-formed flatbuffer can still hold inconsistent shapes, indices or options.
        raise PoseBackendError(
            f"{path.name} is a malformed TFLite model ({type(err).__name__}: {one_line(err, 200)})"
        ) from None

    def describe(index: Any) -> dict[str, Any]:
        index = int(index)
        return {"index": index, "name": reader.tensor_name(index), "shape": reader.shape(index)}

    return {
        "format": FORMAT,
        "source": {"name": path.name, "sha256": hashlib.sha256(data).hexdigest()},
        "inputs": [describe(index) for index in reader.graph.inputs],
        "outputs": [describe(index) for index in reader.graph.outputs],
        "steps": steps,
    }


# --- the torch module -----------------------------------------------------------------------------


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """A fused activation, in place (its input is always a fresh result of the same step)."""
    if activation == "relu6":
        return x.clamp_(0.0, 6.0)
    if activation == "relu":
        return x.relu_()
    if activation == "relu_n1_to_1":
        return x.clamp_(-1.0, 1.0)
    return x


def onednn_available() -> bool:
    """Whether this torch has the oneDNN calls `_Conv` uses on the CPU: the ones torch.compile's
    CPU backend emits for a frozen convolution (weights reordered once, activation fused)."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    )


# TFLite's fused activations as oneDNN post-ops (name, scalars).
_ONEDNN_POST_OPS: dict[str, tuple[str, list[float]]] = {
    "none": ("none", []),
    "relu": ("relu", []),
    "relu6": ("hardtanh", [0.0, 6.0]),
    "relu_n1_to_1": ("hardtanh", [-1.0, 1.0]),
}


class _Conv(nn.Module):
    def __init__(self, attrs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.register_buffer("weight", tensors["weight"])
        self.register_buffer("bias", tensors.get("bias"))
        top, bottom, left, right = attrs["padding"]
        symmetric = top == bottom and left == right
        self.pre_pad = None if symmetric else [left, right, top, bottom]
        self.padding = (top, left) if symmetric else (0, 0)
        self.stride, self.dilation = tuple(attrs["stride"]), tuple(attrs["dilation"])
        self.groups, self.activation = attrs["groups"], attrs["activation"]
        self.pointwise = (
            tuple(self.weight.shape[2:]) == (1, 1)
            and self.stride == (1, 1)
            and self.groups == 1
            and not any(attrs["padding"])
        )
        self.onednn = onednn_available()
        self._packed: dict[int, torch.Tensor] = {}  # weight address -> its oneDNN reorder
        post_op, scalars = _ONEDNN_POST_OPS[self.activation]
        self._onednn_args = (
            [*self.padding],
            [*self.stride],
            [*self.dilation],
            self.groups,
            post_op,
            scalars,
            "",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 on the CPU: oneDNN with the weights reordered once and the activation fused
        (`_onednn`). Elsewhere (a GPU, half precision) plain torch calls; a 1x1
        convolution there runs as one matrix product over the channels-last pixels: torch sends
        it at batch < 16 on one thread to its slow im2col path, which also copies channels-last
        activations to NCHW (half the landmark model's time)."""
        if self.onednn and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32:
            try:
                return self._onednn(x)
            except RuntimeError:  # a oneDNN build without these kernels (not seen on x86-64)
                self.onednn = False
        if self.pointwise:
            weight = self.weight.view(self.weight.shape[0], -1)
            y = F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)
            return _activate(y, self.activation)
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        y = F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        return _activate(y, self.activation)

    def __getstate__(self) -> dict[str, Any]:
        """Without the reordered weights: oneDNN's opaque tensors can be neither pickled nor
        deep-copied, and they are made again on first use."""
        return {**self.__dict__, "_packed": {}}

    def _onednn(self, x: torch.Tensor) -> torch.Tensor:
        """What torch's own conv2d does on the CPU, less the weight reorder that it repeats on
        every call and the separate clamp: 10-20 % of the landmark model's time on one core."""
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        padding, stride, dilation = self._onednn_args[:3]
        packed = self._packed.get(self.weight.data_ptr())  # new weights (`.to`, `.half`): again
        if packed is None:
            # Reordered for the first input's shape, it serves every batch size: equal results
            # and speed measured at batches 1, 2, 8 (a reorder costs 58 ms for the whole model).
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.to_mkldnn(), padding, stride, dilation, self.groups, list(x.shape)
            )
            self._packed = {self.weight.data_ptr(): packed}
        return torch.ops.mkldnn._convolution_pointwise(x, packed, self.bias, *self._onednn_args)


class _MaxPool(nn.Module):
    def __init__(self, attrs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        top, bottom, left, right = attrs["padding"]
        self.pads = [left, right, top, bottom] if any(attrs["padding"]) else None
        self.kernel, self.stride = tuple(attrs["kernel"]), tuple(attrs["stride"])
        self.activation = attrs["activation"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads is not None:
            x = F.pad(x, self.pads, value=float("-inf"))
        return _activate(F.max_pool2d(x, self.kernel, self.stride), self.activation)


class _Pad(nn.Module):
    def __init__(self, attrs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.pads = list(attrs["pads"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)


class _Add(nn.Module):
    def __init__(self, attrs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.register_buffer("other", tensors.get("other"))
        self.activation = attrs["activation"]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return _activate(x + (self.other if y is None else y), self.activation)


def _legacy_axis(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TF's legacy bilinear source (src = dst * in / out, neither align_corners nor half-pixel
    centres): lower index, upper index (clamped) and the upper weight, as TFLite computes them in
    float32."""
    scale = np.float32(in_size / out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    lower = np.floor(source)
    upper = np.minimum(np.ceil(source), in_size - 1)
    weight = source - lower
    return (
        torch.from_numpy(np.maximum(lower, 0).astype(np.int64)),
        torch.from_numpy(upper.astype(np.int64)),
        torch.from_numpy(weight.astype(np.float32)),
    )


class _Resize(nn.Module):
    def __init__(self, attrs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.size, self.mode = tuple(attrs["size"]), attrs["mode"]
        if self.mode == "legacy":
            for axis, (old, new) in zip("yx", zip(attrs["in_size"], attrs["size"])):
                lower, upper, weight = _legacy_axis(old, new)
                self.register_buffer(f"{axis}0", lower, persistent=False)
                self.register_buffer(f"{axis}1", upper, persistent=False)
                self.register_buffer(f"w{axis}", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "legacy":
            align = self.mode == "align_corners"
            return F.interpolate(x, size=self.size, mode="bilinear", align_corners=align)
        wy, wx = self.wy.to(x.dtype)[:, None], self.wx.to(x.dtype)
        top, bottom = x.index_select(2, self.y0), x.index_select(2, self.y1)
        rows = top + (bottom - top) * wy
        left, right = rows.index_select(3, self.x0), rows.index_select(3, self.x1)
        return left + (right - left) * wx


class _DepthToSpace(nn.Module):
    def __init__(self, attrs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.block = attrs["block"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """TF's definition, in NHWC: out[b, h * k + i, w * k + j, c] = x[b, h, w, (i * k + j) * C
        + c]; the result is channels-last in memory, as the convolutions' are."""
        batch, channels, height, width = x.shape
        block, depth = self.block, channels // self.block**2
        x = x.permute(0, 2, 3, 1).reshape(batch, height, width, block, block, depth)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height * block, width * block, depth)
        return x.permute(0, 3, 1, 2)


class _Reshape(nn.Module):
    def __init__(self, attrs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.from_nchw, self.shape = attrs["in_rank"] == 4, tuple(attrs["shape"])
        self.to_nchw = len(self.shape) == 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.from_nchw:
            x = x.permute(0, 2, 3, 1)
        x = x.reshape((x.shape[0], *self.shape))
        return x.permute(0, 3, 1, 2) if self.to_nchw else x


class _Concat(nn.Module):
    def __init__(self, attrs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.axis, self.activation = attrs["axis"], attrs["activation"]

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return _activate(torch.cat(xs, self.axis), self.activation)


class _Logistic(nn.Module):
    def __init__(self, attrs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


_STEP_MODULES: dict[str, type[nn.Module]] = {
    "add": _Add,
    "concat": _Concat,
    "conv2d": _Conv,
    "depth_to_space": _DepthToSpace,
    "logistic": _Logistic,
    "max_pool2d": _MaxPool,
    "pad": _Pad,
    "reshape": _Reshape,
    "resize_bilinear": _Resize,
}


_StepIO = tuple[tuple[int, ...], int]  # a step's input tensor indices and its output index


def _needed_steps(steps: Sequence[_StepIO], outputs: Sequence[int]) -> list[int]:
    """Numbers of the steps that the tensors `outputs` depend on, in execution order."""
    needed, wanted = [], set(outputs)
    for number in range(len(steps) - 1, -1, -1):
        reads, write = steps[number]
        if write in wanted:
            needed.append(number)
            wanted.update(reads)
    return needed[::-1]


def _schedule(
    inputs: Sequence[int], steps: Sequence[_StepIO], outputs: Sequence[int]
) -> tuple[dict[int, int], list[tuple[int, ...]]]:
    """Compact slot numbers for the tensors, and which slots each step frees once it has run (their
    last reader), so the forward pass holds only live activations."""
    slots: dict[int, int] = {}
    for index in [*inputs, *(write for _, write in steps)]:
        slots.setdefault(index, len(slots))
    last_use: dict[int, int] = {}
    for number, (reads, _) in enumerate(steps):
        for index in reads:
            last_use[index] = number
    frees: list[list[int]] = [[] for _ in steps]
    for index, number in last_use.items():
        if index not in outputs:
            frees[number].append(slots[index])
    return slots, [tuple(free) for free in frees]


class TFLiteModule(nn.Module):
    """A float TFLite graph run by torch: `forward(*inputs)` takes NHWC tensors (any batch) and
    returns a tuple of tensors in the order of the interpreter's `get_output_details()`, with its
    shapes except that the batch is the input's (or only some of them: `keep_outputs`).

    Attributes: `input_names`, `input_shapes`, `output_names`, `output_shapes` (as stated in the
    file, batch 1), `source` (file name and sha256). Weights are buffers: `.to(device)` and
    `.half()` work as for any module.
    """

    def __init__(self, description: dict[str, Any]) -> None:
        super().__init__()
        self.source = dict(description["source"])
        self.input_names = [t["name"] for t in description["inputs"]]
        self.input_shapes = [list(t["shape"]) for t in description["inputs"]]
        self.output_names = [t["name"] for t in description["outputs"]]
        self.output_shapes = [list(t["shape"]) for t in description["outputs"]]
        self.steps = nn.ModuleList(
            _STEP_MODULES[step["op"]](step["attrs"], step["tensors"])
            for step in description["steps"]
        )
        self._inputs = [t["index"] for t in description["inputs"]]
        self._steps_io = [(tuple(s["inputs"]), s["output"]) for s in description["steps"]]
        self._plan_for([t["index"] for t in description["outputs"]])

    def _plan_for(self, outputs: list[int]) -> None:
        """The steps that compute the tensors `outputs` (indices), and their slots."""
        numbers = _needed_steps(self._steps_io, outputs)
        steps_io = [self._steps_io[number] for number in numbers]
        slots, frees = _schedule(self._inputs, steps_io, outputs)
        self._num_slots = len(slots)
        self._input_slots = [slots[index] for index in self._inputs]
        self._output_indices, self._output_slots = outputs, [slots[i] for i in outputs]
        self._plan = [
            (self.steps[number], tuple(slots[i] for i in reads), slots[write], free)
            for number, (reads, write), free in zip(numbers, steps_io, frees)
        ]

    def keep_outputs(self, positions: Sequence[int]) -> TFLiteModule:
        """From now on compute and return only the outputs at `positions` (of the current
        outputs), in that order; returns the module.

        Why: the interpreter always computes every output. The blazepose backend reads 3 of the
        landmark model's 5: its 256x256 segmentation mask and world landmarks cost a third of the
        model's time on a CPU for nothing. The skipped steps keep their weights (the cache and
        `state_dict` stay whole), they just do not run.
        """
        positions = [int(p) for p in positions]
        if not positions or any(not 0 <= p < len(self.output_names) for p in positions):
            raise ValueError(f"output positions {positions} not in 0..{len(self.output_names) - 1}")
        self.output_names = [self.output_names[p] for p in positions]
        self.output_shapes = [self.output_shapes[p] for p in positions]
        self._plan_for([self._output_indices[p] for p in positions])
        return self

    def use_onednn(self, enabled: bool) -> TFLiteModule:
        """Convolutions of float32 CPU tensors through oneDNN with reordered weights (the default
        where `onednn_available()`), or through the plain torch calls a GPU runs; returns the
        module. Both compute the same function: tests hold each to the interpreter."""
        for step in self.steps:
            if isinstance(step, _Conv):
                step.onednn = enabled and onednn_available()
        return self

    def _check(self, inputs: Sequence[torch.Tensor]) -> None:
        if len(inputs) != len(self.input_shapes):
            raise ValueError(f"expected {len(self.input_shapes)} inputs, got {len(inputs)}")
        for x, shape, name in zip(inputs, self.input_shapes, self.input_names):
            if x.dim() != len(shape) or list(x.shape[1:]) != shape[1:]:
                raise ValueError(
                    f"input {name!r} must be [batch, {', '.join(map(str, shape[1:]))}], got "
                    f"{list(x.shape)}"
                )

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._check(inputs)
        values: list[torch.Tensor | None] = [None] * self._num_slots
        for slot, x in zip(self._input_slots, inputs):
            values[slot] = x.permute(_NHWC_TO_NCHW) if x.dim() == 4 else x
        for module, reads, write, free in self._plan:
            values[write] = module(*[values[slot] for slot in reads])
            for slot in free:
                values[slot] = None
        outputs = []
        for slot in self._output_slots:
            y = values[slot]
            assert y is not None
            outputs.append(y.permute(0, 2, 3, 1).contiguous() if y.dim() == 4 else y)
        return tuple(outputs)


# --- building, with the weights cache -------------------------------------------------------------


def default_cache_dir() -> Path:
    """`$EPAM_CACHE/blazepose_torch`, else `~/.cache/epam/blazepose_torch`."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root) if root else Path.home() / ".cache" / "epam"
    return base / CACHE_SUBDIR


def cache_file_for(name: str, sha256: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the description of the .tflite file `name` with this sha256 is cached: the digest is
    the key, the stem and the format only help a reader (`pose_landmark_full.<sha256>.v1.pt`)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    version = FORMAT.rsplit("/", 1)[1]
    return folder / f"{Path(name).stem}.{sha256}.v{version}.pt"


def _check_description(description: Any, origin: str) -> dict[str, Any]:
    keys = ("format", "source", "inputs", "outputs", "steps")
    if not isinstance(description, dict) or any(key not in description for key in keys):
        raise PoseBackendError(f"{origin} is not a tflite_torch graph description")
    if description["format"] != FORMAT:
        raise PoseBackendError(
            f"{origin} has format {description['format']!r}, this code reads {FORMAT!r}"
        )
    unknown = {step["op"] for step in description["steps"]} - set(_STEP_MODULES)
    if unknown:
        raise PoseBackendError(f"{origin} has steps this code cannot run: {sorted(unknown)}")
    return description


def load_cached_module(cache_file: str | os.PathLike) -> TFLiteModule:
    """The module from a cached description alone: needs neither ai_edge_litert nor the .tflite
    file. Raises PoseBackendError when the file is missing, unreadable or of another format."""
    try:
        description = torch.load(Path(cache_file), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and OS errors alike mean the same to the caller
        raise PoseBackendError(
            f"cannot load cached graph {cache_file}: {type(err).__name__}: {one_line(err, 200)}"
        ) from None
    return TFLiteModule(_check_description(description, str(cache_file)))


def _write_cache(description: dict[str, Any], cache_file: Path) -> None:
    """torch.save into a temporary file beside `cache_file`, then os.replace: readers (other
    processes building the same module) see the whole file or none."""
    write_atomic(cache_file, lambda stream: torch.save(description, stream))


def load_tflite_module(
    path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> TFLiteModule:
    """The torch module of a .tflite file (see `TFLiteModule` for inputs and outputs).

    With `use_cache`, the description is read from `cache_file_for(path, sha256, cache_dir)` when
    it is there and valid, else converted and written there (atomically); a cache that cannot be
    written (read-only folder) is skipped. Raises PoseBackendError for a missing or unreadable
    file or an unsupported operator.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PoseBackendError(f"cannot read TFLite model {path}: {one_line(err)}") from None
    if not use_cache:
        return TFLiteModule(read_tflite_graph(path, data))
    digest = hashlib.sha256(data).hexdigest()
    cache_file = cache_file_for(path.name, digest, cache_dir)
    if cache_file.is_file():
        try:
            module = load_cached_module(cache_file)
            if module.source.get("sha256") == digest:
                return module
        except PoseBackendError:
            pass  # a stale or damaged cache is rebuilt below
    description = read_tflite_graph(path, data)
    try:
        _write_cache(description, cache_file)
    except OSError:
        pass  # the cache only saves time
    return TFLiteModule(description)
