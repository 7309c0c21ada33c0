"""Camera messages -> numpy, without ROS and without needless copies.

The decode of sensor_msgs/Image (raw encodings) and CompressedImage lives
here, ROS-free, because two kinds of callers need it: the nodes (rclpy
messages, via `perception.ros.images`) and replay (rosbags messages read from
a bag, no ROS installed). Both message kinds have the same fields, so the
functions take any object with them (`encoding`, `height`, `width`, `step`,
`is_bigendian`, `data`; `format` and `data` for CompressedImage).

`image_to_array` returns a view on the message buffer (np.frombuffer plus
strides for padded rows), so a 1080p frame costs no copy until the detector
resizes it. Every malformed message raises `ImageDecodeError` whose `kind`
names the counter a node increments ("encoding", "size", "step",
"truncated", "corrupt", "too_large", "format_mismatch", "unsupported_format").

Nothing is allocated for an image before its size is known and within the
caller's pixel budget (`max_pixels`): a raw image's width x height is checked
against the budget and its step and data length before any view or copy, and
a compressed image's header is read first (`compressed_header`: the format
sniffed from the bytes, PNG IHDR or JPEG SOF dimensions), so a 68-byte PNG
that declares 65535x65535 is refused in microseconds instead of reaching
the decoder. Only JPEG and PNG are decoded; the declared `format` must agree
with the bytes (a TIFF, WebP or PPM labelled "jpeg" is refused).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np

from perception.core.errors import InputImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEPTH_ENCODINGS",
    "ENCODINGS",
    "CompressedHeader",
    "ImageDecodeError",
    "compressed_header",
    "compressed_to_bgr",
    "image_to_array",
    "image_to_bgr",
]

# encoding -> (numpy dtype, channels, channel order for colour conversion)
ENCODINGS: dict[str, tuple[np.dtype, int, str]] = {
    "bgr8": (np.dtype(np.uint8), 3, "bgr"),
    "rgb8": (np.dtype(np.uint8), 3, "rgb"),
    "bgra8": (np.dtype(np.uint8), 4, "bgra"),
    "rgba8": (np.dtype(np.uint8), 4, "rgba"),
    "mono8": (np.dtype(np.uint8), 1, "mono"),
    "8UC1": (np.dtype(np.uint8), 1, "mono"),
    "8UC3": (np.dtype(np.uint8), 3, "bgr"),
    "mono16": (np.dtype(np.uint16), 1, "mono"),
    "16UC1": (np.dtype(np.uint16), 1, "mono"),
    "32FC1": (np.dtype(np.float32), 1, "mono"),
}

DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
"""Registered depth images: millimetres (16UC1, mono16) or metres (32FC1)."""


DEFAULT_MAX_PIXELS = 9_000_000
"""Pixel budget of one frame when the caller gives none (the detector spec's
`cameras.<n>.max_pixels` default: a little above 4K UHD)."""

DECODED_FORMATS = ("jpeg", "png")
"""Compressed formats that are decoded; anything else is refused by its header."""

# leading bytes -> format, for the formats refused by name
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"BM", "bmp"),
    (b"GIF8", "gif"),
    (b"\x00\x00\x00\x0cjP  ", "jpeg2000"),
    (b"\xff\x4f\xff\x51", "jpeg2000"),
    (b"\x76\x2f\x31\x01", "openexr"),
    (b"#?RADIANCE", "hdr"),
    (b"#?RGBE", "hdr"),
    (b"\x59\xa6\x6a\x95", "sunraster"),
)
_FORMAT_WORDS = {
    "jpeg": "jpeg", "jpg": "jpeg", "png": "png", "tiff": "tiff", "tif": "tiff",
    "webp": "webp", "bmp": "bmp", "gif": "gif", "ppm": "pnm", "pgm": "pnm", "pbm": "pnm",
    "pnm": "pnm", "pam": "pnm", "jp2": "jpeg2000", "jpeg2000": "jpeg2000", "exr": "openexr",
    "hdr": "hdr", "avif": "avif", "heic": "heif", "heif": "heif",
    "compresseddepth": "compressedDepth",
}  # fmt: skip
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...)
_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_MAX_SEGMENTS = 1024
"""Segments (and fill bytes) walked before the frame header; real files have < 30."""


class ImageDecodeError(InputImageError):
    """A camera message that cannot be turned into an image; `kind` is the
    diagnostics counter it belongs to."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class CompressedHeader(NamedTuple):
    """What a compressed image's header declares, read before decoding."""

    format: str
    width: int
    height: int


def check_budget(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Raise ImageDecodeError("too_large") when width x height exceeds the budget."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            "too_large",
            f"{what} is {width}x{height} = {width * height} pixels, over the budget of "
            f"{max_pixels} (max_pixels)",
        )


