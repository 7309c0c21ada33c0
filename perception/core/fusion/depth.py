"""Lift 2D detections to 3D boxes with a registered depth image.

For each box, the reference depth is a low percentile of the valid depths in
the box's central region (the object's front surface, robust to background
seen past its edges and to a few bad pixels); the central depths within a band
around it give the object's depth range, and the box edges back-projected
through the camera model (honouring distortion) at the front depth give its
lateral extent and centre. Depth values of
0, NaN, inf or outside [min_depth_m, max_depth_m] are invalid. A box without
enough valid depth yields no 3D object (never a box at zero depth) and is
counted in `stats`.

Output boxes are in the camera optical frame, aligned with its axes (yaw 0):
sizes are (x right, y down, z forward) extents. The extent along the optical
axis is not observable from one view of a surface; it is the observed depth
spread, at least the smaller of the two visible extents (documented
heuristic; a LiDAR fit or a class prior does better). Lateral extents are the
2D box edges back-projected at the front depth, so ground or background
pixels inside the box do not widen the box; an occluder covering the centre
of the box is taken for the object (known limitation of box-based lifting).

With `DepthLiftConfig.amodal` (the fusion stage's `amodal_centres`, on by
default there) the box is not the visible surface but the whole object: the
object's pixels (those of the box within its depth range, on the ground-plane
component holding its front surface; or its mask's) are moved into a z-up
frame and `amodal.complete_box` fits a heading to them and completes them
behind the surface with the class's size prior. A car seen from behind then
has its centre ~2.2 m behind its rear, not ~0.75 m (bench/bench_amodal.py).

A detection with an instance mask (`Detections.masks`, from a segmentation
model; at least `min_mask_pixels` pixels) is lifted from its mask instead:
the depth range from the depths under the mask only, the lateral extent and
centre from the mask's pixels back-projected at their own depth. Background
seen past the outline and occluders in front of it are not the instance's
pixels, so they do not enter (on the generated scenario this lowers the
median centre error and, for partly occluded objects, the tail; see
bench/bench_mask_lifting.py). A lost track's empty mask falls back to its box.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from perception.core.camera import CameraModel
from perception.core.fusion.amodal import AmodalConfig, border_normal, complete_box
from perception.core.fusion.errors import DepthImageError, FusionInputError
from perception.core.fusion.synthetic import OPTICAL_FROM_FLU
from perception.core.fusion.types import Objects3D
from perception.core.types import Detections, InstanceMasks

__all__ = ["DepthLiftConfig", "DepthLiftStats", "DepthLifter", "LiftResult", "depth_to_metres"]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthLiftConfig:
    """Parameters of `DepthLifter` (metres unless stated).

    Attributes:
        min_depth_m, max_depth_m: valid depth range; outside is invalid.
        center_fraction: side fraction of the box used for the reference depth.
        percentile: percentile of central valid depths taken as the front surface.
        min_valid_pixels: fewer valid central pixels -> no object.
        min_valid_fraction: fewer valid central pixels than this fraction of
            the central region -> no object.
        front_margin_m: pixels up to this much nearer than the reference still
            belong to the object.
        max_object_depth_m: pixels up to this much farther than the reference
            belong to the object (the rest is background).
        max_pixels: pixels per box used for the extent (strided subsampling):
            bounds work per box whatever the box size.
        extent_percentiles: low/high percentiles of the 3D points taken as the
            box extent (robust to stray pixels).
        depth_noise_a, depth_noise_b: depth std model a + b*z^2 (m) for the
            centre covariance.
        lateral_noise: std of the centre across the ray as a fraction of size.
        class_depth_m: ((class_id, extent_m), ...): extent along the optical
            axis assumed for a class when the observed depth spread is smaller
            (e.g. a car seen from behind: ((2, 4.5),)); others use the
            heuristic above.
        min_mask_pixels: a detection whose instance mask has fewer pixels
            is lifted from its box (segmentation models; see `lift`).
        amodal: complete each object behind its visible surface with class
            size priors (`amodal.complete_box`, in a z-up frame; see `lift`);
            None = the visible-surface box above (class_depth_m applies).
    """

    min_depth_m: float = 0.1
    max_depth_m: float = 60.0
    center_fraction: float = 0.5
    percentile: float = 30.0
    min_valid_pixels: int = 12
    min_valid_fraction: float = 0.1
    front_margin_m: float = 0.3
    max_object_depth_m: float = 3.0
    max_pixels: int = 4096
    extent_percentiles: tuple[float, float] = (2.0, 98.0)
    depth_noise_a: float = 0.02
    depth_noise_b: float = 0.003
    lateral_noise: float = 0.1
    class_depth_m: tuple[tuple[int, float], ...] = ()
    min_mask_pixels: int = 12
    amodal: AmodalConfig | None = None

    def __post_init__(self) -> None:
        if self.amodal is not None and not isinstance(self.amodal, AmodalConfig):
            raise FusionInputError(
                f"DepthLiftConfig.amodal: expected AmodalConfig or None, got {self.amodal!r}"
            )
        try:
            prior = {int(c): float(v) for c, v in self.class_depth_m}
        except (TypeError, ValueError) as exc:
            raise FusionInputError(
                "DepthLiftConfig.class_depth_m: expected ((class_id, extent_m), ...), got "
                f"{self.class_depth_m!r}"
            ) from exc
        if any(not (math.isfinite(v) and v > 0) for v in prior.values()):
            raise FusionInputError(
                f"DepthLiftConfig.class_depth_m: expected extents > 0, got {self.class_depth_m!r}"
            )
        if not 0.0 < self.min_depth_m < self.max_depth_m:
            raise FusionInputError(
                f"DepthLiftConfig: expected 0 < min_depth_m < max_depth_m, got "
                f"{self.min_depth_m}, {self.max_depth_m}"
            )
        if not 0.0 < self.center_fraction <= 1.0:
            raise FusionInputError(
                f"DepthLiftConfig.center_fraction: expected (0, 1], got {self.center_fraction}"
            )
        if not 0.0 <= self.percentile <= 100.0:
            raise FusionInputError(
                f"DepthLiftConfig.percentile: expected [0, 100], got {self.percentile}"
            )
        if self.min_valid_pixels < 1 or self.max_pixels < 16:
            raise FusionInputError(
                "DepthLiftConfig: expected min_valid_pixels >= 1 and max_pixels >= 16, got "
                f"{self.min_valid_pixels}, {self.max_pixels}"
            )


@dataclass
class DepthLiftStats:
    """Counters over the lifter's lifetime."""

    frames: int = 0
    detections: int = 0
    lifted: int = 0
    no_depth: int = 0
    invalid_box: int = 0
    mask_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class LiftResult:
    """Objects lifted from one frame.

    Attributes:
        objects: 3D boxes in the camera optical frame.
        det_index: (N,) intp row of the input `Detections` each object came from.
        no_depth: detections dropped for lack of valid depth in this frame.
        invalid_box: detections dropped for a non-finite or empty box.
    """

    objects: Objects3D
    det_index: np.ndarray = field(repr=False)
    no_depth: int = 0
    invalid_box: int = 0


