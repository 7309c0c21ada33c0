"""Transport alone: what sending N cameras costs the sender, and receiving them the node.

No model: one `load_publisher` process sends every camera (as in
bench_pipeline.py), and this process receives them the way the detector node
does, raw and pulled (perception.ros.pulled): every `--take-period` it takes
each camera's newest sample and leaves the rest to be replaced in the
middleware. Reported over the measured window, variants alternating round by
round (the host's speed drifts):

- the sender's CPU, in % of a core and in ms per frame sent;
- this receiving process's CPU (its DDS threads included), in % of a core and
  in ms per frame sent to it, and how many samples it took;
- variant `filter`: the subscriptions carry a content filter on the stamp
  (`header.stamp.nanosec < --filter-ns`, 1/4 of the frames by default), the
  stand-in for a time-based filter, which Fast DDS does not implement; Fast
  DDS evaluates it on the writer's side: the reader no longer reassembles
  filtered frames, the writer pays for evaluating the filter on each.

    ./dev exec python bench/bench_transport.py [--cameras 8] [--size 1280x720] \
        [--seconds 12] [--rounds 3] [--variants plain filter]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROFILE = REPO / "config" / "fastdds_large_images.xml"
IMAGE = REPO.parent / "shared" / "data" / "pd_19064748793_bb942deea1_k.jpg"


def _cpu_self_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_case(args: argparse.Namespace, variant: str) -> dict:
    import psutil
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.subscription_content_filter_options import ContentFilterOptions
    from sensor_msgs.msg import Image

    from perception.ros.pulled import PulledGroup, PulledSubscriptions
    from perception.ros.testing import NodeProcess, override_environ, restore_environ

    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), "RMW_FASTRTPS_USE_QOS_FROM_XML": "0"}
    saved = override_environ(env)
    topics = [f"/bench_transport/cam{i}/image_raw" for i in range(args.cameras)]
    rclpy.init()
    node = rclpy.create_node("bench_transport_rx")
    group = PulledGroup()
    reliable = args.reliability == "reliable"
    qos = QoSProfile(
        depth=1,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
    )
    extra: dict[str, Any] = {}
    if variant == "filter":
        extra["content_filter_options"] = ContentFilterOptions(
            "header.stamp.nanosec < %0", [str(args.filter_ns)]
        )
    subs = []
    for t in topics:
        sub = node.create_subscription(
            Image, t, lambda _m: None, qos, raw=True, callback_group=group, **extra
        )
        group.pull(sub)
        subs.append(sub)
    pulled = PulledSubscriptions(subs, node.context)
    filtered = all(getattr(s, "is_cft_enabled", False) for s in subs)
    pub_args = [*topics, "--size", args.size, "--rate", str(args.rate)]
    pub_args += ["--reliability", args.reliability]
    if IMAGE.is_file():
        pub_args += ["--image", str(IMAGE)]
    sender = NodeProcess.module("perception.ros.tools.load_publisher", *pub_args, env=env)
    taken = 0
    try:
        p_pub = psutil.Process(sender.proc.pid)

        def take_all() -> int:
            n = 0
            for sub in subs:
                last = None
                while (got := pulled.take(sub)) is not None:
                    last = got
                n += last is not None
            return n

        end = time.monotonic() + args.warmup
        while time.monotonic() < end:
            take_all()
            time.sleep(args.take_period)
        t0, pub0, self0 = time.monotonic(), p_pub.cpu_times(), _cpu_self_s()
        while time.monotonic() < t0 + args.seconds:
            tick = time.monotonic()
            taken += take_all()
            time.sleep(max(0.0, args.take_period - (time.monotonic() - tick)))
        t1, pub1, self1 = time.monotonic(), p_pub.cpu_times(), _cpu_self_s()
    finally:
        sender.stop()
        node.destroy_node()
        rclpy.shutdown()
        restore_environ(saved)
    window = t1 - t0
    sent = args.cameras * args.rate * window
    pub_s = (pub1.user + pub1.system) - (pub0.user + pub0.system)
    rx_s = self1 - self0
    return {
        "variant": variant,
        "content_filter_active": filtered,
        "cameras": args.cameras,
        "size": args.size,
        "rate_hz_per_camera": args.rate,
        "reliability": args.reliability,
        "window_s": round(window, 2),
        "frames_sent_approx": round(sent),
        "taken": taken,
        "sender_cpu_pct": round(100.0 * pub_s / window, 1),
        "sender_ms_per_frame": round(1e3 * pub_s / sent, 3),
        "receiver_cpu_pct": round(100.0 * rx_s / window, 1),
        "receiver_ms_per_frame_sent": round(1e3 * rx_s / sent, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT, bgr8")
    ap.add_argument("--rate", type=float, default=30.0, help="frames per second per camera")
    ap.add_argument("--seconds", type=float, default=12.0, help="measured window per run")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--take-period", type=float, default=0.16, help="s between takes")
    ap.add_argument("--filter-ns", type=int, default=250_000_000, help="filter: nanosec below")
    ap.add_argument("--reliability", choices=["reliable", "best_effort"], default="reliable")
    ap.add_argument(
        "--variants", nargs="+", choices=["plain", "filter"], default=["plain", "filter"]
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "transport.json")
    args = ap.parse_args()
    from perception.ros.malloc_tuning import keep_large_buffers_on_heap

    keep_large_buffers_on_heap()  # as the detector node does
    rows = []
    for rnd in range(args.rounds):
        for variant in args.variants:
            row = {**run_case(args, variant), "round": rnd}
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"command": " ".join(sys.argv), "cpus": os.cpu_count(), "results": rows},
                   indent=2) + "\n"
    )  # fmt: skip
    print(f"\n{'variant':>8} {'rnd':>3} {'taken':>6} {'sender %':>9} {'ms/frame':>9} "
          f"{'receiver %':>11} {'ms/frame':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['variant']:>8} {r['round']:>3} {r['taken']:>6} {r['sender_cpu_pct']:>9} "
              f"{r['sender_ms_per_frame']:>9} {r['receiver_cpu_pct']:>11} "
              f"{r['receiver_ms_per_frame_sent']:>9}")  # fmt: skip
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
