"""Graph rewrites for ONNX Runtime's CPU provider: the YOLOv8/11 box head (DFL).

The rewritten graph must compute what the original computes (float rounding
apart) on real Ultralytics exports and on small DFL graphs with extreme
logits, and anything that does not match the pattern exactly must be left
byte for byte as it was.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="graph rewrites need the onnx package")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from perception.core.detector import Detector  # noqa: E402
from perception.core.engines.config import EngineConfig, EngineConfigError  # noqa: E402
from perception.core.engines.graph_rewrites import rewrite_dfl  # noqa: E402
from perception.core.engines.onnxruntime_engine import (  # noqa: E402
    OnnxRuntimeBuilder,
    OnnxRuntimeEngine,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "test" / "fixtures" / "reference"
YOLO11T = [REFERENCE / "yolo11t_dynamic.onnx", REFERENCE / "yolo11t_fixed.onnx"]


def _session(model: bytes | Path) -> object:
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def _graph_model(
    nodes: list, inits: list, inputs: list, outputs: list, opset: int = 18, value_info: list = ()
) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits, value_info=list(value_info))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _dfl_model(
    *,
    opset: int = 18,
    axis: int = 1,
    perm: tuple[int, ...] = (0, 2, 1, 3),
    bias: bool = False,
    dtype: int = TensorProto.FLOAT,
    softmax_is_output: bool = False,
) -> bytes:
    """x (B, 4, 16, A) -> Transpose -> Softmax -> Conv 1x1 (16 -> 1) -> Relu -> y,
    the shape of Ultralytics' DFL (Relu stands for whatever follows)."""
    np_dtype = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    weights = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1) * 0.5 + 0.25
    inits = [numpy_helper.from_array(weights.astype(np_dtype), "w")]
    conv_in = ["soft", "w"]
    if bias:
        inits.append(numpy_helper.from_array(np.array([0.5], dtype=np_dtype), "b"))
        conv_in.append("b")
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=list(perm), name="tr"),
        helper.make_node("Softmax", ["t"], ["soft"], axis=axis, name="dfl/Softmax"),
        helper.make_node("Conv", conv_in, ["c"], kernel_shape=[1, 1], name="dfl/conv"),
        helper.make_node("Relu", ["c"], ["y"], name="after"),
    ]
    outputs = [helper.make_tensor_value_info("y", dtype, None)]
    if softmax_is_output:
        outputs.append(helper.make_tensor_value_info("soft", dtype, None))
    x = helper.make_tensor_value_info("x", dtype, ["b", 4, 16, "a"])
    return _graph_model(nodes, inits, [x], outputs, opset)


@pytest.mark.parametrize("path", YOLO11T, ids=lambda p: p.stem)
def test_real_export_same_outputs_and_one_head_rewritten(path: Path) -> None:
    """On Ultralytics' own YOLO11 exports the box rows agree within 1e-3 px
    (float rounding of the sums) and the class rows are untouched."""
    original = path.read_bytes()
    rewritten, count = rewrite_dfl(original)
    assert count == 1

    def softmaxes(model: bytes) -> int:
        return sum(n.op_type == "Softmax" for n in onnx.load_model_from_string(model).graph.node)

    assert softmaxes(rewritten) == softmaxes(original) - 1  # the attention ones stay
    a, b = _session(original), _session(rewritten)
    name = a.get_inputs()[0].name  # type: ignore[attr-defined]
    fixed = a.get_inputs()[0].shape  # type: ignore[attr-defined]
    shape = [d if isinstance(d, int) else s for d, s in zip(fixed, (2, 3, 192, 320), strict=True)]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    want = a.run(None, {name: x})[0]  # type: ignore[attr-defined]
    got = b.run(None, {name: x})[0]  # type: ignore[attr-defined]
    assert got.shape == want.shape
    np.testing.assert_allclose(got[:, :4], want[:, :4], atol=1e-3, rtol=0)
    np.testing.assert_array_equal(got[:, 4:], want[:, 4:])


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_small_dfl_graph_exact_for_extreme_logits(opset: int) -> None:
    """Logits of +-300 would overflow exp without the max shift; NaN stays
    NaN; ReduceMax takes its axes as an attribute before opset 18."""
    original = _dfl_model(opset=opset)
    rewritten, count = rewrite_dfl(original)
    assert count == 1
    x = np.random.default_rng(opset).normal(0, 4, (2, 4, 16, 50)).astype(np.float32)
    x[0, 0, :, 0] = 300.0
    x[0, 1, 3, 1] = -300.0
    x[1, 2, 5, 2] = 300.0
    x[1, 3, 7, 3] = np.nan
    want = _session(original).run(None, {"x": x})[0]  # type: ignore[attr-defined]
    got = _session(rewritten).run(None, {"x": x})[0]  # type: ignore[attr-defined]
    assert got.shape == want.shape == (2, 1, 4, 50)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1, 0, 3, 3])
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [
        {"axis": -1},
        {"perm": (0, 1, 3, 2)},
        {"bias": True},
        {"dtype": TensorProto.FLOAT16},
        {"opset": 12},
        {"softmax_is_output": True},
    ],
    ids=["softmax-last-axis", "other-transpose", "conv-bias", "float16", "opset12", "shared"],
)
def test_near_misses_are_left_as_they_are(kw: dict) -> None:
    original = _dfl_model(**kw)
    rewritten, count = rewrite_dfl(original)
    assert count == 0
    assert rewritten is original


