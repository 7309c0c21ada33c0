"""Replay inputs as frame groups, without ROS.

An input is a rosbag2 recording (a folder with MCAP or sqlite3 storage, or a
bare `.mcap` / `.db3` file, read with `rosbags`) or a video (OpenCV). It is
read into `FrameGroup`s: the camera images of one header stamp, in stamp
order, each with what the pipeline file's fusion node of that camera would
have received with it (CameraInfo as a `CameraModel`, the registered depth
image or point cloud closest in stamp within the fusion's sync_tolerance_s),
plus the scenario's ground truth when the bag carries it (the layout of
`perception.sim.layout`: `<camera topic's parent>/ground_truth/detections`
and `.../ground_truth/objects`).

A bag stores messages by receive time; frames are grouped by header stamp.
Images arriving up to `REORDER_WINDOW_S` (of image stamps) late are put back
in order and counted as `reordered`; later ones can no longer be placed and
are dropped and counted as `late`. Bad data never raises out of a source
except as `InputError` (unreadable, truncated, empty, missing topics): every
other problem is counted per camera in `Source.problems` and described in
`Source.notes`. Undecodable images go to the pipeline as functions that
raise, so the pipeline counts them like the live detector does.

Videos become one camera, the pipeline file's first, stamped index / fps.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from perception.core.camera import CameraModel
from perception.core.errors import PerceptionError
from perception.core.images import (
    DEPTH_ENCODINGS,
    ImageDecodeError,
    compressed_to_bgr,
    image_to_array,
    image_to_bgr,
)
from perception.core.message_fields import camera_model_from_info, cloud_from_msg, stamp_ns_of
from perception.demo.metrics import Box2D
from perception.pipeline.topology import PipelineSpec
from perception.pipeline.types import CameraFrame, CloudInput

__all__ = [
    "REORDER_WINDOW_S",
    "BagSource",
    "FrameGroup",
    "InputError",
    "Source",
    "VideoSource",
    "is_bag",
    "open_source",
]

REORDER_WINDOW_S = 1.0
"""How far (in image stamps) a bag's images may arrive out of order and still
be replayed in order."""

_NS = 1_000_000_000
_IMAGE = "sensor_msgs/msg/Image"
_COMPRESSED = "sensor_msgs/msg/CompressedImage"
_INFO = "sensor_msgs/msg/CameraInfo"
_CLOUD = "sensor_msgs/msg/PointCloud2"
_GT2D = "vision_msgs/msg/Detection2DArray"
_GT3D = "vision_msgs/msg/Detection3DArray"
_BAG_SUFFIXES = (".mcap", ".db3")

InputErrorKind = Literal["unreadable", "truncated", "empty", "missing_topics"]


class InputError(PerceptionError):
    """The input cannot be replayed (the reason names what is wrong)."""

    def __init__(self, kind: InputErrorKind, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass
class FrameGroup:
    """The images of one stamp (at most one per camera, in the pipeline's
    camera order) and the ground truth of that stamp when the input has it.

    Attributes:
        stamp_ns: header stamp shared by the frames.
        frames: one `CameraFrame` per camera that has an image at this stamp.
        gt2d: camera -> ground-truth boxes (class names of the scenario,
            visibility as score, actor id as ident).
        gt3d: (N, 3) ground-truth centres in the base frame, or None.
    """

    stamp_ns: int
    frames: list[CameraFrame]
    gt2d: dict[str, list[Box2D]] = field(default_factory=dict)
    gt3d: np.ndarray | None = None


class Source(Protocol):
    """Frame groups of one input, and what was wrong with it."""

    kind: str
    problems: defaultdict[str, Counter[str]]
    notes: list[str]
    ground_truth: bool

    def groups(self, max_groups: int = 0) -> Iterator[FrameGroup]: ...


def is_bag(path: Path) -> bool:
    """A rosbag2 folder (metadata.yaml, or a single storage file inside) or a
    storage file; a folder of several .mcap files is a folder of inputs."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or len(_storage_files(path)) == 1
    return path.suffix in _BAG_SUFFIXES


def _storage_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in _BAG_SUFFIXES)


