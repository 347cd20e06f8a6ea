"""Episodes of a policy on an arm over ROS topics: the part the explorer and the adapter share.

:class:`ArmDriver` lives inside a node (it creates the node's subscriptions, publisher and
service clients) and runs one episode at a time, driven by the node's executor:

``reset()`` (the sim bridge's ``~/reset`` Trigger, or homing under the safety limits on a real
arm) -> ``on_ready`` -> ``run(steps)`` -> ``on_transition`` per step -> ``on_episode_end``.

Stepping, per mode:

* ``lockstep`` (the sim bridge's lockstep mode): every command makes the bridge step one control
  period and answer with a state; each *new* state completes the pending transition and the
  next action goes out at once. The bridge republishes its last state when idle, so a state
  is new when its stamp or its positions differ from the last one used.
* ``realtime`` (hardware, or the bridge in realtime mode): at ``rate_hz`` on average, on the first
  new state within half a period of each deadline (absolute deadlines,
  :func:`smrl_train.robot.control.period_schedule`; faster state streams are decimated).

With a reward topic (the adapter), a transition completes only once a reward published after
its command has arrived: the sim bridge publishes one reward per step, right after the state.

Safety is the controller's (:mod:`smrl_train.robot.safety`): joint states mapped by name and
rejected whole when malformed; observations and targets checked for non-finite values; every
target clipped to the URDF limits and to velocity limit x period around the measured position.
A non-finite action or a state stream that stops (``state_timeout_s``) aborts the episode and
holds the arm where it is.
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
from smrl_train.robot.control import ObservationBuilder, period_schedule
from smrl_train.robot.exploration import executed_action
from smrl_train.robot.homing import at_home, homing_step
from smrl_train.robot.safety import CommandGuard, JointStateMapper, MappedState, TargetLimiter, all_finite
from smrl_train.robot.urdf import ArmDescription

MODES = ("lockstep", "realtime")
RESET_MODES = ("service", "home")
SETTLED_VELOCITY = 0.05  # rad/s: homing is done when every joint is slower than this


@dataclass(frozen=True)
class DriverParams:
    """Parameters every node that drives episodes shares (explorer, adapter)."""

    urdf_path: str = params.param("urdf/smrl_arm.urdf", "the robot's URDF (limits, FK of the end effector); "
                                  "relative paths are resolved against the package share folder")
    ee_link: str = params.param("ee_link", "end-effector link of the URDF")
    joints: tuple[str, ...] = params.param((), "joint order of the command topic (empty: URDF order)")
    mode: str = params.param("lockstep", "lockstep: step on each new state answering the last command (the sim "
                             "bridge's lockstep mode); realtime: at most rate_hz on the newest state (real arms)")
    rate_hz: float = params.param(0.0, "realtime: step rate (Hz); 0: the model's control rate", low=0.0, high=1000.0)
    episode_length: int = params.param(0, "control steps per episode; 0: the model's (its training episodes, "
                                       "from its metadata)", low=0, high=1_000_000)
    reset_mode: str = params.param("service", "between episodes: service (call reset_service, the sim bridge's "
                                   "~/reset) or home (drive to `home` under the safety limits: real arms)")
    reset_service: str = params.param("/smrl_sim/reset", "std_srvs/Trigger that resets the arm (reset_mode service)")
    home: tuple[float, ...] = params.param((), "home pose (rad, URDF joint order) for reset_mode home")
    homing_speed: float = params.param(0.25, "homing speed as a fraction of each joint's velocity limit",
                                       low=0.01, high=1.0)
    home_tolerance: float = params.param(0.01, "homing is done when every joint is this close (rad) and at rest",
                                         low=1e-4, high=0.5)
    reset_timeout_s: float = params.param(30.0, "warn (and retry a reset service) after this long", low=0.1,
                                          high=3600.0)
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
        if self.reset_mode == "home" and not self.home:
            raise params.ParameterError("parameter 'home': required with reset_mode home (the pose to return to)")
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


def episode_length(p: DriverParams, info: Any) -> int:
    """Steps per episode: the parameter when set, else the model's (its metadata)."""
    steps = p.episode_length or getattr(info, "episode_length", None) or 0
    if steps < 1:
        raise ValueError("parameter 'episode_length': required, the model does not record its episode length "
                         "(exported by an older smrl)")
    return steps


