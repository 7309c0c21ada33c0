"""perception.ros.params with real rclpy: declare_params declares every parameter of a
generated class with typed descriptors and returns the typed object."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from perception.config import CameraParams, DetectorParams, TrackerParams  # noqa: E402
from perception.ros.params import (  # noqa: E402
    ParameterError,
    declare_params,
    param_changes,
    specs_of,
    tracker_param_specs,
)


def test_declare_params_typed_with_descriptors(ros_context) -> None:
    node = rclpy.create_node(
        "config_ros_test",
        context=ros_context,
        parameter_overrides=[
            Parameter("camera_names", value=["front"]),
            Parameter("model.path", value="/m.onnx"),
            Parameter("cameras.front.topic", value="/front/image"),
            Parameter("tracker.high_score", value=0.7),
        ],
    )
    try:
        d = declare_params(node, DetectorParams)
        assert d.camera_names == ("front",) and d.model.path == "/m.onnx"
        assert d.model.build_input_shape == ()  # empty list declared by type
        cam = declare_params(node, CameraParams, "cameras.front.")
        assert cam.topic == "/front/image" and cam.qos.depth == 1
        t = declare_params(node, TrackerParams, "tracker.")
        assert t.high_score == 0.7 and t.to_config().high_score == 0.7
        desc = node.describe_parameter("score_threshold")
        assert desc.type == ParameterType.PARAMETER_DOUBLE and not desc.read_only
        assert desc.floating_point_range[0].to_value == 1.0
        assert node.describe_parameter("model.runtime").read_only
        assert node.describe_parameter("cameras.front.qos.depth").integer_range[0].to_value == 100
        assert set(specs_of(TrackerParams)) == set(tracker_param_specs())
        changes = param_changes(
            [Parameter("tracker.min_hits", value=3), Parameter("score_threshold", value=0.5)],
            "tracker.",
        )
        assert changes == {"min_hits": 3}
    finally:
        node.destroy_node()


def test_declare_params_lists_every_bad_value(ros_context) -> None:
    node = rclpy.create_node(
        "config_ros_bad",
        context=ros_context,
        parameter_overrides=[
            Parameter("model.runtime", value="tflite"),
            Parameter("max_detections", value=0),
        ],
    )
    try:
        with pytest.raises(ParameterError) as err:
            declare_params(node, DetectorParams)
        assert "model.runtime: expected one of" in str(err.value)
        assert "max_detections: expected a value in [1, 100000]" in str(err.value)
    finally:
        node.destroy_node()
