"""Pixel input: uint8 NHWC letterboxed pixels into a model with the scale and
channel order folded into its first convolution.

The folded model must compute what the float path computes (same outputs up
to float rounding, same detections), and everything it cannot fold exactly
must be refused with a reason while the float path keeps working.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from perception.core.detector import Detector
from perception.core.engines.onnx_proto import Node, ValueInfo, build_model
from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception.core.engines.pixel_input import (
    PixelInput,
    PixelInputUnsupported,
    fuse_pixel_input,
)
from perception.core.errors import EngineError, InputImageError
from perception.core.preprocess import Preprocessor, PreprocessSpec

pytest.importorskip("onnx", reason="pixel input needs the onnx package (requirements/base.txt)")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "default_detector.onnx"
REFERENCE = ROOT / "test" / "fixtures" / "reference"
BGR_TO_RGB_255 = PixelInput((1 / 255, 1 / 255, 1 / 255), (2, 1, 0))


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[h // 4 : h // 2, w // 3 : w // 2] = (30, 200, 90)  # some structure
    return img


def _conv_model(
    path: Path,
    *,
    first: str = "Conv",
    group: int = 1,
    shape: tuple = ("batch", 3, "height", "width"),
    dtype: type = np.float32,
) -> Path:
    """x -> Conv(3->4, 3x3, pad 1) -> Relu -> y, or x -> <first> -> ... ."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 3 // group, 3, 3)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    inits: dict[str, np.ndarray] = {"w": w.astype(dtype), "b": b.astype(dtype)}
    if first == "Conv":
        nodes = [
            Node("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1], "group": group}),
            Node("Relu", ["c"], ["y"]),
        ]
    else:  # the input feeds something else first (YOLOX's Focus starts with Slice)
        nodes = [
            Node("Relu", ["x"], ["r"]),
            Node("Conv", ["r", "w", "b"], ["y"], {"pads": [1, 1, 1, 1]}),
        ]
    data = build_model(
        nodes,
        [ValueInfo("x", dtype, shape)],
        [ValueInfo("y", dtype, ("batch", 4, "height", "width"))],
        inits,
    )
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ the rewrite
@pytest.mark.parametrize("source", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_folded_conv_equals_scaled_swapped_input(tmp_path: Path, source: tuple) -> None:
    model = _conv_model(tmp_path / "m.onnx")
    pixel = PixelInput((0.5, 1 / 255, 2.0), source)
    eng = OnnxRuntimeEngine(model)
    assert eng.enable_pixel_input(pixel) is None
    assert eng.pixel_input == pixel
    pixels = np.stack([_image(7, 9, 1), _image(7, 9, 2)]).transpose(0, 3, 1, 2).copy()
    x = np.stack(
        [pixels[:, source[c]].astype(np.float32) * np.float32(pixel.scale[c]) for c in range(3)],
        axis=1,
    )
    want = eng.infer(x)[0]
    got = eng.infer_pixels(pixels)[0]
    assert got.shape == want.shape == (2, 4, 7, 9)
    # the border (zero padding) is included: zeros stay zeros after folding
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_float_session_released_and_recreated_on_demand(tmp_path: Path) -> None:
    """Enabling pixel input frees the float session's weights; `infer` (or
    `session`) brings it back; closing stops both."""
    eng = OnnxRuntimeEngine(_conv_model(tmp_path / "m.onnx"))
    assert eng.enable_pixel_input(BGR_TO_RGB_255) is None
    assert eng._session is None  # released
    pixels = _image(6, 5, 9)[None].transpose(0, 3, 1, 2).copy()
    x = (pixels[:, ::-1] / np.float32(255)).astype(np.float32)
    np.testing.assert_allclose(eng.infer(x)[0], eng.infer_pixels(pixels)[0], rtol=1e-5, atol=1e-5)
    assert eng._session is not None
    kept = OnnxRuntimeEngine(_conv_model(tmp_path / "k.onnx"))
    assert kept.enable_pixel_input(BGR_TO_RGB_255, release_float=False) is None
    assert kept._session is not None
    eng.close()
    with pytest.raises(EngineError, match="closed"):
        eng.infer_pixels(pixels)
    with pytest.raises(EngineError, match="closed"):
        eng.infer(x)


def test_shared_engine_keeps_the_first_fold(tmp_path: Path) -> None:
    """Two users of one engine asking for different folds: the second is
    refused (float path) instead of changing what the first one runs."""
    eng = OnnxRuntimeEngine(_conv_model(tmp_path / "m.onnx"))
    assert eng.enable_pixel_input(BGR_TO_RGB_255) is None
    assert eng.enable_pixel_input(BGR_TO_RGB_255) is None  # the same fold: fine
    other = eng.enable_pixel_input(PixelInput((1.0, 1.0, 1.0), (0, 1, 2)))
    assert other is not None and "already enabled" in other
    assert eng.pixel_input == BGR_TO_RGB_255


def test_shared_weights_get_their_own_copy(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 1, 1)).astype(np.float32)
    data = build_model(
        [Node("Conv", ["x", "w"], ["a"]), Node("Conv", ["a", "w"], ["y"])],
        [ValueInfo("x", np.float32, (1, 3, 4, 4))],
        [ValueInfo("y", np.float32, (1, 3, 4, 4))],
        {"w": w},
    )
    fused = onnx.load_model_from_string(fuse_pixel_input(data, BGR_TO_RGB_255))
    inits = {t.name for t in fused.graph.initializer}
    assert "w" in inits and len(inits) == 2  # the second Conv still reads the original
    path = tmp_path / "s.onnx"
    path.write_bytes(data)
    eng = OnnxRuntimeEngine(path)
    assert eng.enable_pixel_input(BGR_TO_RGB_255) is None
    pixels = _image(4, 4, 5)[None].transpose(0, 3, 1, 2).copy()
    x = (pixels[:, ::-1] / np.float32(255)).astype(np.float32)
    np.testing.assert_allclose(eng.infer_pixels(pixels)[0], eng.infer(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"first": "Relu"}, "feeds a Relu node"),
        ({"group": 3}, "group=3"),
        ({"dtype": np.float16}, "float32"),
    ],
)
def test_unfoldable_models_give_a_reason(tmp_path: Path, kwargs: dict, reason: str) -> None:
    eng = OnnxRuntimeEngine(_conv_model(tmp_path / "m.onnx", **kwargs))
    got = eng.enable_pixel_input(BGR_TO_RGB_255)
    assert got is not None and reason in got
    assert eng.pixel_input is None
    with pytest.raises(EngineError, match="not enabled"):
        eng.infer_pixels(np.zeros((1, 3, 4, 4), np.uint8))


