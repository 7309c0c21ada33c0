"""Config files, the launch-free runner's config handling, and launch files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config").glob("*.yaml"))
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))


PIPELINES = sorted((REPO / "config").glob("pipeline_*.yaml"))
# launch file -> the config it launches by default (config:= picks another)
LAUNCH_DEFAULT = {"pipeline": "pipeline_carla"}
# run_config node kind -> its parameter spec (perception/ros/specs/<spec>.params.yaml)
SPEC_OF_KIND = {"detector": "detector", "detector_lifecycle": "detector", "fusion": "fusion",
                "overlay": "overlay", "tracker": "tracker"}  # fmt: skip


def test_every_launch_file_has_its_config():
    launched = {p.name.removesuffix(".launch.py") for p in LAUNCH_FILES}
    assert {LAUNCH_DEFAULT.get(n, n) for n in launched} <= {p.stem for p in CONFIGS}
    assert {"single_camera", "multi_camera", "carla", "gazebo"} <= {p.stem for p in CONFIGS}
    assert {"pipeline_carla", "pipeline_camera", "pipeline_gazebo"} <= {p.stem for p in PIPELINES}


def _nodes(config: Path) -> dict[str, dict]:
    """node name -> flattened parameters, as run_config reads the file."""
    from perception.ros.run_config import load_config

    return {n: b["ros__parameters"] for n, b in load_config(config, []).items()}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_configs_use_only_declared_parameters(config):
    """Every node of every file in config/ is a kind run_config knows and every
    parameter it sets exists in that kind's spec with a valid value (no typo
    silently ignored), and no value is an empty list (rcl cannot type it)."""
    pytest.importorskip("rclpy")
    from perception.config.files import param_groups
    from perception.ros.params import SPEC_DIR, validate
    from perception.ros.run_config import NODE_TYPES, TYPE_KEY

    for node, params in _nodes(config).items():
        kind = params.pop(TYPE_KEY)
        assert kind in NODE_TYPES, f"{config.name}: {node}: unknown kind {kind!r}"
        assert (SPEC_DIR / f"{SPEC_OF_KIND[kind]}.params.yaml").is_file(), kind
        params.pop("use_sim_time", None)
        cams = params.get("camera_names", [])
        # the groups the node declares (node, cameras.<name>., tracker. ...), longest prefix first
        groups = sorted(param_groups(kind, params), key=lambda g: -len(g[0]))
        for name, value in params.items():
            assert value != [], f"{config.name}: {node}.{name}: an empty list (rcl refuses it)"
            if name.startswith("cameras."):
                cam = name.split(".", 2)[1]
                assert cam in cams, f"{config.name}: {name} for a camera not in camera_names"
            prefix, specs = next((p, g) for p, g in groups if name.startswith(p))
            key = name[len(prefix) :]
            assert key in specs, f"{config.name}: {node}: unknown parameter {name}"
            s = specs[key]
            assert validate(name, s, value) is None, validate(name, s, value)
        for cam in cams:
            assert params.get(f"cameras.{cam}.topic"), f"{config.name}: {cam} has no topic"


def _matrix(values: list[float]) -> np.ndarray:
    m = np.asarray(values, np.float64)
    assert m.shape == (16,), m.shape
    return m.reshape(4, 4)


@pytest.mark.parametrize("config", PIPELINES, ids=lambda p: p.name)
def test_pipeline_files_are_wired(config):
    """A pipeline file is one connected graph: fusion and overlay read the
    detector's outputs and its cameras' topics, the overlay draws the 3D
    objects of the fusion node of its camera with the inverse extrinsics."""
    from perception.ros.run_config import TYPE_KEY

    nodes = _nodes(config)
    kinds = {n: p[TYPE_KEY] for n, p in nodes.items()}
    detectors = [n for n, k in kinds.items() if k.startswith("detector")]
    assert len(detectors) == 1, kinds
    det = nodes[detectors[0]]
    assert det["tracking"] is True
    cam_of_tracks = {f"/{detectors[0]}/{c}/tracks": c for c in det["camera_names"]}
    fusion_of_objects = {}
    for name, p in nodes.items():
        if kinds[name] == "fusion":
            cam = cam_of_tracks[p["detections_topic"]]
            assert p["camera_info_topic"] == det[f"cameras.{cam}.camera_info_topic"], name
            fusion_of_objects[f"/{name}/objects"] = (cam, p)
    overlays = [n for n, k in kinds.items() if k == "overlay"]
    assert overlays, kinds
    for name in overlays:
        p = nodes[name]
        cam = cam_of_tracks[p["tracks_topic"]]
        assert p["image_topic"] == det[f"cameras.{cam}.topic"], name
        if p.get("objects_topic"):
            fcam, fusion = fusion_of_objects[p["objects_topic"]]
            assert fcam == cam and p["camera_info_topic"] == fusion["camera_info_topic"], name
            inv = np.linalg.inv(_matrix(fusion["T_target_from_camera"]))
            np.testing.assert_allclose(_matrix(p["T_camera_from_objects"]), inv, atol=1e-12)


def test_pipeline_carla_extrinsics_are_the_rigs():
    """config/pipeline_carla.yaml's camera extrinsics are those of
    perception/sim/rig.py default_rig() (the demo scores against that rig)."""
    from perception.sim.layout import SimLayout
    from perception.sim.rig import default_rig

    nodes = _nodes(REPO / "config" / "pipeline_carla.yaml")
    rig, layout = default_rig(), SimLayout()
    for mount in rig.cameras:
        fusion = nodes[f"fusion_{mount.name.removeprefix('rgb_')}"]
        assert fusion["depth_topic"] == layout.depth_topic(mount.name)
        assert fusion["target_frame"] == layout.base_frame
        assert nodes["detector"][f"cameras.{mount.name}.topic"] == layout.image_topic(mount.name)
        np.testing.assert_allclose(
            _matrix(fusion["T_target_from_camera"]), mount.T_base_from_cam, atol=1e-12
        )
    np.testing.assert_allclose(
        _matrix(nodes["overlay_front"]["T_camera_from_objects"]),
        np.linalg.inv(rig.camera("rgb_front").T_base_from_cam),
        atol=1e-12,
    )
    assert nodes["detector"]["camera_names"] == [c.name for c in rig.cameras]


@pytest.mark.parametrize("config", PIPELINES, ids=lambda p: p.name)
def test_pipeline_launch_nodes(config):
    """pipeline.launch.py's reading of a file (no launch_ros needed): every
    node in file order, each with a console script of setup.py."""
    from perception.ros.launch_helpers import EXECUTABLES, pipeline_nodes
    from perception.ros.run_config import NODE_TYPES, TYPE_KEY

    nodes = pipeline_nodes(config)
    assert [n for n, _ in nodes] == list(yaml.safe_load(config.read_text()))
    assert [k for _, k in nodes] == [p[TYPE_KEY] for p in _nodes(config).values()]
    from perception.config.files import NODE_KINDS

    assert set(EXECUTABLES) == set(NODE_TYPES) == set(NODE_KINDS)
    setup = (REPO / "setup.py").read_text()
    for kind, exe in EXECUTABLES.items():
        module, _ = NODE_TYPES[kind].split(":")
        assert f'"{exe} = {module}:' in setup, (kind, exe)


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


def test_run_config_overrides_patterns_lists_and_empty_values():
    """One override reaches every node a pattern matches; lists and empty
    strings survive; a pattern matching nothing is refused (not ignored)."""
    from perception.ros.run_config import load_config

    config = REPO / "config" / "pipeline_carla.yaml"
    data = load_config(
        config,
        ['fusion_*.class_names=["car", "traffic light"]', "detector.model.labels_file=",
         "overlay_front.T_camera_from_objects=[1.0, 0.0]"],
    )  # fmt: skip
    params = {n: b["ros__parameters"] for n, b in data.items()}
    for name in ("fusion_front", "fusion_left", "fusion_right"):
        assert params[name]["class_names"] == ["car", "traffic light"]
    assert params["overlay_front"]["class_names"] == ["car", "pedestrian", "cyclist"]
    assert params["detector"]["model.labels_file"] == ""
    assert params["overlay_front"]["T_camera_from_objects"] == [1.0, 0.0]
    with pytest.raises(ValueError, match="matches none"):
        load_config(config, ["fusoin_*.mode=lidar"])


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files(launch_file):
    pytest.importorskip("launch_ros", reason="launch_ros is not installable here (no apt ROS)")
    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location("lf", launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    entities = list(ld.entities)
    if launch_file.name == "pipeline.launch.py":  # nodes come from the file chosen at launch
        from launch import LaunchContext

        context = LaunchContext()
        config = REPO / "config" / "pipeline_carla.yaml"
        context.launch_configurations.update({"config": str(config), "model": "/m.onnx",
                                              "labels": ""})  # fmt: skip
        entities = [a for e in entities if type(e).__name__ == "OpaqueFunction"
                    for a in e.execute(context)]  # fmt: skip
        assert len(entities) == len(yaml.safe_load(config.read_text())), entities
    assert any(type(e).__name__ in ("Node", "LifecycleNode") for e in entities)
