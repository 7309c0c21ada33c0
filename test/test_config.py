"""perception.config: specs read without ROS, typed classes generated from them and
kept fresh, tracker sections equal to the core dataclasses field by field."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from perception.config import (
    CameraParams,
    DetectorParams,
    FusionParams,
    OverlayParams,
    ParameterError,
    SpecParams,
    Tracker3DParams,
    TrackerNodeParams,
    TrackerParams,
    load_spec,
    resolve,
    select,
)
from perception.config import generated as generated_module
from perception.config.spec import SPEC_DIR
from perception.core.tracking import TrackerConfig
from perception.core.tracking.config import UNIT_INTERVAL_FIELDS, TrackerConfigError
from perception.core.tracking.tracker3d import Tracker3DConfig

REPO = Path(__file__).resolve().parents[1]
TOP = (
    DetectorParams,
    CameraParams,
    FusionParams,
    OverlayParams,
    TrackerParams,
    Tracker3DParams,
    TrackerNodeParams,
)


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_config", REPO / "tools" / "gen_config.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_file_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "generated.py"
    assert _gen_module().main(["--output", str(out)]) == 0
    committed = (REPO / "perception" / "config" / "generated.py").read_text()
    assert out.read_text() == committed, "run: python tools/gen_config.py"


def test_every_section_has_a_class() -> None:
    covered = {cls.SPEC for cls in TOP}
    for path in SPEC_DIR.glob("*.params.yaml"):
        stem = path.name.removesuffix(".params.yaml")
        for section in load_spec(stem):
            assert (stem, section) in covered, f"{stem}.{section} has no generated class"


@pytest.mark.parametrize("cls", TOP, ids=lambda c: c.__name__)
def test_defaults_round_trip_and_equal_the_spec(cls: type[SpecParams]) -> None:
    p = cls()
    flat = p.to_flat()
    specs = load_spec(cls.SPEC[0])[cls.SPEC[1]]
    assert set(flat) == set(specs)
    for name, spec in specs.items():
        assert flat[name] == spec.default, name
    assert cls.from_flat(flat) == p == cls.from_flat({})
    assert hash(p) == hash(cls.from_flat(flat))  # frozen, usable as a key


def test_attribute_access_and_annotations() -> None:
    d = DetectorParams.from_flat({"model.path": "m.onnx", "camera_names": ["a", "b"]})
    assert d.model.path == "m.onnx" and d.camera_names == ("a", "b")
    assert d.score_threshold == 0.3 and d.model.runtime == "onnxruntime"
    c = CameraParams()
    assert (c.topic, c.transport, c.qos.reliability, c.qos.depth) == ("", "raw", "best_effort", 1)
    assert OverlayParams().trails.max_points == 30
    hints = {f.name: f.type for f in dataclasses.fields(FusionParams)}
    assert hints["T_target_from_camera"] == "tuple[float, ...]"
    assert hints["class_names"] == "tuple[str, ...]" and hints["tracking"] == "bool"
    assert {f.name: f.type for f in dataclasses.fields(DetectorParams)}["model"] == (
        "DetectorModelParams"
    )


def test_values_checked_together_with_hints() -> None:
    with pytest.raises(ParameterError) as err:
        DetectorParams.from_flat(
            {"score_treshold": 0.5, "iou_threshold": 2, "model.runtime": "tflite"}, "det."
        )
    msg = str(err.value)
    assert "det.score_treshold: unknown parameter; did you mean det.score_threshold" in msg
    assert "det.iou_threshold: expected a value in [0.0, 1.0], got 2.0" in msg
    assert "det.model.runtime: expected one of" in msg
    with pytest.raises(ParameterError, match="max_detections: expected int"):
        DetectorParams(max_detections=1.5)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"max_age_ms.*got nan"):
        DetectorParams(max_age_ms=float("nan"))


def test_ints_for_doubles_and_lists_for_tuples() -> None:
    d = DetectorParams.from_flat({"score_threshold": 1, "model.build_input_shape": [1, 3, 4, 4]})
    assert d.score_threshold == 1.0 and isinstance(d.score_threshold, float)
    assert d.model.build_input_shape == (1, 3, 4, 4)
    f = FusionParams(T_camera_from_cloud=[1, 0, 0, 0])  # type: ignore[arg-type]
    assert f.T_camera_from_cloud == (1.0, 0.0, 0.0, 0.0)
    assert isinstance(f.T_camera_from_cloud[0], float)
    assert f.to_flat()["T_camera_from_cloud"] == [1.0, 0.0, 0.0, 0.0]
    assert resolve(load_spec("fusion")["node"], {"depth_scale": 2})["depth_scale"] == 2.0


def test_with_flat_and_select() -> None:
    flat = {"score_threshold": 0.6, "tracker.high_score": 0.7, "cameras.a.topic": "/a"}
    t = TrackerParams.from_flat(select(flat, "tracker."), "tracker.")
    assert t.high_score == 0.7
    assert CameraParams.from_flat(select(flat, "cameras.a.")).topic == "/a"
    assert t.with_flat({"min_hits": 3}).min_hits == 3 and t.min_hits == 2
    with pytest.raises(ParameterError, match=r"tracker\.solver"):
        t.with_flat({"solver": "hungarian"}, "tracker.")


def test_nested_classes_work_alone() -> None:
    q = type(CameraParams().qos).from_flat({"depth": 5})
    assert q.depth == 5 and CameraParams(qos=q).to_flat()["qos.depth"] == 5
    with pytest.raises(ParameterError, match=r"cameras\.x\.qos\.depth"):
        CameraParams.from_flat({"qos.depth": 0}, "cameras.x.")


@pytest.mark.parametrize(
    ("params", "config"), [(TrackerParams, TrackerConfig), (Tracker3DParams, Tracker3DConfig)]
)
def test_tracker_sections_equal_the_core_dataclasses(params, config) -> None:
    spec_fields = [f.name for f in dataclasses.fields(params)]
    core_fields = [f.name for f in dataclasses.fields(config)]
    assert spec_fields == core_fields
    assert params().to_config() == config()
    defaults = config()
    for name, spec in load_spec("tracker")[params.SPEC[1]].items():
        assert spec.default == getattr(defaults, name), name
        assert type(spec.default) is type(getattr(defaults, name)), name


# the lowest value TrackerConfig accepts for each field it bounds from below
LOWER_BOUNDS = {"recovery_max_scale": 1.0, "match_distance": 0.0, "min_hits": 1,
                "max_lost_s": 0.0, "direction_weight": 0.0, "direction_delta_s": 0.0,
                "output_lost_s": 0.0, "reorder_tolerance_s": 0.0}  # fmt: skip


def test_tracker_ranges_match_the_core_rules() -> None:
    specs = load_spec("tracker")["tracker"]
    ranged = {n for n, s in specs.items() if s.range is not None}
    assert ranged == set(UNIT_INTERVAL_FIELDS) | set(LOWER_BOUNDS)
    assert all(specs[n].range == (0.0, 1.0) for n in UNIT_INTERVAL_FIELDS)
    for name, low in LOWER_BOUNDS.items():  # the spec refuses what the tracker refuses
        lo, hi = specs[name].range
        assert lo == low and type(lo) is type(specs[name].default), name
        TrackerConfig(**{name: lo})
        TrackerConfig(**{name: hi})
        with pytest.raises(TrackerConfigError, match=name):
            TrackerConfig(**{name: lo - 1 if isinstance(lo, int) else lo - 0.01})
    assert specs["solver"].choices == ("lap", "scipy")
    assert all(s.dynamic for s in specs.values())


def test_tracker_params_refuse_what_the_tracker_refuses() -> None:
    with pytest.raises(ParameterError, match="low_score"):
        TrackerParams(low_score=0.8)
    with pytest.raises(ParameterError, match="min_hits"):
        Tracker3DParams.from_flat({"min_hits": 0})
    cfg = TrackerParams.from_flat({"high_score": 0.7, "solver": "scipy"}).to_config()
    assert cfg == TrackerConfig(high_score=0.7, solver="scipy")


def test_config_imports_without_ros() -> None:
    code = (
        "import sys, perception.config\n"
        "perception.config.TrackerParams().to_config()\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] in "
        "('rclpy', 'rcl_interfaces', 'launch', 'launch_ros') or m.endswith('_msgs')))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


def test_generated_module_lists_every_class() -> None:
    names = {
        n
        for n, o in vars(generated_module).items()
        if isinstance(o, type)
        and issubclass(o, SpecParams)
        and o.__module__ == "perception.config.generated"
    }
    assert names == set(generated_module.__all__)


def test_pipeline_files_refuse_misspelled_parameters():
    """rclpy silently ignores an undeclared name; loading a pipeline file does not."""
    from perception.config.files import load_config

    repo = Path(__file__).resolve().parents[1]
    for path in sorted((repo / "config").glob("*.yaml")):
        load_config(path, [])  # every shipped file is clean
    with pytest.raises(ParameterError) as err:
        load_config(
            repo / "config" / "pipeline_carla.yaml",
            ["detector.score_treshold=0.5", "detector.cameras.rgb_front.topik=/x"],
        )
    assert "did you mean detector.score_threshold" in str(err.value)
    assert "detector.cameras.rgb_front.topik: unknown parameter" in str(err.value)
    with pytest.raises(ParameterError, match=r"fusion_front.tracker3d.min_hitz"):
        load_config(repo / "config" / "pipeline_carla.yaml", ["fusion_front.tracker3d.min_hitz=3"])


def test_pipeline_files_refuse_camera_names_that_are_no_ros_names():
    from perception.config.files import load_config

    repo = Path(__file__).resolve().parents[1]
    with pytest.raises(
        ParameterError, match=r"detector.camera_names: invalid camera name '../evil'"
    ):
        load_config(repo / "config" / "pipeline_carla.yaml", ["detector.camera_names=[../evil]"])
