"""Amodal boxes: the whole object from the part of its surface a sensor sees.

A camera's depth image or a LiDAR sees the faces of an object that turn
towards the sensor, never its far side. A box fitted to those points is the
visible surface: a car seen from behind comes out as a thin slab at its rear
bumper, its centre ~2 m short and biased towards the sensor. `complete_box`
completes such a fit with a per-class size prior:

1. the footprint of the points (ground-plane x, y; the bottom
   `ground_band` of the height is left out: road pixels seen beside an object
   sit there) gives the heading (L-shape fit, `fit_yaw_box`, unless the
   caller has one) and the observed extent along each box axis (percentiles);
2. the prior's length and width are assigned to the two axes so that an
   observed extent fits its prior where the sensor can see that extent (a
   flat face seen head-on, 1.8 m wide, is a car's rear, not a partly seen
   side; an extent much larger than a prior cannot be that prior); a weak
   preference for a length along the frame's x (the ego's lane) settles
   views that fit both ways;
3. each extent is merged with its prior: a face seen edge-on says nothing
   about its extent, a face seen square-on (almost) all of it, so the weight
   of the observation is `observed_weight` times how square-on the face that
   spans that axis is seen, faded out for an extent far below the prior (a
   partial view, not a small object); never below the observed extent;
4. what the merge adds to an extent goes behind the visible surface, away
   from the sensor along the axis (symmetric for an axis across the view),
   towards the image border along an axis the border cuts; extra height
   goes on top for a LiDAR (the box already reaches the ground plane), below
   for a camera (nearer objects hide bottoms).

Without a prior for the class the hidden extent is the smaller of the larger
visible horizontal extent and the height (the old heuristic). Everything here
is in a z-up frame (base_link, a LiDAR frame); pure numpy plus the OpenCV
hull of `fit_yaw_box`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from perception.core.camera import CameraModel
from perception.core.fusion.errors import FusionInputError

__all__ = [
    "DEFAULT_SIZE_PRIORS",
    "AmodalBox",
    "AmodalConfig",
    "border_normal",
    "complete_box",
    "priors_by_class_id",
]

DEFAULT_SIZE_PRIORS: tuple[tuple[str, float, float, float], ...] = (
    ("car", 4.4, 1.8, 1.55),
    ("truck", 6.5, 2.3, 2.6),
    ("bus", 11.0, 2.55, 3.2),
    ("pedestrian", 0.6, 0.6, 1.75),
    ("person", 0.6, 0.6, 1.75),
    ("cyclist", 1.75, 0.6, 1.7),
    ("bicycle", 1.75, 0.6, 1.7),
    ("motorcycle", 2.1, 0.8, 1.5),
)
"""(class name, length, width, height) in metres. Cars: the generated
scenario draws 3.9-4.9 x 1.7-1.95 x 1.4-1.7 m (perception/sim/scenario.py), in
line with KITTI (3.9 x 1.6 x 1.5) and nuScenes (4.6 x 1.95 x 1.7) means;
pedestrians 0.4-0.55 x 0.5-0.65 x 1.55-1.9 there, 0.6 x 0.6 x 1.75 a common
round figure; cyclists 1.75 x 0.6 x 1.7 there and in KITTI. Truck, bus and
motorcycle: typical values for COCO-class detectors."""


def priors_by_class_id(
    class_names: Sequence[str], priors: Sequence[tuple[str, float, float, float]]
) -> dict[int, tuple[float, float, float]]:
    """Class id -> (length, width, height) for the classes named in `priors`;
    with no class names, a prior named "3" is class id 3 (numeric ids)."""
    table: dict[str, tuple[float, float, float]] = {}
    for row in priors:
        if len(row) != 4:
            raise FusionInputError(f"size prior: expected (name, l, w, h), got {row!r}")
        name, *lwh = row
        vals = tuple(float(v) for v in lwh)
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise FusionInputError(f"size prior {name!r}: expected sizes > 0, got {vals}")
        table[str(name)] = (vals[0], vals[1], vals[2])
    names = list(class_names) if class_names else []
    out: dict[int, tuple[float, float, float]] = {}
    if names:
        for i, n in enumerate(names):
            if n in table:
                out[i] = table[n]
    else:
        for n, v in table.items():
            if n.isdigit():
                out[int(n)] = v
    return out


@dataclass(frozen=True)
class AmodalConfig:
    """Parameters of `complete_box`.

    Attributes:
        priors: ((class_id, length, width, height), ...) in metres
            (see `priors_by_class_id` to build it from class names).
        observed_weight: weight of an observed extent below its prior when
            the face spanning it is seen square-on (the rest goes to the
            prior: partial occlusion and the image border shorten extents).
        height_weight: the same for the height (well observed by both sensors).
        ground_band: bottom fraction of the height left out of the footprint.
        min_points: fewer footprint points -> all points are used.
        max_points: points used per object (strided subsample above it).
        overshoot_tolerance: an observed extent up to this factor of a prior
            is still compatible with it when assigning length and width.
        partial_ratio: an observed extent at most this fraction of its prior
            is taken as a partial view (the prior alone); between it and the
            prior the observation's weight rises linearly.
        forward_prior: cost (in m^2 of extent misfit) of a length axis across
            the frame's x rather than along it: breaks the tie for a single
            face that fits a length and a width (e.g. cut by the image
            border); road users mostly move along the ego's lane. 0 = none.
    """

    priors: tuple[tuple[int, float, float, float], ...] = ()
    observed_weight: float = 0.7
    height_weight: float = 0.85
    ground_band: float = 0.2
    min_points: int = 5
    max_points: int = 1024
    overshoot_tolerance: float = 1.1
    partial_ratio: float = 0.6
    forward_prior: float = 0.3

    def __post_init__(self) -> None:
        try:
            table = {int(r[0]): tuple(float(v) for v in r[1:]) for r in self.priors}
            ok = all(len(v) == 3 for v in table.values())
        except (TypeError, ValueError, IndexError) as exc:
            raise FusionInputError(
                f"AmodalConfig.priors: expected ((class_id, l, w, h), ...), got {self.priors!r}"
            ) from exc
        if not ok or any(not (math.isfinite(x) and x > 0) for v in table.values() for x in v):
            raise FusionInputError(
                f"AmodalConfig.priors: expected ((class_id, l, w, h > 0), ...), got {self.priors!r}"
            )
        for name in ("observed_weight", "height_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FusionInputError(
                    f"AmodalConfig.{name}: expected [0, 1], got {getattr(self, name)}"
                )
        if self.max_points < 16:
            raise FusionInputError(
                f"AmodalConfig.max_points: expected >= 16, got {self.max_points}"
            )
        if not 0.0 <= self.partial_ratio < 1.0:
            raise FusionInputError(
                f"AmodalConfig.partial_ratio: expected [0, 1), got {self.partial_ratio}"
            )
        if not 0.0 <= self.ground_band < 1.0 or self.overshoot_tolerance < 1.0:
            raise FusionInputError(
                "AmodalConfig: expected ground_band in [0, 1) and overshoot_tolerance >= 1, got "
                f"{self.ground_band}, {self.overshoot_tolerance}"
            )

    def prior_table(self) -> dict[int, np.ndarray]:
        """Class id -> (length, width, height) array."""
        return {int(r[0]): np.array(r[1:], np.float64) for r in self.priors}

    @classmethod
    def from_names(
        cls,
        class_names: Sequence[str],
        priors: Sequence[tuple[str, float, float, float]] = DEFAULT_SIZE_PRIORS,
        **kwargs: float,
    ) -> AmodalConfig:
        """Config with the priors of `priors` (by name) for `class_names`."""
        table: Mapping[int, tuple[float, float, float]] = priors_by_class_id(class_names, priors)
        rows = tuple((c, *v) for c, v in sorted(table.items()))
        return cls(priors=rows, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AmodalBox:
    """A completed yaw-only box (z-up frame).

    Attributes:
        center: (3,) box centre.
        size: (3,) length along `yaw`, width, height.
        yaw: heading (rad) in (-pi/2, pi/2].
        observed: (3,) extents the points span along the same axes.
        hidden: extent added behind the visible surface along the view (m).
    """

    center: np.ndarray
    size: np.ndarray
    yaw: float
    observed: np.ndarray
    hidden: float


def border_normal(
    camera: CameraModel, xyxy: np.ndarray, rot_from_camera: np.ndarray, margin_px: float = 1.0
) -> np.ndarray | None:
    """For a 2D box touching the left or right image border: the outward
    normal, horizontal (x, y) in the z-up frame (`rot_from_camera`: optical
    -> that frame), of the plane the border's pixel rays span; None for a
    box inside the image."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    if x1 <= margin_px - 0.5:
        u, side = -0.5, -1.0
    elif x2 >= camera.width - 0.5 - margin_px:
        u, side = camera.width - 0.5, 1.0
    else:
        return None
    ray = camera.unproject(np.array([[u, 0.5 * (y1 + y2)]]), 1.0)[0]
    r = np.asarray(rot_from_camera, np.float64) @ ray
    n = np.array([-r[1], r[0]])
    outward = side * np.asarray(rot_from_camera, np.float64)[:2, 0]  # the camera's x
    if float(n @ outward) < 0:
        n = -n
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 1e-9 else None


