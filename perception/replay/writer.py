"""Outputs of one replayed input: MCAP with standard ROS 2 messages, a
per-frame table, written atomically.

The MCAP (a rosbag2 folder `outputs/`, so `ros2 bag play` and Foxglove open
it next to the input) holds what the live nodes of the pipeline file publish,
under the same topic names: per camera `/<detector>/<camera>/detections` and
`/tracks` (vision_msgs/Detection2DArray), per fusion node `/<fusion>/objects`
(vision_msgs/Detection3DArray) and `/<fusion>/markers`
(visualization_msgs/MarkerArray). The messages are built with rosbags'
typestore, no ROS needed, with the field mapping of
`perception.ros.conversions` and `conversions3d` (stamps and frame_ids of the
input kept, track id in `id`, boxes in original pixels); a test checks that
both serialise to the same bytes.

Everything is written under `OUT/<key>.tmp-<random>/` and renamed to
`OUT/<key>/` when complete, so a killed worker leaves no half output: a
folder without the suffix is finished (it holds `result.json`), a leftover
`.tmp-` folder is removed by the next run of the same input.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perception.core.drawing import color_for
from perception.core.fusion.types import Objects3D, yaw_quaternions
from perception.core.message_fields import centre_size, class_strings, obb_fields, stamp_parts
from perception.core.types import UNTRACKED, Detections
from perception.pipeline.topology import PipelineSpec
from perception.pipeline.types import CameraResult

__all__ = [
    "OUTPUT_BAG",
    "RESULT_FILE",
    "MessageFactory",
    "ResultWriter",
    "commit",
    "is_finished",
    "remove_leftovers",
    "staging_dir",
]

OUTPUT_BAG = "outputs"
"""rosbag2 folder (one MCAP file) inside an input's output folder."""
RESULT_FILE = "result.json"
"""Written last: its presence marks a finished output folder."""
FRAMES_FILE = "frames.jsonl"
_TMP = ".tmp-"

_D2 = "vision_msgs/msg/Detection2DArray"
_D3 = "vision_msgs/msg/Detection3DArray"
_MARKERS = "visualization_msgs/msg/MarkerArray"
_NUMERIC = {
    "bool": np.bool_,
    "byte": np.uint8,
    "char": np.uint8,
    "octet": np.uint8,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
}


