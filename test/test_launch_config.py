"""Config files, the launch-free runner's config handling, and launch files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config").glob("*.yaml"))
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))


def test_every_launch_file_has_its_config():
    assert {p.name.removesuffix(".launch.py") for p in LAUNCH_FILES} <= {p.stem for p in CONFIGS}
    assert {"single_camera", "multi_camera", "carla", "gazebo"} <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_configs_use_only_declared_parameters(config):
    """Every parameter set in config/ exists in the spec (no typo silently ignored)."""
    pytest.importorskip("rclpy")
    from perception.ros.params import load_spec, validate
    from perception.ros.run_config import TYPE_KEY, flatten

    spec = load_spec("detector")
    for node, body in yaml.safe_load(config.read_text()).items():
        params = flatten(body["ros__parameters"])
        assert params.pop(TYPE_KEY) in ("detector", "detector_lifecycle"), node
        params.pop("use_sim_time", None)
        cams = params["camera_names"]
        for name, value in params.items():
            if name.startswith("cameras."):
                _, cam, key = name.split(".", 2)
                assert cam in cams, f"{config.name}: {name} for a camera not in camera_names"
                s = spec["camera"][key]
            else:
                assert name in spec["node"], f"{config.name}: unknown parameter {name}"
                s = spec["node"][name]
            assert validate(name, s, value) is None, validate(name, s, value)
        for cam in cams:
            assert params.get(f"cameras.{cam}.topic"), f"{config.name}: {cam} has no topic"


@pytest.mark.parametrize("spec", sorted((REPO / "perception" / "ros" / "specs").glob("*.yaml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_parameter_specs_load_and_defaults_validate(spec):
    pytest.importorskip("rclpy")
    from perception.ros.params import load_spec, validate

    for section in load_spec(spec.name.removesuffix(".params.yaml")).values():
        for name, s in section.items():
            if not (isinstance(s.default, list) and not s.default):
                assert validate(name, s, s.default) is None, validate(name, s, s.default)


def test_run_config_node_types_exist():
    pytest.importorskip("rclpy")
    from perception.ros.run_config import NODE_TYPES, _node_class

    for kind in NODE_TYPES:
        assert callable(_node_class(kind))


def test_run_config_overrides_and_errors(tmp_path):
    pytest.importorskip("rclpy")
    from perception.ros.run_config import load_config

    data = load_config(
        REPO / "config" / "carla.yaml",
        ["detector.model.path=/m.onnx", "detector.score_threshold=0.5"],
    )
    params = data["detector"]["ros__parameters"]
    assert params["model.path"] == "/m.onnx" and params["score_threshold"] == 0.5
    assert params["cameras.rgb_front.topic"] == "/carla/ego_vehicle/rgb_front/image"
    with pytest.raises(ValueError, match=r"expected NODE\.PARAM=VALUE"):
        load_config(REPO / "config" / "carla.yaml", ["nonsense"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("x:\n  ros__parameters:\n    perception.node_type: teleporter\n")
    with pytest.raises(ValueError, match="expected one of"):
        load_config(bad, [])
    missing = tmp_path / "missing.yaml"
    missing.write_text("x:\n  ros__parameters:\n    a: 1\n")
    with pytest.raises(ValueError, match=r"perception\.node_type"):
        load_config(missing, [])


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files(launch_file):
    pytest.importorskip("launch_ros", reason="launch_ros is not installable here (no apt ROS)")
    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location("lf", launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    assert any(type(e).__name__ in ("Node", "LifecycleNode") for e in ld.entities)
