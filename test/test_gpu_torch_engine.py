"""The torch engine on ONNX models, end to end against ONNX Runtime on the CPU:
the embedded default detector and the tiny YOLO11 fixtures through
`Detector` (numpy preprocessing and decoding) and through `TorchDetector`
(preprocessing, decoding and NMS with torch ops, the GPU path), detections
within 0.5 px. Needs torch (skipped without it); the CUDA variants (fp32 and
fp16, CUDA graphs) run where a device is present, i.e. in bench/gpu_check.py
on the GPU machine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (optional runtime)")
pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from perception.core.detector import Detector  # noqa: E402
from perception.core.engines.detection_diff import DetectionDiff, diff_detections  # noqa: E402
from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from perception.core.engines.torch_detect import TorchDetector  # noqa: E402
from perception.core.engines.torch_engine import TorchEngine  # noqa: E402
from perception.core.errors import EngineError, ModelLayoutError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default_detector.onnx"
FIXTURES = REPO / "test" / "fixtures" / "reference"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def sim_frames() -> list[np.ndarray]:
    """Three 640x360 camera images of one held-out scenario (what the default
    detector was trained on) and one of them at 1920x1080."""
    from perception.sim import Scenario, default_rig

    rig = replace(default_rig(), lidar=None)
    frame = Scenario(seed=900123, duration_s=4.0, rate_hz=1.0, rig=rig).frame(2)
    imgs = [cam.image_bgr for cam in frame.cameras.values()]
    return [*imgs, cv2.resize(imgs[0], (1920, 1080), interpolation=cv2.INTER_LINEAR)]


@pytest.fixture(scope="module")
def fixture_frames() -> list[np.ndarray]:
    imgs = [cv2.imread(str(FIXTURES / n)) for n in ("scene_a.png", "scene_b.png")]
    return [*imgs, cv2.resize(imgs[1], (1280, 720))]


def _diff(ref: list[Any], got: list[Any], conf: float, iou: float) -> DetectionDiff:
    total = DetectionDiff()
    for r, g in zip(ref, got, strict=True):
        assert r.image_size == g.image_size
        total = total + diff_detections(r, g, conf=conf, iou=iou)
    return total


def test_onnx_file_info() -> None:
    eng = TorchEngine(DEFAULT)
    info = eng.info
    assert info.input_shape == (-1, 3, 384, 640)
    assert info.input_name == "images" and info.output_names == ("output0",)
    assert info.output_shapes == ((-1, 7, 5040),)
    assert "cyclist" in info.metadata["names"]
    assert not eng.cuda_graphs  # CPU
    with pytest.raises(EngineError, match="disagrees"):
        TorchEngine(DEFAULT, input_shape=(-1, 3, 320, 320))
    fixed = TorchEngine(DEFAULT, input_shape=(2, 3, -1, -1))
    assert fixed.info.input_shape == (2, 3, 384, 640)


def _default_pair(conf: float = 0.3, iou: float = 0.5) -> tuple[Detector, TorchEngine]:
    return Detector(OnnxRuntimeEngine(DEFAULT), conf=conf, iou=iou), TorchEngine(DEFAULT)


def test_default_detector_through_detector(sim_frames: list[np.ndarray]) -> None:
    ref_det, eng = _default_pair()
    got_det = Detector(eng, conf=0.3, iou=0.5)
    ref, got = ref_det.detect(sim_frames), got_det.detect(sim_frames)
    diff = _diff(ref, got, 0.3, 0.5)
    assert diff.ref_count >= 10, diff
    assert diff.ok(0.5), diff


@pytest.mark.parametrize("post", ["gpu", "cpu"])
def test_default_detector_through_torch_detector(sim_frames: list[np.ndarray], post: str) -> None:
    ref_det, eng = _default_pair()
    td = TorchDetector(eng, conf=0.3, iou=0.5, postprocess=post)
    ref = ref_det.detect(sim_frames)
    for batch in (sim_frames, sim_frames[:1]):
        got = td.detect(batch, stamps_ns=list(range(len(batch))), frame_ids=["f"] * len(batch))
        assert td.last_path == post
        assert [g.stamp_ns for g in got] == list(range(len(batch)))
        diff = _diff(ref[: len(batch)], got, 0.3, 0.5)
        assert diff.ok(0.5) and diff.matched == diff.ref_count, diff
    assert td.last_timings.batch_size == 1


@pytest.mark.parametrize("name", ["yolo11t_dynamic", "yolo11t_fixed"])
def test_yolo11_fixture(fixture_frames: list[np.ndarray], name: str) -> None:
    path = FIXTURES / f"{name}.onnx"
    conf, iou = 0.05, 0.5
    ref = Detector(OnnxRuntimeEngine(path), conf=conf, iou=iou).detect(fixture_frames)
    eng = TorchEngine(path)
    got = TorchDetector(eng, conf=conf, iou=iou).detect(fixture_frames)
    diff = _diff(ref, got, conf, iou)
    assert diff.ref_count >= 20, diff
    assert diff.ok(0.5), diff
    got2 = Detector(eng, conf=conf, iou=iou).detect(fixture_frames)
    assert _diff(ref, got2, conf, iou).ok(0.5)


def test_torch_detector_refuses_other_layouts() -> None:
    eng = TorchEngine(FIXTURES / "yolo11t_seg_dynamic.onnx")
    with pytest.raises(ModelLayoutError, match="detect outputs"):
        TorchDetector(eng)


def test_nonfinite_outputs_go_to_the_cpu_rules(sim_frames: list[np.ndarray]) -> None:
    """NaN in the output: the GPU path hands over to the CPU decoder, which
    fails only that image (nonfinite='raise')."""
    eng = TorchEngine(DEFAULT)
    real = eng.infer_tensor

    def poisoned(x: Any) -> list[Any]:
        outs = [o.clone() for o in real(x)]
        outs[0][0, 4, :] = float("nan")
        return outs

    eng.infer_tensor = poisoned  # type: ignore[method-assign]
    td = TorchDetector(eng, conf=0.3, iou=0.5)
    res = td.detect_each(sim_frames[:2])
    assert td.last_path == "cpu"
    assert type(res[0]).__name__ == "ImageFailure" and res[0].kind == "nonfinite_output"
    assert type(res[1]).__name__ == "Detections"


def test_fused_path_logic_on_the_cpu(sim_frames: list[np.ndarray]) -> None:
    """fuse=True is CUDA-only (a captured graph); its bookkeeping (own staging
    buffers, letterbox into its own batch, outputs) runs here with the
    capture replaced by an eager call."""
    eng = TorchEngine(DEFAULT, input_shape=(2, 3, 384, 640))
    plain = TorchDetector(eng, conf=0.3, iou=0.5)
    fused = TorchDetector(eng, conf=0.3, iou=0.5, fuse=True)
    assert not fused.fuse  # CPU: off
    with pytest.raises(EngineError, match="fuse=True"):
        fused.staging([(640, 360)])

    class Eager:
        def __init__(self, make_input: Any) -> None:
            self.make_input = make_input
            self.static_input = None

        def __call__(self, _: Any) -> list[Any]:
            return eng.infer_tensor(self.make_input())

    eng.capture_pipeline = Eager  # type: ignore[method-assign]
    fused.fuse = True
    frames = sim_frames[:2]
    want = plain.detect(frames)
    got = fused.detect(frames)
    assert _diff(want, got, 0.3, 0.5).ok(1e-4)
    staged = fused.staging([(640, 360), (640, 360)])
    for buf, f in zip(staged, frames, strict=True):
        buf[...] = f
    assert _diff(want, fused.detect(staged), 0.3, 0.5).ok(1e-4)
    assert len(fused._fused) == 1
    # another size set: another entry; a batch the fixed engine cannot take: unfused
    assert len(fused.detect(sim_frames[3:4] + sim_frames[:1])) == 2
    assert len(fused._fused) == 2
    assert len(fused.detect(sim_frames[:3])) == 3


# ---------------------------------------------------------------- CUDA only
@CUDA
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_default_detector(sim_frames: list[np.ndarray], precision: str) -> None:
    """fp32 within 0.5 px of ONNX Runtime. fp16 within 3 % of the box size:
    the issue's 2 px is measured and reported by bench/gpu_check.py (on the
    CPU, fp16 moved one 860x530 box of a 1080p frame by 10.7 px, 1.8 %)."""
    ref_det = Detector(OnnxRuntimeEngine(DEFAULT), conf=0.3, iou=0.5)
    eng = TorchEngine(DEFAULT, "cuda", precision, input_shape=(4, 3, 384, 640))
    assert eng.cuda_graphs
    td = TorchDetector(eng, conf=0.3, iou=0.5)
    got = td.detect(sim_frames)
    assert eng.graph_count == 1 and td.last_path == "gpu"
    band = 0.01 if precision == "fp16" else 0.0
    diff = DetectionDiff()
    for r, g in zip(ref_det.detect(sim_frames), got, strict=True):
        diff = diff + diff_detections(r, g, conf=0.3, iou=0.5, score_band=band, iou_band=5 * band)
    if precision == "fp32":
        assert diff.ok(0.5), diff
    else:
        assert diff.unexplained == 0 and diff.max_rel <= 0.03, diff
    # the numpy path of the same engine agrees with the device path
    assert _diff(got, Detector(eng, conf=0.3, iou=0.5).detect(sim_frames), 0.3, 0.5).ok(1e-3)


@CUDA
def test_cuda_graph_replays_match_eager() -> None:
    x = np.random.default_rng(0).random((2, 3, 384, 640), dtype=np.float32)
    graph = TorchEngine(DEFAULT, "cuda", input_shape=(2, 3, 384, 640))
    eager = TorchEngine(DEFAULT, "cuda", input_shape=(2, 3, 384, 640), cuda_graphs=False)
    assert graph.cuda_graphs and not eager.cuda_graphs
    # two engines may pick different cuDNN algorithms: float32 rounding apart
    for _ in range(3):
        np.testing.assert_allclose(graph.infer(x)[0], eager.infer(x)[0], rtol=1e-5, atol=5e-3)
    buf = graph.input_buffer((2, 3, 384, 640))
    buf.copy_(torch.from_numpy(x))
    out = graph.infer_tensor(buf)[0]
    np.testing.assert_allclose(out.cpu().numpy(), eager.infer(x)[0], rtol=1e-5, atol=5e-3)
