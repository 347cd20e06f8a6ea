"""The control node's logic without ROS: observation building, the policy step, the tick, hold,
loop timing.

:class:`PolicyStep` is the one step every loop that runs a policy on the arm takes: observation
-> policy -> non-finite check -> limits -> the guard's last check -> the action executed. The
controller's tick (:class:`PolicyController`) and the explorer's and adapter's episodes
(:class:`smrl_train.robot.episode_driver.EpisodeDriver`) both take it.

:class:`PolicyController` is what ``smrl_controller`` calls on every tick; the node only
converts messages and publishes what it returns. Time is passed in, so every rule (watchdog,
hold on an inference error, hold on a non-finite action) is unit-tested deterministically
(``test/test_control.py``), and then once more over DDS (``test/test_nodes_controller.py``).

Hold: entering a hold publishes exactly one command, the last measured position (clipped to
the limits), so the arm stops where it is; then nothing is published until the cause clears.
A forward_position_controller keeps its last command, so "publish nothing" alone would leave
the arm heading for the last policy target; the explicit hold target ends that, and no
policy output is ever repeated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from smrl_train.robot.safety import CommandGuard, MappedState, StaleStateWatchdog, TargetLimiter, all_finite
from smrl_train.robot.urdf import ArmDescription, rpy_to_matrix

# Observation blocks the robot side can build, and the size each must have.
SUPPORTED_BLOCKS = ("joint_pos", "joint_vel", "ee_pos", "puck_pos")

# Hold reasons.
HOLD_NO_STATE = "no_joint_state"
HOLD_STALE = "stale_joint_state"
HOLD_NO_OBJECT = "no_object_pose"
HOLD_BAD_OBS = "non_finite_observation"
HOLD_INFERENCE = "inference_error"
HOLD_BAD_ACTION = "non_finite_action"
HOLD_REFUSED = "command_refused"


class EndEffectorFK:
    """:func:`smrl_train.robot.urdf.forward_kinematics` with the constant parts precomputed.

    Same chain walk, same result (tested to 1e-12), about half the numpy calls: at a 100 Hz
    tick on a shared CPU the observation's FK was the largest share of the step.
    """

    def __init__(self, arm: ArmDescription) -> None:
        # Per joint: offset, fixed rotation, and for an actuated joint its axis' cross-product
        # matrix K and K^2 (None for a fixed joint).
        self._steps: list[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]] = []
        for joint in arm.chain:
            fixed_rot = rpy_to_matrix(joint.rpy)
            if joint.kind == "fixed":
                self._steps.append((np.asarray(joint.xyz, dtype=float), fixed_rot, None))
            else:
                x, y, z = joint.axis
                k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
                self._steps.append((np.asarray(joint.xyz, dtype=float), fixed_rot, (k, k @ k)))
        self._eye = np.eye(3)

    def __call__(self, q: np.ndarray) -> np.ndarray:
        """End-effector position (3,) for joint positions q (n,) in URDF order."""
        rot = self._eye
        pos = np.zeros(3)
        i = 0
        for xyz, fixed_rot, axis in self._steps:
            pos = pos + rot @ xyz
            rot = rot @ fixed_rot
            if axis is not None:
                k, k2 = axis
                angle = float(q[i])
                i += 1
                # Rodrigues, as urdf.axis_angle_matrix
                rot = rot @ (self._eye + math.sin(angle) * k + (1.0 - math.cos(angle)) * k2)
        return pos


class ObservationBuilder:
    """Builds the policy's observation on the robot from joint states, FK and an object pose.

    Args:
        arm: the robot's URDF (FK of ``ee_pos`` uses it: the function the sim's observation
            is tested against).
        joint_names: the model's joint order (the order of joint_pos / joint_vel).
        layout: the model's observation layout [(name, size), ...].
    Raises:
        ValueError: naming every block the robot cannot build or whose size is wrong.
    """

    def __init__(self, arm: ArmDescription, joint_names: Sequence[str], layout: Sequence[tuple[str, int]]) -> None:
        n = len(joint_names)
        missing = sorted(set(arm.joint_names) ^ set(joint_names))
        if missing:
            raise ValueError(f"joint names: model {list(joint_names)} vs URDF {list(arm.joint_names)} "
                             f"(differ in {', '.join(missing)})")
        sizes = {"joint_pos": n, "joint_vel": n, "ee_pos": 3, "puck_pos": 3}
        problems = []
        for name, size in layout:
            if name not in sizes:
                problems.append(f"block '{name}' is not one the robot side builds ({', '.join(SUPPORTED_BLOCKS)})")
            elif size != sizes[name]:
                problems.append(f"block '{name}' has size {size}, the robot's is {sizes[name]}")
        if problems:
            raise ValueError("observation layout: " + "; ".join(problems))
        self.arm = arm
        self.layout = tuple((str(a), int(b)) for a, b in layout)
        self.needs_object = any(name == "puck_pos" for name, _ in layout)
        # model order -> URDF order, for FK
        self._to_urdf = np.array([list(joint_names).index(name) for name in arm.joint_names])
        self.obs_dim = sum(size for _, size in layout)
        self._fk = EndEffectorFK(arm)

    def build(self, q: np.ndarray, qd: np.ndarray, object_pos: np.ndarray | None) -> np.ndarray:
        """q, qd (n,) in the model's joint order, object position (3,) or None -> obs (obs_dim,) f32."""
        parts = []
        for name, _ in self.layout:
            if name == "joint_pos":
                parts.append(q)
            elif name == "joint_vel":
                parts.append(qd)
            elif name == "ee_pos":
                parts.append(self._fk(q[self._to_urdf]))
            else:
                parts.append(object_pos if object_pos is not None else np.full(3, np.nan))
        return np.concatenate(parts).astype(np.float32)


