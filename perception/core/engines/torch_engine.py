"""PyTorch engine: an eager nn.Module, a TorchScript file, an ExportedProgram,
or an ONNX file run with torch ops (`onnx_torch.OnnxTorchModel`).

torch is imported only when this engine is built; without it a
RuntimeUnavailableError says what to install. CUDA requested on a machine or
torch build without it is refused (no silent CPU fallback).

On CUDA the engine keeps the work on the device: numpy batches go up once
through a reused pinned (page-locked) buffer, and each fixed input shape runs
as a captured CUDA graph (`torch.cuda.CUDAGraph`): one replay instead of
hundreds of kernel launches from Python, which is what makes a small
detector's end-to-end latency close to its forward time. `infer_tensor`
takes and returns device tensors, for GPU preprocessing and decoding
(`perception.core.gpu_preprocess`, `perception.core.engines.torch_detect`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from perception.core.engines._common import one_line, run_chunked, validate_batch
from perception.core.engines.base import Engine, EngineInfo
from perception.core.engines.config import Device
from perception.core.engines.trust import warn_code_bearing
from perception.core.errors import EngineError, ModelFileError, RuntimeUnavailableError

__all__ = [
    "CudaGraphRunner",
    "TorchEngine",
    "flatten_outputs",
    "import_torch",
    "load_torch_model",
    "torch_device",
]

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


class CudaGraphRunner:
    """One captured CUDA graph of `fn` for one input shape and dtype.

    The input is copied into a static buffer and the graph replayed; the
    outputs are the graph's static tensors, overwritten by the next replay.
    Warm-up runs on a side stream first, as torch.cuda.graphs asks (lazy
    initialisation, the converter's per-shape plan, cuDNN autotuning stay
    out of the capture).
    """

    def __init__(self, torch: Any, fn: Any, example: Any, warmup: int = 3) -> None:
        self._torch = torch
        self.static_input = example.clone()
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup)):
                fn(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_outputs = fn(self.static_input)

    def __call__(self, x: Any) -> Any:
        if x.data_ptr() != self.static_input.data_ptr():
            self.static_input.copy_(x)
        self.graph.replay()
        return self.static_outputs


class TorchEngine(Engine):
    """PyTorch inference behind the Engine interface.

    Args:
        model: an nn.Module (eager), a TorchScript / ExportedProgram file, an
            .onnx file (run with torch ops, `onnx_torch.OnnxTorchModel`; its
            input shape, names and metadata come from the file) or an
            OnnxTorchModel.
        device: 'cpu', 'cuda', 'cuda:N' or a Device.
        precision: 'fp32' or 'fp16' (module and inputs cast to half).
        input_shape: (B, C, H, W) with -1 for dynamic axes; a fully known C/H/W
            lets the constructor run one probe batch (warm-up + output shapes).
            For an ONNX model, -1 takes the file's value and a fixed value
            must agree with it.
        input_name, output_names: names reported in EngineInfo.
        metadata: extra string metadata (TorchScript config.txt is read too).
        threads: torch.set_num_threads (process-wide in torch).
        max_batch: with a dynamic batch axis, run larger batches in chunks of
            this size (compiled modules have a maximum batch).
        runtime_label, precision_label: what EngineInfo reports when this
            engine runs a compiled module (e.g. 'torch_tensorrt', 'fp16').
        cuda_graphs: on CUDA, run each input shape as a captured CUDA graph:
            "auto" does so for ONNX models whose input shape is fully fixed
            (B, C, H, W), True for every shape met (at most `max_graphs`, the
            oldest dropped), False never. Ignored on the CPU.
        max_graphs: how many captured shapes are kept (each holds its own
            activation memory).
        tf32: let fp32 convolutions and matrix products use TensorFloat-32
            on CUDA (Ampere and later: faster, 10-bit mantissa). Off by
            default, so 'fp32' means float32 arithmetic: torch enables TF32
            for cuDNN convolutions by default, which moves boxes by about as
            much as fp16 does.
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
        cuda_graphs: bool | str = "auto",
        max_graphs: int = 4,
        tf32: bool = False,
    ) -> None:
        torch = import_torch()
        self._torch = torch
        if precision not in ("fp32", "fp16"):
            raise EngineError(f"torch engine precision must be fp32 or fp16, got {precision!r}")
        if cuda_graphs not in (True, False, "auto"):
            raise EngineError(f"cuda_graphs must be True, False or 'auto', got {cuda_graphs!r}")
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 4:
            raise EngineError(f"input_shape must be (B, C, H, W), got {tuple(input_shape)}")
        self._device = torch_device(torch, device)
        if threads is not None:
            torch.set_num_threads(int(threads))
        meta: dict[str, str] = {}
        onnx_model = None
        if isinstance(model, str | os.PathLike) and Path(model).suffix.lower() == ".onnx":
            from perception.core.engines.onnx_proto import check_onnx_file
            from perception.core.engines.onnx_torch import OnnxTorchModel

            check_onnx_file(Path(model))
            model = OnnxTorchModel(model)
        if type(model).__name__ == "OnnxTorchModel" and hasattr(model, "input_dims"):
            onnx_model = model
            meta = dict(model.metadata)
            shape = _merge_onnx_shape(shape, model.input_dims, model.name)
            input_name = model.input_names[0] if model.input_names else input_name
            output_names = output_names or tuple(model.output_names)
        if isinstance(model, str | os.PathLike):
            module, meta = load_torch_model(model, torch, self._device)
            label = name or Path(model).stem
        elif isinstance(model, torch.nn.Module) or callable(model):
            module = model.to(self._device) if hasattr(model, "to") else model
            label = name or getattr(model, "name", None) or type(model).__name__
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
        self._run_lock = threading.Lock()
        meta.update(metadata or {})
        self.runtime_name = runtime_label or self.runtime_name
        self._fixed_batch = shape[0] if shape[0] > 0 else None
        self._chunk = self._fixed_batch or (int(max_batch) if max_batch else None)
        on_cuda = self._device.type == "cuda"
        if cuda_graphs == "auto":
            self._graphs_on = on_cuda and onnx_model is not None and all(d > 0 for d in shape)
        else:
            self._graphs_on = on_cuda and bool(cuda_graphs)
        self._tf32 = bool(tf32)
        self._graphs: dict[tuple[int, ...], CudaGraphRunner] = {}
        self._max_graphs = max(1, int(max_graphs))
        self._staging: Any = None  # pinned host buffer for numpy input (CUDA)
        self._info = EngineInfo(
            name=label,
            runtime=self.runtime_name,
            device=str(self._device),
            precision=precision_label or precision,
            input_name=input_name,
            input_shape=(shape[0], shape[1], shape[2], shape[3]),
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

    @property
    def device(self) -> Any:
        """The torch.device the model runs on."""
        return self._device

    @property
    def dtype(self) -> Any:
        """The torch dtype of the model input (float16 under fp16)."""
        return self._dtype

    @property
    def cuda_graphs(self) -> bool:
        """Whether input shapes run as captured CUDA graphs."""
        return self._graphs_on

    @property
    def graph_count(self) -> int:
        """How many input shapes are captured right now."""
        return len(self._graphs)

    def describe(self) -> dict[str, str]:
        out = super().describe()
        if self._device.type == "cuda":
            out["cuda_graphs"] = str(self._graphs_on).lower()
        return out

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        engine = f"{self.runtime_name}:{self._info.name}"
        batch = validate_batch(batch, self._info.input_shape, engine)
        return run_chunked(batch, self._chunk, self._run, engine, pad=self._fixed_batch is not None)

    def infer_tensor(self, x: Any) -> list[Any]:
        """Run a (B, C, H, W) float tensor already on the engine's device and
        return the outputs as device tensors (no host copy, no synchronisation).

        The outputs of a captured shape are the graph's own buffers: use (or
        clone) them before the next call. A fixed-batch model gets a smaller
        batch padded on the device; a batch larger than the model's is an
        EngineError (split it, or use `infer`).
        """
        torch = self._torch
        if self._module is None:
            raise EngineError(f"{self._info.name}: engine is closed")
        if x.device != self._device:
            raise EngineError(
                f"{self._info.name}: input on {x.device}, the engine runs on {self._device}"
            )
        n = int(x.shape[0])
        fixed = self._fixed_batch or self._chunk
        if fixed is not None and n > fixed:
            raise EngineError(f"{self._info.name}: batch {n} exceeds the model's batch {fixed}")
        pad = self._fixed_batch is not None and n < self._fixed_batch
        if pad and self._fixed_batch is not None:
            filler = torch.zeros(
                (self._fixed_batch - n, *x.shape[1:]), dtype=x.dtype, device=x.device
            )
            x = torch.cat([x, filler])
        outs = self._forward(x)
        return [o[:n] for o in outs] if pad else outs

    def _forward(self, x: Any) -> list[Any]:
        """Device in, device out: a graph replay for captured shapes."""
        torch = self._torch
        module = self._module
        if module is None:
            raise EngineError(f"{self._info.name}: engine is closed")
        if x.dtype != self._dtype:
            x = x.to(self._dtype)
        if not self._graphs_on:
            with torch.no_grad(), self._math():
                return flatten_outputs(module(x))[0]
        key = tuple(int(d) for d in x.shape)
        with torch.no_grad():
            runner = self._graphs.get(key) or self._capture(key, x)
            outs: list[Any] = runner(x)
        return outs

    @contextlib.contextmanager
    def _math(self) -> Iterator[None]:
        """float32 arithmetic for fp32 on CUDA unless `tf32` (cuDNN's TF32
        default off; matrix products at 'highest'); restored afterwards."""
        torch = self._torch
        if self._device.type != "cuda" or self._dtype != torch.float32:
            yield
            return
        cudnn = torch.backends.cudnn
        matmul, conv = torch.get_float32_matmul_precision(), cudnn.allow_tf32
        torch.set_float32_matmul_precision("high" if self._tf32 else "highest")
        cudnn.allow_tf32 = self._tf32
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(matmul)
            cudnn.allow_tf32 = conv

    def _capture(self, key: tuple[int, ...], example: Any) -> CudaGraphRunner:
        """Capture the model for one input shape (the oldest capture dropped
        beyond `max_graphs`)."""
        module = self._module
        with self._math():
            runner = CudaGraphRunner(self._torch, lambda t: flatten_outputs(module(t))[0], example)
        if len(self._graphs) >= self._max_graphs:
            self._graphs.pop(next(iter(self._graphs)))
        self._graphs[key] = runner
        return runner

    def capture_pipeline(self, make_input: Callable[[], Any]) -> CudaGraphRunner:
        """One CUDA graph of `make_input()` (device work producing the model
        input, e.g. uploading frames from pinned buffers and letterboxing
        them) followed by the model. Replay with `runner(runner.static_input)`;
        the outputs are the graph's buffers. CUDA only."""
        torch = self._torch
        module = self._module
        if module is None or self._device.type != "cuda":
            raise EngineError(f"{self._info.name}: capture_pipeline needs an open CUDA engine")
        dtype = self._dtype

        def run(_: Any) -> list[Any]:
            x = make_input()
            out: list[Any] = flatten_outputs(module(x if x.dtype == dtype else x.to(dtype)))[0]
            return out

        with torch.no_grad(), self._math():
            return CudaGraphRunner(torch, run, torch.zeros(1, device=self._device))

    def input_buffer(self, shape: Sequence[int]) -> Any | None:
        """The input tensor of the CUDA graph captured for `shape` (captured
        now if needed), to write a batch into in place and pass to
        `infer_tensor` without a copy; None when graphs are off or the shape
        is not one the model runs as is (a padded fixed batch)."""
        torch = self._torch
        if not self._graphs_on or self._module is None:
            return None
        key = tuple(int(d) for d in shape)
        if self._fixed_batch is not None and key[0] != self._fixed_batch:
            return None
        runner = self._graphs.get(key)
        if runner is None:
            with torch.no_grad():
                example = torch.zeros(key, dtype=self._dtype, device=self._device)
                runner = self._capture(key, example)
        return runner.static_input

    def _upload(self, batch: np.ndarray) -> Any:
        """A numpy batch on the device: through a reused pinned buffer on CUDA
        (one asynchronous copy), converted to the model dtype there."""
        torch = self._torch
        if self._device.type != "cuda":
            return torch.from_numpy(batch).to(self._dtype)
        staging = self._staging
        if staging is None or tuple(staging.shape) != batch.shape:
            staging = self._staging = torch.empty(batch.shape, dtype=torch.float32, pin_memory=True)
        np.copyto(staging.numpy(), batch)
        return staging.to(self._device, non_blocking=True)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        if self._module is None:
            raise EngineError(f"{self._info.name}: engine is closed")
        raw: Any = None
        try:
            with self._run_lock:
                if self._graphs_on:
                    tensors = self._forward(self._upload(batch))
                    names = None
                else:
                    with torch.inference_mode(), self._math():
                        raw = self._module(self._upload(batch))
                        tensors, names = flatten_outputs(raw)
                # .cpu() waits for the device, so the pinned buffer is free again
                outs = [t.detach().float().cpu().numpy() for t in tensors if hasattr(t, "detach")]
        except EngineError:
            raise
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
            self._graphs = {}
            self._staging = None
        if module is not None and self._device.type == "cuda":
            del module
            self._torch.cuda.empty_cache()


def _merge_onnx_shape(
    given: tuple[int, ...], dims: Sequence[Sequence[int | str]], name: str
) -> tuple[int, ...]:
    """The engine input shape of an ONNX model: the file's fixed axes, the
    caller's values where the file has a symbolic one (-1: dynamic)."""
    if not dims or len(dims[0]) != 4:
        got = list(dims[0]) if dims else []
        raise ModelFileError(f"{name}: expected one 4-D (B, C, H, W) input, got {got}")
    out = []
    for axis, (want, have) in enumerate(zip(given, dims[0], strict=True)):
        fixed = have if isinstance(have, int) and have > 0 else -1
        if want > 0 and fixed > 0 and want != fixed:
            raise EngineError(
                f"{name}: input_shape {tuple(given)} disagrees with the model's input "
                f"{list(dims[0])} on axis {axis}"
            )
        out.append(fixed if fixed > 0 else want)
    return tuple(out)