def test_models_without_the_head_are_untouched() -> None:
    for path in (REFERENCE / "rtdetr_tiny.onnx", ROOT / "models" / "default_detector.onnx"):
        data = path.read_bytes()
        assert rewrite_dfl(data) == (data, 0)


def test_engine_runs_rewritten_and_can_be_told_not_to() -> None:
    path = YOLO11T[0]
    on = OnnxRuntimeEngine(path)
    off = OnnxRuntimeEngine(path, graph_rewrites=False)
    assert (on.graph_rewrites, off.graph_rewrites) == (1, 0)
    x = np.random.default_rng(1).random((1, 3, 192, 320), dtype=np.float32)
    got, want = on.infer(x)[0], off.infer(x)[0]
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    # the float session is recreated from the rewritten graph after pixel input
    # released it
    det = Detector(on, conf=0.01)
    assert det.preprocessor.pixels
    again = on.infer(x)[0]
    np.testing.assert_array_equal(again, got)


def test_same_detections_with_and_without_rewrites() -> None:
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (270, 480, 3), dtype=np.uint8) for _ in range(2)]
    a = Detector(OnnxRuntimeEngine(YOLO11T[0]), conf=0.001, iou=0.7)
    b = Detector(OnnxRuntimeEngine(YOLO11T[0], graph_rewrites=False), conf=0.001, iou=0.7)
    for da, db in zip(a.detect(images), b.detect(images), strict=True):
        assert len(da) > 50  # a random-weight head: hundreds of low scores
        # boxes may differ by float rounding; compare the confident ones by class
        # and position after NMS
        assert abs(len(da) - len(db)) <= 1
        n = min(len(da), len(db), 50)
        np.testing.assert_allclose(da.xyxy[:n], db.xyxy[:n], atol=0.01)
        np.testing.assert_allclose(da.scores[:n], db.scores[:n], atol=1e-5)


def test_without_onnx_the_model_runs_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    engine = OnnxRuntimeEngine(YOLO11T[0])
    assert engine.graph_rewrites == 0
    x = np.random.default_rng(2).random((1, 3, 192, 320), dtype=np.float32)
    plain = _session(YOLO11T[0]).run(None, {engine.info.input_name: x})[0]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(engine.infer(x)[0], plain)


def test_corrupt_bytes_never_reach_the_session(tmp_path: Path) -> None:
    """A file ONNX Runtime itself rejects still gets ONNX Runtime's error (the
    rewrite step logs and steps aside)."""
    from perception.core.errors import ModelFileError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07" + b"\xff" * 64)
    with pytest.raises(ModelFileError):
        OnnxRuntimeEngine(bad)


def test_config_and_cache_key() -> None:
    cfg = EngineConfig.from_mapping({"model_path": "m.onnx", "graph_rewrites": False})
    assert cfg.graph_rewrites is False
    assert EngineConfig("m.onnx").graph_rewrites is True
    with pytest.raises(EngineConfigError, match="graph_rewrites"):
        EngineConfig("m.onnx", graph_rewrites="yes")  # type: ignore[arg-type]
    on, off = OnnxRuntimeBuilder(), OnnxRuntimeBuilder(graph_rewrites=False)
    assert on.runtime_version() != off.runtime_version()
    assert on.runtime_version().endswith("/rewrites1")


