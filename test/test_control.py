"""The control node's logic without ROS, on synthetic time (smrl_train.robot.control)."""

from __future__ import annotations

import numpy as np
import pytest

from smrl_train.robot.control import (
    HOLD_BAD_ACTION,
    HOLD_INFERENCE,
    HOLD_NO_OBJECT,
    HOLD_REFUSED,
    HOLD_STALE,
    EndEffectorFK,
    LoopStats,
    ObservationBuilder,
    PolicyController,
    period_schedule,
)
from smrl_train.robot.safety import CommandGuard, MappedState, StaleStateWatchdog, TargetLimiter
from smrl_train.robot.urdf import forward_kinematics, load_urdf

from conftest import REPO, small_config

ARM = load_urdf(REPO / "urdf" / "smrl_arm.urdf", "ee_link")
LAYOUT = [("joint_pos", 5), ("joint_vel", 5), ("ee_pos", 3)]


class ScriptedPolicy:
    """Returns q + 0.01 unless told to fail."""

    def __init__(self) -> None:
        self.mode = "ok"

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "nan":
            return np.full(5, np.nan)
        return obs[:5].astype(float) + 0.01


def make_controller(layout=LAYOUT, guard: CommandGuard | None = None) -> tuple[PolicyController, ScriptedPolicy]:
    policy = ScriptedPolicy()
    builder = ObservationBuilder(ARM, ARM.joint_names, layout)
    limiter = TargetLimiter(ARM.lower, ARM.upper, ARM.velocity, period=0.05)
    return PolicyController(policy, builder, limiter, StaleStateWatchdog(0.15), guard), policy


def state(q0: float = 0.3) -> MappedState:
    return MappedState(np.array([q0, 0.3, 1.3, 1.2, 0.0]), np.zeros(5))


@pytest.mark.parametrize("arm_name", ["smrl_arm", "panda_like"])
def test_cached_fk_equals_the_urdf_fk(arm_name: str) -> None:
    cfg = small_config("reach" if arm_name == "smrl_arm" else "reach_panda")
    arm = load_urdf(cfg.urdf_path(), cfg.arm.ee_link)
    fk = EndEffectorFK(arm)
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.uniform(arm.lower, arm.upper)
        np.testing.assert_allclose(fk(q), forward_kinematics(arm, q), atol=1e-12)


def test_observation_matches_the_sims_observation() -> None:
    from smrl_train.sim.envs import ArmTaskEnv

    env = ArmTaskEnv(small_config("push"))
    obs, _ = env.reset(seed=3)
    sim = env.sim
    # Robot side, model order = URDF order here; a shuffled model order is mapped for FK.
    builder = ObservationBuilder(env.arm, env.joint_names, env.observation_layout)
    built = builder.build(sim.joint_positions(), sim.joint_velocities(), sim.puck_position())
    np.testing.assert_allclose(built, obs, atol=1e-5)
    order = [3, 1, 4, 0, 2]
    shuffled = ObservationBuilder(env.arm, [env.joint_names[i] for i in order], env.observation_layout)
    built = shuffled.build(sim.joint_positions()[order], sim.joint_velocities()[order], sim.puck_position())
    np.testing.assert_allclose(built[10:], obs[10:], atol=1e-5)  # same ee and puck


def test_observation_builder_names_what_the_robot_cannot_build() -> None:
    with pytest.raises(ValueError, match="gripper_width"):
        ObservationBuilder(ARM, ARM.joint_names, [*LAYOUT, ("gripper_width", 1)])
    with pytest.raises(ValueError, match="ee_pos' has size 6"):
        ObservationBuilder(ARM, ARM.joint_names, [("joint_pos", 5), ("ee_pos", 6)])
    with pytest.raises(ValueError, match="joint names"):
        ObservationBuilder(ARM, ["j1", "j2", "j3", "j4", "j5"], LAYOUT)


def test_commands_flow_on_fresh_states() -> None:
    ctl, _ = make_controller()
    assert ctl.step(0.0).command is None  # no state yet
    ctl.on_state(state(), 1.0)
    result = ctl.step(1.0)
    assert result.command is not None and result.hold is None and "first joint state" in result.event
    np.testing.assert_allclose(result.command, state().position + 0.01)


def test_stale_state_holds_once_then_resumes() -> None:
    ctl, _ = make_controller()
    ctl.on_state(state(0.3), 1.0)
    assert ctl.step(1.0).command is not None
    assert ctl.check(1.1).command is None  # within the timeout: nothing to do
    held = ctl.check(1.2)  # 0.2 s > 0.15 s without a fresh state
    assert held.hold == HOLD_STALE and "no fresh joint state" in held.event
    np.testing.assert_array_equal(held.command, state(0.3).position)  # hold where it was
    for t in (1.3, 1.4):
        assert ctl.step(t).command is None and ctl.check(t).command is None  # silent while stale
    ctl.on_state(state(0.31), 1.5)
    resumed = ctl.step(1.5)
    assert resumed.command is not None and resumed.hold is None and "resuming" in resumed.event
    assert ctl.watchdog.stale_events == 1 and ctl.counters["hold_commands"] == 1