# ------------------------------------------------------------------ folders
def staging_dir(out: Path, key: str) -> Path:
    """A new, empty `OUT/<key>.tmp-<random>/` to write an input's outputs into."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{key}{_TMP}{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def remove_leftovers(out: Path, key: str | None = None) -> list[Path]:
    """Remove `.tmp-` folders of `key` (every key when None) left by a killed run."""
    if not out.is_dir():
        return []
    pattern = f"{key}{_TMP}*" if key is not None else f"*{_TMP}*"
    gone = [p for p in sorted(out.glob(pattern)) if p.is_dir()]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def is_finished(out: Path, key: str) -> bool:
    """True when `OUT/<key>/` is a complete output folder."""
    return (out / key / RESULT_FILE).is_file()


def commit(tmp: Path, final: Path) -> None:
    """Move a complete staging folder to its final name (one rename; an older
    output of the same input is replaced)."""
    if final.exists():
        old = final.with_name(f"{final.name}{_TMP}old-{secrets.token_hex(4)}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


# ------------------------------------------------------------------ messages
class MessageFactory:
    """rosbags message objects with ROS defaults for every field not given."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.types = store.types
        self._makers: dict[str, list[tuple[str, Callable[[], Any]]]] = {}

    def new(self, msgtype: str, **fields: Any) -> Any:
        """A `msgtype` message: `fields` as given, the rest as ROS initialises them."""
        makers = self._makers.get(msgtype)
        if makers is None:
            makers = self._makers[msgtype] = self._field_makers(msgtype)
        for name, make in makers:
            if name not in fields:
                fields[name] = make()
        return self.types[msgtype](**fields)

    def _field_makers(self, msgtype: str) -> list[tuple[str, Callable[[], Any]]]:
        _, fields = self.store.fielddefs[msgtype]
        makers = [(name, self._field_default(desc)) for name, desc in fields]
        if msgtype == "geometry_msgs/msg/Quaternion":  # ROS 2 default: identity
            makers = [(n, (lambda: 1.0) if n == "w" else m) for n, m in makers]
        return makers

    def _field_default(self, desc: tuple[Any, Any]) -> Callable[[], Any]:
        kind, info = int(desc[0]), desc[1]
        if kind == 1:  # BASE
            name = info[0]
            if name == "string":
                return str
            if name == "bool":
                return bool
            return float if name.startswith("float") else int
        if kind == 2:  # NAME
            return lambda: self.new(info)
        inner, size = info
        ikind, iinfo = int(inner[0]), inner[1]
        count = int(size) if kind == 3 else 0  # ARRAY has a size, SEQUENCE starts empty
        if ikind == 1 and iinfo[0] in _NUMERIC:
            dtype = _NUMERIC[iinfo[0]]
            return lambda: np.zeros(count, dtype)
        item = self._field_default(inner)
        return lambda: [item() for _ in range(count)]

    # -------------------------------------------------------------- helpers
    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nsec = stamp_parts(stamp_ns)  # refuses what would wrap on the wire, as the nodes
        stamp = self.new("builtin_interfaces/msg/Time", sec=sec, nanosec=nsec)
        return self.new("std_msgs/msg/Header", stamp=stamp, frame_id=frame_id)

    def _hypothesis(self, class_id: str, score: float, **pose: Any) -> Any:
        h = self.new("vision_msgs/msg/ObjectHypothesis", class_id=class_id, score=score)
        return self.new("vision_msgs/msg/ObjectHypothesisWithPose", hypothesis=h, **pose)

    def _pose(self, xyz: Sequence[float], q: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> Any:
        p = self.new("geometry_msgs/msg/Point", x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))
        o = self.new(
            "geometry_msgs/msg/Quaternion",
            x=float(q[0]),
            y=float(q[1]),
            z=float(q[2]),
            w=float(q[3]),
        )
        return self.new("geometry_msgs/msg/Pose", position=p, orientation=o)

    def _vector(self, v: Sequence[float]) -> Any:
        return self.new("geometry_msgs/msg/Vector3", x=float(v[0]), y=float(v[1]), z=float(v[2]))

    # -------------------------------------------------------------- outputs
    def detections(
        self,
        det: Detections,
        class_names: Sequence[str] | None = None,
        class_format: str = "name",
        header: Any = None,
    ) -> Any:
        """Detection2DArray as `perception.ros.conversions.detections_to_msg` builds it."""
        hdr = header if header is not None else self.header(det.stamp_ns, det.frame_id)
        n = len(det)
        if n == 0:
            return self.new(_D2, header=hdr, detections=[])
        cx, cy, w, h = centre_size(det)
        theta = [0.0] * n
        if det.obb is not None:  # oriented boxes: centre, size and theta, as the nodes
            cx, cy, w, h, theta = obb_fields(det.obb, cx, cy, w, h)
        scores = det.scores.astype(np.float64).tolist()
        classes = class_strings(det.class_ids, class_names, class_format)
        tids = det.track_ids.tolist()
        dets = []
        for i in range(n):
            centre = self.new(
                "vision_msgs/msg/Pose2D",
                position=self.new("vision_msgs/msg/Point2D", x=cx[i], y=cy[i]),
                theta=theta[i],
            )
            bbox = self.new(
                "vision_msgs/msg/BoundingBox2D", center=centre, size_x=w[i], size_y=h[i]
            )
            dets.append(
                self.new(
                    "vision_msgs/msg/Detection2D",
                    header=hdr,
                    results=[self._hypothesis(classes[i], scores[i])],
                    bbox=bbox,
                    id="" if tids[i] == UNTRACKED else str(tids[i]),
                )
            )
        return self.new(_D2, header=hdr, detections=dets)

    def objects(
        self, obj: Objects3D, class_names: Sequence[str] | None = None, class_format: str = "name"
    ) -> Any:
        """Detection3DArray as `conversions3d.objects_to_detection3d_array` builds it."""
        hdr = self.header(obj.stamp_ns, obj.frame_id)
        n = len(obj.centers)
        if n == 0:
            return self.new(_D3, header=hdr, detections=[])
        quats = yaw_quaternions(obj.yaws)
        classes = class_strings(obj.class_ids, class_names, class_format)
        cov6 = np.zeros((n, 6, 6), np.float64)
        cov6[:, :3, :3] = obj.covariances
        dets = []
        for i in range(n):
            centre = self._pose(obj.centers[i], quats[i])
            bbox = self.new(
                "vision_msgs/msg/BoundingBox3D", center=centre, size=self._vector(obj.sizes[i])
            )
            pose = self.new(
                "geometry_msgs/msg/PoseWithCovariance",
                pose=self._pose(obj.centers[i], quats[i]),
                covariance=cov6[i].reshape(-1).copy(),
            )
            tid = int(obj.track_ids[i])
            dets.append(
                self.new(
                    "vision_msgs/msg/Detection3D",
                    header=hdr,
                    results=[self._hypothesis(classes[i], float(obj.scores[i]), pose=pose)],
                    bbox=bbox,
                    id="" if tid < 0 else str(tid),
                )
            )
        return self.new(_D3, header=hdr, detections=dets)

    def markers(
        self,
        obj: Objects3D,
        class_names: Sequence[str] | None = None,
        namespace: str = "perception",
        lifetime_s: float = 0.5,
    ) -> Any:
        """MarkerArray as `conversions3d.objects_to_markers` builds it."""
        m = "visualization_msgs/msg/Marker"
        ADD, CUBE, TEXT, ARROW = 0, 1, 9, 0  # Marker constants
        hdr = self.header(obj.stamp_ns, obj.frame_id)
        life = self.new(
            "builtin_interfaces/msg/Duration",
            sec=int(lifetime_s),
            nanosec=int((lifetime_s % 1.0) * 1e9),
        )
        markers = [self.new(m, header=hdr, ns=namespace, action=3)]  # DELETEALL
        quats = yaw_quaternions(obj.yaws)
        names = class_names or ()

        def rgba(r: float, g: float, b: float, a: float) -> Any:
            return self.new("std_msgs/msg/ColorRGBA", r=r, g=g, b=b, a=a)

        for i in range(len(obj.centers)):
            tid, cls = int(obj.track_ids[i]), int(obj.class_ids[i])
            b, g, r = color_for(tid if tid >= 0 else cls)
            c = [float(v) for v in obj.centers[i]]
            markers.append(
                self.new(
                    m,
                    header=hdr,
                    ns=f"{namespace}/boxes",
                    id=i,
                    type=CUBE,
                    action=ADD,
                    color=rgba(r / 255.0, g / 255.0, b / 255.0, 0.5),
                    lifetime=life,
                    pose=self._pose(c, quats[i]),
                    scale=self._vector(obj.sizes[i]),
                )
            )
            name = names[cls] if 0 <= cls < len(names) else str(cls)
            top = c[2] + float(obj.sizes[i][2]) * 0.5 + 0.3
            markers.append(
                self.new(
                    m,
                    header=hdr,
                    ns=f"{namespace}/labels",
                    id=i,
                    type=TEXT,
                    action=ADD,
                    lifetime=life,
                    text=f"{name} #{tid}" if tid >= 0 else name,
                    color=rgba(1.0, 1.0, 1.0, 1.0),
                    pose=self._pose((c[0], c[1], top)),
                    scale=self._vector((0.0, 0.0, 0.4)),
                )
            )
            v = obj.velocities[i]
            if np.isfinite(v).all():
                tip = [c[k] + float(v[k]) for k in range(3)]
                points = [
                    self.new("geometry_msgs/msg/Point", x=p[0], y=p[1], z=p[2]) for p in (c, tip)
                ]
                markers.append(
                    self.new(
                        m,
                        header=hdr,
                        ns=f"{namespace}/velocity",
                        id=i,
                        type=ARROW,
                        action=ADD,
                        lifetime=life,
                        points=points,
                        color=rgba(r / 255.0, g / 255.0, b / 255.0, 1.0),
                        scale=self._vector((0.1, 0.2, 0.2)),
                    )
                )
        return self.new(_MARKERS, markers=markers)


