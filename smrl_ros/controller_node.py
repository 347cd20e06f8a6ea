"""``smrl_controller``: runs an exported adapted policy (ONNX) as a real-time control node.

Data path (the node only converts; the judgement lives in :mod:`smrl_train.robot.control` and
:mod:`smrl_train.robot.safety`, unit-tested without ROS):

``/joint_states`` -> map by name (reject bad messages) -> observation (q, qd, FK ee_pos,
object pose) -> onnxruntime (1 intra-op + 1 inter-op thread) -> non-finite rejection,
position and velocity clipping -> ``/forward_position_controller/commands``.

Start-up refuses (exit status 2, the log names the mismatch) a model that fails the loader's
checks (:mod:`smrl_train.robot.runtime`) or does not fit the robot: joint names that differ from the
URDF's or from the ``joints`` parameter, an observation block the robot cannot build.

The loop runs in its own thread on absolute deadlines, not on an rclpy timer:

* ``trigger: state`` (default): one step per fresh joint state, at most ``rate_hz`` (states
  that arrive faster are decimated): the lowest state-to-command latency, like ros2_control's
  read -> update -> write;
* ``trigger: timer``: a fixed ``rate_hz`` on the newest state, for state rates that are not a
  multiple of the policy rate.

Either way, no fresh state for ``watchdog_periods`` periods holds (see :mod:`smrl_train.robot.control`),
logged once; the next fresh state resumes. Loop timing (period and compute p50/p99/max) and
every counter go to ``/diagnostics`` each ``diagnostics_period_s``. Setting ``model_path``
hot-reloads: the new model is loaded and checked in the parameter callback (a refusal comes back
as the failed result's reason) and swapped in between two ticks.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.publisher import Publisher
from rclpy.timer import Timer
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from smrl_ros import params, topics
from smrl_ros.conversions import (
    OK,
    WARN,
    joint_state_arrays,
    make_command,
    make_status,
    pose_position,
    seconds_to_stamp,
)
from smrl_ros.node_main import AUTOSTART_HELP, ManagedNode, StartupError, run_node
from smrl_ros.paths import input_path, robot_arm
from smrl_ros.realtime import freeze_heap, hold_cpu_dma_latency, set_realtime_priority
from smrl_train.robot.control import (
    HOLD_REFUSED,
    LoopStats,
    ObservationBuilder,
    PolicyController,
    TickResult,
    period_schedule,
)
from smrl_train.robot.model_metadata import ModelError
from smrl_train.robot.runtime import PolicyRuntime, read_model
from smrl_train.robot.safety import (
    LIMIT_MARGIN,
    CommandGuard,
    JointStateMapper,
    MappedState,
    StaleStateWatchdog,
    TargetLimiter,
)
from smrl_train.robot.urdf import ArmDescription, UrdfError, position_bounds

TRIGGERS = ("state", "timer")
HOLD_ACK_TIMEOUT_S = 0.5  # how long deactivate waits for the subscribers to acknowledge the hold


@dataclass(frozen=True)
class ControllerParams:
    model_path: str = params.param("", "adapted policy (.onnx, kind adapted_policy); set it at run time "
                                   "to hot-reload another model")
    enabled: bool = params.param(True, "publish commands; false: the loop, safety checks and diagnostics run "
                                 "but nothing is published (the adapter pauses the controller this way while "
                                 "it explores); settable at run time")
    urdf_path: str = params.param("", "the robot's URDF (limits, FK of the end effector); relative paths are "
                                  "resolved against the package share folder; empty: the model's (smrl.urdf)")
    ee_link: str = params.param("", "end-effector link of the URDF (the policy observes its position); empty: "
                                "the model's (smrl.ee_link)")
    joints: tuple[str, ...] = params.param((), "joint order of the command topic, as the forward "
                                           "controller's 'joints' parameter (empty: URDF order)")
    rate_hz: float = params.param(0.0, "control rate (Hz); 0: the model's control rate; another rate is "
                                  "refused unless allow_rate_mismatch is true", low=0.0, high=1000.0)
    allow_rate_mismatch: bool = params.param(False, "run at a rate_hz more than 1% from the model's control "
                                             "rate (its actions are steps per model period; the safety "
                                             "limits stay those of the model's period)")
    trigger: str = params.param("state", "state: step on each fresh joint state (at most rate_hz); "
                                "timer: fixed rate on the newest state")
    watchdog_periods: float = params.param(3.0, "hold when no fresh joint state came for this many periods",
                                           low=1.0, high=20.0)
    ignore_unknown_joints: bool = params.param(False, "accept joint states that also name joints the "
                                               "policy does not use (e.g. gripper fingers)")
    warmup: int = params.param(50, "inference runs at load, before the first tick", low=0, high=10000)
    diagnostics_period_s: float = params.param(1.0, "period of /diagnostics messages (s)", low=0.01, high=60.0)
    realtime_priority: int = params.param(0, "SCHED_FIFO priority (1-99) for all the node's threads, as "
                                          "ros2_control's thread_priority; 0: normal scheduling", low=0, high=99)
    cpu_dma_latency_us: int = params.param(-1, "hold /dev/cpu_dma_latency at this many us while the node "
                                           "runs (0: no deep CPU idle states, shorter wake-ups at low rates; "
                                           "needs root or a udev rule); -1: leave it", low=-1, high=1_000_000)
    joint_states_topic: str = params.param(topics.JOINT_STATES, "joint state input")
    command_topic: str = params.param(topics.COMMANDS, "position command output (Float64MultiArray)")
    object_pose_topic: str = params.param(topics.OBJECT_POSE, "object pose input (models observing puck_pos)")
    autostart: bool = params.param(True, AUTOSTART_HELP)

    def __post_init__(self) -> None:
        if not self.model_path:
            raise params.ParameterError("parameter 'model_path': required (an adapted policy .onnx)")
        if self.trigger not in TRIGGERS:
            raise params.ParameterError(f"parameter 'trigger': expected state or timer, got {self.trigger!r}")


def load_checked_policy(path: str, arm: ArmDescription, command_joints: tuple[str, ...],
                        warmup: int) -> tuple[PolicyRuntime, ObservationBuilder]:
    """Load the model and check it fits the robot; raises ModelError naming every mismatch."""
    runtime = PolicyRuntime(input_path(path), warmup=0)
    info = runtime.info
    problems = []
    if sorted(command_joints) != sorted(info.joint_names):
        problems.append(f"joint names: model {list(info.joint_names)} vs robot (command joints) "
                        f"{list(command_joints)}")
    try:
        builder = ObservationBuilder(arm, info.joint_names, info.observation_layout)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise ModelError(f"{path} does not fit the robot {arm.name}: " + "; ".join(problems))
    for _ in range(warmup):
        runtime.act(np.zeros(info.obs_dim, dtype=np.float32))
    return runtime, builder


# Parameters that may change while the node runs (the rest are read-only).
RUNTIME_PARAMETERS = ("model_path", "enabled")


class ControllerNode(ManagedNode):
    """The control node (a lifecycle node); see the module docstring."""

    def __init__(self) -> None:
        super().__init__("smrl_controller")
        params.declare(self, ControllerParams, read_only=tuple(
            f for f in ControllerParams.__dataclass_fields__ if f not in RUNTIME_PARAMETERS))
        self.core: PolicyController | None = None
        self._entities: list[Any] = []
        self.add_on_set_parameters_callback(self._on_parameters)

    # -- lifecycle ------------------------------------------------------------------------------
    def configure(self) -> None:
        """Load the URDF and the model, check they fit, build the loop; StartupError if not."""
        try:
            p = params.read(self, ControllerParams)
            info = read_model(input_path(p.model_path))[1] if not (p.urdf_path and p.ee_link) else None
            arm = robot_arm(p.urdf_path, p.ee_link, info)
            command_joints = p.joints or arm.joint_names
            runtime, builder = load_checked_policy(p.model_path, arm, tuple(command_joints), p.warmup)
        except (params.ParameterError, UrdfError, ModelError) as exc:
            raise StartupError(str(exc)) from None
        info = runtime.info
        rate_hz = p.rate_hz or info.control_hz
        model_period = 1.0 / info.control_hz
        if abs(rate_hz - info.control_hz) > 0.01 * info.control_hz:
            mismatch = (f"rate_hz {rate_hz:g} differs from the model's control rate {info.control_hz:g} Hz: "
                        f"its actions are steps per {model_period:g} s")
            if not p.allow_rate_mismatch:
                raise StartupError(f"{mismatch}; set allow_rate_mismatch:=true to run at it anyway")
            self.get_logger().warning(mismatch)
        if info.urdf_sha256 != arm.urdf_sha256:
            self.get_logger().warning(f"the model was trained on {info.arm} with another URDF "
                                   f"(sha256 {info.urdf_sha256[:12]}... vs {arm.urdf_sha256[:12]}...)")
        self.p, self.arm = p, arm
        self.model_joints = info.joint_names
        self.command_joints = tuple(command_joints)
        # model order -> command order
        self._to_command = np.array([self.model_joints.index(n) for n in self.command_joints])
        self.rate_hz = rate_hz
        self.period = 1.0 / self.rate_hz
        # Limits from the robot's URDF, in the model's joint order.
        order = [arm.joint_names.index(n) for n in self.model_joints]
        # The step bounds use the model's period (a faster loop shortens them; no rate stretches them).
        limiter = TargetLimiter(arm.lower[order], arm.upper[order], arm.velocity[order],
                                min(self.period, model_period))
        self.guard = CommandGuard(arm.lower[order], arm.upper[order], arm.velocity[order], model_period)
        self.mapper = JointStateMapper(self.model_joints, p.ignore_unknown_joints,
                                       position_bounds(arm, self.model_joints, LIMIT_MARGIN))
        self.core = PolicyController(runtime, builder, limiter, StaleStateWatchdog(p.watchdog_periods * self.period),
                                     self.guard)
        self.model_path = p.model_path
        self.model_hash = info.model_hash
        self.reloads = 0
        self.reload_failures = 0
        self.missed_periods = 0
        self.core.enabled = p.enabled
        self.stats = LoopStats()
        self._pending: tuple[PolicyRuntime, str] | None = None
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._stop_wait = threading.Event()
        self._next_deadline = period_schedule(self.period)
        self._deadline: float | None = None
        self._last_step: float | None = None
        self._latency_fd: int | None = None

        self.pub_command = self.create_publisher(Float64MultiArray, p.command_topic, topics.COMMAND_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, topics.DEFAULT_QOS)
        self._entities = [self.pub_command, self.pub_diag,
                          self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state,
                                                   topics.STATE_SUB_QOS),
                          self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)]
        if builder.needs_object:
            self._entities.append(self.create_subscription(PoseStamped, p.object_pose_topic, self._on_object_pose,
                                                           topics.STATE_SUB_QOS))
        self.get_logger().info(
            f"loaded {p.model_path} ({info.task_family} policy for {info.arm}, hash {info.model_hash[:12]}, "
            f"z {info.z}); commanding {', '.join(self.command_joints)} on {p.command_topic} at "
            f"{self.rate_hz:g} Hz ({p.trigger} trigger), watchdog {p.watchdog_periods:g} periods")

    def cleanup(self) -> None:
        """Release the model, the topics and the timer (back to unconfigured)."""
        for entity in self._entities:
            if isinstance(entity, Timer):
                self.destroy_timer(entity)
            elif isinstance(entity, Publisher):
                self.destroy_publisher(entity)
            else:
                self.destroy_subscription(entity)
        self._entities = []
        self.core = None
        self.get_logger().info("cleaned up: model released")

    # -- callbacks (executor thread) -----------------------------------------------------------
    def _on_joint_state(self, msg: JointState) -> None:
        if not self.active:
            return  # configured but inactive: no steps, no commands
        now = time.monotonic()
        names, position, velocity = joint_state_arrays(msg)
        result = self.mapper.map(names, position, velocity)
        if not isinstance(result, MappedState):
            self.get_logger().warning(f"rejected a joint state: {result.reason} ({result.detail})",
                                   throttle_duration_sec=1.0)
            return
        self.core.on_state(result, now)
        if self.p.trigger == "state":
            # Step right here: handing the state to another thread costs a wake-up and a GIL
            # switch, about as much as the step itself.
            self._tick(now, act=self._due(now))

    def _on_object_pose(self, msg: PoseStamped) -> None:
        if not self.core.on_object(pose_position(msg)):
            self.get_logger().warning("rejected a non-finite object pose", throttle_duration_sec=1.0)

    def _on_parameters(self, changed: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        if self.core is None:
            return SetParametersResult(successful=True)  # unconfigured: read at configure
        enabled = self.core.enabled
        for param in changed:
            if param.name == "enabled":
                try:
                    enabled = params.convert("enabled", param.value, bool)
                except params.ParameterError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                continue
            if param.name != "model_path":
                continue
            try:
                path = params.convert("model_path", param.value, str)
                runtime, _ = load_checked_policy(path, self.arm, self.command_joints, self.p.warmup)
                # The state mapping, observation and command order are built for the running
                # model's joint order and layout: a model that differs needs a restart.
                if runtime.info.joint_names != self.model_joints:
                    raise ModelError(f"{path}: joint order {list(runtime.info.joint_names)} differs from the "
                                     f"running model's {list(self.model_joints)} (restart the node to switch)")
                if runtime.info.observation_layout != self.core.builder.layout:
                    raise ModelError(f"{path}: observation layout {runtime.info.observation_layout} differs "
                                     f"from the running model's {self.core.builder.layout} (restart the node)")
            except (params.ParameterError, ModelError) as exc:
                self.reload_failures += 1
                self.get_logger().error(f"model not reloaded: {exc}")
                return SetParametersResult(successful=False, reason=str(exc))
            self._pending = (runtime, path)  # swapped in by the loop between two ticks
        if enabled != self.core.enabled:
            with self._lock:  # between two ticks
                self.core.set_enabled(enabled)
            self.get_logger().info("commands enabled" if enabled else "commands disabled (enabled: false)")
        return SetParametersResult(successful=True)

    # -- the control loop (its own thread, from activate to deactivate) ----------------------------
    def activate(self) -> None:
        """Start the loop: commands flow (unless ``enabled`` is false)."""
        assert self.core is not None
        self.guard.forget()  # the arm may have moved while inactive
        self._deadline = self._last_step = None
        self._stop_wait.clear()
        if self.p.realtime_priority:
            why = set_realtime_priority(self.p.realtime_priority)
            if why:
                self.get_logger().warning(f"realtime_priority {self.p.realtime_priority} not applied: {why}")
            else:
                self.get_logger().info(f"all threads on SCHED_FIFO priority {self.p.realtime_priority}")
        self._latency_fd = None
        if self.p.cpu_dma_latency_us >= 0:
            self._latency_fd, why = hold_cpu_dma_latency(self.p.cpu_dma_latency_us)
            if why:
                self.get_logger().warning(f"cpu_dma_latency_us {self.p.cpu_dma_latency_us} not applied: {why}")
            else:
                self.get_logger().info(f"holding /dev/cpu_dma_latency at {self.p.cpu_dma_latency_us} us")
        freeze_heap()
        self._running.set()
        self._thread = threading.Thread(target=self._loop, name="smrl_control_loop", daemon=True)
        self._thread.start()
        self.get_logger().info("active: commanding" if self.core.enabled else
                               "active (commands disabled: enabled false)")

    def deactivate(self) -> None:
        """Stop the loop and leave the arm holding where it is."""
        self._running.clear()
        self._stop_wait.set()
        self._thread.join(timeout=2.0)
        if getattr(self, "_latency_fd", None) is not None:
            os.close(self._latency_fd)  # releases the latency request
            self._latency_fd = None
        if self.core.hold_reason is None and rclpy.ok(context=self.context):
            # Leave the arm holding where it is, not heading for the last policy target.
            hold = self.core.hold_command(time.monotonic())
            if hold is not None:
                self._publish(hold)
                # The hold must reach the arm before a cleanup or shutdown destroys the publisher.
                self.pub_command.wait_for_all_acked(Duration(seconds=HOLD_ACK_TIMEOUT_S))
        self.core.forget_state()
        self.get_logger().info("inactive: holding, no commands until activated")

    def _swap_pending(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            runtime, path = pending
            self.core.set_policy(runtime)
            self.model_path, self.model_hash = path, runtime.info.model_hash
            self.reloads += 1
            self.get_logger().info(f"switched to {path} (hash {self.model_hash[:12]}, z {runtime.info.z})")

    def _loop(self) -> None:
        try:
            self._run_loop()
        except Exception as exc:  # noqa: BLE001 - a dead loop must not pass silently
            self.get_logger().fatal(f"control loop failed ({type(exc).__name__}: {exc}); holding and exiting")
            hold = self.core.hold_command(time.monotonic())
            if hold is not None:
                self._publish(hold)
            os.kill(os.getpid(), signal.SIGTERM)  # the supervisor (launch, the graph runner) sees the exit

    def _run_loop(self) -> None:
        if self.p.trigger == "timer":
            while self._running.is_set():
                if self._deadline is not None:
                    time.sleep(max(0.0, self._deadline - time.monotonic()))
                if self._running.is_set():
                    self._tick(time.monotonic(), act=True)
            return
        # State trigger: steps run in the joint-state callback; this thread is the watchdog.
        # It sleeps until the newest state would go stale (not every period: fewer wake-ups
        # competing with the callback for the GIL at 500 Hz).
        wd = self.core.watchdog
        while self._running.is_set():
            if wd.stale or wd.last_fresh is None:
                wait = self.period
            else:
                wait = max(wd.last_fresh + wd.timeout - time.monotonic(), 0.0) + 0.2 * self.period
            self._stop_wait.wait(wait)
            if self._running.is_set():
                self._tick(time.monotonic(), act=False)

    def _due(self, now: float) -> bool:
        """State trigger: act on this state? The first state within half a period before the
        next (absolute) deadline acts: states at rate_hz all act whatever their jitter up to
        half a period; faster ones are decimated to rate_hz on average."""
        return self._deadline is None or now >= self._deadline - self.period / 2

    def _tick(self, now: float, act: bool) -> None:
        """One tick under the lock (the callback and the loop thread both tick)."""
        with self._lock:
            self._swap_pending()
            if not act:
                self._handle(self.core.check(now))
                return
            self._handle(self.core.step(now))
            self.stats.record(now - self._last_step if self._last_step is not None else None,
                              time.monotonic() - now)
            self._last_step = now
            self._deadline, missed = self._next_deadline(now, self._deadline)
            self.missed_periods += missed

    def _handle(self, result: TickResult) -> None:
        if result.command is not None:
            self._publish(result.command)
        if result.event:
            # rclpy refuses one call site logging at two severities: a call site each.
            if result.hold is None:
                self.get_logger().info(result.event)
            elif result.hold == HOLD_REFUSED:
                self.get_logger().error(result.event, throttle_duration_sec=1.0)
            else:
                self.get_logger().warning(result.event)

    def _publish(self, targets_model_order: np.ndarray) -> None:
        """Publish a command the core returned (it passed the guard), in the command topic's order."""
        self.pub_command.publish(make_command(targets_model_order[self._to_command]))

    # -- diagnostics (executor thread) -------------------------------------------------------------
    def counters(self) -> dict[str, object]:
        lim, wd = self.core.limiter, self.core.watchdog
        return {
            **self.core.counters,
            "states_accepted": self.mapper.accepted,
            **{f"rejected_{k}": v for k, v in self.mapper.rejected.items()},
            "non_finite_actions": lim.rejected_non_finite,
            "position_clipped": lim.position_clipped,
            "velocity_clipped": lim.velocity_clipped,
            "stale_events": wd.stale_events,
            "stale_recoveries": wd.recoveries,
            "missed_periods": self.missed_periods,
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "enabled": self.core.enabled,
            **{f"guard_{k}": v for k, v in self.guard.refused.items()},
        }

    def _publish_diagnostics(self) -> None:
        assert self.core is not None
        hold = self.core.hold_reason
        values: dict[str, object] = {
            "model_path": self.model_path, "model_hash": self.model_hash, "rate_hz": self.rate_hz,
            "trigger": self.p.trigger, "hold": hold or "none", "last_error": self.core.last_error or "none",
            **self.stats.take().summary(), **self.counters(),
        }
        level = OK if hold is None else WARN
        message = "commanding" if hold is None else f"holding: {hold}"
        if not self.active:
            level, message = WARN, "inactive (lifecycle): not commanding"
        values["lifecycle"] = self.lifecycle_state
        msg = DiagnosticArray()
        msg.header.stamp = seconds_to_stamp(time.time())
        msg.status = [make_status("smrl_controller: control loop", level, message, values, self.arm.name)]
        self.pub_diag.publish(msg)


def main(args: list[str] | None = None) -> int:
    return run_node(ControllerNode, "smrl_controller", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