def open_source(path: str | Path, spec: PipelineSpec) -> Source:
    """The source for `path`: a bag (folder or storage file) or a video."""
    p = Path(path)
    if not p.exists():
        raise InputError("unreadable", f"{p} does not exist")
    if is_bag(p):
        return BagSource(p, spec)
    if p.is_dir():
        raise InputError(
            "unreadable", f"{p}: a folder that is no rosbag2 (no metadata.yaml, .mcap or .db3)"
        )
    return VideoSource(p, spec)


def _resolve(name: str, node: str) -> str:
    """A ROS topic name as a node in the root namespace resolves it."""
    if name.startswith("~"):
        return f"/{node}{name[1:]}"
    return name if name.startswith("/") else f"/{name}"


def _stamp_ns(msg: Any) -> int:
    """Header stamp in ns; MessageFieldError for a stamp the nodes refuse too."""
    s = msg.header.stamp
    return stamp_ns_of(s.sec, s.nanosec)


def _gt_boxes(msg: Any) -> list[Box2D]:
    """Ground-truth Detection2DArray -> boxes (class name, visibility, actor id)."""
    from perception.demo.recorder import _boxes

    return _boxes(msg, False)


def _gt_centres(msg: Any) -> np.ndarray:
    from perception.demo.recorder import _centres

    return _centres(msg)


@dataclass
class _Side:
    """Messages of one side stream (depth, cloud, camera info, ground truth)
    waiting for the images they belong to: (stamp, item, used)."""

    items: list[list[Any]] = field(default_factory=list)

    def add(self, stamp_ns: int, item: Any) -> None:
        self.items.append([stamp_ns, item, False])

    def nearest(self, stamp_ns: int, tol_ns: int) -> Any:
        best, best_d = None, tol_ns + 1
        for entry in self.items:
            d = abs(entry[0] - stamp_ns)
            if d < best_d:
                best, best_d = entry, d
        if best is None:
            return None
        best[2] = True
        return best[1]

    def latest(self, stamp_ns: int, tol_ns: int) -> Any:
        best = None
        for entry in self.items:
            if entry[0] <= stamp_ns + tol_ns and (best is None or entry[0] >= best[0]):
                best = entry
        return None if best is None else best[1]

    def prune(self, before_ns: int, keep_latest: bool = False) -> int:
        """Drop items older than `before_ns`; returns how many were never used."""
        old = [e for e in self.items if e[0] < before_ns]
        if keep_latest and old:
            old.remove(max(old, key=lambda e: e[0]))
        gone = {id(e) for e in old}
        self.items = [e for e in self.items if id(e) not in gone]
        return sum(1 for e in old if not e[2])


@dataclass
class _Camera:
    """What a bag source knows about one camera of the pipeline."""

    name: str
    image_topic: str
    frame_id: str
    info_topic: str = ""
    depth_topic: str = ""
    cloud_topic: str = ""
    gt_topic: str = ""
    tol_ns: int = 0
    info: _Side = field(default_factory=_Side)
    depth: _Side = field(default_factory=_Side)
    gt: _Side = field(default_factory=_Side)
    model: CameraModel | None = None
    model_key: tuple[Any, ...] = ()
    last_stamp: int | None = None


