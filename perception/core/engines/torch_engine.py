"""PyTorch engine: an eager nn.Module, a TorchScript file or an ExportedProgram.

torch is imported only when this engine is built; without it a
RuntimeUnavailableError says what to install. CUDA requested on a machine or
torch build without it is refused (no silent CPU fallback).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from perception.core.engines._common import one_line, run_chunked, validate_batch
from perception.core.engines.base import Engine, EngineInfo
from perception.core.engines.config import Device
from perception.core.engines.trust import warn_code_bearing
from perception.core.errors import EngineError, ModelFileError, RuntimeUnavailableError

__all__ = ["TorchEngine", "flatten_outputs", "import_torch", "load_torch_model", "torch_device"]

_log = logging.getLogger(__name__)

EXPORTED_SUFFIXES = (".pt2", ".ep")


def import_torch() -> Any:
    """Import torch or raise RuntimeUnavailableError naming the package."""
    try:
        import torch
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "PyTorch is not installed: pip install torch (CPU or CUDA wheel; on Jetson the "
            f"JetPack wheel from NVIDIA) ({one_line(exc)})"
        ) from None
    return torch


def torch_device(torch: Any, device: str | Device) -> Any:
    """torch.device for 'cpu'/'cuda[:N]' (or a Device), refusing CUDA that is not there."""
    dev = Device.parse(device)
    if not dev.is_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = getattr(torch.version, "cuda", None)
        why = (
            "this torch build has no CUDA"
            if not build
            else f"no CUDA device visible (CUDA {build})"
        )
        raise RuntimeUnavailableError(
            f"device '{dev}' requested but {why} (torch {torch.__version__})"
        )
    if dev.index >= torch.cuda.device_count():
        raise RuntimeUnavailableError(
            f"device '{dev}' requested but only {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", dev.index)


def _metadata_from_config(text: str) -> dict[str, str]:
    """Ultralytics stores its export metadata as JSON in TorchScript's config.txt.
    Values become strings like ONNX metadata (names as a Python dict literal
    with int keys, which is how Ultralytics writes them into ONNX)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, str] = {}
    for k, v in data.items():
        if k == "names" and isinstance(v, dict):
            v = {int(i) if str(i).isdigit() else i: n for i, n in v.items()}
        out[str(k)] = v if isinstance(v, str) else str(v)
    return out


