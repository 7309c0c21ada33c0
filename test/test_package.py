"""Packaging: package.xml parses, agrees with setup.py, core stays ROS-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROS_MODULES = (
    "rclpy",
    "rosidl",
    "launch",
    "launch_ros",
    "cv_bridge",
    "message_filters",
    "tf2_ros",
    "rosbag2_py",
    "ament_index_python",
)


def _setup_kwargs() -> dict:
    tree = ast.parse((REPO / "setup.py").read_text())
    consts = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"
    )
    out = {}
    for kw in call.keywords:
        if isinstance(kw.value, ast.Constant):
            out[kw.arg] = kw.value.value
        elif isinstance(kw.value, ast.Name) and kw.value.id in consts:
            out[kw.arg] = consts[kw.value.id]
    out["entry_points"] = next(
        ast.literal_eval(kw.value) for kw in call.keywords if kw.arg == "entry_points"
    )
    return out


def test_package_xml_parses_and_matches_setup_py():
    catkin_pkg = pytest.importorskip("catkin_pkg.package", reason="catkin_pkg not installed")
    pkg = catkin_pkg.parse_package(str(REPO))
    setup = _setup_kwargs()
    assert pkg.name == setup["name"] == "perception"
    assert pkg.version == setup["version"]
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_python"
    deps = {d.name for d in pkg.build_depends + pkg.exec_depends}
    for required in (
        "rclpy",
        "sensor_msgs",
        "vision_msgs",
        "visualization_msgs",
        "diagnostic_msgs",
        "geometry_msgs",
        "std_msgs",
        "cv_bridge",
        "python3-numpy",
        "python3-opencv",
        "launch_ros",
    ):
        assert required in deps, f"package.xml lacks a dependency on {required}"
    assert (REPO / "resource" / "perception").is_file()


def test_entry_points_resolve():
    for spec in _setup_kwargs()["entry_points"]["console_scripts"]:
        name, target = (s.strip() for s in spec.split("="))
        module, func = target.split(":")
        src = REPO / (module.replace(".", "/") + ".py")
        assert src.is_file(), f"entry point {name}: {src} missing"
        tree = ast.parse(src.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), (
            f"entry point {name}: no function {func} in {module}"
        )


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


ROS_FREE = ("core", "pipeline", "config")
"""Packages that must run without ROS (replay, CLIs, a Ray worker)."""


def _ros_free_files() -> list[Path]:
    return sorted(p for d in ROS_FREE for p in (REPO / "perception" / d).rglob("*.py"))


def test_core_has_no_ros_imports_statically():
    offenders = []
    for path in _ros_free_files():
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ROS_MODULES or top.endswith(("_msgs", "_interfaces")):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offenders, f"perception/{ROS_FREE} must stay free of ROS:\n" + "\n".join(offenders)


def test_core_imports_without_loading_ros():
    mods = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in _ros_free_files()
    )
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{ROS_MODULES!r} or m.split('.')[0].endswith('_msgs'))\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"importing {ROS_FREE} loaded ROS modules: {res.stdout}"


def test_no_node_module_imports_another():
    """Nodes are independent drivers: shared code lives in the pipeline or ros helpers."""
    nodes = sorted((REPO / "perception" / "ros").glob("*_node.py"))
    names = {f"perception.ros.{p.stem}" for p in nodes}
    offenders = [
        f"{p.name} imports {m}"
        for p in nodes
        for m in _imports(p) & names
        if not m.endswith(p.stem)
    ]
    assert not offenders, offenders
