"""Helpers shared by the engines: batch validation, fixed-batch chunking,
one-line error text and the CPU name. Private to the engines package."""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from perception.core.errors import EngineError, InputImageError

_log = logging.getLogger(__name__)

_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def one_line(exc: BaseException, limit: int = 300) -> str:
    """First non-empty line of an exception's text, shortened: runtimes often
    put multi-kilobyte dumps in their messages."""
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def cpu_name() -> str:
    """A stable CPU model string for cache keys (optimised graphs can be ISA specific)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def validate_batch(
    batch: object,
    input_shape: Sequence[int],
    engine: str,
    accepted: Sequence[type] = (np.float32,),
) -> np.ndarray:
    """Check an NCHW batch against a model input; return it C-contiguous.

    `input_shape` uses -1 for dynamic axes. Every failure is an InputImageError
    naming expected and actual values.
    """
    if not isinstance(batch, np.ndarray):
        raise InputImageError(
            f"{engine}: expected a numpy.ndarray batch, got {type(batch).__name__}"
        )
    if batch.ndim != 4:
        raise InputImageError(
            f"{engine}: expected a 4-D (B, C, H, W) batch, "
            f"got ndim={batch.ndim} shape {batch.shape}"
        )
    dtypes = list(dict.fromkeys(np.dtype(t) for t in accepted))
    if batch.dtype not in dtypes:
        names = " or ".join(d.name for d in dtypes)
        raise InputImageError(f"{engine}: expected dtype {names}, got {batch.dtype.name}")
    if 0 in batch.shape:
        raise InputImageError(f"{engine}: zero-size batch, shape {batch.shape}")
    labels = ("batch", "channels", "height", "width")
    for axis in (1, 2, 3):
        want = input_shape[axis]
        if want > 0 and batch.shape[axis] != want:
            raise InputImageError(
                f"{engine}: expected {labels[axis]}={want} (model input {tuple(input_shape)}), "
                f"got {batch.shape[axis]} in batch shape {batch.shape}"
            )
    if not batch.flags.c_contiguous:
        batch = np.ascontiguousarray(batch)
    return batch


def validate_pixels(pixels: object, input_shape: Sequence[int], engine: str) -> np.ndarray:
    """`validate_batch` for uint8 (B, 3, H, W) pixels (pixel input), with the
    expected layout named when the shape is wrong."""
    if isinstance(pixels, np.ndarray) and (pixels.ndim != 4 or pixels.shape[1] != 3):
        raise InputImageError(f"{engine}: expected (B, 3, H, W) pixels, got shape {pixels.shape}")
    return validate_batch(pixels, input_shape, engine, accepted=(np.uint8,))


def run_chunked(
    batch: np.ndarray,
    chunk: int | None,
    run: Callable[[np.ndarray], list[np.ndarray]],
    engine: str,
    *,
    pad: bool,
) -> list[np.ndarray]:
    """Run `batch` in pieces of at most `chunk` images.

    `pad=True` (fixed-batch model) pads the last piece with zeros up to
    `chunk` and slices the padding off again. `chunk=None` runs everything at
    once. Outputs must carry the batch on axis 0; they are concatenated back.
    """
    n = batch.shape[0]
    if chunk is None or (n == chunk) or (n < chunk and not pad):
        return _check_outputs(run(batch), n, engine)
    pieces: list[list[np.ndarray]] = []
    for start in range(0, n, chunk):
        part = batch[start : start + chunk]
        m = part.shape[0]
        if pad and m < chunk:
            filler = np.zeros((chunk - m, *part.shape[1:]), dtype=part.dtype)
            part = np.concatenate([part, filler], axis=0)
        outs = _check_outputs(run(part), part.shape[0], engine)
        pieces.append([o[:m] for o in outs])
    if len(pieces) == 1:
        return [np.ascontiguousarray(o) for o in pieces[0]]
    return [np.concatenate(parts, axis=0) for parts in zip(*pieces, strict=True)]


def _check_outputs(outputs: list[np.ndarray], n: int, engine: str) -> list[np.ndarray]:
    for i, out in enumerate(outputs):
        if out.ndim == 0 or out.shape[0] != n:
            raise EngineError(
                f"{engine}: output {i} has shape {out.shape}, expected a leading batch axis of {n}"
            )
    return outputs