def load_torch_model(
    path: str | os.PathLike[str], torch: Any, device: Any
) -> tuple[Any, dict[str, str]]:
    """Load TorchScript (torch.jit.save) or an ExportedProgram (torch.export.save).

    Pickled whole modules (torch.save(model)) are refused: loading them runs
    arbitrary code and needs the model's source on the path. Both accepted
    formats can run code from the file too: a warning says so, once per path.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelFileError(f"model path is not a regular file: {p}")
    size = p.stat().st_size
    if size == 0:
        raise ModelFileError(f"model file is empty (0 bytes): {p}")
    if p.suffix.lower() == ".onnx":
        raise ModelFileError(f"{p.name} is ONNX: use runtime 'onnxruntime' or 'tensorrt'")
    if not zipfile.is_zipfile(p):
        raise ModelFileError(
            f"not a TorchScript/ExportedProgram archive: {p} (expected a zip written by "
            "torch.jit.save or torch.export.save; truncated?)"
        )
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"corrupt model archive {p}: {one_line(exc)}") from None
    if bad is not None:
        raise ModelFileError(f"corrupt model archive {p}: member {bad} fails its CRC check")
    meta: dict[str, str] = {}
    exported = p.suffix.lower() in EXPORTED_SUFFIXES or any(
        n.endswith(("/archive_format", "/models/model.json", "/serialized_exported_program.json"))
        for n in names
    )
    if not exported and not any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        raise ModelFileError(
            f"{p.name} is a zip but not TorchScript (a torch.save checkpoint?); export "
            "with torch.jit.script/trace + save, or torch.export.save"
        )
    warn_code_bearing(p, "exported_program" if exported else "torchscript")
    try:
        if exported:
            model = torch.export.load(str(p)).module().to(device)
        else:
            extra = {"config.txt": ""}
            model = torch.jit.load(str(p), map_location=device, _extra_files=extra)
            meta = _metadata_from_config(extra["config.txt"])
    except ModelFileError:
        raise
    except Exception as exc:  # torch raises RuntimeError/ValueError/pickle errors here
        raise ModelFileError(
            f"torch cannot load {p.name}: {type(exc).__name__}: {one_line(exc)}"
        ) from None
    return model, meta


def flatten_outputs(out: Any) -> tuple[list[Any], list[str] | None]:
    """Tensors of a forward() result in order (tuples/lists recursively, dict values)."""
    names: list[str] | None = None
    if isinstance(out, Mapping):
        names = [str(k) for k in out]
        out = list(out.values())
    if isinstance(out, Sequence) and not hasattr(out, "shape"):
        flat: list[Any] = []
        for o in out:
            flat += flatten_outputs(o)[0]
        return flat, names if names and len(names) == len(flat) else None
    return [out], names


class TorchEngine(Engine):
    """PyTorch inference behind the Engine interface.

    Args:
        model: an nn.Module (eager), or a TorchScript / ExportedProgram file.
        device: 'cpu', 'cuda', 'cuda:N' or a Device.
        precision: 'fp32' or 'fp16' (module and inputs cast to half).
        input_shape: (B, C, H, W) with -1 for dynamic axes; a fully known C/H/W
            lets the constructor run one probe batch (warm-up + output shapes).
        input_name, output_names: names reported in EngineInfo.
        metadata: extra string metadata (TorchScript config.txt is read too).
        threads: torch.set_num_threads (process-wide in torch).
        max_batch: with a dynamic batch axis, run larger batches in chunks of
            this size (compiled modules have a maximum batch).
        runtime_label, precision_label: what EngineInfo reports when this
            engine runs a compiled module (e.g. 'torch_tensorrt', 'fp16').
    """

    runtime_name = "torch"

    def __init__(
        self,
        model: Any,
        device: str | Device = "cpu",
        precision: str = "fp32",
        *,
        input_shape: Sequence[int] = (-1, 3, -1, -1),
        input_name: str = "images",
        output_names: Sequence[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        threads: int | None = None,
        name: str | None = None,
        max_batch: int | None = None,
        runtime_label: str | None = None,
        precision_label: str | None = None,
    ) -> None:
        torch = import_torch()
        self._torch = torch
        if precision not in ("fp32", "fp16"):
            raise EngineError(f"torch engine precision must be fp32 or fp16, got {precision!r}")
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 4:
            raise EngineError(f"input_shape must be (B, C, H, W), got {tuple(input_shape)}")
        self._device = torch_device(torch, device)
        if threads is not None:
            torch.set_num_threads(int(threads))
        meta: dict[str, str] = {}
        if isinstance(model, str | os.PathLike):
            module, meta = load_torch_model(model, torch, self._device)
            label = name or Path(model).stem
        elif isinstance(model, torch.nn.Module) or callable(model):
            module = model.to(self._device) if hasattr(model, "to") else model
            label = name or type(model).__name__
        else:
            raise EngineError(f"model must be a path or a torch.nn.Module, got {type(model)!r}")
        if hasattr(module, "eval"):
            # ExportedProgram.module() refuses eval(): it is inference-only already
            with contextlib.suppress(NotImplementedError):
                module.eval()
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        if precision == "fp16":
            if self._device.type == "cpu":
                _log.warning("%s: fp16 on CPU is slow and not supported by every op", label)
            module = module.half()
        self._module = module
        self._lock = threading.Lock()
        meta.update(metadata or {})
        self.runtime_name = runtime_label or self.runtime_name
        self._fixed_batch = shape[0] if shape[0] > 0 else None
        self._chunk = self._fixed_batch or (int(max_batch) if max_batch else None)
        self._info = EngineInfo(
            name=label,
            runtime=self.runtime_name,
            device=str(self._device),
            precision=precision_label or precision,
            input_name=input_name,
            input_shape=shape,  # (B, C, H, W): len checked above
            input_dtype="float32",
            output_names=tuple(output_names or ()),
            output_shapes=(),
            metadata=meta,
            max_batch=self._chunk or -1,
        )
        self._probe(shape)

    def _probe(self, shape: tuple[int, ...]) -> None:
        """Warm up and learn output names/shapes. With dynamic H/W, run two
        sizes (multiples of 32) and mark the output dims that changed as -1."""
        if shape[1] <= 0:
            return
        b = self._fixed_batch or 1
        sizes = [shape[2:]] if not self._info.dynamic_hw else [(64, 64), (96, 96)]
        seen: list[list[tuple[int, ...]]] = []
        for h, w in sizes:
            x = np.zeros((b, shape[1], h if h > 0 else 64, w if w > 0 else 64), np.float32)
            try:
                outs = self._run(x)
            except EngineError as exc:
                if self._info.dynamic_hw:  # the model may want other sizes: learn on first use
                    _log.debug("%s: shape probe skipped (%s)", self._info.name, exc)
                    return
                raise
            seen.append([o.shape[1:] for o in outs])
        shapes = tuple(
            (shape[0], *(d if all(s[i][k] == d for s in seen) else -1 for k, d in enumerate(dims)))
            for i, dims in enumerate(seen[0])
        )
        with self._lock:
            self._info = replace(self._info, output_shapes=shapes)

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def module(self) -> Any:
        return self._module

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        engine = f"{self.runtime_name}:{self._info.name}"
        batch = validate_batch(batch, self._info.input_shape, engine)
        return run_chunked(batch, self._chunk, self._run, engine, pad=self._fixed_batch is not None)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        module = self._module
        if module is None:
            raise EngineError(f"{self._info.name}: engine is closed")
        try:
            with torch.inference_mode():
                x = torch.from_numpy(batch).to(self._device, self._dtype, non_blocking=True)
                raw = module(x)
                tensors, names = flatten_outputs(raw)
                outs = [t.detach().float().cpu().numpy() for t in tensors if hasattr(t, "detach")]
        except Exception as exc:  # torch raises RuntimeError for shape/device problems
            raise EngineError(
                f"torch forward failed for {self._info.name} with input {batch.shape}: "
                f"{type(exc).__name__}: {one_line(exc)}"
            ) from None
        if not outs:
            raise EngineError(f"{self._info.name}: forward returned no tensors ({type(raw)!r})")
        if not self._info.output_shapes or len(self._info.output_shapes) != len(outs):
            self._describe(outs, names)
        return outs

    def _describe(self, outs: list[np.ndarray], names: list[str] | None) -> None:
        """Fill output names/shapes from a real forward (batch and dynamic HW as -1)."""
        given = self._info.output_names
        if len(given) != len(outs):
            given = tuple(names) if names else tuple(f"output{i}" for i in range(len(outs)))
        dyn_hw = self._info.dynamic_hw
        shapes = tuple(
            (self._info.input_shape[0], *(-1 if dyn_hw else d for d in o.shape[1:])) for o in outs
        )
        with self._lock:
            self._info = replace(self._info, output_names=given, output_shapes=shapes)

    def close(self) -> None:
        with self._lock:
            module, self._module = self._module, None
        if module is not None and self._device.type == "cuda":
            del module
            self._torch.cuda.empty_cache()
