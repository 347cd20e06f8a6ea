"""``smrl_gated_controller``: the ONNX controller plus an ``enabled`` parameter.

The adapt graph runs the controller and the adapter on one arm. While the adapter explores a
new task it must be the only node commanding the arm, so it sets ``enabled: false`` here
(through the parameter service), hot-reloads the adapted model through ``model_path``, resets
the arm and sets ``enabled: true``. Disabled, the controller runs its loop, safety checks and
diagnostics as usual but publishes no command (a forward position controller then holds the
last target it got).

Everything else is :class:`smrl_ros.controller_node.ControllerNode`. This is a stop-gap for an
``enabled`` parameter in the controller itself; the node name stays ``smrl_controller``.
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

from smrl_ros.controller_node import ControllerNode
from smrl_ros.node_main import run_node


class GatedControllerNode(ControllerNode):
    """The controller; commands go out only while the ``enabled`` parameter is true."""

    def __init__(self) -> None:
        super().__init__()
        self.declare_parameter("enabled", True, ParameterDescriptor(
            description="publish commands (false: the loop runs, nothing is published; the adapter "
                        "disables the controller while it explores)", dynamic_typing=True))
        value = self.get_parameter("enabled").value
        self.enabled = value if isinstance(value, bool) else True
        self.suppressed_commands = 0
        self.add_on_set_parameters_callback(self._check_enabled)
        self.add_post_set_parameters_callback(self._apply_enabled)
        self.get_logger().info(f"commands {'enabled' if self.enabled else 'disabled until enabled:=true'}")

    def _check_enabled(self, changed: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        for p in changed:
            if p.name == "enabled" and not isinstance(p.value, bool):
                return SetParametersResult(successful=False, reason=f"parameter 'enabled': expected bool, "
                                                                    f"got {type(p.value).__name__} {p.value!r}")
        return SetParametersResult(successful=True)

    def _apply_enabled(self, changed: list[rclpy.parameter.Parameter]) -> None:
        for p in changed:
            if p.name == "enabled" and p.value != self.enabled:
                self.enabled = bool(p.value)
                self.get_logger().info("commands enabled" if self.enabled else "commands disabled")

    def _publish(self, targets_model_order: np.ndarray) -> None:
        if self.enabled:
            super()._publish(targets_model_order)
        else:
            self.suppressed_commands += 1

    def counters(self) -> dict[str, object]:
        return {**super().counters(), "enabled": self.enabled, "suppressed_commands": self.suppressed_commands}


def main(args: list[str] | None = None) -> int:
    return run_node(GatedControllerNode, "smrl_controller", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
