"""The detector follows a CachedEngine-style swap to an engine with another input shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.core.detector import Detector
from perception.core.engines.base import Engine, EngineInfo

FIX = Path(__file__).resolve().parent / "fixtures" / "reference"
pytest.importorskip("onnxruntime")


class SwappingEngine(Engine):
    """Serves `first` until `swap()`, then `second`; counts generations like CachedEngine."""

    def __init__(self, first: Engine, second: Engine) -> None:
        self.engines = [first, second]
        self.generation = 0
        self.shapes: list[tuple[int, ...]] = []

    def swap(self) -> None:
        self.generation = 1

    @property
    def info(self) -> EngineInfo:
        return self.engines[self.generation].info

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        self.shapes.append(batch.shape)
        return self.engines[self.generation].infer(batch)


def test_detector_rederives_input_shape_after_swap():
    from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine

    dynamic = OnnxRuntimeEngine(FIX / "yolo11t_dynamic.onnx")
    fixed = OnnxRuntimeEngine(FIX / "yolo11t_fixed.onnx")
    assert fixed.info.input_shape[2:] == (320, 320)
    engine = SwappingEngine(dynamic, fixed)
    det = Detector(engine, conf=0.01, imgsz=320)
    image = np.random.default_rng(0).integers(0, 255, (240, 480, 3), dtype=np.uint8)
    det.detect([image])
    assert engine.shapes[-1][2:] != (320, 320)  # dynamic: a stride-aligned rectangle
    engine.swap()
    out = det.detect([image])
    assert engine.shapes[-1][2:] == (320, 320)  # fixed model's square after the swap
    assert out[0].image_size == (480, 240)
    assert (out[0].xyxy[:, 2] <= 480).all() and (out[0].xyxy[:, 3] <= 240).all()
