"""Regenerate test/fixtures/reference/: tiny random-weight Ultralytics models
exported to ONNX by Ultralytics itself, two generated images, and what the
Ultralytics predictor detects on them.

test/test_detector_reference.py runs this project's Detector on the same ONNX
files and images and compares with the stored predictor output, so the
comparison checks our preprocessing, decoding, NMS and inverse mapping
against the exporter's own pipeline. test/test_seg_pose_obb_reference.py does
the same for the segmentation (masks with ``retina_masks=True``, i.e. at the
image's resolution), pose and oriented-box models (``TASK_SPECS``). Nothing is
downloaded: the architectures come from the yaml files shipped inside the
ultralytics package, shrunk (width, DFL bins, transformer size) so each ONNX
file stays at a few hundred KB.

Run in the reference venv (tools/setup_reference_venv.sh), offline:
    YOLO_OFFLINE=1 .venv-ref/bin/python tools/make_reference_fixtures.py [--only KIND ...]
(--only regenerates those models and keeps the others' files and entries.)
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
# The task models keep a handful of instances per image (their outputs are
# compared instance by instance): conf per model, chosen from the score spread.
TASK_CLASSES = 3
KPT_SHAPE = [5, 3]  # K keypoints of x, y, visibility (COCO persons: 17; fewer, smaller file)
TASK_HEAD = {"box_std": 0.25, "cls_std": 3.0, "cls_bias": -4.0}  # see randomise()


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


def tiny_task_cfg(task: str, version: str = "11") -> dict:
    """yolo11-{seg,pose,obb}.yaml (or yolov8-*) from the installed package,
    scaled like tiny_yolo11_cfg (the prototype branch to 8 channels; 32 mask
    coefficients as the real models)."""
    from ultralytics.utils import ROOT as UROOT
    from ultralytics.utils import YAML

    folder, stem = ("11", "yolo11") if version == "11" else ("v8", "yolov8")
    suffix = {"segment": "seg"}.get(task, task)
    cfg = YAML.load(UROOT / "cfg" / "models" / folder / f"{stem}-{suffix}.yaml")
    cfg["nc"] = 1 if task == "pose" else TASK_CLASSES
    if task == "pose":
        cfg["kpt_shape"] = KPT_SHAPE
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


def randomise(net, seed: int = SEED, task_head: dict[str, float] | None = None) -> None:
    """Give the random network outputs that vary over the image.

    Default initialisation of such a thin network yields near-constant boxes
    and scores (every anchor alike), which would make the comparison trivial.
    Convolutions get variance-preserving (He) weights, batch norms random
    affine parameters, and the last layer of each head branch unit-variance
    weights. The DFL convolution is fixed (not trainable) and kept.
    `task_head` (the task models) sets the last box and class layers apart:
    box weights of std ``box_std`` keep the DFL softmax soft (saturated, it
    gives box edges on exact integers, where the mask crop rule ``x1 <= c <
    x2`` turns float noise of 1e-5 into a whole column), class weights
    ``cls_std`` and bias ``cls_bias`` spread the scores over 0.05..0.95 so a
    usual threshold keeps a handful of instances.
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
        # mask coefficients (cv4 of Segment), keypoints (cv4 of Pose), angle
        # (cv4 of OBB): unit-variance too, so masks, keypoints and angles vary
        for branch in getattr(head, "cv4", []):
            branch[-1].weight.normal_(0.0, 1.0, generator=gen)
        if task_head is not None:
            for branch in head.cv2:
                branch[-1].weight.normal_(0.0, task_head["box_std"], generator=gen)
            for branch in head.cv3:
                branch[-1].weight.normal_(0.0, task_head["cls_std"], generator=gen)
                branch[-1].bias.fill_(task_head["cls_bias"])