class LoopStats:
    """Tick period and compute time samples (s) of one reporting window."""

    def __init__(self) -> None:
        self.periods: list[float] = []
        self.computes: list[float] = []

    def record(self, period: float | None, compute: float) -> None:
        if period is not None:
            self.periods.append(period)
        self.computes.append(compute)

    def summary(self) -> dict[str, float]:
        """p50/p99/max of period and compute in ms (NaN when the window is empty)."""
        out: dict[str, float] = {}
        for name, xs in (("period", self.periods), ("compute", self.computes)):
            arr = np.asarray(xs) * 1e3
            for label, q in (("p50", 50), ("p99", 99), ("max", 100)):
                out[f"{name}_{label}_ms"] = float(np.percentile(arr, q)) if arr.size else float("nan")
        return out

    def take(self) -> LoopStats:
        """This window's samples; starts a new window."""
        old = LoopStats()
        old.periods, old.computes = self.periods, self.computes
        self.periods, self.computes = [], []
        return old


def executed_action(action: np.ndarray, target: np.ndarray, safe_target: np.ndarray, q: np.ndarray,
                    max_step: np.ndarray) -> np.ndarray:
    """The normalised action (A,) the published ``safe_target`` amounts to.

    When the safety layer left the model's target alone (the normal case: the model's own
    target head already clips to the joint limits, and its step is half the velocity limit)
    this is the model's ``action``, as the in-process env records it. When the safety layer
    changed the target, the recorded action is the delta actually commanded,
    ``(safe_target - q) / max_step`` clipped to [-1, 1], so the data never claims an action
    the arm did not get.
    """
    if np.array_equal(np.asarray(safe_target, dtype=np.float64), np.asarray(target, dtype=np.float64)):
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
    delta = (np.asarray(safe_target, dtype=np.float64) - np.asarray(q, dtype=np.float64)) / np.asarray(max_step)
    return np.clip(delta, -1.0, 1.0).astype(np.float32)