class BagSource:
    """Frame groups of a rosbag2 recording (see the module docstring)."""

    kind = "bag"

    def __init__(
        self, path: Path, spec: PipelineSpec, reorder_window_s: float = REORDER_WINDOW_S
    ) -> None:
        self.path = path
        self.spec = spec
        self.window_ns = int(reorder_window_s * _NS)
        self.problems: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.notes: list[str] = []
        self.ground_truth = False
        self.messages = 0
        self.cameras: dict[str, _Camera] = {}
        for name, cp in spec.cameras.items():
            topic = cp.topic.rstrip("/") + ("/compressed" if cp.transport == "compressed" else "")
            cam = _Camera(name, _resolve(topic, spec.detector_node), cp.frame_id)
            cam.info_topic = cp.camera_info_topic and _resolve(
                cp.camera_info_topic, spec.detector_node
            )
            f = spec.fusion.get(name)
            if f is not None:
                p = f.params
                cam.tol_ns = round(p.sync_tolerance_s * _NS)
                cam.info_topic = _resolve(p.camera_info_topic, f.node)
                if p.mode == "depth":
                    cam.depth_topic = _resolve(p.depth_topic, f.node)
                else:
                    cam.cloud_topic = _resolve(p.cloud_topic, f.node)
            cam.gt_topic = cam.image_topic.rsplit("/", 1)[0] + "/ground_truth/detections"
            self.cameras[name] = cam

    # ----------------------------------------------------------------- reading
    def _reader(self) -> Any:
        from rosbags.highlevel import AnyReader

        from perception.sim.bag import make_typestore

        path = self.path
        if path.is_dir() and not (path / "metadata.yaml").is_file():
            files = _storage_files(path)
            if len(files) != 1:
                raise InputError(
                    "unreadable", f"{path}: no metadata.yaml and {len(files)} storage files"
                )
            path = files[0]
        if path.is_file() and path.stat().st_size == 0:
            raise InputError("empty", f"{path}: the file is empty (0 bytes)")
        try:
            reader = AnyReader([path], default_typestore=make_typestore())
            reader.open()
        except Exception as exc:  # rosbags raises many kinds on damaged files
            text = f"{type(exc).__name__}: {exc}"
            truncated = any(k in str(exc).lower() for k in ("end magic", "footer", "truncat"))
            raise InputError(
                "truncated" if truncated else "unreadable", f"{self.path}: cannot open: {text}"
            ) from exc
        return reader

    def _plan(self, reader: Any) -> dict[str, tuple[Any, list[tuple[str, str]]]]:
        """topic -> (connections, [(kind, camera)]); raises on missing image topics."""
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for c in reader.connections:
            by_topic[c.topic].append(c)
        if not by_topic or not any(c.msgcount for cs in by_topic.values() for c in cs):
            raise InputError("empty", f"{self.path}: the bag holds no messages")
        plan: dict[str, list[tuple[str, str]]] = defaultdict(list)

        def want(topic: str, types: tuple[str, ...], kind: str, cam: str) -> bool:
            conns = [c for c in by_topic.get(topic, []) if c.msgtype in types]
            if conns:
                plan[topic].append((kind, cam))
            return bool(conns)

        missing = []
        for cam in self.cameras.values():
            if not want(cam.image_topic, (_IMAGE, _COMPRESSED), "image", cam.name):
                missing.append(cam.image_topic)
                continue
            if cam.info_topic and not want(cam.info_topic, (_INFO,), "info", cam.name):
                self.notes.append(f"{cam.name}: no CameraInfo on {cam.info_topic} (no 3D)")
            if cam.depth_topic and not want(cam.depth_topic, (_IMAGE,), "depth", cam.name):
                self.notes.append(f"{cam.name}: no depth on {cam.depth_topic} (no 3D)")
            if cam.cloud_topic and not want(cam.cloud_topic, (_CLOUD,), "cloud", cam.name):
                self.notes.append(f"{cam.name}: no point cloud on {cam.cloud_topic} (no 3D)")
            if want(cam.gt_topic, (_GT2D,), "gt2d", cam.name):
                self.ground_truth = True
        if missing:
            found = sorted(f"{t} ({cs[0].msgtype})" for t, cs in by_topic.items())
            raise InputError(
                "missing_topics",
                f"{self.path}: no image messages on {missing} (set cameras.<name>.topic or "
                f"camera_names); the bag has {found}",
            )
        gt3d = sorted(t for t in by_topic if t.endswith("/ground_truth/objects"))
        if gt3d and want(gt3d[0], (_GT3D,), "gt3d", ""):
            self.ground_truth = True
        image_msgs = sum(
            c.msgcount for cam in self.cameras.values() for c in by_topic[cam.image_topic]
        )
        if image_msgs == 0:
            raise InputError("empty", f"{self.path}: the camera topics hold no messages")
        return {t: (by_topic[t], kinds) for t, kinds in plan.items()}

    def groups(self, max_groups: int = 0) -> Iterator[FrameGroup]:
        """Frame groups in stamp order (at most `max_groups`, 0 = all)."""
        reader = self._reader()
        try:
            yield from self._groups(reader, max_groups)
        finally:
            reader.close()

    def _groups(self, reader: Any, max_groups: int) -> Iterator[FrameGroup]:
        plan = self._plan(reader)
        conns = [c for cs, _ in plan.values() for c in cs]
        pending: dict[int, dict[str, Any]] = {}
        heap: list[int] = []
        clouds: dict[str, _Side] = defaultdict(_Side)
        gt3d = _Side()
        newest: int | None = None
        last_out: int | None = None
        emitted = 0
        it = iter(reader.messages(connections=conns))
        while True:
            try:
                item = next(it, None)
            except Exception as exc:  # a damaged chunk or a file cut short
                raise InputError(
                    "truncated",
                    f"{self.path}: read failed after {self.messages} messages "
                    f"({emitted} frame groups): {type(exc).__name__}: {exc}",
                ) from exc
            if item is None:
                break
            conn, _, raw = item
            self.messages += 1
            _, kinds = plan[conn.topic]
            try:
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = _stamp_ns(msg)
            except Exception as exc:
                for _, cam_name in kinds:
                    self.problems[cam_name or "input"][f"bad_message.{kinds[0][0]}"] += 1
                self._note(f"{conn.topic}: undecodable message ({type(exc).__name__}: {exc})")
                continue
            for kind, cam_name in kinds:
                if kind == "image":
                    if last_out is not None and stamp <= last_out:
                        self.problems[cam_name]["late"] += 1
                        continue
                    cam = self.cameras[cam_name]
                    if cam.last_stamp is not None and stamp < cam.last_stamp:
                        self.problems[cam_name]["reordered"] += 1
                    cam.last_stamp = max(stamp, cam.last_stamp or stamp)
                    slot = pending.get(stamp)
                    if slot is None:
                        slot = pending[stamp] = {}
                        heapq.heappush(heap, stamp)
                    if cam_name in slot:
                        self.problems[cam_name]["duplicate_stamp"] += 1
                        continue
                    slot[cam_name] = (conn.msgtype, msg)
                    newest = stamp if newest is None else max(newest, stamp)
                elif kind == "info":
                    self.cameras[cam_name].info.add(stamp, msg)
                elif kind == "depth":
                    self.cameras[cam_name].depth.add(stamp, msg)
                elif kind == "cloud":
                    clouds[conn.topic].add(stamp, msg)
                elif kind == "gt2d":
                    self.cameras[cam_name].gt.add(stamp, msg)
                elif kind == "gt3d":
                    gt3d.add(stamp, msg)
            while heap and newest is not None and heap[0] < newest - self.window_ns:
                s = heapq.heappop(heap)
                yield self._group(s, pending.pop(s), clouds, gt3d)
                last_out, emitted = s, emitted + 1
                if max_groups and emitted >= max_groups:
                    return
        while heap:
            s = heapq.heappop(heap)
            yield self._group(s, pending.pop(s), clouds, gt3d)
            emitted += 1
            if max_groups and emitted >= max_groups:
                return
        self._count_unmatched()

    def _note(self, text: str) -> None:
        if len(self.notes) < 20 and text not in self.notes:
            self.notes.append(text)

    # --------------------------------------------------------------- grouping
    def _group(
        self, stamp: int, images: dict[str, Any], clouds: dict[str, _Side], gt3d: _Side
    ) -> FrameGroup:
        group = FrameGroup(stamp, [])
        for cam in self.cameras.values():
            if cam.name in images:
                msgtype, msg = images[cam.name]
                group.frames.append(self._frame(cam, stamp, msgtype, msg, clouds))
                if cam.gt_topic:
                    gt = cam.gt.nearest(stamp, 0)
                    if gt is not None:
                        group.gt2d[cam.name] = _gt_boxes(gt)
            # everything older than this stamp (minus the tolerance) can no longer match
            unused = cam.depth.prune(stamp - cam.tol_ns)
            if unused:
                self.problems[cam.name]["depth_unmatched"] += unused
            cam.info.prune(stamp - cam.tol_ns, keep_latest=True)
            cam.gt.prune(stamp)
        obj = gt3d.nearest(stamp, 0)
        if obj is not None:
            group.gt3d = _gt_centres(obj)
        gt3d.prune(stamp)
        tol = max((c.tol_ns for c in self.cameras.values()), default=0)
        for side in clouds.values():
            side.prune(stamp - tol)
        return group

    def _count_unmatched(self) -> None:
        for cam in self.cameras.values():
            unused = cam.depth.prune(2**62)
            if unused:
                self.problems[cam.name]["depth_unmatched"] += unused

    def _frame(
        self, cam: _Camera, stamp: int, msgtype: str, msg: Any, clouds: dict[str, _Side]
    ) -> CameraFrame:
        decode = compressed_to_bgr if msgtype == _COMPRESSED else image_to_bgr
        depth = None
        cloud = None
        if cam.depth_topic:
            dmsg = cam.depth.nearest(stamp, cam.tol_ns)
            if dmsg is None:
                self.problems[cam.name]["depth_missing"] += 1
            else:
                depth = self._depth(cam, dmsg)
        if cam.cloud_topic:
            cmsg = clouds[cam.cloud_topic].nearest(stamp, cam.tol_ns)
            if cmsg is None:
                self.problems[cam.name]["cloud_missing"] += 1
            else:
                cloud = self._cloud(cam, cmsg)
        return CameraFrame(
            camera=cam.name,
            image=partial(decode, msg),
            stamp_ns=stamp,
            frame_id=cam.frame_id or msg.header.frame_id,
            camera_model=self._model(cam, stamp),
            depth=depth,
            cloud=cloud,
        )

    def _model(self, cam: _Camera, stamp: int) -> CameraModel | None:
        if not cam.info_topic:
            return None
        msg = cam.info.latest(stamp, cam.tol_ns)
        if msg is None:
            self.problems[cam.name]["camera_info_missing"] += 1
            return cam.model
        key = (
            int(msg.width),
            int(msg.height),
            str(msg.distortion_model),
            bytes(msg.k),
            bytes(np.asarray(msg.d, np.float64)),
            bytes(msg.r),
            bytes(msg.p),
            str(msg.header.frame_id),
        )
        if cam.model is not None and key == cam.model_key:
            return cam.model  # the same object: fusion keeps its lifter (and stats)
        try:
            model = camera_model_from_info(msg)
        except (PerceptionError, ValueError) as exc:
            self.problems[cam.name]["calibration"] += 1
            self._note(f"{cam.name}: bad CameraInfo: {exc}")
            return cam.model
        cam.model, cam.model_key = model, key
        return model

    def _depth(self, cam: _Camera, msg: Any) -> np.ndarray | None:
        try:
            depth = image_to_array(msg)
        except ImageDecodeError as exc:
            self.problems[cam.name][f"depth_{exc.kind}"] += 1
            self._note(f"{cam.name}: bad depth image: {exc}")
            return None
        if msg.encoding not in DEPTH_ENCODINGS:
            self.problems[cam.name]["depth_encoding"] += 1
            self._note(f"{cam.name}: depth encoding {msg.encoding!r}, expected {DEPTH_ENCODINGS}")
            return None
        return depth

    def _cloud(self, cam: _Camera, msg: Any) -> CloudInput | None:
        try:
            xyz = cloud_from_msg(msg)
        except (PerceptionError, ValueError) as exc:
            self.problems[cam.name]["cloud_format"] += 1
            self._note(f"{cam.name}: bad point cloud: {exc}")
            return None
        return CloudInput(xyz.xyz, msg.header.frame_id)


