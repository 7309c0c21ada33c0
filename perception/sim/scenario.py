"""A seeded driving scenario and its frames: images, depth, LiDAR, ground truth.

World frame: z up, the road runs along +x, right-hand traffic (lanes at
y = -1.75, -5.25 go +x; y = +1.75, +5.25 go -x). The ego vehicle drives the
lane y = -1.75 at constant speed; base_link is forward-left-up at ground
level, so T_world_from_base is a translation. Actors move at constant
velocity; cars sharing a lane share its speed, so nothing drives through
anything in the same lane. Everything drawn from one `numpy.random.Generator`
seeded with `seed`: the same seed gives the same frames, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from perception.core.fusion.synthetic import SceneBox, lidar_scan, rigid
from perception.core.types import Detections, InstanceMasks
from perception.sim import render as _render
from perception.sim.render import (
    CURB,
    ID_GROUND,
    ID_SCENERY,
    ID_SKY,
    LANE_WIDTH,
    ROAD_EDGE,
    SIDEWALK,
    BoxStats,
    CameraRays,
    Lighting,
)
from perception.sim.rig import Rig, default_rig

__all__ = [
    "CLASS_NAMES",
    "ID_GROUND",
    "ID_SCENERY",
    "ID_SKY",
    "Actor",
    "CameraFrame",
    "Frame",
    "Lighting",
    "Object3D",
    "Scenario",
]

CLASS_NAMES: tuple[str, ...] = ("car", "pedestrian", "cyclist")
"""Class ids of the ground truth are indices into this tuple."""
CAR, PEDESTRIAN, CYCLIST = 0, 1, 2

_STYLE = {
    CAR: _render.STYLE_CAR,
    PEDESTRIAN: _render.STYLE_PEDESTRIAN,
    CYCLIST: _render.STYLE_CYCLIST,
}

_CAR_COLORS = np.array(
    [
        [0.75, 0.1, 0.08], [0.1, 0.2, 0.6], [0.85, 0.85, 0.85], [0.08, 0.08, 0.09],
        [0.5, 0.52, 0.55], [0.9, 0.7, 0.1], [0.15, 0.45, 0.2], [0.35, 0.15, 0.08],
        [0.2, 0.55, 0.75], [0.6, 0.6, 0.62],
    ],
    np.float32,
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class Actor:
    """A moving object: id (>= 1, the GT track id), class, box size
    (length, width, height), position at t = 0 (x, y of the box centre on the
    ground), constant velocity (vx, vy) in m/s, and its (3, 3) RGB palette."""

    id: int
    class_id: int
    size: tuple[float, float, float]
    x0: float
    y0: float
    vx: float
    vy: float
    palette: np.ndarray

    @property
    def yaw(self) -> float:
        return math.atan2(self.vy, self.vx) if (self.vx or self.vy) else 0.0

    def box(self, t: float) -> SceneBox:
        """The actor's box in the world at scenario time t (s)."""
        return SceneBox(
            (self.x0 + self.vx * t, self.y0 + self.vy * t, 0.5 * self.size[2]),
            self.size,
            self.yaw,
            self.class_id,
        )


@dataclass(frozen=True)
class Object3D:
    """Ground truth of one actor at one frame. Yaw is about z; velocity is
    the world-frame velocity expressed in the frame of the box centre."""

    id: int
    class_id: int
    size: tuple[float, float, float]
    center_world: tuple[float, float, float]
    yaw_world: float
    center_base: tuple[float, float, float]
    yaw_base: float
    velocity_world: tuple[float, float, float]

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_id]


