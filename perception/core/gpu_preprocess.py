"""Letterbox / resize / channel order / scale with torch ops, on the GPU.

The CPU `Preprocessor` spends most of its time on the resize and the float
conversion of every pixel. On a GPU both are a few small kernels; what costs
is moving the frame: a 1080p BGR frame is 6.2 MB of uint8. So each frame
goes up once, as uint8, through a reused pinned (page-locked) host buffer
(one asynchronous DMA copy; `host_buffer` lets a decoder write the frame
there directly), and everything after runs on the device, writing straight
into the engine's input tensor (`TorchEngine.input_buffer`, the captured
CUDA graph's own input).

The geometry is the CPU preprocessor's own (`Preprocessor.plan`: resized
size, offsets, the batch rectangle), so boxes map back with the same
`ImageTransform`. The resize reproduces OpenCV's INTER_LINEAR on uint8 in
int32 arithmetic: its source coordinates (the column fraction zeroed at the
borders, the row fraction kept with the row index clamped), its 11-bit
fixed-point weights, and the rounding of its vectorised vertical pass
(`((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16) + 2 >> 2`, which is what
cv2.resize returns for nearly every pixel; its scalar formula differs by 1
at about 1 pixel in 8). Equal to cv2.resize bit for bit on OpenCV 5.0 here
(test/test_gpu_preprocess.py); the acceptance bound is 1 LSB. Float values
are then `pixel * scale + offset` in float32, as on the CPU (cast to float16
when the engine runs fp16).

Runs on the CPU too (device='cpu'), which is how it is tested without a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from perception.core.errors import InputImageError
from perception.core.preprocess import ImageTransform, Preprocessor, PreprocessSpec, check_image

__all__ = ["GpuPreprocessor", "linear_taps"]

COEF_BITS = 11
COEF_SCALE = 1 << COEF_BITS  # OpenCV's INTER_RESIZE_COEF_SCALE


def linear_taps(
    src: int, dst: int, clamp_fraction: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV INTER_LINEAR taps along one axis of `src` -> `dst` pixels:
    (first index, second index, first weight, second weight), weights in
    1/2048 summing to 2048, computed as resize.cpp does: the float32 source
    coordinate of the pixel centre, its floor, weights rounded half to even.
    Columns (`clamp_fraction=True`) outside the image take the border pixel
    with weight 2048; rows keep their fraction and only the indices are
    clamped (both taps then read the border row)."""
    inv_scale = dst / src  # what cv::resize derives from the sizes (double)
    scale = 1.0 / inv_scale
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    frac = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_fraction:
        low = s < 0
        frac[low] = 0.0
        s[low] = 0
        high = s >= src - 1
        frac[high] = 0.0
        s[high] = src - 1
    w0 = np.rint((np.float32(1.0) - frac) * np.float32(COEF_SCALE)).astype(np.int32)
    w1 = np.rint(frac * np.float32(COEF_SCALE)).astype(np.int32)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


@dataclass
class _Geometry:
    """Device tables for one (source size, resized size)."""

    idx: list[Any]  # four (rh * rw,) int64 flat indices into h * w: (y0,x0) (y0,x1) (y1,x0) (y1,x1)
    weights: list[Any]  # (rh * rw, 1) int32 per output pixel: wx0, wx1, wy0, wy1


