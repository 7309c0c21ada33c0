"""Plain and managed (lifecycle) nodes around one driver.

A driver (e.g. the detector's) has the five steps below; `DriverNode` runs
them all at construction, `DriverLifecycleNode` maps them to lifecycle
transitions: configure loads and creates the (lifecycle) publishers, activate
publishes the latched facts and starts, deactivate stops, cleanup releases.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from perception.core.errors import PerceptionError

__all__ = ["Driver", "DriverLifecycleNode", "DriverNode"]


class Driver(Protocol):
    """What a node driver does, in lifecycle order."""

    def load_engine(self) -> None: ...

    def create_publishers(self) -> None: ...

    def publish_label_info(self) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def release(self) -> None: ...


class DriverNode(Node):
    """Plain node: loads, publishes and subscribes at construction."""

    DRIVER: ClassVar[Any]
    NAME: ClassVar[str] = "node"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name or self.NAME, **kwargs)
        self.pipeline: Driver = self.DRIVER(self)
        self.pipeline.load_engine()
        self.pipeline.create_publishers()
        self.pipeline.publish_label_info()
        self.pipeline.start()

    def destroy_node(self) -> None:
        pipeline = getattr(self, "pipeline", None)  # absent when the driver refused to start
        if pipeline is not None:
            pipeline.stop()
            pipeline.release()
        super().destroy_node()


class DriverLifecycleNode(LifecycleNode):
    """Managed node: configure loads and creates lifecycle publishers,
    activate (which activates those publishers) starts."""

    DRIVER: ClassVar[Any]
    NAME: ClassVar[str] = "node"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name or self.NAME, **kwargs)
        self.pipeline: Driver = self.DRIVER(self)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.pipeline.load_engine()
        except (PerceptionError, ValueError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.pipeline.create_publishers()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result: TransitionCallbackReturn = super().on_activate(state)
        self.pipeline.publish_label_info()
        self.pipeline.start()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.stop()
        result: TransitionCallbackReturn = super().on_deactivate(state)
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.stop()
        self.pipeline.release()
        return TransitionCallbackReturn.SUCCESS
