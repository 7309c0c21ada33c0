"""One way to run a node process: init, spin, clean shutdown, clear start-up errors.

Every executable of this package goes through `run_node`, so Ctrl-C, an
external shutdown and a bad parameter behave the same everywhere: a bad
parameter or model ends the process with exit code 2 and its one-line reason
logged as FATAL (no traceback), anything else propagates.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from perception.core.errors import PerceptionError

__all__ = ["run_node"]


def run_node(
    factory: Callable[[], Any],
    argv: Sequence[str] | None = None,
    *,
    name: str = "perception",
) -> int:
    """rclpy.init(argv), build the node with `factory`, spin until shutdown.

    Always a SingleThreadedExecutor: with 1080p images rclpy's
    MultiThreadedExecutor received 6-15 Hz of a 30 Hz stream where the
    single-threaded one received all 30 (measured here). Nodes that need
    parallel work run it in their own threads.
    """
    rclpy.init(args=list(argv) if argv is not None else sys.argv)
    node = None
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    except (ValueError, PerceptionError) as exc:  # parameter/model errors carry their reason
        if node is not None:
            raise
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