# A policy as the step calls it: obs (O,) -> (normalised action (A,) or None, joint targets (A,)).
# An adapted policy gives targets only; a latent policy gives both (the action is recorded).
Act = Callable[[np.ndarray], tuple[np.ndarray | None, np.ndarray]]


@dataclass(frozen=True)
class StepOutcome:
    """What one policy step decided.

    ``command`` (n,) is the safe target to publish (admitted by the guard when the step
    admitted it) and ``action`` the normalised action it amounts to (None for a targets-only
    policy). Without a command, ``fault`` is the hold reason and ``detail`` says why. ``obs``
    is the observation once built, also when a later stage failed.
    """

    obs: np.ndarray | None = None
    command: np.ndarray | None = None
    action: np.ndarray | None = None
    fault: str | None = None
    detail: str = ""


class PolicyStep:
    """The step every loop on the arm takes: observation -> policy -> non-finite check ->
    limits -> the guard's last check -> the action executed.

    Args:
        builder: the observation builder for the policy's layout.
        limiter: non-finite rejection, position and velocity clipping of targets.
        guard: the last check before publishing (None: commands come back unchecked); its recent
            previous command bounds the limiter's step too (so the two agree).
        max_step: the model's max step per joint (A,), to express a target the safety layer
            changed as the action the arm got (:func:`executed_action`); needed by policies
            that give an action.
    """

    def __init__(self, builder: ObservationBuilder, limiter: TargetLimiter, guard: CommandGuard | None = None,
                 max_step: np.ndarray | None = None) -> None:
        self.builder = builder
        self.limiter = limiter
        self.guard = guard
        self.max_step = None if max_step is None else np.asarray(max_step, dtype=np.float64)

    def observe(self, state: MappedState, object_pos: np.ndarray | None) -> StepOutcome:
        """The observation alone; a fault when the object pose is missing or a value is non-finite."""
        if self.builder.needs_object and object_pos is None:
            return StepOutcome(fault=HOLD_NO_OBJECT, detail="no object pose received yet")
        obs = self.builder.build(state.position, state.velocity, object_pos)
        if not all_finite(obs):
            return StepOutcome(fault=HOLD_BAD_OBS, detail="non-finite observation")
        return StepOutcome(obs)

    def __call__(self, act: Act, state: MappedState, object_pos: np.ndarray | None, now: float,
                 admit: bool = True) -> StepOutcome:
        """One step on ``state`` at ``now`` (monotonic s). ``admit`` False: the command is computed
        but the guard does not admit it (it will not be published: the controller is paused)."""
        seen = self.observe(state, object_pos)
        obs = seen.obs
        if obs is None:
            return seen
        try:
            action, targets = act(obs)
        except Exception as exc:  # noqa: BLE001 - any failure of inference must end in a hold
            return StepOutcome(obs, fault=HOLD_INFERENCE, detail=f"{type(exc).__name__}: {exc}")
        q = state.position
        safe = None
        if action is None or all_finite(action):
            safe = self.limiter.limit(targets, q, self.guard.reference(now) if self.guard is not None else None)
        if safe is None:
            return StepOutcome(obs, fault=HOLD_BAD_ACTION, detail="non-finite action from the policy")
        if admit and self.guard is not None and not self.guard.admit(safe, q, now):
            return StepOutcome(obs, fault=HOLD_REFUSED, detail=self.guard.last_refusal)
        if action is None:
            return StepOutcome(obs, safe)
        assert self.max_step is not None, "a policy that gives actions needs the max_step"
        return StepOutcome(obs, safe, executed_action(action, targets, safe, q, self.max_step))


@dataclass(frozen=True)
class TickResult:
    """What one tick decided: a command (n,) in the model's joint order to publish (admitted by
    the guard when the controller has one), or None.

    ``hold`` is the reason this tick holds (None when acting); ``event`` is a message to log once
    (entering or leaving a hold, an inference error, a refused command).
    """

    command: np.ndarray | None
    hold: str | None = None
    event: str | None = None