@dataclass(frozen=True)
class Transition:
    """One step: obs, next_obs (O,) f32, action (A,) f32 as executed, the next state's stamp
    (s) and the reward (adapter only)."""

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    stamp: float
    reward: float | None


@dataclass(frozen=True)
class EpisodeEnd:
    """How an episode ended: ``completed`` after all its steps, else aborted for ``reason``."""

    steps: int
    completed: bool
    reason: str = ""


@dataclass
class _State:
    mapped: MappedState
    stamp: float
    key: tuple[Any, ...]
    received: float


def _noop(*_args: Any) -> None:
    return None


def _no_policy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    raise RuntimeError("no policy set")


class ArmDriver:
    """Runs episodes of ``policy`` on the arm; see the module docstring.

    Args:
        node: the owning node (subscriptions, publisher, clients and a timer are created on it).
        p: driver parameters.
        arm: the robot's URDF.
        info: the model's metadata (joint names and order, observation layout, action scale,
            control rate): a :class:`smrl_train.robot.model_metadata.ModelInfo`.
        reward_topic: pair every transition with a reward from this topic (None: reward-free).
    """

    IDLE, RESETTING, READY, RUNNING = "idle", "resetting", "ready", "running"

    def __init__(self, node: Node, p: DriverParams, arm: ArmDescription, info: Any,
                 reward_topic: str | None = None) -> None:
        self.node, self.p, self.info = node, p, info
        self.log = node.get_logger()
        self.joint_names = tuple(info.joint_names)
        self.command_joints = tuple(p.joints or arm.joint_names)
        if sorted(self.command_joints) != sorted(self.joint_names):
            raise ValueError(f"parameter 'joints' {list(self.command_joints)} must name the model's joints "
                             f"{list(self.joint_names)}")
        self._to_command = np.array([self.joint_names.index(n) for n in self.command_joints])
        self.mapper = JointStateMapper(self.joint_names, p.ignore_unknown_joints)
        self.builder = ObservationBuilder(arm, self.joint_names, info.observation_layout)
        order = [arm.joint_names.index(n) for n in self.joint_names]
        self.period = 1.0 / float(info.control_hz)  # the action's time base, whatever the loop rate
        self.episode_length = episode_length(p, info)
        self.limiter = TargetLimiter(arm.lower[order], arm.upper[order], arm.velocity[order], self.period)
        self.guard = CommandGuard(arm.lower[order], arm.upper[order], arm.velocity[order], self.period)
        self.max_step = np.asarray(info.max_step, dtype=np.float64)
        self.home: np.ndarray | None = None
        if p.home:
            if len(p.home) != arm.n_joints:
                raise ValueError(f"parameter 'home': {len(p.home)} values for {arm.n_joints} joints")
            home_urdf = np.clip(np.asarray(p.home, dtype=np.float64), arm.lower, arm.upper)
            self.home = home_urdf[order]
        self.homing_step_size = p.homing_speed * self.limiter.max_step
        rate = p.rate_hz or float(info.control_hz)
        self.loop_period = 1.0 / rate
        self._next_deadline = period_schedule(self.loop_period)
        self._deadline: float | None = None

        # Callbacks the owner sets.
        self.policy: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] = _no_policy
        self.on_transition: Callable[[Transition], None] = _noop
        self.on_episode_end: Callable[[EpisodeEnd], None] = _noop
        self.on_ready: Callable[[], None] = _noop

        self.phase = self.IDLE
        self.counters = {"steps": 0, "commands": 0, "episodes_aborted": 0, "non_finite_actions": 0,
                         "non_finite_observations": 0, "resets": 0, "reset_retries": 0,
                         "commands_refused": 0}
        self._latest: _State | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._last_progress = time.monotonic()
        self._object: np.ndarray | None = None
        self._commanded = False
        self._steps_left = 0
        self._episode_steps = 0
        self._pending: tuple[np.ndarray, np.ndarray] | None = None  # (obs, executed action)
        self._reset_request_time = 0.0
        self._reset_response_time: float | None = None
        self._reset_future: Any = None
        self._reset_warned = False
        self._reward_topic = reward_topic
        self._reward: float | None = None
        self._reward_count = 0
        self._reward_count_at_command = 0

        self.pub_command = node.create_publisher(Float64MultiArray, p.command_topic, topics.COMMAND_QOS)
        self._subscriptions = [node.create_subscription(JointState, p.joint_states_topic, self._on_joint_state,
                                                        topics.STATE_SUB_QOS)]
        if self.builder.needs_object:
            self._subscriptions.append(node.create_subscription(PoseStamped, p.object_pose_topic,
                                                                self._on_object_pose, topics.STATE_SUB_QOS))
        if reward_topic:
            self._subscriptions.append(node.create_subscription(Float64, reward_topic, self._on_reward,
                                                                topics.DEFAULT_QOS))
        self._reset_client = node.create_client(Trigger, p.reset_service) if p.reset_mode == "service" else None
        self._param_clients: dict[str, Any] = {}
        self._timer = node.create_timer(0.1, self._check_timeouts)

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

    # -- inputs ------------------------------------------------------------------------------
    def _on_joint_state(self, msg: JointState) -> None:
        names, position, velocity = joint_state_arrays(msg)
        result = self.mapper.map(names, position, velocity)
        if not isinstance(result, MappedState):
            self.log.warning(f"rejected a joint state: {result.reason} ({result.detail})", throttle_duration_sec=1.0)
            return
        stamp = msg.header.stamp
        key = (stamp.sec, stamp.nanosec, result.position.tobytes())
        if key == self._last_key:
            return  # the bridge republishing a state already used
        self._latest = _State(result, stamp_to_seconds(stamp), key, time.monotonic())
        self._advance()

    def _on_object_pose(self, msg: PoseStamped) -> None:
        position = pose_position(msg)
        if all_finite(position):
            self._object = position
        else:
            self.log.warning("rejected a non-finite object pose", throttle_duration_sec=1.0)

    def _on_reward(self, msg: Float64) -> None:
        if not np.isfinite(msg.data):
            self.log.warning("rejected a non-finite reward", throttle_duration_sec=1.0)
            return
        self._reward = float(msg.data)
        self._reward_count += 1
        if self.phase == self.RUNNING:
            self._advance()

    # -- episode control (owner API) -------------------------------------------------------------
    def reset(self) -> None:
        """Bring the arm to the start of an episode; ``on_ready`` follows."""
        self.phase = self.RESETTING
        self._reset_warned = False
        self._reset_request_time = time.monotonic()
        self._reset_response_time = None
        self.counters["resets"] += 1
        self.guard.forget()  # a reset service moves the arm by other means
        if self._reset_client is not None:
            self._call_reset()
        else:
            self._advance()

    def run(self, steps: int) -> None:
        """Start an episode of ``steps`` steps from the ready state (after ``on_ready``)."""
        if self.phase != self.READY:
            raise RuntimeError(f"run() needs a ready arm (phase is {self.phase})")
        self.phase = self.RUNNING
        self._steps_left = steps
        self._episode_steps = 0
        self._pending = None
        self._deadline = None
        self._last_progress = time.monotonic()
        self._act_on_latest()

    def abort(self, reason: str) -> None:
        """End the episode in progress now (not completed), holding the arm where it is."""
        if self.phase != self.RUNNING:
            return
        self.phase = self.IDLE
        self.counters["episodes_aborted"] += 1
        self.hold()
        self.on_episode_end(EpisodeEnd(self._episode_steps, False, reason))

    def stop(self) -> None:
        """Stop commanding (shutdown): hold if an episode was running."""
        if self.phase in (self.RUNNING, self.RESETTING) and self._commanded:
            self.hold()
        self.phase = self.IDLE

    def hold(self) -> None:
        """One command holding the arm at its measured position (a forward controller keeps it)."""
        if self._latest is not None and self._commanded:
            self._publish(self.limiter.hold_target(self._latest.mapped.position), hold=True)

    # -- the step ---------------------------------------------------------------------------
    def _due(self, now: float) -> bool:
        if self.p.mode == "lockstep":
            return True
        # Deadlines lie on an absolute grid (the mean rate is rate_hz whatever the tolerance);
        # half a period of tolerance keeps a state stream at exactly rate_hz from skipping
        # ticks on jitter.
        return self._deadline is None or now >= self._deadline - self.loop_period / 2

    def _consume(self, state: _State) -> None:
        self._last_key = state.key
        self._last_progress = time.monotonic()
        if self.p.mode == "realtime":
            self._deadline, _ = self._next_deadline(time.monotonic(), self._deadline)

    def _advance(self) -> None:
        state = self._latest
        if state is None or state.key == self._last_key:
            return
        if self.phase == self.RESETTING:
            self._advance_reset(state)
        elif self.phase == self.RUNNING:
            if not self._due(time.monotonic()):
                return
            if self._reward_topic and self._pending is not None and self._reward_count <= self._reward_count_at_command:
                return  # the step's reward has not arrived yet; _on_reward comes back here
            self._step(state)

    def _advance_reset(self, state: _State) -> None:
        if self._reset_client is not None:
            # Lockstep: the bridge publishes the reset state before it answers, and nothing else
            # moves it, so any new state since the request is it. Realtime: states keep coming;
            # only one received after the answer is surely post-reset.
            since = self._reset_request_time if self.p.mode == "lockstep" else self._reset_response_time
            if self._reset_response_time is None or since is None or state.received < since:
                return
            self._ready(state)
            return
        if not self._due(time.monotonic()):
            return
        assert self.home is not None
        q, qd = state.mapped.position, state.mapped.velocity
        if at_home(q, self.home, self.p.home_tolerance) and np.max(np.abs(qd)) < SETTLED_VELOCITY:
            self._ready(state)
            return
        self._consume(state)
        target = self.limiter.limit(homing_step(q, self.home, self.homing_step_size), q,
                                    self.guard.reference(time.monotonic()))
        if target is not None:
            self._publish(target)

    def _ready(self, state: _State) -> None:
        self.phase = self.READY
        self._latest = state
        self._last_key = None  # run() acts on this state
        self.on_ready()

    def _act_on_latest(self) -> None:
        state = self._latest
        if state is None:
            self.abort("no joint state")
            return
        self._step(state)

    def _observation(self, state: _State) -> np.ndarray | None:
        if self.builder.needs_object and self._object is None:
            return None
        obs = self.builder.build(state.mapped.position, state.mapped.velocity, self._object)
        if not all_finite(obs):
            self.counters["non_finite_observations"] += 1
            return None
        return obs

    def _step(self, state: _State) -> None:
        obs = self._observation(state)
        if obs is None:
            if self.builder.needs_object and self._object is None:
                return  # wait for the object pose
            self.abort("non-finite observation")
            return
        self._consume(state)
        if self._pending is not None:
            prev_obs, prev_action = self._pending
            reward = self._reward if self._reward_topic else None
            self._pending = None
            self._episode_steps += 1
            self.counters["steps"] += 1
            self.on_transition(Transition(prev_obs, prev_action, obs, state.stamp, reward))
            if self._episode_steps >= self._steps_left:
                self.phase = self.IDLE
                self.on_episode_end(EpisodeEnd(self._episode_steps, True))
                return
        q = state.mapped.position
        try:
            action, target = self.policy(obs)
        except Exception as exc:  # noqa: BLE001 - a failing policy must end in a hold, not a crash
            self.log.error(f"policy failed: {type(exc).__name__}: {exc}")
            self.counters["non_finite_actions"] += 1
            self.abort("policy error")
            return
        safe = self.limiter.limit(target, q, self.guard.reference(time.monotonic())) if all_finite(action) else None
        if safe is None:
            self.counters["non_finite_actions"] += 1
            self.abort("non-finite action")
            return
        self._pending = (obs, executed_action(action, target, safe, q, self.max_step))
        self._reward_count_at_command = self._reward_count
        if not self._publish(safe):
            self._pending = None
            self.abort("command refused by the last check")

    def _publish(self, targets_model_order: np.ndarray, hold: bool = False) -> bool:
        """Publish after the last check (:class:`~smrl_train.robot.safety.CommandGuard`); a refused
        command publishes nothing (counted, logged) and False is returned."""
        now = time.monotonic()
        state = self._latest
        if hold or state is None:
            admitted = self.guard.admit_hold(targets_model_order, now)
        else:
            admitted = self.guard.admit(targets_model_order, state.mapped.position, now)
        if not admitted:
            self.counters["commands_refused"] += 1
            self.log.error(f"command refused by the last check ({self.guard.last_refusal})",
                           throttle_duration_sec=1.0)
            return False
        self._commanded = True
        self.counters["commands"] += 1
        self.pub_command.publish(make_command(targets_model_order[self._to_command]))
        return True

    # -- reset service and timeouts -------------------------------------------------------------
    def _call_reset(self) -> None:
        assert self._reset_client is not None
        if not self._reset_client.service_is_ready():
            return  # retried by the timer
        self._reset_request_time = time.monotonic()
        future = self._reset_client.call_async(Trigger.Request())
        self._reset_future = future
        future.add_done_callback(self._on_reset_response)

    def _on_reset_response(self, future: Any) -> None:
        if future is not self._reset_future or self.phase != self.RESETTING:
            return
        result = future.result()
        if result is None or not result.success:
            self.log.error(f"reset failed: {getattr(result, 'message', 'no answer')}")
            return
        self._reset_response_time = time.monotonic()
        self._advance()

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        if self.phase == self.RUNNING and now - self._last_progress > self.p.state_timeout_s:
            self.log.warning(f"no new joint state for {self.p.state_timeout_s:g} s: dropping the episode")
            self.abort("stale joint state")
        elif self.phase == self.RESETTING:
            waited = now - self._reset_request_time
            if self._reset_client is not None and self._reset_future is None:
                self._call_reset()  # the service was not there yet
            elif waited > self.p.reset_timeout_s:
                self.counters["reset_retries"] += 1
                if self._reset_client is not None:
                    self.log.warning(f"no reset after {waited:.0f} s ({self.p.reset_service}): retrying")
                    self._reset_future = None
                    self._call_reset()
                elif not self._reset_warned:
                    self._reset_warned = True
                    self.log.warning(f"homing for {waited:.0f} s without reaching the home pose")

    # -- sim bridge parameters ----------------------------------------------------------------
    def set_node_parameters(self, node_name: str, values: Mapping[str, Any],
                            done: Callable[[bool, str], None]) -> None:
        """Set parameters of another node through its parameter service (asynchronously);
        ``done(ok, reason)`` follows. Waits for the service up to ``reset_timeout_s``."""
        client = self._param_clients.get(node_name)
        if client is None:
            client = self.node.create_client(SetParameters, f"/{node_name}/set_parameters")
            self._param_clients[node_name] = client
        request = SetParameters.Request()
        request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        deadline = time.monotonic() + self.p.reset_timeout_s

        def send() -> None:
            if not client.service_is_ready():
                if time.monotonic() > deadline:
                    done(False, f"/{node_name}/set_parameters is not available")
                    return
                timer_box[0] = self.node.create_timer(0.1, retry)
                return
            future = client.call_async(request)

            def answered(f: Any) -> None:
                result = f.result()
                failed = [r.reason for r in (result.results if result else []) if not r.successful]
                done(result is not None and not failed, "; ".join(failed) or ("" if result else "no answer"))

            future.add_done_callback(answered)

        timer_box: list[Any] = [None]

        def retry() -> None:
            if timer_box[0] is not None:
                self.node.destroy_timer(timer_box[0])
                timer_box[0] = None
            send()

        send()
