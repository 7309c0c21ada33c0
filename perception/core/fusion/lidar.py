"""LiDAR fusion: 3D boxes for 2D detections from a point cloud, with open3d.

Per frame (`LidarFusion.fuse`), with bounded work whatever the cloud density:

1. points are moved into the camera frame with the 4x4 extrinsic
   (T_cam_from_cloud; none configured or given -> `MissingExtrinsicsError`)
   and cropped to the camera's field of view and range (cheap numpy, before
   anything costly);
2. the crop is voxel down-sampled (open3d `voxel_down_sample`) and capped at
   `max_points` (strided subsampling);
3. the ground plane is found with open3d `segment_plane` (RANSAC on a capped
   sample, inliers then taken over all points) and removed when its normal is
   within `ground_max_tilt_deg` of the cloud frame's +z;
4. the rest is projected with the `CameraModel` (distortion honoured) and
   each detection takes the points inside its box (its frustum), capped at
   `max_points_per_frustum`; a detection with an instance mask
   (`Detections.masks`, segmentation models) takes only the points that fall
   on its mask's pixels, so background and occluders seen past its outline
   inside the box are not selected;
5. the union of frustum points is clustered once with open3d
   `cluster_dbscan`; each detection picks the nearest cluster that has
   enough of its frustum points (an occluder in front wins over the
   background behind; stray noise does not);
6. a yaw-only box is fitted to that cluster's frustum points: minimum-area
   rectangle in the ground plane (`cv2.minAreaRect` on x, y) and the z
   extent. (open3d's PCA `get_oriented_bounding_box` tilts and inflates boxes
   of sparse, one-sided LiDAR returns, so it is not used.)
7. with `amodal` set, that box (the visible faces only) is completed behind
   them with the class's size prior (`amodal.complete_box`, viewpoint the
   cloud frame's origin: the LiDAR, or near it for base_link), its bottom on
   the ground plane when its lowest point is less than a prior height above.

Boxes are expressed in the cloud's frame, which must be z-up (a LiDAR frame or
base_link; transform the cloud first otherwise). A detection without a
usable cluster gives no 3D object and is counted.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from perception.core.camera import CameraModel
from perception.core.fusion.amodal import AmodalConfig, border_normal, complete_box
from perception.core.fusion.errors import FusionInputError, MissingExtrinsicsError
from perception.core.fusion.types import Objects3D
from perception.core.types import Detections

__all__ = [
    "LidarFusion",
    "LidarFusionConfig",
    "LidarFusionResult",
    "LidarFusionStats",
    "check_extrinsic",
    "fit_yaw_box",
]

_LOG = logging.getLogger(__name__)


def _o3d() -> Any:
    import open3d as o3d  # lazy: heavy import, only the LiDAR path needs it

    return o3d


def _plane_tuple(plane: np.ndarray) -> tuple[float, float, float, float]:
    a, b, c, d = (float(x) for x in plane)
    return a, b, c, d


def check_extrinsic(transform: Any, name: str = "T_cam_from_cloud") -> np.ndarray:
    """Validated 4x4 rigid transform as float64; `MissingExtrinsicsError` when
    absent, non-finite, not 4x4 or not a rotation."""
    if transform is None:
        raise MissingExtrinsicsError(
            f"{name}: expected a 4x4 transform from the cloud frame to the camera frame "
            "(configure extrinsics or provide tf), got none"
        )
    t = np.asarray(transform, dtype=np.float64)
    if t.shape != (4, 4) or not np.isfinite(t).all():
        raise MissingExtrinsicsError(f"{name}: expected a finite 4x4 matrix, got shape {t.shape}")
    rot = t[:3, :3]
    if (
        not np.allclose(rot @ rot.T, np.eye(3), atol=1e-3)
        or abs(np.linalg.det(rot) - 1.0) > 1e-3
        or not np.allclose(t[3], (0, 0, 0, 1))
    ):
        raise MissingExtrinsicsError(
            f"{name}: expected a rigid transform (rotation with det 1, last row 0 0 0 1)"
        )
    return t


@dataclass(frozen=True)
class LidarFusionConfig:
    """Parameters of `LidarFusion` (metres, degrees, counts).

    Attributes:
        min_range_m, max_range_m: depth range (camera z) of points considered.
        voxel_size_m: voxel edge for down-sampling (0 disables).
        max_points: cap on points after down-sampling (strided subsample).
        ground_removal: remove the dominant near-horizontal plane.
        ground_distance_m: RANSAC inlier distance of the ground plane.
        ground_iterations: RANSAC iterations.
        ground_sample_points: RANSAC runs on at most this many points.
        ground_max_tilt_deg: plane normal vs cloud +z; beyond, not ground.
        ground_min_fraction: the plane must hold this fraction of the sample.
        frustum_shrink: fraction of the box width/height removed at each side
            before selecting points (2D boxes are a bit loose).
        max_points_per_frustum: cap on points per detection (strided).
        dbscan_eps_m, dbscan_min_points: open3d cluster_dbscan parameters.
        min_cluster_points: a cluster needs this many points in the frustum.
        min_cluster_share: ... and this share of the frustum's largest cluster.
        layer_gap_m: clusters whose median depths differ by less than this are
            taken as one object split by an occluder.
        max_box_size_m: clusters whose fitted box exceeds this are rejected
            (walls, merged scenery).
        range_noise_m: LiDAR range noise (std), floor of the centre covariance.
        seed: open3d RANSAC seed, set before each segment_plane (reproducible).
        min_mask_pixels: a detection whose instance mask has fewer pixels
            selects its points with its box.
        amodal: complete each box behind the faces the LiDAR sees with class
            size priors (step 7); None = the fit of the visible points.
    """

    min_range_m: float = 0.5
    max_range_m: float = 80.0
    voxel_size_m: float = 0.12
    max_points: int = 40000
    ground_removal: bool = True
    ground_distance_m: float = 0.12
    ground_iterations: int = 60
    ground_sample_points: int = 1500
    ground_max_tilt_deg: float = 15.0
    ground_min_fraction: float = 0.15
    frustum_shrink: float = 0.03
    max_points_per_frustum: int = 800
    dbscan_eps_m: float = 0.4
    dbscan_min_points: int = 4
    min_cluster_points: int = 5
    min_cluster_share: float = 0.2
    layer_gap_m: float = 1.5
    max_box_size_m: float = 20.0
    range_noise_m: float = 0.03
    seed: int = 0
    min_mask_pixels: int = 12
    amodal: AmodalConfig | None = None

    def __post_init__(self) -> None:
        if self.amodal is not None and not isinstance(self.amodal, AmodalConfig):
            raise FusionInputError(
                f"LidarFusionConfig.amodal: expected AmodalConfig or None, got {self.amodal!r}"
            )
        if not 0.0 < self.min_range_m < self.max_range_m:
            raise FusionInputError(
                "LidarFusionConfig: expected 0 < min_range_m < max_range_m, got "
                f"{self.min_range_m}, {self.max_range_m}"
            )
        if self.voxel_size_m < 0 or self.dbscan_eps_m <= 0 or self.ground_distance_m <= 0:
            raise FusionInputError(
                "LidarFusionConfig: expected voxel_size_m >= 0, dbscan_eps_m > 0 and "
                f"ground_distance_m > 0, got {self.voxel_size_m}, {self.dbscan_eps_m}, "
                f"{self.ground_distance_m}"
            )
        if min(self.max_points, self.max_points_per_frustum, self.ground_sample_points) < 3:
            raise FusionInputError("LidarFusionConfig: expected point caps >= 3")
        if not 0.0 <= self.frustum_shrink < 0.5:
            raise FusionInputError(
                f"LidarFusionConfig.frustum_shrink: expected [0, 0.5), got {self.frustum_shrink}"
            )


@dataclass
class LidarFusionStats:
    """Counters over the fusion's lifetime."""

    frames: int = 0
    empty_clouds: int = 0
    points_in: int = 0
    points_nonfinite: int = 0
    points_in_view: int = 0
    points_after_voxel: int = 0
    ground_points: int = 0
    ground_not_found: int = 0
    detections: int = 0
    lifted: int = 0
    no_points: int = 0
    no_cluster: int = 0
    invalid_box: int = 0
    mask_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class LidarFusionResult:
    """3D boxes of one frame (in the cloud frame) and per-frame diagnostics.

    Attributes:
        objects: fitted boxes.
        det_index: (N,) intp row of the input `Detections` each box came from.
        ground_plane: (a, b, c, d) of the removed plane (cloud frame), or None.
        timings_ms: stage -> milliseconds of this frame.
    """

    objects: Objects3D
    det_index: np.ndarray = field(repr=False)
    ground_plane: tuple[float, float, float, float] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


