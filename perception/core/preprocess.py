"""Batched image preprocessing with an exact inverse mapping.

Each model family wants its images resized and laid out differently (YOLOX:
top-left letterbox, BGR, raw 0-255; Ultralytics YOLO: centred letterbox, RGB,
/255; RT-DETR: plain resize, RGB, /255). `Preprocessor` turns a list of uint8
HxWx3 images of any sizes into one NCHW float32 tensor and returns, per image,
the `ImageTransform` that maps boxes from tensor pixels back to that image.

Speed matters here (it is added to every inference): each image is resized
once with cv2 into a reused uint8 buffer, split into reused channel planes,
and each plane is converted, swapped and scaled straight into the reused
float tensor. The padding is written only when an image's placement in its
batch slot changes. Measured on 1920x1080 -> 640x384 (2-core CPU): resize
0.17-0.27 ms, split 0.01 ms, convert 0.13 ms (a stride-3 numpy read instead
of the split costs 0.24 ms). Downscales by an odd integer factor (1080p ->
640x360 is 3) skip the resize buffer and the split: bilinear is then a pure
gather, done per channel straight into the planes (`_gather_planes`; 20-24%
less preprocessing at batch 6, the same at batch 1, frames not in cache).

With `pixels=True` the float conversion is left to the engine (the scale
folded into the model, see perception/core/engines/pixel_input.py): the
image is resized and split straight into a reused uint8 NCHW buffer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from perception.core.errors import InputImageError

__all__ = ["ImageTransform", "PreprocessSpec", "Preprocessor", "check_image"]

ResizeMode = Literal["letterbox", "stretch"]
Align = Literal["center", "top_left"]


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model family wants its input tensor.

    Attributes:
        resize: "letterbox" keeps the aspect ratio and pads; "stretch" resizes
            to the tensor size (RT-DETR).
        align: where a letterboxed image sits: "center" (Ultralytics) or
            "top_left" (YOLOX).
        rgb: the model expects RGB channel order (images come in as BGR unless
            the caller says otherwise).
        scale: multiplier applied to 0-255 pixel values (1/255 or 1).
        mean, std: optional per-channel (model channel order) normalisation
            applied after `scale`: (x * scale - mean) / std.
        pad_value: 0-255 value of the letterbox border.
        stride: tensor sides are multiples of it when the model has dynamic
            spatial axes.
        rounding: how resized sides are rounded: "round" (Ultralytics) or
            "floor" (YOLOX's int()).
    """

    resize: ResizeMode = "letterbox"
    align: Align = "center"
    rgb: bool = True
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    pad_value: int = 114
    stride: int = 32
    rounding: Literal["round", "floor"] = "round"

    def __post_init__(self) -> None:
        if self.resize not in ("letterbox", "stretch"):
            raise ValueError(f"resize: expected 'letterbox' or 'stretch', got {self.resize!r}")
        if self.align not in ("center", "top_left"):
            raise ValueError(f"align: expected 'center' or 'top_left', got {self.align!r}")
        if self.rounding not in ("round", "floor"):
            raise ValueError(f"rounding: expected 'round' or 'floor', got {self.rounding!r}")
        if self.stride < 1:
            raise ValueError(f"stride: expected >= 1, got {self.stride}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) != 3:
                raise ValueError(f"{name}: expected 3 values, got {len(v)}")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError(f"std: expected non-zero values, got {self.std}")

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per model-channel (a, b) so that value = pixel * a + b."""
        mean = np.zeros(3) if self.mean is None else np.asarray(self.mean, dtype=np.float64)
        std = np.ones(3) if self.std is None else np.asarray(self.std, dtype=np.float64)
        a = self.scale / std
        b = -mean / std
        return a.astype(np.float32), b.astype(np.float32)


@dataclass(frozen=True)
class ImageTransform:
    """Where one image went in the batch tensor, and how to map boxes back.

    Tensor pixel x maps to original pixel (x - left) / scale_x with
    scale_x = resized_w / orig_w (exactly the resize that was applied, per
    axis, so non-uniform rounding of the resized size is undone exactly).
    """

    orig_size: tuple[int, int]  # (w, h) of the image as given
    resized_size: tuple[int, int]  # (w, h) after cv2.resize
    offset: tuple[int, int]  # (left, top) of the resized image in the tensor
    input_size: tuple[int, int]  # (W, H) of the batch tensor

    @property
    def scale(self) -> tuple[float, float]:
        """(scale_x, scale_y): tensor pixels per original pixel."""
        return (
            self.resized_size[0] / self.orig_size[0],
            self.resized_size[1] / self.orig_size[1],
        )

    def boxes_to_original(self, xyxy: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map (N, 4) xyxy boxes in tensor pixels to original-image pixels
        (new float32 array), clipped to the image by default."""
        sx, sy = self.scale
        left, top = self.offset
        out = np.empty((xyxy.shape[0], 4), dtype=np.float32)
        out[:, 0::2] = (xyxy[:, 0::2] - left) / sx
        out[:, 1::2] = (xyxy[:, 1::2] - top) / sy
        if clip:
            w, h = self.orig_size
            np.clip(out[:, 0::2], 0.0, w, out=out[:, 0::2])
            np.clip(out[:, 1::2], 0.0, h, out=out[:, 1::2])
        return out

    def boxes_to_input(self, xyxy: np.ndarray) -> np.ndarray:
        """Original-image pixels -> tensor pixels (the forward mapping)."""
        sx, sy = self.scale
        left, top = self.offset
        out = np.empty((xyxy.shape[0], 4), dtype=np.float32)
        out[:, 0::2] = xyxy[:, 0::2] * sx + left
        out[:, 1::2] = xyxy[:, 1::2] * sy + top
        return out


def check_image(image: object, index: int = 0) -> np.ndarray:
    """Validate one input image: uint8, H x W x 3, non-empty."""
    if not isinstance(image, np.ndarray):
        raise InputImageError(f"image {index}: expected numpy.ndarray, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputImageError(f"image {index}: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputImageError(
            f"image {index}: expected shape (H, W, 3) (3-channel colour), got {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputImageError(f"image {index}: expected a non-empty image, got {image.shape}")
    return image


def _odd_factor(h: int, w: int, rh: int, rw: int) -> int:
    """k when (w, h) -> (rw, rh) is a downscale by one odd integer factor
    k >= 3 on both axes (bilinear then samples single pixels), else 0."""
    k = h // rh
    return k if k >= 3 and k % 2 == 1 and rh * k == h and rw * k == w else 0


def _rows_for_odd_factor(img: np.ndarray, rw: int, rh: int) -> np.ndarray:
    """Rows that a bilinear downscale by an odd integer factor k actually uses.

    With k odd, cv2's INTER_LINEAR samples source row k*y + (k-1)/2 with
    weight exactly 1 (its neighbour gets exactly 0), so resizing only those
    rows (a strided view, no copy) gives a bit-identical result while reading
    1/k of the frame from memory (1920x1080 -> 640x360 is k = 3).
    """
    k = _odd_factor(img.shape[0], img.shape[1], rh, rw)
    return img[(k - 1) // 2 :: k] if k else img


# (h, w, k) -> whether the plane gather below equals cv2.resize INTER_LINEAR
# with this OpenCV build (checked once per geometry on a synthetic image).
_GATHER_OK: dict[tuple[int, int, int], bool] = {}


def _odd_factor_views(img: np.ndarray, k: int) -> list[np.ndarray]:
    """Per channel c, a read-only (h/k, 3w) uint8 byte view of the rows a
    k-odd downscale uses, starting c - 1 bytes before the row (see
    `_gather_planes`). For C-contiguous HxWx3 uint8 images and k >= 3: numpy
    checks that every view lies inside the image buffer."""
    h, w = img.shape[:2]
    row = 3 * w
    first = (k - 1) // 2 * row
    shape, strides = (h // k, row), (k * row, 1)
    views = [
        np.ndarray(shape, np.uint8, buffer=img, offset=first + c - 1, strides=strides)
        for c in range(3)
    ]
    for v in views:
        v.flags.writeable = False
    return views


def _gather_planes(img: np.ndarray, rw: int, rh: int, planes: Sequence[np.ndarray]) -> bool:
    """Write `img` downscaled to (rw, rh) into three uint8 planes (planes[c]
    gets source channel c), bit-identical to cv2.resize INTER_LINEAR, when the
    downscale is by an odd integer factor k; return False (nothing written)
    otherwise.

    Why: at an odd factor bilinear picks source pixel (k*x + (k-1)/2, k*y +
    (k-1)/2) with weight exactly 1, a pure gather. Seen as one byte row of
    width 3w, channel c of that pixel is byte 3k*x + (3k-1)/2 + (c - 1), and
    INTER_NEAREST_EXACT from width 3w to rw picks byte 3k*x + (3k-1)/2: so
    one single-channel nearest resize per channel, from a byte view that
    starts c - 1 bytes off, writes each plane straight from the frame (no
    interleaved intermediate, no split; 1920x1080 -> 640x360: 0.44 vs 0.63 ms
    for resize + split on this project's 2-core CPU, frame not in cache).
    """
    h, w = img.shape[:2]
    k = _odd_factor(h, w, rh, rw)
    if not (
        k and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        and img.flags.c_contiguous
    ):  # fmt: skip
        return False
    key = (h, w, k)
    ok = _GATHER_OK.get(key)
    if ok is None:
        ok = _GATHER_OK[key] = _gather_matches_linear(h, w, k)
    if ok:
        _nearest_planes(img, k, planes)
    return ok


def _nearest_planes(img: np.ndarray, k: int, planes: Sequence[np.ndarray] | np.ndarray) -> None:
    """The gather itself: one nearest-exact resize per channel view."""
    import cv2

    for view, plane in zip(_odd_factor_views(img, k), planes, strict=True):
        size = (plane.shape[1], plane.shape[0])
        got = cv2.resize(view, size, dst=plane, interpolation=cv2.INTER_NEAREST_EXACT)
        if got is not plane:  # cv2 could not write into that view
            np.copyto(plane, got)


def _gather_matches_linear(h: int, w: int, k: int) -> bool:
    """Whether the gather equals cv2.resize INTER_LINEAR for this geometry,
    on a pattern where neighbouring bytes and rows differ (guards against an
    OpenCV build whose nearest-exact rounding differs). The full width, but
    only a few rows of the same output-row parity: the column mapping depends
    on the widths only, the row mapping is the identity (1 ms, not 90)."""
    import cv2

    if not hasattr(cv2, "INTER_NEAREST_EXACT"):
        return False
    rh, rw = min(h // k, 8 + (h // k) % 2), w // k
    h = rh * k
    n = h * w * 3
    img = ((np.arange(n, dtype=np.uint64) * 2654435761) >> 13).astype(np.uint8).reshape(h, w, 3)
    want = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR)
    got = np.empty((3, rh, rw), dtype=np.uint8)
    _nearest_planes(img, k, got)
    return np.array_equal(got, want.transpose(2, 0, 1))


class Preprocessor:
    """Letterbox/resize a list of images into one reusable NCHW float32 tensor.

    Args:
        spec: family layout (see `PreprocessSpec`).
        input_hw: (H, W) of the model input; -1 (or None) for a dynamic axis.
        target_hw: (H, W) the images are fitted into when the model has dynamic
            spatial axes (e.g. Ultralytics' imgsz); ignored for fixed shapes.
        rect: with dynamic spatial axes, shrink the tensor to the smallest
            stride multiple that holds the letterboxed images (less work for
            the network); False pads to `target_hw`.
        input_color: channel order of the images given to `__call__`.
        pixels: return uint8 (N, 3, H, W) letterboxed pixels in the model's
            channel order instead of the float tensor (tensor = pixels * scale),
            for an engine with the scale folded into the model
            (`Engine.enable_pixel_input`); `pixel_input()` says what to fold.

    The returned tensor is owned by the preprocessor and overwritten by the
    next call: engines consume it synchronously, copy it if you keep it.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        input_hw: tuple[int, int] | None = None,
        target_hw: tuple[int, int] | None = None,
        *,
        rect: bool = True,
        input_color: Literal["bgr", "rgb"] = "bgr",
        pixels: bool = False,
    ) -> None:
        if input_color not in ("bgr", "rgb"):
            raise ValueError(f"input_color: expected 'bgr' or 'rgb', got {input_color!r}")
        self.spec = spec
        h, w = input_hw if input_hw is not None else (-1, -1)
        self.fixed_hw: tuple[int, int] | None = (
            (int(h), int(w)) if h is not None and w is not None and h > 0 and w > 0 else None
        )
        if self.fixed_hw is None:
            if target_hw is None:
                raise ValueError(
                    "target_hw: expected (H, W) for a model with dynamic spatial axes, got None"
                )
            self.target_hw = (int(target_hw[0]), int(target_hw[1]))
        else:
            self.target_hw = self.fixed_hw
        if min(self.target_hw) <= 0:
            raise ValueError(f"target_hw: expected positive sides, got {self.target_hw}")
        self.rect = rect
        self.swap = (input_color == "bgr") == spec.rgb
        a, b = spec.affine()
        self._a = a
        self._b = b
        self._plain = bool(np.all(a == 1.0) and np.all(b == 0.0))
        self.pixels = bool(pixels)
        if self.pixels and np.any(b != 0.0):
            raise ValueError(
                "pixels=True needs a preprocessing without mean offset (it cannot be folded)"
            )
        self._pad = (np.float32(spec.pad_value) * a + b).astype(np.float32)
        self._batch: np.ndarray | None = None
        self._slots: list[tuple[int, int, int, int] | None] = []
        self._resized: dict[tuple[int, int], np.ndarray] = {}
        self._planes: dict[tuple[int, int], list[np.ndarray]] = {}
        self._canvas: np.ndarray | None = None
        self._pixel_slots: list[tuple[int, int, int, int] | None] = []

    # ------------------------------------------------------------ geometry
    def _resized_size(self, w: int, h: int) -> tuple[int, int]:
        th, tw = self.target_hw
        if self.spec.resize == "stretch":
            return tw, th
        r = min(th / h, tw / w)
        if self.spec.rounding == "round":
            return max(round(w * r), 1), max(round(h * r), 1)
        return max(int(w * r), 1), max(int(h * r), 1)

    def plan(self, sizes: Sequence[tuple[int, int]]) -> list[ImageTransform]:
        """Transforms for images of the given (w, h) sizes, without pixels."""
        resized = [self._resized_size(w, h) for w, h in sizes]
        th, tw = self.target_hw
        if self.fixed_hw is not None or not self.rect or self.spec.resize == "stretch":
            bh, bw = th, tw
        else:
            s = self.spec.stride
            # Ultralytics' minimum rectangle: pad up by (target - size) mod stride,
            # so a side equal to the target stays the target.
            bw = max(
                tw - ((tw - rw) // s) * s if rw <= tw else math.ceil(rw / s) * s
                for rw, _ in resized
            )
            bh = max(
                th - ((th - rh) // s) * s if rh <= th else math.ceil(rh / s) * s
                for _, rh in resized
            )
        out = []
        for (w, h), (rw, rh) in zip(sizes, resized, strict=True):
            if self.spec.align == "center":
                left = round((bw - rw) / 2 - 0.1)
                top = round((bh - rh) / 2 - 0.1)
            else:
                left = top = 0
            out.append(ImageTransform((w, h), (rw, rh), (left, top), (bw, bh)))
        return out

    def pixel_input(self) -> tuple[tuple[float, float, float], tuple[int, int, int]] | None:
        """(scale per model channel, source pixel channel per model channel)
        that an engine folds in to take this preprocessor's pixels, or None
        when the normalisation has an offset (not foldable)."""
        if np.any(self._b != 0.0):
            return None
        # the pixels are written in model channel order already (the swap is
        # free in cv2.split), so only the scale is left to fold
        return (float(self._a[0]), float(self._a[1]), float(self._a[2])), (0, 1, 2)

    # ------------------------------------------------------------ pixels
    def _buffer(self, n: int, h: int, w: int) -> np.ndarray:
        if self._batch is None or self._batch.shape != (n, 3, h, w):
            self._batch = np.empty((n, 3, h, w), dtype=np.float32)
            self._slots = [None] * n
        return self._batch

    def _resize(self, img: np.ndarray, rw: int, rh: int) -> np.ndarray:
        """The image at (rw, rh): itself, or resized into a reused buffer."""
        if (rw, rh) == (img.shape[1], img.shape[0]):
            return img
        buf = self._resized.get((rh, rw))
        if buf is None:
            buf = self._resized[(rh, rw)] = np.empty((rh, rw, 3), dtype=np.uint8)
        import cv2

        return cv2.resize(
            _rows_for_odd_factor(img, rw, rh), (rw, rh), dst=buf, interpolation=cv2.INTER_LINEAR
        )

    def __call__(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[ImageTransform]]:
        """Return (batch tensor (N, 3, H, W) float32, per-image transforms)."""
        import cv2

        if len(images) == 0:
            raise InputImageError("images: expected at least one image, got an empty list")
        for i, img in enumerate(images):
            check_image(img, i)
        transforms = self.plan([(int(im.shape[1]), int(im.shape[0])) for im in images])
        if self.pixels:
            return self._letterbox_pixels(images, transforms), transforms
        bw, bh = transforms[0].input_size
        batch = self._buffer(len(images), bh, bw)
        for i, (img, tf) in enumerate(zip(images, transforms, strict=True)):
            rw, rh = tf.resized_size
            left, top = tf.offset
            region = (left, top, rw, rh)
            slot = batch[i]
            if self._slots[i] != region:
                for c in range(3):
                    slot[c].fill(self._pad[c])
                self._slots[i] = region
            # De-interleave into reused planes (an exact gather for odd
            # factors, else resize + cv2.split: SIMD, ~10x faster than reading
            # a stride-3 view), then one contiguous convert per channel
            # straight into the tensor.
            reused = self._planes.get((rh, rw))
            if reused is None:
                reused = self._planes[(rh, rw)] = [
                    np.empty((rh, rw), dtype=np.uint8) for _ in range(3)
                ]
            planes: Sequence[np.ndarray] = reused
            if not _gather_planes(img, rw, rh, reused):
                planes = cv2.split(self._resize(img, rw, rh), reused)
            for c in range(3):
                dst = slot[c, top : top + rh, left : left + rw]
                plane = planes[2 - c if self.swap else c]
                if self._plain:
                    np.copyto(dst, plane, casting="unsafe")
                else:
                    np.multiply(plane, self._a[c], out=dst, casting="unsafe")
                    if self._b[c] != 0:
                        dst += self._b[c]
        return batch, transforms

    def _letterbox_pixels(
        self, images: Sequence[np.ndarray], transforms: list[ImageTransform]
    ) -> np.ndarray:
        """uint8 (N, 3, H, W) in model channel order: each image resized once
        into a reused buffer and split straight into its channel planes of a
        reused canvas; the border is written only when the placement changes."""
        import cv2

        bw, bh = transforms[0].input_size
        n = len(images)
        canvas = self._canvas
        if canvas is None or canvas.shape != (n, 3, bh, bw):
            canvas = self._canvas = np.empty((n, 3, bh, bw), dtype=np.uint8)
            self._pixel_slots = [None] * n
        for i, (img, tf) in enumerate(zip(images, transforms, strict=True)):
            rw, rh = tf.resized_size
            left, top = tf.offset
            region = (left, top, rw, rh)
            if self._pixel_slots[i] != region:
                canvas[i].fill(self.spec.pad_value)
                self._pixel_slots[i] = region
            planes = [canvas[i, c, top : top + rh, left : left + rw] for c in range(3)]
            if self.swap:
                planes.reverse()
            if _gather_planes(img, rw, rh, planes):
                continue
            out = cv2.split(self._resize(img, rw, rh), planes)
            for got, want in zip(out, planes, strict=True):
                if got is not want:  # cv2 could not write into that view
                    np.copyto(want, got)
        return canvas
