"""The explorer's and adapter's episodes without ROS, on injected time (smrl_train.robot.episode_driver)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from smrl_train.robot.episode_driver import EpisodeDriver, EpisodeEnd, Transition
from smrl_train.robot.safety import MappedState
from smrl_train.robot.urdf import load_urdf

from conftest import REPO

ARM = load_urdf(REPO / "urdf" / "smrl_arm.urdf", "ee_link")
HZ = 20.0
LAYOUT = [("joint_pos", 5), ("joint_vel", 5), ("ee_pos", 3)]
MAX_STEP = 0.5 * ARM.velocity / HZ  # the model's step: half the velocity limit
Q0 = np.array([0.3, 0.3, 1.3, 1.2, 0.0])


def info(layout=LAYOUT, episode_length: int = 3) -> SimpleNamespace:
    return SimpleNamespace(joint_names=ARM.joint_names, observation_layout=layout, control_hz=HZ,
                           max_step=MAX_STEP, episode_length=episode_length)


def state(q: np.ndarray = Q0, qd: np.ndarray | None = None) -> MappedState:
    return MappedState(np.asarray(q, dtype=float), np.zeros(5) if qd is None else np.asarray(qd, dtype=float))


class Rig:
    """An episode driver wired to lists: what it publishes, asks for, reports and logs; the
    policy steps every joint by half its action scale (action 0.5) unless told otherwise."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("reset_service", "/sim/reset")
        self.driver = d = EpisodeDriver(ARM, kwargs.pop("info", info()), **kwargs)
        self.commands: list[np.ndarray] = []
        self.transitions: list[Transition] = []
        self.ends: list[EpisodeEnd] = []
        self.logs: list[tuple[str, str]] = []
        self.requests: list[int] = []
        self.ready = 0
        self.policy_calls = 0
        self.action = np.full(5, 0.5, np.float32)
        self.service_up = True
        d.publish = self.commands.append
        d.log = lambda level, message: self.logs.append((level, message))
        d.request_reset = self._request_reset
        d.policy = self._policy
        d.on_transition = self.transitions.append
        d.on_episode_end = self.ends.append
        d.on_ready = self._on_ready

    def _request_reset(self, request: int) -> bool:
        if self.service_up:
            self.requests.append(request)
        return self.service_up

    def _policy(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.policy_calls += 1
        if isinstance(self.action, Exception):
            raise self.action
        return self.action, obs[:5].astype(float) + self.action * MAX_STEP

    def _on_ready(self) -> None:
        self.ready += 1

    def start(self, q: np.ndarray = Q0) -> None:
        """Reset by the service and start an episode on the reset state. The bridge in lockstep
        publishes that state before it answers; in realtime, the next state after the answer."""
        d = self.driver
        d.reset(0.0)
        if d.mode == "lockstep":
            d.on_joint_state(state(q), 100.0, 0.001)
        d.on_reset_answer(self.requests[-1], True, "", 0.002)
        if d.mode == "realtime":
            d.on_joint_state(state(q), 100.0, 0.002)
        assert d.phase == d.READY and self.ready == 1
        d.run(d.episode_length, 0.003)


def test_lockstep_steps_on_new_states_only_and_ends_after_the_episode_length() -> None:
    rig = Rig()
    d = rig.driver
    rig.start()
    assert len(rig.commands) == 1 and d.phase == d.RUNNING
    np.testing.assert_allclose(rig.commands[0], Q0 + 0.5 * MAX_STEP)
    d.on_joint_state(state(Q0), 100.0, 0.01)  # the bridge republishing the state already used
    assert len(rig.commands) == 1 and not rig.transitions
    q = Q0
    for k in range(1, 4):
        q = rig.commands[-1]  # the bridge stepped to the command
        d.on_joint_state(state(q), 100.0 + 0.05 * k, 0.01 * k + 0.01)
        assert len(rig.transitions) == k
    tr = rig.transitions[0]
    np.testing.assert_allclose(tr.obs[:5], Q0, atol=1e-6)
    np.testing.assert_allclose(tr.next_obs[:5], rig.commands[0], atol=1e-6)
    np.testing.assert_array_equal(tr.action, rig.action)  # the safety layer left it alone
    assert tr.stamp == pytest.approx(100.05) and tr.reward is None
    # The state that completes the last step is only observed: no command, no policy call.
    assert rig.ends == [EpisodeEnd(3, True)] and d.phase == d.IDLE
    assert len(rig.commands) == rig.policy_calls == 3
    assert d.counters["steps"] == 3 and d.counters["commands"] == 3 and d.counters["resets"] == 1
    d.on_joint_state(state(q + 0.01), 101.0, 1.0)  # idle: nothing moves
    assert len(rig.commands) == 3


def test_realtime_decimates_a_faster_state_stream_to_the_rate_on_absolute_deadlines() -> None:
    rig = Rig(mode="realtime", info=info(episode_length=100))
    d = rig.driver
    times: list[float] = []
    d.publish = lambda target: (rig.commands.append(target), times.append(clock))
    clock = 0.0
    rig.start()
    for k in range(1, 100):  # 200 Hz states for 0.5 s, each new
        clock = 0.0027 + 0.005 * k
        d.on_joint_state(state(Q0 + 1e-4 * k), 100.0 + clock, clock)
    assert len(rig.commands) == 11 and len(rig.transitions) == 10  # 20 Hz
    np.testing.assert_allclose(np.diff(times[1:]), 0.05, atol=0.005)
    assert d.phase == d.RUNNING


def test_realtime_reset_waits_for_a_state_received_after_the_answer() -> None:
    rig = Rig(mode="realtime")
    d = rig.driver
    d.reset(0.0)
    d.on_joint_state(state(Q0), 1.0, 0.01)  # may still be the pre-reset arm
    d.on_reset_answer(rig.requests[-1], True, "", 0.02)
    assert d.phase == d.RESETTING and rig.ready == 0
    d.on_joint_state(state(Q0 + 0.01), 1.05, 0.03)
    assert d.phase == d.READY and rig.ready == 1


def test_a_transition_completes_only_with_a_reward_that_arrived_after_its_command() -> None:
    rig = Rig(rewarded=True)
    d = rig.driver
    d.on_reward(-9.0, 0.0)  # before the episode: never paired
    rig.start()
    d.on_joint_state(state(rig.commands[-1]), 100.05, 0.01)
    assert not rig.transitions and len(rig.commands) == 1  # the step's reward is not there yet
    assert d.on_reward(float("nan"), 0.015) is False and not rig.transitions
    d.on_reward(-1.5, 0.02)
    assert [t.reward for t in rig.transitions] == [-1.5] and len(rig.commands) == 2
    d.on_reward(-1.0, 0.025)  # a reward without a new state completes nothing
    assert len(rig.transitions) == 1


def test_homing_drives_to_home_under_the_limits_then_is_ready() -> None:
    home = np.array([0.0, 0.2, 1.0, 1.0, 0.3])
    rig = Rig(reset_service=None, home=tuple(home), homing_speed=0.5, home_tolerance=0.01)
    d = rig.driver
    q, t = Q0.copy(), 0.0
    d.on_joint_state(state(q), t, t)
    d.reset(t)
    for _ in range(50):
        if rig.ready:
            break
        assert rig.commands, "homing publishes a target per state"
        step = rig.commands[-1] - q
        assert np.all(np.abs(step) <= 0.5 * ARM.velocity / HZ + 1e-12)
        q, t = rig.commands[-1], t + 0.05
        d.on_joint_state(state(q), t, t)  # the arm followed
    assert rig.ready == 1 and d.phase == d.READY and not rig.requests
    np.testing.assert_allclose(q, home, atol=0.01)
    moving = Rig(reset_service=None, home=tuple(home))
    moving.driver.on_joint_state(state(home, np.full(5, 0.2)), 0.0, 0.0)
    moving.driver.reset(0.0)
    assert moving.driver.phase == EpisodeDriver.RESETTING  # at home but not at rest


def test_a_non_finite_action_aborts_and_holds_where_the_arm_is() -> None:
    rig = Rig()
    d = rig.driver
    rig.start()
    rig.action = np.full(5, np.nan, np.float32)
    q = rig.commands[-1] - 0.001  # lagging behind its command
    d.on_joint_state(state(q), 100.05, 0.01)
    assert len(rig.transitions) == 1  # the step before is complete
    assert rig.ends == [EpisodeEnd(1, False, "non-finite action")] and d.phase == d.IDLE
    np.testing.assert_array_equal(rig.commands[-1], q)  # the hold
    assert d.counters["non_finite_actions"] == 1 and d.counters["episodes_aborted"] == 1


def test_a_failing_policy_aborts_with_the_error_logged() -> None:
    rig = Rig()
    rig.action = RuntimeError("boom")
    rig.start()
    assert rig.ends == [EpisodeEnd(0, False, "policy error")]
    assert ("error", "policy failed: RuntimeError: boom") in rig.logs
    np.testing.assert_array_equal(rig.commands, [])  # never commanded: nothing to hold


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_a_non_finite_observation_aborts() -> None:
    rig = Rig()
    d = rig.driver
    rig.start()
    q = rig.commands[-1]
    d.on_joint_state(state(q, np.full(5, 1e39)), 100.05, 0.01)  # inf as float32
    assert rig.ends == [EpisodeEnd(0, False, "non-finite observation")]
    assert d.counters["non_finite_observations"] == 1 and not rig.transitions
    np.testing.assert_array_equal(rig.commands[-1], q)  # held where the arm is


def test_a_stale_state_stream_aborts_the_episode_and_holds() -> None:
    rig = Rig(state_timeout_s=0.5)
    d = rig.driver
    rig.start()
    d.check_timeouts(0.4)
    assert d.phase == d.RUNNING
    d.check_timeouts(0.6)
    assert rig.ends == [EpisodeEnd(0, False, "stale joint state")] and len(rig.commands) == 2
    np.testing.assert_array_equal(rig.commands[-1], Q0)
    assert rig.logs[-1][0] == "warning" and "no new joint state" in rig.logs[-1][1]


def test_push_models_wait_for_the_object_pose() -> None:
    rig = Rig(info=info([*LAYOUT, ("puck_pos", 3)]))
    d = rig.driver
    rig.start()
    assert not rig.commands and d.phase == d.RUNNING  # waiting, not aborted
    assert d.on_object(np.array([0.4, np.nan, 0.0])) is False
    assert d.on_object(np.array([0.4, 0.0, 0.015])) is True
    d.on_joint_state(state(Q0 + 0.001), 100.05, 0.01)
    assert len(rig.commands) == 1 and rig.transitions == []


def test_the_reset_service_is_retried_and_a_superseded_answer_ignored() -> None:
    rig = Rig(reset_timeout_s=1.0)
    d = rig.driver
    rig.service_up = False
    d.reset(0.0)
    assert not rig.requests and d.phase == d.RESETTING
    rig.service_up = True
    d.check_timeouts(0.1)  # the service is there now
    first = rig.requests[-1]
    d.check_timeouts(1.2)  # no answer within reset_timeout_s: a new request
    assert rig.requests[-1] != first and d.counters["reset_retries"] == 1
    d.on_joint_state(state(Q0), 1.0, 1.3)
    d.on_reset_answer(first, True, "", 1.4)
    assert d.phase == d.RESETTING  # the answer to the first request no longer counts
    d.on_reset_answer(rig.requests[-1], False, "busy", 1.5)
    assert ("error", "reset failed: busy") in rig.logs and d.phase == d.RESETTING
    d.on_reset_answer(rig.requests[-1], True, "", 1.6)
    assert d.phase == d.READY


def test_stop_holds_a_running_episode_and_run_needs_a_ready_arm() -> None:
    rig = Rig()
    d = rig.driver
    with pytest.raises(RuntimeError, match="ready arm"):
        d.run(3, 0.0)
    rig.start()
    d.stop(0.01)
    assert d.phase == d.IDLE and len(rig.commands) == 2 and not rig.ends
    np.testing.assert_array_equal(rig.commands[-1], Q0)
    d.abort("late", 0.02)  # nothing running: nothing happens
    assert len(rig.commands) == 2 and d.counters["episodes_aborted"] == 0


def test_episode_length_and_home_are_checked() -> None:
    with pytest.raises(ValueError, match="episode_length"):
        EpisodeDriver(ARM, info(episode_length=None), reset_service="/sim/reset")
    assert EpisodeDriver(ARM, info(episode_length=None), steps=7, reset_service="/r").episode_length == 7
    with pytest.raises(ValueError, match="'home': required"):
        EpisodeDriver(ARM, info())
    with pytest.raises(ValueError, match="2 values for 5 joints"):
        EpisodeDriver(ARM, info(), home=(0.0, 0.0))
