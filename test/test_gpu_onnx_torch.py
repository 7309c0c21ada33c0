"""The ONNX->torch converter (perception/core/engines/onnx_torch.py) against
ONNX Runtime: every model the project ships or tests with, and single
operators. Needs torch and onnx (the project venv has no torch: these skip
there; run them in a venv with torch, README 'What was verified where').
CUDA variants run where a CUDA device is present (bench/gpu_check.py runs
them on the GPU machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (optional runtime)")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from perception.core.engines.onnx_torch import (  # noqa: E402
    OnnxTorchModel,
    UnsupportedModelError,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "test" / "fixtures" / "reference"
MODELS = [REPO / "models" / "default_detector.onnx", *sorted(FIXTURES.glob("*.onnx"))]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]  # fmt: skip


@pytest.fixture(autouse=True)
def _float32_on_cuda() -> Any:
    """float32 means float32 on CUDA too: torch lets cuDNN convolutions use
    TF32 by default (TorchEngine turns that off for fp32; these tests call
    the converter directly)."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    torch.backends.cudnn.allow_tf32 = conv
    torch.set_float32_matmul_precision(matmul)


def _shapes(session: Any) -> list[tuple[int, int, int, int]]:
    dims = session.get_inputs()[0].shape
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
    if all(fixed):
        return [tuple(fixed)]
    c, h, w = fixed[1] or 3, fixed[2] or 320, fixed[3] or 256
    return [(1, c, h, w), (2, c, h, w)] if fixed[0] is None else [(fixed[0], c, h, w)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_model_outputs_match_onnxruntime(path: Path, device: str) -> None:
    if not path.exists():
        pytest.skip(f"{path} absent")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = OnnxTorchModel(path).to(device)
    name = session.get_inputs()[0].name
    for shape in _shapes(session):
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        want = session.run(None, {name: x})
        for _ in range(2):  # the first call plans, the second replays the plan
            got = [t.cpu().numpy() for t in model(torch.from_numpy(x).to(device))]
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                assert g.shape == w.shape and g.dtype == w.dtype
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=5e-3)


def test_dynamic_export_keeps_shape_arithmetic_on_the_host() -> None:
    """A dynamic-shape export computes its anchors from Shape: those nodes run
    once per input signature on the CPU; later calls run only image nodes."""
    model = OnnxTorchModel(FIXTURES / "yolo11t_dynamic.onnx")
    assert model.static_node_count > 50
    x = torch.rand(1, 3, 320, 256)
    first = model(x)[0]
    plan = next(iter(model._plans.values()))
    assert len(plan.steps) == model.node_count - model.static_node_count
    assert torch.equal(model(x)[0], first)
    model(torch.rand(2, 3, 256, 320))
    assert len(model._plans) == 2


def test_half_precision_default_detector() -> None:
    """float16 weights and compute: boxes (input pixels) within 0.5 px."""
    path = REPO / "models" / "default_detector.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, 3, 384, 640), dtype=np.float32)
    want = session.run(None, {"images": x})[0]
    got = OnnxTorchModel(path).half()(torch.from_numpy(x).half())[0]
    assert got.dtype == torch.float16
    assert np.abs(got.float().numpy()[:, :4] - want[:, :4]).max() < 0.5


# ---------------------------------------------------------------- single operators
def _graph(
    op: str,
    inputs: dict[str, np.ndarray],
    consts: dict[str, np.ndarray],
    attrs: dict[str, Any],
    n_out: int = 1,
    opset: int = 17,
    order: list[str] | None = None,
) -> bytes:
    names = order or [*inputs, *consts]
    node = helper.make_node(op, names, [f"y{i}" for i in range(n_out)], **attrs)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(
            f"y{i}", TensorProto.INT64 if (op, i) == ("TopK", 1) else TensorProto.FLOAT, None)
         for i in range(n_out)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


