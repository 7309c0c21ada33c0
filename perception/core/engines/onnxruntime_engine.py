"""ONNX Runtime engine: CPU, CUDA and TensorRT execution providers.

The model file is checked before a session is created (missing, empty,
truncated, not ONNX -> ModelFileError with one line). A requested GPU provider
that is not available, or that ONNX Runtime silently drops while creating the
session (it only logs a warning when e.g. cuDNN is missing), raises
RuntimeUnavailableError unless `allow_fallback=True`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perception.core.engines._common import (
    _ONNX_TYPES,
    cpu_name,
    one_line,
    run_chunked,
    validate_batch,
    validate_pixels,
)
from perception.core.engines.base import Engine, EngineInfo
from perception.core.engines.cache import Builder, ProgressFn
from perception.core.engines.config import Device
from perception.core.engines.graph_rewrites import rewrite_dfl
from perception.core.engines.onnx_proto import check_onnx_file
from perception.core.engines.pixel_input import (
    PixelInput,
    PixelInputUnsupported,
    fuse_pixel_input,
)
from perception.core.engines.trust import ensure_private_dir
from perception.core.errors import (
    EngineError,
    ModelFileError,
    RuntimeUnavailableError,
)

__all__ = [
    "DEFAULT_SESSION_CONFIG",
    "OPT_LEVELS",
    "OnnxRuntimeBuilder",
    "OnnxRuntimeEngine",
    "import_onnxruntime",
]

_log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"

OPT_LEVELS = ("disable", "basic", "extended", "all")
"""Graph optimisation levels, mapped to onnxruntime.GraphOptimizationLevel."""
DEFAULT_SESSION_CONFIG: Mapping[str, str] = {"session.force_spinning_stop": "1"}
"""Session config entries every OnnxRuntimeEngine starts from (see `session_config`)."""

ProviderSpec = str | tuple[str, Mapping[str, Any]]


def import_onnxruntime() -> Any:
    """Import onnxruntime or raise RuntimeUnavailableError naming the package."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu "
            f"(CUDA/TensorRT providers) ({one_line(exc)})"
        ) from None
    return onnxruntime


def _graph_level(ort: Any, level: str) -> Any:
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if level not in levels:
        raise EngineError(f"graph_optimization must be one of {OPT_LEVELS}, got {level!r}")
    return levels[level]


def _trt_options(index: int, precision: str, trt_cache_dir: str | None) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "device_id": index,
        "trt_fp16_enable": precision == "fp16",
        "trt_int8_enable": precision == "int8",
    }
    if trt_cache_dir:
        opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=trt_cache_dir)
    return opts


def _default_providers(
    device: Device, precision: str, tensorrt: bool, trt_cache_dir: str | None
) -> list[tuple[str, dict[str, Any]]]:
    if not device.is_cuda:
        if tensorrt:
            raise EngineError("the TensorRT execution provider needs device 'cuda[:N]', got 'cpu'")
        return [(CPU_EP, {})]
    providers: list[tuple[str, dict[str, Any]]] = []
    index = device.index
    if tensorrt:
        providers.append((TRT_EP, _trt_options(index, precision, trt_cache_dir)))
    # CPU stays last so nodes the GPU provider lacks can still run (a partial
    # placement ONNX Runtime does by design); the whole-session fallback is
    # what we refuse below.
    providers += [(CUDA_EP, {"device_id": index}), (CPU_EP, {})]
    return providers


