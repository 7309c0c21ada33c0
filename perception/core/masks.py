"""Instance masks from Ultralytics-style prototypes, computed inside each box.

A YOLOv8/YOLO11 segmentation head gives, per detection, `nm` coefficients
and, per image, `nm` prototype maps at 1/4 of the input tensor. The mask
logits of a detection are ``coefficients @ prototypes``; Ultralytics'
original-resolution path (``retina_masks=True``,
``ultralytics.utils.ops.process_mask_native``) then

1. upsamples the logits by a factor f in {1, 2, 4} (bilinear,
   ``align_corners=False``), the smallest f at which the letterbox padding
   falls on whole pixels,
2. crops the letterboxed image's region and resizes it bilinearly to the
   original image size,
3. thresholds at 0 (sigmoid > 0.5) and keeps only pixels inside the box
   (column c is inside when ``x1 <= c < x2``, rows alike).

It does so for the whole frame, per instance. Both resizes are separable
linear maps, so here each axis is one precomputed (out, proto) weight matrix
(the product of the two resizes, cached per geometry) and only the box region
is computed: rows ``Wy[y0:y1]`` and columns ``Wx[x0:x1]``, which touch a few
prototype cells, so per instance the cost is that of the box, not the frame.
The values are the same linear combination of the same logits, so the result
equals Ultralytics' up to float rounding at logits of about 0.

The products are split into row blocks small enough that BLAS runs each on
the calling thread (OpenBLAS threads a GEMM from M*N*K = 262144 on): threaded
BLAS on such small products gains little when the machine is idle and, when
other processes keep the cores busy, its threads wait on each other for
milliseconds per call (measured: median 1.4 -> 7 ms, p90 170 ms for 20
instances at 1080p on a loaded 2-core machine).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from perception.core.preprocess import ImageTransform
from perception.core.types import InstanceMasks

__all__ = ["AxisWeights", "MaskGeometry", "bilinear_matrix", "mask_geometry", "process_masks"]

PROTO_STRIDE = 4  # prototypes are at 1/4 of the input tensor (Ultralytics Proto)
GEMM_BLOCK = 196_608  # M*N*K per matmul call, under OpenBLAS' threading threshold


def _matmul_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b (float32) in row blocks of at most GEMM_BLOCK multiply-adds, so
    the BLAS call stays single-threaded (see the module docstring)."""
    m = a.shape[0]
    per_row = max(a.shape[1] * b.shape[1], 1)
    step = max(GEMM_BLOCK // per_row, 1)
    if step >= m:
        out: np.ndarray = a @ b
        return out
    out = np.empty((m, b.shape[1]), dtype=np.float32)
    for start in range(0, m, step):
        np.matmul(a[start : start + step], b, out=out[start : start + step])
    return out


def bilinear_matrix(n_in: int, n_out: int, scale: float | None = None) -> np.ndarray:
    """(n_out, n_in) float64 weights of a 1-D bilinear resize with
    ``align_corners=False`` (PyTorch's ``F.interpolate`` / OpenCV's
    INTER_LINEAR sampling): output d samples input ``scale * (d + 0.5) - 0.5``,
    clamped to the first and last input sample. `scale` defaults to
    n_in / n_out (a resize to a given size); ``F.interpolate(scale_factor=f)``
    uses 1 / f."""
    if scale is None:
        scale = n_in / n_out
    out = np.zeros((n_out, n_in), dtype=np.float64)
    src = np.maximum(scale * (np.arange(n_out) + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = src - i0
    i1 = np.minimum(i0 + 1, n_in - 1)
    rows = np.arange(n_out)
    np.add.at(out, (rows, i0), 1.0 - lam)
    np.add.at(out, (rows, i1), lam)
    return out


@dataclass(frozen=True)
class AxisWeights:
    """One axis of the prototype -> original-image resize.

    `matrix` (n_out, n_proto) float32 and its transpose `matrix_t`
    (contiguous); `lo`/`hi` (n_out,) the first and one past the last
    prototype index with a non-zero weight for each output pixel (both
    non-decreasing), so a box's rows need prototypes ``lo[y0]:hi[y1 - 1]``
    only."""

    matrix: np.ndarray
    matrix_t: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def build(cls, n_proto: int, n_out: int, factor: int, start: int, stop: int) -> AxisWeights:
        """`factor`-fold upsample of `n_proto` samples, crop [start, stop) of
        that, resize to `n_out` (Ultralytics' process_mask_native order)."""
        up = bilinear_matrix(n_proto, n_proto * factor, 1.0 / factor) if factor > 1 else None
        span = stop - start
        down = bilinear_matrix(span, n_out) if span != n_out else np.eye(n_out)
        full = down @ (up[start:stop] if up is not None else np.eye(n_proto)[start:stop])
        nz = full != 0
        lo = nz.argmax(axis=1)
        hi = n_proto - nz[:, ::-1].argmax(axis=1)
        matrix = np.ascontiguousarray(full, dtype=np.float32)
        return cls(matrix, np.ascontiguousarray(matrix.T), lo, hi)


@dataclass(frozen=True)
class MaskGeometry:
    """Per-axis weights from prototypes (mh, mw) to an original image."""

    rows: AxisWeights
    cols: AxisWeights
    factor: int


_CACHE: OrderedDict[tuple[int, ...], MaskGeometry] = OrderedDict()
_CACHE_SIZE = 16


def mask_geometry(proto_hw: tuple[int, int], tf: ImageTransform) -> MaskGeometry:
    """The resize weights for one letterbox geometry (cached).

    The content of the letterboxed image is ``tf.offset`` + ``tf.resized_size``
    in the input tensor; prototypes cover the tensor at 1/4. Ultralytics
    upsamples by f = 4 // gcd(4, pad | pad // 2) with pad the total padding
    (both axes OR-ed), so that the content's edges are whole pixels at f/4
    of the input; with this project's centred letterbox (the same rounding as
    Ultralytics' LetterBox) that gives the same crop as its formula. Where
    the edges are not whole at that f (another alignment, a smaller image
    inside a larger batch tensor), f = 4 is used: the crop is then exact in
    input pixels.
    """
    mh, mw = proto_hw
    (w, h), (rw, rh), (left, top) = tf.orig_size, tf.resized_size, tf.offset
    key = (mh, mw, w, h, rw, rh, left, top)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    in_h, in_w = mh * PROTO_STRIDE, mw * PROTO_STRIDE
    pad = (in_h - rh) | (in_w - rw)
    factor = PROTO_STRIDE // math.gcd(PROTO_STRIDE, max(pad, 0) | (max(pad, 0) // 2))
    edges = (top, top + rh, left, left + rw)
    if pad < 0 or any((e * factor) % PROTO_STRIDE for e in edges):
        factor = PROTO_STRIDE
    t, b, lft, r = (e * factor // PROTO_STRIDE for e in edges)
    geo = MaskGeometry(
        AxisWeights.build(mh, h, factor, t, b), AxisWeights.build(mw, w, factor, lft, r), factor
    )
    _CACHE[key] = geo
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return geo


def crop_boxes(xyxy: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) int32 pixel ranges of float boxes the way Ultralytics' crop_mask
    selects pixels (column c inside when x1 <= c < x2): ceil of each edge,
    clipped to the image."""
    w, h = image_size
    out = np.ceil(xyxy.astype(np.float64))
    np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    out[:, 2] = np.maximum(out[:, 2], out[:, 0])
    out[:, 3] = np.maximum(out[:, 3], out[:, 1])
    return out.astype(np.int32)


def process_masks(
    protos: np.ndarray,
    coefficients: np.ndarray,
    xyxy: np.ndarray,
    tf: ImageTransform,
) -> InstanceMasks:
    """Binary masks at original resolution, each computed inside its box.

    Args:
        protos: (nm, mh, mw) prototypes of one image (the model's second
            output, at 1/4 of the input tensor).
        coefficients: (N, nm) mask coefficients of the kept detections.
        xyxy: (N, 4) their boxes in original-image pixels (clipped).
        tf: how the image was letterboxed into the tensor.

    Same result as Ultralytics' ``process_mask_native`` (the predictor with
    ``retina_masks=True``), but only the box region of each instance is
    interpolated and thresholded.
    """
    nm, mh, mw = protos.shape
    n = int(coefficients.shape[0])
    size = tf.orig_size
    if n == 0:
        return InstanceMasks.empty(size)
    geo = mask_geometry((mh, mw), tf)
    boxes = crop_boxes(xyxy, size)
    coef = np.ascontiguousarray(coefficients, dtype=np.float32)
    rows_w, cols_w = geo.rows, geo.cols
    crops: list[np.ndarray] = []
    for i in range(n):
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        if x1 <= x0 or y1 <= y0:
            crops.append(np.zeros((y1 - y0, x1 - x0), dtype=bool))
            continue
        r0, r1 = int(rows_w.lo[y0]), int(rows_w.hi[y1 - 1])
        c0, c1 = int(cols_w.lo[x0]), int(cols_w.hi[x1 - 1])
        sub = protos[:, r0:r1, c0:c1].astype(np.float32, copy=False)
        logits = (coef[i] @ sub.reshape(nm, -1)).reshape(r1 - r0, c1 - c0)
        wy = rows_w.matrix[y0:y1, r0:r1]  # (bh, rr)
        wx_t = cols_w.matrix_t[c0:c1, x0:x1]  # (cc, bw)
        bh, bw, rr, cc = y1 - y0, x1 - x0, r1 - r0, c1 - c0
        if rr * cc * bw + bh * rr * bw <= bh * rr * cc + bh * cc * bw:
            full = _matmul_rows(wy, _matmul_rows(logits, wx_t))
        else:
            full = _matmul_rows(_matmul_rows(wy, logits), wx_t)
        crops.append(full > 0.0)
    return InstanceMasks(boxes, tuple(crops), size)
