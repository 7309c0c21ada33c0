"""scenario_publisher: play a synthetic scenario as ROS 2 topics in the CARLA
ROS bridge layout (see `perception.sim.layout`), with /clock sim time.

Frames are rendered ahead in a worker thread and published when due: frame i
at wall time start + (stamp_i - stamp_0) / speed (`--speed 0`: as fast as
rendering allows). /clock is published with each frame's stamp just before
its messages, so nodes running with use_sim_time see the sensor time. When
rendering is slower than requested, frames are late but none is dropped and
sim time stays exact.

    python -m perception.sim.ros_publisher --seed 3 --duration 20 --rate 10 --speed 1
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from perception.core.fusion.pointcloud import make_cloud_buffer
from perception.ros.runner import run_node
from perception.sim.layout import SimLayout, camera_info_fields, gt2d_rows, gt3d_rows
from perception.sim.rig import default_rig
from perception.sim.scenario import Frame, Scenario

__all__ = ["frame_messages", "main", "timed_frames"]


def timed_frames(scenario: Scenario, loop: bool) -> Iterator[tuple[int, Frame]]:
    """(stamp_ns, frame) in order; with `loop`, the scenario repeats with
    stamps that keep increasing (a clock that jumps back resets sim-time nodes)."""
    period = scenario.n_frames * 1e9 / scenario.rate_hz
    k = 0
    while True:
        for i in range(scenario.n_frames):
            f = scenario.frame(i)
            yield f.stamp_ns + round(k * period), f
        if not loop:
            return
        k += 1


def frame_messages(
    frame: Frame,
    stamp_ns: int,
    scenario: Scenario,
    layout: SimLayout,
    *,
    depth: bool = False,
    ground_truth: bool = True,
) -> list[tuple[str, Any]]:
    """rclpy messages of one frame as (topic, message), /clock first."""
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
    from std_msgs.msg import Header
    from vision_msgs.msg import (
        Detection2D,
        Detection2DArray,
        Detection3D,
        Detection3DArray,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
    )

    stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    out: list[tuple[str, Any]] = [(layout.clock_topic, Clock(clock=stamp))]
    import cv2

    for mount in scenario.rig.cameras:
        cam = frame.cameras[mount.name]
        hdr = Header(stamp=stamp, frame_id=layout.camera_frame(mount.name))
        bgra = cv2.cvtColor(cam.image_bgr, cv2.COLOR_BGR2BGRA)
        h, w = bgra.shape[:2]
        img = Image(header=hdr, height=h, width=w, encoding="bgra8", step=w * 4)
        img.data = bgra.tobytes()  # bytes, never a numpy array (slow in rclpy)
        out.append((layout.image_topic(mount.name), img))
        info = CameraInfo(header=hdr, **camera_info_fields(mount.model))
        out.append((layout.camera_info_topic(mount.name), info))
        if depth:
            dimg = Image(header=hdr, height=h, width=w, encoding="32FC1", step=w * 4)
            dimg.data = np.ascontiguousarray(cam.depth, np.float32).tobytes()
            out.append((layout.depth_topic(mount.name), dimg))
        if ground_truth:
            arr = Detection2DArray(header=hdr)
            dets = []
            for r in gt2d_rows(cam):
                d = Detection2D(header=hdr, id=r.id)
                d.bbox.center.position.x, d.bbox.center.position.y = r.cx, r.cy
                d.bbox.size_x, d.bbox.size_y = r.w, r.h
                d.results = [
                    ObjectHypothesisWithPose(
                        hypothesis=ObjectHypothesis(class_id=r.class_name, score=r.visibility)
                    )
                ]
                dets.append(d)
            arr.detections = dets
            out.append((layout.detections_topic(mount.name), arr))
    if frame.lidar is not None:
        data, fields, point_step, row_step, height, width = make_cloud_buffer(frame.lidar)
        cloud = PointCloud2(
            header=Header(stamp=stamp, frame_id=layout.lidar_frame),
            height=height,
            width=width,
            fields=[PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in fields],
            is_bigendian=False,
            point_step=point_step,
            row_step=row_step,
            is_dense=True,
        )
        cloud.data = data
        out.append((layout.lidar_topic, cloud))
    if ground_truth:
        hdr = Header(stamp=stamp, frame_id=layout.base_frame)
        arr3 = Detection3DArray(header=hdr)
        dets3 = []
        for g in gt3d_rows(frame.objects):
            d = Detection3D(header=hdr, id=g.id)
            p = d.bbox.center.position
            p.x, p.y, p.z = g.center
            q = d.bbox.center.orientation
            q.x, q.y, q.z, q.w = g.quaternion
            d.bbox.size.x, d.bbox.size.y, d.bbox.size.z = g.size
            hyp = ObjectHypothesisWithPose(
                hypothesis=ObjectHypothesis(class_id=g.class_name, score=1.0)
            )
            hyp.pose.pose = d.bbox.center
            d.results = [hyp]
            dets3.append(d)
        arr3.detections = dets3
        out.append((layout.objects_topic, arr3))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scenario_publisher", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=20.0, help="scenario length (s)")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of sim time")
    p.add_argument("--speed", type=float, default=1.0, help="sim seconds per wall second (0 = max)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--hfov", type=float, default=90.0, help="camera horizontal FOV (deg)")
    p.add_argument("--ego-speed", type=float, default=10.0, help="m/s")
    p.add_argument("--density", type=float, default=1.0, help="actor density factor")
    p.add_argument("--role", default="ego_vehicle", help="CARLA role name of the ego")
    p.add_argument("--base-frame", default="base_link", help="frame of the 3D ground truth")
    p.add_argument("--depth", action="store_true", help="also publish depth_<x>/image 32FC1")
    p.add_argument("--no-ground-truth", action="store_true")
    p.add_argument("--no-lidar", action="store_true")
    p.add_argument("--loop", action="store_true", help="repeat (stamps keep increasing)")
    p.add_argument(
        "--wait-subscribers",
        type=int,
        default=0,
        help="start once the front image topic and /clock have this many subscribers",
    )
    p.add_argument(
        "--prerender",
        action="store_true",
        help="render every frame before publishing (real time on slow CPUs; ~3 MB/frame)",
    )
    p.add_argument("--linger", type=float, default=1.0, help="seconds to stay up after the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args, ros_args = _parser().parse_known_args(argv)
    from builtin_interfaces.msg import Time  # noqa: F401  # fail early without ROS types
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    def make_node() -> Any:
        rig = default_rig(args.width, args.height, args.hfov)
        if args.no_lidar:
            rig = type(rig)(rig.cameras, None)
        scenario = Scenario(
            args.seed,
            args.duration,
            args.rate,
            rig,
            ego_speed=args.ego_speed,
            density=args.density,
        )
        layout = SimLayout(role=args.role, base_frame=args.base_frame)
        stop = threading.Event()

        class ScenarioNode(Node):
            def destroy_node(self) -> None:
                """Stop the render thread with the node (run_node destroys it)."""
                stop.set()
                super().destroy_node()

        node = ScenarioNode("scenario_publisher")
        log = node.get_logger()
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        types: dict[str, Any] = {layout.clock_topic: Clock}
        for c in rig.cameras:
            types[layout.image_topic(c.name)] = Image
            types[layout.camera_info_topic(c.name)] = CameraInfo
            if args.depth:
                types[layout.depth_topic(c.name)] = Image
            if not args.no_ground_truth:
                types[layout.detections_topic(c.name)] = Detection2DArray
        if rig.lidar is not None:
            types[layout.lidar_topic] = PointCloud2
        if not args.no_ground_truth:
            types[layout.objects_topic] = Detection3DArray
        pubs = {t: node.create_publisher(m, t, qos) for t, m in types.items()}
        front = pubs[layout.image_topic(rig.cameras[0].name)]
        clock_pub = pubs[layout.clock_topic]

        # render ahead in a thread; None marks the end
        Item = tuple[int, list[tuple[str, Any]]]
        ready: queue.Queue[Item | Exception | None] = queue.Queue(maxsize=3)

        def rendered() -> Iterator[Item]:
            for stamp_ns, frame in timed_frames(scenario, args.loop):
                msgs = frame_messages(
                    frame,
                    stamp_ns,
                    scenario,
                    layout,
                    depth=args.depth,
                    ground_truth=not args.no_ground_truth,
                )
                yield stamp_ns, msgs

        source: Iterator[Item] | list[Item] = rendered()
        if args.prerender:
            if args.loop:
                raise ValueError("--prerender and --loop: expected one of them, got both")
            log.info(f"rendering {scenario.n_frames} frames before publishing ...")
            source = list(source)
            log.info("rendered; publishing")

        def produce() -> None:
            try:
                for stamp_ns, msgs in source:
                    while not stop.is_set():
                        try:
                            ready.put((stamp_ns, msgs), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except Exception as exc:  # surfaced in the node's log, then the node ends
                ready.put(exc)
                return
            ready.put(None)

        worker = threading.Thread(target=produce, name="scenario_render", daemon=True)
        worker.start()
        state: dict[str, Any] = {"t0_wall": None, "s0": None, "pending": None, "sent": 0}
        state["late_warned"] = False

        def tick() -> None:
            waiting = (
                min(front.get_subscription_count(), clock_pub.get_subscription_count())
                < args.wait_subscribers
            )
            if state["t0_wall"] is None and waiting:
                return
            if state["pending"] is None:
                try:
                    state["pending"] = ready.get_nowait()
                except queue.Empty:
                    return
            item = state["pending"]
            if item is None:
                state["pending"] = "done"
                log.info(f"scenario finished: {state['sent']} frames published")
                node.create_timer(max(args.linger, 0.01), _finish)
                return
            if item == "done":
                return
            if isinstance(item, Exception):
                raise item
            stamp_ns, msgs = item
            now = time.monotonic()
            if state["t0_wall"] is None:
                state["t0_wall"], state["s0"] = now, stamp_ns
            if args.speed > 0:
                due = state["t0_wall"] + (stamp_ns - state["s0"]) / 1e9 / args.speed
                if now < due:
                    return
                if now - due > 0.5 and not state["late_warned"]:
                    log.warning(
                        "rendering is slower than --speed asks; frames are late "
                        "(sim time stays exact)"
                    )
                    state["late_warned"] = True
            for topic, msg in msgs:
                pubs[topic].publish(msg)
            state["sent"] += 1
            state["pending"] = None

        def _finish() -> None:
            raise SystemExit(0)

        node.create_timer(0.005, tick)
        log.info(
            f"scenario seed={args.seed} {scenario.n_frames} frames at {args.rate} Hz, "
            f"{len(scenario.actors)} actors, cameras {[c.name for c in rig.cameras]}, "
            f"speed x{args.speed}"
        )
        return node

    return run_node(make_node, ["scenario_publisher", *ros_args], name="scenario_publisher")


if __name__ == "__main__":
    sys.exit(main())