def _normalise(
    providers: Sequence[ProviderSpec], index: int, precision: str, trt_cache_dir: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """Provider names get the device id (and TensorRT precision) as options."""
    out: list[tuple[str, dict[str, Any]]] = []
    for p in providers:
        if isinstance(p, str):
            if p == TRT_EP:
                out.append((p, _trt_options(index, precision, trt_cache_dir)))
            elif p == CUDA_EP:
                out.append((p, {"device_id": index}))
            else:
                out.append((p, {}))
        elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
            out.append((p[0], dict(p[1])))
        else:
            raise EngineError(f"a provider is a name or (name, options), got {p!r}")
    return out


def _requested_providers(
    device: Device,
    providers: Sequence[ProviderSpec] | None,
    precision: str = "fp32",
    tensorrt: bool = False,
    trt_cache_dir: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The providers a session is asked for: explicit ones, else the defaults
    of `device`."""
    if providers is not None:
        return _normalise(providers, device.index, precision, trt_cache_dir)
    return _default_providers(device, precision, tensorrt, trt_cache_dir)


def _onnx_import_error() -> Exception | None:
    """None when the onnx package imports; else what it raised (ImportError
    when missing; e.g. TypeError for generated code too old for protobuf)."""
    try:
        import onnx  # noqa: F401
    except Exception as exc:
        return exc
    return None


def _rewritten(path: Path) -> tuple[bytes | None, int]:
    """(the model with `graph_rewrites` applied, how many places) or (None, 0)
    when nothing applies or the rewrite cannot run (logged, never raised: the
    model as given still works)."""
    err = _onnx_import_error()
    if isinstance(err, ImportError):
        _log.info("onnxruntime: graph rewrites skipped for %s: onnx is not installed", path.name)
        return None, 0
    if err is not None:
        _log.warning(
            "onnxruntime: graph rewrites skipped for %s: onnx fails to import (%s)",
            path.name,
            one_line(err),
        )
        return None, 0
    try:
        if path.stat().st_size > 1 << 30:  # protobuf serialises at most 2 GiB
            return None, 0
        rewritten, count = rewrite_dfl(path.read_bytes())
    except Exception as exc:  # onnx's parser raises DecodeError and others
        _log.warning("onnxruntime: graph rewrites skipped for %s: %s", path.name, one_line(exc))
        return None, 0
    return (rewritten, count) if count else (None, 0)


def _new_session(
    ort: Any, model: str | bytes, so: Any, providers: Sequence[tuple[str, Mapping[str, Any]]]
) -> Any:
    """An InferenceSession of a model file path or serialised bytes."""
    return ort.InferenceSession(
        model,
        sess_options=so,
        providers=[n for n, _ in providers],
        provider_options=[o for _, o in providers],
    )


class OnnxRuntimeEngine(Engine):
    """One ONNX Runtime session behind the `Engine` interface.

    Args:
        model_path: an .onnx file.
        device: 'cpu', 'cuda', 'cuda:N' or a Device (picks the default providers).
        providers: explicit provider list (names or (name, options)); overrides
            the defaults derived from `device`.
        precision: 'fp32' or, with the TensorRT provider, 'fp16'/'int8'. A
            model whose input is float16 reports 'fp16'.
        intra_op_threads / inter_op_threads: ONNX Runtime thread pools
            (None: its defaults, i.e. one thread per physical core).
        graph_optimization: one of OPT_LEVELS.
        optimized_model_path: if set, ONNX Runtime writes the optimised graph
            there while creating the session (the cache's build step).
        tensorrt: put the TensorRT execution provider first (device must be cuda).
        trt_cache_dir: engine cache folder of the TensorRT provider. ONNX
            Runtime loads the plans there without authentication, so the
            folder is created 0700 and refused when others could write it
            (`trust.ensure_private_dir`).
        allow_fallback: accept a session that ended up without a requested
            GPU provider (logged as a warning) instead of raising.
        session_config: SessionOptions config entries (add_session_config_entry),
            merged over DEFAULT_SESSION_CONFIG. The default stops the intra-op
            threads spinning after each run: spinning kept a core busy for
            >10 ms after every call and halved the speed of the preprocessing,
            decoding and ROS work that shares the CPU (measured on 2 cores), at
            no cost to inference.
        graph_rewrites: on the CPU provider, run the model with the exact
            rewrites of `perception.core.engines.graph_rewrites` (YOLOv8/11 box
            head: YOLO11n 14-16 % faster on 2 cores); needs the onnx package, skipped
            with a log line when it is missing or nothing matches.
    """

    runtime_name = "onnxruntime"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        device: str | Device = "cpu",
        providers: Sequence[ProviderSpec] | None = None,
        *,
        precision: str = "fp32",
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        graph_optimization: str = "all",
        optimized_model_path: str | os.PathLike[str] | None = None,
        tensorrt: bool = False,
        trt_cache_dir: str | None = None,
        allow_fallback: bool = False,
        log_severity: int = 3,
        session_config: Mapping[str, str] | None = None,
        graph_rewrites: bool = True,
    ) -> None:
        ort = import_onnxruntime()
        self._path = Path(model_path)
        check_onnx_file(self._path)
        dev = Device.parse(device)
        if precision not in ("fp32", "fp16", "int8"):
            raise EngineError(f"precision must be fp32, fp16 or int8, got {precision!r}")
        if trt_cache_dir:
            ensure_private_dir(trt_cache_dir, "TensorRT provider cache folder")
        wanted = _requested_providers(dev, providers, precision, tensorrt, trt_cache_dir)
        if not wanted:
            raise EngineError("providers is empty: name at least one execution provider")
        available = set(ort.get_available_providers())
        missing = [name for name, _ in wanted if name not in available]
        if missing:
            msg = (
                f"onnxruntime {ort.__version__} lacks {', '.join(missing)} "
                f"(available: {', '.join(sorted(available))}); for CUDA/TensorRT install "
                "onnxruntime-gpu instead of onnxruntime"
            )
            if not allow_fallback:
                raise RuntimeUnavailableError(msg)
            _log.warning("%s; falling back as configured (allow_fallback=True)", msg)
            wanted = [(n, o) for n, o in wanted if n in available] or [(CPU_EP, {})]

        so = ort.SessionOptions()
        so.graph_optimization_level = _graph_level(ort, graph_optimization)
        so.log_severity_level = int(log_severity)
        if intra_op_threads is not None:
            so.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads is not None:
            so.inter_op_num_threads = int(inter_op_threads)
        if optimized_model_path is not None:
            so.optimized_model_filepath = str(optimized_model_path)
        for key, value in {**DEFAULT_SESSION_CONFIG, **(session_config or {})}.items():
            so.add_session_config_entry(str(key), str(value))
        self._rewrites = 0
        session = None
        if graph_rewrites and wanted[0][0] == CPU_EP:
            rewritten, count = _rewritten(self._path)
            if rewritten is not None:
                try:
                    session = _new_session(ort, rewritten, so, wanted)
                    self._rewrites = count
                    _log.info(
                        "onnxruntime: %s runs with %d DFL box head(s) rewritten for the CPU",
                        self._path.name,
                        count,
                    )
                except Exception as exc:  # not expected: fall back to the model as given
                    _log.warning(
                        "onnxruntime: %s: the rewritten graph was rejected (%s); using the "
                        "model as given",
                        self._path.name,
                        one_line(exc),
                    )
        if session is None:
            try:
                session = _new_session(ort, str(self._path), so, wanted)
            except Exception as exc:  # onnxruntime raises its own pybind exception classes
                raise _classify(exc, self._path) from None

        got = session.get_providers()
        dropped = [n for n, _ in wanted if n not in got]
        if dropped and dropped != [CPU_EP]:
            msg = (
                f"onnxruntime could not start {', '.join(dropped)} for {self._path.name} "
                f"(session providers: {', '.join(got)}; check the CUDA/cuDNN/TensorRT libraries)"
            )
            if not allow_fallback:
                raise RuntimeUnavailableError(msg)
            _log.warning("%s; running on %s as configured (allow_fallback=True)", msg, got[0])

        self._session = session
        self._lock = threading.Lock()
        # What a second session (pixel input) needs to be created the same way.
        self._so = so
        self._providers = [(n, o) for n, o in wanted if n in got]
        self._building = optimized_model_path is not None
        self._pixel: PixelInput | None = None
        self._pixel_session: Any = None
        self._pixel_name = ""
        self._closed = False
        self._enable_lock = threading.Lock()
        inp = session.get_inputs()
        if len(inp) != 1:
            names = [i.name for i in inp]
            raise ModelFileError(
                f"{self._path.name}: expected a model with one image input, got {len(inp)}: {names}"
            )
        raw = list(inp[0].shape)
        if len(raw) != 4:
            raise ModelFileError(
                f"{self._path.name}: expected a 4-D (B, C, H, W) input, got {inp[0].shape}"
            )
        self._in_name = inp[0].name
        self._in_dtype = np.dtype(_ONNX_TYPES.get(inp[0].type, np.float32))
        if self._in_dtype not in (np.float32, np.float16):
            raise ModelFileError(
                f"{self._path.name}: expected a float32/float16 image input, got {inp[0].type}"
            )
        b, c, h, w = (d if isinstance(d, int) and d > 0 else -1 for d in raw)
        shape = (b, c, h, w)
        symbols = tuple(d if isinstance(d, str) else "" for d in raw)
        outs = session.get_outputs()
        self._out_names = [o.name for o in outs]
        on_gpu = got[0] in (CUDA_EP, TRT_EP)
        if self._in_dtype == np.float16:
            actual_precision = "fp16"
        elif got[0] == TRT_EP:
            actual_precision = precision
        else:
            actual_precision = "fp32"
            if precision != "fp32":
                msg = (
                    f"{self._path.name}: precision {precision} needs the TensorRT execution "
                    f"provider or a float16 model; this session runs fp32 on {got[0]}"
                )
                if not allow_fallback:
                    raise EngineError(msg)
                _log.warning("%s (allow_fallback=True)", msg)
        meta = session.get_modelmeta()
        self._info = EngineInfo(
            name=self._path.stem,
            runtime=self.runtime_name,
            device=str(dev) if on_gpu else "cpu",
            precision=actual_precision,
            input_name=self._in_name,
            input_shape=shape,
            input_dtype=self._in_dtype.name,
            output_names=tuple(self._out_names),
            output_shapes=tuple(
                tuple(d if isinstance(d, int) and d > 0 else -1 for d in o.shape) for o in outs
            ),
            metadata=dict(meta.custom_metadata_map or {}),
            input_symbols=symbols,
            providers=tuple(got),
            max_batch=shape[0] if shape[0] > 0 else -1,
        )
        self._fixed_batch = shape[0] if shape[0] > 0 else None

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def session(self) -> Any:
        """The float-input onnxruntime.InferenceSession (the model file with
        `graph_rewrites` applied, if any; for benchmarks and tools; recreated
        if pixel input released it)."""
        return self._float_session()

    @property
    def graph_rewrites(self) -> int:
        """How many places of the graph the session runs rewritten (0: as given)."""
        return self._rewrites

    def _model_source(self) -> str | bytes:
        """What the sessions are made from: the path, or the rewritten bytes."""
        if self._rewrites:
            rewritten, _ = _rewritten(self._path)
            if rewritten is not None:
                return rewritten
        return str(self._path)

    def _float_session(self) -> Any:
        session = self._session
        if session is not None:
            return session
        if self._closed:
            raise EngineError(f"{self._info.name}: engine is closed")
        with self._lock:
            if self._session is None and not self._closed:
                # released when pixel input was enabled; someone wants floats again
                _log.info("onnxruntime: %s: creating the float-input session", self._path.name)
                ort = import_onnxruntime()
                try:
                    self._session = _new_session(
                        ort, self._model_source(), self._so, self._providers
                    )
                except Exception as exc:  # e.g. the file changed on disk since start-up
                    raise _classify(exc, self._path) from None
            session = self._session
        if session is None:
            raise EngineError(f"{self._info.name}: engine is closed")
        return session

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run (B, C, H, W) float32; outputs come back as float32 with batch B."""
        batch = validate_batch(
            batch,
            self._info.input_shape,
            f"{self.runtime_name}:{self._info.name}",
            accepted=(np.float32, self._in_dtype.type),
        )
        if batch.dtype != self._in_dtype:
            batch = batch.astype(self._in_dtype)
        return run_chunked(
            batch,
            self._fixed_batch,
            self._run,
            f"{self.runtime_name}:{self._info.name}",
            pad=self._fixed_batch is not None,
        )

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._run_session(self._float_session(), self._in_name, batch, "input")

    def _run_session(
        self, session: Any, name: str, array: np.ndarray, what: str
    ) -> list[np.ndarray]:
        """session.run with a one-line EngineError; float16 outputs as float32."""
        try:
            outs = session.run(self._out_names, {name: array})
        except Exception as exc:  # pybind exception classes of onnxruntime
            raise EngineError(
                f"onnxruntime run failed for {self._info.name} with {what} {array.shape}: "
                f"{one_line(exc)}"
            ) from None
        return [o.astype(np.float32) if o.dtype == np.float16 else o for o in outs]

    # ------------------------------------------------------------ pixel input
    @property
    def pixel_input(self) -> PixelInput | None:
        return self._pixel

    def enable_pixel_input(self, pixel: PixelInput, release_float: bool = True) -> str | None:
        """Create a second session from the model with `pixel` folded in (see
        `perception.core.engines.pixel_input`); None on success, else why not.
        `release_float` frees the float-input session (its weights) until
        `infer` or `session` needs it again.

        Only for fp32 models on the CPU or CUDA provider (the TensorRT provider
        builds its own engine from the graph and is left as it is)."""
        with self._enable_lock:  # one fold at a time; the check and install are atomic
            reason = self._enable_pixel_input(pixel, release_float)
        if reason is not None:
            return reason
        _log.info(
            "onnxruntime: %s takes uint8 pixels (scale and channel order folded into the first "
            "convolution)",
            self._path.name,
        )
        return None

    def _enable_pixel_input(self, pixel: PixelInput, release_float: bool) -> str | None:
        if self._closed:
            return "the engine is closed"
        if self._pixel == pixel and self._pixel_session is not None:
            return None
        if self._pixel is not None:
            # another user of this engine relies on the current fold
            return (
                f"pixel input is already enabled on this engine with scale {self._pixel.scale} "
                f"and channels {self._pixel.source}"
            )
        first = self._providers[0][0] if self._providers else CPU_EP
        if first not in (CPU_EP, CUDA_EP):
            return f"pixel input is only folded for the CPU and CUDA providers, not {first}"
        if self._in_dtype != np.float32:
            return f"the model input is {self._in_dtype.name}, pixel input needs float32"
        if self._building:
            return "this session writes an optimised model (cache build)"
        try:
            source = self._model_source()
            model = source if isinstance(source, bytes) else self._path.read_bytes()
            fused = fuse_pixel_input(model, pixel)
        except PixelInputUnsupported as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot read {self._path.name}: {one_line(exc)}"
        except Exception as exc:  # e.g. weights in external data files, onnx quirks
            return f"folding failed ({type(exc).__name__}: {one_line(exc)})"
        try:
            session = _new_session(import_onnxruntime(), fused, self._so, self._providers)
        except Exception as exc:  # onnxruntime's pybind exception classes
            return f"onnxruntime rejected the pixel-input model: {one_line(exc)}"
        inputs = session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)":
            return f"the pixel-input model has inputs {[i.type for i in inputs]}"
        with self._lock:
            if self._closed:
                return "the engine is closed"
            self._pixel_session = session
            self._pixel_name = inputs[0].name
            self._pixel = pixel
            if release_float:
                # the float session is not used any more: free its weights
                # (recreated on demand by `infer` / `session`)
                self._session = None
        return None

    def infer_pixels(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Run uint8 (B, 3, H, W) pixels through the pixel-input session."""
        name = f"{self.runtime_name}:{self._info.name}"
        if self._closed:
            raise EngineError(f"{self._info.name}: engine is closed")
        if self._pixel_session is None:
            raise EngineError(f"{name}: pixel input is not enabled (enable_pixel_input)")
        pixels = validate_pixels(pixels, self._info.input_shape, name)
        return run_chunked(pixels, self._fixed_batch, self._run_pixels, name,
                           pad=self._fixed_batch is not None)  # fmt: skip

    def _run_pixels(self, pixels: np.ndarray) -> list[np.ndarray]:
        session = self._pixel_session
        if session is None or self._closed:
            raise EngineError(f"{self._info.name}: engine is closed")
        return self._run_session(session, self._pixel_name, pixels, "pixels")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._session = None
            self._pixel_session = None


def _classify(exc: Exception, path: Path) -> Exception:
    """Map onnxruntime's session-creation exceptions to our typed errors."""
    kind = type(exc).__name__
    reason = one_line(exc)
    if kind in ("InvalidProtobuf", "NoSuchFile", "NoModel", "InvalidGraph", "Fail"):
        return ModelFileError(f"onnxruntime cannot load {path.name}: {kind}: {reason}")
    if kind == "EPFail":
        return RuntimeUnavailableError(f"onnxruntime execution provider failed: {reason}")
    if kind == "NotImplemented":
        return EngineError(f"onnxruntime does not support {path.name}: {reason}")
    return EngineError(f"onnxruntime session for {path.name} failed: {kind}: {reason}")


class OnnxRuntimeBuilder(Builder):
    """The cache's build step for ONNX Runtime: serialise the optimised graph.

    ONNX Runtime rewrites the graph (constant folding, fusions and, at level
    'all', CPU-specific NCHWc layouts) every time a session is created.
    Building writes that optimised graph once (`optimized_model_filepath`);
    loading opens it with optimisation disabled. Level 'all' output is tied to
    the CPU it was made on, which is why the cache key holds the device name.
    With `graph_rewrites` the rewritten graph is what gets optimised (and the
    runtime version in the key says so).
    """

    runtime = "onnxruntime"
    suffix = ".onnx"

    def __init__(
        self,
        device: str | Device = "cpu",
        *,
        level: str = "all",
        intra_op_threads: int | None = None,
        providers: Sequence[ProviderSpec] | None = None,
        input_shape: tuple[int, ...] = (),
        graph_rewrites: bool = True,
    ) -> None:
        super().__init__("fp32", input_shape)
        if level not in OPT_LEVELS or level == "disable":
            raise EngineError(f"build level must be basic, extended or all, got {level!r}")
        self.device = Device.parse(device)
        self.level = level
        self.intra_op_threads = intra_op_threads
        self.providers = providers
        self.graph_rewrites = graph_rewrites

    def runtime_version(self) -> str:
        # the build optimises the rewritten graph only where the engine
        # rewrites (CPU, onnx importable): only then may the key say so
        rewrites = "/rewrites1" if self._rewrites_apply() else ""
        return f"{import_onnxruntime().__version__}/{self.level}{rewrites}"

    def _rewrites_apply(self) -> bool:
        """The engine's own condition: asked for, CPU provider first, onnx
        importable (missing or broken: the engine runs the model as given)."""
        if not self.graph_rewrites:
            return False
        wanted = _requested_providers(self.device, self.providers or None)
        return bool(wanted) and wanted[0][0] == CPU_EP and _onnx_import_error() is None

    def device_name(self) -> str:
        return str(self.device) if self.device.is_cuda else cpu_name()

    def build(self, model_path: Path, artifact_path: Path, progress: ProgressFn) -> None:
        progress(0.05, f"optimising {model_path.name} with onnxruntime (level {self.level})")
        engine = OnnxRuntimeEngine(
            model_path,
            self.device,
            self.providers,
            intra_op_threads=self.intra_op_threads,
            graph_optimization=self.level,
            optimized_model_path=artifact_path,
            graph_rewrites=self.graph_rewrites,
        )
        engine.close()
        progress(1.0, f"wrote {artifact_path.name}")

    def load(self, artifact_path: Path) -> Engine:
        return OnnxRuntimeEngine(
            artifact_path,
            self.device,
            self.providers,
            intra_op_threads=self.intra_op_threads,
            graph_optimization="disable",
            graph_rewrites=False,  # applied before the build's optimisation
        )
