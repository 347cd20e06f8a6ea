"""The episode driver's ROS side: what the explorer and the adapter create on their node.

:class:`ArmDriver` creates the joint-state, object-pose and reward subscriptions, the command
publisher, the reset and parameter service clients and a timeout timer on the node; it converts
each message (:mod:`smrl_ros.conversions`; joint states mapped by name, rejected whole when
malformed) and hands it, with the time it arrived, to
:class:`smrl_train.robot.episode_driver.EpisodeDriver`, which holds the episodes' logic (resets,
lockstep and realtime stepping, reward pairing, safety, aborts) and calls back to publish a
command, call the reset service or log.

The owner sets the episode's callbacks on ``driver.core`` (``policy``, ``on_transition``,
``on_episode_end``, ``on_ready``) and drives episodes with :meth:`ArmDriver.reset`,
:meth:`~ArmDriver.run`, :meth:`~ArmDriver.abort` and :meth:`~ArmDriver.stop`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.srv import SetParameters
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import Trigger

from smrl_ros import params, topics
from smrl_ros.conversions import joint_state_arrays, make_command, pose_position, stamp_to_seconds
from smrl_train.robot.episode_driver import MODES, EpisodeDriver
from smrl_train.robot.safety import LIMIT_MARGIN, JointStateMapper, MappedState
from smrl_train.robot.urdf import ArmDescription, position_bounds

RESET_MODES = ("service", "home")
TIMEOUT_CHECK_S = 0.1  # how often the core checks for a stale state stream or a late reset
SERVICE_WAIT_S = 30.0  # how long a parameter service may take to appear (discovery under load)


@dataclass(frozen=True)
class DriverParams:
    """Parameters every node that drives episodes shares (explorer, adapter)."""

    urdf_path: str = params.param("", "the robot's URDF (limits, FK of the end effector); relative paths are "
                                  "resolved against the package share folder; empty: the model's (smrl.urdf)")
    ee_link: str = params.param("", "end-effector link of the URDF; empty: the model's (smrl.ee_link)")
    joints: tuple[str, ...] = params.param((), "joint order of the command topic (empty: URDF order)")
    mode: str = params.param("lockstep", "lockstep: step on each new state answering the last command (the sim "
                             "bridge's lockstep mode); realtime: at most rate_hz on the newest state (real arms)")
    rate_hz: float = params.param(0.0, "realtime: step rate (Hz); 0: the model's control rate", low=0.0, high=1000.0)
    episode_length: int = params.param(0, "control steps per episode; 0: the model's (its training episodes, "
                                       "from its metadata)", low=0, high=1_000_000)
    reset_mode: str = params.param("service", "between episodes: service (call reset_service, the sim bridge's "
                                   "~/reset) or home (drive to `home` under the safety limits: real arms)")
    reset_service: str = params.param("/smrl_sim/reset", "std_srvs/Trigger that resets the arm (reset_mode service)")
    home: tuple[float, ...] = params.param((), "home pose (rad, URDF joint order) for reset_mode home; empty: "
                                           "the model's (smrl.home, the training config's)")
    homing_speed: float = params.param(0.25, "homing speed as a fraction of each joint's velocity limit",
                                       low=0.01, high=1.0)
    home_tolerance: float = params.param(0.01, "homing is done when every joint is this close (rad) and at rest",
                                         low=1e-4, high=0.5)
    reset_timeout_s: float = params.param(30.0, "no answer after this long (s): send a reset or task request "
                                          "again (homing: warn); the sim graphs use 5", low=0.1, high=3600.0)
    state_timeout_s: float = params.param(2.0, "abort the episode in progress when no new joint state came for "
                                          "this long (s)", low=0.01, high=60.0)
    sim_node: str = params.param("smrl_sim", "sim bridge node whose task parameters are set per task "
                                 "('' on a real arm: the lab sets the task)")
    ignore_unknown_joints: bool = params.param(False, "accept joint states naming extra joints (gripper fingers)")
    joint_states_topic: str = params.param(topics.JOINT_STATES, "joint state input")
    command_topic: str = params.param(topics.COMMANDS, "position command output (Float64MultiArray, reliable)")
    object_pose_topic: str = params.param(topics.OBJECT_POSE, "object pose input (push family)")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise params.ParameterError(f"parameter 'mode': expected lockstep or realtime, got {self.mode!r}")
        if self.reset_mode not in RESET_MODES:
            raise params.ParameterError(f"parameter 'reset_mode': expected service or home, got {self.reset_mode!r}")
        if self.rate_hz < 0 or not 0 < self.homing_speed <= 1:
            raise params.ParameterError("parameters: rate_hz >= 0 and 0 < homing_speed <= 1 required")
        if self.state_timeout_s <= 0 or self.reset_timeout_s <= 0 or self.home_tolerance <= 0:
            raise params.ParameterError("parameters state_timeout_s, reset_timeout_s, home_tolerance must be > 0")


def one_shot(node: Node, delay: float, fn: Callable[[], None]) -> None:
    """Call ``fn`` once, ``delay`` s from now, in the node's executor."""
    box: list[Any] = []

    def fire() -> None:
        node.destroy_timer(box[0])
        fn()

    box.append(node.create_timer(delay, fire))