class VideoSource:
    """A video file as the pipeline's first camera, stamped index / fps."""

    kind = "video"

    def __init__(self, path: Path, spec: PipelineSpec) -> None:
        self.path = path
        self.camera = next(iter(spec.cameras))
        self.frame_id = spec.cameras[self.camera].frame_id or self.camera
        self.problems: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.notes: list[str] = []
        self.ground_truth = False

    def groups(self, max_groups: int = 0) -> Iterator[FrameGroup]:
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise InputError(
                    "unreadable", f"{self.path}: neither a rosbag2 nor a video OpenCV can open"
                )
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            if not fps > 0:
                fps = 25.0
                self.notes.append(f"{self.path.name}: no frame rate in the file, assumed 25 fps")
            declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            n = 0
            while not max_groups or n < max_groups:
                ok, image = cap.read()
                if not ok or image is None:
                    break
                frame = CameraFrame(self.camera, image, round(n * _NS / fps), self.frame_id)
                yield FrameGroup(frame.stamp_ns, [frame])
                n += 1
            if n == 0:
                raise InputError("empty", f"{self.path}: the video has no readable frame")
            if not max_groups and declared > n + 1:
                self.problems[self.camera]["unread_frames"] += declared - n
                self.notes.append(
                    f"{self.path.name}: {n} of {declared} frames readable (truncated?)"
                )
        finally:
            cap.release()
