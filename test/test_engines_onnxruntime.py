"""OnnxRuntimeEngine on real ONNX Runtime (CPU): shapes, batching, bad input."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from perception.core.engines.onnx_proto import Node, ValueInfo, build_model, check_onnx_file
from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception.core.engines.testing import write_tiny_model
from perception.core.errors import (
    EngineError,
    InputImageError,
    ModelFileError,
    RuntimeUnavailableError,
)

ort = pytest.importorskip("onnxruntime")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
YOLOX = DATA / "yolox_nano.onnx"


def _batch(b: int, c: int = 3, h: int = 8, w: int = 10, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((b, c, h, w), dtype=np.float32)


def _close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- info + outputs


def test_dynamic_model_info_and_outputs(tmp_path: Path) -> None:
    meta = {"names": "{0: 'person', 1: 'car'}", "stride": "32", "task": "detect"}
    tm = write_tiny_model(tmp_path / "dyn.onnx", metadata=meta)
    with OnnxRuntimeEngine(tm.path, intra_op_threads=1) as eng:
        info = eng.info
        assert info.runtime == "onnxruntime" and info.device == "cpu" and info.precision == "fp32"
        assert info.name == "dyn" and info.input_name == "images"
        assert info.input_shape == (-1, 3, -1, -1)
        assert info.input_symbols == ("batch", "", "height", "width")
        assert info.dynamic_batch and info.dynamic_hw and info.max_batch == -1
        assert info.output_names == ("features", "pooled")
        assert info.output_shapes == ((-1, 4, -1, -1), (-1, 4))
        assert info.metadata == meta
        assert info.providers == ("CPUExecutionProvider",)
        for b, h, w in [(1, 8, 10), (6, 16, 4)]:
            x = _batch(b, h=h, w=w)
            _close(eng.infer(x), tm.expected(x))


def test_fixed_batch_is_padded_and_chunked(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "fixed.onnx", batch=2, height=8, width=10)
    with OnnxRuntimeEngine(tm.path, intra_op_threads=1) as eng:
        assert eng.info.input_shape == (2, 3, 8, 10)
        assert not eng.info.dynamic_batch and eng.info.max_batch == 2
        for b in (1, 2, 3, 5):  # pad up, exact, pad last chunk, several chunks
            x = _batch(b, seed=b)
            out = eng.infer(x)
            assert [o.shape[0] for o in out] == [b, b]
            _close(out, tm.expected(x))


def test_non_contiguous_batch_is_accepted(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    x = np.asfortranarray(_batch(2))
    with OnnxRuntimeEngine(tm.path, intra_op_threads=1) as eng:
        _close(eng.infer(x), tm.expected(x))


def test_float16_model_takes_float32_and_returns_float32(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "half.onnx", dtype=np.float16)
    with OnnxRuntimeEngine(tm.path, intra_op_threads=1) as eng:
        assert eng.info.precision == "fp16" and eng.info.input_dtype == "float16"
        x = _batch(2)
        got = eng.infer(x)
        want = tm.expected(x.astype(np.float16).astype(np.float32))
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, w, rtol=2e-2, atol=2e-2)


def test_concurrent_infer_from_threads(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    eng = OnnxRuntimeEngine(tm.path, intra_op_threads=1)
    xs = [_batch(2, seed=s) for s in range(4)]
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = eng.infer(xs[i])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    for i, x in enumerate(xs):
        _close(results[i], tm.expected(x))


def test_closed_engine_raises(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    eng = OnnxRuntimeEngine(tm.path)
    eng.close()
    with pytest.raises(EngineError, match="closed"):
        eng.infer(_batch(1))


# ---------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def yolox() -> OnnxRuntimeEngine:
    if not YOLOX.is_file():
        pytest.skip(f"real model absent: {YOLOX} (../shared/data beside the repo)")
    return OnnxRuntimeEngine(YOLOX, intra_op_threads=2)


def test_yolox_info(yolox: OnnxRuntimeEngine) -> None:
    info = yolox.info
    assert info.input_name == "images" and info.input_shape == (1, 3, 416, 416)
    assert info.output_names == ("output",) and info.output_shapes == ((1, 3549, 85),)
    assert info.max_batch == 1 and not info.dynamic_hw


def test_yolox_batch_of_three_matches_single_runs(yolox: OnnxRuntimeEngine) -> None:
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, 416, 416)).astype(np.float32)
    (out,) = yolox.infer(x)
    assert out.shape == (3, 3549, 85) and out.dtype == np.float32
    for i in range(3):
        (ref,) = yolox.session.run(None, {"images": x[i : i + 1]})
        np.testing.assert_array_equal(out[i], ref[0])


def test_yolox_header() -> None:
    if not YOLOX.is_file():
        pytest.skip(f"real model absent: {YOLOX}")
    head = check_onnx_file(YOLOX)
    assert head.ir_version >= 3 and head.opsets.get("") == 11 and head.n_nodes > 100


# ---------------------------------------------------------------- bad model files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        OnnxRuntimeEngine(tmp_path / "nope.onnx")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not a regular file"):
        OnnxRuntimeEngine(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        OnnxRuntimeEngine(p)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_tiny_model(tmp_path: Path, keep: float) -> None:
    full = write_tiny_model(tmp_path / "full.onnx").path.read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(full[: int(len(full) * keep)])
    with pytest.raises(ModelFileError) as err:
        OnnxRuntimeEngine(p)
    assert "\n" not in str(err.value)


def test_truncated_real_model(tmp_path: Path) -> None:
    if not YOLOX.is_file():
        pytest.skip(f"real model absent: {YOLOX}")
    p = tmp_path / "cut.onnx"
    p.write_bytes(YOLOX.read_bytes()[:1_000_000])
    with pytest.raises(ModelFileError, match="truncated"):
        OnnxRuntimeEngine(p)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG"),
        (b"PK\x03\x04" + bytes(100), "zip"),
        (b"hello, this is a text file, not a model\n", "not a valid ONNX"),
        (b'{"model": "yolo"}', "JSON"),
        (np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "ONNX"),
    ],
    ids=["png", "zip", "text", "json", "random"],
)
def test_not_onnx(tmp_path: Path, content: bytes, match: str) -> None:
    p = tmp_path / "model.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelFileError, match=match) as err:
        OnnxRuntimeEngine(p)
    assert "\n" not in str(err.value)


def test_protobuf_that_onnxruntime_rejects_is_wrapped(tmp_path: Path) -> None:
    # structurally fine, but the graph uses an operator that does not exist
    data = build_model(
        [Node("NoSuchOperator", ["x"], ["y"])],
        [ValueInfo("x", np.float32, [1, 3, 4, 4])],
        [ValueInfo("y", np.float32, [1, 3, 4, 4])],
    )
    p = tmp_path / "badop.onnx"
    p.write_bytes(data)
    with pytest.raises(EngineError, match="onnxruntime") as err:
        OnnxRuntimeEngine(p)
    assert "\n" not in str(err.value)


def test_model_with_two_inputs_is_rejected(tmp_path: Path) -> None:
    data = build_model(
        [Node("Add", ["a", "b"], ["y"])],
        [ValueInfo("a", np.float32, [1, 3, 4, 4]), ValueInfo("b", np.float32, [1, 3, 4, 4])],
        [ValueInfo("y", np.float32, [1, 3, 4, 4])],
    )
    p = tmp_path / "two.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelFileError, match="one image input"):
        OnnxRuntimeEngine(p)


def test_model_with_3d_input_is_rejected(tmp_path: Path) -> None:
    data = build_model(
        [Node("Relu", ["a"], ["y"])],
        [ValueInfo("a", np.float32, [3, 4, 4])],
        [ValueInfo("y", np.float32, [3, 4, 4])],
    )
    p = tmp_path / "three.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelFileError, match="4-D"):
        OnnxRuntimeEngine(p)


# ---------------------------------------------------------------- bad batches


@pytest.fixture(scope="module")
def fixed_hw(tmp_path_factory: pytest.TempPathFactory) -> OnnxRuntimeEngine:
    tm = write_tiny_model(tmp_path_factory.mktemp("m") / "m.onnx", height=8, width=10)
    return OnnxRuntimeEngine(tm.path, intra_op_threads=1)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (np.zeros((1, 3, 8, 10), np.float64), "dtype float32, got float64"),
        (np.zeros((1, 3, 8, 10), np.uint8), "dtype float32, got uint8"),
        (np.zeros((1, 4, 8, 10), np.float32), "channels=3 .* got 4"),
        (np.zeros((1, 1, 8, 10), np.float32), "channels=3 .* got 1"),
        (np.zeros((3, 8, 10), np.float32), "4-D .* ndim=3"),
        (np.zeros((1, 1, 3, 8, 10), np.float32), "4-D .* ndim=5"),
        (np.zeros((0, 3, 8, 10), np.float32), "zero-size"),
        (np.zeros((1, 3, 0, 10), np.float32), "zero-size"),
        (np.zeros((1, 3, 16, 10), np.float32), "height=8 .* got 16"),
        ([[1.0]], "numpy.ndarray"),
    ],
    ids=["f64", "u8", "c4", "c1", "ndim3", "ndim5", "b0", "h0", "h16", "list"],
)
def test_bad_batch(fixed_hw: OnnxRuntimeEngine, batch: object, match: str) -> None:
    with pytest.raises(InputImageError, match=match):
        fixed_hw.infer(batch)  # type: ignore[arg-type]


# ---------------------------------------------------------------- providers


def test_cuda_request_without_cuda_raises(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the refusal path needs a CPU-only build")
    tm = write_tiny_model(tmp_path / "m.onnx")
    with pytest.raises(RuntimeUnavailableError, match=r"CUDAExecutionProvider.*onnxruntime-gpu"):
        OnnxRuntimeEngine(tm.path, device="cuda")
    with pytest.raises(RuntimeUnavailableError, match="TensorrtExecutionProvider"):
        OnnxRuntimeEngine(tm.path, device="cuda:0", tensorrt=True)


def test_cuda_fallback_only_when_allowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    tm = write_tiny_model(tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING):
        eng = OnnxRuntimeEngine(tm.path, device="cuda", allow_fallback=True)
    assert eng.info.device == "cpu"
    assert any("allow_fallback" in r.getMessage() for r in caplog.records)
    x = _batch(1)
    _close(eng.infer(x), tm.expected(x))


def test_bad_device_and_precision(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    with pytest.raises(EngineError, match="device"):
        OnnxRuntimeEngine(tm.path, device="gpu0")
    with pytest.raises(EngineError, match="precision"):
        OnnxRuntimeEngine(tm.path, precision="bf16")
    with pytest.raises(EngineError, match="graph_optimization"):
        OnnxRuntimeEngine(tm.path, graph_optimization="max")
    # fp16 cannot be honoured on the CPU provider with a float32 model: refused, not downgraded
    with pytest.raises(EngineError, match="fp16 needs the TensorRT execution provider"):
        OnnxRuntimeEngine(tm.path, precision="fp16")
    assert (
        OnnxRuntimeEngine(tm.path, precision="fp16", allow_fallback=True).info.precision == "fp32"
    )


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu with a working CUDA provider",
)
def test_cuda_matches_cpu(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    x = _batch(6)
    with OnnxRuntimeEngine(tm.path, device="cuda") as gpu:
        assert gpu.info.device == "cuda:0"
        _close(gpu.infer(x), tm.expected(x))