# What a hold entered on a step's fault logs ({} is the fault's detail).
HOLD_MESSAGES = {
    HOLD_NO_OBJECT: "no object pose received yet: holding",
    HOLD_BAD_OBS: "non-finite observation: holding",
    HOLD_INFERENCE: "inference failed ({}): holding",
    HOLD_BAD_ACTION: "non-finite action from the policy: holding",
}


class PolicyController:
    """One control step at a time: fresh state -> :class:`PolicyStep` -> command or hold.

    Args:
        policy: ``act(obs (obs_dim,)) -> joint targets (n,)`` (a :class:`~smrl_train.robot.runtime.PolicyRuntime`).
        builder: the observation builder for the policy's layout.
        limiter: position and velocity clipping of targets (and non-finite rejection).
        watchdog: stale-state detection (timeout = watchdog periods x control period).
        guard: the last check before publishing: every command returned passed it, and its
            recent previous command bounds the limiter's step too (so the two agree).
    """

    def __init__(self, policy: object, builder: ObservationBuilder, limiter: TargetLimiter,
                 watchdog: StaleStateWatchdog, guard: CommandGuard | None = None) -> None:
        self.policy = policy
        self.builder = builder
        self.limiter = limiter
        self.watchdog = watchdog
        self.guard = guard
        self.policy_step = PolicyStep(builder, limiter, guard)
        self.enabled = True
        self.state: MappedState | None = None
        self.state_time: float | None = None
        self._state_seq = 0
        self._seen_seq = 0
        self.object_pos: np.ndarray | None = None
        self.hold_reason: str | None = HOLD_NO_STATE
        self.counters = {"ticks": 0, "commands": 0, "hold_commands": 0, "holds": 0, "suppressed_commands": 0,
                         "inference_errors": 0, "non_finite_observations": 0, "object_poses_rejected": 0}
        self.last_error = ""

    # -- inputs (any thread; plain attribute swaps under the GIL) ---------------------------------
    def on_state(self, state: MappedState, now: float) -> None:
        """A mapped, finite joint state received at ``now`` (monotonic s)."""
        self.state, self.state_time = state, now
        self._state_seq += 1

    def on_object(self, position: np.ndarray) -> bool:
        """The object position (3,); a non-finite one is rejected (counted) and False returned."""
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            self.counters["object_poses_rejected"] += 1
            return False
        self.object_pos = position
        return True

    def forget_state(self) -> None:
        """Drop the state (the controller was deactivated; the arm may move before it is active
        again): nothing acts until a fresh state arrives, as after start-up."""
        self.state = self.state_time = None
        self._seen_seq = self._state_seq
        self.hold_reason = HOLD_NO_STATE
        self.watchdog.last_fresh, self.watchdog.stale = None, True

    def set_policy(self, policy: object) -> None:
        """Swap the policy (the node calls this between two ticks)."""
        self.policy = policy

    def set_enabled(self, enabled: bool) -> None:
        """Publish commands or not (paused, every step still runs and is counted as suppressed);
        the guard forgets the previous command, the arm may have moved meanwhile."""
        self.enabled = enabled
        if self.guard is not None:
            self.guard.forget()

    @property
    def has_new_state(self) -> bool:
        return self._state_seq != self._seen_seq

    # -- the tick -----------------------------------------------------------------------------
    def check(self, now: float) -> TickResult:
        """Watchdog only (no new state to act on): holds when the state went stale."""
        self._consume_state()
        if self.state is None:
            return TickResult(None, self.hold_reason)
        if self.watchdog.check(now) == "stale":
            return self._hold(HOLD_STALE, f"no fresh joint state for {self.watchdog.timeout * 1e3:.0f} ms: "
                                          "holding position until one arrives", now)
        return TickResult(None, self.hold_reason)

    def step(self, now: float) -> TickResult:
        """A full control step on the newest state."""
        self.counters["ticks"] += 1
        recovered = self._consume_state()
        if self.state is None:
            return TickResult(None, self.hold_reason)
        status = self.watchdog.check(now)
        if status == "stale":
            return self._hold(HOLD_STALE, f"no fresh joint state for {self.watchdog.timeout * 1e3:.0f} ms: "
                                          "holding position until one arrives", now)
        if status == "still_stale":
            return TickResult(None, self.hold_reason)
        out = self.policy_step(self._act, self.state, self.object_pos, now, admit=self.enabled)
        if out.command is None:
            return self._on_fault(out, now)
        event = None
        if self.hold_reason is not None:
            event = f"resuming after hold ({self.hold_reason})" if self.hold_reason != HOLD_NO_STATE else \
                "first joint state received: commanding"
            self.hold_reason = None
        elif recovered:
            event = "fresh joint state again: commanding"
        self.counters["commands"] += 1
        if not self.enabled:
            self.counters["suppressed_commands"] += 1
            return TickResult(None, None, event)
        return TickResult(out.command, None, event)

    def hold_command(self, now: float) -> np.ndarray | None:
        """The command that holds the arm where it is, admitted by the guard (deactivation, a
        dead loop); None without a state or while commands are disabled."""
        return None if self.state is None else self._admitted_hold(now)

    def _act(self, obs: np.ndarray) -> tuple[None, np.ndarray]:
        return None, self.policy.act(obs)  # type: ignore[attr-defined]

    def _on_fault(self, out: StepOutcome, now: float) -> TickResult:
        assert out.fault is not None
        if out.fault == HOLD_REFUSED:
            # This tick holds; the hold reason stays, so the next tick tries the policy again.
            return TickResult(self._admitted_hold(now), HOLD_REFUSED,
                              f"command refused by the last check ({out.detail}): holding")
        if out.fault == HOLD_BAD_OBS:
            self.counters["non_finite_observations"] += 1
        elif out.fault == HOLD_INFERENCE:
            self.counters["inference_errors"] += 1
            self.last_error = out.detail
        return self._hold(out.fault, HOLD_MESSAGES[out.fault].format(out.detail), now)

    def _consume_state(self) -> bool:
        """Feed the watchdog with a state not yet seen; True when that ends a stale period."""
        if not self.has_new_state or self.state_time is None:
            return False
        self._seen_seq = self._state_seq
        return self.watchdog.feed(self.state_time)

    def _hold(self, reason: str, message: str, now: float) -> TickResult:
        if self.hold_reason == reason:
            return TickResult(None, reason)
        self.hold_reason = reason
        self.counters["holds"] += 1
        self.counters["hold_commands"] += 1
        return TickResult(self._admitted_hold(now), reason, message)

    def _admitted_hold(self, now: float) -> np.ndarray | None:
        assert self.state is not None
        if not self.enabled:
            self.counters["suppressed_commands"] += 1
            return None
        target = self.limiter.hold_target(self.state.position)
        if self.guard is not None and not self.guard.admit_hold(target, now):
            return None
        return target


def period_schedule(period: float) -> Callable[[float, float | None], tuple[float, int]]:
    """Absolute-deadline scheduling (never ``sleep(period)``: that drifts, ros2_control #647).

    Returns ``next_deadline(now, deadline) -> (new deadline, missed periods)``: the next
    deadline one period after ``deadline``; when ``now`` is already past it, the periods
    skipped are counted and the schedule resynchronises to ``now``.
    """
    def next_deadline(now: float, deadline: float | None) -> tuple[float, int]:
        if deadline is None:
            return now + period, 0
        nxt = deadline + period
        if now > nxt:
            missed = int((now - deadline) // period)
            return now + period, missed
        return nxt, 0

    return next_deadline
