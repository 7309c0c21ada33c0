"""EngineConfig validation and create_engine runtime selection."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from perception.core.engines.cache import CachedEngine
from perception.core.engines.config import EngineConfig, EngineConfigError
from perception.core.engines.factory import check_runtime, create_engine
from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception.core.engines.testing import write_tiny_model
from perception.core.errors import EngineError, ModelFileError, RuntimeUnavailableError

pytest.importorskip("onnxruntime")


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_path": ""}, "model_path"),
        ({"model_path": "m.onnx", "runtime": "openvino"}, "runtime"),
        ({"model_path": "m.onnx", "precision": "bf16"}, "precision"),
        ({"model_path": "m.onnx", "device": "gpu"}, "device"),
        ({"model_path": "m.onnx", "fallback_device": "tpu"}, "device"),
        ({"model_path": "m.onnx", "runtime": "tensorrt", "device": "cpu"}, "cuda"),
        ({"model_path": "m.pt2", "runtime": "torch_tensorrt", "device": "cpu"}, "cuda"),
        ({"model_path": "m.pt"}, "onnx"),
        ({"model_path": "m.onnx", "precision": "fp16"}, "TensorrtExecutionProvider"),
        ({"model_path": "m.txt", "runtime": "tensorrt", "device": "cuda"}, "plan"),
        ({"model_path": "m.onnx", "runtime": "torch"}, "TorchScript"),
        ({"model_path": "m.pt", "runtime": "torch", "precision": "int8"}, "precision"),
        (
            {
                "model_path": "m.onnx",
                "runtime": "tensorrt",
                "device": "cuda",
                "fallback": "tensorrt",
            },
            "fallback",
        ),
        ({"model_path": "m.pt", "runtime": "torch", "fallback": "onnxruntime"}, "fallback"),
        (
            {
                "model_path": "m.pt2",
                "runtime": "torch_tensorrt",
                "device": "cuda",
                "fallback": "onnxruntime",
            },
            "fallback_model_path",
        ),
        ({"model_path": "m.onnx", "build_input_shape": (1, 3, 640)}, "build_input_shape"),
        ({"model_path": "m.onnx", "build_input_shape": (1, 3, 0, 640)}, "build_input_shape"),
        ({"model_path": "m.onnx", "threads": 0}, "threads"),
        ({"model_path": "m.onnx", "providers": "CPUExecutionProvider"}, "providers"),
    ],
)
def test_config_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(EngineConfigError, match=match) as err:
        EngineConfig(**kwargs)
    assert isinstance(err.value, ValueError) and isinstance(err.value, EngineError)
    assert "\n" not in str(err.value)


def test_config_accepts_and_normalises() -> None:
    c = EngineConfig(
        model_path=Path("m.onnx"),  # type: ignore[arg-type]
        runtime="tensorrt",
        device="cuda:1",
        precision="fp16",
        fallback="onnxruntime",
        build_input_shape=[6, 3, 384, 640],  # type: ignore[arg-type]
        providers=["CPUExecutionProvider"],  # type: ignore[arg-type]
    )
    assert c.model_path == "m.onnx" and c.build_input_shape == (6, 3, 384, 640)
    assert c.providers == ("CPUExecutionProvider",) and c.uses_cache and not c.is_plan
    assert EngineConfig("m.engine", runtime="tensorrt", device="cuda").is_plan
    assert not EngineConfig("m.onnx").uses_cache
    assert EngineConfig("m.onnx", cache_dir="/tmp/x").uses_cache
    ok = EngineConfig(
        "m.pt2",
        runtime="torch_tensorrt",
        device="cuda",
        fallback="onnxruntime",
        fallback_model_path="m.onnx",
    )
    assert ok.fallback_model_path == "m.onnx"


def test_from_mapping() -> None:
    c = EngineConfig.from_mapping(
        {
            "model_path": "m.onnx",
            "cache_dir": "",
            "fallback": "",
            "build_input_shape": [],
            "threads": 0,
            "providers": [],
        }
    )
    assert c.cache_dir is None and c.fallback is None and c.build_input_shape is None
    assert c.threads is None and c.providers == ()
    with pytest.raises(EngineConfigError, match=r"unknown keys \['runtim'\]"):
        EngineConfig.from_mapping({"model_path": "m.onnx", "runtim": "torch"})


# ---------------------------------------------------------------- factory


def test_onnxruntime_plain(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    eng = create_engine(EngineConfig(str(tm.path), threads=1))
    assert isinstance(eng, OnnxRuntimeEngine) and eng.info.runtime == "onnxruntime"
    x = np.ones((2, 3, 4, 4), np.float32)
    np.testing.assert_allclose(eng.infer(x)[1], tm.expected(x)[1], rtol=1e-5)


def test_onnxruntime_cached_with_fallback(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    cfg = EngineConfig(
        str(tm.path), cache_dir=str(tmp_path / "cache"), fallback="onnxruntime", threads=1
    )
    seen = []
    eng = create_engine(cfg, on_progress=seen.append)
    assert isinstance(eng, CachedEngine)
    assert eng.wait(30) and eng.status.stage == "ready" and eng.status.serving == "build"
    assert any(s.serving == "fallback" for s in seen)
    again = create_engine(cfg)
    assert isinstance(again, CachedEngine) and again.status.serving == "cache"
    x = np.ones((1, 3, 4, 4), np.float32)
    np.testing.assert_allclose(again.infer(x)[0], tm.expected(x)[0], rtol=1e-5)
    eng.close()
    again.close()


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        create_engine(EngineConfig(str(tmp_path / "none.onnx")))


@pytest.mark.parametrize(
    ("config", "hidden", "match"),
    [
        (dict(model_path="m.onnx"), "onnxruntime", "pip install onnxruntime"),
        (dict(model_path="m.pt", runtime="torch"), "torch", "pip install torch"),
        (
            dict(model_path="m.onnx", runtime="tensorrt", device="cuda"),
            "tensorrt",
            "pip install tensorrt",
        ),
        (
            dict(model_path="m.engine", runtime="tensorrt", device="cuda"),
            "tensorrt",
            "python3-libnvinfer",
        ),
        (
            dict(model_path="m.pt2", runtime="torch_tensorrt", device="cuda"),
            "torch_tensorrt",
            "pip install torch",  # torch-tensorrt, or torch itself where torch is missing too
        ),
        (
            dict(model_path="m.pt2", runtime="torch_tensorrt", device="cuda"),
            "torch",
            "pip install torch",
        ),
        (
            dict(
                model_path="m.onnx",
                cache_dir="unused",
                fallback="torch",
                fallback_model_path="m.pt",
            ),
            "torch",
            "pip install torch",
        ),
    ],
)
def test_missing_runtime_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config: dict, hidden: str, match: str
) -> None:
    # a None entry in sys.modules makes `import <name>` raise ImportError
    monkeypatch.setitem(sys.modules, hidden, None)
    cfg = EngineConfig(**config)
    with pytest.raises(RuntimeUnavailableError, match=match) as err:
        create_engine(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_check_runtime_unknown() -> None:
    with pytest.raises(EngineError, match="unknown runtime"):
        check_runtime("openvino")
