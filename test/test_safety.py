"""The safety layer's rules, each on its own, without ROS (smrl_train.robot.safety)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from smrl_train.robot.safety import (
    GUARD_LIMITS,
    GUARD_NON_FINITE,
    GUARD_SHAPE,
    GUARD_STEP,
    REJECT_DUPLICATE,
    REJECT_LENGTH,
    REJECT_MISSING,
    REJECT_NO_VELOCITY,
    REJECT_NON_FINITE,
    REJECT_UNKNOWN,
    CommandGuard,
    JointStateMapper,
    MappedState,
    Rejection,
    StaleStateWatchdog,
    TargetLimiter,
    all_finite,
)

NAMES = ("a", "b", "c")


def test_mapping_is_by_name_not_by_order() -> None:
    mapper = JointStateMapper(NAMES)
    state = mapper.map(["c", "a", "b"], [3.0, 1.0, 2.0], [30.0, 10.0, 20.0])
    assert isinstance(state, MappedState)
    np.testing.assert_array_equal(state.position, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(state.velocity, [10.0, 20.0, 30.0])
    assert mapper.accepted == 1 and sum(mapper.rejected.values()) == 0


# JTC's invalid_message list, adapted to JointState (reliability.md 1.5).
BAD_STATES = [
    (["a", "b", "c"], [1, 2], [0, 0, 0], REJECT_LENGTH),
    (["a", "b", "c"], [1, 2, 3], [0, 0], REJECT_LENGTH),
    (["a", "b", "c"], [1, 2, 3], [], REJECT_NO_VELOCITY),
    (["a", "a", "c"], [1, 2, 3], [0, 0, 0], REJECT_DUPLICATE),
    (["a", "b", "x"], [1, 2, 3], [0, 0, 0], REJECT_UNKNOWN),
    (["a", "b", "c", "x"], [1, 2, 3, 4], [0, 0, 0, 0], REJECT_UNKNOWN),
    (["a", "b"], [1, 2], [0, 0], REJECT_MISSING),
    ([], [], [], REJECT_NO_VELOCITY),
    (["a", "b", "c"], [1, np.nan, 3], [0, 0, 0], REJECT_NON_FINITE),
    (["a", "b", "c"], [1, 2, 3], [0, np.inf, 0], REJECT_NON_FINITE),
]


@pytest.mark.parametrize(("names", "pos", "vel", "reason"), BAD_STATES)
def test_bad_joint_states_are_rejected_whole_with_a_counted_reason(names, pos, vel, reason) -> None:
    mapper = JointStateMapper(NAMES)
    result = mapper.map(names, pos, vel)
    assert isinstance(result, Rejection) and result.reason == reason, result
    assert mapper.rejected[reason] == 1 and mapper.accepted == 0
    assert result.detail  # says which joint / which lengths


def test_positions_far_past_the_limits_are_rejected_continuous_joints_are_not_bounded() -> None:
    """A finite but impossible position (degrees for radians, a broken encoder) is not a state: a
    hold would command the arm to the limit nearest to it."""
    from smrl_train.robot.safety import LIMIT_MARGIN, REJECT_OUTSIDE_LIMITS
    from smrl_train.robot.urdf import load_urdf, position_bounds

    arm = load_urdf(Path(__file__).resolve().parent.parent / "urdf" / "smrl_arm.urdf", "ee_link")
    mapper = JointStateMapper(arm.joint_names, bounds=position_bounds(arm, arm.joint_names, LIMIT_MARGIN))
    q = (arm.lower + arm.upper) / 2
    over = q.copy()
    over[1] = arm.upper[1] + LIMIT_MARGIN * 0.9  # an overshoot: still a state
    assert isinstance(mapper.map(arm.joint_names, over, np.zeros(5)), MappedState)
    for bad in (arm.upper[1] + LIMIT_MARGIN * 1.1, np.degrees(arm.upper[1]), -1e300):
        over[1] = bad
        result = mapper.map(arm.joint_names, over, np.zeros(5))
        assert isinstance(result, Rejection) and result.reason == REJECT_OUTSIDE_LIMITS
        assert f"joint '{arm.joint_names[1]}'" in result.detail
    assert mapper.rejected[REJECT_OUTSIDE_LIMITS] == 3 and mapper.accepted == 1
    lower, upper = position_bounds(dataclasses.replace(arm, chain=tuple(
        dataclasses.replace(j, kind="continuous") if j.name == arm.joint_names[0] else j for j in arm.chain)),
        arm.joint_names, LIMIT_MARGIN)
    assert lower[0] == -np.inf and upper[0] == np.inf and upper[1] == arm.upper[1] + LIMIT_MARGIN


def test_unknown_joints_can_be_ignored_when_asked() -> None:
    mapper = JointStateMapper(NAMES, ignore_unknown=True)
    state = mapper.map(["finger", "b", "a", "c"], [9, 2, 1, 3], [9, 0, 0, 0])
    assert isinstance(state, MappedState)
    np.testing.assert_array_equal(state.position, [1, 2, 3])
    missing = mapper.map(["finger", "a", "b"], [9, 1, 2], [0, 0, 0])  # still not a whole state
    assert isinstance(missing, Rejection) and missing.reason == REJECT_MISSING


def test_limiter_clips_to_position_limits_and_to_velocity_times_period() -> None:
    lim = TargetLimiter(np.array([-1.0, -1.0]), np.array([1.0, 1.0]), np.array([2.0, 4.0]), period=0.05)
    np.testing.assert_allclose(lim.max_step, [0.1, 0.2])
    safe = lim.limit(np.array([0.05, -0.1]), np.array([0.0, 0.0]))  # inside both limits
    np.testing.assert_array_equal(safe, [0.05, -0.1])
    assert lim.velocity_clipped == 0 and lim.position_clipped == 0
    safe = lim.limit(np.array([0.5, -0.5]), np.array([0.0, 0.0]))  # too fast
    np.testing.assert_allclose(safe, [0.1, -0.2])
    assert lim.velocity_clipped == 1
    safe = lim.limit(np.array([1.05, 0.0]), np.array([0.98, 0.0]))  # past the upper limit
    np.testing.assert_allclose(safe, [1.0, 0.0])
    assert lim.position_clipped == 1
    # Measured outside the limits (overshoot): the target still lands inside them.
    safe = lim.limit(np.array([1.3, 0.0]), np.array([1.2, 0.0]))
    assert safe is not None and safe[0] <= 1.0


def test_limiter_rejects_non_finite_targets_before_clipping() -> None:
    lim = TargetLimiter(np.array([-1.0]), np.array([1.0]), np.array([1.0]), period=0.1)
    for bad in ([np.nan], [np.inf], [-np.inf], [0.0, 0.0]):
        assert lim.limit(np.array(bad), np.array([0.0])) is None
    assert lim.rejected_non_finite == 4
    np.testing.assert_array_equal(lim.hold_target(np.array([1.5])), [1.0])


def test_limiter_property_every_output_is_finite_and_within_both_limits() -> None:
    rng = np.random.default_rng(0)
    lower, upper, vel = np.full(5, -2.0), np.full(5, 2.0), rng.uniform(0.5, 3.0, 5)
    lim = TargetLimiter(lower, upper, vel, period=0.01)
    for _ in range(2000):
        q = rng.uniform(-2.2, 2.2, 5)
        targets = rng.normal(0, 3, 5)
        targets[rng.random(5) < 0.05] = rng.choice([np.nan, np.inf, -np.inf])
        safe = lim.limit(targets, q)
        if not np.all(np.isfinite(targets)):
            assert safe is None
            continue
        assert safe is not None and np.all(np.isfinite(safe))
        assert np.all(safe >= lower) and np.all(safe <= upper)
        inside = (q >= lower) & (q <= upper)
        assert np.all(np.abs(safe - q)[inside] <= vel[inside] * 0.01 + 1e-12)


def test_watchdog_goes_stale_once_and_recovers_on_a_fresh_state() -> None:
    wd = StaleStateWatchdog(timeout=0.15)
    assert wd.check(0.0) == "still_stale"  # nothing received yet
    assert wd.feed(1.0) is False  # the first state is not a recovery
    assert wd.check(1.1) == "fresh"
    assert wd.check(1.16) == "stale"
    assert wd.check(1.3) == "still_stale"
    assert wd.stale_events == 1
    assert wd.feed(2.0) is True and wd.recoveries == 1
    assert wd.check(2.1) == "fresh"


def test_all_finite() -> None:
    assert all_finite(np.zeros(3)) and not all_finite(np.array([0, np.nan])) and not all_finite(None)


# -- the last line of defence -----------------------------------------------------------------

def _guard(period: float = 0.05) -> CommandGuard:
    return CommandGuard(np.array([-1.0, -2.0]), np.array([1.0, 2.0]), np.array([2.0, 4.0]), period)


def test_guard_admits_steps_within_velocity_times_the_model_period_of_the_previous_command() -> None:
    guard = _guard()  # steps of at most (0.1, 0.2) rad
    measured = np.array([0.0, 0.0])
    assert guard.admit(np.array([0.1, -0.2]), measured, now=0.0)
    # The previous command is the reference now, not the measured position (the arm lags).
    assert guard.admit(np.array([0.2, -0.3]), measured, now=0.05)
    assert not guard.admit(np.array([0.0, -0.3]), measured, now=0.1)  # 0.2 rad back from 0.2
    assert guard.refused[GUARD_STEP] == 1 and "joint 0 steps 0.2000 rad from the previous command" in \
        guard.last_refusal
    # A hold (the measured position) is always admitted and becomes the reference.
    assert guard.admit_hold(measured, now=0.1) and guard.admit(np.array([0.1, 0.0]), measured, now=0.15)
    assert guard.admitted == 4


@pytest.mark.parametrize(("command", "reason"), [
    (np.array([np.nan, 0.0]), GUARD_NON_FINITE),
    (np.array([np.inf, 0.0]), GUARD_NON_FINITE),
    (np.array([0.0, 2.01]), GUARD_LIMITS),
    (np.array([0.0]), GUARD_SHAPE),
])
def test_guard_refuses_non_finite_out_of_limit_and_misshapen_commands_holds_too(command, reason) -> None:
    guard = _guard()
    assert not guard.admit(command, np.zeros(2), now=0.0)
    assert not guard.admit_hold(command, now=0.0)
    assert guard.refused[reason] == 2 and guard.previous is None


def test_guard_bounds_from_the_measured_position_after_a_pause_or_forget() -> None:
    guard = _guard()
    assert guard.admit(np.array([0.0, 0.0]), np.zeros(2), now=0.0)
    moved = np.array([0.8, 1.5])  # the arm was moved by other means (a reset, the explorer)
    assert not guard.admit(moved, moved, now=0.1)  # 0.1 s < 3 periods: still the previous command
    guard.forget()
    assert guard.admit(moved + 0.05, moved, now=0.1)
    assert guard.admit(np.array([0.85, 1.6]), np.array([0.85, 1.6]), now=1.0)  # stale: measured


def test_guard_and_limiter_refuse_a_period_that_is_not_a_finite_positive_number() -> None:
    for period in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number > 0"):
            _guard(period)
        with pytest.raises(ValueError, match="finite number > 0"):
            TargetLimiter(np.array([-1.0]), np.array([1.0]), np.array([1.0]), period)


def test_limiter_output_passes_the_guard_whatever_the_policy_says() -> None:
    # The two layers agree: a target limited from the measured position and the previous
    # command never trips the guard, however far the policy asks and the arm lags.
    rng = np.random.default_rng(0)
    lower, upper, vel, period = np.array([-1.0, -2.0]), np.array([1.0, 2.0]), np.array([2.0, 4.0]), 0.05
    limiter, guard = TargetLimiter(lower, upper, vel, period), CommandGuard(lower, upper, vel, period)
    q = np.zeros(2)
    for k in range(500):
        now = k * period
        target = limiter.limit(q + rng.normal(0, 2.0, 2) * vel * period, q, guard.reference(now))
        assert target is not None and guard.admit(target, q, now)
        q = q + rng.uniform(0, 1, 2) * (target - q)  # the arm follows, lagging at random
    assert sum(guard.refused.values()) == 0
