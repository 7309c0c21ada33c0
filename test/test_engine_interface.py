"""What every engine answers through the `Engine` interface (build status,
swaps, graph rewrites, a diagnostics summary) and the device string parsed
once into a `Device`."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from perception.core.engines import BuildStatus, Device, Engine, EngineConfig, EngineInfo
from perception.core.engines.config import EngineConfigError
from perception.core.errors import EngineError

FIX = Path(__file__).resolve().parent / "fixtures" / "reference"
WAIT = 30.0


@pytest.mark.parametrize(
    ("text", "kind", "index", "shown"),
    [
        ("cpu", "cpu", 0, "cpu"),
        ("cuda", "cuda", 0, "cuda:0"),
        ("cuda:1", "cuda", 1, "cuda:1"),
        (" CUDA:2 ", "cuda", 2, "cuda:2"),
    ],
)
def test_device_parse(text: str, kind: str, index: int, shown: str) -> None:
    dev = Device.parse(text)
    assert (dev.kind, dev.index, str(dev)) == (kind, index, shown)
    assert dev.is_cuda == (kind == "cuda")
    assert Device.parse(dev) is dev


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "", "cpu:0:1"])
def test_device_parse_rejects(text: str) -> None:
    with pytest.raises(EngineError, match="'cpu', 'cuda' or 'cuda:N'"):
        Device.parse(text)


def test_engine_config_parses_its_devices_once() -> None:
    cfg = EngineConfig("m.onnx", device="cuda:1", fallback_device="cpu")
    assert cfg.device == "cuda:1"  # the string as given stays
    assert cfg.parsed_device == Device("cuda", 1)
    assert cfg.parsed_fallback_device == Device("cpu")
    assert cfg == EngineConfig("m.onnx", device="cuda:1")
    with pytest.raises(EngineConfigError, match=r"EngineConfig\.device"):
        EngineConfig("m.onnx", device="tpu")
    with pytest.raises(EngineConfigError, match="unknown keys"):
        EngineConfig.from_mapping({"model_path": "m.onnx", "parsed_device": "cpu"})


class _Plain(Engine):
    """An engine that overrides nothing but the two abstract members."""

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("m", "custom", "cpu", "fp32", "x", (1, 3, 8, 8), "float32", ("y",), ())

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return [batch]


def test_defaults_of_the_interface() -> None:
    eng = _Plain()
    assert eng.build_status is None and eng.generation == 0 and eng.graph_rewrites == 0
    assert eng.describe() == {
        "engine": "m",
        "runtime": "custom",
        "device": "cpu",
        "precision": "fp32",
    }


def test_build_status_describe_formats_like_the_diagnostics() -> None:
    st = BuildStatus("building", 0.456, "compiling", "fallback")
    assert st.describe() == {
        "build.stage": "building",
        "build.fraction": "0.46",
        "build.serving": "fallback",
        "build.message": "compiling",
        "build.error": "",
    }


def test_onnxruntime_engine_reports_graph_rewrites() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine

    on = OnnxRuntimeEngine(FIX / "yolo11t_dynamic.onnx", Device("cpu"))
    off = OnnxRuntimeEngine(FIX / "yolo11t_dynamic.onnx", "cpu", graph_rewrites=False)
    assert on.describe()["graph_rewrites"] == str(on.graph_rewrites) == "1"
    assert "graph_rewrites" not in off.describe() and off.build_status is None


def test_cached_engine_answers_through_the_interface(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from perception.core.engines.cache import CachedEngine
    from perception.core.engines.onnxruntime_engine import OnnxRuntimeBuilder
    from perception.core.engines.testing import write_tiny_model

    tiny = write_tiny_model(tmp_path / "tiny.onnx")
    release = threading.Event()

    class Gated(OnnxRuntimeBuilder):
        def build(self, model_path, artifact_path, progress):  # type: ignore[no-untyped-def]
            progress(0.5, "gated")
            if not release.wait(WAIT):
                raise TimeoutError("never released")
            super().build(model_path, artifact_path, progress)

    eng: Engine = CachedEngine(tiny.path, Gated(intra_op_threads=1), tmp_path / "cache")
    try:
        # nothing serves yet (no fallback): describe still answers, from the build
        desc = eng.describe()
        assert desc["engine"] == "tiny" and desc["runtime"] == "onnxruntime"
        assert desc["build.stage"] == "building" and desc["build.serving"] == "none"
        assert eng.generation == 0 and eng.graph_rewrites == 0
        release.set()
        assert isinstance(eng, CachedEngine) and eng.wait(WAIT)
        status = eng.build_status
        assert status is eng.status and status.stage == "ready"
        assert eng.generation == 1
        desc = eng.describe()
        assert (desc["device"], desc["build.serving"], desc["build.fraction"]) == (
            "cpu",
            "build",
            "1.00",
        )
    finally:
        release.set()
        eng.close()
