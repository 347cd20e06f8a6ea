"""The robot-side safety layer, in numpy only: what the controller node checks on every tick.

Each rule is a small class with a counter, unit-tested without ROS (``test/test_safety.py``)
and wired into :mod:`smrl_ros.controller_node`:

* :class:`JointStateMapper`: joint states mapped *by name* (never by order) onto the model's
  joint order; unknown, duplicate or missing names, length mismatches, missing velocities,
  non-finite values and positions more than ``LIMIT_MARGIN`` past the joint's limits (no arm
  is there: a unit error or a broken sensor, and a hold would command it) reject the whole
  message ("a partial state is not a state");
* :class:`TargetLimiter`: non-finite targets rejected *before* clipping (``np.clip``
  propagates NaN), then targets clipped to the URDF position limits and to
  ``velocity limit x period`` around the measured position (LeRobot's
  ``max_relative_target``; ros2_control's limiter does the same against the previous command,
  so the two layers together bound both the following error and the command rate);
* :class:`StaleStateWatchdog`: no fresh joint state within ``timeout`` means stop commanding
  and hold; the transition is reported once and undone by the next fresh state;
* :class:`CommandGuard`: the last line of defence, immediately before a command is published:
  finite, inside the URDF limits and within ``velocity limit x the model's control period`` of
  the previous command (of the measured position when there is no recent one). It re-checks
  what the layers above promise, so a bug or a parameter in any of them cannot reach the arm: a
  violation publishes nothing (the caller holds), and is counted with its reason.

The choices (drop the bad message and keep the last good state, or hold) follow
``docs/deployment.md`` (section 3).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Reasons a joint-state message is rejected; each has its own counter.
REJECT_LENGTH = "length_mismatch"
REJECT_DUPLICATE = "duplicate_joint"
REJECT_UNKNOWN = "unknown_joint"
REJECT_MISSING = "missing_joint"
REJECT_NO_VELOCITY = "missing_velocity"
REJECT_NON_FINITE = "non_finite_state"
REJECT_OUTSIDE_LIMITS = "outside_joint_limits"
STATE_REJECTIONS = (REJECT_LENGTH, REJECT_DUPLICATE, REJECT_UNKNOWN, REJECT_MISSING,
                    REJECT_NO_VELOCITY, REJECT_NON_FINITE, REJECT_OUTSIDE_LIMITS)
# How far past its limits (rad) a measured joint position may lie and still be a state:
# overshoot and calibration offsets stay well inside it; degrees for radians, or garbage, do not.
LIMIT_MARGIN = 0.5


@dataclass(frozen=True)
class MappedState:
    """A joint state in the model's joint order: positions and velocities, both (n,) float64."""

    position: np.ndarray
    velocity: np.ndarray


@dataclass(frozen=True)
class Rejection:
    """Why a message was refused: ``reason`` is one of ``STATE_REJECTIONS``; ``detail`` names it."""

    reason: str
    detail: str