def fit_yaw_box(
    points: np.ndarray, method: str = "closeness", edge_noise_m: float = 0.05
) -> tuple[np.ndarray, np.ndarray, float]:
    """Yaw-only box of (N, 3) points in a z-up frame: a rectangle in x, y
    and the z extent. Returns (center (3,), size (3,), yaw) with
    size[0] >= size[1] (length along yaw) and yaw in (-pi/2, pi/2].

    method "min_area": `cv2.minAreaRect`. It is ambiguous on the L-shaped
    returns of a car seen at an angle (the rectangle along the hypotenuse has
    the same area), so the default "closeness" scores candidate headings
    (convex-hull edge directions and a 3-degree grid) by how close points lie
    to the rectangle's edges (L-shape fitting, Zhang et al. 2017) and takes the
    bounding rectangle at the best one. `edge_noise_m` floors the distances.
    """
    import cv2

    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 1:
        raise ValueError(f"fit_yaw_box: expected (N>=1, 3) points, got {p.shape}")
    if method not in ("closeness", "min_area"):
        raise ValueError(f"fit_yaw_box: expected method 'closeness' or 'min_area', got {method!r}")
    origin = p.mean(axis=0)
    q = p - origin  # centred: float32 precision in OpenCV
    xy32 = np.ascontiguousarray(q[:, :2], dtype=np.float32)
    if method == "min_area" or p.shape[0] < 3:
        (cx, cy), (w, h), angle = cv2.minAreaRect(xy32)
        yaw = math.radians(angle)
    else:
        hull = cv2.convexHull(xy32).reshape(-1, 2).astype(np.float64)
        edges = np.roll(hull, -1, axis=0) - hull
        cand = np.concatenate(
            (np.arctan2(edges[:, 1], edges[:, 0]), np.radians(np.arange(0.0, 90.0, 3.0)))
        ) % (math.pi / 2)
        sub = q[_stride_cap(np.arange(q.shape[0]), 250), :2]
        c, s = np.cos(cand)[:, None], np.sin(cand)[:, None]
        u = c * sub[:, 0] + s * sub[:, 1]
        v = -s * sub[:, 0] + c * sub[:, 1]
        du = np.minimum(u.max(axis=1, keepdims=True) - u, u - u.min(axis=1, keepdims=True))
        dv = np.minimum(v.max(axis=1, keepdims=True) - v, v - v.min(axis=1, keepdims=True))
        score = (1.0 / np.maximum(np.minimum(du, dv), edge_noise_m)).sum(axis=1)
        yaw = float(cand[int(np.argmax(score))])
        cy_, sy_ = math.cos(yaw), math.sin(yaw)
        u = cy_ * q[:, 0] + sy_ * q[:, 1]
        v = -sy_ * q[:, 0] + cy_ * q[:, 1]
        umid, vmid = 0.5 * (u.max() + u.min()), 0.5 * (v.max() + v.min())
        w, h = float(u.max() - u.min()), float(v.max() - v.min())
        cx, cy = cy_ * umid - sy_ * vmid, sy_ * umid + cy_ * vmid
    if w < h:
        w, h = h, w
        yaw += math.pi / 2
    yaw = (yaw + math.pi / 2) % math.pi - math.pi / 2  # a box is symmetric under pi
    if yaw <= -math.pi / 2 + 1e-9:
        yaw += math.pi
    zmin, zmax = float(q[:, 2].min()), float(q[:, 2].max())
    center = origin + np.array([cx, cy, 0.5 * (zmin + zmax)])
    size = np.array([w, h, zmax - zmin], np.float64)
    return center, size, yaw


