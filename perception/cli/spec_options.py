"""Command-line options made from the parameter specs, so CLIs and nodes share defaults.

A CLI option that sets a node parameter takes its type, default, choices and
help from the spec (perception/ros/specs/*.params.yaml) through the generated
classes' `specs()`, and its values are checked by the same classes
(`from_flat`), so a bad value gets the spec's message, naming the option.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from perception.config import ParameterError, ParamSpec, SpecParams

__all__ = ["add_spec_option", "params_from_options", "spec_help"]

_P = TypeVar("_P", bound=SpecParams)

_TYPES: dict[str, type] = {"int": int, "double": float, "string": str}


def spec_help(spec: ParamSpec, text: str | None = None) -> str:
    """Help text: `text` (default the spec's description) and the spec's default,
    escaped for argparse's %-formatting."""
    body = (text if text is not None else spec.description).rstrip()
    default = spec.default if spec.default != "" else "''"
    return f"{body} (default {default})".replace("%", "%%")


def add_spec_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    spec: ParamSpec,
    *,
    text: str | None = None,
    **kwargs: Any,
) -> None:
    """Add `flag` with the type, default, choices and help of `spec`.

    Bools become --flag / --no-flag. Ranges are not checked here but by
    `params_from_options`, so the message is the spec's. `text` replaces the
    spec's description in the help; `kwargs` go to `add_argument` and win over
    the spec's (e.g. `choices`, `metavar`).
    """
    opts: dict[str, Any] = {"default": spec.default, "help": spec_help(spec, text)}
    if spec.type == "bool":
        opts["action"] = argparse.BooleanOptionalAction
    elif spec.type in _TYPES:
        opts["type"] = _TYPES[spec.type]
        if spec.choices is not None:
            opts["choices"] = [c for c in spec.choices if c != ""]
    else:
        raise ValueError(f"{flag}: no command-line form for spec type {spec.type}")
    opts.update(kwargs)
    parser.add_argument(flag, **opts)


def params_from_options(cls: type[_P], values: Mapping[str, Any], options: Mapping[str, str]) -> _P:
    """`cls.from_flat(values)`; a ParameterError's message also names the option.

    `options` maps parameter names (keys of `values`) to their flags, e.g.
    {"score_threshold": "--conf"}: "score_threshold: expected ..." becomes
    "--conf (score_threshold): expected ...".
    """
    try:
        return cls.from_flat(values)
    except ParameterError as exc:
        message = str(exc)
        for name, flag in options.items():
            message = re.sub(rf"(?<![\w.]){re.escape(name)}:", f"{flag} ({name}):", message)
        raise ParameterError(message) from None