class ArmDriver:
    """Runs episodes on the arm over ROS topics; see the module docstring.

    Args:
        node: the owning node (subscriptions, publisher, clients and a timer are created on it).
        p: driver parameters.
        arm: the robot's URDF.
        info: the model's metadata (joint names and order, observation layout, action scale,
            control rate): a :class:`smrl_train.robot.model_metadata.ModelInfo`.
        reward_topic: pair every transition with a reward from this topic (None: reward-free).
    """

    def __init__(self, node: Node, p: DriverParams, arm: ArmDescription, info: Any,
                 reward_topic: str | None = None) -> None:
        self.node, self.p = node, p
        self.log = node.get_logger()
        joint_names = tuple(info.joint_names)
        command_joints = tuple(p.joints or arm.joint_names)
        if sorted(command_joints) != sorted(joint_names):
            raise ValueError(f"parameter 'joints' {list(command_joints)} must name the model's joints "
                             f"{list(joint_names)}")
        self._to_command = np.array([joint_names.index(n) for n in command_joints])
        self.mapper = JointStateMapper(joint_names, p.ignore_unknown_joints,
                                       position_bounds(arm, joint_names, LIMIT_MARGIN))
        reset_service = p.reset_service if p.reset_mode == "service" else None
        home = tuple(p.home) or tuple(getattr(info, "home", ()))
        if p.reset_mode == "home" and not home:
            raise ValueError("parameter 'home': required with reset_mode home (the pose to return to; the model's "
                             "metadata names none: an older export)")
        self.core = EpisodeDriver(
            arm, info, mode=p.mode, rate_hz=p.rate_hz, steps=p.episode_length, reset_service=reset_service, home=home,
            homing_speed=p.homing_speed, home_tolerance=p.home_tolerance, reset_timeout_s=p.reset_timeout_s,
            state_timeout_s=p.state_timeout_s, rewarded=bool(reward_topic))
        self.core.publish = self._publish
        self.core.request_reset = self._request_reset
        self.core.log = self._log

        self.pub_command = node.create_publisher(Float64MultiArray, p.command_topic, topics.COMMAND_QOS)
        self._subscriptions = [node.create_subscription(JointState, p.joint_states_topic, self._on_joint_state,
                                                        topics.STATE_SUB_QOS)]
        if self.core.builder.needs_object:
            self._subscriptions.append(node.create_subscription(PoseStamped, p.object_pose_topic,
                                                                self._on_object_pose, topics.STATE_SUB_QOS))
        if reward_topic:
            self._subscriptions.append(node.create_subscription(Float64, reward_topic, self._on_reward,
                                                                topics.DEFAULT_QOS))
        self._reset_client = node.create_client(Trigger, reset_service) if reset_service is not None else None
        self._param_clients: dict[str, Any] = {}
        self._timer = node.create_timer(TIMEOUT_CHECK_S, lambda: self.core.check_timeouts(time.monotonic()))

    def close(self) -> None:
        """Destroy the topics, clients and timer the driver made on its node (lifecycle cleanup)."""
        self.stop()
        self.pub_command.wait_for_all_acked(Duration(seconds=0.5))  # the hold reaches the arm first
        node = self.node
        node.destroy_timer(self._timer)
        for sub in self._subscriptions:
            node.destroy_subscription(sub)
        for client in [self._reset_client, *self._param_clients.values()]:
            if client is not None:
                node.destroy_client(client)
        node.destroy_publisher(self.pub_command)
        self._subscriptions, self._param_clients, self._reset_client = [], {}, None

    # -- episode control (owner API): the core's, at the time of the call ----------------------------
    def reset(self) -> None:
        """Bring the arm to the start of an episode; ``core.on_ready`` follows."""
        self.core.reset(time.monotonic())

    def run(self, steps: int) -> None:
        """Start an episode of ``steps`` steps from the ready state (after ``core.on_ready``)."""
        self.core.run(steps, time.monotonic())

    def abort(self, reason: str) -> None:
        """End the episode in progress now (not completed), holding the arm where it is."""
        self.core.abort(reason, time.monotonic())

    def stop(self) -> None:
        """Stop commanding (shutdown): hold if an episode or homing was under way."""
        self.core.stop(time.monotonic())

    # -- messages in -------------------------------------------------------------------------------
    def _on_joint_state(self, msg: JointState) -> None:
        names, position, velocity = joint_state_arrays(msg)
        result = self.mapper.map(names, position, velocity)
        if not isinstance(result, MappedState):
            self.log.warning(f"rejected a joint state: {result.reason} ({result.detail})", throttle_duration_sec=1.0)
            return
        self.core.on_joint_state(result, stamp_to_seconds(msg.header.stamp), time.monotonic())

    def _on_object_pose(self, msg: PoseStamped) -> None:
        if not self.core.on_object(pose_position(msg)):
            self.log.warning("rejected a non-finite object pose", throttle_duration_sec=1.0)

    def _on_reward(self, msg: Float64) -> None:
        if not self.core.on_reward(msg.data, time.monotonic()):
            self.log.warning("rejected a non-finite reward", throttle_duration_sec=1.0)

    # -- what the core asks for --------------------------------------------------------------------
    def _publish(self, targets_model_order: np.ndarray) -> None:
        self.pub_command.publish(make_command(targets_model_order[self._to_command]))

    def _request_reset(self, request: int) -> bool:
        assert self._reset_client is not None
        if not self._reset_client.service_is_ready():
            return False
        future = self._reset_client.call_async(Trigger.Request())

        def answered(f: Any) -> None:
            result = f.result()
            self.core.on_reset_answer(request, result is not None and result.success,
                                      getattr(result, "message", "no answer"), time.monotonic())

        future.add_done_callback(answered)
        return True

    def _log(self, level: str, message: str) -> None:
        # rclpy refuses one call site logging at two severities: a call site each.
        if level == "error":
            self.log.error(message)
        else:
            self.log.warning(message)

    # -- sim bridge parameters ----------------------------------------------------------------
    def set_node_parameters(self, node_name: str, values: Mapping[str, Any],
                            done: Callable[[bool, str], None]) -> None:
        """Set parameters of another node through its parameter service (asynchronously);
        ``done(ok, reason)`` follows once. Waits for the service up to ``SERVICE_WAIT_S`` (or
        ``reset_timeout_s`` if longer), and sends the request again when no answer came within
        ``reset_timeout_s`` (setting the same values twice is harmless; a DDS match still under
        way can lose an answer)."""
        client = self._param_clients.get(node_name)
        if client is None:
            client = self.node.create_client(SetParameters, f"/{node_name}/set_parameters")
            self._param_clients[node_name] = client
        request = SetParameters.Request()
        request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        deadline = time.monotonic() + max(SERVICE_WAIT_S, self.p.reset_timeout_s)
        finished = [False]

        def finish(ok: bool, reason: str) -> None:
            if not finished[0]:  # else an answer to an earlier send, or one after giving up
                finished[0] = True
                done(ok, reason)

        def send() -> None:
            if finished[0]:
                return
            if not client.service_is_ready():
                if time.monotonic() > deadline:
                    finish(False, f"/{node_name}/set_parameters is not available")
                else:
                    one_shot(self.node, 0.1, send)
                return
            future = client.call_async(request)

            def answered(f: Any) -> None:
                result = f.result()
                failed = [r.reason for r in (result.results if result else []) if not r.successful]
                finish(result is not None and not failed, "; ".join(failed) or ("" if result else "no answer"))

            def unanswered() -> None:
                if not finished[0]:
                    self.log.warning(f"no answer from /{node_name}/set_parameters after "
                                     f"{self.p.reset_timeout_s:g} s: sending again")
                    send()

            future.add_done_callback(answered)
            one_shot(self.node, self.p.reset_timeout_s, unanswered)

        send()
