"""`perception build-engine CONFIG_OR_MODEL`: build every engine cache a
configuration needs, then exit.

A compiled engine (TensorRT from ONNX, torch-tensorrt) takes minutes to build
on first start, and a node serves from its fallback, or not at all, until it
is done. Building ahead (at install time, in a container image, after a
model update) makes the first start load from the cache instead, like
Autoware's build-only mode. This command makes the engines exactly as the
detector node would: the same `EngineConfig` from the same parameters, the
same `create_engine` and cache key (model hash, runtime version, device,
precision, input shape), so the node finds what it builds.

    perception build-engine config/pipeline_carla.yaml --set detector.model.path=M.onnx
    perception build-engine config/single_camera.yaml
    perception build-engine model.onnx [--runtime tensorrt --device cuda --precision fp16
                                        --input-shape 6 3 384 640] [--cache-dir DIR]

CONFIG: a pipeline file or node parameters file (config/*.yaml): every
detector node in it. MODEL: one model file with the options given. Each
engine prints progress lines and a last line saying what it did (built,
found in the cache, or nothing to build and why). On this project's
development machine (no GPU) the cache built is ONNX Runtime's optimised
graph (`model.cache_dir` set, runtime onnxruntime).

Exit status: 0 when every engine is ready (or has nothing to build), 1 when
a build failed or timed out, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from perception.core.engines.base import BuildStatus
from perception.core.engines.config import EngineConfig
from perception.core.errors import PerceptionError
from perception.pipeline.pipeline import engine_config

__all__ = ["engine_config_of", "main"]

CONFIG_SUFFIXES = (".yaml", ".yml")


def engine_config_of(model: Any) -> EngineConfig:
    """The EngineConfig of a detector's `model.*` parameters, exactly as the
    node builds it (`perception.pipeline.engine_config`)."""
    return engine_config(model)


def _configs_from_file(path: Path, overrides: list[str]) -> list[tuple[str, EngineConfig]]:
    """(node name, EngineConfig) of every detector node of a parameters file."""
    from perception.config.files import TYPE_KEY, load_config
    from perception.config.generated import DetectorParams

    data = load_config(path, overrides)
    out = []
    for name, body in data.items():
        params = body["ros__parameters"]
        if params[TYPE_KEY] not in ("detector", "detector_lifecycle"):
            continue
        own = {
            k: v
            for k, v in params.items()
            if k not in (TYPE_KEY, "use_sim_time")
            and not k.startswith(("cameras.", "tracker.", "qos_overrides."))
        }
        det = DetectorParams.from_flat(own, f"{name}.")
        if not det.model.path:
            raise ValueError(
                f"{path}: {name}.model.path is empty: pass --set {name}.model.path=MODEL"
            )
        out.append((name, engine_config_of(det.model)))
    if not out:
        raise ValueError(f"{path}: no detector node (perception.node_type: detector)")
    return out


def _config_from_model(path: Path, args: argparse.Namespace) -> EngineConfig:
    from perception.core.engines.cache import default_cache_dir

    suffix = path.suffix.lower()
    runtime = args.runtime or ("onnxruntime" if suffix == ".onnx" else "torch_tensorrt")
    return EngineConfig(
        model_path=str(path),
        runtime=runtime,
        device=args.device or ("cuda" if runtime in ("tensorrt", "torch_tensorrt") else "cpu"),
        precision=args.precision,
        cache_dir=str(args.cache_dir or default_cache_dir()),
        build_input_shape=tuple(args.input_shape) if args.input_shape else None,
        threads=args.threads,
    )


def _nothing_to_build(config: EngineConfig) -> str | None:
    """Why `config` needs no build (None when it does)."""
    if config.uses_cache:
        return None
    if config.runtime == "onnxruntime":
        return (
            "runtime onnxruntime without model.cache_dir optimises the model at start-up "
            "(set model.cache_dir to build it ahead)"
        )
    if config.is_plan:
        return "a ready TensorRT plan: loaded as is"
    return f"runtime {config.runtime} loads the model as is"


class _Progress:
    """One line per change of stage or message, with the fraction."""

    def __init__(self, label: str, stream: TextIO, quiet: bool) -> None:
        self.label = label
        self.stream = stream
        self.quiet = quiet
        self._last: tuple[str, str] | None = None

    def __call__(self, status: BuildStatus) -> None:
        key = (status.stage, status.message)
        if self.quiet or key == self._last:
            return
        self._last = key
        print(
            f"[build-engine] {self.label}: {status.stage} {status.fraction:4.0%} "
            f"{status.message} ({status.elapsed_s:.1f} s)",
            file=self.stream,
            flush=True,
        )


def build_one(
    label: str, config: EngineConfig, timeout_s: float, stream: TextIO, quiet: bool = False
) -> tuple[bool, str]:
    """Build (or find) the engine of `config`; (ok, one-line outcome)."""
    from perception.core.engines.cache import CachedEngine
    from perception.core.engines.factory import create_engine

    why = _nothing_to_build(config)
    if why is not None:
        return True, f"nothing to build: {why}"
    # the fallback serves a node while it builds; nothing is served here
    config = replace(config, fallback=None)
    progress = _Progress(label, stream, quiet)
    t0 = time.monotonic()
    engine = create_engine(config, on_progress=progress)
    try:
        if not isinstance(engine, CachedEngine):
            return True, "ready (no cache involved)"
        if not engine.wait(timeout_s):
            st = engine.build_status
            return False, f"not done after {timeout_s:.0f} s ({st.stage} {st.fraction:.0%})"
        status = engine.build_status
        if status.stage != "ready":
            return False, f"build failed: {status.error or status.message}"
        what = "found in the cache" if status.serving == "cache" else "built"
        return True, (
            f"{what}: {status.artifact} ({time.monotonic() - t0:.1f} s; runtime "
            f"{config.runtime}, device {config.device}, precision {config.precision})"
        )
    finally:
        engine.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception build-engine",
        description="Build every engine cache a pipeline/parameters file (or one model) needs, "
        "as the detector node would, and exit.",
    )
    p.add_argument(
        "target",
        type=Path,
        metavar="CONFIG_OR_MODEL",
        help="config/*.yaml (every detector node in it) or a model file",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="override a parameter of the file (repeat)",
    )
    p.add_argument(
        "--runtime",
        choices=("onnxruntime", "tensorrt", "torch_tensorrt", "torch"),
        help="MODEL only: runtime (default onnxruntime for .onnx)",
    )
    p.add_argument("--device", help="MODEL only: cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "int8"),
        help="MODEL only (default fp32)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="MODEL only: the cache folder (default: the default engine cache)",
    )
    p.add_argument(
        "--input-shape",
        type=int,
        nargs=4,
        metavar=("B", "C", "H", "W"),
        help="MODEL only: build input shape (B = largest batch)",
    )
    p.add_argument("--threads", type=int, default=None, help="MODEL only: CPU threads")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per engine")
    p.add_argument("--quiet", action="store_true", help="only the last line per engine")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target: Path = args.target
    stream = sys.stdout
    if not target.exists():
        print(f"perception build-engine: {target} not found", file=sys.stderr)
        return 2
    is_config = target.suffix.lower() in CONFIG_SUFFIXES
    model_only = ("runtime", "device", "cache_dir", "input_shape", "threads")
    if is_config and any(getattr(args, k) is not None for k in model_only):
        print(
            "perception build-engine: --runtime/--device/--cache-dir/--input-shape/--threads "
            "apply to a MODEL; for a CONFIG use --set NODE.model.PARAM=VALUE",
            file=sys.stderr,
        )
        return 2
    try:
        if is_config:
            jobs = _configs_from_file(target, list(args.overrides))
        else:
            if args.overrides:
                print("perception build-engine: --set applies to a CONFIG", file=sys.stderr)
                return 2
            jobs = [(target.name, _config_from_model(target, args))]
    except (PerceptionError, ValueError, OSError) as exc:
        print(f"perception build-engine: {exc}", file=sys.stderr)
        return 2
    failed = 0
    done: dict[EngineConfig, str] = {}
    for label, config in jobs:
        if config in done:
            print(f"[build-engine] {label}: same engine as {done[config]}", file=stream)
            continue
        done[config] = label
        try:
            ok, outcome = build_one(label, config, args.timeout, stream, args.quiet)
        except PerceptionError as exc:
            ok, outcome = False, f"{type(exc).__name__}: {exc}"
        failed += not ok
        print(f"[build-engine] {label}: {'ok' if ok else 'FAILED'}: {outcome}", file=stream)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
