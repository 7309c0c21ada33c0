"""TensorRT plans: build from ONNX through the cache, load, run.

The GPU tests run only where `tensorrt`, a CUDA build of torch and a CUDA
device are present; elsewhere they skip and only the "runtime missing" checks
run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perception.core.engines.cache import BuildStatus, CachedEngine
from perception.core.engines.tensorrt_engine import TensorRTBuilder, TensorRTEngine
from perception.core.engines.testing import TinyModel, write_tiny_model
from perception.core.errors import InputImageError, ModelFileError, RuntimeUnavailableError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_without_tensorrt_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(RuntimeUnavailableError, match="pip install tensorrt"):
        TensorRTEngine(tmp_path / "m.plan")
    with pytest.raises(RuntimeUnavailableError, match="python3-libnvinfer"):
        TensorRTBuilder("cuda:0", "fp16", (1, 3, 64, 64)).runtime_version()


@pytest.fixture(scope="module")
def gpu() -> Any:
    pytest.importorskip("tensorrt", reason="tensorrt not installed (GPU machines only)")
    torch = pytest.importorskip("torch", reason="TensorRT engines use torch CUDA buffers")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch


@pytest.fixture
def tiny(tmp_path: Path) -> TinyModel:
    return write_tiny_model(tmp_path / "tiny.onnx", metadata={"names": "{0: 'a'}"})


def _x(b: int, h: int = 8, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((b, 3, h, w), dtype=np.float32)


def _close(got: list[np.ndarray], want: list[np.ndarray], tol: float) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-3), ("fp16", 2e-2)])
def test_build_load_run_dynamic_batch(
    gpu: Any, tiny: TinyModel, tmp_path: Path, precision: str, tol: float
) -> None:
    seen: list[BuildStatus] = []
    builder = TensorRTBuilder(
        "cuda:0", precision, (4, 3, 8, 10), metadata={"names": "{0: 'a'}"}, name="tiny"
    )
    eng = CachedEngine(
        tiny.path, builder, tmp_path / "c", on_progress=seen.append, background=False
    )
    assert eng.status.stage == "ready", eng.status
    info = eng.info
    assert info.runtime == "tensorrt" and info.device == "cuda:0" and info.name == "tiny"
    assert info.input_shape == (-1, 3, 8, 10) and info.max_batch == 4
    assert info.metadata == {"names": "{0: 'a'}"}
    for b in (1, 4, 6, 9):  # within the profile, and chunked above it
        x = _x(b, seed=b)
        _close(eng.infer(x), tiny.expected(x), tol)
    assert any(s.stage == "building" for s in seen)
    with pytest.raises(InputImageError, match="height"):
        eng.infer(_x(1, h=16))
    eng.close()
    again = CachedEngine(
        tiny.path, TensorRTBuilder("cuda:0", precision, (4, 3, 8, 10)), tmp_path / "c"
    )
    assert again.status.serving == "cache"
    again.close()


def test_fixed_batch_plan_pads(gpu: Any, tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "fixed.onnx", batch=2, height=8, width=10)
    eng = CachedEngine(tm.path, TensorRTBuilder("cuda:0", "fp32"), tmp_path / "c", background=False)
    assert eng.info.input_shape == (2, 3, 8, 10)
    for b in (1, 3, 5):
        x = _x(b, seed=b)
        _close(eng.infer(x), tm.expected(x), 1e-3)
    eng.close()


def test_dynamic_model_without_build_shape_fails_cleanly(
    gpu: Any, tiny: TinyModel, tmp_path: Path
) -> None:
    eng = CachedEngine(
        tiny.path, TensorRTBuilder("cuda:0", "fp32"), tmp_path / "c", background=False
    )
    assert eng.status.stage == "failed" and "build_input_shape" in (eng.status.error or "")


def test_corrupt_plan_is_model_file_error(gpu: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"\x00" * 1024)
    with pytest.raises(ModelFileError, match="deserialize"):
        TensorRTEngine(bad)
    with pytest.raises(ModelFileError, match="not found"):
        TensorRTEngine(tmp_path / "none.plan")


def test_real_model_fp16_close_to_onnxruntime(gpu: Any, tmp_path: Path) -> None:
    model = DATA / "yolox_nano.onnx"
    if not model.is_file():
        pytest.skip(f"real model absent: {model}")
    ort = pytest.importorskip("perception.core.engines.onnxruntime_engine")
    eng = CachedEngine(model, TensorRTBuilder("cuda:0", "fp16"), tmp_path / "c", background=False)
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 416, 416)).astype(np.float32)
    (got,) = eng.infer(x)
    (ref,) = ort.OnnxRuntimeEngine(model).infer(x)
    # objectness/class columns are sigmoid outputs: fp16 keeps them within 1e-2
    np.testing.assert_allclose(got[..., 4:], ref[..., 4:], atol=1e-2)
    eng.close()
