"""Parameters declared from one YAML spec: types, defaults, ranges, choices.

The spec (perception/ros/specs/*.params.yaml) is the single source of
defaults: nodes declare every parameter from it with a typed descriptor, the
config files in config/ only override values, and the same validator runs at
start-up and in the on-set callback, so a bad value is refused with the same
reason either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

__all__ = [
    "ParamSpec",
    "ParameterError",
    "declare_from_spec",
    "load_spec",
    "transform_param",
    "validate",
]

SPEC_DIR = Path(__file__).resolve().parent / "specs"

_TYPES = {
    "bool": (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
    "int": (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
    "double": (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
    "string": (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
    "string_array": (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
    "double_array": (ParameterType.PARAMETER_DOUBLE_ARRAY, Parameter.Type.DOUBLE_ARRAY),
    "int_array": (ParameterType.PARAMETER_INTEGER_ARRAY, Parameter.Type.INTEGER_ARRAY),
}


class ParameterError(ValueError):
    """A parameter value is invalid; the message names it, what is allowed and the value."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    description: str = ""
    choices: tuple[Any, ...] | None = None
    range: tuple[float, float] | None = None
    dynamic: bool = False

    def descriptor(self, full_name: str) -> ParameterDescriptor:
        d = ParameterDescriptor(
            name=full_name,
            type=_TYPES[self.type][0],
            description=self.description,
            read_only=not self.dynamic,
        )
        if self.choices is not None:
            d.additional_constraints = "one of: " + ", ".join(repr(c) for c in self.choices)
        if self.range is not None and self.type == "int":
            d.integer_range = [
                IntegerRange(from_value=int(self.range[0]), to_value=int(self.range[1]))
            ]
        elif self.range is not None and self.type == "double":
            d.floating_point_range = [
                FloatingPointRange(from_value=float(self.range[0]), to_value=float(self.range[1]))
            ]
        return d


@cache
def load_spec(name: str) -> dict[str, dict[str, ParamSpec]]:
    """Load specs/<name>.params.yaml as {section: {param: ParamSpec}}."""
    path = SPEC_DIR / f"{name}.params.yaml"
    raw = yaml.safe_load(path.read_text())
    out: dict[str, dict[str, ParamSpec]] = {}
    for section, params in raw.items():
        out[section] = {}
        for pname, p in params.items():
            if p["type"] not in _TYPES:
                raise ValueError(f"{path}: {pname}: unknown type {p['type']!r}")
            out[section][pname] = ParamSpec(
                name=pname,
                type=p["type"],
                default=p["default"],
                description=p.get("description", ""),
                choices=tuple(p["choices"]) if "choices" in p else None,
                range=tuple(p["range"]) if "range" in p else None,
                dynamic=bool(p.get("dynamic", False)),
            )
    return out


def validate(full_name: str, spec: ParamSpec, value: Any) -> str | None:
    """Reason why `value` is not acceptable for `spec`, or None."""
    if spec.type == "double" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok_type = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "double": lambda v: isinstance(v, float),
        "string": lambda v: isinstance(v, str),
        "string_array": lambda v: (
            isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
        ),
        "double_array": lambda v: isinstance(v, (list, tuple)),
        "int_array": lambda v: isinstance(v, (list, tuple)),
    }[spec.type]
    if not ok_type(value):
        return f"{full_name}: expected {spec.type}, got {type(value).__name__} {value!r}"
    if spec.choices is not None and value not in spec.choices:
        return f"{full_name}: expected one of {list(spec.choices)}, got {value!r}"
    if spec.range is not None and not (spec.range[0] <= value <= spec.range[1]):
        return f"{full_name}: expected a value in [{spec.range[0]}, {spec.range[1]}], got {value!r}"
    if spec.type == "double" and value != value:  # NaN
        return f"{full_name}: expected a number, got NaN"
    return None


def declare_from_spec(
    node: Node, specs: Mapping[str, ParamSpec], prefix: str = ""
) -> dict[str, Any]:
    """Declare every parameter of `specs` (under `prefix`) and return the values.

    Raises ParameterError listing every invalid value at once.
    """
    values: dict[str, Any] = {}
    errors = []
    for name, spec in specs.items():
        full = prefix + name
        default = spec.default
        try:
            if isinstance(default, list) and not default:
                # An empty list carries no type: declare by type, read back as [].
                param = node.declare_parameter(full, _TYPES[spec.type][1], spec.descriptor(full))
            else:
                param = node.declare_parameter(full, default, spec.descriptor(full))
        except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
            # rclpy checks the descriptor's range/type itself; keep our wording.
            allowed = (
                f"a value in [{spec.range[0]}, {spec.range[1]}]"
                if spec.range is not None
                else f"type {spec.type}"
            )
            errors.append(f"{full}: expected {allowed}; {str(exc).splitlines()[0]}")
            continue
        try:
            value = param.value
        except ParameterUninitializedException:
            value = []
        if value is None:
            value = []
        if spec.type == "double" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, tuple):
            value = list(value)
        reason = validate(full, spec, value)
        if reason:
            errors.append(reason)
        values[name] = value
    if errors:
        raise ParameterError("; ".join(errors))
    return values


def on_set_validator(specs: Mapping[str, ParamSpec]):
    """An on-set-parameters callback refusing values that break `specs` (full names)."""

    def callback(params: list[Parameter]) -> SetParametersResult:
        for p in params:
            spec = specs.get(p.name)
            if spec is None:
                continue
            reason = validate(p.name, spec, p.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    return callback


def transform_param(name: str, values: list[float]) -> np.ndarray:
    """A row-major 4x4 rigid transform given as a double-array parameter."""
    if len(values) != 16:
        raise ParameterError(f"{name}: expected 16 numbers (row-major 4x4), got {len(values)}")
    m = np.asarray(values, np.float64).reshape(4, 4)
    if not np.isfinite(m).all() or not np.allclose(m[3], [0, 0, 0, 1]):
        raise ParameterError(f"{name}: expected a finite rigid transform with last row 0 0 0 1")
    return m
