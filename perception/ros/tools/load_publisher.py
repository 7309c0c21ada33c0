"""load_publisher: many cameras from one cheap process, for load tests and benchmarks.

Every camera's sensor_msgs/Image is built once; each send only sets its
stamp and publishes it, so one process feeds 8 cameras at 30 Hz for a small
share of one core (a separate image_publisher per camera converts every frame
and, on a small machine, competes with the node it is meant to measure).
Publishing the message object costs three copies of the frame (rclpy's
conversion, Fast DDS's serialization, its shared-memory transport); the raw
path (serialized bytes with the stamp patched) costs four, because rclpy
takes only immutable bytes and copies them again (8 cameras of 1280x720 on a
2-core machine: about 1.1 ms of CPU per send against 1.3 ms). Cameras are
phase-shifted evenly over the period, as unsynchronised cameras are; with
`--burst N` each camera sends N frames back to back every N periods (same
mean rate, a flood within each burst). On exit (SIGINT / --seconds) it prints
one JSON line: frames sent per topic and its own CPU seconds.

    python -m perception.ros.tools.load_publisher /cam0/image_raw /cam1/image_raw \\
        --size 1280x720 --rate 30 [--image photo.jpg] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

import numpy as np

__all__ = ["build_frame", "build_image", "main"]


def build_image(
    width: int, height: int, image_path: str | None = None, frame_id: str = "camera"
) -> Any:
    """A bgr8 sensor_msgs/Image of `width` x `height` (a photo resized, or a
    fixed random pattern) with a zero stamp."""
    from sensor_msgs.msg import Image

    img = None
    if image_path:
        import cv2

        src = cv2.imread(image_path, cv2.IMREAD_COLOR)
        if src is None:
            raise SystemExit(f"load_publisher: cannot read image {image_path!r}")
        img = cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA)
    if img is None:
        img = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding="bgr8", is_bigendian=0, step=width * 3)
    msg.header.frame_id = frame_id
    msg.data = np.ascontiguousarray(img).tobytes()
    return msg


def build_frame(
    width: int, height: int, image_path: str | None = None, frame_id: str = "camera"
) -> bytes:
    """`build_image` serialized: the stamp is bytes 4..12 (see perception.core.cdr)."""
    from rclpy.serialization import serialize_message

    data: bytes = serialize_message(build_image(width, height, image_path, frame_id))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="load_publisher", description=__doc__.split("\n")[0])
    parser.add_argument("topics", nargs="+", help="one Image topic per camera")
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT (bgr8)")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second per camera")
    parser.add_argument("--burst", type=int, default=1, help="frames sent back to back")
    parser.add_argument("--image", default=None, help="photo to resize (default: noise)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after (0 = never)")
    parser.add_argument("--reliability", choices=["reliable", "best_effort"], default="reliable")
    args, _ros_args = parser.parse_known_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.rate <= 0 or args.burst < 1:
        parser.error("--rate must be > 0 and --burst >= 1")

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from perception.ros.malloc_tuning import keep_large_buffers_on_heap

    keep_large_buffers_on_heap()  # rclpy's frame-sized buffer per send, kept on the heap
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    from rclpy.signals import SignalHandlerOptions

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # ours print the summary
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node = rclpy.create_node("load_publisher")
    reliability = (
        ReliabilityPolicy.RELIABLE
        if args.reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT
    )
    qos = QoSProfile(depth=1, reliability=reliability)
    pubs = [node.create_publisher(Image, t, qos) for t in args.topics]
    frames = [
        build_image(width, height, args.image, frame_id=f"camera{i}") for i in range(len(pubs))
    ]
    period = args.burst / args.rate
    start = time.monotonic() + 0.5
    due = [start + period * i / len(pubs) for i in range(len(pubs))]
    sent = [0] * len(pubs)
    end = time.monotonic() + args.seconds if args.seconds > 0 else float("inf")
    try:
        while not stop and time.monotonic() < end:
            i = min(range(len(pubs)), key=due.__getitem__)
            wait = due[i] - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.1))
                continue
            for _ in range(args.burst):
                sec, nsec = divmod(time.time_ns(), 1_000_000_000)
                frames[i].header.stamp.sec, frames[i].header.stamp.nanosec = sec, nsec
                pubs[i].publish(frames[i])
                sent[i] += 1
            due[i] += period
            if due[i] < time.monotonic() - period:  # fell behind: do not catch up in a burst
                due[i] = time.monotonic()
    finally:
        cpu = os.times()
        print(
            json.dumps(
                {
                    "sent": dict(zip(args.topics, sent, strict=True)),
                    "cpu_s": round(cpu.user + cpu.system, 3),
                    "size": f"{width}x{height}",
                    "rate_hz": args.rate,
                }
            ),
            flush=True,
        )
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