def test_identity_needs_no_fold_whatever_the_input_feeds(tmp_path: Path) -> None:
    """Raw 0-255 values in the model's channel order (YOLOX): only the Cast."""
    eng = OnnxRuntimeEngine(_conv_model(tmp_path / "m.onnx", first="Relu"))
    assert eng.enable_pixel_input(PixelInput((1.0, 1.0, 1.0), (0, 1, 2))) is None
    pixels = np.stack([_image(5, 6, 1)]).transpose(0, 3, 1, 2).copy()
    np.testing.assert_array_equal(
        eng.infer_pixels(pixels)[0], eng.infer(pixels.astype(np.float32))[0]
    )


def test_weights_in_external_data_fall_back(tmp_path: Path) -> None:
    """A model whose weights live in an external file (large models): the
    folded copy cannot be built from the .onnx bytes alone; a reason, no crash."""
    onnx = pytest.importorskip("onnx")
    src = _conv_model(tmp_path / "m.onnx")
    model = onnx.load(str(src))
    ext = tmp_path / "ext" / "m.onnx"
    ext.parent.mkdir()
    onnx.save_model(model, str(ext), save_as_external_data=True, size_threshold=0)
    eng = OnnxRuntimeEngine(ext)
    reason = eng.enable_pixel_input(BGR_TO_RGB_255)
    assert reason is not None
    x = np.zeros((1, 3, 4, 4), np.float32)
    assert eng.infer(x)[0].shape == (1, 4, 4, 4)  # the float path still serves


def _onnx_model(nodes: list, inputs: list, outputs: list, inits: dict) -> bytes:
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    g = helper.make_graph(
        nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    # IR 8: loadable by the oldest onnxruntime we support (1.16 reads up to IR 9)
    model = helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 13)], ir_version=8)
    return model.SerializeToString()


def test_input_read_inside_a_subgraph_is_refused() -> None:
    """An If body reading the image input by name would see unscaled pixels."""
    from onnx import TensorProto as TP
    from onnx import helper

    branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])],
        "b",
        [],
        [helper.make_tensor_value_info("t", TP.FLOAT, None)],
    )
    w = np.ones((3, 3, 1, 1), np.float32)
    data = _onnx_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
        ],
        [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 3, 4, 4])],
        [
            helper.make_tensor_value_info("c", TP.FLOAT, None),
            helper.make_tensor_value_info("y", TP.FLOAT, None),
        ],
        {"w": w, "cond": np.array(True)},
    )
    with pytest.raises(PixelInputUnsupported, match="subgraph"):
        fuse_pixel_input(data, BGR_TO_RGB_255)


