"""The robot-side safety layer, in numpy only: what the controller node checks on every tick.

Each rule is a small class with a counter, unit-tested without ROS (``test/test_safety.py``)
and wired into :mod:`smrl_ros.controller_node`:

* :class:`JointStateMapper`: joint states mapped *by name* (never by order) onto the model's
  joint order; unknown, duplicate or missing names, length mismatches, missing velocities
  and non-finite values reject the whole message ("a partial state is not a state");
* :class:`TargetLimiter`: non-finite targets rejected *before* clipping (``np.clip``
  propagates NaN), then targets clipped to the URDF position limits and to
  ``velocity limit x period`` around the measured position (LeRobot's
  ``max_relative_target``; ros2_control's limiter does the same against the previous command,
  so the two layers together bound both the following error and the command rate);
* :class:`StaleStateWatchdog`: no fresh joint state within ``timeout`` means stop commanding
  and hold; the transition is reported once and undone by the next fresh state.

The choices (drop the bad message and keep the last good state, or hold) follow
``docs/deployment.md`` and ``reference/reliability.md`` sections 1.4-1.5.
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
STATE_REJECTIONS = (REJECT_LENGTH, REJECT_DUPLICATE, REJECT_UNKNOWN, REJECT_MISSING,
                    REJECT_NO_VELOCITY, REJECT_NON_FINITE)


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
    """

    def __init__(self, joint_names: Sequence[str], ignore_unknown: bool = False) -> None:
        if len(set(joint_names)) != len(joint_names) or not joint_names:
            raise ValueError(f"joint_names must be unique and non-empty, got {list(joint_names)}")
        self.joint_names = tuple(joint_names)
        self.ignore_unknown = ignore_unknown
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
        if np.any(self.lower >= self.upper) or np.any(self.max_velocity <= 0) or period <= 0:
            raise ValueError("need lower < upper, max_velocity > 0 and period > 0")
        self.period = float(period)
        self.max_step = self.max_velocity * self.period
        self.rejected_non_finite = 0
        self.position_clipped = 0
        self.velocity_clipped = 0

    def set_period(self, period: float) -> None:
        if period <= 0:
            raise ValueError("period must be > 0")
        self.period = float(period)
        self.max_step = self.max_velocity * self.period

    def limit(self, targets: np.ndarray, measured: np.ndarray) -> np.ndarray | None:
        """Safe targets (n,) float64 for ``targets`` (n,) given the ``measured`` positions (n,),
        or None (counted) when a target is non-finite or has the wrong shape."""
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != self.lower.shape or not np.all(np.isfinite(targets)):
            self.rejected_non_finite += 1
            return None
        # Velocity first, then position: a measured position slightly outside the limits
        # (overshoot) must still yield a target inside them.
        stepped = np.clip(targets, measured - self.max_step, measured + self.max_step)
        if np.any(stepped != targets):
            self.velocity_clipped += 1
        safe = np.clip(stepped, self.lower, self.upper)
        if np.any(safe != stepped):
            self.position_clipped += 1
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