def center_mask_logits(net, image: np.ndarray, dynamic: bool) -> None:
    """Shift the mask-coefficient bias so that the mask logits of the best-scored
    anchors of `image` average 0 over the image.

    Random prototypes are mostly positive (SiLU), so the sign of the mean
    coefficient decides whether every mask is empty or full; centring makes
    the masks cover part of each box (the interesting case for the
    comparison). Deterministic: one forward pass on the first image."""
    import torch
    from ultralytics.data.augment import LetterBox

    x = LetterBox(IMGSZ, auto=dynamic, stride=32)(image=image)
    x = torch.from_numpy(
        np.ascontiguousarray(x[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255
    )
    head = net.model[-1]
    net.eval()
    with torch.no_grad():
        (y, protos), _ = net(x)
        top = y[0, 4 : 4 + head.nc].amax(0).argsort(descending=True)[:TASK_CANDIDATES]
        coef = y[0, 4 + head.nc :, top].mean(dim=1)  # (nm,) mean over the likely detections
        p_mean = protos[0].mean(dim=(1, 2))  # (nm,)
        shift = -(coef @ p_mean) / (p_mean @ p_mean) * p_mean
        for branch in head.cv4:
            branch[-1].bias.add_(shift)


def build_and_export(
    kind: str,
    cfg: dict,
    workdir: Path,
    dynamic: bool,
    task_head: dict[str, float] | None = None,
    calibration: np.ndarray | None = None,
) -> Path:
    import torch
    from ultralytics import RTDETR, YOLO
    from ultralytics.utils import YAML

    torch.manual_seed(SEED)
    yaml_path = workdir / f"{kind}.yaml"
    YAML.save(yaml_path, cfg)
    model = RTDETR(str(yaml_path)) if kind.startswith("rtdetr") else YOLO(str(yaml_path))
    model.model.names = dict(enumerate(CLASS_NAMES[: cfg["nc"]]))
    randomise(model.model, task_head=task_head)
    if calibration is not None and type(model.model.model[-1]).__name__.startswith("Segment"):
        center_mask_logits(model.model, calibration, dynamic)
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


def predict(
    onnx_path: Path,
    images: list[np.ndarray],
    kind: str,
    task: str = "detect",
    conf: float = CONF,
) -> list[dict]:
    """Ultralytics predictor on each image separately (batch 1, the predictor's
    rect letterbox for dynamic models). Masks at the image's resolution
    (``retina_masks=True``), stored bit-packed along x (``np.packbits``)."""
    from ultralytics import RTDETR, YOLO

    model = RTDETR(str(onnx_path)) if kind.startswith("rtdetr") else YOLO(str(onnx_path), task=task)
    kw = {"conf": conf, "iou": IOU, "max_det": MAX_DET, "imgsz": IMGSZ, "verbose": False}
    if task == "segment":
        kw["retina_masks"] = True
    results = []
    for batch in [[im] for im in images]:
        res = model.predict(batch, **kw)
        results.extend(res)
    out = []
    for r in results:
        if task == "obb":
            boxes = r.obb
            entry = {
                "xyxy": boxes.xyxy.cpu().numpy().astype(np.float32),
                "obb": boxes.xywhr.cpu().numpy().astype(np.float32),
            }
        else:
            boxes = r.boxes
            entry = {"xyxy": boxes.xyxy.cpu().numpy().astype(np.float32)}
        entry["scores"] = boxes.conf.cpu().numpy().astype(np.float32)
        entry["classes"] = boxes.cls.cpu().numpy().astype(np.int32)
        if task == "segment":
            h, w = r.orig_shape
            dense = (
                r.masks.data.cpu().numpy().astype(bool)
                if r.masks is not None
                else np.zeros((0, h, w), bool)
            )
            entry["masks"] = np.packbits(dense, axis=-1)
            entry["mask_shape"] = np.array(dense.shape, np.int32)
        if task == "pose":
            entry["keypoints"] = r.keypoints.data.cpu().numpy().astype(np.float32)
        out.append(entry)
    return out


def candidate_count(
    onnx_path: Path, image: np.ndarray, kind: str, nc: int = NUM_CLASSES, conf: float = CONF
) -> int:
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
        return int((y[0, :, 4] > conf).sum())
    return int((y[0, 4 : 4 + nc].max(0) > conf).sum())


def pick_conf(onnx_path: Path, image: np.ndarray, dynamic: bool, nc: int, target: int) -> float:
    """A threshold that lets about `target` anchors of `image` through: the
    middle of the widest gap between neighbouring scores near the target-th
    best, so no score sits next to the threshold (our scores and the
    predictor's differ by ~1e-6; a tie at the threshold would be a coin flip)."""
    import onnxruntime as ort
    from ultralytics.data.augment import LetterBox

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = LetterBox(IMGSZ, auto=dynamic, stride=32)(image=image)
    x = x[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    y = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x)})[0]
    scores = np.sort(y[0, 4 : 4 + nc].max(0))[::-1]
    lo, hi = max(target - 10, 0), min(target + 10, scores.size - 1)
    gaps = scores[lo:hi] - scores[lo + 1 : hi + 1]
    i = lo + int(np.argmax(gaps))
    return round(float(scores[i] + scores[i + 1]) / 2, 5)


