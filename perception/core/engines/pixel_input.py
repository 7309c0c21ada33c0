"""Feed uint8 pixels straight into an ONNX model ("pixel input").

A detector's preprocessing ends with a pass over the whole input tensor:
uint8 -> float32 and a scale by 1/255 (plus a channel swap). On a CPU that
pass costs about as much as the resize itself (0.25 ms at 640x384 on 2 cores,
more at batch 6), and is pure overhead on top of the bare `session.run`.

When the model's input goes only into Conv nodes and the normalisation is a
pure per-channel scale (no mean offset), the pass folds away exactly: the
scale and channel order move into the first convolution's weights
(conv(x * a) == conv'(x) with W'[:, src[c]] = W[:, c] * a[c]; the zero padding
stays zero), and the graph takes uint8 (N, 3, H, W) followed by one Cast.
Measured side by side on a 2-core CPU the whole pipeline gets at most 1.6 %
faster, and at batch 6 the difference is within run-to-run noise (ONNX
Runtime's Cast costs most or all of what numpy's conversion did;
bench/bench_detection.py, "ours/float"). The
point is the accelerator: on CUDA the Cast runs on the GPU and the
host-to-device copy shrinks fourfold (not measured here: no GPU).

A model that takes raw 0-255 values in the images' channel order (YOLOX)
needs no fold at all: it only gets the Cast, whatever its input feeds.
Anything else (a mean offset, a scale with the input feeding other nodes
than Conv, grouped or quantised convolutions, a float16 input, a
pre-optimised graph) is reported as a one-line reason and the caller keeps
the float path. Needs the `onnx` package; without it the reason says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PixelInput", "PixelInputUnsupported", "fuse_pixel_input"]

PIXEL_INPUT_SUFFIX = "__pixels_uint8"


class PixelInputUnsupported(Exception):
    """The model cannot take pixels directly; the message is the reason."""


@dataclass(frozen=True)
class PixelInput:
    """How pixel values become the model's input channels.

    Model channel c = pixel channel `source[c]` * `scale[c]` (e.g. BGR images
    into an RGB /255 model: source (2, 1, 0), scale 1/255 each).
    """

    scale: tuple[float, float, float]
    source: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.scale) != 3 or len(self.source) != 3:
            raise ValueError("PixelInput: expected 3 scales and 3 source channels")
        if sorted(self.source) != [0, 1, 2]:
            raise ValueError(
                f"PixelInput.source: expected a permutation of 0..2, got {self.source}"
            )


def _require_onnx() -> None:
    """PixelInputUnsupported (the reason a caller logs) when onnx is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise PixelInputUnsupported(
            "the onnx package is not installed (pip install onnx)"
        ) from None