_DFL_NODES = [
    helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
    helper.make_node("Softmax", ["t"], ["soft"], axis=1, name="dfl/Softmax"),
    helper.make_node("Conv", ["soft", "w"], ["c"], kernel_shape=[1, 1]),
]
_W = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), "w")
_X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 16, "a"])
_C = helper.make_tensor_value_info("c", TensorProto.FLOAT, None)


def _if_reading(branch_nodes: list) -> tuple[Any, Any, Any]:
    """(If node always taking a branch of `branch_nodes` that ends in "o",
    its condition initializer, its output "z")."""
    branch = helper.make_graph(
        branch_nodes, "branch", [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)]
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    if_node = helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch)
    return if_node, cond, helper.make_tensor_value_info("z", TensorProto.FLOAT, None)


def _same_outputs(original: bytes, rewritten: bytes) -> None:
    x = np.random.default_rng(0).normal(0, 3, (2, 4, 16, 5)).astype(np.float32)
    for a, b in zip(
        _session(original).run(None, {"x": x}),  # type: ignore[attr-defined]
        _session(rewritten).run(None, {"x": x}),  # type: ignore[attr-defined]
        strict=True,
    ):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_weights_that_are_graph_inputs_are_not_baked_in() -> None:
    """keep_initializers_as_inputs exports: the weight can be overridden at
    run time, so the head is left alone (else it became a required input)."""
    w_in = helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 16, 1, 1])
    original = _graph_model(_DFL_NODES, [_W], [_X, w_in], [_C])
    assert rewrite_dfl(original) == (original, 0)


def test_weights_read_elsewhere_stay_in_the_graph() -> None:
    """Weights that are a graph output or read inside an If body keep their
    initializer; the head is still rewritten and everything still runs."""
    w_out = helper.make_tensor_value_info("w", TensorProto.FLOAT, None)
    as_output = _graph_model(_DFL_NODES, [_W], [_X], [_C, w_out])
    if_node, cond, z = _if_reading([helper.make_node("Identity", ["w"], ["o"])])
    in_subgraph = _graph_model([*_DFL_NODES, if_node], [_W, cond], [_X], [_C, z])
    for original in (as_output, in_subgraph):
        rewritten, count = rewrite_dfl(original)
        assert count == 1
        _same_outputs(original, rewritten)


def test_new_names_avoid_value_info_and_subgraph_names() -> None:
    """A name the rewrite would pick already used by stale value_info (with
    another type) or inside an If body: the rewrite picks another one."""
    taken = "dfl/Softmax/rewrite/max"
    if_node, cond, z = _if_reading(
        [helper.make_node("Neg", ["c"], [taken]), helper.make_node("Identity", [taken], ["o"])]
    )
    stale = helper.make_tensor_value_info(taken + "_1", TensorProto.INT64, None)
    original = _graph_model([*_DFL_NODES, if_node], [_W, cond], [_X], [_C, z], value_info=[stale])
    rewritten, count = rewrite_dfl(original)
    assert count == 1
    _same_outputs(original, rewritten)


def test_broken_onnx_install_never_stops_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An onnx that raises something other than ImportError on import (e.g.
    generated code too old for the installed protobuf) only skips the rewrite,
    and the cache key then does not claim a rewritten build."""
    pkg = tmp_path / "onnx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise TypeError('Descriptors cannot be created directly')\n")
    monkeypatch.delitem(sys.modules, "onnx")
    monkeypatch.syspath_prepend(str(tmp_path))
    engine = OnnxRuntimeEngine(YOLO11T[0])
    assert engine.graph_rewrites == 0
    assert not OnnxRuntimeBuilder().runtime_version().endswith("/rewrites1")


def test_cache_key_claims_rewrites_only_where_they_run() -> None:
    assert OnnxRuntimeBuilder("cpu").runtime_version().endswith("/rewrites1")
    assert not OnnxRuntimeBuilder("cuda").runtime_version().endswith("/rewrites1")
    gpu_first = OnnxRuntimeBuilder(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not gpu_first.runtime_version().endswith("/rewrites1")