# kind, task, yaml version, dynamic input
TASK_SPECS = [
    ("yolo11t_seg_dynamic", "segment", "11", True),
    ("yolov8t_seg_fixed", "segment", "v8", False),
    ("yolo11t_pose_fixed", "pose", "11", False),
    ("yolo11t_obb_dynamic", "obb", "11", True),
]
TASK_CANDIDATES = 30  # anchors above the threshold on scene_a; NMS keeps fewer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--only", nargs="+", metavar="KIND", help="regenerate only these models, keep the rest"
    )
    args = parser.parse_args(argv)
    import ultralytics

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    box_specs = [
        ("yolo11t_dynamic", tiny_yolo11_cfg(), True),
        ("yolo11t_fixed", tiny_yolo11_cfg(), False),
        ("rtdetr_tiny", tiny_rtdetr_cfg(), False),
    ]
    every = [k for k, _, _ in box_specs] + [k for k, *_ in TASK_SPECS]
    only = set(args.only or every)
    unknown = only - set(every)
    if unknown:
        parser.error(f"--only: unknown models {sorted(unknown)}; expected some of {every}")
    images = make_images()
    if args.only is None:
        for stale in out.glob("*.png"):
            stale.unlink()
        for name, img in images.items():
            cv2.imwrite(str(out / name), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    # read back exactly what the test will read
    loaded = {name: cv2.imread(str(out / name), cv2.IMREAD_COLOR) for name in images}
    loaded["scene_a_mirror"] = same_size_partner(loaded["scene_a.png"])
    names = list(loaded)
    old = out / "manifest.json"
    manifest: dict = json.loads(old.read_text()) if args.only and old.exists() else {}
    manifest.update(
        {
            "ultralytics_version": ultralytics.__version__,
            "conf": CONF,
            "iou": IOU,
            "max_det": MAX_DET,
            "imgsz": IMGSZ,
            "class_names": CLASS_NAMES,
            "images": names,
        }
    )
    manifest.setdefault("models", {})
    manifest.setdefault("task_models", {})
    files = {"models": "ultralytics_predictions.npz", "task_models": "ultralytics_tasks.npz"}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for section, fname in files.items():
        path = out / fname
        kept = {}
        if args.only and path.exists():
            with np.load(path) as old_arrays:
                kept = {k: old_arrays[k] for k in old_arrays.files if k.split("/")[0] not in only}
        arrays[section] = kept
    specs = [(k, cfg, dyn, "detect", "models") for k, cfg, dyn in box_specs] + [
        (k, tiny_task_cfg(task, ver), dyn, task, "task_models") for k, task, ver, dyn in TASK_SPECS
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, cfg, dynamic, task, section in specs:
            if kind not in only:
                continue
            work = Path(tmp) / kind
            work.mkdir()
            head = None if task == "detect" else TASK_HEAD
            exported = build_and_export(kind, cfg, work, dynamic, head, loaded[names[0]])
            target = out / f"{kind}.onnx"
            shutil.move(exported, target)  # the exporter writes into the cwd
            compact_onnx(target)
            nc = cfg.get("nc", NUM_CLASSES)
            conf = CONF
            if task != "detect":
                conf = pick_conf(target, loaded[names[0]], dynamic, nc, TASK_CANDIDATES)
            preds = predict(target, [loaded[n] for n in names], kind, task, conf)
            counts = {n: candidate_count(target, loaded[n], kind, nc, conf) for n in names}
            for n, p in zip(names, preds, strict=True):
                for key, value in p.items():
                    arrays[section][f"{kind}/{n}/{key}"] = value
            entry = {
                "file": target.name,
                "dynamic": dynamic,
                "candidates_above_conf": counts,
                "detections": {n: len(p["scores"]) for n, p in zip(names, preds, strict=True)},
            }
            if section == "task_models":
                entry = {"task": task, "conf": conf, "num_classes": nc, **entry}
                if task == "pose":
                    entry["kpt_shape"] = cfg["kpt_shape"]
            manifest[section][kind] = entry
    touched = {section for kind, *_, section in specs if kind in only}
    for section, fname in files.items():
        if section in touched:
            np.savez_compressed(out / fname, **arrays[section])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({k: manifest[k] for k in files}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
