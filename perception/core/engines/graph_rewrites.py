"""Exact graph rewrites that make a model cheaper for ONNX Runtime's CPU provider.

The one rewrite here is the box head of Ultralytics YOLOv8 / YOLO11 exports
("DFL": each box side is the expectation of a 16-bin distribution). The
export writes it as

    X (B, 4, 16, A) -> Transpose(0, 2, 1, 3) -> Softmax(axis=1) -> Conv 1x1 (16 -> 1, weights 0..15)

and ONNX Runtime's CPU Softmax over a non-last axis transposes, then runs one
16-element softmax per row: on the 2-core CPU of this project that single node
took 1.8 of the 14 ms of a YOLO11n run at 640x384 (12.4 of 85 ms at batch 6),
per ONNX Runtime's own profiler. The same value written with whole-tensor
operations along the bin axis of X,

    m = ReduceMax(X); e = Exp(X - m); y = ReduceSum(e * w) / ReduceSum(e)

(w the convolution's weights; then the Conv's (B, 1, 4, A) layout back with a
Transpose of a size-1 axis), is the same softmax-weighted sum, shifted by the
maximum like ONNX's Softmax so nothing overflows. It differs only in float
rounding (3e-5 px in the box coordinates of a 640x384 YOLO11n) and made the
whole YOLO11n run 14-16 % faster (bench/bench_detection.py, bare.rw/bare).
NaN/inf propagate as in the original (NaN boxes reach the decoder, which
counts or raises them).

A graph that does not match exactly (another layout, a bias on the 1x1 Conv, a
float16 model, Softmax before opset 13, whose axis semantics differ) is left
as it is. Needs the `onnx` package.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perception.core.engines.pixel_input import _subgraph_reads

__all__ = ["rewrite_dfl"]


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _is_plain_1x1_conv(conv: Any, inits: dict[str, Any]) -> np.ndarray | None:
    """The (C,) weights of a bias-free 1x1, 1-output-channel, ungrouped,
    unpadded, stride-1 float32 Conv whose weights are an initializer."""
    from onnx import TensorProto, numpy_helper

    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.input) != 2:
        return None
    a = _attrs(conv)
    if a.get("group", 1) != 1 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    if any(v != 1 for v in a.get("strides", [1, 1])) or any(
        v != 1 for v in a.get("dilations", [1, 1])
    ):
        return None
    if any(v != 0 for v in a.get("pads", [0, 0, 0, 0])) or a.get("kernel_shape", [1, 1]) != [1, 1]:
        return None
    w = inits.get(conv.input[1])
    if w is None or w.data_type != TensorProto.FLOAT or w.data_location == TensorProto.EXTERNAL:
        return None
    if len(w.dims) != 4 or w.dims[0] != 1 or w.dims[2] != 1 or w.dims[3] != 1:
        return None
    return numpy_helper.to_array(w).reshape(-1).astype(np.float32)


def _all_names(graph: Any) -> set[str]:
    """Every value name in the graph and its subgraphs, at any depth (new
    names must not collide with any of them)."""
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {t.name for t in graph.initializer} | {v.name for v in graph.value_info}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names |= _all_names(sub)
    names.discard("")
    return names


def rewrite_dfl(model_bytes: bytes) -> tuple[bytes, int]:
    """Return (model, number of DFL heads rewritten); the input bytes and 0
    when nothing matched. Raises ImportError without the onnx package and
    whatever onnx raises for a model it cannot parse."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_model_from_string(model_bytes)
    opset = _opset(model)
    if opset < 13:  # Softmax flattened to 2-D before opset 13: other semantics
        return model_bytes, 0
    graph = model.graph
    if any(t.data_location == TensorProto.EXTERNAL for t in graph.initializer):
        return model_bytes, 0  # weights in side files: bytes alone could not be loaded
    nodes = list(graph.node)
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # values a subgraph (If/Loop body) reads by name, and graph outputs, must stay
    outputs = {o.name for o in graph.output} | _subgraph_reads(nodes)
    # weights listed as graph inputs can be overridden at run time: not baked in
    graph_inputs = {i.name for i in graph.input}
    names = _all_names(graph)

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.add(name)
        return name

    count = 0
    for sm in nodes:
        if sm.op_type != "Softmax" or sm.domain not in ("", "ai.onnx"):
            continue
        if _attrs(sm).get("axis", -1) not in (1, -3):
            continue
        tr = producer.get(sm.input[0])
        if (
            tr is None
            or tr.op_type != "Transpose"
            or list(_attrs(tr).get("perm", [])) != [0, 2, 1, 3]
        ):
            continue
        users = consumers.get(sm.output[0], [])
        if len(users) != 1 or len(consumers.get(tr.output[0], [])) != 1:
            continue
        if sm.output[0] in outputs or tr.output[0] in outputs:
            continue
        conv = users[0]
        if conv.input[1] in graph_inputs:
            continue
        weights = _is_plain_1x1_conv(conv, inits)
        if weights is None:
            continue
        x, y = tr.input[0], conv.output[0]
        prefix = (sm.name or "dfl") + "/rewrite"
        bins = fresh(prefix + "/weights")
        axis = fresh(prefix + "/axis")
        graph.initializer.append(numpy_helper.from_array(weights.reshape(1, 1, -1, 1), bins))
        graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), axis))
        t = {
            k: fresh(f"{prefix}/{k}")
            for k in ("max", "shifted", "exp", "den", "weighted", "num", "mean")
        }
        if opset >= 18:
            rmax = helper.make_node("ReduceMax", [x, axis], [t["max"]], keepdims=1)
        else:
            rmax = helper.make_node("ReduceMax", [x], [t["max"]], axes=[2], keepdims=1)
        new = [
            rmax,
            helper.make_node("Sub", [x, t["max"]], [t["shifted"]]),
            helper.make_node("Exp", [t["shifted"]], [t["exp"]]),
            helper.make_node("ReduceSum", [t["exp"], axis], [t["den"]], keepdims=1),
            helper.make_node("Mul", [t["exp"], bins], [t["weighted"]]),
            helper.make_node("ReduceSum", [t["weighted"], axis], [t["num"]], keepdims=1),
            helper.make_node("Div", [t["num"], t["den"]], [t["mean"]]),
            # (B, 4, 1, A) -> the Conv's (B, 1, 4, A)
            helper.make_node("Transpose", [t["mean"]], [y], perm=[0, 2, 1, 3]),
        ]
        for i, n in enumerate(new):
            n.name = fresh(f"{prefix}/{n.op_type}_{i}")
        at = list(graph.node).index(tr)
        for old in (tr, sm, conv):
            graph.node.remove(old)
        for i, n in enumerate(new):
            graph.node.insert(at + i, n)
        stale = {tr.output[0], sm.output[0]}
        for vi in [v for v in graph.value_info if v.name in stale]:
            graph.value_info.remove(vi)
        w = conv.input[1]
        if w not in outputs and not any(w in n.input for n in graph.node):
            graph.initializer.remove(inits.pop(w))
        count += 1
    if count == 0:
        return model_bytes, 0
    return model.SerializeToString(), count
