"""``smrl_sim``: the MuJoCo sim bridge. It looks to ROS like a ros2_control arm.

It wraps the same :class:`smrl_train.sim.arm_sim.ArmSim` as the gym env (built through
:class:`smrl_train.sim.envs.ArmTaskEnv`, so tasks, physics and reward are the env's own).

Topics and services (names are parameters):

==========================================  =====================  ======================================
``/joint_states``                           sensor_msgs/JointState  published every control period
``/forward_position_controller/commands``   Float64MultiArray       subscribed: absolute targets, in the
                                                                    order of the ``joints`` parameter
``/puck_pose``                              PoseStamped             push family: the puck, base frame
``/reward`` and ``~/success``               Float64, Bool           only when ``publish_reward`` is true
``/robot_description``                      String (latched)        the URDF, for RViz users
``~/markers``                               MarkerArray             ``marker_rate_hz``: the goal, the end
                                                                    effector (and the puck), base frame
``/diagnostics``                            DiagnosticArray         1 Hz: steps, rejected commands,
                                                                    MuJoCo warning counters
``~/reset``                                 std_srvs/Trigger        home pose (+ seeded noise), state out
==========================================  =====================  ======================================

Modes: ``realtime`` steps at the wall-clock control rate and applies the latest command, like
hardware; ``lockstep`` steps one control period per received command and publishes the
resulting state at once, for data collection as fast as the client can go. In lockstep the
current state is republished (same stamp) when no command came for ``lockstep_republish_s``,
so a client that subscribed after the last state still gets going.

A command with the wrong length or a non-finite value is dropped whole and counted, like
``forward_command_controller`` does. The task (``task_split``/``task_index``, or an explicit
``task_goal``) can be changed at run time through parameters.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from smrl_ros import params, topics
from smrl_ros.conversions import (
    OK,
    WARN,
    command_array,
    make_joint_state,
    make_pose,
    make_status,
    make_task_markers,
    seconds_to_stamp,
)
from smrl_ros.node_main import StartupError, run_node
from smrl_ros.realtime import set_realtime_priority
from smrl_train.config import package_root
from smrl_train.config_loader import load_config
from smrl_train.config_schema import ConfigError
from smrl_train.sim.envs import ArmTaskEnv
from smrl_train.sim.mjcf import PUCK_HALF_HEIGHT, PUCK_RADIUS, TABLE_TOP_Z
from smrl_train.sim.tasks import Task, split_tasks

MODES = ("realtime", "lockstep")


@dataclass(frozen=True)
class SimParams:
    config: str = params.param("config/reach.yaml", "smrl config YAML (arm, task family, control rate); "
                               "relative paths are resolved against the package share folder")
    mode: str = params.param("realtime", "realtime (wall-clock control rate, latest command) or "
                             "lockstep (one control period per received command)")
    joints: tuple[str, ...] = params.param((), "joint order of the command topic (empty: URDF order)")
    task_split: str = params.param("train", "train or test: which task list task_index indexes")
    task_index: int = params.param(0, "index of the task in task_split")
    task_goal: tuple[float, ...] = params.param((), "explicit hidden goal (reach: x y z, push: x y); "
                                                "overrides task_split/task_index when set")
    publish_reward: bool = params.param(False, "publish /reward and ~/success after every step")
    seed: int = params.param(0, "seed of the reset noise (reset k uses seed + k)", low=0, high=2**31 - 1)
    lockstep_republish_s: float = params.param(0.2, "lockstep: republish the state after this long "
                                               "without a command (0: never)")
    joint_states_topic: str = params.param(topics.JOINT_STATES, "joint state output")
    command_topic: str = params.param(topics.COMMANDS, "position command input")
    object_pose_topic: str = params.param(topics.OBJECT_POSE, "puck pose output (push family)")
    reward_topic: str = params.param(topics.REWARD, "reward output")
    marker_rate_hz: float = params.param(10.0, "rate of ~/markers (visualization_msgs/MarkerArray: the goal, the "
                                         "end effector and the puck, for RViz and Foxglove); 0: none",
                                         low=0.0, high=100.0)
    realtime_priority: int = params.param(0, "SCHED_FIFO priority (1-99) for all the node's threads; "
                                          "0: normal scheduling")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise params.ParameterError(f"parameter 'mode': expected one of {', '.join(MODES)}, got {self.mode!r}")
        if self.task_split not in ("train", "test"):
            raise params.ParameterError(f"parameter 'task_split': expected train or test, got {self.task_split!r}")
        if self.lockstep_republish_s < 0:
            raise params.ParameterError("parameter 'lockstep_republish_s': must be >= 0")


def resolve_config_path(path: str) -> Path:
    """A config path as given, or relative to the package root (source tree or share folder)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return package_root() / p


