"""Pinhole camera model with lens distortion, built from CameraInfo fields.

Pixels are those of the image as received (raw, distorted: what the detector
saw), so projection uses K and D like `cv2.projectPoints` and back-projection
undoes the distortion like `cv2.undistortPoints`. The equidistant model is the
one of `cv2.fisheye`. R and P (rectification) are kept for `rectified()`,
which returns the model of the rectified image (`image_rect` topics).

Everything is vectorised numpy over N points; no ROS imports. Built once per
CameraInfo change, so validation here is the place where a bad calibration
(all-zero K of an uncalibrated driver, unknown model, wrong D length) becomes a
typed error with a reason instead of NaN boxes later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.core.errors import PerceptionError

__all__ = ["DISTORTION_MODELS", "CalibrationError", "CameraModel"]

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
"""Supported `distortion_model` values (sensor_msgs/distortion_models.hpp names)."""

# Accepted D lengths per model. An empty D means "no distortion" (drivers of
# rectified or simulated cameras publish that).
_D_LEN = {
    "plumb_bob": (0, 4, 5),
    "rational_polynomial": (0, 8),
    "equidistant": (0, 4),
}
_D_FULL = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


class CalibrationError(PerceptionError, ValueError):
    """Camera calibration missing or invalid (zero K, unknown model, bad D)."""


def _matrix(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{name}: expected numbers, got {type(value).__name__}") from exc
    if a.size != shape[0] * shape[1]:
        raise CalibrationError(f"{name}: expected {shape[0] * shape[1]} values, got {a.size}")
    a = a.reshape(shape)
    if not np.isfinite(a).all():
        raise CalibrationError(f"{name}: expected finite values, got {a.ravel().tolist()}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class CameraModel:
    """Intrinsics of one camera (the raw image of a `sensor_msgs/CameraInfo`).

    Attributes:
        width, height: image size in pixels.
        K: (3, 3) intrinsic matrix of the raw image.
        D: distortion coefficients, zero-padded to the model's full length
            (plumb_bob 5: k1 k2 p1 p2 k3; rational_polynomial 8: k1 k2 p1 p2 k3
            k4 k5 k6; equidistant 4: k1 k2 k3 k4).
        R: (3, 3) rectification rotation.
        P: (3, 4) projection matrix of the rectified image.
        distortion_model: one of `DISTORTION_MODELS`.
        frame_id: optical frame of the camera (informational).

    Build with `CameraModel.create(...)` or `from_camera_info_fields(...)`,
    which convert and validate; the constructor validates too.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray
    R: np.ndarray
    P: np.ndarray
    distortion_model: str = "plumb_bob"
    frame_id: str = ""

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise CalibrationError(f"CameraModel.{name}: expected a positive int, got {v!r}")
            object.__setattr__(self, name, int(v))
        model = self.distortion_model
        if model not in DISTORTION_MODELS:
            raise CalibrationError(
                f"CameraModel.distortion_model: expected one of {DISTORTION_MODELS}, got {model!r}"
            )
        object.__setattr__(self, "K", _matrix("CameraModel.K", self.K, (3, 3)))
        object.__setattr__(self, "R", _matrix("CameraModel.R", self.R, (3, 3)))
        object.__setattr__(self, "P", _matrix("CameraModel.P", self.P, (3, 4)))
        k = self.K
        if not np.any(k):
            raise CalibrationError(
                "CameraModel.K: all zeros (camera not calibrated); expected fx, fy > 0"
            )
        if k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1.0 or k[1, 0] or k[2, 0] or k[2, 1]:
            raise CalibrationError(
                "CameraModel.K: expected [[fx,s,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0, "
                f"got {k.ravel().tolist()}"
            )
        d = np.asarray(self.D, dtype=np.float64).reshape(-1)
        if d.size not in _D_LEN[model]:
            raise CalibrationError(
                f"CameraModel.D: model {model!r} expects {' or '.join(map(str, _D_LEN[model]))} "
                f"coefficients, got {d.size}"
            )
        if not np.isfinite(d).all():
            raise CalibrationError(f"CameraModel.D: expected finite values, got {d.tolist()}")
        full = np.zeros(_D_FULL[model], np.float64)
        full[: d.size] = d
        full.setflags(write=False)
        object.__setattr__(self, "D", full)
        if not isinstance(self.frame_id, str):
            raise CalibrationError(
                f"CameraModel.frame_id: expected str, got {type(self.frame_id).__name__}"
            )

    # ------------------------------------------------------------- builders
    @classmethod
    def create(
        cls,
        width: int,
        height: int,
        K: Any,
        D: Any = (),
        *,
        R: Any | None = None,
        P: Any | None = None,
        distortion_model: str = "plumb_bob",
        frame_id: str = "",
    ) -> CameraModel:
        """Model from loose arrays; R defaults to identity and P to [K | 0]."""
        k = np.asarray(K, dtype=np.float64)
        r = np.eye(3) if R is None else R
        if P is None:
            p = np.zeros((3, 4))
            p[:, :3] = k.reshape(3, 3) if k.size == 9 else 0.0
        else:
            p = P
        return cls(
            width=width,
            height=height,
            K=k,
            D=np.asarray(D, dtype=np.float64),
            R=r,
            P=p,
            distortion_model=distortion_model,
            frame_id=frame_id,
        )

    @classmethod
    def from_camera_info_fields(
        cls,
        width: int,
        height: int,
        distortion_model: str,
        d: Sequence[float] | np.ndarray,
        k: Sequence[float] | np.ndarray,
        r: Sequence[float] | np.ndarray,
        p: Sequence[float] | np.ndarray,
        frame_id: str = "",
    ) -> CameraModel:
        """Model from the fields of a `sensor_msgs/CameraInfo` as plain values
        (msg.width, msg.height, msg.distortion_model, msg.d, msg.k, msg.r,
        msg.p, msg.header.frame_id). An all-zero R (some drivers) is taken as
        identity; an all-zero P as [K | 0]."""
        r_arr = np.asarray(r, dtype=np.float64)
        p_arr = np.asarray(p, dtype=np.float64)
        return cls.create(
            int(width),
            int(height),
            k,
            d,
            R=None if r_arr.size == 9 and not r_arr.any() else r_arr,
            P=None if p_arr.size == 12 and not p_arr.any() else p_arr,
            distortion_model=str(distortion_model),
            frame_id=frame_id,
        )

    def rectified(self) -> CameraModel:
        """Model of the rectified image: intrinsics P[:, :3], no distortion."""
        return CameraModel.create(
            self.width,
            self.height,
            self.P[:, :3],
            (),
            P=self.P,
            distortion_model="plumb_bob",
            frame_id=self.frame_id,
        )

    # ------------------------------------------------------------ properties
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.D))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the layout of `Detections.image_size`."""
        return (self.width, self.height)

    # ------------------------------------------------------------- distortion
    def distort_normalized(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the lens model to normalised coordinates (x/z, y/z)."""
        d = self.D
        if not self.has_distortion:
            return x, y
        if self.distortion_model == "equidistant":
            r = np.sqrt(x * x + y * y)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1.0 + t2 * (d[0] + t2 * (d[1] + t2 * (d[2] + t2 * d[3]))))
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(r > 1e-12, theta_d / np.where(r > 1e-12, r, 1.0), 1.0)
            return x * scale, y * scale
        k1, k2, p1, p2, k3 = d[:5]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        if self.distortion_model == "rational_polynomial":
            k4, k5, k6 = d[5:8]
            radial = radial / (1.0 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xy = x * y
        xd = x * radial + 2.0 * p1 * xy + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * xy
        return xd, yd

    def undistort_normalized(
        self, xd: np.ndarray, yd: np.ndarray, iterations: int = 20
    ) -> tuple[np.ndarray, np.ndarray]:
        """Invert `distort_normalized` (fixed-point iteration for the
        polynomial models, Newton on theta for equidistant, as OpenCV does)."""
        d = self.D
        if not self.has_distortion:
            return xd, yd
        if self.distortion_model == "equidistant":
            theta_d = np.sqrt(xd * xd + yd * yd)
            # cv2.fisheye clamps theta_d to pi/2 (rays beyond 90 degrees).
            theta_d = np.minimum(theta_d, np.pi / 2)
            theta = theta_d.copy()
            for _ in range(iterations):
                t2 = theta * theta
                t4 = t2 * t2
                t6 = t4 * t2
                t8 = t4 * t4
                f = theta * (1 + d[0] * t2 + d[1] * t4 + d[2] * t6 + d[3] * t8) - theta_d
                fp = 1 + 3 * d[0] * t2 + 5 * d[1] * t4 + 7 * d[2] * t6 + 9 * d[3] * t8
                theta = theta - f / fp
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(
                    theta_d > 1e-12, np.tan(theta) / np.where(theta_d > 1e-12, theta_d, 1.0), 1.0
                )
            return xd * scale, yd * scale
        k1, k2, p1, p2, k3 = d[:5]
        rational = self.distortion_model == "rational_polynomial"
        x = xd.copy()
        y = yd.copy()
        for _ in range(iterations):
            r2 = x * x + y * y
            icdist = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
            if rational:
                icdist = (1.0 + r2 * (d[5] + r2 * (d[6] + r2 * d[7]))) / icdist
            else:
                icdist = 1.0 / icdist
            xy = x * y
            dx = 2.0 * p1 * xy + p2 * (r2 + 2.0 * x * x)
            dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * xy
            x = (xd - dx) * icdist
            y = (yd - dy) * icdist
        return x, y

    # ---------------------------------------------------------- projection
    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """(N, 3) points in the optical frame -> (N, 2) float64 pixels.

        Points at or behind the camera (z <= 0) give NaN pixels.
        """
        p = np.asarray(points_cam)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"project: expected points of shape (N, 3), got {p.shape}")
        z = p[:, 2].astype(np.float64)
        front = z > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(front, 1.0 / np.where(front, z, 1.0), np.nan)
        x = p[:, 0] * inv
        y = p[:, 1] * inv
        xd, yd = self.distort_normalized(x, y)
        k = self.K
        out = np.empty((p.shape[0], 2), np.float64)
        out[:, 0] = k[0, 0] * xd + k[0, 1] * yd + k[0, 2]
        out[:, 1] = k[1, 1] * yd + k[1, 2]
        return out

    def normalized_rays(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) pixels -> (N, 2) undistorted normalised coordinates (x/z, y/z)."""
        uv = np.asarray(pixels, dtype=np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise ValueError(f"pixels: expected shape (N, 2), got {uv.shape}")
        k = self.K
        yd = (uv[:, 1] - k[1, 2]) / k[1, 1]
        xd = (uv[:, 0] - k[0, 2] - k[0, 1] * yd) / k[0, 0]
        x, y = self.undistort_normalized(xd, yd)
        return np.stack((x, y), axis=1)

    def unproject(self, pixels: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
        """(N, 2) pixels and (N,) depths (z along the optical axis, the value
        a registered depth image holds) -> (N, 3) float64 points."""
        xy = self.normalized_rays(pixels)
        z = np.broadcast_to(np.asarray(depth, dtype=np.float64), (xy.shape[0],))
        out = np.empty((xy.shape[0], 3), np.float64)
        out[:, 0] = xy[:, 0] * z
        out[:, 1] = xy[:, 1] * z
        out[:, 2] = z
        return out

    def in_image(self, pixels: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(N,) bool: pixels inside [0, width) x [0, height), shrunk by
        `margin` pixels; NaN pixels are outside."""
        uv = np.asarray(pixels)
        return (
            (uv[:, 0] >= margin)
            & (uv[:, 0] < self.width - margin)
            & (uv[:, 1] >= margin)
            & (uv[:, 1] < self.height - margin)
        )

    def fov_bounds(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) of normalised coordinates seen by the image
        (from the undistorted border pixels): a cheap crop before projecting."""
        w, h = self.width, self.height
        t = np.linspace(0.0, 1.0, 33)
        border = np.concatenate(
            (
                np.stack((t * w, np.zeros_like(t)), 1),
                np.stack((t * w, np.full_like(t, h)), 1),
                np.stack((np.zeros_like(t), t * h), 1),
                np.stack((np.full_like(t, w), t * h), 1),
            )
        )
        xy = self.normalized_rays(border)
        xy = xy[np.isfinite(xy).all(axis=1)]
        return (
            float(xy[:, 0].min()),
            float(xy[:, 0].max()),
            float(xy[:, 1].min()),
            float(xy[:, 1].max()),
        )

    def __repr__(self) -> str:
        return (
            f"CameraModel({self.width}x{self.height}, {self.distortion_model}, "
            f"fx={self.fx:.1f}, fy={self.fy:.1f}, cx={self.cx:.1f}, cy={self.cy:.1f}, "
            f"frame_id={self.frame_id!r})"
        )
