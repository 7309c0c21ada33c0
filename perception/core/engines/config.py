"""Engine configuration: one frozen, validated record per model.

Validation happens at construction so a bad parameter fails when a node is
configured, with a reason naming the field, the expected values and the
value given. Whether the model file exists and loads is checked by the
engines themselves (ModelFileError).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from perception.core.errors import EngineError

__all__ = [
    "COMPILED_RUNTIMES",
    "FALLBACK_RUNTIMES",
    "PRECISIONS",
    "RUNTIMES",
    "Device",
    "EngineConfig",
    "EngineConfigError",
]

RUNTIMES = ("onnxruntime", "tensorrt", "torch_tensorrt", "torch")
COMPILED_RUNTIMES = ("tensorrt", "torch_tensorrt")
"""Runtimes that compile the model, so go through the cache + background build."""
FALLBACK_RUNTIMES = ("onnxruntime", "torch")
"""Runtimes that can serve at once from the source model while a build runs."""
PRECISIONS = ("fp32", "fp16", "int8")

ONNX_SUFFIXES = (".onnx",)
PLAN_SUFFIXES = (".engine", ".plan", ".trt")
TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".pt2", ".ep")


class EngineConfigError(EngineError, ValueError):
    """An EngineConfig field is invalid (the message names field, expected, got)."""


_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class Device:
    """A device string parsed once: 'cpu' -> Device('cpu', 0), 'cuda' ->
    Device('cuda', 0), 'cuda:1' -> Device('cuda', 1). EngineConfig parses its
    device strings into these and the engines take them (or a string they
    parse with `Device.parse`), so the string grammar lives in one place."""

    kind: Literal["cpu", "cuda"]
    index: int = 0

    @classmethod
    def parse(cls, device: str | Device) -> Device:
        """A Device from 'cpu', 'cuda' or 'cuda:N' (case and spaces ignored);
        a Device is returned as is. EngineError names the accepted forms."""
        if isinstance(device, Device):
            return device
        m = _DEVICE_RE.match(str(device).strip().lower())
        if not m:
            raise EngineError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        return cls("cuda" if m.group(1) == "cuda" else "cpu", int(m.group(2) or 0))

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        """'cpu' or 'cuda:N' (what EngineInfo.device reports)."""
        return f"cuda:{self.index}" if self.is_cuda else "cpu"


def _fail(name: str, expected: str, got: object) -> EngineConfigError:
    return EngineConfigError(f"EngineConfig.{name}: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class EngineConfig:
    """How to run one model.

    Attributes:
        model_path: the model file: .onnx for onnxruntime and tensorrt (built
            into a plan) or a serialized plan (.engine/.plan) for tensorrt;
            TorchScript (.pt/.ts/.torchscript) or ExportedProgram (.pt2/.ep)
            for torch and torch_tensorrt.
        runtime: one of RUNTIMES.
        device: 'cpu', 'cuda' or 'cuda:N'. tensorrt/torch_tensorrt need cuda.
            Parsed once into `parsed_device` (a Device), which the factory
            hands to the engines.
        precision: fp32, fp16 or int8 (int8: tensorrt with a Q/DQ model,
            torch_tensorrt with a quantized model, onnxruntime with the
            TensorRT provider).
        cache_dir: where compiled engines live. None: the default cache dir
            for compiled runtimes; for onnxruntime None means "no cache" and
            a path means "cache the optimised graph".
        fallback: runtime serving from the source model while a compiled
            engine builds, or None (infer raises EngineError until ready).
        fallback_model_path: model file for the fallback (default model_path;
            e.g. the .onnx twin of a TorchScript model). For a ready TensorRT
            plan or a torch_tensorrt build, an .onnx here also supplies the
            metadata (class names) that those formats do not carry.
        fallback_device: device of the fallback engine ('cpu' by default:
            configuring it is what makes a CPU fallback explicit); parsed into
            `parsed_fallback_device`.
        build_input_shape: (B, C, H, W) the compiled engine is built for;
            B is the largest batch (min batch is 1). None: the model's own
            fixed input shape (an error for dynamic models on compiled runtimes).
        threads: intra-op CPU threads (None: the runtime's default).
        providers: explicit ONNX Runtime providers, e.g.
            ('TensorrtExecutionProvider', 'CUDAExecutionProvider').
        allow_fallback: accept a session without a requested GPU provider
            (ONNX Runtime only; logged).
        graph_rewrites: ONNX Runtime on the CPU runs exact graph rewrites
            (perception/core/engines/graph_rewrites.py; YOLOv8/11 box head).
    """

    model_path: str
    runtime: str = "onnxruntime"
    device: str = "cpu"
    precision: str = "fp32"
    cache_dir: str | None = None
    fallback: str | None = None
    fallback_model_path: str | None = None
    fallback_device: str = "cpu"
    build_input_shape: tuple[int, int, int, int] | None = None
    threads: int | None = None
    providers: tuple[str, ...] = ()
    allow_fallback: bool = False
    graph_rewrites: bool = True
    # `device` and `fallback_device` parsed (set by __post_init__, not arguments)
    parsed_device: Device = field(init=False, repr=False, compare=False)
    parsed_fallback_device: Device = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model_path, str | Path) or not str(self.model_path).strip():
            raise _fail("model_path", "a non-empty path", self.model_path)
        object.__setattr__(self, "model_path", str(self.model_path))
        if self.runtime not in RUNTIMES:
            raise _fail("runtime", f"one of {RUNTIMES}", self.runtime)
        if self.precision not in PRECISIONS:
            raise _fail("precision", f"one of {PRECISIONS}", self.precision)
        try:
            object.__setattr__(self, "parsed_device", Device.parse(self.device))
            object.__setattr__(self, "parsed_fallback_device", Device.parse(self.fallback_device))
        except EngineError as exc:
            raise EngineConfigError(f"EngineConfig.device: {exc}") from None
        suffix = Path(self.model_path).suffix.lower()
        if self.runtime in COMPILED_RUNTIMES and not self.parsed_device.is_cuda:
            raise _fail("device", f"'cuda' or 'cuda:N' for runtime {self.runtime}", self.device)
        if self.runtime == "onnxruntime":
            if suffix not in ONNX_SUFFIXES:
                raise _fail("model_path", "an .onnx file for runtime onnxruntime", self.model_path)
            trt_ep = "TensorrtExecutionProvider" in self.providers
            if self.precision != "fp32" and not trt_ep:
                raise EngineConfigError(
                    f"EngineConfig.precision: {self.precision} with onnxruntime needs "
                    "providers=('TensorrtExecutionProvider', ...); use fp32 (a float16 "
                    "ONNX model runs in fp16 by itself)"
                )
        elif self.runtime == "tensorrt":
            if suffix not in ONNX_SUFFIXES + PLAN_SUFFIXES:
                raise _fail(
                    "model_path",
                    f"an .onnx model or a TensorRT plan {PLAN_SUFFIXES} for runtime tensorrt",
                    self.model_path,
                )
        elif suffix not in TORCH_SUFFIXES:
            raise _fail(
                "model_path",
                f"a TorchScript/ExportedProgram file {TORCH_SUFFIXES} for runtime {self.runtime}",
                self.model_path,
            )
        if self.runtime == "torch" and self.precision == "int8":
            raise _fail("precision", "fp32 or fp16 for runtime torch", self.precision)
        if self.fallback is not None:
            if self.fallback not in FALLBACK_RUNTIMES:
                raise _fail("fallback", f"None or one of {FALLBACK_RUNTIMES}", self.fallback)
            if self.runtime not in (*COMPILED_RUNTIMES, "onnxruntime"):
                raise _fail(
                    "fallback", f"None for runtime {self.runtime} (nothing to build)", self.fallback
                )
            fb_suffix = Path(self.fallback_model_path or self.model_path).suffix.lower()
            want = ONNX_SUFFIXES if self.fallback == "onnxruntime" else TORCH_SUFFIXES
            if fb_suffix not in want:
                raise EngineConfigError(
                    f"EngineConfig.fallback_model_path: fallback {self.fallback} needs a "
                    f"{'/'.join(want)} file, got {self.fallback_model_path or self.model_path!r} "
                    "(set fallback_model_path)"
                )
        if self.build_input_shape is not None:
            shape = tuple(self.build_input_shape)
            if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
                raise _fail("build_input_shape", "4 positive ints (B, C, H, W)", shape)
            object.__setattr__(self, "build_input_shape", shape)
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise _fail("threads", "None or an int >= 1", self.threads)
        if not isinstance(self.graph_rewrites, bool):
            raise _fail("graph_rewrites", "True or False", self.graph_rewrites)
        if isinstance(self.providers, str) or not all(isinstance(p, str) for p in self.providers):
            raise _fail("providers", "a sequence of provider names", self.providers)
        object.__setattr__(self, "providers", tuple(self.providers))

    @property
    def is_plan(self) -> bool:
        """A ready TensorRT plan: loaded as is, nothing to build."""
        return Path(self.model_path).suffix.lower() in PLAN_SUFFIXES

    @property
    def uses_cache(self) -> bool:
        if self.runtime == "onnxruntime":
            return self.cache_dir is not None
        return self.runtime in COMPILED_RUNTIMES and not self.is_plan

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EngineConfig:
        """Build from a dict (YAML, ROS parameters). Unknown keys are an error;
        '' means None for optional strings and an empty list means None for
        build_input_shape, because ROS parameters cannot be None."""
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EngineConfigError(
                f"EngineConfig: unknown keys {unknown}; expected some of {sorted(known)}"
            )
        clean: dict[str, Any] = {}
        for k, v in values.items():
            if k in ("cache_dir", "fallback", "fallback_model_path") and v == "":
                v = None
            elif k == "build_input_shape":
                v = tuple(v) if isinstance(v, Sequence) and len(v) else None
            elif k == "threads" and v in (0, None):
                v = None
            elif k == "providers":
                v = tuple(v or ())
            clean[k] = v
        return cls(**clean)