# ------------------------------------------------------------------ writer
def _json_value(v: float) -> float | None:
    return round(float(v), 4) if math.isfinite(v) else None


class ResultWriter:
    """Writes the pipeline's results of one input into a staging folder:
    `outputs/` (MCAP rosbag2) and `frames.jsonl` (+ `frames.parquet` with pyarrow)."""

    def __init__(self, folder: Path, spec: PipelineSpec, class_names: Sequence[str]) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        from perception.sim.bag import make_typestore

        self.folder = folder
        self.store = make_typestore()
        self.msgs = MessageFactory(self.store)
        self.class_names = list(class_names)
        self.class_format = spec.detector.class_format
        self.detector_node = spec.detector_node
        self.fusion = {
            cam: (f.node, [n for n in f.params.class_names if n], f.params.class_format)
            for cam, f in spec.fusion.items()
        }
        self.tracking = spec.detector.tracking
        self._bag = Writer(folder / OUTPUT_BAG, version=9, storage_plugin=StoragePlugin.MCAP)
        self._bag.open()
        self._conns: dict[str, Any] = {}
        self._frames = (folder / FRAMES_FILE).open("w")
        self._rows: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}

    def _write(self, topic: str, msgtype: str, msg: Any, stamp_ns: int) -> None:
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._bag.add_connection(topic, msgtype, typestore=self.store)
            self._conns[topic] = conn
        self._bag.write(conn, stamp_ns, self.store.serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def add(self, results: Sequence[CameraResult], batch: int) -> None:
        """Messages and table rows of one processed frame group."""
        base = f"/{self.detector_node}"
        for r in results:
            stamp = r.stamp_ns
            msg = self.msgs.detections(r.detections, self.class_names, self.class_format)
            self._write(f"{base}/{r.camera}/detections", _D2, msg, stamp)
            if r.tracks is not None:
                tracks = self.msgs.detections(
                    r.tracks, self.class_names, self.class_format, msg.header
                )
                self._write(f"{base}/{r.camera}/tracks", _D2, tracks, stamp)
            fusion = self.fusion.get(r.camera)
            if fusion is not None and r.objects is not None:
                node, names, fmt = fusion
                self._write(
                    f"/{node}/objects", _D3, self.msgs.objects(r.objects, names, fmt), stamp
                )
                self._write(
                    f"/{node}/markers", _MARKERS, self.msgs.markers(r.objects, names), stamp
                )
            row: dict[str, Any] = {
                "stamp_ns": stamp,
                "camera": r.camera,
                "frame_id": r.frame_id,
                "batch": batch,
                "batch_size": len(results),
                "detections": len(r.detections),
                "tracks": None if r.tracks is None else len(r.tracks),
                "objects": None if r.objects is None else len(r.objects.centers),
            }
            for k in ("preprocess_ms", "inference_ms", "postprocess_ms"):
                row[k] = _json_value(r.latency.get(k, float("nan")))
            row["engine_ms"] = _json_value(r.engine_ms)
            self._frames.write(json.dumps(row) + "\n")
            self._rows.append(row)

    def close(self) -> dict[str, str]:
        """Finish the files; returns output name -> path relative to the folder."""
        self._bag.close()
        self._frames.close()
        outputs = {"mcap": OUTPUT_BAG, "frames": FRAMES_FILE}
        if _write_parquet(self.folder / "frames.parquet", self._rows):
            outputs["frames_parquet"] = "frames.parquet"
        return outputs

    def abort(self) -> None:
        """Close what is open after a failure (the folder is discarded)."""
        for close in (self._bag.close, self._frames.close):
            with contextlib.suppress(Exception):  # the staging folder is removed anyway
                close()


def _write_parquet(path: Path, rows: Sequence[Mapping[str, Any]]) -> bool:
    """The frame table as Parquet when pyarrow is installed (optional)."""
    import importlib

    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        return False
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return True