class JointStateMapper:
    """Map joint-state arrays by name onto ``joint_names`` (the model's order).

    Args:
        joint_names: the joints the policy needs, in its order.
        ignore_unknown: accept (and drop) joints not in ``joint_names``, e.g. gripper fingers
            a robot publishes on the same topic. Off by default: an unexpected name usually
            means the wrong robot or a wrong remap.
        bounds: the lowest and highest position (n,) each joint may report, in ``joint_names``
            order (:func:`smrl_train.robot.urdf.position_bounds`: the limits widened by
            ``LIMIT_MARGIN``); None: any finite position.
    """

    def __init__(self, joint_names: Sequence[str], ignore_unknown: bool = False,
                 bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if len(set(joint_names)) != len(joint_names) or not joint_names:
            raise ValueError(f"joint_names must be unique and non-empty, got {list(joint_names)}")
        self.joint_names = tuple(joint_names)
        self.ignore_unknown = ignore_unknown
        self.bounds = None if bounds is None else (np.asarray(bounds[0], dtype=np.float64),
                                                   np.asarray(bounds[1], dtype=np.float64))
        if self.bounds is not None and not self.bounds[0].shape == self.bounds[1].shape == (len(joint_names),):
            raise ValueError("bounds must give one lower and one upper position per joint")
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self.accepted = 0
        self.rejected: Counter[str] = Counter({r: 0 for r in STATE_REJECTIONS})

    def map(self, names: Sequence[str], position: Sequence[float],
            velocity: Sequence[float]) -> MappedState | Rejection:
        """Positions and velocities (each as long as ``names``) -> :class:`MappedState`, or a
        :class:`Rejection` (counted) naming what is wrong."""
        result = self._map(names, position, velocity)
        if isinstance(result, Rejection):
            self.rejected[result.reason] += 1
        else:
            self.accepted += 1
        return result

    def _map(self, names: Sequence[str], position: Sequence[float],
             velocity: Sequence[float]) -> MappedState | Rejection:
        n = len(names)
        if len(position) != n:
            return Rejection(REJECT_LENGTH, f"{n} names but {len(position)} positions")
        if len(velocity) == 0:
            return Rejection(REJECT_NO_VELOCITY, "no velocities (the policy observes them)")
        if len(velocity) != n:
            return Rejection(REJECT_LENGTH, f"{n} names but {len(velocity)} velocities")
        seen: set[str] = set()
        rows = np.full(len(self.joint_names), -1)
        for i, name in enumerate(names):
            if name in seen:
                return Rejection(REJECT_DUPLICATE, f"joint '{name}' appears twice")
            seen.add(name)
            j = self._index.get(name)
            if j is None:
                if self.ignore_unknown:
                    continue
                return Rejection(REJECT_UNKNOWN, f"unknown joint '{name}'")
            rows[j] = i
        if np.any(rows < 0):
            missing = [self.joint_names[j] for j in np.flatnonzero(rows < 0)]
            return Rejection(REJECT_MISSING, f"missing joint(s) {', '.join(missing)}")
        q = np.asarray(position, dtype=np.float64)[rows]
        qd = np.asarray(velocity, dtype=np.float64)[rows]
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
            return Rejection(REJECT_NON_FINITE, "non-finite position or velocity")
        if self.bounds is not None:
            outside = np.flatnonzero((q < self.bounds[0]) | (q > self.bounds[1]))
            if outside.size:
                j = int(outside[0])
                return Rejection(REJECT_OUTSIDE_LIMITS, f"joint '{self.joint_names[j]}' at {q[j]:.4g} rad, outside "
                                 f"[{self.bounds[0][j]:.4g}, {self.bounds[1][j]:.4g}]")
        return MappedState(q, qd)


def all_finite(x: np.ndarray | None) -> bool:
    """True when ``x`` is present and every element is finite."""
    return x is not None and bool(np.all(np.isfinite(x)))


class TargetLimiter:
    """Non-finite rejection, then position- and velocity-limit clipping of joint targets.

    Args:
        lower, upper: URDF position limits (n,) in rad.
        max_velocity: URDF velocity limits (n,) in rad/s.
        period: the control period (s); a target may lead the measured position by at most
            ``max_velocity x period``.
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, max_velocity: np.ndarray,
                 period: float) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.max_velocity = np.asarray(max_velocity, dtype=np.float64)
        if not (self.lower.shape == self.upper.shape == self.max_velocity.shape):
            raise ValueError("lower, upper and max_velocity must have the same shape")
        if np.any(self.lower >= self.upper) or np.any(self.max_velocity <= 0):
            raise ValueError("need lower < upper and max_velocity > 0")
        self.rejected_non_finite = 0
        self.position_clipped = 0
        self.velocity_clipped = 0
        self.set_period(period)

    def set_period(self, period: float) -> None:
        if not (np.isfinite(period) and period > 0):
            raise ValueError(f"period must be a finite number > 0, got {period}")
        self.period = float(period)
        self.max_step = self.max_velocity * self.period

    def limit(self, targets: np.ndarray, measured: np.ndarray,
              previous: np.ndarray | None = None) -> np.ndarray | None:
        """Safe targets (n,) float64 for ``targets`` (n,) given the ``measured`` positions (n,)
        and the ``previous`` command (n,) when there is a recent one (see
        :meth:`CommandGuard.reference`), or None (counted) when a target is non-finite or has
        the wrong shape."""
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != self.lower.shape or not np.all(np.isfinite(targets)):
            self.rejected_non_finite += 1
            return None
        # Velocity first, then position: a measured position slightly outside the limits
        # (overshoot) must still yield a target inside them. Within max_step of the measured
        # position and of the previous command; an arm lagging more than two steps behind its
        # command gets the target within a step of the command that is nearest to it.
        lo, hi = measured - self.max_step, measured + self.max_step
        if previous is not None:
            lo, hi = np.maximum(lo, previous - self.max_step), np.minimum(hi, previous + self.max_step)
            toward = np.clip(measured, previous - self.max_step, previous + self.max_step)
            lo, hi = np.where(lo > hi, toward, lo), np.where(lo > hi, toward, hi)
        stepped = np.clip(targets, lo, hi)
        if np.any(stepped != targets):
            self.velocity_clipped += 1
        safe = np.clip(stepped, self.lower, self.upper)
        if np.any(safe != stepped):
            self.position_clipped += 1
        if not np.all(np.isfinite(safe)):  # a non-finite measured position
            self.rejected_non_finite += 1
            return None
        return safe

    def hold_target(self, measured: np.ndarray) -> np.ndarray:
        """The target that holds the arm where it is: the measured position, inside the limits."""
        return np.clip(np.asarray(measured, dtype=np.float64), self.lower, self.upper)


class StaleStateWatchdog:
    """Tracks the age of the last fresh joint state against ``timeout`` (s).

    Time is passed in (monotonic seconds), so tests drive it deterministically.
    ``stale_events`` counts fresh -> stale transitions; ``check`` returns ``"stale"`` exactly
    once per transition so the caller logs once.
    """

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.timeout = float(timeout)
        self.last_fresh: float | None = None
        self.stale = True  # nothing received yet
        self.stale_events = 0
        self.recoveries = 0

    def feed(self, now: float) -> bool:
        """Record a fresh state at ``now``; True when this ends a stale period that had begun
        after a first state (a recovery, to be logged)."""
        recovered = self.stale and self.last_fresh is not None
        self.last_fresh = now
        if recovered:
            self.recoveries += 1
        self.stale = False
        return recovered

    def check(self, now: float) -> str:
        """``"fresh"``, ``"stale"`` (just became stale: log it, hold) or ``"still_stale"``."""
        if self.stale:
            return "still_stale"
        assert self.last_fresh is not None
        if now - self.last_fresh > self.timeout:
            self.stale = True
            self.stale_events += 1
            return "stale"
        return "fresh"


# Reasons the guard refuses a command; each has its own counter.
GUARD_SHAPE = "wrong_shape"
GUARD_NON_FINITE = "non_finite_command"
GUARD_LIMITS = "outside_position_limits"
GUARD_STEP = "step_above_velocity_limit"
GUARD_REASONS = (GUARD_SHAPE, GUARD_NON_FINITE, GUARD_LIMITS, GUARD_STEP)


class CommandGuard:
    """The last check before a joint-position command leaves the process.

    Args:
        lower, upper: URDF position limits (n,) in rad.
        max_velocity: URDF velocity limits (n,) in rad/s.
        model_period: the *model's* control period (s), from its metadata: a node parameter
            (a control rate) cannot stretch the step a command may take.
        stale_periods: the previous command is the reference for the step bound while it is at
            most this many model periods old; after that (or after :meth:`forget`: a reset, a
            pause) the measured position is.
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, max_velocity: np.ndarray,
                 model_period: float, stale_periods: float = 3.0) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        max_velocity = np.asarray(max_velocity, dtype=np.float64)
        if not (np.isfinite(model_period) and model_period > 0):
            raise ValueError(f"model_period must be a finite number > 0, got {model_period}")
        if not (self.lower.shape == self.upper.shape == max_velocity.shape) or not np.all(max_velocity > 0):
            raise ValueError("lower, upper and max_velocity must have one shape, with max_velocity > 0")
        # A relative tolerance for float rounding in the layers above, nothing more.
        self.max_step = max_velocity * float(model_period) * (1 + 1e-9) + 1e-12
        self.stale_after = stale_periods * float(model_period)
        self.previous: np.ndarray | None = None
        self.previous_time = -np.inf
        self.admitted = 0
        self.refused: Counter[str] = Counter({r: 0 for r in GUARD_REASONS})
        self.last_refusal = ""

    def reference(self, now: float) -> np.ndarray | None:
        """The previous command when it is recent (the limiter bounds the next step from it too),
        else None."""
        recent = self.previous is not None and now - self.previous_time <= self.stale_after
        return self.previous if recent else None

    def forget(self) -> None:
        """The arm moved by other means (a reset, a pause): the next step is bounded from the
        measured position."""
        self.previous = None

    def admit(self, command: np.ndarray, measured: np.ndarray, now: float) -> bool:
        """True (and ``command`` becomes the previous one) when ``command`` (n,) may be
        published at ``now`` (monotonic s) with the arm at ``measured`` (n,); False, counted,
        with :attr:`last_refusal` naming the violation, otherwise."""
        command = np.asarray(command, dtype=np.float64)
        return self._decide(command, self._violation(command, measured, now), now)

    def admit_hold(self, command: np.ndarray, now: float) -> bool:
        """A hold (the measured position, inside the limits) commands the arm where it is: only
        finiteness and the limits are checked."""
        command = np.asarray(command, dtype=np.float64)
        return self._decide(command, self._static_violation(command), now)

    def _decide(self, command: np.ndarray, violation: tuple[str, str] | None, now: float) -> bool:
        if violation is not None:
            self.refused[violation[0]] += 1
            self.last_refusal = violation[1]
            return False
        self.previous = command.copy()
        self.previous_time = now
        self.admitted += 1
        return True

    def _static_violation(self, command: np.ndarray) -> tuple[str, str] | None:
        if command.shape != self.lower.shape:
            return GUARD_SHAPE, f"command of shape {command.shape}, expected {self.lower.shape}"
        if not np.all(np.isfinite(command)):
            return GUARD_NON_FINITE, "non-finite command"
        outside = np.flatnonzero((command < self.lower) | (command > self.upper))
        if outside.size:
            return GUARD_LIMITS, f"joint {int(outside[0])} at {command[outside[0]]:.4f} outside " \
                f"[{self.lower[outside[0]]:.4f}, {self.upper[outside[0]]:.4f}]"
        return None

    def _violation(self, command: np.ndarray, measured: np.ndarray, now: float) -> tuple[str, str] | None:
        static = self._static_violation(command)
        if static is not None:
            return static
        previous = self.reference(now)
        reference = previous if previous is not None else np.asarray(measured, dtype=np.float64)
        if reference.shape != command.shape or not np.all(np.isfinite(reference)):
            return GUARD_NON_FINITE, "no finite reference position for the step bound"
        step = np.abs(command - reference)
        over = np.flatnonzero(step > self.max_step)
        if over.size:
            j = int(over[0])
            origin = "previous command" if previous is not None else "measured position"
            return GUARD_STEP, f"joint {j} steps {step[j]:.4f} rad from the {origin}, " \
                f"above {self.max_step[j]:.4f} (velocity limit x model period)"
        return None
