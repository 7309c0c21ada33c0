"""Write a scenario to a rosbag2 (MCAP) file with `rosbags`, no ROS needed.

Same topics, frame ids, stamps and message contents as `ros_publisher` (the
layout of `perception.sim.layout`); each message's bag timestamp is its
header stamp (sim time). vision_msgs is not in rosbags' builtin typestores, so
its definitions are registered from the .msg files of this repository
(`interfaces/vision_msgs/msg`) or of an installed vision_msgs
(`$AMENT_PREFIX_PATH/share/vision_msgs/msg`).

    python -m perception.sim.bag out_bag --seed 3 --duration 10
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perception.core.errors import PerceptionError
from perception.core.fusion.pointcloud import make_cloud_buffer
from perception.sim.layout import SimLayout, camera_info_fields, gt2d_rows, gt3d_rows
from perception.sim.rig import Rig, default_rig
from perception.sim.scenario import Frame, Scenario

__all__ = ["BagError", "find_vision_msgs_dir", "make_typestore", "write_bag"]

_log = logging.getLogger(__name__)

_REPO_MSGS = Path(__file__).resolve().parents[2] / "interfaces" / "vision_msgs" / "msg"


class BagError(PerceptionError, RuntimeError):
    """The bag cannot be written (missing message definitions, existing path)."""


def find_vision_msgs_dir() -> Path:
    """Directory with vision_msgs/msg/*.msg: the repository's copy, else an
    installed package on AMENT_PREFIX_PATH."""
    candidates = [_REPO_MSGS]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "vision_msgs" / "msg")
    for c in candidates:
        if (c / "Detection2DArray.msg").is_file():
            return c
    raise BagError(
        "vision_msgs message definitions: expected Detection2DArray.msg in one of "
        f"{[str(c) for c in candidates]}, found none"
    )


def make_typestore(msg_dir: Path | None = None) -> Any:
    """rosbags typestore of the latest ROS 2 distribution plus vision_msgs."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.LATEST)
    directory = msg_dir if msg_dir is not None else find_vision_msgs_dir()
    types: dict[str, Any] = {}
    for path in sorted(Path(directory).glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    if "vision_msgs/msg/Detection2DArray" not in types:
        raise BagError(f"{directory}: expected vision_msgs .msg files, found {sorted(types)}")
    store.register(types)
    return store


class _Builder:
    """rosbags message objects of one frame, mirroring `ros_publisher.frame_messages`."""

    def __init__(self, store: Any) -> None:
        self.t = store.types

    def time(self, stamp_ns: int) -> Any:
        return self.t["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
        )

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        return self.t["std_msgs/msg/Header"](stamp=self.time(stamp_ns), frame_id=frame_id)

    def image(self, hdr: Any, arr: np.ndarray, encoding: str) -> Any:
        h, w = arr.shape[:2]
        data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8)
        return self.t["sensor_msgs/msg/Image"](
            header=hdr,
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=data.size // h,
            data=data,
        )

    def camera_info(self, hdr: Any, fields: dict[str, Any]) -> Any:
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=hdr,
            height=fields["height"],
            width=fields["width"],
            distortion_model=fields["distortion_model"],
            d=np.asarray(fields["d"], np.float64),
            k=np.asarray(fields["k"], np.float64),
            r=np.asarray(fields["r"], np.float64),
            p=np.asarray(fields["p"], np.float64),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )

    def cloud(self, hdr: Any, xyz: np.ndarray) -> Any:
        data, fields, point_step, row_step, height, width = make_cloud_buffer(xyz)
        pf = self.t["sensor_msgs/msg/PointField"]
        return self.t["sensor_msgs/msg/PointCloud2"](
            header=hdr,
            height=height,
            width=width,
            fields=[pf(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
            is_bigendian=False,
            point_step=point_step,
            row_step=row_step,
            data=np.frombuffer(data, np.uint8),
            is_dense=True,
        )

    def hypothesis(self, class_name: str, score: float, pose: Any) -> Any:
        t = self.t
        cov = np.zeros(36, np.float64)
        return t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=class_name, score=score),
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=cov),
        )

    def pose(self, xyz: Sequence[float], q: Sequence[float]) -> Any:
        t = self.t
        return t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=xyz[0], y=xyz[1], z=xyz[2]),
            orientation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
        )

    def detections2d(self, hdr: Any, cam: Any) -> Any:
        t = self.t
        dets = []
        zero_pose = self.pose((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
        for r in gt2d_rows(cam):
            center = t["vision_msgs/msg/Pose2D"](
                position=t["vision_msgs/msg/Point2D"](x=r.cx, y=r.cy), theta=0.0
            )
            bbox = t["vision_msgs/msg/BoundingBox2D"](center=center, size_x=r.w, size_y=r.h)
            dets.append(
                t["vision_msgs/msg/Detection2D"](
                    header=hdr,
                    results=[self.hypothesis(r.class_name, r.visibility, zero_pose)],
                    bbox=bbox,
                    id=r.id,
                )
            )
        return t["vision_msgs/msg/Detection2DArray"](header=hdr, detections=dets)

    def detections3d(self, hdr: Any, frame: Frame) -> Any:
        t = self.t
        dets = []
        for r in gt3d_rows(frame.objects):
            pose = self.pose(r.center, r.quaternion)
            size = t["geometry_msgs/msg/Vector3"](x=r.size[0], y=r.size[1], z=r.size[2])
            bbox = t["vision_msgs/msg/BoundingBox3D"](center=pose, size=size)
            dets.append(
                t["vision_msgs/msg/Detection3D"](
                    header=hdr,
                    results=[self.hypothesis(r.class_name, 1.0, pose)],
                    bbox=bbox,
                    id=r.id,
                )
            )
        return t["vision_msgs/msg/Detection3DArray"](header=hdr, detections=dets)


def write_bag(
    path: str | Path,
    scenario: Scenario,
    layout: SimLayout | None = None,
    *,
    depth: bool = False,
    ground_truth: bool = True,
    msg_dir: Path | None = None,
) -> dict[str, int]:
    """Write every frame of `scenario` to a new MCAP rosbag2 directory at
    `path`. Returns the number of messages per topic."""
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    layout = layout if layout is not None else SimLayout()
    store = make_typestore(msg_dir)
    b = _Builder(store)
    rig: Rig = scenario.rig
    topics: dict[str, str] = {layout.clock_topic: "rosgraph_msgs/msg/Clock"}
    for c in rig.cameras:
        topics[layout.image_topic(c.name)] = "sensor_msgs/msg/Image"
        topics[layout.camera_info_topic(c.name)] = "sensor_msgs/msg/CameraInfo"
        if depth:
            topics[layout.depth_topic(c.name)] = "sensor_msgs/msg/Image"
        if ground_truth:
            topics[layout.detections_topic(c.name)] = "vision_msgs/msg/Detection2DArray"
    if rig.lidar is not None:
        topics[layout.lidar_topic] = "sensor_msgs/msg/PointCloud2"
    if ground_truth:
        topics[layout.objects_topic] = "vision_msgs/msg/Detection3DArray"
    counts = dict.fromkeys(topics, 0)
    try:
        writer = Writer(Path(path), version=9, storage_plugin=StoragePlugin.MCAP)
    except WriterError as exc:
        raise BagError(f"{path}: cannot create bag: {exc}") from exc
    with writer:
        conns = {
            topic: writer.add_connection(topic, msgtype, typestore=store)
            for topic, msgtype in topics.items()
        }

        def put(topic: str, msg: Any, stamp_ns: int) -> None:
            writer.write(conns[topic], stamp_ns, store.serialize_cdr(msg, topics[topic]))
            counts[topic] += 1

        for frame in scenario.frames():
            s = frame.stamp_ns
            put(layout.clock_topic, store.types["rosgraph_msgs/msg/Clock"](clock=b.time(s)), s)
            for mount in rig.cameras:
                cam = frame.cameras[mount.name]
                hdr = b.header(s, layout.camera_frame(mount.name))
                bgra = np.concatenate(
                    (cam.image_bgr, np.full((*cam.image_bgr.shape[:2], 1), 255, np.uint8)), 2
                )
                put(layout.image_topic(mount.name), b.image(hdr, bgra, "bgra8"), s)
                info = b.camera_info(hdr, camera_info_fields(mount.model))
                put(layout.camera_info_topic(mount.name), info, s)
                if depth:
                    put(layout.depth_topic(mount.name), b.image(hdr, cam.depth, "32FC1"), s)
                if ground_truth:
                    put(layout.detections_topic(mount.name), b.detections2d(hdr, cam), s)
            if frame.lidar is not None:
                put(layout.lidar_topic, b.cloud(b.header(s, layout.lidar_frame), frame.lidar), s)
            if ground_truth:
                hdr = b.header(s, layout.base_frame)
                put(layout.objects_topic, b.detections3d(hdr, frame), s)
    _log.info("wrote %s: %d messages", path, sum(counts.values()))
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scenario_bag", description=__doc__.split("\n")[0])
    p.add_argument("output", help="bag directory to create (must not exist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--hfov", type=float, default=90.0)
    p.add_argument("--ego-speed", type=float, default=10.0)
    p.add_argument("--density", type=float, default=1.0)
    p.add_argument("--role", default="ego_vehicle")
    p.add_argument("--base-frame", default="base_link")
    p.add_argument("--depth", action="store_true")
    p.add_argument("--no-ground-truth", action="store_true")
    p.add_argument("--no-lidar", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rig = default_rig(args.width, args.height, args.hfov)
    if args.no_lidar:
        rig = Rig(rig.cameras, None)
    sc = Scenario(
        args.seed, args.duration, args.rate, rig, ego_speed=args.ego_speed, density=args.density
    )
    try:
        counts = write_bag(
            args.output,
            sc,
            SimLayout(role=args.role, base_frame=args.base_frame),
            depth=args.depth,
            ground_truth=not args.no_ground_truth,
        )
    except BagError as exc:
        _log.error("%s", exc)
        return 2
    for topic, n in counts.items():
        _log.info("%6d  %s", n, topic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
