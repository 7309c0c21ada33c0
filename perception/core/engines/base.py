"""The engine interface every runtime implements.

An engine maps a preprocessed NCHW float batch to the model's raw output
arrays. Everything model-family specific (letterbox, decoding, NMS) lives
outside, so one detector pipeline runs on ONNX Runtime, TensorRT or PyTorch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from perception.core.engines.pixel_input import PixelInput
from perception.core.errors import EngineError

__all__ = ["Engine", "EngineInfo"]


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


class Engine(ABC):
    """Runs a batch through a model.

    `infer` takes an (B, C, H, W) float32 C-contiguous array and returns the
    output arrays with a leading batch axis of exactly B. A runtime with a
    fixed batch size pads internally and slices the results back.
    """

    @property
    @abstractmethod
    def info(self) -> EngineInfo: ...

    @abstractmethod
    def infer(self, batch: np.ndarray) -> list[np.ndarray]: ...

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
