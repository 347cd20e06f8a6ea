"""Episodes of a policy on an arm, without ROS: what the explorer and the adapter share.

:class:`EpisodeDriver` runs one episode at a time; :class:`smrl_ros.arm_driver.ArmDriver` feeds
it joint states, object poses, rewards, reset answers and a timer tick, each with the time it
happened (monotonic s, so tests inject time), and carries out what it asks for through
callbacks: publish a command, call the reset service, log.

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

With rewards (the adapter), a transition completes only once a reward that arrived after its
command is there: the sim bridge publishes one reward per step, right after the state.

Every step is the controller's (:class:`smrl_train.robot.control.PolicyStep`): observations and
actions checked for non-finite values, every target clipped to the URDF limits and to velocity
limit x period around the measured position, then admitted by the
:class:`~smrl_train.robot.safety.CommandGuard`. A non-finite observation or action, a failing
policy, a refused command or a state stream that stops (``state_timeout_s``) aborts the episode
and holds the arm where it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from smrl_train.robot.control import (
    HOLD_BAD_ACTION,
    HOLD_INFERENCE,
    HOLD_NO_OBJECT,
    HOLD_REFUSED,
    ObservationBuilder,
    PolicyStep,
    period_schedule,
)
from smrl_train.robot.homing import at_home, homing_step
from smrl_train.robot.safety import CommandGuard, MappedState, TargetLimiter, all_finite
from smrl_train.robot.urdf import ArmDescription

MODES = ("lockstep", "realtime")
SETTLED_VELOCITY = 0.05  # rad/s: homing is done when every joint is slower than this

# Why an episode is aborted, per fault of its step.
ABORT_REASONS = {HOLD_INFERENCE: "policy error", HOLD_BAD_ACTION: "non-finite action",
                 HOLD_REFUSED: "command refused by the last check"}


@dataclass(frozen=True)
class Transition:
    """One step: obs, next_obs (O,) f32, action (A,) f32 as executed, the next state's stamp
    (s) and the reward (with rewards only)."""

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


def _no_reset_service(request: int) -> bool:
    raise RuntimeError("no reset service set")


class EpisodeDriver:
    """Runs episodes of ``policy`` on the arm; see the module docstring.

    Args:
        arm: the robot's URDF.
        info: the model's metadata (joint names and order, observation layout, action scale,
            control rate, episode length): a :class:`smrl_train.robot.model_metadata.ModelInfo`.
        mode: ``lockstep`` or ``realtime``.
        rate_hz: realtime step rate (0: the model's control rate).
        steps: steps per episode (0: the model's).
        reset_service: the service that resets the arm, named in logs (None: homing to ``home``).
        home: the home pose (rad, URDF joint order), needed for homing.
        homing_speed: homing speed as a fraction of each joint's velocity limit.
        home_tolerance: homing is done when every joint is this close (rad) and at rest.
        reset_timeout_s: warn (and retry the reset service) after this long.
        state_timeout_s: abort the running episode when no new joint state came for this long.
        rewarded: pair every transition with a reward (:meth:`on_reward`).
    """

    IDLE, RESETTING, READY, RUNNING = "idle", "resetting", "ready", "running"

    def __init__(self, arm: ArmDescription, info: Any, mode: str = "lockstep", rate_hz: float = 0.0,
                 steps: int = 0, reset_service: str | None = None, home: Sequence[float] = (),
                 homing_speed: float = 0.25, home_tolerance: float = 0.01, reset_timeout_s: float = 30.0,
                 state_timeout_s: float = 2.0, rewarded: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected lockstep or realtime, got {mode!r}")
        self.joint_names = tuple(info.joint_names)
        self.builder = ObservationBuilder(arm, self.joint_names, info.observation_layout)  # checks the names
        order = [arm.joint_names.index(n) for n in self.joint_names]
        self.period = 1.0 / float(info.control_hz)  # the action's time base, whatever the loop rate
        self.episode_length = steps or getattr(info, "episode_length", None) or 0
        if self.episode_length < 1:
            raise ValueError("parameter 'episode_length': required, the model does not record its episode length "
                             "(exported by an older smrl)")
        self.limiter = TargetLimiter(arm.lower[order], arm.upper[order], arm.velocity[order], self.period)
        self.guard = CommandGuard(arm.lower[order], arm.upper[order], arm.velocity[order], self.period)
        self.policy_step = PolicyStep(self.builder, self.limiter, self.guard, info.max_step)
        self.home: np.ndarray | None = None
        if home:
            if len(home) != arm.n_joints:
                raise ValueError(f"parameter 'home': {len(home)} values for {arm.n_joints} joints")
            self.home = np.clip(np.asarray(home, dtype=np.float64), arm.lower, arm.upper)[order]
        elif reset_service is None:
            raise ValueError("parameter 'home': required without a reset service (the pose to return to)")
        self.mode, self.reset_service, self.rewarded = mode, reset_service, rewarded
        self.home_tolerance = home_tolerance
        self.reset_timeout_s, self.state_timeout_s = reset_timeout_s, state_timeout_s
        self.homing_step_size = homing_speed * self.limiter.max_step
        self.loop_period = 1.0 / (rate_hz or float(info.control_hz))
        self._next_deadline = period_schedule(self.loop_period)
        self._deadline: float | None = None

        # Callbacks the owner sets: the episode's ...
        self.policy: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] = _no_policy
        self.on_transition: Callable[[Transition], None] = _noop
        self.on_episode_end: Callable[[EpisodeEnd], None] = _noop
        self.on_ready: Callable[[], None] = _noop
        # ... and the arm's: publish a command (n,) in the model's joint order (it passed the
        # guard); call the reset service and answer :meth:`on_reset_answer` with the request's
        # number (False: the service is not there yet, check_timeouts retries); log (level
        # "warning" or "error", message).
        self.publish: Callable[[np.ndarray], None] = _noop
        self.request_reset: Callable[[int], bool] = _no_reset_service
        self.log: Callable[[str, str], None] = _noop

        self.phase = self.IDLE
        self.counters = {"steps": 0, "commands": 0, "episodes_aborted": 0, "non_finite_actions": 0,
                         "non_finite_observations": 0, "resets": 0, "reset_retries": 0,
                         "commands_refused": 0}
        self._latest: _State | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._last_progress = 0.0
        self._object: np.ndarray | None = None
        self._commanded = False
        self._steps_wanted = 0
        self._episode_steps = 0
        self._pending: tuple[np.ndarray, np.ndarray] | None = None  # (obs, executed action)
        self._reset_request = 0  # number of the last reset service request
        self._reset_sent = False  # this reset's request went out
        self._reset_request_time = 0.0
        self._reset_response_time: float | None = None
        self._reset_warned = False
        self._reward: float | None = None
        self._reward_count = 0
        self._reward_count_at_command = 0

    # -- inputs ------------------------------------------------------------------------------
    def on_joint_state(self, state: MappedState, stamp: float, now: float) -> None:
        """A mapped joint state stamped ``stamp`` (s), received at ``now``."""
        key = (stamp, state.position.tobytes())
        if key == self._last_key:
            return  # the bridge republishing a state already used
        self._latest = _State(state, stamp, key, now)
        self._advance(now)

    def on_object(self, position: np.ndarray) -> bool:
        """The object position (3,); a non-finite one is rejected and False returned."""
        if not all_finite(position):
            return False
        self._object = np.asarray(position, dtype=np.float64)
        return True

    def on_reward(self, reward: float, now: float) -> bool:
        """A reward received at ``now``; a non-finite one is rejected and False returned."""
        if not np.isfinite(reward):
            return False
        self._reward = float(reward)
        self._reward_count += 1
        if self.phase == self.RUNNING:
            self._advance(now)
        return True

    def on_reset_answer(self, request: int, ok: bool, detail: str, now: float) -> None:
        """The reset service answered request number ``request`` (``detail``: why it failed)."""
        if request != self._reset_request or self.phase != self.RESETTING:
            return  # superseded by a retry, or no longer resetting
        if not ok:
            self.log("error", f"reset failed: {detail}")
            return  # retried after reset_timeout_s
        self._reset_response_time = now
        self._advance(now)

    def check_timeouts(self, now: float) -> None:
        """Timeouts (the owner calls this a few times a second): a stale state stream aborts
        the episode; a reset that does not come is retried (service) or warned about (homing)."""
        if self.phase == self.RUNNING and now - self._last_progress > self.state_timeout_s:
            self.log("warning", f"no new joint state for {self.state_timeout_s:g} s: dropping the episode")
            self.abort("stale joint state", now)
        elif self.phase == self.RESETTING:
            waited = now - self._reset_request_time
            if self.reset_service is not None and not self._reset_sent:
                self._call_reset(now)  # the service was not there yet
            elif waited > self.reset_timeout_s:
                self.counters["reset_retries"] += 1
                if self.reset_service is not None:
                    self.log("warning", f"no reset after {waited:.0f} s ({self.reset_service}): retrying")
                    self._call_reset(now)
                elif not self._reset_warned:
                    self._reset_warned = True
                    self.log("warning", f"homing for {waited:.0f} s without reaching the home pose")

    # -- episode control (owner API) -------------------------------------------------------------
    def reset(self, now: float) -> None:
        """Bring the arm to the start of an episode; ``on_ready`` follows."""
        self.phase = self.RESETTING
        self._reset_warned = False
        self._reset_request_time = now
        self._reset_response_time = None
        self.counters["resets"] += 1
        self.guard.forget()  # a reset service moves the arm by other means
        if self.reset_service is not None:
            self._call_reset(now)
        else:
            self._advance(now)

    def run(self, steps: int, now: float) -> None:
        """Start an episode of ``steps`` steps from the ready state (after ``on_ready``)."""
        if self.phase != self.READY:
            raise RuntimeError(f"run() needs a ready arm (phase is {self.phase})")
        self.phase = self.RUNNING
        self._steps_wanted = steps
        self._episode_steps = 0
        self._pending = None
        self._deadline = None
        self._last_progress = now
        if self._latest is None:
            self.abort("no joint state", now)
            return
        self._step(self._latest, now)

    def abort(self, reason: str, now: float) -> None:
        """End the episode in progress now (not completed), holding the arm where it is."""
        if self.phase != self.RUNNING:
            return
        self.phase = self.IDLE
        self.counters["episodes_aborted"] += 1
        self.hold(now)
        self.on_episode_end(EpisodeEnd(self._episode_steps, False, reason))

    def stop(self, now: float) -> None:
        """Stop commanding (shutdown): hold if an episode or homing was under way."""
        if self.phase in (self.RUNNING, self.RESETTING) and self._commanded:
            self.hold(now)
        self.phase = self.IDLE

    def hold(self, now: float) -> None:
        """One command holding the arm at its measured position (a forward controller keeps it)."""
        if self._latest is not None and self._commanded:
            target = self.limiter.hold_target(self._latest.mapped.position)
            self._command(target, self.guard.admit_hold(target, now))

    # -- the step ---------------------------------------------------------------------------
    def _due(self, now: float) -> bool:
        if self.mode == "lockstep":
            return True
        # Deadlines lie on an absolute grid (the mean rate is rate_hz whatever the tolerance);
        # half a period of tolerance keeps a state stream at exactly rate_hz from skipping
        # ticks on jitter.
        return self._deadline is None or now >= self._deadline - self.loop_period / 2

    def _consume(self, state: _State, now: float) -> None:
        self._last_key = state.key
        self._last_progress = now
        if self.mode == "realtime":
            self._deadline, _ = self._next_deadline(now, self._deadline)

    def _advance(self, now: float) -> None:
        state = self._latest
        if state is None or state.key == self._last_key:
            return
        if self.phase == self.RESETTING:
            self._advance_reset(state, now)
        elif self.phase == self.RUNNING:
            if not self._due(now):
                return
            if self.rewarded and self._pending is not None and self._reward_count <= self._reward_count_at_command:
                return  # the step's reward has not arrived yet; on_reward comes back here
            self._step(state, now)

    def _advance_reset(self, state: _State, now: float) -> None:
        if self.reset_service is not None:
            # Lockstep: the bridge publishes the reset state before it answers, and nothing else
            # moves it, so any new state since the request is it. Realtime: states keep coming;
            # only one received after the answer is surely post-reset.
            since = self._reset_request_time if self.mode == "lockstep" else self._reset_response_time
            if self._reset_response_time is None or since is None or state.received < since:
                return
            self._ready(state)
            return
        if not self._due(now):
            return
        assert self.home is not None
        q, qd = state.mapped.position, state.mapped.velocity
        if at_home(q, self.home, self.home_tolerance) and np.max(np.abs(qd)) < SETTLED_VELOCITY:
            self._ready(state)
            return
        self._consume(state, now)
        target = self.limiter.limit(homing_step(q, self.home, self.homing_step_size), q, self.guard.reference(now))
        if target is not None:
            self._command(target, self.guard.admit(target, q, now))

    def _ready(self, state: _State) -> None:
        self.phase = self.READY
        self._latest = state
        self._last_key = None  # run() acts on this state
        self.on_ready()

    def _step(self, state: _State, now: float) -> None:
        # The state that completes the episode's last transition is only observed: no command
        # follows it (and the policy, whose latent schedule counts its calls, is not asked).
        last = self._pending is not None and self._episode_steps + 1 >= self._steps_wanted
        if last:
            out = self.policy_step.observe(state.mapped, self._object)
        else:
            out = self.policy_step(self.policy, state.mapped, self._object, now)
        if out.obs is None:
            if out.fault == HOLD_NO_OBJECT:
                return  # wait for the object pose
            self.counters["non_finite_observations"] += 1
            self.abort("non-finite observation", now)
            return
        self._consume(state, now)
        if self._pending is not None:
            prev_obs, prev_action = self._pending
            self._pending = None
            self._episode_steps += 1
            self.counters["steps"] += 1
            self.on_transition(Transition(prev_obs, prev_action, out.obs, state.stamp,
                                          self._reward if self.rewarded else None))
            if last:
                self.phase = self.IDLE
                self.on_episode_end(EpisodeEnd(self._episode_steps, True))
                return
            if self.phase != self.RUNNING:
                return  # the owner ended the episode from on_transition
        if out.command is None:
            assert out.fault is not None
            if out.fault == HOLD_REFUSED:
                self.counters["commands_refused"] += 1
                self.log("error", f"command refused by the last check ({out.detail})")
            else:
                self.counters["non_finite_actions"] += 1
                if out.fault == HOLD_INFERENCE:
                    self.log("error", f"policy failed: {out.detail}")
            self.abort(ABORT_REASONS[out.fault], now)
            return
        assert out.action is not None
        self._pending = (out.obs, out.action)
        self._reward_count_at_command = self._reward_count
        self._command(out.command, True)

    def _command(self, target: np.ndarray, admitted: bool) -> None:
        """Publish ``target`` when the guard admitted it; a refusal is counted and logged."""
        if not admitted:
            self.counters["commands_refused"] += 1
            self.log("error", f"command refused by the last check ({self.guard.last_refusal})")
            return
        self._commanded = True
        self.counters["commands"] += 1
        self.publish(target)

    def _call_reset(self, now: float) -> None:
        """Ask for a reset; the answer to an earlier request no longer counts."""
        self._reset_request += 1
        self._reset_sent = self.request_reset(self._reset_request)
        if self._reset_sent:
            self._reset_request_time = now
