"""Torch-TensorRT: compile an ExportedProgram through the cache, save, reload.

The GPU tests run only where torch_tensorrt and a CUDA device are present.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perception.core.engines.cache import CachedEngine
from perception.core.engines.testing import write_tiny_model
from perception.core.engines.torch_tensorrt_engine import (
    TorchTensorRTBuilder,
    import_torch_tensorrt,
)
from perception.core.errors import EngineError, RuntimeUnavailableError


def test_without_torch_tensorrt_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)
    with pytest.raises(RuntimeUnavailableError, match="pip install torch"):
        import_torch_tensorrt()


def test_builder_needs_a_full_input_shape() -> None:
    with pytest.raises(EngineError, match="build_input_shape"):
        TorchTensorRTBuilder("cuda:0", "fp16", ())
    with pytest.raises(EngineError, match="precision"):
        TorchTensorRTBuilder("cuda:0", "bf16", (1, 3, 8, 8))
    assert TorchTensorRTBuilder.model_kind_of("m.pt2") == "exported_program"
    assert TorchTensorRTBuilder.model_kind_of("m.torchscript") == "torchscript"


@pytest.fixture(scope="module")
def torch() -> Any:
    pytest.importorskip("torch_tensorrt", reason="torch-tensorrt not installed (GPU machines)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch


@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-3), ("fp16", 2e-2)])
def test_compile_save_load_exported_program(
    torch: Any, tmp_path: Path, precision: str, tol: float
) -> None:
    tm = write_tiny_model(tmp_path / "tiny.onnx")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(tm.weight[:, :, None, None]))
                self.conv.bias.copy_(torch.from_numpy(tm.bias))

        def forward(self, x: Any) -> Any:
            y = torch.relu(self.conv(x))
            return y, y.mean(dim=(2, 3))

    path = tmp_path / "tiny.pt2"
    batch = torch.export.Dim("batch", min=1, max=8)
    ep = torch.export.export(
        Tiny().eval(), (torch.zeros(2, 3, 8, 10),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(ep, str(path))

    builder = TorchTensorRTBuilder("cuda:0", precision, (4, 3, 8, 10), name="tiny")
    eng = CachedEngine(path, builder, tmp_path / "c", background=False)
    assert eng.status.stage == "ready", eng.status
    assert eng.info.runtime == "torch_tensorrt" and eng.info.precision == precision
    assert eng.info.max_batch == 4
    for b in (1, 4, 6):
        x = np.random.default_rng(b).random((b, 3, 8, 10), dtype=np.float32)
        for g, w in zip(eng.infer(x), tm.expected(x), strict=True):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
    eng.close()
    again = CachedEngine(
        path, TorchTensorRTBuilder("cuda:0", precision, (4, 3, 8, 10)), tmp_path / "c"
    )
    assert again.status.serving == "cache"
    again.close()


# ---------------------------------------------------------------- stand-in runtime
# Control flow of TorchTensorRTBuilder against a stand-in `torch_tensorrt`
# whose compile() returns the ExportedProgram unchanged and whose save/load
# use torch.export: proves our spec/precision/save/load wiring on CPU torch,
# nothing about Torch-TensorRT itself.


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Any:
    import types

    torch = pytest.importorskip("torch", reason="the stand-in needs torch (CPU is enough)")
    from perception.core.engines import torch_engine as te
    from perception.core.engines import torch_tensorrt_engine as tte

    calls: dict[str, Any] = {}
    tt = types.ModuleType("torch_tensorrt")
    tt.__version__ = "2.99.0-standin"

    class Input:
        def __init__(
            self, shape=None, min_shape=None, opt_shape=None, max_shape=None, dtype=None
        ) -> None:  # type: ignore[no-untyped-def]
            self.shape, self.min_shape, self.opt_shape = shape, min_shape, opt_shape
            self.max_shape, self.dtype = max_shape, dtype

    def compile(module, ir, inputs, enabled_precisions, **kw):  # type: ignore[no-untyped-def]
        calls["compile"] = dict(ir=ir, inputs=inputs, precisions=enabled_precisions, kw=kw)
        return module

    def save(module, path, output_format, arg_inputs=None, inputs=None):  # type: ignore[no-untyped-def]
        calls["save"] = dict(format=output_format, arg_inputs=arg_inputs)
        torch.export.save(module, path)

    tt.Input, tt.compile, tt.save = Input, compile, save
    tt.load = lambda path: torch.export.load(path)
    monkeypatch.setitem(sys.modules, "torch_tensorrt", tt)
    cpu = lambda _torch, _device: torch.device("cpu")  # noqa: E731
    monkeypatch.setattr(te, "torch_device", cpu)
    monkeypatch.setattr(tte, "torch_device", cpu)
    monkeypatch.setattr(tte, "cuda_device_name", lambda device: "StandIn GPU sm00")
    return torch, calls


def test_standin_compile_save_load(standin: Any, tmp_path: Path) -> None:
    torch, calls = standin
    tm = write_tiny_model(tmp_path / "tiny.onnx")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(tm.weight[:, :, None, None]))
                self.conv.bias.copy_(torch.from_numpy(tm.bias))

        def forward(self, x: Any) -> Any:
            y = torch.relu(self.conv(x))
            return y, y.mean(dim=(2, 3))

    path = tmp_path / "tiny.pt2"
    batch = torch.export.Dim("batch", min=1, max=8)
    ep = torch.export.export(
        Tiny().eval(), (torch.zeros(2, 3, 8, 10),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(ep, str(path))
    builder = TorchTensorRTBuilder(
        "cuda:0",
        "fp16",
        (4, 3, 8, 10),
        workspace_bytes=1 << 20,
        metadata={"names": "{0: 'a'}"},
        name="tiny",
    )
    eng = CachedEngine(path, builder, tmp_path / "c", background=False)
    assert eng.status.stage == "ready", eng.status
    spec = calls["compile"]["inputs"][0]
    assert calls["compile"]["ir"] == "dynamo"
    assert (spec.min_shape, spec.opt_shape, spec.max_shape) == (
        (1, 3, 8, 10),
        (4, 3, 8, 10),
        (4, 3, 8, 10),
    )
    assert calls["compile"]["precisions"] == {torch.float16, torch.float32}
    assert calls["compile"]["kw"] == {"workspace_size": 1 << 20}
    assert calls["save"]["format"] == "exported_program"
    assert eng.key.runtime_version.startswith("torch_tensorrt 2.99.0-standin")
    info = eng.info
    assert info.runtime == "torch_tensorrt" and info.precision == "fp16" and info.name == "tiny"
    assert info.max_batch == 4 and info.input_shape == (-1, 3, 8, 10)
    assert info.metadata == {"names": "{0: 'a'}"}
    x = np.random.default_rng(0).random((6, 3, 8, 10), dtype=np.float32)
    for g, w in zip(eng.infer(x), tm.expected(x), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    eng.close()
    again = CachedEngine(
        path, TorchTensorRTBuilder("cuda:0", "fp16", (4, 3, 8, 10)), tmp_path / "c"
    )
    assert again.status.serving == "cache"