def test_weights_that_are_also_an_output_keep_their_values() -> None:
    from onnx import TensorProto as TP
    from onnx import helper

    w = np.arange(9, dtype=np.float32).reshape(3, 3, 1, 1) / 10
    data = _onnx_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("Identity", ["w"], ["w_out"]),
        ],
        [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 3, 2, 2])],
        [
            helper.make_tensor_value_info("c", TP.FLOAT, None),
            helper.make_tensor_value_info("w_out", TP.FLOAT, None),
        ],
        {"w": w},
    )
    import onnxruntime as ort

    plain = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    fused = ort.InferenceSession(
        fuse_pixel_input(data, BGR_TO_RGB_255), providers=["CPUExecutionProvider"]
    )
    pixels = _image(2, 2, 3)[None].transpose(0, 3, 1, 2).copy()
    x = (pixels[:, ::-1] / np.float32(255)).astype(np.float32)
    got = fused.run(None, {fused.get_inputs()[0].name: pixels})
    want = plain.run(None, {"x": x})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[1], w)  # the output still shows the original weights


def test_cast_name_does_not_collide(tmp_path: Path) -> None:
    from onnx import TensorProto as TP
    from onnx import helper

    suffix_name = "images__pixels_uint8_cast"
    data = _onnx_model(
        [
            helper.make_node("Conv", ["images", "w"], ["c"], name=suffix_name),
            helper.make_node("Relu", ["c"], ["y"], name="pixels"),
        ],
        [helper.make_tensor_value_info("images", TP.FLOAT, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("y", TP.FLOAT, None)],
        {"w": np.ones((2, 3, 1, 1), np.float32)},
    )
    path = tmp_path / "n.onnx"
    path.write_bytes(data)
    assert OnnxRuntimeEngine(path).enable_pixel_input(BGR_TO_RGB_255) is None


def test_float16_outputs_come_back_as_float32(tmp_path: Path) -> None:
    from onnx import TensorProto as TP
    from onnx import helper

    data = _onnx_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("Cast", ["c"], ["y"], to=TP.FLOAT16),
        ],
        [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("y", TP.FLOAT16, None)],
        {"w": np.ones((2, 3, 1, 1), np.float32)},
    )
    path = tmp_path / "h.onnx"
    path.write_bytes(data)
    eng = OnnxRuntimeEngine(path)
    assert eng.enable_pixel_input(BGR_TO_RGB_255) is None
    pixels = np.zeros((1, 3, 2, 2), np.uint8)
    assert eng.infer_pixels(pixels)[0].dtype == np.float32
    assert eng.infer(np.zeros((1, 3, 2, 2), np.float32))[0].dtype == np.float32


