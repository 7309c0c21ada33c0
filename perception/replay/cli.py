"""`perception replay ...`: the pipeline over recorded drives, offline.

    perception replay INPUT... --out DIR [--pipeline config/pipeline_carla.yaml]
                      [--set NODE.PARAM=VALUE ...] [--model M [--labels L]]
                      [--resume] [--max-frames N] [--ray [ADDRESS] --workers N]
    perception replay compare RUN_A RUN_B [--out DIR]

Also `./dev replay ...` and `python -m perception.replay ...` (without the
word `replay`). INPUT: rosbag2 folders (MCAP or sqlite3), .mcap/.db3 files,
videos, folders of them, or .txt files listing them (one per line). Exit
status 0 when every input is ok or skipped, 1 when one failed, 2 on a usage
or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from perception.replay.job import ReplayConfig, expand_inputs, run_local

__all__ = ["main", "replay_main"]

log = logging.getLogger("perception.replay")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PIPELINE = REPO / "config" / "pipeline_carla.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception replay",
        description="Run the perception pipeline of a pipeline file over recorded drives "
        "(rosbag2, MCAP, video), faster than real time, without ROS; per input: MCAP outputs, "
        "a frame table, metrics against ground truth where present, report.md. "
        "`perception replay compare RUN_A RUN_B` compares two runs.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="rosbag2 folder, .mcap/.db3, video, folder of them, or .txt list",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder, or a filesystem URI pyarrow opens (s3://, gs://, ...)",
    )
    p.add_argument(
        "--pipeline", default=str(DEFAULT_PIPELINE), help="pipeline file (default: %(default)s)"
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
        "--model",
        type=Path,
        default=None,
        help="detector model (default: the file's model.path, else "
        "models/default_detector.onnx); the fusion nodes get its class names",
    )
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="class names file of --model (default: its ONNX metadata)",
    )
    p.add_argument(
        "--resume", action="store_true", help="skip inputs whose outputs are complete in --out"
    )
    p.add_argument(
        "--max-frames",
        type=int,
        default=0,
        metavar="N",
        help="stop each input after N frame groups (0: all)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: no ADDRESS starts a local Ray, an address joins a cluster "
        "(give it after the inputs, or as --ray=ADDRESS)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="Ray workers (actors), each with its own engine (default: 2)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _model_overrides(args: argparse.Namespace, pipeline: str) -> list[str]:
    """`--model`/`--labels` as overrides: the detector's model.path and
    labels_file, and the class names of the fusion nodes where the model's
    differ (what a user would `--set` by hand; see demo_overrides)."""
    from perception.config.files import TYPE_KEY, load_config
    from perception.demo.topology import class_names_of, resolve_model

    data = load_config(Path(pipeline), list(args.overrides))
    nodes = {name: body["ros__parameters"] for name, body in data.items()}
    detectors = [n for n, p in nodes.items() if str(p[TYPE_KEY]).startswith("detector")]
    if len(detectors) != 1:
        return []  # load_pipeline_spec reports it
    det = detectors[0]
    if args.model is None and nodes[det].get("model.path"):
        return []  # the file (or a --set) chose the model
    model, labels = resolve_model(args.model, args.labels)
    q = json.dumps  # JSON is YAML: strings and lists survive the override parser
    out = [f"{det}.model.path={q(str(model))}"]
    if labels is not None:
        out.append(f"{det}.model.labels_file={q(str(labels))}")
    names = class_names_of(model, labels)
    if names:
        for node, p in nodes.items():
            if p[TYPE_KEY] == "fusion" and list(p.get("class_names", [])) != names:
                out.append(f"{node}.class_names={q(names)}")
    return out


def _log_to_stderr() -> None:
    """INFO lines of perception only (libraries such as motmetrics log timings at INFO)."""
    root = logging.getLogger("perception")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


def replay_main(argv: list[str] | None = None) -> int:
    """`perception replay` without the word `replay` (python -m perception.replay)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        from perception.replay.fleet import main_compare

        return main_compare(argv[1:])
    args = _parser().parse_intermixed_args(argv)
    _log_to_stderr()
    from perception.config.spec import ParameterError
    from perception.demo.topology import DemoError
    from perception.pipeline.topology import load_pipeline_spec

    try:
        overrides = [*args.overrides, *_model_overrides(args, args.pipeline)]
        load_pipeline_spec(args.pipeline, overrides)  # refuse a bad file before any work
        inputs = expand_inputs(args.inputs)
    except (ParameterError, DemoError, OSError, ValueError) as exc:
        log.error("perception replay: %s", exc)
        return 2
    if not inputs:
        log.error("perception replay: no inputs found in %s", args.inputs)
        return 2
    config = ReplayConfig(
        pipeline=str(args.pipeline),
        out=str(args.out),
        overrides=tuple(overrides),
        resume=args.resume,
        max_frames=max(0, args.max_frames),
    )
    if args.ray is not None:
        from perception.replay.ray_runner import RayReplayError, run_ray

        try:
            # run_ray writes the fleet summary itself (with the run's elapsed time)
            results = run_ray(
                inputs, config, args.ray or None, args.workers, progress=not args.quiet
            )
        except RayReplayError as exc:
            log.error("perception replay --ray: %s", exc)
            return 2
    else:
        results = run_local(inputs, config, progress=not args.quiet)
    failed = [r for r in results if r.status == "failed"]
    done = len(results) - len(failed)
    log.info(
        "replay: %d of %d inputs done (%d failed); summary in %s/fleet.md",
        done,
        len(results),
        len(failed),
        config.out,
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """The `perception` command: `perception replay ...`, `perception build-engine ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: perception replay INPUT... --out DIR [options]\n"
            "       perception replay compare RUN_A RUN_B\n"
            "       perception build-engine CONFIG_OR_MODEL [options]\n\n"
            "`perception replay --help`, `perception build-engine --help` for the options."
        )
        return 0 if argv else 2
    if argv[0] == "build-engine":
        from perception.cli.build_engine import main as build_engine_main

        return build_engine_main(argv[1:])
    if argv[0] != "replay":
        print(
            f"perception: unknown command {argv[0]!r} (expected: replay, build-engine)",
            file=sys.stderr,
        )
        return 2
    return replay_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
