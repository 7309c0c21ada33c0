"""Read sensor_msgs/Image and CompressedImage straight from their CDR bytes.

Why: a camera callback that gets the serialized message (rclpy raw
subscriptions, a bag) can read the header (stamp, frame_id) for a few
microseconds and keep the bytes; only the frame the engine will actually
process is parsed further, and its pixels are a zero-copy view of those
bytes. No ROS needed, so replay and tests use the same reader.

Layout (OMG CDR as rmw_fastrtps writes it; XCDR2 plain is identical for these
types, which have no 8-byte fields): a 4-byte encapsulation header (0x0000 /
0x0006 big endian, 0x0001 / 0x0007 little endian, then 2 option bytes), then
the fields, each aligned to its size relative to the end of that header:

    Image:            int32 sec, uint32 nanosec, string frame_id,
                      uint32 height, uint32 width, string encoding,
                      uint8 is_bigendian, uint32 step, sequence<uint8> data
    CompressedImage:  int32 sec, uint32 nanosec, string frame_id,
                      string format, sequence<uint8> data

A string is a uint32 length that counts a terminating NUL, then the bytes.
Every read is bounds-checked: a short, oversized or garbage buffer raises
`CdrError` (kind "cdr"; "stamp" for a stamp outside builtin_interfaces/Time's
range), never an IndexError or a struct.error, and nothing is allocated from
a length read off the wire before it is checked against the buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from perception.core.images import ImageDecodeError

__all__ = [
    "CdrCompressedImage",
    "CdrError",
    "CdrHeader",
    "CdrImage",
    "parse_compressed_image",
    "parse_image",
    "read_header",
]

_BIG = (0x00, 0x06)  # CDR_BE, PLAIN_CDR2_BE
_LITTLE = (0x01, 0x07)  # CDR_LE, PLAIN_CDR2_LE
_ORIGIN = 4  # alignment is relative to the end of the encapsulation header
_U32 = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_STAMP = {True: struct.Struct("<iI"), False: struct.Struct(">iI")}
_MAX_NANOSEC = 999_999_999


class CdrError(ImageDecodeError):
    """Serialized bytes that are not a well-formed message of the expected type."""

    def __init__(self, reason: str, kind: str = "cdr") -> None:
        super().__init__(kind, reason)


@dataclass(frozen=True)
class CdrHeader:
    """std_msgs/Header read from the bytes, and where the next field starts."""

    sec: int
    nanosec: int
    frame_id: str
    end: int
    little: bool

    @property
    def stamp_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec


@dataclass(frozen=True)
class CdrImage:
    """sensor_msgs/Image fields; `data` is a memoryview of the serialized bytes
    (the functions of perception.core.images take this as they take a message)."""

    header: CdrHeader
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


@dataclass(frozen=True)
class CdrCompressedImage:
    """sensor_msgs/CompressedImage fields; `data` is a memoryview of the bytes."""

    header: CdrHeader
    format: str
    data: memoryview


class _Reader:
    """Cursor over the bytes after the encapsulation header; every read checked."""

    __slots__ = ("buf", "end", "little", "pos", "u32s")

    def __init__(self, buf: bytes | bytearray | memoryview, what: str) -> None:
        view = memoryview(buf)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        self.buf = view
        self.end = len(view)
        if self.end < _ORIGIN:
            raise CdrError(f"{what}: {self.end} bytes, shorter than the CDR encapsulation header")
        if view[0] != 0 or view[1] not in _BIG + _LITTLE:
            raise CdrError(
                f"{what}: unsupported CDR encapsulation 0x{view[0]:02x}{view[1]:02x} "
                "(expected plain CDR, big or little endian)"
            )
        self.little = view[1] in _LITTLE
        self.u32s = _U32[self.little]
        self.pos = _ORIGIN

    def _need(self, n: int, field: str) -> None:
        if self.pos + n > self.end:
            raise CdrError(
                f"truncated at {field}: needs {n} bytes at offset {self.pos}, "
                f"the buffer has {self.end}"
            )

    def _align4(self) -> None:
        self.pos += -(self.pos - _ORIGIN) % 4

    def u32(self, field: str) -> int:
        self._align4()
        self._need(4, field)
        (v,) = self.u32s.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u8(self, field: str) -> int:
        self._need(1, field)
        v = self.buf[self.pos]
        self.pos += 1
        return int(v)

    def string(self, field: str, max_bytes: int | None) -> str:
        n = self.u32(f"{field} length")
        if n == 0:  # some writers send an empty string without its NUL
            return ""
        if max_bytes is not None and n - 1 > max_bytes:
            raise CdrError(f"{field}: {n - 1} bytes, more than the {max_bytes} allowed")
        self._need(n, field)
        if self.buf[self.pos + n - 1] != 0:
            raise CdrError(f"{field}: string of {n} bytes at offset {self.pos} lacks its NUL")
        # like rclpy: invalid UTF-8 is replaced, not refused
        s = bytes(self.buf[self.pos : self.pos + n - 1]).decode("utf-8", "replace")
        self.pos += n
        return s

    def octets(self, field: str) -> memoryview:
        n = self.u32(f"{field} length")
        self._need(n, field)
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def header(self, max_frame_id: int | None) -> CdrHeader:
        self._need(8, "header.stamp")
        sec, nanosec = _STAMP[self.little].unpack_from(self.buf, self.pos)
        self.pos += 8
        if sec < 0 or nanosec > _MAX_NANOSEC:
            raise CdrError(
                f"header.stamp {sec} s {nanosec} ns is outside builtin_interfaces/Time "
                "(sec >= 0, nanosec < 1e9)",
                kind="stamp",
            )
        frame_id = self.string("header.frame_id", max_frame_id)
        return CdrHeader(int(sec), int(nanosec), frame_id, self.pos, self.little)


def read_header(
    data: bytes | bytearray | memoryview, *, max_frame_id: int | None = None
) -> CdrHeader:
    """The std_msgs/Header at the start of a serialized message (any type
    that begins with one: Image, CompressedImage, CameraInfo ...). Raises
    `CdrError`; a frame_id longer than `max_frame_id` bytes is refused."""
    return _Reader(data, "message").header(max_frame_id)


def parse_image(
    data: bytes | bytearray | memoryview,
    *,
    max_frame_id: int | None = None,
    max_string: int | None = 256,
) -> CdrImage:
    """All fields of a serialized sensor_msgs/Image; `data` stays a view.

    `max_string` bounds the encoding string. Sizes are not judged here
    (height/width/step/len(data) are checked by perception.core.images)."""
    r = _Reader(data, "sensor_msgs/Image")
    header = r.header(max_frame_id)
    height = r.u32("height")
    width = r.u32("width")
    encoding = r.string("encoding", max_string)
    is_bigendian = r.u8("is_bigendian")
    step = r.u32("step")
    pixels = r.octets("data")
    return CdrImage(header, height, width, encoding, is_bigendian, step, pixels)


def parse_compressed_image(
    data: bytes | bytearray | memoryview,
    *,
    max_frame_id: int | None = None,
    max_string: int | None = 256,
) -> CdrCompressedImage:
    """All fields of a serialized sensor_msgs/CompressedImage; `data` stays a view."""
    r = _Reader(data, "sensor_msgs/CompressedImage")
    header = r.header(max_frame_id)
    fmt = r.string("format", max_string)
    return CdrCompressedImage(header, fmt, r.octets("data"))
