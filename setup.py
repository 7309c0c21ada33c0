"""ament_python build for perception: `colcon build` installs the package, its
launch and config files, and registers the executables under lib/perception."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "perception"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE_NAME]),
        ("share/" + PACKAGE_NAME, ["package.xml"]),
        ("share/" + PACKAGE_NAME + "/launch", glob("launch/*.launch.py")),
        (
            "share/" + PACKAGE_NAME + "/config",
            glob("config/*.yaml") + glob("config/*.labels") + glob("config/*.xml"),
        ),
    ],
    package_data={"perception.ros": ["specs/*.yaml"]},
    install_requires=["setuptools", "numpy>=1.21", "PyYAML"],
    extras_require={
        "cpu": ["onnxruntime", "onnx", "opencv-python-headless", "scipy", "lap"],
        "fusion": ["open3d-cpu"],
        "bags": ["rosbags"],
    },
    python_requires=">=3.10",
    zip_safe=True,
    maintainer="perception maintainers",
    maintainer_email="perception@example.com",
    description="Multi-camera detection, tracking and 3D fusion for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "detector_node = perception.ros.detector_node:main",
            "detector_lifecycle_node = perception.ros.detector_node:lifecycle_main",
            "tracker_node = perception.ros.tracker_node:main",
            "overlay_node = perception.ros.overlay_node:main",
            "fusion_node = perception.ros.fusion_node:main",
            "scenario_publisher = perception.sim.ros_publisher:main",
            "scenario_bag = perception.sim.bag:main",
            "sim_preview = perception.sim.preview:main",
            "run_config = perception.ros.run_config:main",
            "image_publisher = perception.ros.tools.image_publisher:main",
            "detection_echo = perception.ros.tools.detection_echo:main",
            "perception_run = perception.cli.run:main",
            "perception_detect = perception.cli.detect:main",
            "perception_track = perception.cli.track:main",
            "perception_build_engine = perception.cli.build_engine:main",
            "perception = perception.replay.cli:main",
        ],
    },
)
