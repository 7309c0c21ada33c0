"""Constant-velocity Kalman filter over real time steps, batched over tracks.

The state of a track is the box centre and size (cx, cy, w, h) and their rates
of change in pixels per second. With the usual diagonal noise models the full
8-dimensional filter splits exactly into four independent 2-state filters
(value, rate) per coordinate, so the covariance is kept as three (T, 4) arrays
(p_xx, p_xv, p_vv) and every step is element-wise numpy over all tracks: no
per-track Python and no small matrix products.

Process noise is a random walk on value and rate whose variance grows linearly
with the elapsed time dt (seconds), so predicting over one long interval or
several short ones gives the same uncertainty: frame drops and variable frame
rates need no special case. Noise is scaled by the box size (w for x and w, h
for y and h), as in SORT/ByteTrack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KalmanState", "kf_init", "kf_predict", "kf_update", "noise_scale"]


@dataclass
class KalmanState:
    """Filter state of T tracks (all arrays (T, 4), float64)."""

    x: np.ndarray
    v: np.ndarray
    pxx: np.ndarray
    pxv: np.ndarray
    pvv: np.ndarray

    @classmethod
    def empty(cls) -> KalmanState:
        z = np.zeros((0, 4), np.float64)
        return cls(z, z.copy(), z.copy(), z.copy(), z.copy())

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray) -> KalmanState:
        """Rows selected by a mask or index array (copies)."""
        return KalmanState(
            self.x[index], self.v[index], self.pxx[index], self.pxv[index], self.pvv[index]
        )

    def put(self, index: np.ndarray, other: KalmanState) -> None:
        """Overwrite rows `index` with `other`."""
        self.x[index] = other.x
        self.v[index] = other.v
        self.pxx[index] = other.pxx
        self.pxv[index] = other.pxv
        self.pvv[index] = other.pvv

    def append(self, other: KalmanState) -> KalmanState:
        return KalmanState(
            np.concatenate((self.x, other.x)),
            np.concatenate((self.v, other.v)),
            np.concatenate((self.pxx, other.pxx)),
            np.concatenate((self.pxv, other.pxv)),
            np.concatenate((self.pvv, other.pvv)),
        )

    def xyxy(self) -> np.ndarray:
        """(T, 4) boxes x1, y1, x2, y2 of the current state."""
        half = self.x[:, 2:] * 0.5
        return np.concatenate((self.x[:, :2] - half, self.x[:, :2] + half), axis=1)


def noise_scale(cxcywh: np.ndarray) -> np.ndarray:
    """(T, 4) size used to scale the noise of (cx, cy, w, h): (w, h, w, h)."""
    wh = np.maximum(cxcywh[:, 2:], 1.0)
    return np.concatenate((wh, wh), axis=1)


def kf_init(z: np.ndarray, init_pos_noise: float, init_vel_noise: float) -> KalmanState:
    """New tracks at measured boxes z (T, 4 as cx, cy, w, h), at rest."""
    z = np.asarray(z, np.float64)
    s2 = noise_scale(z) ** 2
    return KalmanState(
        x=z.copy(),
        v=np.zeros_like(z),
        pxx=(init_pos_noise * init_pos_noise) * s2,
        pxv=np.zeros_like(z),
        pvv=(init_vel_noise * init_vel_noise) * s2,
    )


def kf_predict(st: KalmanState, dt: float | np.ndarray, pos_noise: float, vel_noise: float) -> None:
    """Advance all tracks by dt seconds in place (dt scalar or (T, 1))."""
    s2 = noise_scale(st.x) ** 2
    st.x += st.v * dt
    dt2 = dt * dt
    st.pxx += 2.0 * dt * st.pxv + dt2 * st.pvv + (pos_noise * pos_noise * dt) * s2
    st.pxv += dt * st.pvv
    st.pvv += (vel_noise * vel_noise * dt) * s2
    np.maximum(st.x[:, 2:], 1e-3, out=st.x[:, 2:])


def kf_update(
    st: KalmanState, z: np.ndarray, meas_noise: float, active: np.ndarray | None = None
) -> None:
    """Correct all tracks of `st` with measurements z (T, 4 as cx, cy, w, h), in
    place; rows where `active` (T, 1) is False are left unchanged."""
    r = (meas_noise * meas_noise) * noise_scale(st.x) ** 2
    if active is not None:
        r = np.where(active, r, np.inf)  # infinite noise: zero gain
    s = st.pxx + r
    kx = st.pxx / s
    kv = st.pxv / s
    y = z - st.x
    st.x += kx * y
    st.v += kv * y
    pxv = st.pxv
    st.pvv -= kv * pxv
    st.pxv = (1.0 - kx) * pxv
    st.pxx = (1.0 - kx) * st.pxx
