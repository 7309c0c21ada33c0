"""Regenerate test/fixtures/reference/: tiny random-weight Ultralytics models
exported to ONNX by Ultralytics itself, two generated images, and what the
Ultralytics predictor detects on them.

test/test_detector_reference.py runs this project's Detector on the same ONNX
files and images and compares with the stored predictor output, so the
comparison checks our preprocessing, decoding, NMS and inverse mapping
against the exporter's own pipeline. Nothing is downloaded: the architectures
come from the yaml files shipped inside the ultralytics package, shrunk (width,
DFL bins, transformer size) so each ONNX file stays at a few hundred KB.

Run in the reference venv (tools/setup_reference_venv.sh), offline:
    YOLO_OFFLINE=1 .venv-ref/bin/python tools/make_reference_fixtures.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "test" / "fixtures" / "reference"

NUM_CLASSES = 20
CLASS_NAMES = [f"thing{i:02d}" for i in range(NUM_CLASSES)]
IMGSZ = 320
# With randomise() the class scores spread over 1e-4..1: this threshold sends
# hundreds of candidates per image through NMS, so the comparison exercises it.
CONF = 0.003
IOU = 0.5
MAX_DET = 1000
SEED = 0


def make_images() -> dict[str, np.ndarray]:
    """Deterministic synthetic scenes (gradients + shapes): small as PNG and
    with enough structure that a random network's outputs vary over the image."""
    rng = np.random.default_rng(SEED)
    images = {}
    for name, (w, h) in {"scene_a.png": (400, 300), "scene_b.png": (250, 360)}.items():
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=-1).astype(
            np.uint8
        )
        for _ in range(12):
            x1, y1 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x2 = int(min(w - 1, x1 + rng.integers(15, w // 2)))
            y2 = int(min(h - 1, y1 + rng.integers(15, h // 2)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x1, y1), (x2, y2), colour, -1)
            else:
                cv2.circle(img, ((x1 + x2) // 2, (y1 + y2) // 2), (x2 - x1) // 2, colour, -1)
        images[name] = img
    return images


def same_size_partner(image: np.ndarray) -> np.ndarray:
    """A second image of the same size (mirror), for a same-shape batch; the
    test builds it the same way instead of storing another PNG."""
    return np.ascontiguousarray(image[:, ::-1])


def tiny_yolo11_cfg() -> dict:
    """yolo11.yaml from the installed package, scaled to width 1/32 and 4 DFL bins."""
    from ultralytics.utils import ROOT as UROOT
    from ultralytics.utils import YAML

    cfg = YAML.load(UROOT / "cfg" / "models" / "11" / "yolo11.yaml")
    cfg["nc"] = NUM_CLASSES
    cfg["scales"] = {"t": [0.33, 0.03125, 256]}
    cfg["scale"] = "t"
    cfg["reg_max"] = 4
    return cfg


def tiny_rtdetr_cfg() -> dict:
    """The tiny YOLO11 backbone/neck with a small RT-DETR decoder head (300 queries,
    as the real ones have, so the output layout is the real one)."""
    cfg = tiny_yolo11_cfg()
    cfg.pop("reg_max")
    last = cfg["head"][-1]
    # RTDETRDecoder args: nc, hidden dim, queries, decoder points, heads, layers, ffn dim
    cfg["head"][-1] = [last[0], 1, "RTDETRDecoder", ["nc", 16, 300, 2, 2, 1, 32]]
    return cfg


def randomise(net, seed: int = SEED) -> None:
    """Give the random network outputs that vary over the image.

    Default initialisation of such a thin network yields near-constant boxes
    and scores (every anchor alike), which would make the comparison trivial.
    Convolutions get variance-preserving (He) weights, batch norms random
    affine parameters, and the last layer of each head branch unit-variance
    weights. The DFL convolution is fixed (not trainable) and kept.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5, generator=gen)
                mod.bias.normal_(0.0, 0.3, generator=gen)
            elif isinstance(mod, torch.nn.Conv2d) and mod.weight.requires_grad:
                fan_in = mod.weight[0].numel()
                mod.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
        head = net.model[-1]
        for branch in [*getattr(head, "cv2", []), *getattr(head, "cv3", [])]:
            branch[-1].weight.normal_(0.0, 1.0, generator=gen)


def build_and_export(kind: str, cfg: dict, workdir: Path, dynamic: bool) -> Path:
    import torch
    from ultralytics import RTDETR, YOLO
    from ultralytics.utils import YAML

    torch.manual_seed(SEED)
    yaml_path = workdir / f"{kind}.yaml"
    YAML.save(yaml_path, cfg)
    model = RTDETR(str(yaml_path)) if kind.startswith("rtdetr") else YOLO(str(yaml_path))
    model.model.names = dict(enumerate(CLASS_NAMES))
    randomise(model.model)
    out = model.export(
        format="onnx", imgsz=IMGSZ, dynamic=dynamic, simplify=False, batch=1, device="cpu"
    )
    return Path(out)


def compact_onnx(path: Path) -> None:
    """Shorten node and tensor names and drop doc strings (a third of a small
    model's bytes); the graph, weights and metadata are unchanged."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return mapping.setdefault(name, format(len(mapping), "x"))

    for init in graph.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for info in graph.value_info:
        info.name = short(info.name)
    model.doc_string = ""
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def predict(onnx_path: Path, images: list[np.ndarray], kind: str) -> list[dict]:
    """Ultralytics predictor on each image separately (batch 1, the predictor's
    rect letterbox for dynamic models)."""
    from ultralytics import RTDETR, YOLO

    model = (
        RTDETR(str(onnx_path)) if kind.startswith("rtdetr") else YOLO(str(onnx_path), task="detect")
    )
    kw = {"conf": CONF, "iou": IOU, "max_det": MAX_DET, "imgsz": IMGSZ, "verbose": False}
    results = []
    for batch in [[im] for im in images]:
        res = model.predict(batch, **kw)
        results.extend(res)
    return [
        {
            "xyxy": r.boxes.xyxy.cpu().numpy().astype(np.float32),
            "scores": r.boxes.conf.cpu().numpy().astype(np.float32),
            "classes": r.boxes.cls.cpu().numpy().astype(np.int32),
        }
        for r in results
    ]


def candidate_count(onnx_path: Path, image: np.ndarray, kind: str) -> int:
    """How many anchors/queries pass CONF before NMS (for the manifest)."""
    import onnxruntime as ort
    from ultralytics.data.augment import LetterBox

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    dynamic = not isinstance(shape[2], int)
    if kind.startswith("rtdetr"):
        lb = LetterBox(IMGSZ, auto=False, scale_fill=True)
    else:
        lb = LetterBox(IMGSZ, auto=dynamic, stride=32)
    x = lb(image=image)[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    y = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x)})[0]
    if kind.startswith("rtdetr"):
        return int((y[0, :, 4] > CONF).sum())
    return int((y[0, 4:].max(0) > CONF).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import ultralytics

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    images = make_images()
    for stale in out.glob("*.png"):
        stale.unlink()
    for name, img in images.items():
        cv2.imwrite(str(out / name), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    # read back exactly what the test will read
    loaded = {name: cv2.imread(str(out / name), cv2.IMREAD_COLOR) for name in images}
    loaded["scene_a_mirror"] = same_size_partner(loaded["scene_a.png"])
    names = list(loaded)
    manifest: dict = {
        "ultralytics_version": ultralytics.__version__,
        "conf": CONF,
        "iou": IOU,
        "max_det": MAX_DET,
        "imgsz": IMGSZ,
        "class_names": CLASS_NAMES,
        "images": names,
        "models": {},
    }
    arrays: dict[str, np.ndarray] = {}
    specs = [
        ("yolo11t_dynamic", tiny_yolo11_cfg(), True),
        ("yolo11t_fixed", tiny_yolo11_cfg(), False),
        ("rtdetr_tiny", tiny_rtdetr_cfg(), False),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, cfg, dynamic in specs:
            work = Path(tmp) / kind
            work.mkdir()
            exported = build_and_export(kind, cfg, work, dynamic)
            target = out / f"{kind}.onnx"
            shutil.move(exported, target)  # the exporter writes into the cwd
            compact_onnx(target)
            preds = predict(target, [loaded[n] for n in names], kind)
            counts = {n: candidate_count(target, loaded[n], kind) for n in names}
            for n, p in zip(names, preds, strict=True):
                for key, value in p.items():
                    arrays[f"{kind}/{n}/{key}"] = value
            manifest["models"][kind] = {
                "file": target.name,
                "dynamic": dynamic,
                "candidates_above_conf": counts,
                "detections": {n: len(p["scores"]) for n, p in zip(names, preds, strict=True)},
            }
    np.savez_compressed(out / "ultralytics_predictions.npz", **arrays)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest["models"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
