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
"truncated", "corrupt").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perception.core.errors import InputImageError

__all__ = [
    "DEPTH_ENCODINGS",
    "ENCODINGS",
    "ImageDecodeError",
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


class ImageDecodeError(InputImageError):
    """A camera message that cannot be turned into an image; `kind` is the
    diagnostics counter it belongs to."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def image_to_array(msg: Any) -> np.ndarray:
    """View of `msg.data` as (H, W) or (H, W, C) in the message's dtype."""
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


def image_to_bgr(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 BGR for the detector; a view when the message is bgr8."""
    import cv2

    arr = image_to_array(msg)
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


def compressed_to_bgr(msg: Any) -> np.ndarray:
    """Decode a JPEG/PNG CompressedImage to (H, W, 3) uint8 BGR."""
    import cv2

    if len(msg.data) == 0:
        raise ImageDecodeError("size", "empty CompressedImage")
    img = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageDecodeError(
            "corrupt", f"cannot decode {len(msg.data)}-byte CompressedImage (format {msg.format!r})"
        )
    result: np.ndarray = img
    return result