R = np.random.default_rng(3)
X = R.standard_normal((2, 4, 9, 11)).astype(np.float32)
I64 = np.int64
OPS: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any], int, int]] = [
    ("Relu", {"x": X}, {}, {}, 1, 17),
    ("LeakyRelu", {"x": X}, {}, {"alpha": 0.2}, 1, 17),
    ("HardSigmoid", {"x": X}, {}, {"alpha": 0.3, "beta": 0.4}, 1, 17),
    ("HardSwish", {"x": X}, {}, {}, 1, 17),
    ("Erf", {"x": X}, {}, {}, 1, 17),
    ("Clip", {"x": X}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)},
     {}, 1, 17),
    ("Conv", {"x": X}, {"w": R.standard_normal((3, 4, 3, 2)).astype(np.float32)},
     {"pads": [1, 0, 2, 1], "strides": [2, 1]}, 1, 17),
    ("Conv", {"x": X}, {"w": R.standard_normal((4, 1, 3, 3)).astype(np.float32)},
     {"auto_pad": "SAME_UPPER", "group": 4, "strides": [2, 2]}, 1, 17),
    ("ConvTranspose", {"x": X}, {"w": R.standard_normal((4, 2, 3, 3)).astype(np.float32)},
     {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 0]}, 1, 17),
    ("MaxPool", {"x": X}, {}, {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER",
     "strides": [2, 2]}, 1, 17),
    ("AveragePool", {"x": X}, {}, {"kernel_shape": [3, 2], "pads": [1, 0, 1, 0],
     "count_include_pad": 0}, 1, 17),
    ("GlobalAveragePool", {"x": X}, {}, {}, 1, 17),
    ("BatchNormalization", {"x": X}, {
        "s": R.random(4).astype(np.float32), "b": R.random(4).astype(np.float32),
        "m": R.random(4).astype(np.float32), "v": R.random(4).astype(np.float32) + 0.5},
     {"epsilon": 1e-3}, 1, 17),
    ("ReduceMean", {"x": X}, {}, {"axes": [1, -1], "keepdims": 0}, 1, 13),
    ("ReduceSum", {"x": X}, {"a": np.array([2], I64)}, {"keepdims": 1}, 1, 17),
    ("ReduceMax", {"x": X}, {"a": np.array([0, 3], I64)}, {}, 1, 18),
    ("Softmax", {"x": X}, {}, {"axis": 1}, 1, 11),
    ("LogSoftmax", {"x": X}, {}, {"axis": 2}, 1, 17),
    ("Resize", {"x": X}, {"roi": np.zeros(0, np.float32),
     "sc": np.array([1, 1, 1.5, 0.5], np.float32)},
     {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, 1, 17),
    ("Resize", {"x": X}, {"roi": np.zeros(0, np.float32),
     "sc": np.array([1, 1, 2.0, 3.0], np.float32)},
     {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
      "nearest_mode": "round_prefer_ceil"}, 1, 17),
    ("Slice", {"x": X}, {"s": np.array([8, -1], I64), "e": np.array([0, -100], I64),
     "a": np.array([2, 3], I64), "st": np.array([-2, -3], I64)}, {}, 1, 17),
    ("Gather", {"x": X}, {"i": np.array([[-1, 0], [2, 1]], I64)}, {"axis": 1}, 1, 17),
    ("Flatten", {"x": X}, {}, {"axis": 2}, 1, 17),
    ("Tile", {"x": X}, {"r": np.array([1, 2, 1, 3], I64)}, {}, 1, 17),
    ("Pad", {"x": X}, {"p": np.array([0, 1, 2, 0, 0, 0, 1, 3], I64),
     "v": np.array(0.5, np.float32)}, {"mode": "constant"}, 1, 17),
    ("Split", {"x": X}, {}, {"axis": 3, "num_outputs": 3}, 3, 18),
    ("TopK", {"x": X}, {"k": np.array([3], I64)}, {"axis": 2}, 2, 17),
    ("Gemm", {"a": R.random((5, 3)).astype(np.float32)},
     {"b": R.random((4, 3)).astype(np.float32), "c": R.random(4).astype(np.float32)},
     {"transB": 1, "alpha": 0.5, "beta": 2.0}, 1, 17),
    ("LayerNormalization", {"x": X}, {"s": R.random(11).astype(np.float32),
     "b": R.random(11).astype(np.float32)}, {"axis": -1, "epsilon": 1e-5}, 1, 17),
    ("Where", {"c": X > 0, "x": X}, {"y": np.array(-1.0, np.float32)}, {}, 1, 17),
    ("Max", {"x": X}, {"y": np.float32(0.1) * np.ones((11,), np.float32)}, {}, 1, 17),
]  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("op", "inputs", "consts", "attrs", "n_out", "opset"),
    OPS,
    ids=[f"{o[0]}-{i}" for i, o in enumerate(OPS)],
)
def test_single_operator(
    op: str,
    inputs: dict[str, np.ndarray],
    consts: dict[str, np.ndarray],
    attrs: dict[str, Any],
    n_out: int,
    opset: int,
    device: str,
) -> None:
    blob = _graph(op, inputs, consts, attrs, n_out, opset)
    want = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, inputs)
    model = OnnxTorchModel(blob).to(device)
    got = model(*(torch.from_numpy(v).to(device) for v in inputs.values()))
    tol = 1e-5 if device == "cpu" else 1e-4  # cuDNN sums in another order
    for g, w in zip(got, want, strict=True):
        assert tuple(g.shape) == w.shape
        np.testing.assert_allclose(g.cpu().numpy(), w, rtol=tol, atol=tol)


def test_unsupported_operator_is_named() -> None:
    blob = _graph("NonZero", {"x": X}, {}, {})
    with pytest.raises(UnsupportedModelError, match="NonZero"):
        OnnxTorchModel(blob)


def test_data_dependent_shape_refused_at_load() -> None:
    """A Reshape whose target shape is computed from image values cannot be
    planned (nor captured in a CUDA graph): refused when loading."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    nodes = [
        helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64),
        helper.make_node("Slice", ["xi", "s", "e"], ["shape"]),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0], I64), "s"),
         numpy_helper.from_array(np.array([2], I64), "e")],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match="data-dependent"):
        OnnxTorchModel(model)