def depth_to_metres(depth: np.ndarray, depth_scale: float | None = None) -> np.ndarray:
    """Depth image as float32 metres. `depth_scale` multiplies the stored
    values; None picks the REP-118 convention from the dtype (uint16: mm ->
    0.001, float32/64: metres -> 1.0)."""
    if not isinstance(depth, np.ndarray):
        raise DepthImageError(f"depth: expected numpy.ndarray, got {type(depth).__name__}")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise DepthImageError(f"depth: expected a (H, W) image, got shape {depth.shape}")
    if depth_scale is None:
        if depth.dtype == np.uint16:
            depth_scale = 0.001
        elif depth.dtype in (np.float32, np.float64):
            depth_scale = 1.0
        else:
            raise DepthImageError(
                f"depth: expected uint16 (mm) or float32 (m), got {depth.dtype.name}; "
                "pass depth_scale for other encodings"
            )
    if not (math.isfinite(depth_scale) and depth_scale > 0):
        raise DepthImageError(f"depth_scale: expected a finite value > 0, got {depth_scale}")
    out = depth.astype(np.float32, copy=depth.dtype != np.float32)
    if depth_scale != 1.0:
        out = out * np.float32(depth_scale)
    return out


class DepthLifter:
    """Lifts the detections of one camera with its registered depth image."""

    def __init__(self, camera: CameraModel, config: DepthLiftConfig | None = None) -> None:
        if not isinstance(camera, CameraModel):
            raise TypeError(f"camera: expected CameraModel, got {type(camera).__name__}")
        if config is not None and not isinstance(config, DepthLiftConfig):
            raise TypeError(f"config: expected DepthLiftConfig, got {type(config).__name__}")
        self.camera = camera
        self.config = config if config is not None else DepthLiftConfig()
        self.stats = DepthLiftStats()

    def lift(
        self,
        det: Detections,
        depth: np.ndarray,
        depth_scale: float | None = None,
        *,
        T_target_from_camera: np.ndarray | None = None,
        target_frame: str = "",
    ) -> LiftResult:
        """3D boxes for the detections that have valid depth (from the mask
        where a detection has one, else from the box; see the module doc).

        `depth` must be registered to the camera (same size as the camera
        model); see `depth_to_metres` for `depth_scale`. With
        `T_target_from_camera` (4x4, camera optical frame -> a z-up
        `target_frame` such as base_link) the objects come out in that frame.
        With `config.amodal` each box is completed behind its visible surface
        in that frame (`amodal.complete_box`; its heading from the spread of
        the object's pixels) when it is z-up (the camera's up within 45
        degrees of its +z); otherwise, or without a target frame, in the
        forward-left-up frame of a level camera, and then expressed in the
        target (or optical) frame as `Objects3D.transformed` does.
        """
        if not isinstance(det, Detections):
            raise TypeError(f"det: expected Detections, got {type(det).__name__}")
        cam = self.camera
        if not isinstance(depth, np.ndarray):
            raise DepthImageError(f"depth: expected numpy.ndarray, got {type(depth).__name__}")
        if depth.shape[:2] != (cam.height, cam.width):
            raise DepthImageError(
                f"depth image: expected (height, width) = {(cam.height, cam.width)} "
                f"of the camera model, got {depth.shape[:2]}"
            )
        if det.image_size not in ((0, 0), cam.size):
            raise FusionInputError(
                f"detections: expected image_size {cam.size} of the camera model, "
                f"got {det.image_size}"
            )
        z_img = depth_to_metres(depth, depth_scale)
        cfg = self.config
        frame = det.frame_id or cam.frame_id
        amodal = cfg.amodal
        if T_target_from_camera is not None:
            t_out = np.asarray(T_target_from_camera, np.float64)
            if t_out.shape != (4, 4) or not np.isfinite(t_out).all():
                raise FusionInputError(
                    f"T_target_from_camera: expected a finite 4x4 matrix, got shape {t_out.shape}"
                )
        else:
            t_out = None
        # amodal boxes are fitted in a z-up frame: the target's when the
        # camera's up (optical -y) is within 45 degrees of its +z, else a level
        # camera's forward-left-up frame at the camera
        t_fit = None
        if amodal is not None:
            if t_out is not None and float(-t_out[2, 1]) >= math.sqrt(0.5):
                t_fit = t_out
            else:
                t_fit = np.eye(4)
                t_fit[:3, :3] = OPTICAL_FROM_FLU.T
        n = len(det)
        centers, sizes, yaws, covs, index = [], [], [], [], []
        no_depth = invalid = mask_rows = 0
        boxes = det.xyxy.astype(np.float64)
        w, h = cam.width, cam.height
        depth_prior = {int(c): float(v) for c, v in cfg.class_depth_m}
        size_prior = amodal.prior_table() if amodal is not None else {}
        masks = det.masks
        for i in range(n):
            b = boxes[i]
            if not np.isfinite(b).all():
                invalid += 1
                continue
            x1, y1 = max(math.floor(b[0]), 0), max(math.floor(b[1]), 0)
            x2, y2 = min(math.ceil(b[2]), w), min(math.ceil(b[3]), h)
            if x2 - x1 < 1 or y2 - y1 < 1:
                invalid += 1
                continue
            from_mask = masks is not None and self._mask_usable(masks, i)
            if from_mask:
                assert masks is not None
                found = self._from_mask(masks, i, z_img)
                mask_rows += 1
            else:
                prior_lwh = size_prior.get(int(det.class_ids[i]))
                found = self._from_box(
                    b,
                    (x1, y1, x2, y2),
                    z_img,
                    want_points=amodal is not None,
                    # an object seen at an angle spans up to its diagonal in depth
                    depth_span=0.0 if prior_lwh is None else float(np.hypot(*prior_lwh[:2])),
                )
            if found is None:
                no_depth += 1
                continue
            z_front, z_back, lateral, pts = found
            if amodal is not None and t_fit is not None and pts is not None and len(pts):
                cut = border_normal(cam, b, t_fit[:3, :3])
                if not from_mask:  # a mask holds the instance's pixels only
                    pts = pts[_front_component(pts, z_front + 2.0 * cfg.front_margin_m, t_fit)]
                center, size, yaw, cov = self._amodal_row(
                    pts, t_fit, size_prior.get(int(det.class_ids[i])), cut, b[1] > 1.0
                )
                yaws.append(yaw)
            else:
                size = np.array(
                    [lateral[1] - lateral[0], lateral[3] - lateral[2], z_back - z_front]
                )
                size[0] = max(size[0], z_front / cam.fx)  # at least one pixel
                size[1] = max(size[1], z_front / cam.fy)
                prior = depth_prior.get(int(det.class_ids[i]))
                size[2] = max(size[2], min(size[0], size[1]) if prior is None else prior)
                center = np.array(
                    [
                        0.5 * (lateral[0] + lateral[1]),
                        0.5 * (lateral[2] + lateral[3]),
                        z_front + 0.5 * size[2],
                    ]
                )
                sz = cfg.depth_noise_a + cfg.depth_noise_b * center[2] ** 2 + 0.25 * size[2]
                sx = 0.02 + cfg.lateral_noise * size[0]
                sy = 0.02 + cfg.lateral_noise * size[1]
                cov = np.diag([sx * sx, sy * sy, sz * sz])
                if amodal is not None and t_fit is not None:
                    # no points (cannot happen with valid depth): the camera
                    # box, moved into the fitting frame
                    one = Objects3D.from_arrays(center, size, covariances=cov).transformed(
                        t_fit, ""
                    )
                    center, size, cov = one.centers[0], one.sizes[0], one.covariances[0]
                    yaws.append(float(one.yaws[0]))
            centers.append(center)
            sizes.append(size)
            covs.append(cov)
            index.append(i)
        st = self.stats
        st.frames += 1
        st.detections += n
        st.lifted += len(index)
        st.no_depth += no_depth
        st.invalid_box += invalid
        st.mask_rows += mask_rows
        if no_depth or invalid:
            _LOG.debug(
                "depth lift: %d of %d detections without valid depth, %d invalid boxes",
                no_depth,
                n,
                invalid,
            )
        idx = np.asarray(index, np.intp)
        fit_frame = target_frame if (t_fit is not None and t_fit is t_out) else frame
        if not index:
            objects = Objects3D.empty(stamp_ns=det.stamp_ns, frame_id=fit_frame)
        else:
            objects = Objects3D.from_arrays(
                np.asarray(centers),
                np.asarray(sizes),
                np.asarray(yaws) if amodal is not None else None,
                covariances=np.asarray(covs),
                scores=det.scores[idx],
                class_ids=det.class_ids[idx],
                track_ids=det.track_ids[idx],
                stamp_ns=det.stamp_ns,
                frame_id=fit_frame,
            )
        if t_fit is not None and t_fit is not t_out:  # from the level frame
            if t_out is None:
                objects = objects.transformed(np.linalg.inv(t_fit), frame)
            else:
                objects = objects.transformed(t_out @ np.linalg.inv(t_fit), target_frame)
        elif t_fit is None and t_out is not None:
            objects = objects.transformed(t_out, target_frame)
        return LiftResult(objects, idx, no_depth, invalid)

    def _amodal_row(
        self,
        pts_cam: np.ndarray,
        t_fit: np.ndarray,
        prior: np.ndarray | None,
        cut: np.ndarray | None,
        grow_down: bool,
    ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """Centre, size, yaw and centre covariance (all in the z-up fitting
        frame) of one object from its pixels' camera-frame points."""
        cfg = self.config
        assert cfg.amodal is not None
        rot, trans = t_fit[:3, :3], t_fit[:3, 3]
        pts = pts_cam @ rot.T + trans
        box = complete_box(
            pts,
            trans,
            prior,
            cfg.amodal,
            extent_percentiles=cfg.extent_percentiles,
            cut=cut,
            grow_down=grow_down,  # unless the box reaches the top of the image
        )
        # covariance: depth noise and a share of the completed extent along the
        # (horizontal) view, the lateral model across it and vertically
        view = box.center[:2] - trans[:2]
        rng = float(np.linalg.norm(view))
        v = view / rng if rng > 1e-9 else np.array([1.0, 0.0])
        c, s = math.cos(box.yaw), math.sin(box.yaw)
        along_l, along_w = abs(c * v[0] + s * v[1]), abs(-s * v[0] + c * v[1])
        ext_view = box.size[0] * along_l + box.size[1] * along_w
        ext_across = box.size[0] * along_w + box.size[1] * along_l
        s_view = cfg.depth_noise_a + cfg.depth_noise_b * rng**2 + 0.1 * ext_view
        s_across = 0.02 + cfg.lateral_noise * ext_across
        s_up = 0.02 + cfg.lateral_noise * box.size[2]
        basis = np.array([[v[0], -v[1], 0.0], [v[1], v[0], 0.0], [0.0, 0.0, 1.0]])
        cov = basis @ np.diag([s_view**2, s_across**2, s_up**2]) @ basis.T
        return box.center, box.size, box.yaw, cov

    def _mask_usable(self, masks: InstanceMasks, i: int) -> bool:
        """A mask with at least `min_mask_pixels` pixels (a lost track's empty
        mask, or a sliver, falls back to the box)."""
        c = masks.crops[i]
        return bool(c.size >= self.config.min_mask_pixels) and (
            int(np.count_nonzero(c)) >= self.config.min_mask_pixels
        )

    def _depth_range(self, z: np.ndarray, n_region: int, step: int) -> tuple[float, float] | None:
        """(front, back) depth of the object from sampled depths `z` of its
        region (`n_region` samples, every `step`-th pixel per axis); None
        without enough valid depth."""
        cfg = self.config
        ok = (z >= cfg.min_depth_m) & (z <= cfg.max_depth_m)  # NaN -> False
        n_ok = int(np.count_nonzero(ok))
        if n_ok < max(cfg.min_valid_pixels / (step * step), 1) or (
            n_ok < cfg.min_valid_fraction * n_region
        ):
            return None
        valid_z = z[ok]
        z_ref = float(np.percentile(valid_z, cfg.percentile))
        # the object's depth range: pixels near the reference (farther ones are
        # background seen past the object)
        fg = valid_z[
            (valid_z >= z_ref - cfg.front_margin_m) & (valid_z <= z_ref + cfg.max_object_depth_m)
        ]
        if fg.size == 0:
            # sparse depth: the interpolated reference fell in a gap wider
            # than an object (e.g. two pixels at 5 m and 50 m): no object
            return None
        lo_p, hi_p = cfg.extent_percentiles
        z_front, z_back = (float(v) for v in np.percentile(fg, (lo_p, hi_p)))
        return z_front, z_back

    def _from_box(
        self,
        b: np.ndarray,
        region: tuple[int, int, int, int],
        z_img: np.ndarray,
        want_points: bool = False,
        depth_span: float = 0.0,
    ) -> tuple[float, float, np.ndarray, np.ndarray | None] | None:
        """Depth range from the box's central region; lateral extent (x0, x1,
        y0, y1 in metres) from the box edges back-projected at the front depth
        (ground and background pixels inside the box do not matter there).
        With `want_points`, also the camera-frame points of the box's pixels
        (strided) within the object's depth range (at least `depth_span` deep
        from the front), for the amodal fit."""
        cfg, cam = self.config, self.camera
        x1, y1, x2, y2 = region
        bw, bh = x2 - x1, y2 - y1
        mx = 0.5 * (1.0 - cfg.center_fraction)
        cx1, cx2 = x1 + int(mx * bw), x2 - int(mx * bw)
        cy1, cy2 = y1 + int(mx * bh), y2 - int(mx * bh)
        cx2, cy2 = max(cx2, cx1 + 1), max(cy2, cy1 + 1)
        central = z_img[cy1:cy2, cx1:cx2]
        step = max(1, math.ceil(math.sqrt(central.size / cfg.max_pixels)))
        central = central[::step, ::step].ravel()
        rng = self._depth_range(central, central.size, step)
        if rng is None:
            return None
        z_front, z_back = rng
        w, h = cam.width, cam.height
        bx1, bx2 = max(b[0], -0.5), min(b[2], w - 0.5)
        by1, by2 = max(b[1], -0.5), min(b[3], h - 0.5)
        mu, mv = 0.5 * (bx1 + bx2), 0.5 * (by1 + by2)
        edges = cam.unproject(np.array([[bx1, mv], [bx2, mv], [mu, by1], [mu, by2]]), z_front)
        lateral = np.array([edges[0, 0], edges[1, 0], edges[2, 1], edges[3, 1]])
        pts = None
        if want_points:
            step = max(1, math.ceil(math.sqrt(bw * bh / cfg.max_pixels)))
            vs, us = np.mgrid[y1:y2:step, x1:x2:step]
            us, vs = us.ravel(), vs.ravel()
            z = z_img[vs, us]
            far = max(z_back, z_front + depth_span) + cfg.front_margin_m
            sel = (z >= z_front - cfg.front_margin_m) & (z <= far)
            pts = cam.unproject(
                np.stack((us[sel], vs[sel]), axis=1).astype(np.float64), z[sel].astype(np.float64)
            )
        return z_front, z_back, lateral, pts

    def _from_mask(
        self, masks: InstanceMasks, i: int, z_img: np.ndarray
    ) -> tuple[float, float, np.ndarray, np.ndarray | None] | None:
        """Depth range from the depths under the mask only (no background, no
        occluder: they are not the instance's pixels); lateral extent from
        the mask's pixels back-projected at their own depth (those within the
        object's depth range), robust percentiles as for the depth; those
        points too (for the amodal fit)."""
        cfg, cam = self.config, self.camera
        x0, y0, x1, y1 = (int(v) for v in masks.boxes[i])
        crop = masks.crops[i]
        # the mask may come from an image of another size than the depth: clip
        h, w = z_img.shape
        crop = crop[: max(min(y1, h) - y0, 0), : max(min(x1, w) - x0, 0)]
        step = max(1, math.ceil(math.sqrt(np.count_nonzero(crop) / cfg.max_pixels)))
        sub = crop[::step, ::step]
        ys, xs = np.nonzero(sub)
        if xs.size == 0:
            return None
        us, vs = xs * step + x0, ys * step + y0
        z = z_img[vs, us]
        rng = self._depth_range(z, z.size, step)
        if rng is None:
            return None
        z_front, z_back = rng
        sel = (z >= z_front - cfg.front_margin_m) & (z <= z_back + cfg.front_margin_m)
        if not sel.any():
            return None
        pts = cam.unproject(np.stack((us[sel], vs[sel]), axis=1).astype(np.float64), z[sel])
        lo_p, hi_p = cfg.extent_percentiles
        xlo, xhi = np.percentile(pts[:, 0], (lo_p, hi_p))
        ylo, yhi = np.percentile(pts[:, 1], (lo_p, hi_p))
        # a pixel is a footprint, not a point: half a pixel on each side
        half_x, half_y = 0.5 * z_front / cam.fx, 0.5 * z_front / cam.fy
        lateral = np.array([xlo - half_x, xhi + half_x, ylo - half_y, yhi + half_y])
        return z_front, z_back, lateral, pts


def _front_component(pts_cam: np.ndarray, z_front: float, t_fit: np.ndarray) -> np.ndarray:
    """(N,) bool: the box path's points on the ground-plane component (8-connected
    0.3 m cells of the z-up fitting frame) that holds most of the front surface
    (camera depth <= `z_front`): a neighbour inside the 2D box, within the
    depth range but apart on the ground, is another object. All points when
    there is one component."""
    import cv2

    n_pts = pts_cam.shape[0]
    if n_pts < 2:
        return np.ones(n_pts, bool)
    cell = 0.3
    xy = pts_cam @ t_fit[:2, :3].T
    lo = xy.min(axis=0)
    ij = np.floor((xy - lo) / cell).astype(np.int64)
    shape = ij.max(axis=0) + 1
    if shape[0] * shape[1] > 250_000:  # > 150 m across: not one object anyway
        return np.ones(n_pts, bool)
    grid = np.zeros((int(shape[0]), int(shape[1])), np.uint8)
    grid[ij[:, 0], ij[:, 1]] = 1
    n, labels = cv2.connectedComponents(grid, connectivity=8)
    if n <= 2:  # background + one component
        return np.ones(n_pts, bool)
    lab = labels[ij[:, 0], ij[:, 1]]
    front = pts_cam[:, 2] <= z_front
    votes = np.bincount(lab[front] if front.any() else lab, minlength=n)
    keep: np.ndarray = lab == int(np.argmax(votes))
    return keep
