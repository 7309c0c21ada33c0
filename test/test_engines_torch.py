"""TorchEngine: eager modules, TorchScript and ExportedProgram files (needs torch;
the project venv has none, so all but the first test skip there)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perception.core.engines.config import EngineConfig
from perception.core.engines.factory import create_engine
from perception.core.engines.testing import TinyModel, write_tiny_model
from perception.core.engines.torch_engine import TorchEngine
from perception.core.errors import InputImageError, ModelFileError, RuntimeUnavailableError


def test_without_torch_raises_runtime_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(RuntimeUnavailableError, match="pip install torch"):
        TorchEngine("model.ts")


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip(
        "torch", reason="torch not installed (optional runtime; the project venv has none)"
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def _module(torch: Any, tm: TinyModel, as_dict: bool = False) -> Any:
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            k, c = tm.weight.shape
            self.conv = torch.nn.Conv2d(c, k, 1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(tm.weight[:, :, None, None]))
                self.conv.bias.copy_(torch.from_numpy(tm.bias))

        def forward(self, x: Any) -> Any:
            y = torch.relu(self.conv(x))
            z = y.mean(dim=(2, 3))
            return {"features": y, "pooled": z} if as_dict else (y, z)

    return Tiny().eval()


def _x(b: int, h: int = 8, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((b, 3, h, w), dtype=np.float32)


def _close(got: list[np.ndarray], want: list[np.ndarray], tol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32 and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def test_eager_module(torch: Any, tiny: TinyModel) -> None:
    eng = TorchEngine(_module(torch, tiny), threads=1)
    info = eng.info
    assert info.runtime == "torch" and info.device == "cpu" and info.precision == "fp32"
    assert info.input_shape == (-1, 3, -1, -1) and info.max_batch == -1
    # the constructor probed two sizes: channel dims known, spatial dims dynamic
    assert info.output_names == ("output0", "output1")
    assert info.output_shapes == ((-1, 4, -1, -1), (-1, 4))
    for b in (1, 6):
        x = _x(b)
        _close(eng.infer(x), tiny.expected(x))


def test_dict_outputs_name_the_outputs(torch: Any, tiny: TinyModel) -> None:
    eng = TorchEngine(_module(torch, tiny, as_dict=True), input_shape=(-1, 3, 8, 10))
    assert eng.info.output_names == ("features", "pooled")
    assert eng.info.output_shapes == ((-1, 4, 8, 10), (-1, 4))


def test_torchscript_file_with_metadata(torch: Any, tiny: TinyModel, tmp_path: Path) -> None:
    path = tmp_path / "tiny.torchscript"
    meta = {"names": {"0": "person", "1": "car"}, "stride": 32, "task": "detect"}
    scripted = torch.jit.trace(_module(torch, tiny), torch.zeros(1, 3, 8, 10))
    torch.jit.save(scripted, str(path), _extra_files={"config.txt": json.dumps(meta)})
    eng = create_engine(EngineConfig(str(path), runtime="torch"))
    assert isinstance(eng, TorchEngine) and eng.info.name == "tiny"
    assert eng.info.metadata == {
        "names": "{0: 'person', 1: 'car'}",
        "stride": "32",
        "task": "detect",
    }
    x = _x(3)
    _close(eng.infer(x), tiny.expected(x))


def test_exported_program_file(torch: Any, tiny: TinyModel, tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt2"
    batch = torch.export.Dim("batch", min=1, max=16)
    ep = torch.export.export(
        _module(torch, tiny), (torch.zeros(2, 3, 8, 10),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(ep, str(path))
    eng = TorchEngine(path, input_shape=(-1, 3, 8, 10))
    assert eng.info.output_shapes == ((-1, 4, 8, 10), (-1, 4))
    for b in (1, 5):
        x = _x(b)
        _close(eng.infer(x), tiny.expected(x))


def test_fixed_batch_is_padded_and_chunked(torch: Any, tiny: TinyModel) -> None:
    eng = TorchEngine(_module(torch, tiny), input_shape=(2, 3, 8, 10))
    assert eng.info.max_batch == 2
    for b in (1, 2, 3, 5):
        x = _x(b, seed=b)
        out = eng.infer(x)
        assert [o.shape[0] for o in out] == [b, b]
        _close(out, tiny.expected(x))


def test_max_batch_chunks_dynamic_batch(torch: Any, tiny: TinyModel) -> None:
    calls: list[int] = []
    module = _module(torch, tiny)
    module.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    eng = TorchEngine(module, input_shape=(-1, 3, 8, 10), max_batch=4)
    calls.clear()
    x = _x(9)
    _close(eng.infer(x), tiny.expected(x))
    assert calls == [4, 4, 1]  # chunked, last chunk not padded (dynamic batch)


def test_fp16_on_cpu(torch: Any, tiny: TinyModel) -> None:
    eng = TorchEngine(_module(torch, tiny), precision="fp16", input_shape=(-1, 3, 8, 10))
    assert eng.info.precision == "fp16"
    x = _x(2)
    _close(eng.infer(x), tiny.expected(x), tol=2e-2)


def test_matches_onnxruntime_on_same_weights(torch: Any, tiny: TinyModel) -> None:
    ort_engine = pytest.importorskip("perception.core.engines.onnxruntime_engine")
    pytest.importorskip("onnxruntime")
    a = TorchEngine(_module(torch, tiny))
    b = ort_engine.OnnxRuntimeEngine(tiny.path)
    x = _x(4, 16, 12)
    _close(a.infer(x), b.infer(x), tol=1e-5)


# ---------------------------------------------------------------- bad input


def test_bad_model_files(torch: Any, tiny: TinyModel, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        TorchEngine(tmp_path / "missing.ts")
    empty = tmp_path / "empty.ts"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        TorchEngine(empty)
    text = tmp_path / "text.ts"
    text.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a TorchScript"):
        TorchEngine(text)
    good = tmp_path / "good.ts"
    torch.jit.save(torch.jit.trace(_module(torch, tiny), torch.zeros(1, 3, 8, 10)), str(good))
    cut = tmp_path / "cut.ts"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFileError):
        TorchEngine(cut)
    ckpt = tmp_path / "ckpt.pt"
    torch.save(_module(torch, tiny).state_dict(), str(ckpt))
    with pytest.raises(ModelFileError, match="not TorchScript"):
        TorchEngine(ckpt)
    # an .onnx file runs through the ONNX->torch converter (onnx_torch)
    pytest.importorskip("onnx")
    x = _x(2)
    _close(TorchEngine(tiny.path).infer(x), tiny.expected(x), tol=1e-5)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (np.zeros((1, 3, 8, 10), np.float64), "dtype float32, got float64"),
        (np.zeros((1, 4, 8, 10), np.float32), "channels=3"),
        (np.zeros((3, 8, 10), np.float32), "4-D"),
        (np.zeros((0, 3, 8, 10), np.float32), "zero-size"),
        (np.zeros((1, 3, 9, 10), np.float32), "height=8"),
    ],
)
def test_bad_batches(torch: Any, tiny: TinyModel, batch: np.ndarray, match: str) -> None:
    eng = TorchEngine(_module(torch, tiny), input_shape=(-1, 3, 8, 10))
    with pytest.raises(InputImageError, match=match):
        eng.infer(batch)


def test_cuda_refused_without_cuda(torch: Any, tiny: TinyModel) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeUnavailableError, match="cuda"):
        TorchEngine(_module(torch, tiny), device="cuda")


def test_cuda_matches_cpu(torch: Any, tiny: TinyModel) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device and a CUDA build of torch")
    gpu = TorchEngine(_module(torch, tiny), device="cuda")
    assert gpu.info.device == "cuda:0"
    x = _x(6)
    _close(gpu.infer(x), tiny.expected(x), tol=1e-4)
    half = TorchEngine(_module(torch, tiny), device="cuda", precision="fp16")
    _close(half.infer(x), tiny.expected(x), tol=2e-2)