def test_a_forgotten_state_is_never_acted_on_again() -> None:
    """Deactivated then activated: the old state must not drive a command (the arm may have
    moved meanwhile); the next fresh state starts it again, as after start-up."""
    ctl, _ = make_controller()
    ctl.on_state(state(0.3), 1.0)
    assert ctl.step(1.0).command is not None
    ctl.forget_state()
    assert ctl.step(5.0).command is None and ctl.check(5.0).command is None
    assert ctl.watchdog.stale_events == 0  # forgetting is not a stale period
    ctl.on_state(state(0.5), 5.1)
    result = ctl.step(5.1)
    assert "first joint state" in result.event
    np.testing.assert_allclose(result.command, state(0.5).position + 0.01)


@pytest.mark.parametrize(("mode", "reason", "counter"), [("raise", HOLD_INFERENCE, "inference_errors"),
                                                          ("nan", HOLD_BAD_ACTION, None)])
def test_inference_failure_holds_and_never_repeats_the_last_command(mode, reason, counter) -> None:
    ctl, policy = make_controller()
    ctl.on_state(state(0.3), 0.0)
    last = ctl.step(0.0).command
    policy.mode = mode
    ctl.on_state(state(0.32), 0.05)
    held = ctl.step(0.05)
    assert held.hold == reason and held.event
    np.testing.assert_array_equal(held.command, state(0.32).position)  # measured, not `last`
    assert not np.allclose(held.command, last)
    for k in range(2, 5):  # failing on: nothing more is published
        ctl.on_state(state(0.32), 0.05 * k)
        assert ctl.step(0.05 * k).command is None
    if counter:
        assert ctl.counters[counter] == 4 and "boom" in ctl.last_error
    else:
        assert ctl.limiter.rejected_non_finite == 4
    policy.mode = "ok"
    ctl.on_state(state(0.33), 0.3)
    assert ctl.step(0.3).command is not None


def test_push_models_wait_for_an_object_pose_and_reject_non_finite_ones() -> None:
    ctl, _ = make_controller([*LAYOUT, ("puck_pos", 3)])
    ctl.on_state(state(), 0.0)
    assert ctl.step(0.0).hold == HOLD_NO_OBJECT
    assert ctl.on_object(np.array([0.4, np.nan, 0.0])) is False
    assert ctl.counters["object_poses_rejected"] == 1
    assert ctl.on_object(np.array([0.4, 0.0, 0.015])) is True
    ctl.on_state(state(), 0.05)
    assert ctl.step(0.05).command is not None


def test_commands_pass_the_guard_and_a_paused_controller_publishes_nothing() -> None:
    guard = CommandGuard(ARM.lower, ARM.upper, ARM.velocity, 0.05)
    ctl, _ = make_controller(guard=guard)
    ctl.on_state(state(0.3), 0.0)
    first = ctl.step(0.0).command
    assert first is not None and guard.admitted == 1
    np.testing.assert_array_equal(guard.previous, first)  # the next step is bounded from it too
    ctl.set_enabled(False)
    assert guard.previous is None  # the arm may move while paused
    ctl.on_state(state(0.31), 0.05)
    assert ctl.step(0.05).command is None and ctl.counters["suppressed_commands"] == 1
    assert guard.admitted == 1 and ctl.hold_command(0.05) is None and ctl.counters["suppressed_commands"] == 2
    ctl.set_enabled(True)
    ctl.on_state(state(0.32), 0.1)
    np.testing.assert_allclose(ctl.step(0.1).command, state(0.32).position + 0.01)
    np.testing.assert_array_equal(ctl.hold_command(0.1), state(0.32).position)
    assert guard.admitted == 3 and ctl.counters["commands"] == 3


def test_a_command_the_guard_refuses_is_replaced_by_a_hold_and_retried_next_tick() -> None:
    # A guard 10x stricter than the limiter (a bug in the layers above, as the guard assumes).
    guard = CommandGuard(ARM.lower, ARM.upper, ARM.velocity, 0.005)
    ctl, _ = make_controller(guard=guard)
    ctl.on_state(state(0.3), 0.0)
    result = ctl.step(0.0)
    assert result.hold == HOLD_REFUSED and "refused by the last check" in result.event
    np.testing.assert_array_equal(result.command, state(0.3).position)  # the hold, admitted
    assert guard.refused["step_above_velocity_limit"] == 1 and guard.admitted == 1
    ctl.on_state(state(0.3), 0.05)
    assert ctl.step(0.05).hold == HOLD_REFUSED and guard.refused["step_above_velocity_limit"] == 2


def test_period_schedule_uses_absolute_deadlines_and_counts_missed_periods() -> None:
    nxt = period_schedule(0.01)
    deadline, missed = nxt(0.0, None)
    assert deadline == pytest.approx(0.01) and missed == 0
    deadline, missed = nxt(0.0104, deadline)  # a late tick does not shift the schedule
    assert deadline == pytest.approx(0.02) and missed == 0
    deadline, missed = nxt(0.0551, deadline)  # 3 periods lost: counted, then resynchronised
    assert missed == 3 and deadline == pytest.approx(0.0651)


def test_loop_stats_percentiles() -> None:
    stats = LoopStats()
    for k in range(100):
        stats.record(0.01 + k * 1e-5, 0.001)
    summary = stats.take().summary()
    assert summary["period_p50_ms"] == pytest.approx(10.495, abs=1e-3)
    assert summary["compute_max_ms"] == pytest.approx(1.0)
    assert np.isnan(stats.summary()["period_p50_ms"])  # a new, empty window

