"""The floor of bench/collect.py: a "sim bridge without the sim" that answers each command with
a joint state at once (the command's values as positions, a fresh stamp). Same topics, QoS,
message types and executor as ``smrl_sim`` in lockstep mode; no MuJoCo step, no bookkeeping."""

from __future__ import annotations

import sys
import time

from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from bench.helpers.echo_node import EchoNode
from smrl_ros import topics
from smrl_ros.conversions import make_joint_state, seconds_to_stamp
from smrl_ros.node_main import run_node


class StateEchoNode(Node):
    def __init__(self) -> None:
        super().__init__("smrl_state_echo")
        self.declare_parameter("realtime_priority", 0)
        self.declare_parameter("joints", ["joint_1"])
        self.joints = list(self.get_parameter("joints").value)
        self.pub = self.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_PUB_QOS)
        self.create_subscription(Float64MultiArray, topics.COMMANDS, self._on_command, topics.COMMAND_QOS)
        # Like the bridge's idle republish: the first state, and a state whenever nobody answers.
        self.last = 0.0
        self.create_timer(0.5, self._republish_if_idle)

    start = EchoNode.start  # the same scheduling and heap freeze as the control-loop floor

    def _publish(self, values: list[float]) -> None:
        self.last = time.monotonic()
        self.pub.publish(make_joint_state(self.joints, values, values, seconds_to_stamp(time.time())))

    def _on_command(self, msg: Float64MultiArray) -> None:
        self._publish(list(msg.data))

    def _republish_if_idle(self) -> None:
        if time.monotonic() - self.last >= 0.5:
            self._publish([0.0] * len(self.joints))


if __name__ == "__main__":
    sys.exit(run_node(StateEchoNode, "smrl_state_echo", sys.argv))
