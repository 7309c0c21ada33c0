"""The engine interface every runtime implements.

An engine maps a preprocessed NCHW float batch to the model's raw output
arrays. Everything model-family specific (letterbox, decoding, NMS) lives
outside, so one detector pipeline runs on ONNX Runtime, TensorRT or PyTorch.
What nodes and pipelines ask of any engine (build status, swaps, a
diagnostics summary) is part of this interface with defaults, so callers
never probe concrete engine classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from perception.core.engines.pixel_input import PixelInput
from perception.core.errors import EngineError

__all__ = ["BuildStatus", "Engine", "EngineInfo"]


@dataclass(frozen=True)
class EngineInfo:
    """What a pipeline needs to know about a loaded model.

    `input_shape` is (B, C, H, W) with -1 for a dynamic axis. `metadata` holds
    the model's string metadata (for ONNX: custom_metadata_map, e.g.
    Ultralytics' `names`, `stride`, `imgsz`, `task`).
    """

    name: str
    runtime: str
    device: str
    precision: str
    input_name: str
    input_shape: tuple[int, int, int, int]
    input_dtype: str
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    metadata: dict[str, str] = field(default_factory=dict)
    # Added by the engines layer (defaults keep older constructors valid):
    # per input axis the symbolic name of a dynamic axis ("" when fixed or
    # unnamed), e.g. ("batch", "", "height", "width").
    input_symbols: tuple[str, ...] = ()
    # Runtime specifics, e.g. the ONNX Runtime providers actually in use.
    providers: tuple[str, ...] = ()
    # Largest batch one runtime call accepts (-1: unbounded). Engines chunk
    # larger batches themselves; pipelines may use it to size requests.
    max_batch: int = -1

    @property
    def dynamic_batch(self) -> bool:
        return self.input_shape[0] < 0

    @property
    def dynamic_hw(self) -> bool:
        return self.input_shape[2] < 0 or self.input_shape[3] < 0


@dataclass(frozen=True)
class BuildStatus:
    """What a node can poll or log: stage, progress and who serves `infer`.

    stage: 'loading_cache', 'building', 'loading', 'ready', 'failed', 'closed'.
    serving: 'cache' (artifact loaded from disk), 'build' (freshly built),
    'fallback', or 'none'.
    """

    stage: str
    fraction: float
    message: str
    serving: str
    error: str | None = None
    artifact: str | None = None
    elapsed_s: float = 0.0

    @property
    def done(self) -> bool:
        return self.stage in ("ready", "failed", "closed")

    def describe(self) -> dict[str, str]:
        """The `build.*` diagnostics values (fraction with two decimals)."""
        return {
            "build.stage": self.stage,
            "build.fraction": f"{self.fraction:.2f}",
            "build.serving": self.serving,
            "build.message": self.message,
            "build.error": self.error or "",
        }


class Engine(ABC):
    """Runs a batch through a model.

    `infer` takes an (B, C, H, W) float32 C-contiguous array and returns the
    output arrays with a leading batch axis of exactly B. A runtime with a
    fixed batch size pads internally and slices the results back.
    """

    generation: int = 0
    """Increments whenever another engine starts serving behind this one
    (CachedEngine swaps); a pipeline re-reads `info` when it changes. A plain
    attribute, so an engine that swaps just assigns it."""

    @property
    @abstractmethod
    def info(self) -> EngineInfo: ...

    @abstractmethod
    def infer(self, batch: np.ndarray) -> list[np.ndarray]: ...

    # ------------------------------------------------------- what nodes ask
    @property
    def build_status(self) -> BuildStatus | None:
        """Progress of a background engine build (CachedEngine), or None when
        this engine builds nothing."""
        return None

    @property
    def graph_rewrites(self) -> int:
        """How many places of the model graph run rewritten (0: as given)."""
        return 0

    def describe(self) -> dict[str, str]:
        """One flat string summary for diagnostics and logs: `engine` (the
        model name), `runtime`, `device`, `precision`; the `build.*` keys of
        `build_status` while one exists; `graph_rewrites` when non-zero."""
        info = self.info
        out = {
            "engine": info.name,
            "runtime": info.runtime,
            "device": info.device,
            "precision": info.precision,
        }
        status = self.build_status
        if status is not None:
            out.update(status.describe())
        if rewrites := self.graph_rewrites:
            out["graph_rewrites"] = str(rewrites)
        return out

    # ------------------------------------------------------------ pixel input
    @property
    def pixel_input(self) -> PixelInput | None:
        """The folded pixel preprocessing in use, or None (float NCHW input)."""
        return None

    def enable_pixel_input(self, pixel: PixelInput, release_float: bool = True) -> str | None:
        """Let `infer_pixels` take uint8 (B, 3, H, W) pixels, with the scale and
        channel order of `pixel` folded into the model (see
        `perception.core.engines.pixel_input`). Returns None when enabled, else
        the one-line reason it cannot be (the float path keeps working)."""
        return f"the {self.info.runtime} engine takes float NCHW input only"

    def infer_pixels(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Run uint8 (B, 3, H, W) letterboxed pixels (after `enable_pixel_input`)."""
        raise EngineError(f"{self.info.name}: pixel input is not enabled on this engine")

    def close(self) -> None:  # noqa: B027  # optional hook for runtimes holding devices
        """Release device memory and sessions; the engine is unusable afterwards."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