def complete_box(
    points: np.ndarray,
    viewpoint: np.ndarray,
    prior: np.ndarray | None,
    config: AmodalConfig,
    *,
    z_range: tuple[float, float] | None = None,
    yaw: float | None = None,
    extent_percentiles: tuple[float, float] = (0.0, 100.0),
    cut: np.ndarray | None = None,
    grow_down: bool = False,
) -> AmodalBox:
    """The whole box of an object from its visible surface `points` (N, 3)
    seen from `viewpoint` (3,), both in a z-up frame (see the module doc).

    `prior`: (length, width, height) of the class, or None. `z_range`:
    (bottom, top) when the caller knows them better than the points (LiDAR:
    down to the ground plane); `yaw`: the heading when already fitted.
    `cut`: for an object cut by the image border, the outward horizontal
    normal (x, y) of that border's viewing plane (`border_normal`): an
    extent along a box axis pointing out of the image (within ~73 degrees of
    it) is only a lower bound (the prior's weight is 1; it does not vote on
    which axis is the length) and what is added to it goes outwards unless
    the near face across that axis is seen.
    Height added to the observed one goes on top, or below with `grow_down`
    (a camera: nearer objects hide bottoms, the top is seen).
    """
    from perception.core.fusion.lidar import fit_yaw_box  # shares the L-shape fit

    p = np.asarray(points, np.float64).reshape(-1, 3)
    if p.shape[0] < 1:
        raise ValueError("complete_box: expected at least one point")
    if p.shape[0] > config.max_points:  # bounded work per object (strided)
        p = p[np.linspace(0, p.shape[0] - 1, config.max_points).astype(np.intp)]
    lo_p, hi_p = extent_percentiles
    if z_range is None:
        zb, zt = (float(v) for v in np.percentile(p[:, 2], (lo_p, hi_p)))
    else:
        zb, zt = float(z_range[0]), float(z_range[1])
    foot = p
    if config.ground_band > 0:
        keep = p[:, 2] >= zb + config.ground_band * (zt - zb)
        if int(np.count_nonzero(keep)) >= config.min_points:
            foot = p[keep]
    if yaw is None:
        _, _, yaw = fit_yaw_box(foot)
    c, s = math.cos(yaw), math.sin(yaw)
    axes = np.array([[c, s], [-s, c]])  # rows: box x (length), box y (width)
    uv = foot[:, :2] @ axes.T
    lo = np.percentile(uv, lo_p, axis=0)
    hi = np.percentile(uv, hi_p, axis=0)
    obs = hi - lo
    mid = 0.5 * (lo + hi)
    mid_xy = mid @ axes
    view = mid_xy - np.asarray(viewpoint, np.float64)[:2]
    dist = float(np.linalg.norm(view))
    v = view / dist if dist > 1e-9 else np.array([1.0, 0.0])
    along = axes @ v  # cos(angle) between each box axis and the view
    # the extent along axis i is spanned by the face whose normal is the other
    # axis: seen square-on when the other axis points along the view
    vis = np.abs(along[::-1])
    height_obs = max(zt - zb, 0.0)
    # the image border may cut the object along a box axis that points out
    # of the image (the border's outward normal): that extent is a lower bound
    toward = np.zeros(2)
    if cut is not None:
        toward = axes @ np.asarray(cut, np.float64).reshape(-1)[:2]
    cut_axis = np.abs(toward) >= 0.3
    if prior is None:
        side = min(max(float(obs.max()), 1e-3), max(height_obs, 1e-3))
        pri = np.array([side, side])
        pri_h = height_obs
    else:
        pri_l, pri_w, pri_h = (float(x) for x in prior)
        tol = config.overshoot_tolerance

        # an extent the points barely span says nothing (its faces are not
        # seen); one along a cut axis is only a lower bound (no vote)
        spanned = obs >= 0.1 * min(pri_l, pri_w)
        vis_fit = np.where(spanned & ~cut_axis, vis, 0.0)

        def cost(pa: np.ndarray, length_axis: int) -> float:
            fit = float(np.sum(vis_fit * (obs - pa) ** 2))
            over = float(np.sum(np.maximum(obs - tol * pa, 0.0) ** 2))
            # lanes run along the ego's heading: a weak vote for a length
            # along the frame's x, for views that fit either way
            heading = abs(float(axes[length_axis, 1]))  # |sin| of its angle to x
            return fit + 10.0 * over + config.forward_prior * heading

        a = np.array([pri_l, pri_w])
        b = np.array([pri_w, pri_l])
        pri = a if cost(a, 0) <= cost(b, 1) else b
    # an extent well below its prior is a partial view (occlusion, grazing
    # angle), not a small object: the observation's weight fades out there
    ratio = obs / np.maximum(pri, 1e-3)
    plausible = np.clip((ratio - config.partial_ratio) / (1.0 - config.partial_ratio), 0.0, 1.0)
    w_obs = np.where(cut_axis, 0.0, config.observed_weight * vis * plausible)
    # where the extra extent goes along axis i: away from the sensor when the
    # near face across that axis is seen (the points span the other axis: a
    # car's rear seen from behind); else towards the image border when the
    # axis is cut by it, else away from the sensor only as far as the axis
    # points along the view (split evenly for an axis across it)
    seen = np.clip(2.0 * obs[::-1] / np.maximum(pri[::-1], 1e-3), 0.0, 1.0)
    fallback = np.where(cut_axis, np.sign(toward), np.clip(2.0 * along, -1.0, 1.0))
    g = seen * np.sign(along) + (1.0 - seen) * fallback
    size_xy = np.maximum(obs, w_obs * obs + (1.0 - w_obs) * pri)
    extra = size_xy - obs
    centre_uv = mid + 0.5 * extra * g
    ratio_h = height_obs / max(pri_h, 1e-3)
    wh = config.height_weight * min(
        max((ratio_h - config.partial_ratio) / (1.0 - config.partial_ratio), 0.0), 1.0
    )
    size_h = max(height_obs, wh * height_obs + (1.0 - wh) * pri_h)
    centre_z = zt - 0.5 * size_h if grow_down else zb + 0.5 * size_h
    centre = np.array([*(centre_uv @ axes), centre_z])
    size = np.array([size_xy[0], size_xy[1], size_h])
    floor = 1e-3
    size = np.maximum(size, floor)
    # keep the fit_yaw_box convention: length >= width, yaw in (-pi/2, pi/2]
    if size[1] > size[0]:
        size = size[[1, 0, 2]]
        obs = obs[::-1]
        extra = extra[::-1]
        along = along[::-1]
        yaw += math.pi / 2
    yaw = (yaw + math.pi / 2) % math.pi - math.pi / 2
    if yaw <= -math.pi / 2 + 1e-9:
        yaw += math.pi
    hidden = float(np.sum(extra * np.abs(along)))
    return AmodalBox(centre, size, float(yaw), np.array([obs[0], obs[1], height_obs]), hidden)
