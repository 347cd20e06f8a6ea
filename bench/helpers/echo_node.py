"""The floor of bench/control_loop.py: a node that answers each joint state with a command
at once (no observation, no inference, no safety layer). Same QoS, same executor."""

from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from smrl_ros import topics
from smrl_ros.node_main import run_node


class EchoNode(Node):
    def __init__(self) -> None:
        super().__init__("smrl_echo")
        self.declare_parameter("realtime_priority", 0)
        self.pub = self.create_publisher(Float64MultiArray, topics.COMMANDS, topics.COMMAND_QOS)
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_state, topics.STATE_SUB_QOS)

    def start(self) -> None:
        from smrl_ros.realtime import freeze_heap, set_realtime_priority

        priority = int(self.get_parameter("realtime_priority").value)
        if priority:
            set_realtime_priority(priority)
        freeze_heap()

    def _on_state(self, msg: JointState) -> None:
        self.pub.publish(Float64MultiArray(data=list(msg.position)))


if __name__ == "__main__":
    sys.exit(run_node(EchoNode, "smrl_echo", sys.argv))
