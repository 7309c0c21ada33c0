"""ROS parameters declared from the spec: typed descriptors, one validator.

The spec (perception/ros/specs/*.params.yaml, read by perception.config) is the
single source of defaults: nodes declare every parameter from it with a typed
descriptor (`declare_params(node, DetectorParams)` returns the typed object),
the config files in config/ only override values, and the same validator runs
at start-up and in the on-set callback, so a bad value is refused with the same
reason either way. ParamSpec, ParameterError, load_spec and validate live in
perception.config.spec (no ROS) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
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

from perception.config.base import SpecParams
from perception.config.spec import (
    SPEC_DIR,
    ParameterError,
    ParamSpec,
    load_spec,
    resolve,
    section_specs,
    validate,
)
from perception.config.transforms import rigid_transform

__all__ = [
    "SPEC_DIR",
    "LiveParams",
    "ParamSpec",
    "ParameterError",
    "declare_from_spec",
    "declare_params",
    "descriptor",
    "load_spec",
    "on_set_validator",
    "param_changes",
    "resolve",
    "specs_of",
    "tracker_param_specs",
    "transform_param",
    "validate",
]

_P = TypeVar("_P", bound=SpecParams)

_TYPES = {
    "bool": (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
    "int": (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
    "double": (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
    "string": (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
    "string_array": (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
    "double_array": (ParameterType.PARAMETER_DOUBLE_ARRAY, Parameter.Type.DOUBLE_ARRAY),
    "int_array": (ParameterType.PARAMETER_INTEGER_ARRAY, Parameter.Type.INTEGER_ARRAY),
}


def descriptor(spec: ParamSpec, full_name: str) -> ParameterDescriptor:
    """The typed ROS descriptor of `spec` (range, choices, read-only unless dynamic)."""
    d = ParameterDescriptor(
        name=full_name,
        type=_TYPES[spec.type][0],
        description=spec.description,
        read_only=not spec.dynamic,
    )
    if spec.choices is not None:
        d.additional_constraints = "one of: " + ", ".join(repr(c) for c in spec.choices)
    if spec.range is not None and spec.type == "int":
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]))]
    elif spec.range is not None and spec.type == "double":
        d.floating_point_range = [
            FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]))
        ]
    return d


def specs_of(cls: type[SpecParams]) -> dict[str, ParamSpec]:
    """The specs behind a generated parameter class, names relative to it."""
    return cls.specs()


def tracker_param_specs() -> dict[str, ParamSpec]:
    """The `tracker` section of tracker.params.yaml (2D tracker, names without `tracker.`)."""
    return section_specs("tracker", "tracker")


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
            param: Parameter[Any]
            if isinstance(default, list) and not default:
                # An empty list carries no type: declare by type, read back as [].
                param = node.declare_parameter(full, _TYPES[spec.type][1], descriptor(spec, full))
            else:
                param = node.declare_parameter(full, default, descriptor(spec, full))
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


def declare_params(node: Node, cls: type[_P], prefix: str = "") -> _P:
    """Declare every parameter of the generated class `cls` under `prefix`; return them typed.

    Raises ParameterError listing every invalid value at once.
    """
    return cls.from_flat(declare_from_spec(node, specs_of(cls), prefix), prefix)


def param_changes(params: Iterable[Parameter], prefix: str = "") -> dict[str, Any]:
    """{name relative to prefix: value} of the parameters under `prefix` (for `with_flat`)."""
    return {p.name[len(prefix) :]: _plain(p.value) for p in params if p.name.startswith(prefix)}


def _plain(value: Any) -> Any:
    """rclpy may hand arrays as array.array; the spec side wants lists."""
    return value if isinstance(value, (bool, int, float, str, list)) else list(value)


def on_set_validator(
    specs: Mapping[str, ParamSpec],
) -> Callable[[list[Parameter]], SetParametersResult]:
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


class LiveParams(Generic[_P]):
    """A typed parameter group of a node that follows run-time changes.

    Declares every parameter of the generated class `cls` under `prefix`,
    refuses a change that breaks the spec or the class's own cross-field rules
    (e.g. the tracker's low_score <= high_score) with the reason, and keeps
    `value` current; `on_change(new_value)` runs after an accepted change.
    """

    def __init__(
        self,
        node: Node,
        cls: type[_P],
        prefix: str = "",
        on_change: Callable[[_P], None] | None = None,
    ) -> None:
        self.prefix = prefix
        self.value: _P = declare_params(node, cls, prefix)
        self._specs = {prefix + k: v for k, v in specs_of(cls).items()}
        self._on_change = on_change
        node.add_on_set_parameters_callback(self._check)
        node.add_post_set_parameters_callback(self._apply)

    def _mine(self, params: Iterable[Parameter]) -> dict[str, Any]:
        return param_changes([p for p in params if p.name in self._specs], self.prefix)

    def _check(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            spec = self._specs.get(p.name)
            reason = validate(p.name, spec, p.value) if spec is not None else None
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        changes = self._mine(params)
        if changes:
            try:
                self.value.with_flat(changes, self.prefix)
            except ValueError as exc:
                reason = str(exc)
                if self.prefix and not reason.startswith(self.prefix):
                    reason = self.prefix + reason
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply(self, params: list[Parameter]) -> None:
        changes = self._mine(params)
        if changes:
            self.value = self.value.with_flat(changes, self.prefix)
            if self._on_change is not None:
                self._on_change(self.value)


def transform_param(name: str, values: Sequence[float]) -> np.ndarray:
    """A row-major 4x4 rigid transform given as a double-array parameter."""
    return rigid_transform(name, values)