@dataclass(frozen=True, eq=False)
class CameraFrame:
    """One camera's render and 2D ground truth.

    `ids` holds the actor id of each pixel, or ID_GROUND / ID_SKY /
    ID_SCENERY. GT arrays have one row per actor whose unoccluded silhouette
    covers at least one pixel of the image: `xyxy` the extent of its visible
    pixels (NaN when fully occluded), `xyxy_projected` the extent of its
    silhouette clipped to the image, `visible_pixels / projected_pixels` =
    `visibility`. `masks()` gives the instance-mask ground truth of the same
    rows. Boxes use the convention of the camera matrix the renderer casts
    its rays with (pixel centres at integers, a box spans its pixels' squares:
    pixels u0..u1 give x1 = u0 - 0.5, x2 = u1 + 0.5); detector labels and
    outputs use it too (tools/train_default_detector.py).
    """

    name: str
    image_bgr: np.ndarray
    depth: np.ndarray
    ids: np.ndarray
    object_ids: np.ndarray  # (M,) int64
    class_ids: np.ndarray  # (M,) int32
    xyxy: np.ndarray  # (M, 4) float32
    xyxy_projected: np.ndarray  # (M, 4) float32
    visible_pixels: np.ndarray  # (M,) int64
    projected_pixels: np.ndarray  # (M,) int64

    @property
    def visibility(self) -> np.ndarray:
        visible = self.visible_pixels / np.maximum(self.projected_pixels, 1)
        return np.asarray(visible, dtype=np.float32)

    def masks(self) -> InstanceMasks:
        """Instance-mask ground truth, one per GT row: the actor's visible
        pixels (`ids == object_id`), each stored inside its visible extent
        (an empty mask for a fully occluded row)."""
        h, w = self.ids.shape
        m = len(self.object_ids)
        boxes = np.zeros((m, 4), np.int32)
        crops = []
        for i in range(m):
            b = self.xyxy[i]
            if np.isfinite(b).all():
                # extents are pixel centres +-0.5: whole pixels x0..x1-1
                x0, y0, x1, y1 = (round(float(v) + 0.5) for v in b)
                x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
                boxes[i] = (x0, y0, x1, y1)
                crops.append(self.ids[y0:y1, x0:x1] == self.object_ids[i])
            else:
                crops.append(np.zeros((0, 0), bool))
        return InstanceMasks(boxes, tuple(crops), (w, h))

    def detections(
        self,
        stamp_ns: int,
        frame_id: str,
        *,
        min_visibility: float = 0.0,
        min_pixels: int = 1,
        masks: bool = False,
    ) -> Detections:
        """GT as `Detections` (visible extent, score = visibility, track id =
        actor id), keeping rows with enough visible pixels; with `masks`, the
        instance-mask ground truth too (`masks()`), as a segmentation model
        would give it."""
        keep = (self.visible_pixels >= max(min_pixels, 1)) & (self.visibility >= min_visibility)
        h, w = self.ids.shape
        return Detections.from_arrays(
            self.xyxy[keep],
            self.visibility[keep],
            self.class_ids[keep],
            self.object_ids[keep],
            stamp_ns=stamp_ns,
            frame_id=frame_id,
            image_size=(w, h),
            masks=self.masks()[keep] if masks else None,
        )


@dataclass(frozen=True, eq=False)
class Frame:
    """Everything of one time step. `lidar` is (N, 3) float32 in the LiDAR
    frame (base_link axes at the mount point)."""

    index: int
    stamp_ns: int
    time_s: float
    T_world_from_base: np.ndarray
    ego_velocity: tuple[float, float, float]
    cameras: dict[str, CameraFrame]
    lidar: np.ndarray | None
    objects: list[Object3D] = field(default_factory=list)


def _xyz(values: Iterable[float]) -> tuple[float, float, float]:
    """Three floats (a colour, a size, a point) as a typed 3-tuple."""
    x, y, z = (float(v) for v in values)
    return x, y, z


def _lighting(rng: np.random.Generator) -> Lighting:
    """Random daylight: sun elevation 12-70 deg, clear to overcast, warm
    low sun to cool noon."""
    el = math.radians(rng.uniform(12.0, 70.0))
    az = rng.uniform(-math.pi, math.pi)
    overcast = rng.uniform(0.0, 1.0)
    warm = 1.0 - (el - math.radians(12.0)) / math.radians(58.0)
    tint = (1.0, 1.0 - 0.12 * warm, 1.0 - 0.3 * warm)
    exposure = rng.uniform(0.75, 1.15)
    sun = (1.0 - 0.8 * overcast) * 0.75 * exposure
    ambient = (0.35 + 0.3 * overcast) * exposure
    grey = 0.55 + 0.2 * exposure
    clear_top = (0.25, 0.45, 0.85)
    top = _xyz(c * (1 - overcast) + grey * overcast for c in clear_top)
    horizon = _xyz(
        c * (1 - overcast) + (grey + 0.1) * overcast
        for c in (0.75, 0.82 - 0.1 * warm, 0.92 - 0.25 * warm)
    )
    return Lighting(
        sun_dir=(math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)),
        sun=float(sun),
        ambient=float(ambient),
        tint=_xyz(tint),
        sky_top=top,
        sky_horizon=horizon,
        fog_m=float(rng.uniform(150.0, 400.0) * (1.0 - 0.5 * overcast)),
    )


