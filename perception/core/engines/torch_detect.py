"""Detection kept on the GPU: preprocessing, the torch engine, decoding and
NMS with torch ops; only the final boxes come back to the host.

`TorchDetector` is the device-resident twin of `perception.core.detector.
Detector` for YOLOv8/YOLO11 detect outputs (`[B, 4+nc, N]`), the layout of
the embedded default detector and of Ultralytics exports. It gives the same
`Detections` as `Detector` on the same engine outputs:

* preprocessing: `GpuPreprocessor` (uint8 frames up once through pinned
  memory, OpenCV's INTER_LINEAR reproduced), writing straight into the
  engine's input (`TorchEngine.input_buffer`: the captured CUDA graph's);
* decoding: best class per anchor, strictly above `conf`, at most
  `max_candidates` per image best first, boxes cxcywh -> xyxy in float32
  exactly as `Decoder` does;
* NMS: `nms_torch`, greedy, class-aware, torchvision's rule (suppressed when
  the IoU with a higher-scored *kept* box of its group is strictly greater),
  IoU in float64 like `perception.core.nms`, ties keep the lower index; pure
  torch (torchvision is not needed);
* the inverse letterbox in float32 as `ImageTransform.boxes_to_original`.

Whatever the GPU path does not cover falls back to the CPU code on the
downloaded outputs, with its semantics: non-finite outputs (`nonfinite`
raise/drop per image), per-class thresholds, multi-label, more candidates
than `MAX_GPU_NMS`. `postprocess="cpu"` always does so (for comparisons).
"""

from __future__ import annotations

import ast
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from perception.core.decoders import Decoder, resolve_layout
from perception.core.detector import ImageFailure, StageTimings
from perception.core.engines.torch_engine import TorchEngine
from perception.core.errors import EngineError, InputImageError, ModelLayoutError
from perception.core.gpu_preprocess import GpuPreprocessor
from perception.core.nms import batched_nms
from perception.core.preprocess import ImageTransform, PreprocessSpec, check_image
from perception.core.types import Detections

__all__ = ["MAX_GPU_NMS", "GpuCandidates", "TorchDetector", "decode_yolov8_torch", "nms_torch"]

_log = logging.getLogger(__name__)

MAX_GPU_NMS = 16384
"""Most candidates (whole batch) one GPU NMS takes: its suppression matrix is
K x K booleans (256 MB at this size); more go to the CPU NMS."""


