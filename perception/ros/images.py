"""sensor_msgs Image / CompressedImage <-> numpy, without needless copies.

The decode is ROS-free and lives in `perception.core.images` (replay reads
bags without ROS); it is re-exported here for the nodes. Never assign a
numpy array to `msg.data` (hundreds of ms in rclpy): outgoing images are
built from bytes.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from perception.core.errors import InputImageError
from perception.core.images import (
    DEFAULT_MAX_PIXELS,
    ENCODINGS,
    CompressedHeader,
    ImageDecodeError,
    compressed_header,
    compressed_to_bgr,
    image_to_array,
    image_to_bgr,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENCODINGS",
    "CompressedHeader",
    "ImageDecodeError",
    "bgr_to_image_msg",
    "compressed_header",
    "compressed_to_bgr",
    "image_to_array",
    "image_to_bgr",
]


def bgr_to_image_msg(image: np.ndarray, header: Header) -> Image:
    """(H, W, 3) uint8 BGR -> sensor_msgs/Image, data assigned as bytes."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputImageError(
            f"expected (H, W, 3) uint8 BGR, got shape {image.shape} dtype {image.dtype}"
        )
    h, w = image.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding="bgr8", is_bigendian=0, step=w * 3)
    msg.data = np.ascontiguousarray(image).tobytes()
    return msg