class GpuPreprocessor:
    """`Preprocessor` on torch tensors: a list of uint8 HxWx3 images (numpy, or
    torch tensors already on the device) -> one (N, 3, H, W) tensor on the
    device in `dtype`, and the per-image `ImageTransform`s.

    Args:
        spec, input_hw, target_hw, rect, input_color: as `Preprocessor`.
        device: a torch device or its name ('cuda', 'cuda:1', 'cpu').
        dtype: the output's torch dtype (default float32; float16 for an
            fp16 engine).
        pinned: stage numpy frames in page-locked host memory (CUDA only).

    The returned tensor is reused (overwritten by the next call) unless
    `out` is given; with `out` (e.g. an engine's graph input) it is written
    in place. Not thread-safe, like `Preprocessor`.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        input_hw: tuple[int, int] | None = None,
        target_hw: tuple[int, int] | None = None,
        *,
        rect: bool = True,
        input_color: Literal["bgr", "rgb"] = "bgr",
        device: Any = "cuda",
        dtype: Any = None,
        pinned: bool = True,
    ) -> None:
        from perception.core.engines.torch_engine import import_torch

        torch = import_torch()
        self._torch = torch
        self.cpu = Preprocessor(spec, input_hw, target_hw, rect=rect, input_color=input_color)
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else torch.float32
        self.pinned = bool(pinned) and self.device.type == "cuda"
        a, b = spec.affine()
        order = [2, 1, 0] if self.cpu.swap else [0, 1, 2]
        self._order = torch.tensor(order, device=self.device)
        self._a = torch.tensor(a, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._b = torch.tensor(b, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._affine_identity = bool(np.all(a == 1.0) and np.all(b == 0.0))
        pad = np.float32(spec.pad_value) * a + b
        self._pad = [float(v) for v in pad.astype(np.float32)]
        self._geoms: dict[tuple[int, int, int, int], _Geometry] = {}
        self._host: dict[int, Any] = {}  # slot -> pinned (h, w, 3) uint8
        self._frames: dict[int, Any] = {}  # slot -> device (h, w, 3) uint8
        self._copied: dict[int, Any] = {}  # slot -> CUDA event after its last upload
        self._batch: Any = None
        self._slots: dict[tuple[int, int], tuple[int, int, int, int]] = {}

    # ------------------------------------------------------------ geometry
    def plan(self, sizes: Sequence[tuple[int, int]]) -> list[ImageTransform]:
        """The CPU preprocessor's transforms for images of these (w, h) sizes."""
        return self.cpu.plan(sizes)

    def _geometry(self, h: int, w: int, rh: int, rw: int) -> _Geometry:
        key = (h, w, rh, rw)
        g = self._geoms.get(key)
        if g is None:
            torch = self._torch
            y0, y1, wy0, wy1 = linear_taps(h, rh, clamp_fraction=False)
            x0, x1, wx0, wx1 = linear_taps(w, rw)
            idx = [
                torch.from_numpy((ys[:, None] * w + xs[None, :]).reshape(-1)).to(self.device)
                for ys in (y0, y1)
                for xs in (x0, x1)
            ]
            ones = np.ones((rh, rw), np.int32)
            per_pixel = [ones * wx0, ones * wx1, ones * wy0[:, None], ones * wy1[:, None]]
            weights = [torch.from_numpy(p.reshape(-1, 1)).to(self.device) for p in per_pixel]
            g = self._geoms[key] = _Geometry(idx, weights)
        return g

    # ------------------------------------------------------------ frames
    def host_buffer(self, index: int, height: int, width: int) -> np.ndarray:
        """A (height, width, 3) uint8 numpy view of the page-locked buffer of
        batch slot `index`: decode or copy a frame into it and pass it to
        `__call__` to skip the staging copy (plain memory on the CPU). The
        upload from it is asynchronous: write the next frame only after the
        call's results are back (or after `wait_uploads`)."""
        torch = self._torch
        buf = self._host.get(index)
        if buf is None or tuple(buf.shape) != (height, width, 3):
            buf = self._host[index] = torch.empty(
                (height, width, 3), dtype=torch.uint8, pin_memory=self.pinned
            )
        view: np.ndarray = buf.numpy()
        return view

    def upload(self, images: Sequence[Any]) -> list[Any]:
        """Each image as a (h, w, 3) uint8 tensor on the device: numpy frames
        go through the slot's pinned buffer (skipped when the frame already
        is that buffer) with one asynchronous copy; device tensors are used
        as they are."""
        torch = self._torch
        out = []
        for i, img in enumerate(images):
            if isinstance(img, torch.Tensor):
                if img.dtype != torch.uint8 or img.dim() != 3 or img.shape[2] != 3:
                    raise InputImageError(
                        f"image {i}: expected a (H, W, 3) uint8 tensor, got "
                        f"{tuple(img.shape)} {img.dtype}"
                    )
                out.append(img.to(self.device))
                continue
            check_image(img, i)
            h, w = img.shape[:2]
            if self.device.type != "cuda":
                out.append(torch.from_numpy(np.ascontiguousarray(img)))
                continue
            host = self.host_buffer(i, h, w)
            if not (host.ctypes.data == img.ctypes.data and img.flags.c_contiguous):
                done = self._copied.get(i)
                if done is not None:
                    done.synchronize()  # the previous upload has left the buffer
                np.copyto(host, img)
            dev = self._frames.get(i)
            if dev is None or tuple(dev.shape) != (h, w, 3):
                dev = self._frames[i] = torch.empty(
                    (h, w, 3), dtype=torch.uint8, device=self.device
                )
            dev.copy_(self._host[i], non_blocking=self.pinned)
            if self.pinned:
                event = self._copied.get(i) or torch.cuda.Event()
                event.record()
                self._copied[i] = event
            out.append(dev)
        return out

    def wait_uploads(self) -> None:
        """Block until every staged frame has reached the device."""
        for event in self._copied.values():
            event.synchronize()

    # ------------------------------------------------------------ resize
    def resize(self, frames: Any, rh: int, rw: int) -> Any:
        """(n, h, w, 3) uint8 -> (n, rh, rw, 3) uint8 as cv2.resize INTER_LINEAR."""
        torch = self._torch
        n, h, w = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
        if (h, w) == (rh, rw):
            return frames
        g = self._geometry(h, w, rh, rw)
        flat = frames.reshape(n, h * w, 3)
        wx0, wx1, wy0, wy1 = g.weights
        taps = [flat.index_select(1, i).to(torch.int32) for i in g.idx]
        # horizontal pass: exact ints (pixel * 2048 scale); vertical pass as
        # OpenCV's vectorised rows: 16-bit high products, then (+2) >> 2
        top = (taps[0] * wx0).add_(taps[1] * wx1).bitwise_right_shift_(4).mul_(wy0)
        low = (taps[2] * wx0).add_(taps[3] * wx1).bitwise_right_shift_(4).mul_(wy1)
        out = top.bitwise_right_shift_(16).add_(low.bitwise_right_shift_(16))
        out = out.add_(2).bitwise_right_shift_(2).clamp_(0, 255)
        return out.to(torch.uint8).reshape(n, rh, rw, 3)

    # ------------------------------------------------------------ batch
    def _buffer(self, n: int, bh: int, bw: int, out: Any) -> Any:
        torch = self._torch
        if out is not None:
            if tuple(out.shape) != (n, 3, bh, bw):
                raise InputImageError(
                    f"out: expected shape {(n, 3, bh, bw)}, got {tuple(out.shape)}"
                )
            return out
        if self._batch is None or tuple(self._batch.shape) != (n, 3, bh, bw):
            self._batch = torch.empty((n, 3, bh, bw), dtype=self.dtype, device=self.device)
        return self._batch

    def __call__(self, images: Sequence[Any], out: Any = None) -> tuple[Any, list[ImageTransform]]:
        """(batch (N, 3, H, W) on the device, per-image transforms)."""
        if len(images) == 0:
            raise InputImageError("images: expected at least one image, got an empty list")
        frames = self.upload(images)
        transforms = self.plan([(int(f.shape[1]), int(f.shape[0])) for f in frames])
        return self.letterbox(frames, transforms, out), transforms

    def letterbox(
        self, frames: Sequence[Any], transforms: Sequence[ImageTransform], out: Any = None
    ) -> Any:
        """Frames already on the device ((h, w, 3) uint8 tensors) into the batch
        tensor as `transforms` place them (device work only: no host copy and
        no synchronisation once a geometry was seen, so it can be captured in a
        CUDA graph together with the model)."""
        bw, bh = transforms[0].input_size
        batch = self._buffer(len(frames), bh, bw, out)
        # images of one size and placement are resized together
        groups: dict[tuple[int, int, int, int, int, int], list[int]] = {}
        for i, (f, tf) in enumerate(zip(frames, transforms, strict=True)):
            key = (int(f.shape[0]), int(f.shape[1]), *tf.resized_size, *tf.offset)
            groups.setdefault(key, []).append(i)
        for (_, _, rw, rh, left, top), members in groups.items():
            if len(members) == 1:
                stack = frames[members[0]].unsqueeze(0)
            else:
                stack = self._torch.stack([frames[i] for i in members])
            self._write(batch, members, self.resize(stack, rh, rw), (left, top, rw, rh))
        return batch

    def host_tensor(self, index: int) -> Any:
        """The pinned torch tensor behind `host_buffer(index, ...)`."""
        return self._host[index]

    def _write(
        self, batch: Any, members: list[int], resized: Any, region: tuple[int, int, int, int]
    ) -> None:
        """Pad (when a slot's placement changed), channel order, scale, into `batch`."""
        torch = self._torch
        left, top, rw, rh = region
        ptr = int(batch.data_ptr())
        for i in members:
            if self._slots.get((ptr, i)) != region:
                for c in range(3):
                    batch[i, c].fill_(self._pad[c])
                self._slots[(ptr, i)] = region
        planes = resized.permute(0, 3, 1, 2).index_select(1, self._order)  # (m, 3, rh, rw)
        if self._affine_identity:
            values = planes.to(batch.dtype)
        else:
            values = (planes.to(torch.float32) * self._a + self._b).to(batch.dtype)
        if members == list(range(members[0], members[0] + len(members))):
            batch[members[0] : members[-1] + 1, :, top : top + rh, left : left + rw] = values
        else:
            for j, i in enumerate(members):
                batch[i, :, top : top + rh, left : left + rw] = values[j]

    def forget_slots(self) -> None:
        """Forget which batch slots hold which placement (after writing into
        an `out` buffer by other means): the next call pads every slot."""
        self._slots.clear()


def odd_factor(h: int, w: int, rh: int, rw: int) -> int:
    """k when (h, w) -> (rh, rw) is a downscale by one odd integer k >= 3 (the
    CPU path's exact gather), else 0; for reports."""
    k = h // rh if rh else 0
    ok = k >= 3 and k % 2 == 1 and rh * k == h and rw * k == w
    return k if ok else 0


def bytes_per_frame(h: int, w: int) -> int:
    """uint8 BGR bytes of one frame (what crosses the bus per camera)."""
    return int(math.prod((h, w, 3)))
