"""ROS messages <-> numpy, as small pure functions (testable without ``rclpy.init``).

Conventions: joint arrays are float64 (n,), positions in rad, velocities in rad/s; time is
float seconds; a pose's position is (3,) in metres in the message's frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA, Float64MultiArray, MultiArrayDimension
from visualization_msgs.msg import Marker, MarkerArray

# Diagnostic levels, named (DiagnosticStatus constants are bytes).
OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


def seconds_to_stamp(t: float) -> Time:
    """Float seconds -> builtin_interfaces/Time (non-negative)."""
    t = max(float(t), 0.0)
    sec = int(t)
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def joint_state_arrays(msg: JointState) -> tuple[list[str], np.ndarray, np.ndarray]:
    """names, positions, velocities of a JointState, unvalidated (lengths may differ: the
    safety layer's :class:`smrl_train.robot.safety.JointStateMapper` judges them)."""
    return (list(msg.name), np.asarray(msg.position, dtype=np.float64),
            np.asarray(msg.velocity, dtype=np.float64))


def make_joint_state(names: Sequence[str], position: np.ndarray, velocity: np.ndarray | None,
                     stamp: Time, effort: np.ndarray | None = None, frame_id: str = "") -> JointState:
    """A JointState of ``names`` with positions (n,), velocities (n,) (or none) and efforts."""
    msg = JointState()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = [float(v) for v in position]
    msg.velocity = [float(v) for v in velocity] if velocity is not None else []
    msg.effort = [float(v) for v in effort] if effort is not None else []
    return msg


def make_command(targets: np.ndarray, joint_names: Sequence[str] | None = None) -> Float64MultiArray:
    """Float64MultiArray of joint targets (n,), as a forward_position_controller expects.

    The controller reads only ``data``; the optional layout label documents the joint order
    for people echoing the topic.
    """
    msg = Float64MultiArray()
    if joint_names is not None:
        msg.layout.dim = [MultiArrayDimension(label="joints:" + ",".join(joint_names),
                                              size=len(joint_names), stride=len(joint_names))]
    msg.data = [float(v) for v in targets]
    return msg


def command_array(msg: Float64MultiArray) -> np.ndarray:
    """The targets (n,) float64 of a command message."""
    return np.asarray(msg.data, dtype=np.float64)


def pose_position(msg: PoseStamped) -> np.ndarray:
    """Position (3,) of a PoseStamped."""
    p = msg.pose.position
    return np.array([p.x, p.y, p.z], dtype=np.float64)


def make_pose(position: np.ndarray, stamp: Time, frame_id: str,
              orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> PoseStamped:
    """A PoseStamped at ``position`` (3,) with ``orientation`` (x, y, z, w)."""
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in orientation)
    return msg


def make_status(name: str, level: bytes, message: str, values: Mapping[str, object],
                hardware_id: str = "") -> DiagnosticStatus:
    """A DiagnosticStatus with ``values`` as key/value strings (floats with 6 significant digits)."""
    def fmt(v: object) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=str(k), value=fmt(v)) for k, v in values.items()])


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    """The key/value pairs of a DiagnosticStatus as a dict."""
    return {kv.key: kv.value for kv in status.values}


# Colours of the live view, as the videos draw them (smrl_train.sim.render): the goal green and
# translucent, the end effector orange; the puck red as in the sim.
GOAL_RGBA = (0.1, 0.9, 0.2, 0.35)
EE_RGBA = (1.0, 0.55, 0.0, 1.0)
PUCK_RGBA = (0.8, 0.1, 0.1, 1.0)
EE_DIAMETER = 0.03  # m
DISC_HEIGHT = 0.002  # m: a push goal's disc on the table


def _marker(ns: str, kind: int, position: Sequence[float], scale: Sequence[float], rgba: Sequence[float],
            stamp: Time, frame_id: str) -> Marker:
    msg = Marker(ns=ns, id=0, type=kind, action=Marker.ADD, color=ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2],
                                                                           a=rgba[3]))
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position)
    msg.pose.orientation.w = 1.0
    msg.scale.x, msg.scale.y, msg.scale.z = (float(v) for v in scale)
    return msg


def make_task_markers(goal: Sequence[float], success_radius: float, ee: np.ndarray, stamp: Time, frame_id: str,
                      table_z: float = 0.0, puck: np.ndarray | None = None,
                      puck_size: tuple[float, float] = (0.03, 0.03)) -> MarkerArray:
    """What a viewer needs to watch a task, in ``frame_id`` (namespaces ``goal``,
    ``end_effector``, ``puck``, id 0 each, so every message replaces the last): a reach goal
    (x, y, z) as a translucent sphere of the success radius, a push goal (x, y) as a disc of it
    on the table at ``table_z``; the end effector (3,) as a small sphere; the puck's centre
    (3,), when given, as a cylinder of ``puck_size`` (radius, height)."""
    r = float(success_radius)
    if len(goal) == 3:
        goal_marker = _marker("goal", Marker.SPHERE, goal, (2 * r, 2 * r, 2 * r), GOAL_RGBA, stamp, frame_id)
    else:
        goal_marker = _marker("goal", Marker.CYLINDER, (goal[0], goal[1], table_z + DISC_HEIGHT / 2),
                              (2 * r, 2 * r, DISC_HEIGHT), GOAL_RGBA, stamp, frame_id)
    markers = [goal_marker, _marker("end_effector", Marker.SPHERE, ee, (EE_DIAMETER,) * 3, EE_RGBA, stamp, frame_id)]
    if puck is not None:
        radius, height = puck_size
        markers.append(_marker("puck", Marker.CYLINDER, puck, (2 * radius, 2 * radius, height), PUCK_RGBA, stamp,
                               frame_id))
    return MarkerArray(markers=markers)