def _stride_cap(index: np.ndarray, cap: int) -> np.ndarray:
    if index.size <= cap:
        return index
    return index[np.linspace(0, index.size - 1, cap).astype(np.intp)]


class LidarFusion:
    """Fits 3D boxes to the LiDAR points seen inside 2D detections of one camera."""

    def __init__(
        self,
        camera: CameraModel,
        config: LidarFusionConfig | None = None,
        T_cam_from_cloud: Any | None = None,
    ) -> None:
        if not isinstance(camera, CameraModel):
            raise TypeError(f"camera: expected CameraModel, got {type(camera).__name__}")
        if config is not None and not isinstance(config, LidarFusionConfig):
            raise TypeError(f"config: expected LidarFusionConfig, got {type(config).__name__}")
        self.camera = camera
        self.config = config if config is not None else LidarFusionConfig()
        self._extrinsic = None if T_cam_from_cloud is None else check_extrinsic(T_cam_from_cloud)
        self._fov = camera.fov_bounds()
        self.stats = LidarFusionStats()
        _o3d()  # fail at construction when open3d is missing, not at the first frame

    def set_extrinsic(self, T_cam_from_cloud: Any) -> None:
        """Replace the default cloud->camera transform (e.g. from tf)."""
        self._extrinsic = check_extrinsic(T_cam_from_cloud)

    def fuse(
        self,
        det: Detections,
        xyz: np.ndarray,
        *,
        T_cam_from_cloud: Any | None = None,
        cloud_frame_id: str = "",
    ) -> LidarFusionResult:
        """3D boxes (in the cloud frame) for the detections seen in `xyz`.

        `xyz` (N, 3) holds the cloud's points in its own frame (see
        `pointcloud.cloud_xyz`); non-finite rows are dropped and counted.
        `T_cam_from_cloud` overrides the configured extrinsic for this frame
        (tf at the cloud stamp); with neither, `MissingExtrinsicsError`.
        """
        if not isinstance(det, Detections):
            raise TypeError(f"det: expected Detections, got {type(det).__name__}")
        if T_cam_from_cloud is not None:
            t_ext = check_extrinsic(T_cam_from_cloud)
        elif self._extrinsic is not None:
            t_ext = self._extrinsic
        else:
            t_ext = check_extrinsic(None)  # raises MissingExtrinsicsError
        pts = np.asarray(xyz)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise FusionInputError(f"xyz: expected points of shape (N, 3), got {pts.shape}")
        cam = self.camera
        if det.image_size not in ((0, 0), cam.size):
            raise FusionInputError(
                f"detections: expected image_size {cam.size} of the camera model, "
                f"got {det.image_size}"
            )
        cfg = self.config
        st = self.stats
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        st.frames += 1
        st.detections += len(det)
        st.points_in += int(pts.shape[0])
        empty = LidarFusionResult(
            Objects3D.empty(stamp_ns=det.stamp_ns, frame_id=cloud_frame_id),
            np.zeros(0, np.intp),
            None,
            timings,
        )
        if len(det) == 0:
            return empty  # nothing to lift: skip the cloud work
        if pts.shape[0] == 0:
            st.empty_clouds += 1
            st.no_points += len(det)
            return empty
        if pts.dtype != np.float32:
            pts = pts.astype(np.float32)

        # ---- 1. camera frame, field-of-view and range crop
        rot = t_ext[:3, :3].astype(np.float32)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf rows: dropped below
            pc = pts @ rot.T
            pc += t_ext[:3, 3].astype(np.float32)
        z = pc[:, 2]
        finite = np.isfinite(pc).all(axis=1)
        n_bad = pts.shape[0] - int(np.count_nonzero(finite))
        if n_bad:
            st.points_nonfinite += n_bad
        xmin, xmax, ymin, ymax = self._fov
        with np.errstate(invalid="ignore"):
            keep = finite & (z > cfg.min_range_m) & (z < cfg.max_range_m)
            keep &= (pc[:, 0] >= (xmin - 0.02) * z) & (pc[:, 0] <= (xmax + 0.02) * z)
            keep &= (pc[:, 1] >= (ymin - 0.02) * z) & (pc[:, 1] <= (ymax + 0.02) * z)
        sel = pts[keep]
        st.points_in_view += int(sel.shape[0])
        timings["crop"] = (time.perf_counter() - t0) * 1e3
        if sel.shape[0] == 0:
            st.no_points += len(det)
            return empty

        # ---- 2. voxel down-sampling and cap
        t1 = time.perf_counter()
        o3d = _o3d()
        if cfg.voxel_size_m > 0:
            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(sel.astype(np.float64)))
            sel64 = np.asarray(cloud.voxel_down_sample(cfg.voxel_size_m).points)
        else:
            sel64 = sel.astype(np.float64)
        if sel64.shape[0] > cfg.max_points:
            sel64 = sel64[_stride_cap(np.arange(sel64.shape[0]), cfg.max_points)]
        st.points_after_voxel += int(sel64.shape[0])
        timings["voxel"] = (time.perf_counter() - t1) * 1e3

        # ---- 3. ground removal
        t1 = time.perf_counter()
        plane = None
        if cfg.ground_removal and sel64.shape[0] >= 3:
            plane = self._ground_plane(o3d, sel64)
            if plane is None:
                st.ground_not_found += 1
            else:
                dist = np.abs(sel64 @ plane[:3] + plane[3])
                ground = dist <= cfg.ground_distance_m
                st.ground_points += int(np.count_nonzero(ground))
                sel64 = sel64[~ground]
        timings["ground"] = (time.perf_counter() - t1) * 1e3

        # ---- 4. frustum selection
        t1 = time.perf_counter()
        r64, t64 = t_ext[:3, :3], t_ext[:3, 3]
        cam_pts = sel64 @ r64.T + t64
        uv = cam.project(cam_pts)
        u, v = uv[:, 0], uv[:, 1]
        boxes = det.xyxy.astype(np.float64)
        n_det = len(det)
        frustums: list[np.ndarray | None] = [None] * n_det
        invalid = no_points = 0
        masks = det.masks
        mask_rows = 0
        if masks is not None:
            with np.errstate(invalid="ignore"):  # NaN pixels: outside every mask
                ui = np.where(np.isfinite(u), np.floor(u + 0.5), -1).astype(np.int64)
                vi = np.where(np.isfinite(v), np.floor(v + 0.5), -1).astype(np.int64)
        for i in range(n_det):
            b = boxes[i]
            if not (np.isfinite(b).all() and b[2] > b[0] and b[3] > b[1]):
                invalid += 1
                continue
            if masks is not None and np.count_nonzero(masks.crops[i]) >= cfg.min_mask_pixels:
                # the instance's own pixels: no background or occluder seen
                # past its outline, so no shrinking either
                crop = masks.crops[i]
                x0, y0, x1, y1 = (int(c) for c in masks.boxes[i])
                near = np.flatnonzero((ui >= x0) & (ui < x1) & (vi >= y0) & (vi < y1))
                idx = near[crop[vi[near] - y0, ui[near] - x0]]
                mask_rows += 1
            else:
                dx, dy = cfg.frustum_shrink * (b[2] - b[0]), cfg.frustum_shrink * (b[3] - b[1])
                inside = (u >= b[0] + dx) & (u <= b[2] - dx) & (v >= b[1] + dy) & (v <= b[3] - dy)
                idx = np.flatnonzero(inside)
            if idx.size < cfg.min_cluster_points:
                no_points += 1
                continue
            frustums[i] = _stride_cap(idx, cfg.max_points_per_frustum)
        timings["frustum"] = (time.perf_counter() - t1) * 1e3

        # ---- 5. one clustering over the union of frustum points
        t1 = time.perf_counter()
        used = [f for f in frustums if f is not None]
        labels_of = np.full(sel64.shape[0], -1, np.int64)
        label_box = np.zeros((0, 4))
        if used:
            union = np.unique(np.concatenate(used))
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(sel64[union]))
            lab_u = np.asarray(
                pcd.cluster_dbscan(cfg.dbscan_eps_m, cfg.dbscan_min_points, False), np.int64
            )
            labels_of[union] = lab_u
            n_lab = int(lab_u.max()) + 1 if lab_u.size else 0
            if n_lab:
                # 2D extent of every cluster, to score it against each box
                ok = lab_u >= 0
                lu, uvu = lab_u[ok], uv[union[ok]]
                label_box = np.empty((n_lab, 4))
                label_box[:, :2] = np.inf
                label_box[:, 2:] = -np.inf
                np.minimum.at(label_box[:, 0], lu, uvu[:, 0])
                np.minimum.at(label_box[:, 1], lu, uvu[:, 1])
                np.maximum.at(label_box[:, 2], lu, uvu[:, 0])
                np.maximum.at(label_box[:, 3], lu, uvu[:, 1])
        timings["cluster"] = (time.perf_counter() - t1) * 1e3

        # ---- 6. per detection: pick a cluster, fit a yaw box
        t1 = time.perf_counter()
        centers, sizes, yaws, covs, index = [], [], [], [], []
        no_cluster = 0
        priors = cfg.amodal.prior_table() if cfg.amodal is not None else {}
        for i, frustum in enumerate(frustums):
            if frustum is None:
                continue
            idx = frustum
            lab = labels_of[idx]
            good = lab >= 0
            if not good.any():
                no_cluster += 1
                continue
            ids, counts = np.unique(lab[good], return_counts=True)
            enough = counts >= max(cfg.min_cluster_points, cfg.min_cluster_share * counts.max())
            cand = ids[enough]
            if cand.size == 0:
                no_cluster += 1
                continue
            # Clusters at about the same depth are one object split by an
            # occluder: group them in depth layers. The best match is the
            # layer whose image extent overlaps the box most (an occluder
            # covering part of the box loses to the object filling it);
            # nearer wins a tie.
            depth = np.array([np.median(cam_pts[idx[lab == c], 2]) for c in cand])
            order = np.argsort(depth)
            cand, depth = cand[order], depth[order]
            layer = np.concatenate(([0], np.cumsum(np.diff(depth) > cfg.layer_gap_m)))
            b = boxes[i]
            best_iou, best_layer = -1.0, 0
            for lay in range(int(layer[-1]) + 1):
                lb = label_box[cand[layer == lay]]
                ub = (lb[:, 0].min(), lb[:, 1].min(), lb[:, 2].max(), lb[:, 3].max())
                iw = max(min(ub[2], b[2]) - max(ub[0], b[0]), 0.0)
                ih = max(min(ub[3], b[3]) - max(ub[1], b[1]), 0.0)
                inter = iw * ih
                union_a = (ub[2] - ub[0]) * (ub[3] - ub[1]) + (b[2] - b[0]) * (b[3] - b[1])
                iou = inter / max(union_a - inter, 1e-9)
                if iou > best_iou + 0.01:
                    best_iou, best_layer = iou, lay
            best = idx[np.isin(lab, cand[layer == best_layer])]
            center, size, yaw = fit_yaw_box(sel64[best])
            if size.max() > cfg.max_box_size_m:
                no_cluster += 1
                continue
            if plane is not None and abs(plane[2]) > 1e-6:
                # objects stand on the ground: points within the ground band
                # were removed with it, so extend the box down to the plane
                z_ground = -(plane[0] * center[0] + plane[1] * center[1] + plane[3]) / plane[2]
                bottom = center[2] - 0.5 * size[2]
                if 0.0 < bottom - z_ground <= 2.0 * cfg.ground_distance_m + cfg.voxel_size_m:
                    top = bottom + size[2]
                    size[2] = top - z_ground
                    center[2] = 0.5 * (top + z_ground)
            size = np.maximum(size, max(cfg.voxel_size_m, 0.02))
            sigma = cfg.range_noise_m + 0.5 * size / math.sqrt(best.size)
            if cfg.amodal is not None:
                prior = priors.get(int(det.class_ids[i]))
                bottom, top = center[2] - 0.5 * size[2], center[2] + 0.5 * size[2]
                if plane is not None and abs(plane[2]) > 1e-6 and prior is not None:
                    # sparse beams may miss the lower part: an object stands on
                    # the ground when its lowest point is within its height
                    z_ground = -(plane[0] * center[0] + plane[1] * center[1] + plane[3]) / plane[2]
                    if 0.0 < bottom - z_ground <= prior[2]:
                        bottom = z_ground
                amodal = complete_box(
                    sel64[best],
                    np.zeros(3),
                    prior,
                    cfg.amodal,
                    z_range=(bottom, top),
                    yaw=yaw,
                    cut=border_normal(cam, b, t_ext[:3, :3].T),
                )
                center, yaw = amodal.center, amodal.yaw
                size = np.maximum(amodal.size, max(cfg.voxel_size_m, 0.02))
                # the completed part is a guess: a tenth of it as extra std
                sigma = cfg.range_noise_m + 0.5 * amodal.observed / math.sqrt(best.size)
                sigma = sigma + 0.1 * np.maximum(size - amodal.observed, 0.0)
            centers.append(center)
            sizes.append(size)
            yaws.append(yaw)
            cy, sy = math.cos(yaw), math.sin(yaw)
            r_box = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
            covs.append(r_box @ np.diag(sigma * sigma) @ r_box.T)  # box axes -> cloud frame
            index.append(i)
        timings["fit"] = (time.perf_counter() - t1) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3

        st.invalid_box += invalid
        st.mask_rows += mask_rows
        st.no_points += no_points
        st.no_cluster += no_cluster
        st.lifted += len(index)
        idx_arr = np.asarray(index, np.intp)
        if not index:
            objects = Objects3D.empty(stamp_ns=det.stamp_ns, frame_id=cloud_frame_id)
        else:
            objects = Objects3D.from_arrays(
                np.asarray(centers),
                np.asarray(sizes),
                np.asarray(yaws),
                covariances=np.asarray(covs),
                scores=det.scores[idx_arr],
                class_ids=det.class_ids[idx_arr],
                track_ids=det.track_ids[idx_arr],
                stamp_ns=det.stamp_ns,
                frame_id=cloud_frame_id,
            )
        plane_t = None if plane is None else _plane_tuple(plane)
        return LidarFusionResult(objects, idx_arr, plane_t, timings)

    def _ground_plane(self, o3d: Any, pts: np.ndarray) -> np.ndarray | None:
        """Dominant near-horizontal plane (a, b, c, d) with c > 0, or None."""
        cfg = self.config
        sample = pts[_stride_cap(np.arange(pts.shape[0]), cfg.ground_sample_points)]
        if sample.shape[0] < 3:
            return None
        o3d.utility.random.seed(cfg.seed)
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(sample))
        model, inliers = pcd.segment_plane(
            cfg.ground_distance_m, 3, cfg.ground_iterations, probability=1.0
        )
        plane = np.asarray(model, np.float64).reshape(4)
        norm = float(np.linalg.norm(plane[:3]))
        if not np.isfinite(plane).all() or norm < 1e-9:
            return None
        plane /= norm
        if plane[2] < 0:
            plane = -plane
        tilt = math.degrees(math.acos(min(1.0, plane[2])))
        if tilt > cfg.ground_max_tilt_deg or len(inliers) < cfg.ground_min_fraction * len(sample):
            return None
        return plane