class SimBridge(Node):
    """The sim bridge node; see the module docstring."""

    def __init__(self) -> None:
        super().__init__("smrl_sim")
        params.declare(self, SimParams, read_only=("config", "mode", "joints", "realtime_priority", "marker_rate_hz"))
        try:
            p = params.read(self, SimParams)
            cfg = load_config(resolve_config_path(p.config))
        except (params.ParameterError, ConfigError) as exc:
            raise StartupError(str(exc)) from None
        self.p = p
        self.env = ArmTaskEnv(cfg)
        self.sim = self.env.sim
        self.family = self.env.family
        self.train_tasks, self.test_tasks = split_tasks(self.env, cfg.tasks.n_train, cfg.tasks.n_test, cfg.tasks.seed)
        names = self.sim.joint_names
        joints = p.joints or names
        if sorted(joints) != sorted(names):
            raise StartupError(f"parameter 'joints' {list(joints)} must be a permutation of the URDF "
                               f"joints {list(names)}")
        self.joints = tuple(joints)
        # command (in `joints` order) -> sim order
        self._to_sim = np.array([self.joints.index(n) for n in names])
        # sim order -> `joints` order, for publishing
        self._from_sim = np.array([names.index(n) for n in self.joints])
        self.period = self.sim.control_period
        self.max_step = self.env.max_step
        self.frame_id = self.sim.arm.base_link
        self.success_radius = cfg.env.success_radius
        self.steps = 0
        self.resets = 0
        self.commands_accepted = 0
        self.commands_rejected = {"length_mismatch": 0, "non_finite": 0}
        self._latest_command: np.ndarray | None = None
        self._last_command_time = time.monotonic()
        self._state_stamp = seconds_to_stamp(time.time())
        self._rng_reset()
        self._set_task_from(p)

        self.pub_state = self.create_publisher(JointState, p.joint_states_topic, topics.STATE_PUB_QOS)
        self.pub_pose = (self.create_publisher(PoseStamped, p.object_pose_topic, topics.STATE_PUB_QOS)
                         if self.family == "push" else None)
        self.pub_reward = self.create_publisher(Float64, p.reward_topic, topics.DEFAULT_QOS)
        self.pub_success = self.create_publisher(Bool, "~/success", topics.DEFAULT_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, topics.DEFAULT_QOS)
        self.pub_description = self.create_publisher(String, topics.ROBOT_DESCRIPTION, topics.LATCHED_QOS)
        self.pub_description.publish(String(data=cfg.urdf_path().read_text()))
        self.create_subscription(Float64MultiArray, p.command_topic, self._on_command, topics.COMMAND_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self.pub_markers = None
        if p.marker_rate_hz > 0:
            self.pub_markers = self.create_publisher(MarkerArray, "~/markers", topics.DEFAULT_QOS)
            self.create_timer(1.0 / p.marker_rate_hz, self._publish_markers)
        if p.mode == "realtime":
            self.create_timer(self.period, self._tick_realtime)
        elif p.lockstep_republish_s > 0:
            self.create_timer(p.lockstep_republish_s / 2, self._republish_if_idle)
        self._publish_state()
        self._publish_markers()
        if p.realtime_priority:
            why = set_realtime_priority(p.realtime_priority)
            if why:
                self.get_logger().warning(f"realtime_priority {p.realtime_priority} not applied: {why}")
        self.get_logger().info(
            f"{self.family} sim of {self.sim.arm.name} ({', '.join(self.joints)}) in {p.mode} mode at "
            f"{1 / self.period:g} Hz, task {self.sim.task}")

    # -- task and reset ----------------------------------------------------------------------
    def _task_for(self, p: SimParams) -> Task:
        if p.task_goal:
            want = 3 if self.family == "reach" else 2
            if len(p.task_goal) != want:
                raise params.ParameterError(f"parameter 'task_goal': the {self.family} family needs {want} "
                                            f"numbers, got {list(p.task_goal)}")
            return Task(self.family, -1, tuple(p.task_goal))
        tasks = self.train_tasks if p.task_split == "train" else self.test_tasks
        if not 0 <= p.task_index < len(tasks):
            raise params.ParameterError(f"parameter 'task_index': {p.task_index} is outside the "
                                        f"{len(tasks)} {p.task_split} tasks")
        return tasks[p.task_index]

    def _set_task_from(self, p: SimParams) -> None:
        try:
            self.sim.set_task(self._task_for(p))
        except params.ParameterError as exc:
            raise StartupError(str(exc)) from None

    def _rng_reset(self) -> None:
        self.sim.reset(np.random.default_rng(self.p.seed + self.resets))
        self.resets += 1
        self._latest_command = None

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._rng_reset()
        self._state_stamp = seconds_to_stamp(time.time())  # a new state: clients tell it by its stamp
        self._publish_state()
        response.success = True
        response.message = f"reset #{self.resets - 1}, task {self.sim.task}"
        self.get_logger().info(response.message)
        return response

    def _on_parameters(self, changed: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        updates = {c.name: c.value for c in changed}
        if not updates.keys() & {"task_split", "task_index", "task_goal", "publish_reward", "seed"}:
            return SetParametersResult(successful=True)
        try:
            values = {f: getattr(self.p, f) for f in SimParams.__dataclass_fields__}
            for name, value in updates.items():
                if name in values:
                    values[name] = params.convert(name, value, params.field_type(SimParams, name))
            p = SimParams(**values)
            task = self._task_for(p)
        except params.ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.p = p
        if task != self.sim.task:
            self.sim.set_task(task)
            self._publish_markers()
            self.get_logger().info(f"task set to {task}")
        return SetParametersResult(successful=True)

    # -- commands and stepping ---------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        targets = command_array(msg)
        if targets.shape != (len(self.joints),):
            self.commands_rejected["length_mismatch"] += 1
            self.get_logger().warning(f"dropped a command of {len(targets)} values for {len(self.joints)} joints",
                                   throttle_duration_sec=1.0)
            return
        if not np.all(np.isfinite(targets)):
            self.commands_rejected["non_finite"] += 1
            self.get_logger().warning("dropped a command with non-finite values", throttle_duration_sec=1.0)
            return
        self.commands_accepted += 1
        self._latest_command = targets[self._to_sim]
        self._last_command_time = time.monotonic()
        if self.p.mode == "lockstep":
            self._step()

    def _step(self) -> None:
        reward = self.p.publish_reward
        q_before = self.sim.joint_positions() if reward else None
        if self._latest_command is not None:
            self.sim.set_position_targets(self._latest_command)
        self.sim.step_period()
        self.steps += 1
        self._state_stamp = seconds_to_stamp(time.time())
        self._publish_state()
        if reward:
            # The env's action, recovered from the target: what its reward's action cost sees.
            action = np.zeros(len(self.joints)) if self._latest_command is None else \
                np.clip((self.sim.position_targets() - q_before) / self.max_step, -1.0, 1.0)
            self.pub_reward.publish(Float64(data=self.sim.reward(action)))
            self.pub_success.publish(Bool(data=self.sim.success()))

    def _tick_realtime(self) -> None:
        self._step()

    def _republish_if_idle(self) -> None:
        if time.monotonic() - self._last_command_time >= self.p.lockstep_republish_s:
            self._publish_state()
            self._last_command_time = time.monotonic()

    def _publish_state(self) -> None:
        q, qd = self.sim.joint_positions(), self.sim.joint_velocities()
        self.pub_state.publish(make_joint_state(self.joints, q[self._from_sim], qd[self._from_sim],
                                                self._state_stamp))
        if self.pub_pose is not None:
            puck = self.sim.puck_position()
            assert puck is not None
            self.pub_pose.publish(make_pose(puck, self._state_stamp, self.frame_id))

    def _publish_markers(self) -> None:
        """The task as a viewer sees it, stamped like the newest joint state (whose FK the end
        effector is); at ``marker_rate_hz`` and at once on a task change."""
        if self.pub_markers is None:
            return
        assert self.sim.task is not None
        self.pub_markers.publish(make_task_markers(
            self.sim.task.goal, self.success_radius, self.sim.ee_position(), self._state_stamp, self.frame_id,
            TABLE_TOP_Z, self.sim.puck_position(), (PUCK_RADIUS, 2 * PUCK_HALF_HEIGHT)))

    def _publish_diagnostics(self) -> None:
        warnings = self.sim.warning_counts()
        rejected = sum(self.commands_rejected.values())
        level = WARN if warnings or rejected else OK
        values: dict[str, object] = {
            "mode": self.p.mode, "steps": self.steps, "resets": self.resets, "task": str(self.sim.task),
            "commands_accepted": self.commands_accepted,
            **{f"commands_rejected_{k}": v for k, v in self.commands_rejected.items()},
            **{f"mujoco_{k}": v for k, v in warnings.items()},
        }
        message = "ok" if level == OK else f"{rejected} command(s) rejected, MuJoCo warnings {warnings or 'none'}"
        msg = DiagnosticArray()
        msg.header.stamp = seconds_to_stamp(time.time())
        msg.status = [make_status("smrl_sim: sim bridge", level, message, values, self.sim.arm.name)]
        self.pub_diag.publish(msg)


def main(args: list[str] | None = None) -> int:
    return run_node(SimBridge, "smrl_sim", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
