"""What feeds the demo's pipeline: the synthetic scenario publisher (CARLA
bridge layout, ground truth, depth) or a video / image folder / rosbag2
played by image_publisher on the camera topic of the pipeline file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from perception.demo.topology import ROLE, DemoError, Topology

__all__ = ["count_frames", "extract_bag_images", "is_bag", "scenario_argv", "video_argv"]


def scenario_argv(args: argparse.Namespace) -> list[str]:
    """perception.sim.ros_publisher for the demo's options; it waits for the
    pipeline's subscribers, publishes every frame, then exits."""
    return [
        sys.executable, "-m", "perception.sim.ros_publisher",
        "--seed", str(args.seed), "--duration", str(args.duration), "--rate", str(args.rate),
        "--speed", str(args.speed), "--width", str(args.width), "--height", str(args.height),
        "--role", ROLE, "--depth", "--no-lidar", "--prerender",
        "--wait-subscribers", "2", "--linger", "0.5",
    ]  # fmt: skip


def video_argv(video: Path, topo: Topology, rate: float, count: int) -> list[str]:
    """image_publisher playing `video` (file or image folder) on the pipeline's
    camera topic, with a CameraInfo next to it, reliable like the subscription."""
    return [
        sys.executable, "-m", "perception.ros.tools.image_publisher", str(video),
        "--topic", topo.image_topic(topo.cameras[0]), "--frame-id", topo.cameras[0],
        "--rate", str(rate), "--count", str(count), "--reliability", "reliable", "--camera-info",
    ]  # fmt: skip


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (
        ".mcap",
        ".db3",
    )


def count_frames(video: Path, max_frames: int) -> int:
    """Frames that will be played: those of the file or folder, at most max_frames."""
    import cv2

    if video.is_dir():
        n = len(list(video.iterdir()))
    else:
        cap = cv2.VideoCapture(str(video))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
    return min(n, max_frames) if n > 0 else max_frames


def extract_bag_images(bag: Path, dest: Path, topic: str | None, max_frames: int) -> Path:
    """The images of one topic of a rosbag2 (sensor_msgs/Image or CompressedImage)
    as numbered PNG files, so image_publisher can play them like a video."""
    import cv2
    from rosbags.rosbag2 import Reader

    from perception.ros.images import ImageDecodeError, compressed_to_bgr, image_to_bgr
    from perception.sim.bag import make_typestore

    store = make_typestore()
    kinds = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
    dest.mkdir(parents=True, exist_ok=True)
    root = bag.parent if bag.suffix in (".mcap", ".db3") and not bag.is_dir() else bag
    with Reader(root) as reader:
        conns = [c for c in reader.connections if c.msgtype in kinds]
        if topic is not None:
            conns = [c for c in conns if c.topic == topic]
        if not conns:
            found = sorted({c.topic for c in reader.connections})
            raise DemoError(f"{bag}: expected an image topic ({topic or 'any'}), got {found}")
        conn = conns[0]
        compressed = conn.msgtype.endswith("CompressedImage")
        n = 0
        for _, _, raw in reader.messages(connections=[conn]):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            try:
                img = compressed_to_bgr(msg) if compressed else image_to_bgr(msg)
            except ImageDecodeError as exc:
                raise DemoError(f"{bag}: {conn.topic} message {n}: {exc}") from exc
            cv2.imwrite(str(dest / f"{n:06d}.png"), np.ascontiguousarray(img))
            n += 1
            if n >= max_frames:
                break
    if n == 0:
        raise DemoError(f"{bag}: topic {conn.topic} holds no images")
    return dest
