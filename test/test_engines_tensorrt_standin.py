"""TensorRTEngine / TensorRTBuilder control flow against a stand-in `tensorrt`.

TensorRT cannot be installed on CPU-only machines, so this module fakes the
small part of the TensorRT 10 Python API our code calls (Runtime, ICudaEngine
tensor queries, IExecutionContext with set_input_shape / set_tensor_address /
execute_async_v3, Builder / OnnxParser / optimisation profile / progress
monitor) and runs the real engine and builder code on CPU torch tensors:
the "engine" executes the ONNX model with ONNX Runtime, reading and writing
the raw buffer addresses our code binds. It proves our buffer binding,
chunking, profile handling, progress and cache integration; it proves
nothing about TensorRT itself (see test_engines_tensorrt.py for that).
Needs torch (CPU is enough) and onnxruntime.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perception.core.engines import tensorrt_engine as te
from perception.core.engines.cache import BuildStatus, CachedEngine
from perception.core.engines.onnx_proto import read_onnx_io
from perception.core.engines.testing import write_tiny_model
from perception.core.errors import EngineError, InputImageError, ModelFileError

MAGIC = b"FAKEPLAN"


def _fake_tensorrt(ort: Any) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.0-standin"

    class ILogger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self) -> None:
            pass

    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"

    class DataType:
        FLOAT, HALF, INT32 = "float", "half", "int32"

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addr: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            lo, hi = self.engine.profile[0], self.engine.profile[2]
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                return False
            outs = self.engine.session.run(None, {name: np.zeros(shape, np.float32)})
            self.shapes = {o.name: r.shape for o, r in zip(self.engine.outputs, outs, strict=True)}
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.shapes[name]

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addr[name] = int(ptr)

        def execute_async_v3(self, stream: int) -> bool:
            def view(name: str) -> np.ndarray:
                shape = self.shapes[name]
                n = int(np.prod(shape))
                buf = (ctypes.c_float * n).from_address(self.addr[name])
                return np.ctypeslib.as_array(buf).reshape(shape)

            x = view(self.engine.input).copy()
            outs = self.engine.session.run(None, {self.engine.input: x})
            for o, r in zip(self.engine.outputs, outs, strict=True):
                view(o.name)[...] = r
            self.engine.executions.append(x.shape[0])
            return True

    class Engine:
        def __init__(self, plan: dict) -> None:
            self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
            self.outputs = self.session.get_outputs()
            self.shape = tuple(plan["shape"])
            self.profile = [tuple(p) for p in plan["profile"]] or [self.shape] * 3
            self.flags = plan["flags"]
            self.executions: list[int] = []
            self.names = [self.input, *(o.name for o in self.outputs)]
            trt.last_engine = self

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.INPUT if name == self.input else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name == self.input:
                return self.shape
            o = next(o for o in self.outputs if o.name == name)
            return tuple(d if isinstance(d, int) else -1 for d in o.shape)

        def get_tensor_dtype(self, name: str) -> str:
            return DataType.FLOAT

        def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
            assert name == self.input and index == 0
            return self.profile

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            if not data.startswith(MAGIC):
                self.logger.log(ILogger.ERROR, "stand-in: bad magic")
                return None
            return Engine(json.loads(data[len(MAGIC) :]))

    class Network:
        def __init__(self) -> None:
            self.inputs: list[Any] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Any:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network = network
            self.errors: list[str] = []

        def parse_from_file(self, path: str) -> bool:
            inputs, _, _ = read_onnx_io(path)
            self.network.onnx = path
            self.network.inputs = [
                types.SimpleNamespace(name=i.name, shape=i.shape) for i in inputs
            ]
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list] = {}

        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class Config:
        def __init__(self) -> None:
            self.flags: list[str] = []
            self.profiles: list[Profile] = []
            self.progress_monitor: Any = None
            self.pools: dict[str, int] = {}

        def set_flag(self, flag: str) -> None:
            self.flags.append(flag)

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.pools[pool] = size

        def add_optimization_profile(self, profile: Profile) -> None:
            self.profiles.append(profile)

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            assert flags == 0
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            mon = config.progress_monitor
            if mon is not None:
                mon.phase_start("Building engine", None, 4)
                for step in range(4):
                    mon.phase_start("Tactic search", "Building engine", 2)
                    mon.step_complete("Tactic search", 0)
                    mon.phase_finish("Tactic search")
                    if not mon.step_complete("Building engine", step):
                        return None
                mon.phase_finish("Building engine")
            inp = network.get_input(0)
            profile = config.profiles[0].shapes[inp.name] if config.profiles else []
            plan = {
                "onnx": network.onnx,
                "shape": list(inp.shape),
                "profile": profile,
                "flags": config.flags,
            }
            return MAGIC + json.dumps(plan).encode()

    trt.ILogger, trt.TensorIOMode, trt.DataType = ILogger, TensorIOMode, DataType
    trt.IProgressMonitor, trt.Runtime, trt.Builder, trt.OnnxParser = (
        IProgressMonitor,
        Runtime,
        Builder,
        OnnxParser,
    )
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    return trt


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Any:
    torch = pytest.importorskip("torch", reason="the stand-in binds CPU torch buffers")
    ort = pytest.importorskip("onnxruntime")
    trt = _fake_tensorrt(ort)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(te, "_cuda_torch", lambda device: (torch, torch.device("cpu")))
    monkeypatch.setattr(te, "cuda_device_name", lambda device: "StandIn GPU sm00")
    monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: types.SimpleNamespace(cuda_stream=0))
    return trt


def _x(b: int, h: int = 8, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((b, 3, h, w), dtype=np.float32)


def test_build_and_run_dynamic_batch(standin: Any, tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "tiny.onnx", metadata={"names": "{0: 'a'}"})
    seen: list[BuildStatus] = []
    builder = te.TensorRTBuilder(
        "cuda:0",
        "fp16",
        (4, 3, 8, 10),
        workspace_bytes=1 << 20,
        metadata={"names": "{0: 'a'}"},
        name="tiny",
    )
    eng = CachedEngine(tm.path, builder, tmp_path / "c", on_progress=seen.append, background=False)
    assert eng.status.stage == "ready", eng.status
    assert eng.key.device == "StandIn GPU sm00" and eng.key.runtime_version == "10.0.0-standin"
    plan = standin.last_engine
    assert plan.flags == ["FP16"]
    assert plan.profile == [(1, 3, 8, 10), (4, 3, 8, 10), (4, 3, 8, 10)]
    msgs = [s.message for s in seen if s.stage == "building"]
    assert "TensorRT: Building engine" in msgs  # top-level phase only
    assert "TensorRT: Tactic search" not in msgs
    info = eng.info
    assert info.runtime == "tensorrt" and info.name == "tiny" and info.max_batch == 4
    assert info.input_shape == (-1, 3, 8, 10) and info.metadata == {"names": "{0: 'a'}"}
    assert info.output_names == ("features", "pooled")
    for b in (1, 4, 9):
        x = _x(b, seed=b)
        for g, w in zip(eng.infer(x), tm.expected(x), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert standin.last_engine.executions[-3:] == [4, 4, 1]  # 9 = 4 + 4 + 1, no padding
    with pytest.raises(InputImageError, match="expected width=10"):
        eng.infer(_x(1, w=12))
    eng.close()
    with pytest.raises(EngineError, match="closed"):
        eng.infer(_x(1))


def test_int8_flags_and_fixed_batch_padding(standin: Any, tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "fixed.onnx", batch=2, height=8, width=10)
    eng = CachedEngine(
        tm.path, te.TensorRTBuilder("cuda:0", "int8"), tmp_path / "c", background=False
    )
    assert standin.last_engine.flags == ["FP16", "INT8"]
    assert standin.last_engine.profile == [(2, 3, 8, 10)] * 3
    assert eng.info.input_shape == (2, 3, 8, 10)
    x = _x(3)
    for g, w in zip(eng.infer(x), tm.expected(x), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert standin.last_engine.executions[-2:] == [2, 2]  # 3 -> padded to 2 + 2


def test_dynamic_model_needs_build_shape(standin: Any, tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "dyn.onnx")
    eng = CachedEngine(
        tm.path, te.TensorRTBuilder("cuda:0", "fp32"), tmp_path / "c", background=False
    )
    assert eng.status.stage == "failed" and "build_input_shape" in (eng.status.error or "")


def test_close_cancels_through_the_progress_monitor(standin: Any, tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    calls: list[str] = []
    holder: dict[str, CachedEngine] = {}

    def on_progress(st: BuildStatus) -> None:
        calls.append(st.message)
        if st.message == "TensorRT: Building engine" and "eng" in holder:
            holder["eng"].close()  # cancel from inside the build, as a shutdown would

    class Deferred(te.TensorRTBuilder):
        def build(self, model_path, artifact_path, progress):  # type: ignore[no-untyped-def]
            holder["eng"] = eng_ref[0]
            super().build(model_path, artifact_path, progress)

    eng_ref: list[CachedEngine] = []
    builder = Deferred("cuda:0", "fp32", (2, 3, 8, 10))
    eng = CachedEngine.__new__(CachedEngine)
    eng_ref.append(eng)
    CachedEngine.__init__(
        eng, tm.path, builder, tmp_path / "c", on_progress=on_progress, background=False
    )
    assert eng.status.stage == "closed"
    assert eng.current is None and not eng.entry_dir.exists()


def test_bad_plan_is_model_file_error(standin: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"not a plan")
    with pytest.raises(ModelFileError, match=r"cannot deserialize bad\.plan.*bad magic"):
        te.TensorRTEngine(bad)
    empty = tmp_path / "empty.plan"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        te.TensorRTEngine(empty)
