"""Tiny ONNX models with a known numpy answer, for tests, benches and tools.

Written with `onnx_proto.build_model`, so neither the `onnx` package nor a
download is needed. The model computes

    y = Relu(Conv1x1(x; weight, bias))          # (B, K, H, W)
    z = ReduceMean(y, axes=(2, 3))              # (B, K)

and `TinyModel.expected(x)` gives the same in numpy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.core.engines.onnx_proto import Node, ValueInfo, build_model

__all__ = ["TinyModel", "write_tiny_model"]


@dataclass(frozen=True)
class TinyModel:
    path: Path
    weight: np.ndarray  # (K, C) float32
    bias: np.ndarray  # (K,) float32
    input_name: str = "images"
    output_names: tuple[str, ...] = ("features", "pooled")

    def expected(self, x: np.ndarray) -> list[np.ndarray]:
        """Reference outputs for an NCHW float batch."""
        x64 = x.astype(np.float64)
        y = np.einsum("kc,bchw->bkhw", self.weight.astype(np.float64), x64)
        y = np.maximum(y + self.bias.astype(np.float64)[None, :, None, None], 0.0)
        return [y.astype(np.float32), y.mean(axis=(2, 3)).astype(np.float32)]


def write_tiny_model(
    path: str | os.PathLike[str],
    *,
    batch: int | str = "batch",
    channels: int = 3,
    height: int | str = "height",
    width: int | str = "width",
    out_channels: int = 4,
    dtype: type = np.float32,
    metadata: Mapping[str, str] | None = None,
    seed: int = 0,
) -> TinyModel:
    """Write the model to `path`; a str axis is dynamic (symbolic), an int fixed.

    `dtype=np.float16` makes input, weights and outputs float16.
    """
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_channels, channels)).astype(np.float32)
    bias = rng.standard_normal(out_channels).astype(np.float32) * 0.1
    dt = np.dtype(dtype)
    nodes = [
        Node("Conv", ["images", "w", "b"], ["conv"]),
        Node("Relu", ["conv"], ["features"]),
        Node("ReduceMean", ["features"], ["pooled"], {"axes": [2, 3], "keepdims": 0}),
    ]
    data = build_model(
        nodes,
        [ValueInfo("images", dt, [batch, channels, height, width])],
        [
            ValueInfo("features", dt, [batch, out_channels, height, width]),
            ValueInfo("pooled", dt, [batch, out_channels]),
        ],
        {
            "w": weight.reshape(out_channels, channels, 1, 1).astype(dt),
            "b": bias.astype(dt),
        },
        metadata=metadata,
        opset=17,
    )
    p = Path(path)
    p.write_bytes(data)
    if dt != np.float32:
        weight = weight.astype(dt).astype(np.float32)
        bias = bias.astype(dt).astype(np.float32)
    return TinyModel(path=p, weight=weight, bias=bias)
