"""sensor_msgs Image/CompressedImage decoding, including every bad-input kind."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs not importable; run ./dev test")
cv2 = pytest.importorskip("cv2")

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from perception.ros.images import (  # noqa: E402
    ImageDecodeError,
    bgr_to_image_msg,
    compressed_to_bgr,
    image_to_array,
    image_to_bgr,
)


def bgr_image(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_msg(arr: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = arr.shape[:2]
    row = arr[0].nbytes
    rows = np.zeros((h, row + pad), np.uint8)
    rows[:, :row] = arr.reshape(h, -1).view(np.uint8)
    return Image(height=h, width=w, encoding=encoding, step=row + pad, data=rows.tobytes())


@pytest.mark.parametrize("pad", [0, 7])
def test_bgr8_view_and_padded_rows(pad):
    img = bgr_image()
    out = image_to_bgr(make_msg(img, "bgr8", pad))
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize(
    ("encoding", "convert"),
    [
        ("rgb8", lambda a: a[..., ::-1]),
        ("bgra8", lambda a: np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])),
        ("rgba8", lambda a: np.dstack([a[..., ::-1], np.full(a.shape[:2], 255, np.uint8)])),
    ],
)
def test_colour_encodings_become_bgr(encoding, convert):
    img = bgr_image()
    out = image_to_bgr(make_msg(np.ascontiguousarray(convert(img)), encoding))
    np.testing.assert_array_equal(out, img)


def test_mono_and_16bit_and_bigendian():
    mono = bgr_image()[..., 0].copy()
    np.testing.assert_array_equal(image_to_bgr(make_msg(mono, "mono8"))[..., 1], mono)
    depth = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    np.testing.assert_array_equal(image_to_array(make_msg(depth, "16UC1", pad=2)), depth)
    be = make_msg(depth.astype(">u2"), "16UC1")
    be.is_bigendian = 1
    np.testing.assert_array_equal(image_to_array(be), depth)
    with pytest.raises(ImageDecodeError, match="not a colour camera encoding"):
        image_to_bgr(make_msg(depth, "16UC1"))


@pytest.mark.parametrize(
    ("mutate", "kind", "reason"),
    [
        (lambda m: setattr(m, "encoding", "yuv422"), "encoding", "unsupported encoding 'yuv422'"),
        (lambda m: setattr(m, "width", 0), "size", "zero-size image 0x48"),
        (lambda m: setattr(m, "step", 10), "step", "step 10 < width*channels*bytes 192"),
        (lambda m: setattr(m, "data", bytes(m.data[:-5])), "truncated", "needs 9216"),
        (lambda m: setattr(m, "height", 100), "truncated", "data has 9216 bytes"),
    ],
)
def test_bad_images_raise_with_kind(mutate, kind, reason):
    msg = make_msg(bgr_image(), "bgr8")
    mutate(msg)
    with pytest.raises(ImageDecodeError) as info:
        image_to_bgr(msg)
    assert info.value.kind == kind
    assert reason in str(info.value)


def test_compressed_round_trip_and_corrupt_jpeg():
    img = bgr_image(120, 160)
    ok, jpg = cv2.imencode(".png", img)
    assert ok
    msg = CompressedImage(format="png", data=jpg.tobytes())
    np.testing.assert_array_equal(compressed_to_bgr(msg), img)
    ok, jpg = cv2.imencode(".jpg", img)
    corrupt = CompressedImage(format="jpeg", data=b"\xff\xd8\xff" + bytes(200))
    with pytest.raises(ImageDecodeError) as info:
        compressed_to_bgr(corrupt)
    assert info.value.kind == "corrupt"
    with pytest.raises(ImageDecodeError) as info:
        compressed_to_bgr(CompressedImage(format="jpeg", data=b""))
    assert info.value.kind == "size"


def test_bgr_to_image_msg():
    img = bgr_image()
    msg = bgr_to_image_msg(img, Header(frame_id="cam"))
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("bgr8", 64 * 3, "cam")
    np.testing.assert_array_equal(image_to_bgr(msg), img)