def fuse_pixel_input(model_bytes: bytes, pixel: PixelInput) -> bytes:
    """Return the model rewritten to take uint8 (N, 3, H, W) pixels.

    The new input is named `<input>__pixels_uint8`; outputs, metadata and
    everything after the first convolution stay as they were. Raises
    `PixelInputUnsupported` with the reason when the rewrite would not be exact.
    """
    _require_onnx()
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    try:
        model = onnx.load_model_from_string(model_bytes)
    except Exception as exc:  # onnx raises DecodeError and others
        raise PixelInputUnsupported(f"onnx cannot parse the model: {exc}") from None
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = [i for i in graph.input if i.name not in inits]
    if len(graph_inputs) != 1:
        raise PixelInputUnsupported(f"expected one image input, got {len(graph_inputs)}")
    inp = graph_inputs[0]
    ttype = inp.type.tensor_type
    if ttype.elem_type != TensorProto.FLOAT:
        raise PixelInputUnsupported(
            f"input {inp.name!r} is {TensorProto.DataType.Name(ttype.elem_type)}, expected FLOAT"
        )
    dims = list(ttype.shape.dim)
    if len(dims) != 4 or (dims[1].HasField("dim_value") and dims[1].dim_value != 3):
        raise PixelInputUnsupported(f"input {inp.name!r}: expected (N, 3, H, W)")

    consumers = [n for n in graph.node if inp.name in n.input]
    if not consumers:
        raise PixelInputUnsupported(f"input {inp.name!r} feeds no node")
    inner = _subgraph_reads(graph.node)
    if inp.name in inner:
        raise PixelInputUnsupported(f"input {inp.name!r} is also read inside a subgraph (If/Loop)")
    identity = all(float(a) == 1.0 for a in pixel.scale) and tuple(pixel.source) == (0, 1, 2)
    if identity:
        # raw 0-255 values in the model's own channel order (YOLOX): nothing to
        # fold, whatever the input feeds; only the Cast is added
        consumers = []
    for node in consumers:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            kind = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            hint = " (a pre-optimised graph)" if node.domain else ""
            raise PixelInputUnsupported(
                f"input {inp.name!r} feeds a {kind} node ({node.name or 'unnamed'}){hint}, "
                "not only Conv"
            )
        if list(node.input).index(inp.name) != 0 or list(node.input).count(inp.name) != 1:
            raise PixelInputUnsupported(f"input {inp.name!r} is not only the data input of Conv")
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group != 1:
            raise PixelInputUnsupported(f"the first Conv has group={group}, expected 1")
        if len(node.input) < 2 or node.input[1] not in inits:
            raise PixelInputUnsupported("the first Conv's weights are not a constant initializer")
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    # weights read elsewhere too (another node, a subgraph, a graph output)
    # keep their values; the folded Conv gets its own copy
    elsewhere = inner | {o.name for o in graph.output}

    scale = np.asarray(pixel.scale, dtype=np.float64)
    src = np.asarray(pixel.source)
    for node in consumers:
        init = inits[node.input[1]]
        if init.data_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            raise PixelInputUnsupported(
                f"the first Conv's weights are {TensorProto.DataType.Name(init.data_type)}, "
                "expected FLOAT"
            )
        w = numpy_helper.to_array(init)
        if w.ndim < 3 or w.shape[1] != 3:
            raise PixelInputUnsupported(f"the first Conv's weights have shape {w.shape}")
        # model channel c reads pixel channel src[c] scaled by scale[c]:
        # sum_c W[:, c] * p[src[c]] * s[c] == sum_k W'[:, k] * p[k] with
        # W'[:, src[c]] = W[:, c] * s[c].
        folded = np.empty_like(w, dtype=np.float64)
        for c in range(3):
            folded[:, src[c]] = w[:, c].astype(np.float64) * scale[c]
        new_name = init.name
        if uses.get(init.name, 0) > 1 or init.name in elsewhere:
            new_name = f"{init.name}{PIXEL_INPUT_SUFFIX}_{len(graph.initializer)}"
            node.input[1] = new_name
            graph.initializer.append(numpy_helper.from_array(folded.astype(w.dtype), new_name))
        else:
            init.CopyFrom(numpy_helper.from_array(folded.astype(w.dtype), new_name))

    pixels = inp.name + PIXEL_INPUT_SUFFIX

    def axis(d: object, default: str) -> int | str:
        return d.dim_value if d.HasField("dim_value") else (d.dim_param or default)  # type: ignore[attr-defined]

    n_dim = axis(dims[0], f"{pixels}_N")
    h_dim, w_dim = axis(dims[2], f"{pixels}_H"), axis(dims[3], f"{pixels}_W")
    new_input = helper.make_tensor_value_info(pixels, TensorProto.UINT8, [n_dim, 3, h_dim, w_dim])
    taken = {n.name for n in graph.node}
    cast_name = f"{pixels}_cast"
    while cast_name in taken:
        cast_name += "_"
    prefix = [helper.make_node("Cast", [pixels], [inp.name], to=TensorProto.FLOAT, name=cast_name)]
    idx = list(graph.input).index(inp)
    graph.input.remove(inp)
    graph.input.insert(idx, new_input)
    for node in reversed(prefix):
        graph.node.insert(0, node)
    # bytes() of bytes is the same object; it types protobuf's untyped result
    return bytes(model.SerializeToString())


def _subgraph_reads(nodes: Sequence[object]) -> set[str]:
    """Every value name read by nodes inside subgraphs (If/Loop/Scan bodies),
    at any depth: those see outer-scope values by name."""
    names: set[str] = set()
    for node in nodes:
        for attr in node.attribute:  # type: ignore[attr-defined]
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sub in subs:
                for inner in sub.node:
                    names.update(inner.input)
                names |= _subgraph_reads(sub.node)
    return names
