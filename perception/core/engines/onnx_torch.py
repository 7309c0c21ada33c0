"""Run an ONNX model with PyTorch ops: the torch engine's way to the embedded
default detector and Ultralytics exports, on the CPU or on CUDA.

Why a converter and not TorchScript: the ONNX file is what every other
runtime here runs (ONNX Runtime, TensorRT), so the torch path needs no
second artifact, no training code and no Ultralytics on the target (the GPU
machine of issue 19 has torch and onnx but cannot install packages), and it
runs no code stored in a file. It is pure torch plus the `onnx` package for
parsing; torch.jit/export are not involved.

`OnnxTorchModel` interprets the graph node by node with torch functions. It
is written so that CUDA graph capture works on it:

* at load time every subgraph made of constants only is folded, and each
  node is classified once: *static* nodes compute from constants and tensor
  shapes only (the shape arithmetic and anchor grids of a dynamic-shape
  export), *dynamic* nodes touch image data;
* the first call with a new input signature (shapes, dtype, device) runs
  static nodes on the CPU, and keeps their results: the values dynamic nodes
  take as host arguments (reshape targets, slice bounds, resize sizes) as
  Python lists, and the tensors they take as data uploaded once to the
  device;
* later calls with that signature run only the dynamic nodes, with no host
  to device copy and no device synchronisation, so the same sequence of
  kernels can be captured and replayed (`torch.cuda.CUDAGraph`).

Precision: `half()` turns the float weights to float16; with a float16 input
every float Cast and every uploaded float value follows (float16 compute),
shape arithmetic stays exact on the CPU.

Supported: the operators of YOLOv8/YOLO11 detect, segment, pose and obb
exports, YOLOX, RT-DETR and the default detector (opset 11-21), plus common
element-wise, pooling, normalisation and reduction ops (`SUPPORTED_OPS`).
Operators whose output shape depends on data (NonZero, ...) are refused with
the node named when the model is loaded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception.core.errors import ModelFileError, RuntimeUnavailableError

__all__ = ["SUPPORTED_OPS", "OnnxTorchModel", "UnsupportedModelError", "load_onnx_as_torch"]


class UnsupportedModelError(ModelFileError):
    """The ONNX graph uses something this converter does not implement."""


def _import() -> tuple[Any, Any]:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"PyTorch is not installed: pip install torch ({exc})"
        ) from None
    return torch, F


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"the onnx package is needed to convert ONNX models to torch: pip install onnx ({exc})"
        ) from None
    return onnx


# ONNX TensorProto data types -> torch dtype names
_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}


@dataclass
class _Ctx:
    """What an op needs besides its inputs."""

    torch: Any
    F: Any
    opset: int
    static: bool  # computing on the CPU from shapes/constants only
    float_dtype: Any  # dtype float Casts produce in dynamic nodes (None: as the model says)


OpFn = Callable[[_Ctx, list[Any], dict[str, Any]], list[Any]]


@dataclass(frozen=True)
class _OpDef:
    fn: OpFn
    host: frozenset[int] = frozenset()  # inputs read as Python values (shapes, axes...)
    all_host: bool = False  # every input is a host value


_OPS: dict[str, _OpDef] = {}


def _op(*names: str, host: Sequence[int] = (), all_host: bool = False) -> Callable[[OpFn], OpFn]:
    def register(fn: OpFn) -> OpFn:
        for n in names:
            _OPS[n] = _OpDef(fn, frozenset(host), all_host)
        return fn

    return register


# ---------------------------------------------------------------- helpers
def _ints(v: Any) -> list[int]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v]
    return [int(v)]


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _pads_for(
    ctx: _Ctx, x: Any, attrs: dict[str, Any], kernel: list[int], strides: list[int],
    dilations: list[int],
) -> tuple[list[int], list[int]]:  # fmt: skip
    """(begin, end) spatial pads from `pads` or `auto_pad`."""
    n = len(kernel)
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(n):
            size = int(x.shape[2 + i])
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin, end
    if auto == "VALID":
        return [0] * n, [0] * n
    pads = _ints(attrs.get("pads")) or [0] * (2 * n)
    return pads[:n], pads[n:]


def _torch_pad(begin: list[int], end: list[int]) -> list[int]:
    """F.pad order: last axis first, (begin, end) each."""
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        out += [b, e]
    return out


def _binary_dtype(ctx: _Ctx, a: Any, b: Any) -> tuple[Any, Any]:
    """ONNX binary ops take equal types; a Python-side constant may differ in
    float width (a float32 constant meeting a float16 tensor): follow the tensor."""
    torch = ctx.torch
    if a.dtype != b.dtype and a.is_floating_point() and b.is_floating_point():
        if a.dim() == 0 or a.numel() < b.numel():
            a = a.to(b.dtype)
        else:
            b = b.to(a.dtype)
    del torch
    return a, b


# ---------------------------------------------------------------- element-wise
def _unary(fn_name: str) -> OpFn:
    def run(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
        return [getattr(ctx.torch, fn_name)(x[0])]

    return run


for _name, _fn in {
    "Sigmoid": "sigmoid", "Relu": "relu", "Tanh": "tanh", "Exp": "exp", "Log": "log",
    "Sqrt": "sqrt", "Neg": "neg", "Abs": "abs", "Cos": "cos", "Sin": "sin", "Erf": "erf",
    "Floor": "floor", "Ceil": "ceil", "Reciprocal": "reciprocal", "Not": "logical_not",
    "Sign": "sign", "Round": "round",
}.items():  # fmt: skip
    _OPS[_name] = _OpDef(_unary(_fn))


@_op("Identity")
def _identity(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    return [x[0]]


@_op("Softplus")
def _softplus(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    # log(1 + exp(x)) without torch's linear cut-off at x > 20 (differs by < 1e-9)
    torch = ctx.torch
    return [torch.nn.functional.softplus(x[0], beta=1.0, threshold=20.0)]


@_op("LeakyRelu")
def _leaky(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    return [ctx.F.leaky_relu(x[0], float(attrs.get("alpha", 0.01)))]


@_op("Elu")
def _elu(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    return [ctx.F.elu(x[0], float(attrs.get("alpha", 1.0)))]


@_op("HardSigmoid")
def _hardsigmoid(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return [ctx.torch.clamp(x[0] * alpha + beta, 0.0, 1.0)]


@_op("HardSwish")
def _hardswish(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    return [ctx.F.hardswish(x[0])]


@_op("Clip", host=(1, 2))
def _clip(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    lo = x[1] if len(x) > 1 and x[1] is not None else attrs.get("min")
    hi = x[2] if len(x) > 2 and x[2] is not None else attrs.get("max")
    return [ctx.torch.clamp(x[0], lo, hi)]


def _binary(fn: Callable[[Any, Any, Any], Any]) -> OpFn:
    def run(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
        a, b = _binary_dtype(ctx, x[0], x[1])
        return [fn(ctx.torch, a, b)]

    return run


def _div(torch: Any, a: Any, b: Any) -> Any:
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


for _name, _bfn in {
    "Add": lambda t, a, b: a + b,
    "Sub": lambda t, a, b: a - b,
    "Mul": lambda t, a, b: a * b,
    "Div": _div,
    "Pow": lambda t, a, b: t.pow(a, b),
    "Equal": lambda t, a, b: a == b,
    "Less": lambda t, a, b: a < b,
    "LessOrEqual": lambda t, a, b: a <= b,
    "Greater": lambda t, a, b: a > b,
    "GreaterOrEqual": lambda t, a, b: a >= b,
    "And": lambda t, a, b: t.logical_and(a, b),
    "Or": lambda t, a, b: t.logical_or(a, b),
    "Xor": lambda t, a, b: t.logical_xor(a, b),
}.items():
    _OPS[_name] = _OpDef(_binary(_bfn))


@_op("Mod")
def _mod(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    a, b = _binary_dtype(ctx, x[0], x[1])
    if int(attrs.get("fmod", 0)):
        return [ctx.torch.fmod(a, b)]
    return [ctx.torch.remainder(a, b)]


def _variadic_fn(kind: str) -> OpFn:
    def run(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
        out = x[0]
        for y in x[1:]:
            out, y = _binary_dtype(ctx, out, y)
            if kind == "Min":
                out = ctx.torch.minimum(out, y)
            elif kind == "Max":
                out = ctx.torch.maximum(out, y)
            else:
                out = out + y
        if kind == "Mean":
            out = out / len(x)
        return [out]

    return run


for _name in ("Min", "Max", "Sum", "Mean"):
    _OPS[_name] = _OpDef(_variadic_fn(_name))


@_op("Where")
def _where(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    a, b = _binary_dtype(ctx, x[1], x[2])
    return [ctx.torch.where(x[0], a, b)]


@_op("Cast")
def _cast(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    to = int(attrs["to"])
    name = _DTYPES.get(to)
    if name is None:
        raise UnsupportedModelError(f"Cast to ONNX type {to} is not supported")
    dtype = getattr(ctx.torch, name)
    if not ctx.static and ctx.float_dtype is not None and dtype.is_floating_point:
        dtype = ctx.float_dtype
    return [x[0].to(dtype)]


# ---------------------------------------------------------------- convolution, pooling
@_op("Conv")
def _conv(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data, w = x[0], x[1]
    bias = x[2] if len(x) > 2 else None
    n = w.dim() - 2
    kernel = _ints(attrs.get("kernel_shape")) or list(w.shape[2:])
    strides = _ints(attrs.get("strides")) or [1] * n
    dil = _ints(attrs.get("dilations")) or [1] * n
    group = int(attrs.get("group", 1))
    begin, end = _pads_for(ctx, data, attrs, kernel, strides, dil)
    if begin != end:
        data = ctx.F.pad(data, _torch_pad(begin, end))
        begin = [0] * n
    conv = {1: ctx.F.conv1d, 2: ctx.F.conv2d, 3: ctx.F.conv3d}.get(n)
    if conv is None:
        raise UnsupportedModelError(f"Conv with {n} spatial axes is not supported")
    return [conv(data, w, bias, strides, begin, dil, group)]


@_op("ConvTranspose")
def _conv_t(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data, w = x[0], x[1]
    bias = x[2] if len(x) > 2 else None
    n = w.dim() - 2
    if attrs.get("output_shape") is not None:
        raise UnsupportedModelError("ConvTranspose with output_shape is not supported")
    auto = attrs.get("auto_pad", b"NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else str(auto)) not in ("NOTSET", "VALID"):
        raise UnsupportedModelError(f"ConvTranspose auto_pad={auto!r} is not supported")
    strides = _ints(attrs.get("strides")) or [1] * n
    dil = _ints(attrs.get("dilations")) or [1] * n
    pads = _ints(attrs.get("pads")) or [0] * (2 * n)
    if pads[:n] != pads[n:]:
        raise UnsupportedModelError("ConvTranspose with asymmetric pads is not supported")
    out_pad = _ints(attrs.get("output_padding")) or [0] * n
    fn = {1: ctx.F.conv_transpose1d, 2: ctx.F.conv_transpose2d, 3: ctx.F.conv_transpose3d}.get(n)
    if fn is None:
        raise UnsupportedModelError(f"ConvTranspose with {n} spatial axes is not supported")
    group = int(attrs.get("group", 1))
    return [fn(data, w, bias, strides, pads[:n], out_pad, group, dil)]


def _pool_fn(kind: str) -> OpFn:
    def run(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
        data = x[0]
        kernel = _ints(attrs["kernel_shape"])
        n = len(kernel)
        strides = _ints(attrs.get("strides")) or [1] * n
        dil = _ints(attrs.get("dilations")) or [1] * n
        ceil = bool(int(attrs.get("ceil_mode", 0)))
        begin, end = _pads_for(ctx, data, attrs, kernel, strides, dil)
        if n != 2:
            raise UnsupportedModelError(f"{kind} over {n} axes is not supported")
        if kind == "MaxPool":
            if len(attrs.get("_outputs", ())) > 1:
                raise UnsupportedModelError("MaxPool with an Indices output is not supported")
            if begin != end or any(b > k // 2 for b, k in zip(begin, kernel, strict=True)):
                data = ctx.F.pad(data, _torch_pad(begin, end), value=-math.inf)
                begin = [0, 0]
            return [ctx.F.max_pool2d(data, kernel, strides, begin, dil, ceil)]
        if dil != [1, 1]:
            raise UnsupportedModelError("AveragePool with dilations is not supported")
        include = bool(int(attrs.get("count_include_pad", 0)))
        if begin != end:
            if not include:
                raise UnsupportedModelError(
                    "AveragePool with asymmetric pads and count_include_pad=0 is not supported"
                )
            data = ctx.F.pad(data, _torch_pad(begin, end))
            begin = [0, 0]
        return [ctx.F.avg_pool2d(data, kernel, strides, begin, ceil, include)]

    return run


for _name in ("MaxPool", "AveragePool"):
    _OPS[_name] = _OpDef(_pool_fn(_name))


@_op("GlobalAveragePool", "GlobalMaxPool")
def _gpool(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    dims = tuple(range(2, x[0].dim()))
    if attrs.get("_op") == "GlobalMaxPool":
        return [ctx.torch.amax(x[0], dim=dims, keepdim=True)]
    return [x[0].mean(dim=dims, keepdim=True)]


@_op("BatchNormalization")
def _bn(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data, scale, bias, mean, var = x[:5]
    eps = float(attrs.get("epsilon", 1e-5))
    return [ctx.F.batch_norm(data, mean, var, scale, bias, False, 0.0, eps)]


@_op("InstanceNormalization")
def _inorm(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    eps = float(attrs.get("epsilon", 1e-5))
    return [ctx.F.instance_norm(x[0], weight=x[1], bias=x[2], eps=eps)]


@_op("LayerNormalization")
def _lnorm(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    axis = _norm_axis(int(attrs.get("axis", -1)), data.dim())
    eps = float(attrs.get("epsilon", 1e-5))
    shape = tuple(data.shape[axis:])
    scale = x[1].reshape(shape) if x[1] is not None else None
    bias = x[2].reshape(shape) if len(x) > 2 and x[2] is not None else None
    return [ctx.F.layer_norm(data, shape, scale, bias, eps)]


# ---------------------------------------------------------------- linear algebra
@_op("MatMul")
def _matmul(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    a, b = _binary_dtype(ctx, x[0], x[1])
    return [ctx.torch.matmul(a, b)]


@_op("Gemm")
def _gemm(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    a, b = x[0], x[1]
    if int(attrs.get("transA", 0)):
        a = a.t()
    if int(attrs.get("transB", 0)):
        b = b.t()
    out = ctx.torch.matmul(a, b) * float(attrs.get("alpha", 1.0))
    if len(x) > 2 and x[2] is not None:
        out = out + x[2] * float(attrs.get("beta", 1.0))
    return [out]


@_op("Softmax", "LogSoftmax")
def _softmax(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    log = attrs.get("_op") == "LogSoftmax"
    fn = ctx.torch.log_softmax if log else ctx.torch.softmax
    if ctx.opset >= 13:
        return [fn(data, dim=int(attrs.get("axis", -1)))]
    axis = _norm_axis(int(attrs.get("axis", 1)), data.dim())
    shape = data.shape
    flat = data.reshape(math.prod(shape[:axis]), -1)
    return [fn(flat, dim=1).reshape(shape)]


# ---------------------------------------------------------------- reductions
def _reduce_fn(kind: str) -> OpFn:
    def run(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
        data = x[0]
        axes = _ints(x[1]) if len(x) > 1 and x[1] is not None else _ints(attrs.get("axes"))
        keep = bool(int(attrs.get("keepdims", 1)))
        if not axes:
            if int(attrs.get("noop_with_empty_axes", 0)):
                return [data]
            axes = list(range(data.dim()))
        dims = tuple(_norm_axis(a, data.dim()) for a in axes)
        torch = ctx.torch
        if kind == "ReduceMean":
            return [data.mean(dim=dims, keepdim=keep)]
        if kind == "ReduceSum":
            return [data.sum(dim=dims, keepdim=keep)]
        if kind == "ReduceMax":
            return [torch.amax(data, dim=dims, keepdim=keep)]
        if kind == "ReduceMin":
            return [torch.amin(data, dim=dims, keepdim=keep)]
        return [data.prod(dim=dims[0], keepdim=keep)] if len(dims) == 1 else [
            data.reshape(-1).prod()]  # fmt: skip

    return run


for _name in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"):
    _OPS[_name] = _OpDef(_reduce_fn(_name), frozenset({1}))


@_op("ArgMax", "ArgMin")
def _argmax(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    axis = int(attrs.get("axis", 0))
    keep = bool(int(attrs.get("keepdims", 1)))
    if int(attrs.get("select_last_index", 0)):
        raise UnsupportedModelError(f"{attrs.get('_op')} with select_last_index=1 is not supported")
    fn = ctx.torch.argmax if attrs.get("_op") == "ArgMax" else ctx.torch.argmin
    return [fn(data, dim=axis, keepdim=keep)]


@_op("TopK", host=(1,))
def _topk(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    k = _ints(x[1])[0]
    axis = int(attrs.get("axis", -1))
    largest = bool(int(attrs.get("largest", 1)))
    values, idx = ctx.torch.topk(x[0], k, dim=axis, largest=largest, sorted=True)
    return [values, idx]


# ---------------------------------------------------------------- shapes and layout
@_op("Shape")
def _shape(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    dims = list(x[0].shape)
    start = attrs.get("start")
    end = attrs.get("end")
    dims = dims[slice(None if start is None else int(start), None if end is None else int(end))]
    return [ctx.torch.tensor(dims, dtype=ctx.torch.int64)]


@_op("Size")
def _size(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    return [ctx.torch.tensor(x[0].numel(), dtype=ctx.torch.int64)]


@_op("Reshape", host=(1,))
def _reshape(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    shape = _ints(x[1])
    if not int(attrs.get("allowzero", 0)):
        shape = [int(data.shape[i]) if s == 0 else s for i, s in enumerate(shape)]
    return [data.reshape(shape)]


@_op("Flatten")
def _flatten(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    axis = _norm_axis(int(attrs.get("axis", 1)), data.dim())
    return [data.reshape(math.prod(data.shape[:axis]), -1)]


@_op("Transpose")
def _transpose(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    perm = _ints(attrs.get("perm")) or list(reversed(range(x[0].dim())))
    return [x[0].permute(perm)]


@_op("Unsqueeze", host=(1,))
def _unsqueeze(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    axes = _ints(x[1]) if len(x) > 1 and x[1] is not None else _ints(attrs.get("axes"))
    rank = data.dim() + len(axes)
    for a in sorted(_norm_axis(a, rank) for a in axes):
        data = data.unsqueeze(a)
    return [data]


@_op("Squeeze", host=(1,))
def _squeeze(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    axes = _ints(x[1]) if len(x) > 1 and x[1] is not None else _ints(attrs.get("axes"))
    if not axes:
        return [data.squeeze()]
    for a in sorted((_norm_axis(a, data.dim()) for a in axes), reverse=True):
        data = data.squeeze(a)
    return [data]


@_op("Concat")
def _concat(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    parts = [t for t in x if t is not None]
    floats = [t.dtype for t in parts if t.is_floating_point()]
    if floats and len(set(floats)) > 1:  # a float32 constant among float16 tensors
        want = min(floats, key=lambda d: d.itemsize)
        parts = [t.to(want) if t.is_floating_point() else t for t in parts]
    return [ctx.torch.cat(parts, dim=int(attrs.get("axis", 0)))]


@_op("Split", host=(1,))
def _split(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    axis = _norm_axis(int(attrs.get("axis", 0)), data.dim())
    sizes = _ints(x[1]) if len(x) > 1 and x[1] is not None else _ints(attrs.get("split"))
    n_out = int(attrs["_n_outputs"])
    if not sizes:
        dim = int(data.shape[axis])
        parts = int(attrs.get("num_outputs", n_out))
        chunk = -(-dim // parts)
        sizes = [min(chunk, dim - i * chunk) for i in range(parts)]
    return list(ctx.torch.split(data, sizes, dim=axis))


@_op("Slice", host=(1, 2, 3, 4))
def _slice(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    if len(x) > 1:
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    else:  # opset < 10: attributes
        starts, ends = _ints(attrs["starts"]), _ints(attrs["ends"])
        axes = _ints(attrs.get("axes")) or list(range(len(starts)))
        steps = [1] * len(starts)
    index: list[Any] = [slice(None)] * data.dim()
    flips: list[int] = []
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = _norm_axis(a, data.dim())
        dim = int(data.shape[a])
        if st > 0:
            index[a] = slice(s, e, st)
            continue
        if st == 0:
            raise UnsupportedModelError("Slice with step 0")
        start, stop, step = slice(s, e, st).indices(dim)
        count = len(range(start, stop, step))
        first = dim - 1 - start  # in the flipped axis
        index[a] = slice(first, first + count * -step, -step) if count else slice(0, 0)
        flips.append(a)
    if flips:
        data = data.flip(flips)
    return [data[tuple(index)]]


@_op("Gather")
def _gather(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data, idx = x[0], x[1]
    axis = _norm_axis(int(attrs.get("axis", 0)), data.dim())
    dim = int(data.shape[axis])
    idx = idx.to(ctx.torch.int64)
    idx = ctx.torch.where(idx < 0, idx + dim, idx)
    out = data.index_select(axis, idx.reshape(-1))
    return [out.reshape((*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :]))]


@_op("GatherElements")
def _gather_el(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data, idx = x[0], x[1].to(ctx.torch.int64)
    axis = _norm_axis(int(attrs.get("axis", 0)), data.dim())
    idx = ctx.torch.where(idx < 0, idx + int(data.shape[axis]), idx)
    return [ctx.torch.gather(data, axis, idx)]


@_op("Expand", host=(1,))
def _expand(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    shape = ctx.torch.broadcast_shapes(tuple(x[0].shape), tuple(_ints(x[1])))
    return [x[0].expand(shape)]


@_op("Tile", host=(1,))
def _tile(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    return [x[0].repeat(_ints(x[1]))]


@_op("Pad", host=(1, 2, 3))
def _pad(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    pads = _ints(x[1]) if len(x) > 1 and x[1] is not None else _ints(attrs.get("pads"))
    value = x[2] if len(x) > 2 and x[2] is not None else attrs.get("value", 0.0)
    if isinstance(value, list):
        value = value[0] if value else 0.0
    n = data.dim()
    axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(n))
    begin, end = [0] * n, [0] * n
    k = len(axes)
    for i, a in enumerate(axes):
        begin[_norm_axis(a, n)], end[_norm_axis(a, n)] = pads[i], pads[i + k]
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if torch_mode is None:
        raise UnsupportedModelError(f"Pad mode {mode!r} is not supported")
    flat = _torch_pad(begin, end)
    if torch_mode == "constant":
        return [ctx.F.pad(data, flat, value=float(value))]
    return [ctx.F.pad(data, flat[: 2 * (n - 2)], mode=torch_mode)]


@_op("Range", all_host=True)
def _range(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    start, limit, delta = x[0], x[1], x[2]
    dtype = ctx.torch.int64 if isinstance(start, int) else ctx.torch.float32
    if attrs.get("_dtypes"):
        dtype = attrs["_dtypes"][0]
    return [ctx.torch.arange(start, limit, delta, dtype=dtype)]


@_op("ConstantOfShape", all_host=True)
def _const_of_shape(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    value = attrs.get("value")
    if value is None:
        return [ctx.torch.zeros(_ints(x[0]), dtype=ctx.torch.float32)]
    t = ctx.torch.from_numpy(value.copy()).reshape(-1)
    return [ctx.torch.full(_ints(x[0]), t[0].item(), dtype=t.dtype)]


# ---------------------------------------------------------------- resampling
def _mode(attrs: Mapping[str, Any], key: str, default: str) -> str:
    v = attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else str(v)


@_op("Resize", host=(1, 2, 3))
def _resize(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data = x[0]
    if ctx.opset < 11:
        scales = x[1] if len(x) > 1 else None
        sizes = None
    else:
        scales = x[2] if len(x) > 2 else None
        sizes = x[3] if len(x) > 3 else None
    mode = _mode(attrs, "mode", "nearest")
    coord = _mode(attrs, "coordinate_transformation_mode", "half_pixel")
    nearest = _mode(attrs, "nearest_mode", "round_prefer_floor")
    if int(attrs.get("antialias", 0)) or attrs.get("axes") is not None:
        raise UnsupportedModelError("Resize with antialias or axes is not supported")
    n = data.dim() - 2
    if sizes:
        size = _ints(sizes)[2:]
        kw: dict[str, Any] = {"size": size}
    elif scales:
        sc = [float(s) for s in scales]
        if sc[:2] != [1.0, 1.0]:
            raise UnsupportedModelError("Resize of the batch or channel axis is not supported")
        kw = {"scale_factor": sc[2:], "recompute_scale_factor": False}
    else:
        raise UnsupportedModelError("Resize needs scales or sizes")
    if mode == "nearest":
        if coord == "asymmetric" and nearest == "floor":
            return [ctx.F.interpolate(data, mode="nearest", **kw)]
        if coord in ("half_pixel", "pytorch_half_pixel") and nearest == "round_prefer_ceil":
            return [ctx.F.interpolate(data, mode="nearest-exact", **kw)]
        raise UnsupportedModelError(
            f"Resize nearest with {coord}/{nearest} is not supported (asymmetric/floor and "
            "half_pixel/round_prefer_ceil are)"
        )
    if mode == "linear":
        torch_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(n)
        if torch_mode is None:
            raise UnsupportedModelError(f"Resize linear over {n} axes is not supported")
        if coord in ("half_pixel", "pytorch_half_pixel"):
            return [ctx.F.interpolate(data, mode=torch_mode, align_corners=False, **kw)]
        if coord == "align_corners":
            return [ctx.F.interpolate(data, mode=torch_mode, align_corners=True, **kw)]
        raise UnsupportedModelError(f"Resize linear with {coord} is not supported")
    raise UnsupportedModelError(f"Resize mode {mode!r} is not supported")


@_op("GridSample")
def _grid_sample(ctx: _Ctx, x: list[Any], attrs: dict[str, Any]) -> list[Any]:
    mode = _mode(attrs, "mode", "linear" if ctx.opset >= 20 else "bilinear")
    mode = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    pad = _mode(attrs, "padding_mode", "zeros")
    align = bool(int(attrs.get("align_corners", 0)))
    grid = x[1].to(x[0].dtype)
    return [ctx.F.grid_sample(x[0], grid, mode=mode, padding_mode=pad, align_corners=align)]


SUPPORTED_OPS: frozenset[str] = frozenset(_OPS) | {"Constant"}
"""Operator types (default ONNX domain) the converter runs."""


# ---------------------------------------------------------------- the model
@dataclass
class _Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    opdef: _OpDef
    name: str


@dataclass
class _Step:
    """One dynamic node of a plan: its arguments fixed where they do not come
    from the running values (host values, weights, uploaded static values)."""

    fn: OpFn
    attrs: dict[str, Any]
    args: list[Any]
    env_slots: list[tuple[int, str]]
    outputs: list[str]
    free: list[str]


@dataclass
class _Plan:
    """What the first call with one input signature learnt: the dynamic
    nodes with everything but image data resolved, and the outputs."""

    steps: list[_Step] = field(default_factory=list)
    uploads: dict[str, Any] = field(default_factory=dict)
    outputs: list[tuple[str, Any]] = field(default_factory=list)  # (env name or "", fixed value)


def _attr_values(onnx: Any, node: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.TENSOR:
            out[a.name] = numpy_helper.to_array(a.t)
        elif a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise UnsupportedModelError(
                f"node {node.name or node.op_type}: {node.op_type} with subgraphs is not supported"
            )
        else:
            out[a.name] = onnx.helper.get_attribute_value(a)
    return out


def _constant_value(node: Any, attrs: Mapping[str, Any]) -> Any:
    import numpy as np

    if "value" in attrs:
        return np.asarray(attrs["value"])
    if "value_float" in attrs:
        return np.asarray(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.asarray(attrs["value_floats"], dtype=np.float32)
    if "value_int" in attrs:
        return np.asarray(attrs["value_int"], dtype=np.int64)
    if "value_ints" in attrs:
        return np.asarray(attrs["value_ints"], dtype=np.int64)
    raise UnsupportedModelError(f"Constant node {node.name!r}: unsupported value kind")


class OnnxTorchModel:
    """An ONNX graph as a torch callable: `model(x)` returns the graph outputs
    (a tuple of tensors, in graph order). `to(device)`, `half()`, `float()` and
    `eval()` behave as on an nn.Module (the weights live in `weights`, one).

    Args:
        model: an .onnx path, serialised bytes or an onnx.ModelProto.
    """

    def __init__(self, model: str | os.PathLike[str] | bytes | Any) -> None:
        torch, F = _import()
        onnx = _import_onnx()
        from onnx import numpy_helper

        self._torch, self._F = torch, F
        if isinstance(model, (str, os.PathLike)):
            try:
                proto = onnx.load(str(model))
            except Exception as exc:  # DecodeError and friends
                raise ModelFileError(f"onnx cannot load {Path(model).name}: {exc}") from None
            self.name = Path(model).stem
        elif isinstance(model, bytes):
            proto = onnx.load_model_from_string(model)
            self.name = "model"
        else:
            proto = model
            self.name = proto.graph.name or "model"
        self.opset = next(
            (int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        graph = proto.graph
        self.metadata: dict[str, str] = {p.key: p.value for p in proto.metadata_props}
        consts: dict[str, Any] = {}
        for init in graph.initializer:
            consts[init.name] = numpy_helper.to_array(init)
        self.input_names = [i.name for i in graph.input if i.name not in consts]
        self.input_dims: list[list[int | str]] = [
            [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in i.type.tensor_type.shape.dim
            ]
            for i in graph.input
            if i.name not in consts
        ]
        self.output_names = [o.name for o in graph.output]

        nodes: list[_Node] = []
        unsupported: dict[str, str] = {}
        for k, n in enumerate(graph.node):
            if n.domain not in ("", "ai.onnx"):
                unsupported[f"{n.domain}.{n.op_type}"] = n.name or f"#{k}"
                continue
            attrs = _attr_values(onnx, n)
            if n.op_type == "Constant":
                consts[n.output[0]] = _constant_value(n, attrs)
                continue
            opdef = _OPS.get(n.op_type)
            if opdef is None:
                unsupported[n.op_type] = n.name or f"#{k}"
                continue
            attrs["_op"] = n.op_type
            attrs["_n_outputs"] = len(n.output)
            attrs["_outputs"] = tuple(n.output)
            nodes.append(_Node(n.op_type, list(n.input), list(n.output), attrs, opdef, n.name))
        if unsupported:
            listed = ", ".join(f"{op} (node {name})" for op, name in sorted(unsupported.items()))
            raise UnsupportedModelError(
                f"{self.name}: operators not supported by the ONNX->torch converter: {listed}"
            )
        self._ctx_static = _Ctx(torch, F, self.opset, True, None)
        cpu_consts = {k: torch.from_numpy(v.copy()) for k, v in consts.items()}
        nodes = self._fold(nodes, cpu_consts)
        self._nodes = nodes
        self._classify(cpu_consts)
        self.weights = torch.nn.Module()
        self._buffer_of: dict[str, str] = {}
        for i, name in enumerate(sorted(self._data_consts)):
            key = f"c{i}"
            self.weights.register_buffer(key, cpu_consts[name].clone(), persistent=True)
            self._buffer_of[name] = key
        self._cpu_consts = {k: cpu_consts[k] for k in self._host_consts}
        self._plans: dict[tuple[Any, ...], _Plan] = {}

    # ------------------------------------------------------------ load time
    def _fold(self, nodes: list[_Node], consts: dict[str, Any]) -> list[_Node]:
        """Evaluate nodes fed by constants only (once, on the CPU, fp32)."""
        kept: list[_Node] = []
        for node in nodes:
            if not all(i in consts for i in node.inputs if i):
                kept.append(node)
                continue
            try:
                outs = self._call(node, self._ctx_static, [consts.get(i) for i in node.inputs])
            except UnsupportedModelError:
                raise
            except Exception as exc:  # a malformed constant subgraph
                raise UnsupportedModelError(
                    f"{self.name}: node {node.name or node.op} ({node.op}) fails on its "
                    f"constant inputs: {exc}"
                ) from None
            for name, value in zip(node.outputs, outs, strict=False):
                if name:
                    consts[name] = value
        return kept

    def _classify(self, consts: Mapping[str, Any]) -> None:
        """Static nodes (constants and shapes only) vs dynamic ones; which
        constants the device needs (buffers) and which the host reads."""
        static_values: set[str] = set()
        self._static: list[bool] = []
        data_consts: set[str] = set()
        host_consts: set[str] = set()
        for node in self._nodes:
            shape_op = node.op in ("Shape", "Size")
            known = all(i in consts or i in static_values for i in node.inputs if i)
            is_static = shape_op or known
            for slot, name in enumerate(node.inputs):
                if not name or (shape_op and name not in consts):
                    continue
                host = node.opdef.all_host or slot in node.opdef.host
                if host and name not in consts and name not in static_values:
                    raise UnsupportedModelError(
                        f"{self.name}: node {node.name or node.op} ({node.op}) takes input "
                        f"{slot} from image data: data-dependent shapes are not supported"
                    )
                if name in consts:
                    (host_consts if host or is_static else data_consts).add(name)
            if is_static:
                static_values.update(o for o in node.outputs if o)
            self._static.append(is_static)
        data_consts.update(n for n in self.output_names if n in consts)
        self._static_values = static_values
        self._data_consts = data_consts
        self._host_consts = host_consts
        # the last dynamic reader of each running value: freed after it
        last: dict[str, int] = {}
        for k, node in enumerate(self._nodes):
            if not self._static[k]:
                for name in node.inputs:
                    if name and name not in consts and name not in static_values:
                        last[name] = k
        keep = set(self.output_names)
        self._free_after: dict[int, list[str]] = {}
        for name, k in last.items():
            if name not in keep:
                self._free_after.setdefault(k, []).append(name)

    # ------------------------------------------------------------ nn.Module-like
    def to(self, *args: Any, **kwargs: Any) -> OnnxTorchModel:
        self.weights.to(*args, **kwargs)
        self._plans.clear()
        return self

    def half(self) -> OnnxTorchModel:
        self.weights.half()
        self._plans.clear()
        return self

    def float(self) -> OnnxTorchModel:
        self.weights.float()
        self._plans.clear()
        return self

    def eval(self) -> OnnxTorchModel:
        return self

    @property
    def device(self) -> Any:
        for b in self.weights.buffers():
            return b.device
        return self._torch.device("cpu")

    @property
    def static_node_count(self) -> int:
        """Nodes computed on the host from shapes (once per input signature)."""
        return sum(self._static)

    @property
    def node_count(self) -> int:
        return len(self._nodes)

    # ------------------------------------------------------------ running
    def _call(self, node: _Node, ctx: _Ctx, values: list[Any]) -> list[Any]:
        """Run one node on tensors, host slots turned into Python values."""
        args: list[Any] = []
        for slot, v in enumerate(values):
            host = node.opdef.all_host or slot in node.opdef.host
            args.append(v.tolist() if host and v is not None else v)
        attrs = node.attrs
        if node.op == "Range" and values and values[0] is not None:
            attrs = {**attrs, "_dtypes": [values[0].dtype]}
        return node.opdef.fn(ctx, args, attrs)

    def __call__(self, *inputs: Any) -> tuple[Any, ...]:
        """The graph outputs for `inputs` (tensors on one device)."""
        torch = self._torch
        if len(inputs) != len(self.input_names):
            raise ValueError(
                f"{self.name}: expected {len(self.input_names)} inputs, got {len(inputs)}"
            )
        floats = [x.dtype for x in inputs if x.is_floating_point()]
        fdtype = torch.float16 if floats and floats[0] == torch.float16 else None
        sig = (tuple((tuple(x.shape), x.dtype) for x in inputs), str(inputs[0].device))
        plan = self._plans.get(sig)
        if plan is None:
            plan = self._make_plan(inputs, fdtype)
            self._plans[sig] = plan
        ctx = _Ctx(torch, self._F, self.opset, False, fdtype)
        env: dict[str, Any] = dict(zip(self.input_names, inputs, strict=True))
        for step in plan.steps:
            args = list(step.args)
            for slot, name in step.env_slots:
                args[slot] = env[name]
            outs = step.fn(ctx, args, step.attrs)
            for name, value in zip(step.outputs, outs, strict=False):
                if name:
                    env[name] = value
            for name in step.free:
                del env[name]
        return tuple(env[n] if n else fixed for n, fixed in plan.outputs)

    def _make_plan(self, inputs: Sequence[Any], fdtype: Any) -> _Plan:
        """Run every node once (static ones on the CPU) and resolve, for each
        dynamic node, every argument that does not depend on image data."""
        torch = self._torch
        dyn = _Ctx(torch, self._F, self.opset, False, fdtype)
        device = inputs[0].device
        buffers = dict(self.weights.named_buffers())
        plan = _Plan()
        env: dict[str, Any] = dict(zip(self.input_names, inputs, strict=True))
        static_env: dict[str, Any] = dict(self._cpu_consts)

        def upload(name: str) -> Any:
            t = plan.uploads.get(name)
            if t is None:
                value = static_env[name]
                if fdtype is not None and value.is_floating_point():
                    value = value.to(fdtype)
                t = plan.uploads[name] = value.to(device)
            return t

        for k, node in enumerate(self._nodes):
            try:
                if self._static[k]:
                    vals = [
                        None if not n else static_env[n] if n in static_env else env[n]
                        for n in node.inputs
                    ]
                    outs = self._call(node, self._ctx_static, vals)
                    static_env.update((n, v) for n, v in zip(node.outputs, outs, strict=False))
                    continue
                args: list[Any] = []
                env_slots: list[tuple[int, str]] = []
                for slot, name in enumerate(node.inputs):
                    if not name:
                        args.append(None)
                    elif node.opdef.all_host or slot in node.opdef.host:
                        args.append(static_env[name].tolist())
                    elif name in self._buffer_of:
                        args.append(buffers[self._buffer_of[name]])
                    elif name in static_env:
                        args.append(upload(name))
                    else:
                        args.append(None)
                        env_slots.append((slot, name))
                run_args = list(args)
                for slot, name in env_slots:
                    run_args[slot] = env[name]
                outs = node.opdef.fn(dyn, run_args, node.attrs)
            except UnsupportedModelError:
                raise
            except Exception as exc:  # shape mismatches and the like: name the node
                raise RuntimeError(
                    f"{self.name}: node {node.name or node.op} ({node.op}) failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            env.update((n, v) for n, v in zip(node.outputs, outs, strict=False) if n)
            plan.steps.append(
                _Step(node.opdef.fn, node.attrs, args, env_slots, node.outputs,
                      self._free_after.get(k, []))
            )  # fmt: skip
        for n in self.output_names:
            if n in self._buffer_of:
                plan.outputs.append(("", buffers[self._buffer_of[n]]))
            elif n in static_env:
                plan.outputs.append(("", upload(n)))
            else:
                plan.outputs.append((n, None))
        return plan


def load_onnx_as_torch(model: str | os.PathLike[str] | bytes | Any) -> OnnxTorchModel:
    """`OnnxTorchModel(model)`: an ONNX file (or bytes, or a ModelProto) as a
    torch callable. Raises UnsupportedModelError naming unsupported operators."""
    return OnnxTorchModel(model)
