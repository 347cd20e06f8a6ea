"""Default topic names and the QoS each one uses, shared by every node and test.

The names are those of a ros2_control arm (all remappable through node parameters):
``/joint_states`` from the joint_state_broadcaster and ``/forward_position_controller/commands``
into a ``forward_command_controller/ForwardCommandController`` on the position interface.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

JOINT_STATES = "/joint_states"
COMMANDS = "/forward_position_controller/commands"
OBJECT_POSE = "/puck_pose"
REWARD = "/reward"
ROBOT_DESCRIPTION = "/robot_description"
DIAGNOSTICS = "/diagnostics"

# Reliable like the joint_state_broadcaster's publisher (ros2_control default QoS).
STATE_PUB_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# A controller only ever wants the newest state: keep one, never queue stale ones.
STATE_SUB_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Commands are reliable (MISSION.md; the forward controller's default), a short queue.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Latched, as robot_state_publisher publishes it, so late joiners (RViz) get it.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
DEFAULT_QOS = QoSProfile(depth=10)