def _sniff(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "avif" if brand in (b"avif", b"avis") else "heif"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return "pnm"
    return "unknown"


def _declared(fmt: str) -> str | None:
    """The image format a CompressedImage.format names ("jpeg", "bgr8; png
    compressed bgr8", ...), or None when it names none."""
    for word in re.split(r"[^a-z0-9]+", fmt.lower()):
        if word in _FORMAT_WORDS:
            return _FORMAT_WORDS[word]
    return None


def _png_size(data: memoryview) -> tuple[int, int]:
    if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
        raise ImageDecodeError("corrupt", "PNG without an IHDR chunk first")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    """Width and height from the first start-of-frame segment."""
    i, n = 2, len(data)
    for _ in range(_JPEG_MAX_SEGMENTS):
        if i + 4 > n:
            break
        if data[i] != 0xFF:
            raise ImageDecodeError("corrupt", f"JPEG: no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / scan before any frame header
            break
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2:
            raise ImageDecodeError("corrupt", f"JPEG: segment length {length} at byte {i}")
        if marker in _SOF:
            if i + 9 > n or length < 7:
                break
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return width, height
        i += 2 + length
    raise ImageDecodeError("corrupt", "JPEG: no frame header (SOF) found")


def compressed_header(data: Any, declared: str = "") -> CompressedHeader:
    """Format and size of a compressed image from its first bytes, no decoding.

    Raises ImageDecodeError: "size" (empty), "unsupported_format" (bytes of a
    format other than JPEG/PNG, or unknown), "format_mismatch" (`declared`,
    the message's `format`, names another format than the bytes) or "corrupt"
    (no readable size, or a zero width or height)."""
    view = memoryview(data).cast("B")
    if len(view) == 0:
        raise ImageDecodeError("size", "empty CompressedImage")
    sniffed = _sniff(bytes(view[:16]))
    claimed = _declared(declared)
    label = f"format {declared!r}" if declared else "no declared format"
    if sniffed not in DECODED_FORMATS:
        raise ImageDecodeError(
            "unsupported_format",
            f"CompressedImage bytes are {sniffed} ({label}); only jpeg and png are decoded",
        )
    if claimed is not None and claimed != sniffed:
        raise ImageDecodeError(
            "format_mismatch", f"CompressedImage declares {label} but its bytes are {sniffed}"
        )
    width, height = _png_size(view) if sniffed == "png" else _jpeg_size(view)
    if width <= 0 or height <= 0:
        raise ImageDecodeError("corrupt", f"{sniffed} header declares {width}x{height}")
    return CompressedHeader(sniffed, width, height)


def image_to_array(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """View of `msg.data` as (H, W) or (H, W, C) in the message's dtype; the
    size is checked against `max_pixels` (None: no budget), the step and the
    data length before the view is made."""
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageDecodeError(
            "encoding",
            f"unsupported encoding {enc!r}; supported: {', '.join(sorted(ENCODINGS))}",
        )
    dtype, channels, _ = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError("size", f"zero-size image {w}x{h}")
    check_budget(w, h, max_pixels, f"{enc} image")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageDecodeError(
            "step", f"step {step} < width*channels*bytes {row} for {w}x{h} {enc}"
        )
    need = step * (h - 1) + row
    data = msg.data
    have = len(data)
    if have < need:
        raise ImageDecodeError(
            "truncated", f"data has {have} bytes, {w}x{h} {enc} with step {step} needs {need}"
        )
    if msg.is_bigendian and dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">")
    buf = np.frombuffer(data, dtype=np.uint8, count=need)
    shape = (h, w, channels) if channels > 1 else (h, w)
    if step == row:
        return buf.view(dtype).reshape(shape)
    strides = (step, channels * dtype.itemsize, dtype.itemsize)[: len(shape)]
    view: np.ndarray = np.ndarray(shape, dtype, buffer=buf, strides=strides)
    return view


def image_to_bgr(msg: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 BGR for the detector; a view when the message is bgr8.
    Images over `max_pixels` are refused ("too_large") before any copy."""
    import cv2

    arr = image_to_array(msg, max_pixels)
    dtype, _, order = ENCODINGS[msg.encoding]
    if dtype != np.uint8:
        raise ImageDecodeError("encoding", f"{msg.encoding!r} is not a colour camera encoding")
    if order == "bgr":
        return arr
    code = {
        "rgb": cv2.COLOR_RGB2BGR,
        "bgra": cv2.COLOR_BGRA2BGR,
        "rgba": cv2.COLOR_RGBA2BGR,
        "mono": cv2.COLOR_GRAY2BGR,
    }[order]
    out: np.ndarray = cv2.cvtColor(np.ascontiguousarray(arr), code)
    return out


def compressed_to_bgr(msg: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG/PNG CompressedImage to (H, W, 3) uint8 BGR.

    The header is read first (`compressed_header`): other formats, a declared
    format that disagrees with the bytes and images over `max_pixels` are
    refused before the decoder allocates anything. A decoder failure of any
    kind comes back as ImageDecodeError("corrupt")."""
    import cv2

    head = compressed_header(msg.data, str(msg.format))
    check_budget(head.width, head.height, max_pixels, f"{head.format} CompressedImage")
    try:
        img = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageDecodeError(
            "corrupt", f"cannot decode {len(msg.data)}-byte {head.format}: {exc}"
        ) from None
    if img is None or img.size == 0:
        raise ImageDecodeError(
            "corrupt", f"cannot decode {len(msg.data)}-byte CompressedImage (format {msg.format!r})"
        )
    check_budget(img.shape[1], img.shape[0], max_pixels, f"decoded {head.format}")
    result: np.ndarray = img
    return result
