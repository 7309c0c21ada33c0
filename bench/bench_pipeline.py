"""Pipeline overhead: camera stamp -> Detection2DArray received in a third process.

A trivial model (well under 2 ms per batch) isolates what the node adds:
transport of 1920x1080 frames, conversion, pre/post-processing and publishing.
Processes: N camera publishers (image_publisher, 30 Hz, bgr8) -> the detector
node (run_config) -> this process, which subscribes to every camera's
detections and records (receive time - header stamp). Runs each of
{1, 4 cameras} x {default Fast DDS transports, config/fastdds_large_images.xml}
side by side in one invocation; writes bench/results/pipeline.json and prints
a table. Every process runs with localhost-only discovery.

    ./dev exec python bench/bench_pipeline.py [--seconds 20] [--cameras 1 4]
    ./dev exec python bench/bench_pipeline.py --model MODEL.onnx --seconds 60 --cameras 1 \
        --profiles shm     # (b): a real model, a long run, latency over time
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROFILE = REPO / "config" / "fastdds_large_images.xml"


def write_trivial_detector(path: Path, num_classes: int = 2) -> Path:
    """A YOLOv8-layout ONNX model ([B, 4+nc, 64]) that costs almost nothing:
    AveragePool to 8x8, a 1x1 conv with zero weights and a fixed bias (one box
    in the middle, class 0 at 0.9), reshaped to 64 anchors."""
    from perception.core.engines.onnx_proto import Node, ValueInfo, build_model

    c = 4 + num_classes
    bias = np.zeros(c, np.float32)
    bias[:4] = (32.0, 32.0, 16.0, 16.0)
    bias[4] = 0.9
    nodes = [
        Node("AveragePool", ["images"], ["pooled"], {"kernel_shape": [8, 8], "strides": [8, 8]}),
        Node("Conv", ["pooled", "w", "b"], ["head"]),
        Node("Reshape", ["head", "shape"], ["output0"]),
    ]
    data = build_model(
        nodes,
        [ValueInfo("images", np.float32, ["batch", 3, 64, 64])],
        [ValueInfo("output0", np.float32, ["batch", c, 64])],
        {
            "w": np.zeros((c, 3, 1, 1), np.float32),
            "b": bias,
            "shape": np.array([0, c, 64], np.int64),
        },
        metadata={"names": str({i: f"class{i}" for i in range(num_classes)}), "stride": "8"},
    )
    path.write_bytes(data)
    return path


def run_case(
    cameras: int,
    profile: bool,
    seconds: float,
    warmup: float,
    model: Path,
    image: Path,
    rate: float,
    extra_params: dict,
) -> dict:
    import rclpy
    import yaml
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import Detection2DArray

    from perception.ros.conversions import stamp_to_ns
    from perception.ros.testing import NodeProcess

    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)} if profile else {}
    env["RMW_FASTRTPS_USE_QOS_FROM_XML"] = "0"
    names = [f"cam{i}" for i in range(cameras)]
    params = {
        "perception.node_type": "detector",
        "camera_names": names,
        "model.path": str(model),
        "max_age_ms": 200.0,
        "overlay": False,
        **extra_params,
    }
    for n in names:
        params[f"cameras.{n}.topic"] = f"/bench/{n}/image_raw"
        params[f"cameras.{n}.qos.reliability"] = "reliable"
    cfg = Path(tempfile.mkdtemp()) / "bench.yaml"
    cfg.write_text(yaml.safe_dump({"bench_detector": {"ros__parameters": params}}))

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    rclpy.init()
    node = rclpy.create_node("bench_sink")
    lat: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    t0 = time.monotonic()

    def cb(msg: Detection2DArray, cam: str) -> None:
        now = node.get_clock().now().nanoseconds
        lat[cam].append((time.monotonic() - t0, (now - stamp_to_ns(msg.header.stamp)) * 1e-6))

    from diagnostic_msgs.msg import DiagnosticArray

    counters: dict[str, dict[str, str]] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if "bench_detector: camera" in st.name:
                counters[st.name.rsplit(" ", 1)[-1]] = {kv.key: kv.value for kv in st.values}

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for n in names:
        node.create_subscription(
            Detection2DArray, f"/bench_detector/{n}/detections", lambda m, n=n: cb(m, n), qos
        )
    procs = [NodeProcess([sys.executable, "-m", "perception.ros.run_config", str(cfg)], env=env)]
    for n in names:
        procs.append(
            NodeProcess(
                [
                    sys.executable,
                    "-m",
                    "perception.ros.tools.image_publisher",
                    str(image),
                    "--topic",
                    f"/bench/{n}/image_raw",
                    "--frame-id",
                    n,
                    "--rate",
                    str(rate),
                    "--loop",
                ],
                env=env,
            )
        )
    import psutil

    rss = []
    try:
        end = time.monotonic() + warmup + seconds
        next_rss = time.monotonic()
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
            if time.monotonic() >= next_rss and procs[0].alive():
                rss.append(psutil.Process(procs[0].proc.pid).memory_info().rss / 2**20)
                next_rss += 1.0
        # the node's own drop counters, from its last diagnostics
        logs = procs[0].output()
    finally:
        for p in procs:
            p.stop()
        node.destroy_node()
        rclpy.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    samples = [v for n in names for (t, v) in lat[n] if t >= warmup]
    over_time = [(round(t, 2), round(v, 2)) for n in names for (t, v) in lat[n] if t >= warmup]
    sent = int(seconds * rate) * cameras
    res = {
        "cameras": cameras,
        "profile": "shm_large" if profile else "default",
        "rate_hz_per_camera": rate,
        "frames_expected": sent,
        "frames_out": len(samples),
        "output_rate_hz": round(len(samples) / seconds, 2),
        "node_rss_mib_max": round(max(rss), 1) if rss else None,
        "node_rss_mib_first_last": [round(rss[0], 1), round(rss[-1], 1)] if rss else None,
        "node_counters": {
            cam: {
                k: int(v)
                for k, v in c.items()
                if k in ("received", "processed", "skipped", "stale", "rejected")
            }
            for cam, c in counters.items()
        },
    }
    if samples:
        a = np.array(samples)
        res.update(
            p50_ms=round(float(np.percentile(a, 50)), 2),
            p95_ms=round(float(np.percentile(a, 95)), 2),
            max_ms=round(float(a.max()), 2),
        )
        # latency trend: median of the first vs the last third (a backlog grows it)
        times = np.array([t for t, _ in over_time])
        vals = np.array([v for _, v in over_time])
        order = np.argsort(times)
        thirds = np.array_split(vals[order], 3)
        res["p50_first_third_ms"] = round(float(np.median(thirds[0])), 2)
        res["p50_last_third_ms"] = round(float(np.median(thirds[-1])), 2)
    else:
        res["log_tail"] = logs[-1500:]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--profiles", nargs="+", choices=["default", "shm"], default=["default", "shm"])
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--model", type=Path, default=None, help="real model (default: trivial)")
    ap.add_argument("--labels", type=Path, default=None)
    ap.add_argument(
        "--image",
        type=Path,
        default=REPO.parent / "shared" / "data" / "pd_19064748793_bb942deea1_k.jpg",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    args = ap.parse_args()
    import cv2

    tmp = Path(tempfile.mkdtemp())
    model = args.model or write_trivial_detector(tmp / "trivial.onnx")
    if args.image.is_file():
        img = cv2.resize(cv2.imread(str(args.image)), (1920, 1080))
    else:
        img = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    image = tmp / "frame_1080p.png"
    cv2.imwrite(str(image), img)
    extra = {}
    if args.labels:
        extra["model.labels_file"] = str(args.labels)
    elif args.model is None:
        extra["model.family"] = "yolov8"
    rows = []
    for cams in args.cameras:
        for prof in args.profiles:
            r = run_case(
                cams, prof == "shm", args.seconds, args.warmup, model, image, args.rate, extra
            )
            r["model"] = "trivial" if args.model is None else str(args.model)
            rows.append(r)
            print(json.dumps(r), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": os.uname().nodename, "cpus": os.cpu_count(), "results": rows}, indent=2
        )
        + "\n"
    )
    print(
        f"\n{'cams':>4} {'profile':>9} {'out Hz':>7} {'frames':>11} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'first/last p50':>15} {'RSS MiB':>8}"
    )
    for r in rows:
        print(
            f"{r['cameras']:>4} {r['profile']:>9} {r['output_rate_hz']:>7} "
            f"{r['frames_out']:>5}/{r['frames_expected']:<5} {r.get('p50_ms', '-'):>7} "
            f"{r.get('p95_ms', '-'):>7} "
            f"{r.get('p50_first_third_ms', '-')!s:>7}/{r.get('p50_last_third_ms', '-')!s:<7} "
            f"{r['node_rss_mib_max']!s:>8}"
        )
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
