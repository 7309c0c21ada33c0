"""The demo's pipeline: which model, which shipped pipeline file, the few
overrides the demo needs on top of it, and the run_config process.

The pipeline is exactly config/pipeline_carla.yaml (scenario) or
config/pipeline_camera.yaml (real video), the files a vehicle runs with
`ros2 launch perception pipeline.launch.py` or `python -m
perception.ros.run_config`; `demo_overrides` is the one place that lists what
the demo changes, and why.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DemoError",
    "Topology",
    "class_names_of",
    "demo_overrides",
    "load_topology",
    "pipeline_env",
    "resolve_model",
    "start_pipeline",
]

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_MODEL = REPO / "models" / "default_detector.onnx"
FALLBACK_MODEL = SHARED / "yolox_nano.onnx"
FALLBACK_LABELS = REPO / "config" / "coco80.labels"
SCENARIO_CONFIG = REPO / "config" / "pipeline_carla.yaml"
VIDEO_CONFIG = REPO / "config" / "pipeline_camera.yaml"
DDS_PROFILE = REPO / "config" / "fastdds_large_images.xml"
ROLE = "ego_vehicle"


class DemoError(RuntimeError):
    """The demo could not run (missing model, a process died, no output)."""


# --------------------------------------------------------------------- model
def resolve_model(model: Path | None, labels: Path | None) -> tuple[Path, Path | None]:
    """The model to run: the given one, else the project's default detector,
    else the shared YOLOX-nano with the COCO labels."""
    if model is not None:
        if not model.is_file():
            raise DemoError(f"--model: expected an ONNX file, got missing {model}")
        return model, labels
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL, labels
    if FALLBACK_MODEL.is_file():
        return FALLBACK_MODEL, labels or FALLBACK_LABELS
    raise DemoError(
        f"no model: expected {DEFAULT_MODEL} or {FALLBACK_MODEL}, found neither (pass --model)"
    )


def class_names_of(model: Path, labels: Path | None) -> list[str]:
    """Class names as the detector will publish them (labels file, else the
    ONNX metadata 'names' of Ultralytics exports)."""
    if labels is not None:
        return [ln.strip() for ln in labels.read_text().splitlines() if ln.strip()]
    import onnxruntime as ort

    meta = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = meta.get_modelmeta().custom_metadata_map.get("names", "")
    if not names:
        return []
    parsed = ast.literal_eval(names)
    if isinstance(parsed, dict):
        return [str(parsed[k]) for k in sorted(parsed)]
    return [str(n) for n in parsed]


# --------------------------------------------------------------------- topology
@dataclass(frozen=True)
class Topology:
    """The nodes of a loaded pipeline file the recorder listens to."""

    config: Path
    params: dict[str, dict[str, Any]]
    """node name -> its parameters (dotted names, overrides applied)."""
    detector: str
    cameras: tuple[str, ...]
    fusion: tuple[str, ...]
    overlay: str

    def image_topic(self, camera: str) -> str:
        return str(self.params[self.detector][f"cameras.{camera}.topic"])

    def detector_topic(self, camera: str, output: str) -> str:
        """/<detector>/<camera>/<output> (detections, tracks, latency)."""
        return f"/{self.detector}/{camera}/{output}"

    def objects_topic(self, fusion: str) -> str:
        return f"/{fusion}/objects"

    @property
    def overlay_topic(self) -> str:
        out = str(self.params[self.overlay].get("output_topic", "~/image"))
        return out.replace("~", f"/{self.overlay}", 1) if out.startswith("~") else out


def load_topology(config: Path, overrides: list[str]) -> Topology:
    """Read a pipeline file as run_config will (same overrides, same checks)."""
    from perception.config.files import TYPE_KEY, load_config

    try:
        data = load_config(config, overrides)
    except (OSError, ValueError) as exc:
        raise DemoError(f"{config.name}: {exc}") from exc
    params = {name: body["ros__parameters"] for name, body in data.items()}

    def of_kind(*kinds: str) -> list[str]:
        return [n for n, p in params.items() if p[TYPE_KEY] in kinds]

    detectors, overlays = of_kind("detector", "detector_lifecycle"), of_kind("overlay")
    if len(detectors) != 1 or not overlays:
        raise DemoError(
            f"{config.name}: expected one detector and an overlay node, got "
            f"detectors {detectors}, overlays {overlays}"
        )
    return Topology(
        config=config,
        params=params,
        detector=detectors[0],
        cameras=tuple(params[detectors[0]]["camera_names"]),
        fusion=tuple(of_kind("fusion")),
        overlay=overlays[0],
    )


def demo_overrides(topo: Topology, model: Path, labels: Path | None, names: list[str]) -> list[str]:
    """The demo's only changes to the shipped pipeline file (`--set` items).

    - model.path (and model.labels_file when given): the file leaves them to
      the user.
    - class_names of the fusion and overlay nodes, where they differ from the
      file's (the default detector's classes): another model, e.g. the COCO
      fallback, has other classes.
    - max_age_ms 0: the scenario plays at a fixed speed on a shared CPU and
      every frame is scored, so none may be dropped for its age (a vehicle
      keeps the default and drops frames it is too late for).
    - reliable camera subscriptions, queue depth 2 (detector) and reliable
      images for the overlay: no frame lost between processes, so the scores
      and the overlay video cover every published frame (the files keep the
      sensor-data default, best effort).
    """
    q = json.dumps  # JSON is YAML: strings and lists survive run_config's parsing
    det = topo.detector
    out = [f"{det}.model.path={q(str(model))}"]
    if labels is not None:
        out.append(f"{det}.model.labels_file={q(str(labels))}")
    if names:
        for node in (*topo.fusion, topo.overlay):
            if list(topo.params[node].get("class_names", [])) != names:
                out.append(f"{node}.class_names={q(names)}")
    out.append(f"{det}.max_age_ms=0.0")
    for cam in topo.cameras:
        out += [f"{det}.cameras.{cam}.qos.reliability=reliable", f"{det}.cameras.{cam}.qos.depth=2"]
    out.append(f"{topo.overlay}.image_qos.reliability=reliable")
    return out


# --------------------------------------------------------------------- processes
def pipeline_env() -> dict[str, str]:
    """Environment of the demo's processes: the large-image Fast DDS profile
    (shared memory, loopback only) and this checkout on PYTHONPATH."""
    return {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(DDS_PROFILE),
        "RMW_FASTRTPS_USE_QOS_FROM_XML": "0",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }


def pipeline_argv(topo: Topology, overrides: list[str]) -> list[str]:
    """`python -m perception.ros.run_config <file> --set ...` (no launch_ros)."""
    argv = [sys.executable, "-m", "perception.ros.run_config", str(topo.config)]
    for item in overrides:
        argv += ["--set", item]
    return argv


def start_pipeline(topo: Topology, overrides: list[str], env: dict[str, str]) -> Any:
    """The pipeline as one run_config process (a perception.ros.testing.NodeProcess,
    stopped with SIGINT by its stop())."""
    from perception.ros.testing import NodeProcess

    return NodeProcess(pipeline_argv(topo, overrides), env=env)