def test_concurrent_enables_with_different_folds_one_wins(tmp_path: Path) -> None:
    import threading

    eng = OnnxRuntimeEngine(_conv_model(tmp_path / "m.onnx"))
    folds = [BGR_TO_RGB_255, PixelInput((1 / 255, 1 / 255, 1 / 255), (0, 1, 2))]
    barrier = threading.Barrier(2)
    got: dict[int, str | None] = {}

    def enable(i: int) -> None:
        barrier.wait()
        got[i] = eng.enable_pixel_input(folds[i])

    threads = [threading.Thread(target=enable, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in got.items() if r is None]
    assert len(winners) == 1
    assert eng.pixel_input == folds[winners[0]]


def test_closed_engine_and_engine_cache_give_reasons(tmp_path: Path) -> None:
    eng = OnnxRuntimeEngine(_conv_model(tmp_path / "m.onnx"))
    eng.close()
    assert eng.enable_pixel_input(BGR_TO_RGB_255) == "the engine is closed"
    from perception.core.engines.cache import CachedEngine

    reason = CachedEngine.enable_pixel_input(None, BGR_TO_RGB_255)  # type: ignore[arg-type]
    assert reason is not None and "cache" in reason


def test_pre_optimised_graph_is_named_in_the_reason(tmp_path: Path) -> None:
    """An ONNX Runtime level-'all' artifact (as the engine cache writes) starts
    with com.microsoft.nchwc convolutions: refused, and the reason says why."""
    src = _conv_model(tmp_path / "m.onnx")
    opt = tmp_path / "opt.onnx"
    OnnxRuntimeEngine(src, optimized_model_path=opt)
    try:
        reason = OnnxRuntimeEngine(opt, graph_optimization="disable").enable_pixel_input(
            BGR_TO_RGB_255
        )
    except Exception as exc:
        pytest.skip(f"this onnxruntime cannot reload its optimised graph: {exc}")
    assert reason is not None
    if "nchwc" in reason:
        assert "pre-optimised" in reason


def test_fuse_rejects_non_onnx_bytes() -> None:
    with pytest.raises(PixelInputUnsupported, match="cannot parse"):
        fuse_pixel_input(b"\xff\xff not a model", BGR_TO_RGB_255)


def test_without_the_onnx_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eng = OnnxRuntimeEngine(_conv_model(tmp_path / "m.onnx"))
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    reason = eng.enable_pixel_input(BGR_TO_RGB_255)
    assert reason is not None and "pip install onnx" in reason


@pytest.mark.parametrize(
    ("pixels", "match"),
    [
        (np.zeros((1, 3, 8, 8), np.float32), "uint8"),
        (np.zeros((1, 8, 8, 3), np.uint8), r"\(B, 3, H, W\)"),
        (np.zeros((3, 8, 8), np.uint8), r"\(B, 3, H, W\)"),
        (np.zeros((0, 3, 8, 8), np.uint8), "zero-size"),
        (np.zeros((1, 3, 9, 8), np.uint8), "height=8"),
        ("pixels", "numpy.ndarray"),
    ],
)
def test_bad_pixels(tmp_path: Path, pixels: object, match: str) -> None:
    eng = OnnxRuntimeEngine(_conv_model(tmp_path / "m.onnx", shape=(2, 3, 8, 8)))
    assert eng.enable_pixel_input(BGR_TO_RGB_255) is None
    with pytest.raises(InputImageError, match=match):
        eng.infer_pixels(pixels)  # type: ignore[arg-type]


def test_fixed_batch_model_pads_pixel_batches(tmp_path: Path) -> None:
    eng = OnnxRuntimeEngine(_conv_model(tmp_path / "m.onnx", shape=(2, 3, 8, 8)))
    assert eng.enable_pixel_input(BGR_TO_RGB_255) is None
    pixels = np.stack([_image(8, 8, s) for s in range(3)]).transpose(0, 3, 1, 2).copy()
    got = eng.infer_pixels(pixels)[0]
    assert got.shape == (3, 4, 8, 8)
    one = eng.infer_pixels(pixels[2:3])[0]
    np.testing.assert_allclose(got[2:3], one, rtol=1e-6)


# ------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize("input_color", ["bgr", "rgb"])
def test_pixel_canvas_is_the_float_tensor_before_conversion(input_color: str) -> None:
    spec = PreprocessSpec()  # Ultralytics: centred letterbox, RGB, /255
    images = [_image(1080, 1920, 1), _image(600, 848, 2), _image(720, 405, 3), _image(384, 640, 4)]
    flt = Preprocessor(spec, None, (640, 640), input_color=input_color)  # type: ignore[arg-type]
    pix = Preprocessor(spec, None, (640, 640), input_color=input_color, pixels=True)  # type: ignore[arg-type]
    scale, source = pix.pixel_input()  # type: ignore[misc]
    assert source == (0, 1, 2)  # the preprocessor writes model channel order itself
    for _ in range(2):  # second call: reused buffers, border not rewritten
        want, tf_f = flt(images)
        canvas, tf_p = pix(images)
        assert tf_f == tf_p
        assert canvas.dtype == np.uint8 and canvas.shape == want.shape
        for c in range(3):
            ref = canvas[:, c].astype(np.float32) * np.float32(scale[c])
            np.testing.assert_array_equal(ref, want[:, c])
    # a different placement in the same slot rewrites the border
    canvas, _ = pix([images[1], images[0], images[2], images[2]])
    want, _ = flt([images[1], images[0], images[2], images[2]])
    np.testing.assert_array_equal(canvas[:, 0] * np.float32(scale[0]), want[:, 0])


def test_mean_offset_cannot_be_folded() -> None:
    spec = PreprocessSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    pre = Preprocessor(spec, (64, 64))
    assert pre.pixel_input() is None
    with pytest.raises(ValueError, match="mean offset"):
        Preprocessor(spec, (64, 64), pixels=True)


# ------------------------------------------------------------------ detector
def _detectors(model: Path, **kw: object) -> tuple[Detector, Detector]:
    pix = Detector(OnnxRuntimeEngine(model), **kw)  # type: ignore[arg-type]
    flt = Detector(OnnxRuntimeEngine(model), pixel_input="disabled", **kw)  # type: ignore[arg-type]
    return pix, flt


def _assert_same(a: list, b: list) -> int:
    n = 0
    for da, db in zip(a, b, strict=True):
        assert len(da) == len(db)
        np.testing.assert_array_equal(da.class_ids, db.class_ids)
        np.testing.assert_allclose(da.xyxy, db.xyxy, atol=0.01)
        np.testing.assert_allclose(da.scores, db.scores, atol=1e-4)
        assert (da.stamp_ns, da.frame_id, da.image_size) == (
            db.stamp_ns,
            db.frame_id,
            db.image_size,
        )
        n += len(da)
    return n


def test_default_detector_same_detections_both_paths() -> None:
    if not DEFAULT_MODEL.exists():
        pytest.skip(f"{DEFAULT_MODEL} absent")
    from perception.sim import Scenario, default_rig

    pix, flt = _detectors(DEFAULT_MODEL, conf=0.2, iou=0.5)
    assert pix.preprocessor.pixels and pix.pixel_input_reason == ""
    assert not flt.preprocessor.pixels and flt.pixel_input_reason == "pixel_input is disabled"
    rig = replace(default_rig(), lidar=None)
    frame = Scenario(seed=900123, duration_s=2.0, rate_hz=1.0, rig=rig).frame(1)
    images = [cam.image_bgr for cam in frame.cameras.values()]
    images.append(np.ascontiguousarray(images[0][:, 100:420]))  # a portrait crop too
    stamps = [11, 12, 13, 14][: len(images)]
    frames = ["a", "b", "c", "d"][: len(images)]
    n = _assert_same(pix.detect(images, stamps, frames), flt.detect(images, stamps, frames))
    assert n >= 3, "expected detections to compare on a generated street scene"
    raw_p = pix.engine.infer_pixels(pix.preprocessor(images)[0])[0]
    raw_f = flt.engine.infer(flt.preprocessor(images)[0])[0]
    np.testing.assert_allclose(raw_p, raw_f, rtol=1e-4, atol=2e-3)


def test_reference_fixture_same_detections_both_paths() -> None:
    model = REFERENCE / "yolo11t_dynamic.onnx"
    scene = REFERENCE / "scene_a.png"
    if not model.exists() or not scene.exists():
        pytest.skip("reference fixtures absent")
    import cv2

    pix, flt = _detectors(model, conf=0.001, iou=0.7)
    assert pix.preprocessor.pixels
    img = cv2.imread(str(scene), cv2.IMREAD_COLOR)
    assert _assert_same(pix.detect([img]), flt.detect([img])) > 0


def test_detector_modes(tmp_path: Path) -> None:
    """YOLOX (raw BGR 0-255, Focus slices first) takes pixels with no fold and
    gives the float path's detections; a model that cannot be folded keeps the
    float path in 'auto' with the reason, 'required' refuses with it, a bad
    mode is a ValueError."""
    yolox = ROOT.parent / "shared" / "data" / "yolox_nano.onnx"
    if not yolox.exists():
        pytest.skip(f"{yolox} absent (../shared/data)")
    pix, flt = _detectors(yolox, labels_file="coco", conf=0.3, iou=0.45)
    assert pix.preprocessor.pixels and pix.engine.pixel_input == PixelInput((1, 1, 1), (0, 1, 2))
    images = [_image(480, 640, 7), _image(720, 1280, 8)]
    dog = ROOT.parent / "shared" / "data" / "darknet_dog.jpg"
    if dog.exists():
        import cv2

        images.append(cv2.imread(str(dog), cv2.IMREAD_COLOR))
    n = _assert_same(pix.detect(images), flt.detect(images))
    assert n >= (2 if dog.exists() else 0)

    fixture = REFERENCE / "yolo11t_dynamic.onnx"
    if fixture.exists():  # a mean/std normalisation cannot be folded
        spec = PreprocessSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        det = Detector(OnnxRuntimeEngine(fixture), preprocess=spec)
        assert not det.preprocessor.pixels and "mean" in det.pixel_input_reason
        with pytest.raises(EngineError, match=r"pixel_input 'required'.*mean"):
            Detector(OnnxRuntimeEngine(fixture), preprocess=spec, pixel_input="required")
    with pytest.raises(ValueError, match="pixel_input"):
        Detector(OnnxRuntimeEngine(yolox), labels_file="coco", pixel_input="yes")  # type: ignore[arg-type]
