"""Camera callback cost: what the detector node pays per received image.

Default mode: a publisher sends a pre-built serialized Image; the message is
taken exactly as the executor does (`sub.handle.take_message`, raw or not as
`DetectorDriver.RAW_SUBSCRIPTIONS` says, so the script measures the tree it
runs in) and handed to `DetectorDriver._on_image` (the real method, on a
driver without engine whose stage only stores the frame);
`taken_frame_decode_ms` is what the worker then pays to turn a frame it
takes into the (H, W, 3) array. These in-process figures leave out what the
executor machinery costs per message; `--executor-load` measures that: the
whole receiving process's CPU per message sent, with an executor taking
every message, with pulled subscriptions (perception.ros.pulled) taken only
at the engine's rate, and with nothing taken.

    ./dev exec python bench/bench_callback.py [--reps 200] [--sizes 1920x1080 1280x720]
    ./dev exec python bench/bench_callback.py --executor-load --sizes 640x360 1280x720 \
        --out bench/results/executor_load.json
    ./dev exec python bench/bench_callback.py --executor-load --sizes 1280x720 \
        --modes pulled filtered --seconds 12 --out bench/results/filter_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class _Stage:
    """Stand-in DetectionStage: keeps the newest frame, counts errors."""

    def __init__(self) -> None:
        self.frame: Any = None
        self.errors = 0

    def submit(self, frame: Any) -> None:
        self.frame = frame

    def count_error(self, *args: Any, **kwargs: Any) -> None:
        self.errors += 1


def measure(size: tuple[int, int], reps: int) -> dict:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from perception.config.generated import CameraParams
    from perception.ros import detector_node
    from perception.ros.tools.load_publisher import build_image

    raw = bool(getattr(detector_node.DetectorDriver, "RAW_SUBSCRIPTIONS", False))
    w, h = size
    msg = build_image(w, h, frame_id="cam0")
    data = serialize_message(msg)

    rclpy.init()
    node = rclpy.create_node("bench_callback")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, "/bench_callback/image", qos)
    sub = node.create_subscription(Image, "/bench_callback/image", lambda m: None, qos, raw=raw)
    stage = _Stage()
    cam = SimpleNamespace(name="cam0", cfg=CameraParams(topic="/x"), info_received=False)
    tune = getattr(detector_node, "keep_large_buffers_on_heap", None)
    if tune is not None:  # what DetectorDriver.start does
        tune()
    driver = object.__new__(detector_node.DetectorDriver)  # no parameters, no engine
    driver.stage = stage  # type: ignore[assignment]
    driver.node = node
    take_ms: list[float] = []
    cb_ms: list[float] = []
    decode_ms: list[float] = []
    try:
        deadline = time.monotonic() + 10.0
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(reps + 5):
            stamp = i + 1
            msg.header.stamp.sec = stamp
            pub.publish(serialize_message(msg) if raw else msg)
            got = None
            deadline = time.monotonic() + 2.0
            while got is None and time.monotonic() < deadline:
                t0 = time.perf_counter()
                with sub.handle:
                    got = sub.handle.take_message(sub.msg_type, sub.raw)
                t1 = time.perf_counter()
                if got is None:
                    time.sleep(0.001)
            if got is None:
                raise RuntimeError("no message received")
            driver._on_image(cam, got[0])  # type: ignore[arg-type]
            t2 = time.perf_counter()
            image = stage.frame.image()  # the worker's parse + view of a taken frame
            t3 = time.perf_counter()
            if image.shape != (h, w, 3):
                raise RuntimeError(f"decoded {image.shape}, expected {(h, w, 3)}")
            if i >= 5:
                take_ms.append((t1 - t0) * 1e3)
                cb_ms.append((t2 - t1) * 1e3)
                decode_ms.append((t3 - t2) * 1e3)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    del data
    total = np.array(take_ms) + np.array(cb_ms)
    return {
        "size": f"{w}x{h}",
        "bytes": h * w * 3,
        "raw_subscription": raw,
        "take_ms_p50": round(float(np.median(take_ms)), 3),
        "callback_ms_p50": round(float(np.median(cb_ms)), 3),
        "total_ms_p50": round(float(np.median(total)), 3),
        "total_ms_p95": round(float(np.percentile(total, 95)), 3),
        "taken_frame_decode_ms_p50": round(float(np.median(decode_ms)), 3),
        "errors": stage.errors,
    }


def executor_load(size: tuple[int, int], cameras: int, mode: str, seconds: float) -> dict:
    """CPU of a receiving process per message sent, `cameras` x 30 Hz raw
    Images from a load_publisher process (shared-memory profile):

    - "executor": rclpy's SingleThreadedExecutor takes every message and runs
      a callback that reads its header (what a callback-driven node pays);
    - "pulled": the subscriptions are in a PulledGroup; a worker thread takes
      the newest sample of each camera at 7 Hz per camera (a saturated engine
      at 8 cameras takes about that), the executor spins for everything else;
    - "none": subscribed, nothing ever taken (the middleware's own cost);
    - "filtered": "pulled" with a content filter on the stamp
      (`header.stamp.nanosec < 250000000`: a quarter of the frames pass), the
      stand-in for the time-based filter Fast DDS lacks. Fast DDS evaluates it
      on the writer's side: the reader no longer reassembles filtered frames,
      the sender pays for evaluating the filter on each (its CPU is reported).
    """
    import psutil
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from perception.core import cdr
    from perception.ros.pulled import PulledGroup, PulledSubscriptions
    from perception.ros.testing import NodeProcess, override_environ, restore_environ

    profile = REPO / "config" / "fastdds_large_images.xml"
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile), "RMW_FASTRTPS_USE_QOS_FROM_XML": "0"}
    saved = override_environ(env)
    rclpy.init()
    node = rclpy.create_node("bench_executor_load")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    taken = [0]

    def on_image(data: bytes) -> None:
        cdr.read_header(data)
        taken[0] += 1

    group = PulledGroup()
    subs = []
    extra: dict[str, Any] = {}
    if mode == "filtered":
        from rclpy.subscription_content_filter_options import ContentFilterOptions

        extra["content_filter_options"] = ContentFilterOptions(
            "header.stamp.nanosec < %0", ["250000000"]
        )
    for i in range(cameras):
        sub = node.create_subscription(
            Image, f"/bench_load/cam{i}", on_image, qos, raw=True, callback_group=group, **extra
        )
        if mode != "executor":
            group.pull(sub)
        subs.append(sub)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()

    def worker() -> None:
        taker = PulledSubscriptions(subs, node.context)
        while not stop.wait(1.0 / 7.0):
            for sub in subs:
                got, newest = taker.take(sub), None
                while got is not None:
                    newest, got = got, taker.take(sub)
                if newest is not None:
                    on_image(newest[0])

    thread = threading.Thread(target=worker, daemon=True)
    if mode in ("pulled", "filtered"):
        thread.start()
    w, h = size
    topics = [f"/bench_load/cam{i}" for i in range(cameras)]
    pub = NodeProcess.module(
        "perception.ros.tools.load_publisher", *topics, "--size", f"{w}x{h}", env=env
    )
    try:
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        sender = psutil.Process(pub.proc.pid)
        t0, c0, n0, s0 = time.monotonic(), os.times(), taken[0], sender.cpu_times()
        while time.monotonic() < t0 + seconds:
            executor.spin_once(timeout_sec=0.05)
        t1, c1, s1 = time.monotonic(), os.times(), sender.cpu_times()
    finally:
        stop.set()
        pub.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
        restore_environ(saved)
    cpu = c1.user + c1.system - c0.user - c0.system
    sender_cpu = s1.user + s1.system - s0.user - s0.system
    sent = 30.0 * cameras * (t1 - t0)
    return {
        "mode": mode,
        "size": f"{w}x{h}",
        "cameras": cameras,
        "taken_per_s": round((taken[0] - n0) / (t1 - t0), 1),
        "cpu_pct_of_one_core": round(100.0 * cpu / (t1 - t0), 1),
        "cpu_ms_per_message_sent": round(1e3 * cpu / sent, 3),
        "sender_cpu_pct_of_one_core": round(100.0 * sender_cpu / (t1 - t0), 1),
        "sender_cpu_ms_per_message": round(1e3 * sender_cpu / sent, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--sizes", nargs="+", default=["1920x1080", "1280x720", "640x360"])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "callback.json")
    ap.add_argument(
        "--executor-load", action="store_true",
        help="instead: receiving-process CPU per message, per --modes",
    )  # fmt: skip
    ap.add_argument(
        "--modes", nargs="+", choices=["executor", "pulled", "none", "filtered"],
        default=["executor", "pulled", "none"], help="--executor-load modes, in this order",
    )  # fmt: skip
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    rows = []
    for s in args.sizes:
        w, h = (int(v) for v in s.split("x"))
        if args.executor_load:
            for mode in args.modes:
                rows.append(executor_load((w, h), args.cameras, mode, args.seconds))
                print(json.dumps(rows[-1]), flush=True)
        else:
            rows.append(measure((w, h), args.reps))
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": os.uname().nodename, "results": rows}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