class Scenario:
    """Seeded scenario: `frames()` yields `Frame`s at `rate_hz` for `duration_s`.

    Args:
        seed: everything random (actors, colours, lighting, sensor noise).
        duration_s, rate_hz: length and frame rate (frame i at i / rate_hz).
        rig: sensors; `default_rig()` (3 cameras 640x360, 16-channel LiDAR).
        ego_speed: m/s along +x.
        density: multiplies the number of actors (1.0: busy urban road).
        buildings: static boxes beside the road (scenery, no GT).
        noise_std: image noise (grey levels).
        start_ns: stamp of frame 0 (non-zero: time 0 means "no clock yet"
            to nodes running on sim time).
        view_range: actors further than this from the ego are not drawn.
        lighting: fixed lighting instead of a seeded random one.
        actors: explicit actors instead of seeded random traffic (tests,
            staged situations); ids must be unique and >= 1.
    """

    def __init__(
        self,
        seed: int = 0,
        duration_s: float = 10.0,
        rate_hz: float = 10.0,
        rig: Rig | None = None,
        *,
        ego_speed: float = 10.0,
        density: float = 1.0,
        buildings: bool = True,
        noise_std: float = 2.0,
        start_ns: int = 1_000_000_000,
        view_range: float = 120.0,
        lighting: Lighting | None = None,
        actors: Sequence[Actor] | None = None,
    ) -> None:
        if not (duration_s > 0 and rate_hz > 0):
            raise ValueError(
                f"Scenario: expected duration_s > 0 and rate_hz > 0, got {duration_s}, {rate_hz}"
            )
        if ego_speed < 0 or density < 0:
            raise ValueError(
                f"Scenario: expected ego_speed >= 0 and density >= 0, got {ego_speed}, {density}"
            )
        self.seed = int(seed)
        self.duration_s = float(duration_s)
        self.rate_hz = float(rate_hz)
        self.rig = rig if rig is not None else default_rig()
        self.ego_speed = float(ego_speed)
        self.ego_y = -0.5 * LANE_WIDTH
        self.noise_std = float(noise_std)
        self.start_ns = int(start_ns)
        self.view_range = float(view_range)
        rng = np.random.default_rng(self.seed)
        self.lighting = lighting if lighting is not None else _lighting(rng)
        self.actors: list[Actor] = []
        self._populate(rng, density)
        if actors is not None:
            ids = [a.id for a in actors]
            if len(set(ids)) != len(ids) or any(i < 1 for i in ids):
                raise ValueError(f"Scenario.actors: expected unique ids >= 1, got {ids}")
            self.actors = list(actors)
        self.scenery: list[SceneBox] = self._buildings(rng) if buildings else []
        self._scenery_palettes = [
            np.array([rng.uniform(0.35, 0.8, 3), rng.uniform(0.05, 0.25, 3), [0, 0, 0]], np.float32)
            for _ in self.scenery
        ]
        self._rays = {c.name: CameraRays.create(c.model) for c in self.rig.cameras}

    # ------------------------------------------------------------ population
    @property
    def n_frames(self) -> int:
        return max(1, round(self.duration_s * self.rate_hz))

    def _span(self, v_rel: float) -> tuple[float, float]:
        """x range (relative to the ego at t = 0) to fill so that the view
        window [-60, view_range] stays populated for the whole duration."""
        d = v_rel * self.duration_s
        return (-60.0 - max(d, 0.0), self.view_range - min(d, 0.0))

    def _add(
        self,
        rng: np.random.Generator,
        class_id: int,
        size: tuple[float, float, float],
        x: float,
        y: float,
        vx: float,
        palette: np.ndarray,
    ) -> None:
        self.actors.append(
            Actor(len(self.actors) + 1, class_id, size, float(x), float(y), float(vx), 0.0, palette)
        )

    def _populate(self, rng: np.random.Generator, density: float) -> None:
        if density == 0:
            return
        ego = self.ego_speed
        lanes = (
            (-0.5 * LANE_WIDTH, ego + rng.uniform(0.5, 2.0)),  # ego lane: ahead, a bit faster
            (-1.5 * LANE_WIDTH, rng.uniform(6.0, 15.0)),
            (0.5 * LANE_WIDTH, -rng.uniform(8.0, 14.0)),
            (1.5 * LANE_WIDTH, -rng.uniform(8.0, 14.0)),
        )
        for y, v in lanes:
            lo, hi = self._span(v - ego)
            if y == self.ego_y:
                lo = max(lo, 15.0)  # never on top of the ego
            x = lo + rng.uniform(0.0, 20.0)
            while x < hi:
                size = (rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.7))
                body = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
                pal = np.array([body, body * 0.5, body], np.float32)
                self._add(rng, CAR, size, x, y + rng.uniform(-0.25, 0.25), v, pal)
                x += size[0] + rng.exponential(28.0 / density) + 4.0
        for side in (-1.0, 1.0):
            v = -side * rng.uniform(3.5, 6.5)  # cyclists ride with the traffic
            lo, hi = self._span(v - ego)
            x = lo + rng.uniform(0.0, 40.0)
            while x < hi:
                pal = np.array(
                    [rng.uniform(0.1, 0.9, 3), [0.1, 0.1, 0.12], rng.uniform(0.2, 0.9, 3)],
                    np.float32,
                )
                y = side * (0.5 * (ROAD_EDGE + CURB))
                self._add(rng, CYCLIST, (1.75, 0.6, 1.7), x, y, v, pal)
                x += rng.exponential(70.0 / density) + 10.0
            for _ in range(2):  # two streams of pedestrians per sidewalk
                v = rng.choice((-1.0, 1.0)) * rng.uniform(0.9, 1.7)
                lo, hi = self._span(v - ego)
                x = lo + rng.uniform(0.0, 15.0)
                while x < hi:
                    shirt = rng.uniform(0.1, 0.95, 3)
                    trousers = rng.uniform(0.05, 0.4, 3)
                    hair = rng.choice([[0.1, 0.07, 0.05], [0.35, 0.25, 0.15], [0.8, 0.65, 0.4]])
                    pal = np.array([shirt, trousers, hair], np.float32)
                    y = side * rng.uniform(CURB + 0.8, SIDEWALK - 0.5)
                    size = (rng.uniform(0.4, 0.55), rng.uniform(0.5, 0.65), rng.uniform(1.55, 1.9))
                    self._add(rng, PEDESTRIAN, size, x, y, v, pal)
                    x += rng.exponential(22.0 / density) + 2.0

    def _buildings(self, rng: np.random.Generator) -> list[SceneBox]:
        out = []
        lo = -80.0
        hi = self.ego_speed * self.duration_s + self.view_range + 80.0
        for side in (-1.0, 1.0):
            x = lo + rng.uniform(0.0, 10.0)
            while x < hi:
                length = rng.uniform(10.0, 30.0)
                depth = rng.uniform(8.0, 15.0)
                height = rng.uniform(5.0, 20.0)
                y = side * (SIDEWALK + 3.0 + rng.uniform(0.0, 4.0) + depth / 2)
                out.append(SceneBox((x + length / 2, y, height / 2), (length, depth, height)))
                x += length + rng.uniform(2.0, 15.0)
        return out

    # ---------------------------------------------------------------- frames
    def stamp_ns(self, index: int) -> int:
        return self.start_ns + round(index * 1e9 / self.rate_hz)

    def ego_pose(self, t: float) -> np.ndarray:
        """4x4 T_world_from_base at scenario time t."""
        return rigid(np.eye(3), (self.ego_speed * t, self.ego_y, 0.0))

    def frames(self) -> Iterator[Frame]:
        """All frames, in order."""
        for i in range(self.n_frames):
            yield self.frame(i)

    def frame(self, index: int) -> Frame:
        """Frame `index` (random access; same result whatever was rendered before)."""
        if not 0 <= index < self.n_frames:
            raise IndexError(f"frame index: expected 0..{self.n_frames - 1}, got {index}")
        t = index / self.rate_hz
        t_wb = self.ego_pose(t)
        ego_x = t_wb[0, 3]
        near = [a for a in self.actors if abs(a.x0 + a.vx * t - ego_x) < self.view_range + 10.0]
        boxes = [a.box(t) for a in near]
        keys = [a.id for a in near]
        styles = [_STYLE[a.class_id] for a in near]
        palettes = [a.palette for a in near]
        for b, pal in zip(self.scenery, self._scenery_palettes, strict=True):
            if abs(b.center[0] - ego_x) < self.view_range + 0.5 * b.size[0]:
                boxes.append(b)
                keys.append(ID_SCENERY)
                styles.append(_render.STYLE_BUILDING)
                palettes.append(pal)
        # per-frame noise generator, independent of rendering order
        noise_rng = np.random.default_rng((self.seed, index))
        cams: dict[str, CameraFrame] = {}
        for mount in self.rig.cameras:
            out = _render.render_camera(
                self._rays[mount.name],
                t_wb @ mount.T_base_from_cam,
                boxes,
                keys,
                styles,
                palettes,
                self.lighting,
                noise_std=self.noise_std,
                rng=noise_rng,
            )
            cams[mount.name] = self._camera_gt(mount.name, out, near)
        base_from_world = np.linalg.inv(t_wb)
        lidar = None
        if self.rig.lidar is not None:
            lidar = self._lidar(boxes, base_from_world, noise_rng)
        objects = [self._object(a, t, base_from_world) for a in near]
        return Frame(
            index=index,
            stamp_ns=self.stamp_ns(index),
            time_s=t,
            T_world_from_base=t_wb,
            ego_velocity=(self.ego_speed, 0.0, 0.0),
            cameras=cams,
            lidar=lidar,
            objects=objects,
        )

    @staticmethod
    def _camera_gt(name: str, out: _render.RenderOutput, near: list[Actor]) -> CameraFrame:
        rows = sorted(k for k in out.stats if k < len(near))
        m = len(rows)
        st: list[BoxStats] = [out.stats[k] for k in rows]
        xyxy = np.full((m, 4), np.nan, np.float32)
        for i, s in enumerate(st):
            if s.visible_pixels:
                xyxy[i] = s.visible_xyxy
        return CameraFrame(
            name=name,
            image_bgr=out.image_bgr,
            depth=out.depth,
            ids=out.ids,
            object_ids=np.array([near[k].id for k in rows], np.int64),
            class_ids=np.array([near[k].class_id for k in rows], np.int32),
            xyxy=xyxy,
            xyxy_projected=np.array([s.projected_xyxy for s in st], np.float32).reshape(m, 4),
            visible_pixels=np.array([s.visible_pixels for s in st], np.int64),
            projected_pixels=np.array([s.projected_pixels for s in st], np.int64),
        )

    def _lidar(
        self, boxes: list[SceneBox], base_from_world: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        lid = self.rig.lidar
        if lid is None:
            return np.zeros((0, 3), np.float32)
        yaw_off = math.atan2(base_from_world[1, 0], base_from_world[0, 0])
        in_base = []
        for b in boxes:
            c = base_from_world[:3, :3] @ np.asarray(b.center) + base_from_world[:3, 3]
            if math.hypot(c[0], c[1]) - 0.5 * math.hypot(b.size[0], b.size[1]) > lid.max_range:
                continue
            in_base.append(SceneBox(tuple(c), b.size, b.yaw + yaw_off, b.class_id))
        return lidar_scan(
            in_base,
            0.0,
            origin=lid.position,
            elevations_deg=lid.elevations_deg,
            n_azimuth=lid.n_azimuth,
            max_range=lid.max_range,
            noise_std=lid.noise_std,
            rng=rng,
        )

    def _object(self, a: Actor, t: float, base_from_world: np.ndarray) -> Object3D:
        b = a.box(t)
        c = base_from_world[:3, :3] @ np.asarray(b.center) + base_from_world[:3, 3]
        yaw_off = math.atan2(base_from_world[1, 0], base_from_world[0, 0])
        yaw_b = math.atan2(math.sin(b.yaw + yaw_off), math.cos(b.yaw + yaw_off))
        return Object3D(
            id=a.id,
            class_id=a.class_id,
            size=_xyz(a.size),
            center_world=_xyz(b.center),
            yaw_world=float(b.yaw),
            center_base=_xyz(c),
            yaw_base=float(yaw_b),
            velocity_world=(a.vx, a.vy, 0.0),
        )
