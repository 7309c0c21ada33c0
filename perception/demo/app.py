"""`./dev demo`: the whole pipeline as real ROS 2 processes on a fixed synthetic
scenario (or a real video), with a progress bar, scored into a report.

Processes: the scenario publisher (CARLA bridge layout, /clock, depth, ground
truth) -> one run_config process with the detector (3 cameras, tracking), one
depth fusion node per camera and an overlay node for the front camera (the
detector section of config/carla.yaml, the file shipped for real CARLA, plus
the other nodes) -> a recorder node in this process. After the scenario ends
everything is stopped with SIGINT and the output folder gets overlay.mp4,
report.json, report.md and PNG plots.

    ./dev demo [--out DIR] [--duration 12] [--model M.onnx [--labels L]]
    ./dev demo --model M.onnx --video clip.mp4      # real data: latency and counts
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from perception.demo import metrics
from perception.demo.plots import bar_chart, line_chart

__all__ = ["DemoError", "main", "resolve_model"]

log = logging.getLogger("perception.demo")

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_MODEL = REPO / "models" / "default_detector.onnx"
FALLBACK_MODEL = SHARED / "yolox_nano.onnx"
FALLBACK_LABELS = REPO / "config" / "coco80.labels"
CARLA_CONFIG = REPO / "config" / "carla.yaml"
DDS_PROFILE = REPO / "config" / "fastdds_large_images.xml"
ROLE = "ego_vehicle"
OVERLAY_CAMERA = "rgb_front"


class DemoError(RuntimeError):
    """The demo could not run (missing model, a process died, no output)."""


# --------------------------------------------------------------------- set-up
def resolve_model(model: Path | None, labels: Path | None) -> tuple[Path, Path | None]:
    """The model to run: the given one, else the project's default detector,
    else the shared YOLOX-nano with the COCO labels."""
    if model is not None:
        if not model.is_file():
            raise DemoError(f"--model: expected an ONNX file, got missing {model}")
        return model, labels
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL, labels
    if FALLBACK_MODEL.is_file():
        return FALLBACK_MODEL, labels or FALLBACK_LABELS
    raise DemoError(
        f"no model: expected {DEFAULT_MODEL} or {FALLBACK_MODEL}, found neither (pass --model)"
    )


def class_names_of(model: Path, labels: Path | None) -> list[str]:
    """Class names as the detector will publish them (labels file, else the
    ONNX metadata 'names' of Ultralytics exports)."""
    if labels is not None:
        return [ln.strip() for ln in labels.read_text().splitlines() if ln.strip()]
    import onnxruntime as ort

    meta = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = meta.get_modelmeta().custom_metadata_map.get("names", "")
    if not names:
        return []
    parsed = ast.literal_eval(names)
    if isinstance(parsed, dict):
        return [str(parsed[k]) for k in sorted(parsed)]
    return [str(n) for n in parsed]


def _flat(t: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(t, np.float64).reshape(-1)]


def scenario_config(model: Path, labels: Path | None, names: list[str], rig: Any) -> dict:
    """run_config parameter file: config/carla.yaml's detector plus the fusion
    and overlay nodes of the demo."""
    from perception.ros.run_config import flatten
    from perception.sim.layout import SimLayout

    layout = SimLayout(role=ROLE)
    data = yaml.safe_load(CARLA_CONFIG.read_text())
    det = flatten(data["detector"]["ros__parameters"])
    det.update(
        {
            "model.path": str(model),
            "model.labels_file": str(labels or ""),
            "tracking": True,
            "overlay": False,
            "max_age_ms": 0.0,
        }
    )
    for cam in det["camera_names"]:
        det[f"cameras.{cam}.qos.reliability"] = "reliable"
        det[f"cameras.{cam}.qos.depth"] = 2
    config: dict[str, Any] = {"detector": {"ros__parameters": det}}
    for mount in rig.cameras:
        side = mount.name.removeprefix("rgb_")
        config[f"fusion_{side}"] = {
            "ros__parameters": {
                "perception.node_type": "fusion",
                "use_sim_time": True,
                "mode": "depth",
                "detections_topic": f"/detector/{mount.name}/tracks",
                "camera_info_topic": layout.camera_info_topic(mount.name),
                "depth_topic": layout.depth_topic(mount.name),
                "qos_reliability": "reliable",
                "target_frame": layout.base_frame,
                "class_names": list(names),
                "T_target_from_camera": _flat(mount.T_base_from_cam),
                "predicted_output": False,
            }
        }
    front = rig.camera(OVERLAY_CAMERA)
    config["overlay_front"] = {
        "ros__parameters": {
            "perception.node_type": "overlay",
            "use_sim_time": True,
            "image_topic": layout.image_topic(OVERLAY_CAMERA),
            "image_qos.reliability": "reliable",
            "tracks_topic": f"/detector/{OVERLAY_CAMERA}/tracks",
            "class_names": list(names),
            "objects_topic": "/fusion_front/objects",
            "camera_info_topic": layout.camera_info_topic(OVERLAY_CAMERA),
            "T_camera_from_objects": _flat(np.linalg.inv(front.T_base_from_cam)),
            "buffer_size": 30,
        }
    }
    return config


def video_config(model: Path, labels: Path | None, names: list[str], topic: str) -> dict:
    """run_config parameter file of real-data mode: one camera, no 3D."""
    return {
        "detector": {
            "ros__parameters": {
                "perception.node_type": "detector",
                "camera_names": ["camera"],
                "model.path": str(model),
                "model.labels_file": str(labels or ""),
                "tracking": True,
                "overlay": False,
                "max_age_ms": 0.0,
                "cameras.camera.topic": topic,
                "cameras.camera.qos.reliability": "reliable",
                "cameras.camera.qos.depth": 2,
            }
        },
        "overlay_front": {
            "ros__parameters": {
                "perception.node_type": "overlay",
                "image_topic": topic,
                "image_qos.reliability": "reliable",
                "tracks_topic": "/detector/camera/tracks",
                "class_names": list(names),
                "buffer_size": 30,
            }
        },
    }


def _is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (
        ".mcap",
        ".db3",
    )


def extract_bag_images(bag: Path, dest: Path, topic: str | None, max_frames: int) -> Path:
    """The images of one topic of a rosbag2 (sensor_msgs/Image or CompressedImage)
    as numbered PNG files, so image_publisher can play them like a video."""
    import cv2
    from rosbags.rosbag2 import Reader

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
        n = 0
        for _, _, raw in reader.messages(connections=[conn]):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.msgtype.endswith("CompressedImage"):
                img = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
            else:
                img = _raw_to_bgr(msg)
            cv2.imwrite(str(dest / f"{n:06d}.png"), img)
            n += 1
            if n >= max_frames:
                break
    if n == 0:
        raise DemoError(f"{bag}: topic {conn.topic} holds no images")
    return dest


def _raw_to_bgr(msg: Any) -> np.ndarray:
    import cv2

    data = np.frombuffer(bytes(msg.data), np.uint8)
    h, w, enc = int(msg.height), int(msg.width), msg.encoding
    channels = {"bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4, "mono8": 1}
    if enc not in channels:
        raise DemoError(f"bag image encoding: expected one of {sorted(channels)}, got {enc!r}")
    img = data.reshape(h, int(msg.step))[:, : w * channels[enc]].reshape(h, w, channels[enc])
    conv = {"rgb8": cv2.COLOR_RGB2BGR, "bgra8": cv2.COLOR_BGRA2BGR, "rgba8": cv2.COLOR_RGBA2BGR,
            "mono8": cv2.COLOR_GRAY2BGR}  # fmt: skip
    return cv2.cvtColor(img, conv[enc]) if enc in conv else img.copy()


# --------------------------------------------------------------------- progress
class Progress:
    """One-line progress bar on stderr (no tqdm)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.t0 = time.monotonic()
        self._last = 0.0

    def show(self, phase: str, done: int = 0, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        line = f"\r[{bar:<30}] {done:4d}/{self.total} {phase:<10} {now - self.t0:6.1f}s {extra}"
        sys.stderr.write(line[:120].ljust(120))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --------------------------------------------------------------------- recorder
def _boxes(msg: Any, mapped: bool, ident_from_id: bool = True) -> list[metrics.Box2D]:
    """Detection2DArray -> Box2D list (class names mapped to the scenario's)."""
    out = []
    for d in msg.detections:
        cx, cy = d.bbox.center.position.x, d.bbox.center.position.y
        w, h = d.bbox.size_x, d.bbox.size_y
        name, score = ("", 0.0)
        if d.results:
            name, score = d.results[0].hypothesis.class_id, d.results[0].hypothesis.score
        cls = metrics.map_class(name) if mapped else name
        if cls is None:
            continue
        out.append(
            metrics.Box2D(
                (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                cls,
                float(score),
                d.id if ident_from_id else "",
            )
        )
    return out


def _centres(msg: Any) -> np.ndarray:
    pts = [
        (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.position.z)
        for d in msg.detections
    ]
    return np.asarray(pts, np.float64).reshape(-1, 3)


@dataclass
class Recording:
    """Everything the recorder received, keyed by camera and stamp (ns)."""

    gt2d: dict[str, dict[int, list]] = field(default_factory=lambda: defaultdict(dict))
    gt3d: dict[int, np.ndarray] = field(default_factory=dict)
    dets: dict[str, dict[int, list]] = field(default_factory=lambda: defaultdict(dict))
    tracks: dict[str, dict[int, list]] = field(default_factory=lambda: defaultdict(dict))
    objects: dict[str, dict[int, np.ndarray]] = field(default_factory=lambda: defaultdict(dict))
    latency: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)
    overlay_frames: int = 0
    overlay_frames_at: dict[int, float] = field(default_factory=dict)
    last_message: float = field(default_factory=time.monotonic)
    arrival: dict[int, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    """id(table) -> stamp -> monotonic arrival time in the recorder (wall latency)."""


class Recorder:
    """rclpy node in the demo process that stores the pipeline's outputs and
    writes the overlay video as its images arrive."""

    def __init__(
        self,
        cameras: list[str],
        fusion: list[str],
        video_path: Path,
        ground_truth: bool,
        fps: float,
    ) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float64MultiArray
        from vision_msgs.msg import Detection2DArray, Detection3DArray

        from perception.ros.conversions import stamp_to_ns

        self._ns = stamp_to_ns
        self.rec = Recording()
        self.node = rclpy.create_node("demo_recorder")
        self.video_path = video_path
        self.fps = fps
        self._writer: Any = None
        q = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        qi = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        sub = self.node.create_subscription
        self.watch: list[str] = []
        prefix = f"/carla/{ROLE}"
        for cam in cameras:
            if ground_truth:
                sub(
                    Detection2DArray,
                    f"{prefix}/{cam}/ground_truth/detections",
                    lambda m, c=cam: self._store(self.rec.gt2d[c], m, _boxes(m, False)),
                    q,
                )
            for topic, store in (("detections", self.rec.dets), ("tracks", self.rec.tracks)):
                sub(
                    Detection2DArray,
                    f"/detector/{cam}/{topic}",
                    lambda m, s=store, c=cam: self._store(s[c], m, _boxes(m, True)),
                    q,
                )
                self.watch.append(f"/detector/{cam}/{topic}")
            sub(
                Float64MultiArray,
                f"/detector/{cam}/latency",
                lambda m, c=cam: self._touch(self.rec.latency[c].append(list(m.data))),
                q,
            )
        if ground_truth:
            sub(
                Detection3DArray,
                f"{prefix}/ground_truth/objects",
                lambda m: self._store(self.rec.gt3d, m, _centres(m)),
                q,
            )
        for name in fusion:
            sub(
                Detection3DArray,
                f"/{name}/objects",
                lambda m, n=name: self._store(self.rec.objects[n], m, _centres(m)),
                q,
            )
            self.watch.append(f"/{name}/objects")
        sub(Image, "/overlay_front/image", self._on_overlay, qi)
        self.watch.append("/overlay_front/image")
        sub(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def _touch(self, _: Any = None) -> None:
        self.rec.last_message = time.monotonic()

    def _store(self, table: dict, msg: Any, value: Any) -> None:
        stamp = self._ns(msg.header.stamp)
        table[stamp] = value
        self.rec.arrival[id(table)].setdefault(stamp, time.monotonic())
        self._touch()

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            self.rec.diagnostics[st.name] = {
                "message": st.message,
                **{kv.key: kv.value for kv in st.values},
            }

    def _on_overlay(self, msg: Any) -> None:
        import cv2

        from perception.ros.images import image_to_bgr

        img = image_to_bgr(msg)
        if self._writer is None:
            h, w = img.shape[:2]
            self._writer = cv2.VideoWriter(
                str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._writer.isOpened():
                self.video_path = self.video_path.with_suffix(".avi")
                self._writer = cv2.VideoWriter(
                    str(self.video_path), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h)
                )
        self._writer.write(np.ascontiguousarray(img))
        self.rec.overlay_frames += 1
        self.rec.arrival[id(self.rec.overlay_frames_at)].setdefault(
            self._ns(msg.header.stamp), time.monotonic()
        )
        if self.rec.overlay_frames == 1:
            cv2.imwrite(str(self.video_path.with_name("overlay_first.png")), img)
        self._last_overlay = img
        self._touch()

    def discovered(self) -> bool:
        """Every output topic of the pipeline has a publisher."""
        return all(self.node.count_publishers(t) > 0 for t in self.watch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            import cv2

            last = getattr(self, "_last_overlay", None)
            if last is not None:
                cv2.imwrite(str(self.video_path.with_name("overlay_last.png")), last)
        self.node.destroy_node()


# --------------------------------------------------------------------- run
def _env() -> dict[str, str]:
    return {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(DDS_PROFILE),
        "RMW_FASTRTPS_USE_QOS_FROM_XML": "0",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }


def _spin_until(
    executor: Any,
    pred: Any,
    timeout_s: float,
    progress: Progress,
    phase: str,
    done: Any,
    procs: list[Any],
) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        for name, p in procs:
            if not p.alive() and name == "pipeline":
                raise DemoError(f"{name} process ended early:\n{p.output()[-3000:]}")
        executor.spin_once(timeout_sec=0.05)
        progress.show(phase, done())
    return bool(pred())


def run(args: argparse.Namespace) -> Path:
    """Run the demo; return the output folder."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from perception.ros.testing import NodeProcess

    t_start = time.monotonic()
    out = Path(args.out or REPO / "out" / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    model, labels = resolve_model(args.model, args.labels)
    names = class_names_of(model, labels)
    env = _env()
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    scenario = args.video is None
    if scenario:
        from perception.sim.rig import default_rig

        rig = default_rig(args.width, args.height)
        cameras = [c.name for c in rig.cameras]
        fusion = [f"fusion_{c.removeprefix('rgb_')}" for c in cameras]
        config = scenario_config(model, labels, names, rig)
        total = round(args.duration * args.rate)
        fps = args.rate
    else:
        if not args.video.exists():
            raise DemoError(f"--video: expected a video file, got missing {args.video}")
        if _is_bag(args.video):
            args.video = extract_bag_images(
                args.video, out / "bag_frames", args.image_topic, args.max_frames
            )
        cameras, fusion = ["camera"], []
        config = video_config(model, labels, names, "/demo/camera/image")
        import cv2

        if args.video.is_dir():
            n = len(list(args.video.iterdir()))
        else:
            cap = cv2.VideoCapture(str(args.video))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            cap.release()
        total = min(n, args.max_frames) if n > 0 else args.max_frames
        fps = args.rate
    for item in args.set:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or node not in config:
            raise DemoError(f"--set {item!r}: expected NODE.PARAM=VALUE, NODE in {list(config)}")
        config[node]["ros__parameters"][param] = yaml.safe_load(value)
    cfg_path = out / "pipeline.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    progress = Progress(total, enabled=not args.quiet)
    rclpy.init()
    recorder = Recorder(cameras, fusion, out / "overlay.mp4", scenario, fps)
    executor = SingleThreadedExecutor()
    executor.add_node(recorder.node)
    procs: list[tuple[str, Any]] = []
    timings: dict[str, float] = {}
    try:
        pipe = NodeProcess(
            [sys.executable, "-m", "perception.ros.run_config", str(cfg_path)], env=env
        )
        procs.append(("pipeline", pipe))
        ok = _spin_until(
            executor, recorder.discovered, 180.0, progress, "starting", lambda: 0, procs
        )
        if not ok:
            raise DemoError(f"pipeline outputs not discovered in 180 s:\n{pipe.output()[-3000:]}")
        timings["pipeline_start_s"] = time.monotonic() - t_start
        if scenario:
            argv = [
                sys.executable,
                "-m",
                "perception.sim.ros_publisher",
                "--seed",
                str(args.seed),
                "--duration",
                str(args.duration),
                "--rate",
                str(args.rate),
                "--speed",
                str(args.speed),
                "--width",
                str(args.width),
                "--height",
                str(args.height),
                "--role",
                ROLE,
                "--depth",
                "--no-lidar",
                "--prerender",
                "--wait-subscribers",
                "2",
                "--linger",
                "0.5",
            ]
        else:
            argv = [
                sys.executable,
                "-m",
                "perception.ros.tools.image_publisher",
                str(args.video),
                "--topic",
                "/demo/camera/image",
                "--frame-id",
                "camera",
                "--rate",
                str(args.rate),
                "--count",
                str(total),
                "--reliability",
                "reliable",
            ]
        source = NodeProcess(argv, env=env)
        procs.append(("source", source))

        def done() -> int:
            return len(recorder.rec.tracks[cameras[0]])

        phase = "rendering" if scenario else "playing"
        # the source publishes, then exits by itself
        _spin_until(
            executor, lambda: not source.alive(), args.timeout, progress, phase, done, procs
        )
        if source.alive():
            raise DemoError(f"source still running after {args.timeout} s")
        if source.proc.returncode != 0:
            raise DemoError(f"source failed ({source.proc.returncode}):\n{source.output()[-3000:]}")
        timings["source_done_s"] = time.monotonic() - t_start
        # drain: the pipeline's last outputs, until 2 s pass without a message
        _spin_until(
            executor,
            lambda: time.monotonic() - recorder.rec.last_message > 2.0,
            60.0,
            progress,
            "draining",
            done,
            procs,
        )
        # one more diagnostics period for the final counters
        t_diag = time.monotonic() + 1.2
        _spin_until(
            executor, lambda: time.monotonic() > t_diag, 5.0, progress, "draining", done, procs
        )
        progress.show("stopping", done(), force=True)
    finally:
        codes = {}
        for name, p in reversed(procs):
            codes[name] = p.stop(timeout_s=15.0)
            with contextlib.suppress(OSError):
                shutil.copy(p._log.name, out / "logs" / f"{name}.log")
        recorder.close()
        executor.shutdown()
        rclpy.shutdown()
        progress.close()
    timings["total_s"] = time.monotonic() - t_start
    report = build_report(recorder.rec, cameras, fusion, scenario, total, names, model)
    report["run"] = {
        "model": str(model),
        "labels": str(labels or ""),
        "source": str(args.video or "scenario"),
        "seed": args.seed,
        "duration_s": args.duration,
        "rate_hz": args.rate,
        "speed": args.speed,
        "image_size": [args.width, args.height],
        "exit_codes": codes,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "overlay_video": recorder.video_path.name,
    }
    write_outputs(out, report, recorder.rec, cameras)
    return out


# --------------------------------------------------------------------- report
def _finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return _finite(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def build_report(
    rec: Recording,
    cameras: list[str],
    fusion: list[str],
    scenario: bool,
    total: int,
    names: list[str],
    model: Path,
) -> dict:
    """Scores and counts of one run (JSON-ready)."""
    from perception.ros.detector_node import LATENCY_FIELDS

    report: dict[str, Any] = {"frames_expected_per_camera": total}
    counts = {}
    for cam in cameras:
        counts[cam] = {
            "ground_truth_frames": len(rec.gt2d.get(cam, {})),
            "detection_frames": len(rec.dets.get(cam, {})),
            "track_frames": len(rec.tracks.get(cam, {})),
            "detections": sum(len(v) for v in rec.dets.get(cam, {}).values()),
            "latency_samples": len(rec.latency.get(cam, [])),
        }
    for name in fusion:
        counts[name] = {
            "object_frames": len(rec.objects.get(name, {})),
            "objects": sum(len(v) for v in rec.objects.get(name, {}).values()),
        }
    counts["overlay_frames"] = rec.overlay_frames
    report["counts"] = counts
    # frames: own counts (the nodes' diagnostics timers run on sim time and stop
    # with /clock, so their last counters can miss the final second)
    frames: dict[str, dict[str, Any]] = {}
    for cam in cameras:
        published = len(rec.gt2d.get(cam, {})) if scenario else total
        processed = len(rec.dets.get(cam, {}))
        frames[cam] = {
            "published": published,
            "processed": processed,
            "not_processed": max(published - processed, 0),
        }
    for status, values in rec.diagnostics.items():
        if ": camera " in status:
            cam = status.rsplit(" ", 1)[-1]
            frames.setdefault(cam, {})["last_diagnostics"] = {
                k: int(values[k])
                for k in ("received", "processed", "skipped", "stale", "rejected")
                if k in values
            }
    report["frames"] = frames
    report["diagnostics"] = {k: v for k, v in rec.diagnostics.items() if ": camera " not in k}
    stages = LATENCY_FIELDS[1:]
    samples = {
        s: [
            row[i + 1]
            for cam in cameras
            for row in rec.latency.get(cam, [])
            if len(row) == len(LATENCY_FIELDS)
        ]
        for i, s in enumerate(stages)
    }
    report["latency_ms"] = metrics.latency_summary(samples)
    if scenario:
        report["pipeline_latency_ms"] = _wall_latency(rec, cameras, fusion)
    if scenario:
        frames = [
            (rec.gt2d[c][s], rec.dets[c][s])
            for c in cameras
            for s in sorted(rec.dets.get(c, {}))
            if s in rec.gt2d.get(c, {})
        ]
        report["detection_ap50"] = metrics.detection_ap(frames)
        seqs = {
            c: [
                (rec.gt2d[c][s], rec.tracks[c][s])
                for s in sorted(rec.tracks.get(c, {}))
                if s in rec.gt2d.get(c, {})
            ]
            for c in cameras
        }
        try:
            report["tracking"] = metrics.tracking_metrics(seqs)
        except ImportError as exc:  # motmetrics is in requirements/dev.txt, not base.txt
            log.warning(f"tracking metrics skipped: {exc} (pip install motmetrics==1.4.0)")
            report["tracking"] = {"mota": None, "idf1": None, "id_switches": None,
                                  "error": f"motmetrics not importable: {exc}"}  # fmt: skip
        pairs = [
            (rec.gt3d[s], rec.objects[n][s])
            for n in fusion
            for s in sorted(rec.objects.get(n, {}))
            if s in rec.gt3d
        ]
        report["centre_error_3d"] = metrics.centre_errors(pairs, max_distance=2.0)
        report["scoring"] = {
            "classes": list(metrics.CLASSES),
            "min_visibility": 0.3,
            "iou": 0.5,
            "class_map": {n: metrics.map_class(n) for n in names if metrics.map_class(n)},
            "centre_match_m": 2.0,
            "frame": "base_link",
        }
    return _clean(report)


def _wall_latency(rec: Recording, cameras: list[str], fusion: list[str]) -> dict:
    """Wall-clock delay from the ground truth's arrival (published with the
    images) to each output's arrival, both seen by the recorder: the detector's
    own capture stamps are sim time, which stops between frames."""
    arr = rec.arrival

    def delays(out_tables: list[dict], ref_tables: list[dict]) -> list[float]:
        vals = []
        for out, ref in zip(out_tables, ref_tables, strict=True):
            a, r = arr.get(id(out), {}), arr.get(id(ref), {})
            vals += [(a[s] - r[s]) * 1e3 for s in a if s in r]
        return vals

    gts = [rec.gt2d[c] for c in cameras]
    samples = {
        "detections": delays([rec.dets[c] for c in cameras], gts),
        "tracks": delays([rec.tracks[c] for c in cameras], gts),
        "objects_3d": delays([rec.objects[n] for n in fusion], gts),
        "overlay": delays([rec.overlay_frames_at], [rec.gt2d[cameras[0]]]),
    }
    return metrics.latency_summary(samples)


def _markdown(report: dict) -> str:
    run_ = report["run"]
    lines = [
        "# Perception demo report",
        "",
        f"- source: {run_['source']} (seed {run_['seed']}, {run_['duration_s']} s at "
        f"{run_['rate_hz']} Hz, x{run_['speed']}, {run_['image_size'][0]}x"
        f"{run_['image_size'][1]})"
        if run_["source"] == "scenario"
        else f"- source: {run_['source']} ({report['frames_expected_per_camera']} frames at "
        f"{run_['rate_hz']} Hz)",
        f"- model: `{run_['model']}`",
        f"- wall time: {run_['timings_s'].get('total_s')} s; overlay video: "
        f"`{run_['overlay_video']}`",
        "",
    ]
    if "detection_ap50" in report:
        ap = report["detection_ap50"]
        lines += [
            "## Detection AP@0.5 (ground truth with visibility >= 0.3)",
            "",
            "| class | AP@0.5 | GT boxes |",
            "|---|---|---|",
        ]
        for c in metrics.CLASSES:
            lines.append(f"| {c} | {ap.get(c)} | {ap.get('n_gt.' + c)} |")
        lines += [f"| **mean** | **{ap.get('mean')}** | |", ""]
        tr = report["tracking"]
        lines += [
            "## Tracking (all cameras, class-agnostic, IoU 0.5)",
            "",
            "| MOTA | IDF1 | ID switches | FP | misses | GT |",
            "|---|---|---|---|---|---|",
            f"| {tr.get('mota')} | {tr.get('idf1')} | {tr.get('id_switches')} | "
            f"{tr.get('false_positives')} | {tr.get('misses')} | {tr.get('gt_objects')} |",
            "",
        ]
        ce = report["centre_error_3d"]
        lines += [
            "## 3D centre error (fusion objects vs ground truth in base_link, <= 2 m)",
            "",
            "| median (m) | p95 (m) | matched | unmatched |",
            "|---|---|---|---|",
            f"| {ce.get('median_m')} | {ce.get('p95_m')} | {ce.get('matched')} | "
            f"{ce.get('unmatched')} |",
            "",
        ]
    if "pipeline_latency_ms" in report:
        lines += [
            "## Pipeline latency (ms, wall clock: images published -> output received)",
            "",
            "| output | p50 | p95 | n |",
            "|---|---|---|---|",
        ]
        for stage, v in report["pipeline_latency_ms"].items():
            lines.append(f"| {stage} | {v['p50']} | {v['p95']} | {v['n']} |")
        lines.append("")
    else:
        lines += ["## Counts (no ground truth)", "", "| camera | frames | detections |",
                  "|---|---|---|"]  # fmt: skip
        for cam, v in report["counts"].items():
            if isinstance(v, dict) and "detection_frames" in v:
                lines.append(f"| {cam} | {v['detection_frames']} | {v['detections']} |")
        lines.append("")
    lines += [
        "## Latency per stage (ms, all cameras, detector's own clock)",
        "",
        "| stage | p50 | p95 | n |",
        "|---|---|---|---|",
    ]
    for stage, v in report["latency_ms"].items():
        lines.append(f"| {stage} | {v['p50']} | {v['p95']} | {v['n']} |")
    lines += [
        "",
        "## Frames per camera",
        "",
        "| camera | published | processed | not processed | last /diagnostics: "
        "skipped | stale | rejected |",
        "|---|---|---|---|---|---|---|",
    ]
    for cam, v in report["frames"].items():
        d = v.get("last_diagnostics", {})
        lines.append(
            f"| {cam} | {v.get('published')} | {v.get('processed')} | {v.get('not_processed')} "
            f"| {d.get('skipped')} | {d.get('stale')} | {d.get('rejected')} |"
        )
    lines += ["", "Plots: `latency.png`, `accuracy.png`.", ""]
    return "\n".join(lines)


def write_outputs(out: Path, report: dict, rec: Recording, cameras: list[str]) -> None:
    """report.json, report.md and the PNG plots."""
    from perception.ros.detector_node import LATENCY_FIELDS

    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    series = {}
    rows = [r for c in cameras for r in rec.latency.get(c, []) if len(r) == len(LATENCY_FIELDS)]
    rows.sort(key=lambda r: r[0])
    if rows:
        t0 = rows[0][0]
        x = [r[0] - t0 for r in rows]
        for i, stage in enumerate(LATENCY_FIELDS[1:], start=1):
            series[stage.removesuffix("_ms")] = (x, [r[i] for r in rows])
    line_chart(
        series, out / "latency.png", "Detector latency per stage (all cameras)", "stamp (s)", "ms"
    )
    values: dict[str, float] = {}
    if "detection_ap50" in report:
        ap = report["detection_ap50"]
        values.update({f"AP {c}": ap.get(c) for c in metrics.CLASSES})
        values["mAP"] = ap.get("mean")
        values["MOTA"] = report["tracking"].get("mota")
        values["IDF1"] = report["tracking"].get("idf1")
        title = "Detection AP@0.5 and tracking (MOTA, IDF1)"
    else:
        for cam, c in report["counts"].items():
            if isinstance(c, dict) and "detection_frames" in c:
                values[f"{cam} det/frame"] = c["detections"] / max(c["detection_frames"], 1)
        title = "Detections per frame (no ground truth)"
    values = {k: (float("nan") if v is None else float(v)) for k, v in values.items()}
    bar_chart(values, out / "accuracy.png", title, "score")


# --------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="output folder (default out/demo-<time>)")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"ONNX detector (default {DEFAULT_MODEL.relative_to(REPO)} if present, "
        "else ../shared/data/yolox_nano.onnx)",
    )
    p.add_argument("--labels", type=Path, default=None, help="class names file, one per line")
    p.add_argument(
        "--video",
        type=Path,
        default=None,
        help="real-data mode: a video file or a rosbag2 (folder, .mcap, .db3) instead of "
        "the scenario (no ground truth)",
    )
    p.add_argument(
        "--image-topic", default=None, help="rosbag2 input: image topic (default: the first)"
    )
    p.add_argument("--max-frames", type=int, default=150, help="real-data mode: frames to play")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="override a pipeline parameter (see pipeline.yaml in the output), e.g. "
        "detector.score_threshold=0.2",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--duration", type=float, default=12.0, help="scenario length (sim s)")
    p.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    p.add_argument(
        "--speed",
        type=float,
        default=0.5,
        help="sim s per wall s (0.5 leaves room for 3 cameras on 2 CPU cores)",
    )
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this (s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)  # the report; libraries stay quiet (motmetrics logs timings)
    args = _parser().parse_args(argv)
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        os.environ["ROS_LOCALHOST_ONLY"] = "1"
    try:
        out = run(args)
    except DemoError as exc:
        log.error(f"demo failed: {exc}")
        return 1
    report = json.loads((out / "report.json").read_text())
    log.info(f"\n{(out / 'report.md').read_text()}")
    log.info(f"outputs in {out} (wall {report['run']['timings_s'].get('total_s')} s)")
    return 0
