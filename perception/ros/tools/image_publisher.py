"""image_publisher: play image files or a video as a camera topic.

Publishes sensor_msgs/Image (bgr8) or CompressedImage (JPEG, on
<topic>/compressed, image_transport naming) at a fixed rate with the current
time as the stamp, plus an optional CameraInfo. For trying nodes without a
camera and for cross-process tests and benchmarks.

    python -m perception.ros.tools.image_publisher --topic /camera/image_raw \
        --frame-id camera_optical --rate 10 image1.jpg image2.jpg
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from perception.ros.runner import run_node

__all__ = ["iter_frames", "main"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def iter_frames(sources: list[str], loop: bool) -> Iterator[np.ndarray]:
    """BGR frames from image files, folders of images and videos, in order."""
    import cv2

    paths: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            paths.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(p)
    if not paths:
        raise ValueError("no input images or videos given")
    decoded: dict[Path, np.ndarray] = {}  # images are decoded once, even when looping
    while True:
        for p in paths:
            if p.suffix.lower() in IMAGE_SUFFIXES:
                if p not in decoded:
                    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
                    if img is None:
                        raise ValueError(f"{p}: cannot read image")
                    decoded[p] = img
                yield decoded[p]
            else:
                cap = cv2.VideoCapture(str(p))
                if not cap.isOpened():
                    raise ValueError(f"{p}: cannot open video")
                while True:
                    ok, img = cap.read()
                    if not ok:
                        break
                    yield img
                cap.release()
        if not loop:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image_publisher", description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", help="image files, folders or videos")
    parser.add_argument("--topic", default="/camera/image_raw")
    parser.add_argument("--frame-id", default="camera_optical_frame")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second")
    parser.add_argument("--transport", choices=["raw", "compressed"], default="raw")
    parser.add_argument("--reliability", choices=["reliable", "best_effort"], default="reliable")
    parser.add_argument("--count", type=int, default=0, help="stop after N frames (0 = all)")
    parser.add_argument("--loop", action="store_true", help="repeat the sources forever")
    parser.add_argument("--camera-info", action="store_true", help="also publish CameraInfo")
    parser.add_argument("--encoding", choices=["bgr8", "rgb8", "bgra8"], default="bgr8")
    args, ros_args = parser.parse_known_args(argv)

    import cv2
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    def make_node() -> Any:
        node = rclpy.create_node("image_publisher")
        qos = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE
            if args.reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )
        compressed = args.transport == "compressed"
        topic = args.topic.rstrip("/") + ("/compressed" if compressed else "")
        pub = node.create_publisher(CompressedImage if compressed else Image, topic, qos)
        info_topic = args.topic.rsplit("/", 1)[0] + "/camera_info"
        info_pub = node.create_publisher(CameraInfo, info_topic, qos) if args.camera_info else None
        frames = iter_frames(args.sources, args.loop)
        sent = 0

        def publish() -> None:
            nonlocal sent
            img = next(frames, None)
            if img is None or (args.count and sent >= args.count):
                raise SystemExit(0)
            stamp = node.get_clock().now().to_msg()
            h, w = img.shape[:2]
            if compressed:
                _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
                msg = CompressedImage(format="jpeg", data=buf.tobytes())
            else:
                code = {"bgr8": None, "rgb8": cv2.COLOR_BGR2RGB, "bgra8": cv2.COLOR_BGR2BGRA}
                conv = code[args.encoding]
                out = img if conv is None else cv2.cvtColor(img, conv)
                msg = Image(height=h, width=w, encoding=args.encoding, step=out.strides[0])
                msg.data = np.ascontiguousarray(out).tobytes()
            msg.header.stamp = stamp
            msg.header.frame_id = args.frame_id
            pub.publish(msg)
            if info_pub is not None:
                f = float(max(w, h))
                info = CameraInfo(width=w, height=h, distortion_model="plumb_bob")
                info.header = msg.header
                info.k = [f, 0.0, w / 2, 0.0, f, h / 2, 0.0, 0.0, 1.0]
                info.p = [f, 0.0, w / 2, 0.0, 0.0, f, h / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
                info.d = [0.0] * 5
                info_pub.publish(info)
            sent += 1

        node.create_timer(1.0 / args.rate, publish)
        return node

    return run_node(make_node, ["image_publisher", *ros_args], name="image_publisher")


if __name__ == "__main__":
    sys.exit(main())