def _pairwise_iou(torch: Any, a: Any, b: Any) -> Any:
    """(N, M) IoU of float64 xyxy boxes, as `perception.core.nms.box_iou`."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_(min=0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(inter))


def nms_torch(
    boxes: Any,
    scores: Any,
    iou_threshold: float,
    groups: Any | None = None,
    *,
    block: int = 4096,
    max_rounds: int = 12,
) -> Any:
    """Greedy NMS on torch tensors; kept indices, highest score first.

    Same result as `perception.core.nms.nms` (torchvision's rule, stable
    ties). The suppression matrix S (i suppresses j: i before j in score
    order, same group, IoU > threshold) is built on the device in row
    blocks. The greedy pass is the fixed point of keep = not any(S[kept, :]),
    reached in as many rounds as the longest chain of boxes suppressing one
    another; usually a few rounds (one device step and one host check
    each). If `max_rounds` do not settle it, S goes to the host packed to
    bits and the greedy loop finishes there.
    """
    torch = _torch()
    k = int(scores.shape[0])
    if k == 0:
        return torch.zeros(0, dtype=torch.int64, device=scores.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].to(torch.float64)
    g = groups[order] if groups is not None else None
    sup = torch.empty((k, k), dtype=torch.bool, device=scores.device)
    later = torch.arange(k, device=scores.device)
    for start in range(0, k, block):
        stop = min(start + block, k)
        hit = _pairwise_iou(torch, b[start:stop], b) > float(iou_threshold)
        hit &= later[None, :] > later[start:stop, None]
        if g is not None:
            hit &= g[start:stop, None] == g[None, :]
        sup[start:stop] = hit
    keep = torch.ones(k, dtype=torch.bool, device=scores.device)
    supf = sup.to(torch.float32) if k <= 4096 else None

    def step(keep: Any) -> Any:
        if supf is not None:
            return (keep.to(torch.float32) @ supf) == 0
        return ~(sup & keep[:, None]).any(dim=0)

    # two rounds per host check: a settled state stays settled
    for _ in range(max(1, (max_rounds + 1) // 2)):
        new = step(step(keep))
        if bool(torch.equal(new, step(new))):
            return order[new]
        keep = new
    return order[torch.from_numpy(_greedy_bits(_packbits(torch, sup))).to(order.device)]


def _packbits(torch: Any, mask: Any) -> np.ndarray:
    """(K, K) bool on any device -> (K, ceil(K/8)) uint8 on the host, numpy's
    bit order (big endian within a byte), packed on the device."""
    k = int(mask.shape[1])
    pad = (-k) % 8
    if pad:
        mask = torch.nn.functional.pad(mask, (0, pad))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=mask.device)
    packed = (mask.view(mask.shape[0], -1, 8).to(torch.uint8) * weights).sum(-1, dtype=torch.uint8)
    out: np.ndarray = packed.cpu().numpy()
    return out


def _greedy_bits(packed: np.ndarray) -> np.ndarray:
    """Greedy pass over a packed suppression matrix: kept rows (bool)."""
    k = packed.shape[0]
    removed = np.zeros(packed.shape[1], dtype=np.uint8)
    keep = np.zeros(k, dtype=bool)
    for i in range(k):
        if removed[i >> 3] & (128 >> (i & 7)):
            continue
        keep[i] = True
        np.bitwise_or(removed, packed[i], out=removed)
    return keep


def _torch() -> Any:
    from perception.core.engines.torch_engine import import_torch

    return import_torch()


@dataclass
class GpuCandidates:
    """Candidates of a whole batch on the device, in anchor order per image."""

    image: Any  # (K,) int64
    xyxy: Any  # (K, 4) float32, tensor pixels
    scores: Any  # (K,) float32
    class_ids: Any  # (K,) int64

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def decode_yolov8_torch(out: Any, num_classes: int, conf: float) -> GpuCandidates:
    """Candidates of a `[B, 4+nc(+extra), N]` output, as `Decoder._yolov8`
    (best class, score strictly above `conf`, boxes cxcywh -> xyxy in float32).
    Synchronises once (the candidate count)."""
    torch = _torch()
    out = out.to(torch.float32)
    cls = out[:, 4 : 4 + num_classes]
    best, arg = cls.max(dim=1)  # first maximum on ties, as numpy's argmax
    img, anchor = torch.nonzero(best > conf, as_tuple=True)
    xywh = out[img, :4, anchor]  # (K, 4)
    half_w = xywh[:, 2] / 2
    half_h = xywh[:, 3] / 2
    xyxy = torch.stack(
        [xywh[:, 0] - half_w, xywh[:, 1] - half_h, xywh[:, 0] + half_w, xywh[:, 1] + half_h],
        dim=1,
    )
    return GpuCandidates(img, xyxy, best[img, anchor], arg[img, anchor])


class TorchDetector:
    """Detect with a `TorchEngine`, keeping the work on its device.

    Args:
        engine: a TorchEngine (CUDA, or the CPU for tests).
        conf, iou, max_det, agnostic, class_names, imgsz, rect, input_color,
            nonfinite, max_candidates, preprocess, family: as `Detector`
            (iou one value).
        class_conf, multi_label: as `Detector`; either sends decoding and NMS
            to the CPU code.
        postprocess: "gpu" (decoding and NMS on the device where the case is
            covered) or "cpu" (download the outputs, `Decoder` + `batched_nms`).
        sync_stages: synchronise the device after each stage so
            `last_timings` splits the time by stage (benchmarks); otherwise
            only the total is exact and preprocessing/inference are what the
            host spent issuing them.
        fuse: on CUDA, capture the frames' upload (from page-locked buffers
            of the detector's own, `staging`), the preprocessing and the
            model as one CUDA graph per set of frame sizes (at most
            `max_fused`, the oldest dropped): one replay per batch instead of
            some twenty small launches before the model's. numpy frames
            only; anything else takes the unfused path.

    Only YOLOv8/YOLO11 detect models (`[B, 4+nc, N]`); others raise
    ModelLayoutError (use `Detector`). Not thread-safe.
    """

    def __init__(
        self,
        engine: TorchEngine,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        *,
        family: str = "auto",
        class_conf: Mapping[int, float] | Sequence[float] | None = None,
        agnostic: bool = False,
        multi_label: bool = False,
        class_names: Sequence[str] | None = None,
        imgsz: int | tuple[int, int] | None = None,
        rect: bool = True,
        input_color: Literal["bgr", "rgb"] = "bgr",
        nonfinite: Literal["raise", "drop"] = "raise",
        max_candidates: int = 30000,
        preprocess: PreprocessSpec | None = None,
        postprocess: Literal["gpu", "cpu"] = "gpu",
        sync_stages: bool = False,
        fuse: bool = False,
        max_fused: int = 4,
    ) -> None:
        if postprocess not in ("gpu", "cpu"):
            raise ValueError(f"postprocess: expected 'gpu' or 'cpu', got {postprocess!r}")
        if not 0.0 <= float(iou) <= 1.0:
            raise ValueError(f"iou: expected 0..1, got {iou}")
        if max_det < 1:
            raise ValueError(f"max_det: expected >= 1, got {max_det}")
        self.engine = engine
        info = engine.info
        self.layout = resolve_layout(info, family, class_names=class_names)
        if self.layout.family != "yolov8" or self.layout.task != "detect":
            raise ModelLayoutError(
                f"TorchDetector handles YOLOv8/YOLO11 detect outputs, got "
                f"{self.layout.family}/{self.layout.task}: use perception.core.detector.Detector"
            )
        self.decoder = Decoder(
            self.layout,
            conf,
            class_conf=class_conf,
            multi_label=multi_label,
            max_candidates=max_candidates,
            nonfinite=nonfinite,
        )
        self.iou = float(iou)
        self.max_det = int(max_det)
        self.agnostic = agnostic
        self.postprocess = postprocess
        self.sync_stages = sync_stages
        self._gpu_post = class_conf is None and not multi_label
        try:
            stride = int(info.metadata.get("stride", 32) or 32)
        except ValueError:
            stride = 32
        spec = preprocess or self.layout.preprocess_spec(stride)
        target = _target(imgsz, info.metadata)
        h, w = info.input_shape[2], info.input_shape[3]
        self.preprocessor = GpuPreprocessor(
            spec,
            (h, w) if h > 0 and w > 0 else None,
            target,
            rect=rect,
            input_color=input_color,
            device=engine.device,
            dtype=engine.dtype,
        )
        self.last_timings = StageTimings()
        self.last_path = ""
        self._torch = _torch()
        self.fuse = bool(fuse) and engine.device.type == "cuda"
        self._max_fused = max(1, int(max_fused))
        self._fused: dict[tuple[Any, ...], _Fused] = {}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.layout.class_names

    def _sync(self) -> None:
        if self.sync_stages and self.engine.device.type == "cuda":
            self._torch.cuda.synchronize(self.engine.device)

    def detect(
        self,
        images: Sequence[Any],
        stamps_ns: Sequence[int] | None = None,
        frame_ids: Sequence[str] | None = None,
    ) -> list[Detections]:
        """`Detector.detect` on the device: uint8 HxWx3 images (numpy, or
        tensors already on the device) -> one `Detections` per image."""
        results = self.detect_each(images, stamps_ns, frame_ids)
        for r in results:
            if isinstance(r, ImageFailure):
                raise r.error
        return [r for r in results if isinstance(r, Detections)]

    def detect_each(
        self,
        images: Sequence[Any],
        stamps_ns: Sequence[int] | None = None,
        frame_ids: Sequence[str] | None = None,
    ) -> list[Detections | ImageFailure]:
        """`Detector.detect_each` on the device (a fixed-batch model runs
        larger batches in pieces of its batch size)."""
        n = len(images)
        if n == 0:
            return []
        if stamps_ns is not None and len(stamps_ns) != n:
            raise InputImageError(f"stamps_ns: expected {n} values, got {len(stamps_ns)}")
        if frame_ids is not None and len(frame_ids) != n:
            raise InputImageError(f"frame_ids: expected {n} values, got {len(frame_ids)}")
        step = self.engine.info.max_batch
        if 0 < step < n:
            merged: list[Detections | ImageFailure] = []
            timings = []
            for s in range(0, n, step):
                part = self.detect_each(
                    images[s : s + step],
                    None if stamps_ns is None else stamps_ns[s : s + step],
                    None if frame_ids is None else frame_ids[s : s + step],
                )
                merged += [
                    ImageFailure(r.index + s, r.kind, r.error) if isinstance(r, ImageFailure) else r
                    for r in part
                ]
                timings.append(self.last_timings)
            self.last_timings = StageTimings(
                sum(t.preprocess_ms for t in timings),
                sum(t.inference_ms for t in timings),
                sum(t.postprocess_ms for t in timings),
                batch_size=n,
            )
            return merged
        torch = self._torch
        t0 = time.perf_counter()
        with torch.no_grad():
            sizes = [(int(im.shape[1]), int(im.shape[0])) for im in images]
            transforms = self.preprocessor.plan(sizes)
            bw, bh = transforms[0].input_size
            fused = self._fused_entry(images, sizes, transforms) if self.fuse else None
            if fused is not None:
                t1 = time.perf_counter()
                outputs = fused.run(images)
            else:
                target = self.engine.input_buffer((n, 3, bh, bw))
                batch, transforms = self.preprocessor(images, out=target)
                self._sync()
                t1 = time.perf_counter()
                outputs = self.engine.infer_tensor(batch)
            self._sync()
            t2 = time.perf_counter()
            out = outputs[self.layout.output_index]
            if out.dim() != 3 or out.shape[0] != n or out.shape[1] != 4 + self.layout.num_classes:
                raise ModelLayoutError(
                    f"yolov8 output: expected [{n}, {4 + self.layout.num_classes}, N], "
                    f"got {tuple(out.shape)}"
                )
            results = None
            if self.postprocess == "gpu" and self._gpu_post:
                results = self._post_gpu(out, transforms, stamps_ns, frame_ids)
            if results is None:
                self.last_path = "cpu"
                results = self._post_cpu(out, transforms, stamps_ns, frame_ids)
            else:
                self.last_path = "gpu"
        t3 = time.perf_counter()
        self.last_timings = StageTimings(
            (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, batch_size=n
        )
        return results

    def staging(self, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """(fuse) The page-locked (h, w, 3) uint8 buffers the fused graph for
        frames of these (w, h) sizes uploads from, creating it: decode frames
        straight into them to skip the copy (then pass these arrays to
        `detect`). Write the next frames only after `detect` returned."""
        if not self.fuse:
            raise EngineError("staging buffers exist only with fuse=True on CUDA")
        transforms = self.preprocessor.plan(list(sizes))
        fake = [np.empty((h, w, 3), np.uint8) for w, h in sizes]
        entry = self._fused_entry(fake, list(sizes), transforms)
        if entry is None:
            raise EngineError(f"no fused graph for {len(sizes)} frames with this engine")
        return entry.hosts

    def _fused_entry(
        self, images: Sequence[Any], sizes: list[tuple[int, int]], transforms: list[ImageTransform]
    ) -> _Fused | None:
        """The fused graph for these frame sizes (captured on first use), or
        None when the batch cannot take that path."""
        torch = self._torch
        n = len(images)
        fixed = self.engine.info.input_shape[0]
        if (fixed > 0 and fixed != n) or not all(isinstance(i, np.ndarray) for i in images):
            return None
        bw, bh = transforms[0].input_size
        key = (tuple(sizes), bh, bw)
        entry = self._fused.get(key)
        if entry is None:
            device = self.engine.device
            pinned = self.preprocessor.pinned
            host_t = [
                torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=pinned) for w, h in sizes
            ]
            frames = [torch.empty((h, w, 3), dtype=torch.uint8, device=device) for w, h in sizes]
            batch = torch.empty((n, 3, bh, bw), dtype=self.engine.dtype, device=device)
            pre = self.preprocessor
            tfs = list(transforms)

            def make_input() -> Any:
                for dev, host in zip(frames, host_t, strict=True):
                    dev.copy_(host, non_blocking=True)
                return pre.letterbox(frames, tfs, out=batch)

            runner = self.engine.capture_pipeline(make_input)
            if len(self._fused) >= self._max_fused:
                self._fused.pop(next(iter(self._fused)))
            hosts = [h.numpy() for h in host_t]
            entry = self._fused[key] = _Fused(torch, hosts, runner, device.type == "cuda")
        return entry

    def _post_gpu(
        self,
        out: Any,
        transforms: list[ImageTransform],
        stamps_ns: Sequence[int] | None,
        frame_ids: Sequence[str] | None,
    ) -> list[Detections | ImageFailure] | None:
        """Decode + NMS + inverse letterbox on the device; None when a case
        needs the CPU code (non-finite values, too many candidates)."""
        torch = self._torch
        n = len(transforms)
        nc = self.layout.num_classes
        # read with the results (one transfer): non-finite values hand the
        # batch to the CPU decoder, which raises or drops per image
        finite = torch.isfinite(out[:, : 4 + nc]).all().to(torch.float32).reshape(1, 1)
        cand = decode_yolov8_torch(out, nc, self.decoder.conf)  # synchronises once
        k = len(cand)
        if k > MAX_GPU_NMS:
            return None
        if k > self.decoder.max_candidates:
            counts = torch.bincount(cand.image, minlength=n)
            if int(counts.max()) > self.decoder.max_candidates:
                return None
        if k:
            ncls = 1 if self.agnostic else nc
            groups = cand.image * ncls + (0 if self.agnostic else cand.class_ids)
            keep = nms_torch(cand.xyxy, cand.scores, self.iou, groups)
            # keep is score-sorted: cap each image at max_det by a stable rank
            img = cand.image[keep]
            by_img = torch.sort(img, stable=True)
            first = torch.searchsorted(by_img.values, by_img.values, right=False)
            rank = torch.empty_like(by_img.indices)
            rank[by_img.indices] = torch.arange(keep.numel(), device=keep.device) - first
            keep = keep[rank < self.max_det]
            boxes = cand.xyxy[keep]
            img = cand.image[keep]
            scale = torch.tensor(
                [[*tf.scale, *tf.offset, *tf.orig_size] for tf in transforms],
                dtype=torch.float32,
            ).to(boxes.device, non_blocking=True)[img]
            mapped = torch.empty_like(boxes)
            mapped[:, 0::2] = (boxes[:, 0::2] - scale[:, 2:3]) / scale[:, 0:1]
            mapped[:, 1::2] = (boxes[:, 1::2] - scale[:, 3:4]) / scale[:, 1:2]
            mapped[:, 0::2] = torch.minimum(mapped[:, 0::2].clamp(min=0.0), scale[:, 4:5])
            mapped[:, 1::2] = torch.minimum(mapped[:, 1::2].clamp(min=0.0), scale[:, 5:6])
            rows = torch.cat(
                [mapped, cand.scores[keep, None], cand.class_ids[keep, None].to(torch.float32),
                 img[:, None].to(torch.float32)], dim=1,
            )  # fmt: skip
            packed = torch.cat([rows, finite.expand(1, 7)]).cpu().numpy()
        else:
            packed = np.concatenate([np.zeros((0, 7), np.float32),
                                     finite.expand(1, 7).cpu().numpy()])  # fmt: skip
        if packed[-1, 0] != 1.0:
            return None
        packed = packed[:-1]
        results: list[Detections | ImageFailure] = []
        rows = packed[:, 6].astype(np.int64)
        for i, tf in enumerate(transforms):
            mine = packed[rows == i]
            results.append(
                Detections.from_arrays(
                    mine[:, :4],
                    mine[:, 4],
                    mine[:, 5].astype(np.int32),
                    stamp_ns=int(stamps_ns[i]) if stamps_ns is not None else 0,
                    frame_id=frame_ids[i] if frame_ids is not None else "",
                    image_size=tf.orig_size,
                )
            )
        return results

    def _post_cpu(
        self,
        out: Any,
        transforms: list[ImageTransform],
        stamps_ns: Sequence[int] | None,
        frame_ids: Sequence[str] | None,
    ) -> list[Detections | ImageFailure]:
        """The CPU decoder and NMS on the downloaded output (Detector's code)."""
        from perception.core.detector import _failure_kind

        host = out.to(self._torch.float32).cpu().numpy()
        bh, bw = transforms[0].input_size[1], transforms[0].input_size[0]
        results: list[Detections | ImageFailure] = []
        for i, tf in enumerate(transforms):
            stamp = int(stamps_ns[i]) if stamps_ns is not None else 0
            frame = frame_ids[i] if frame_ids is not None else ""
            try:
                cand = self.decoder.decode_image(host[i], i, (bh, bw))
                if len(cand) == 0:
                    results.append(
                        Detections.empty(stamp_ns=stamp, frame_id=frame, image_size=tf.orig_size)
                    )
                    continue
                keep = batched_nms(
                    cand.xyxy, cand.scores, cand.class_ids, self.iou,
                    agnostic=self.agnostic, max_det=self.max_det,
                )  # fmt: skip
                kept = cand.take(keep)
                results.append(
                    Detections.from_arrays(
                        tf.boxes_to_original(kept.xyxy),
                        kept.scores,
                        kept.class_ids,
                        stamp_ns=stamp,
                        frame_id=frame,
                        image_size=tf.orig_size,
                    )
                )
            except Exception as exc:  # this image only, as Detector.detect_each
                results.append(ImageFailure(i, _failure_kind(exc), exc))
        return results

    def __call__(self, images: Sequence[Any]) -> list[Detections]:
        return self.detect(images)


class _Fused:
    """A captured upload + preprocessing + model graph and its pinned inputs."""

    def __init__(self, torch: Any, hosts: list[np.ndarray], runner: Any, cuda: bool) -> None:
        self.hosts = hosts
        self.runner = runner
        self._done = torch.cuda.Event() if cuda else None
        if self._done is not None:
            self._done.record()

    def run(self, images: Sequence[np.ndarray]) -> list[Any]:
        if self._done is not None:
            self._done.synchronize()  # the last replay has read the pinned buffers
        for i, (host, img) in enumerate(zip(self.hosts, images, strict=True)):
            check_image(img, i)
            if host.ctypes.data != img.ctypes.data:
                np.copyto(host, img)
        outs: list[Any] = self.runner(self.runner.static_input)
        if self._done is not None:
            self._done.record()
        return outs


def _target(imgsz: int | tuple[int, int] | None, meta: Mapping[str, str]) -> tuple[int, int]:
    """(H, W) images are fitted into (Detector's rule: argument, metadata, 640)."""
    if isinstance(imgsz, int):
        return imgsz, imgsz
    if imgsz is not None:
        return int(imgsz[0]), int(imgsz[1])
    text = meta.get("imgsz")
    if text:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, int):
            return value, value
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
    return 640, 640
