"""smrl_controller as a real process over DDS: it reaches a goal on the sim bridge, and every
safety rule fires when a real publisher sends the bad input."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import Bool

from smrl_ros import topics
from smrl_ros.graph_runner import GraphSpec
from smrl_ros.graphs import control_graph, controller_node
from smrl_train.export.onnx_export import export_adapted_policy, spec_from_env
from smrl_train.robot.model_metadata import DeploymentSpec
from smrl_train.sim.envs import ArmTaskEnv
from smrl_train.sim.tasks import split_tasks

from conftest import small_config
from ros_harness import (
    FakeRobot,
    change_lifecycle,
    command_arrays,
    latest_status,
    lifecycle_state,
    ros_graph,
    wait_until,
)
from standin_policy import FaultyPolicy, JointGoalPolicy, reach_goal_joints

pytestmark = pytest.mark.ros

HOME = np.array([0.0, 0.3, 1.3, 1.2, 0.0])
DIAG = "smrl_controller"


@pytest.fixture(scope="module")
def env() -> ArmTaskEnv:
    return ArmTaskEnv(small_config("reach"))


@pytest.fixture(scope="module")
def spec(env: ArmTaskEnv) -> DeploymentSpec:
    return spec_from_env(env)


def goal_model(spec: DeploymentSpec, z: np.ndarray, path: Path) -> Path:
    export_adapted_policy(JointGoalPolicy(spec.obs_dim, spec.n_joints), z, spec, path)
    return path


def wait_status(diag, predicate, timeout: float = 5.0, what: str = "diagnostics", node: str = DIAG) -> dict[str, str]:
    """The newest status of ``node`` once ``predicate(status)`` holds."""
    found: dict[str, dict[str, str]] = {}

    def check(_msgs) -> bool:
        status = latest_status(diag, node)
        if status is not None and predicate(status):
            found["s"] = status
            return True
        return False

    diag.wait_for(check, timeout, what)
    return found["s"]


def test_controller_drives_the_sim_bridge_to_a_reach_goal(env, spec, tmp_path: Path) -> None:
    cfg = env.cfg
    _, test_tasks = split_tasks(env, cfg.tasks.n_train, cfg.tasks.n_test, cfg.tasks.seed)
    task = test_tasks[0]
    model = goal_model(spec, reach_goal_joints(cfg, task), tmp_path / "goal.onnx")
    graph = control_graph(str(model), sim_parameters={"task_split": "test", "task_index": 0, "publish_reward": True},
                          controller_parameters={"diagnostics_period_s": 0.5})
    with ros_graph(graph, tmp_path) as (runner, probe):
        success = probe.subscribe("/smrl_sim/success", Bool)
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        success.wait_for(lambda m: any(x.data for x in m), 30.0, "the sim to report success")
        status = wait_status(diag, lambda s: int(s["commands"]) > 0)
        assert status["hold"] == "none" and int(status["inference_errors"]) == 0
        sim_status = wait_status(diag, lambda s: int(s["steps"]) > 0, node="smrl_sim")
        assert not any(k.startswith("mujoco_") for k in sim_status)  # no BADCTRL/BADQACC warnings
        assert int(sim_status["commands_rejected_non_finite"]) == 0
        assert runner.exited() == {}


# -- one controller with a faulty policy, driven by a fake robot ----------------------------


@pytest.fixture(scope="module")
def faulty(spec, tmp_path_factory):
    """A controller on FaultyPolicy (NaN action for q0 in (1.0, 1.5), ORT error for q0 > 2.0)
    and a fake robot holding still (it does not follow commands)."""
    tmp = tmp_path_factory.mktemp("faulty")
    check_obs = np.zeros((4, spec.obs_dim), np.float32)
    check_obs[:, 0] = [0.0, 0.5, -1.0, 0.9]  # outside the fault bands: torch and ORT agree
    model = tmp / "faulty.onnx"
    export_adapted_policy(FaultyPolicy(spec.obs_dim, spec.n_joints), HOME, spec, model, check_obs=check_obs)
    graph = GraphSpec("faulty", (controller_node(str(model), diagnostics_period_s=0.2),))
    with ros_graph(graph, tmp) as (runner, probe):
        robot = FakeRobot(probe, spec.joint_names, HOME, rate=20.0, track=False)
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        robot.wait_connected()
        robot.resume()
        robot.commands.wait_count(1, 20.0)
        yield runner, robot, diag
        robot.close()


def good_then(robot: FakeRobot, q: np.ndarray) -> int:
    """Pause the stream, send one good state at q, wait for its command; return the inbox index
    after it."""
    robot.pause()
    time.sleep(0.3)  # let the watchdog hold from the pause pass, if it fires
    n = len(robot.commands)
    robot.send(robot.names, q, np.zeros(5))
    robot.commands.wait_count(n + 1, 5.0)
    time.sleep(0.08)  # the next state is more than a period later: stepped, not decimated
    return len(robot.commands)


BAD = {
    "unknown_joint": lambda n, q: (n[:4] + ["gripper"], q, np.zeros(5)),
    "duplicate_joint": lambda n, q: (n[:4] + [n[0]], q, np.zeros(5)),
    "missing_joint": lambda n, q: (n[:4], q[:4], np.zeros(4)),
    "length_mismatch": lambda n, q: (n, q[:3], np.zeros(5)),
    "missing_velocity": lambda n, q: (n, q, []),
    "non_finite_state": lambda n, q: (n, np.where(np.arange(5) == 2, np.nan, q), np.zeros(5)),
    "outside_joint_limits": lambda n, q: (n, np.where(np.arange(5) == 2, np.degrees(q), q), np.zeros(5)),
}


@pytest.mark.parametrize("reason", list(BAD))
def test_bad_joint_states_are_rejected_and_never_commanded(faulty, reason: str) -> None:
    runner, robot, diag = faulty
    q_good = HOME + 0.01
    start = good_then(robot, q_good)
    before = int(wait_status(diag, lambda s: True)[f"rejected_{reason}"])
    bad_q = HOME + 0.2  # a command from this state would differ from the hold target
    for _ in range(3):
        robot.send(*BAD[reason](list(robot.names), bad_q))
        time.sleep(0.02)
    wait_status(diag, lambda s: int(s[f"rejected_{reason}"]) >= before + 3, what=f"rejected_{reason} counted")
    time.sleep(0.3)  # past the watchdog: the only command allowed is the hold at the last good state
    after = command_arrays(robot.commands, start)
    assert len(after) <= 1, after
    for cmd in after:
        np.testing.assert_allclose(cmd, q_good)
    robot.resume()
    assert runner.exited() == {}


def test_non_finite_action_holds_and_publishes_nothing_from_it(faulty) -> None:
    runner, robot, diag = faulty
    start = good_then(robot, HOME)
    q_nan = HOME.copy()
    q_nan[0] = 1.2  # the policy returns NaN here
    before = int(wait_status(diag, lambda s: True)["non_finite_actions"])
    # Keep the NaN-producing states coming (2 periods apart: none is decimated, none goes stale)
    # until a diagnostics message shows the hold; on a loaded machine that can take a while.
    status, deadline = None, time.monotonic() + 10.0
    while status is None and time.monotonic() < deadline:
        robot.send(robot.names, q_nan, np.zeros(5))
        time.sleep(0.1)
        s = latest_status(diag, DIAG)
        if s is not None and int(s["non_finite_actions"]) >= before + 4 and s["hold"] == "non_finite_action":
            status = s
    assert status is not None, latest_status(diag, DIAG)
    assert status["level"] in ("1", "b'\\x01'")
    after = command_arrays(robot.commands, start)
    assert len(after) == 1 and np.all(np.isfinite(after[0]))
    np.testing.assert_allclose(after[0], q_nan)  # the hold: where the arm is, nothing more
    robot.resume()


def test_inference_exception_holds_and_reports(faulty) -> None:
    runner, robot, diag = faulty
    start = good_then(robot, HOME)
    q_err = HOME.copy()
    q_err[0] = 2.5  # the Gather index goes out of range: onnxruntime raises
    for _ in range(4):
        robot.send(robot.names, q_err, np.zeros(5))
        time.sleep(0.1)
    status = wait_status(diag, lambda s: s["hold"] == "inference_error" and int(s["inference_errors"]) >= 4)
    assert "Gather" in status["last_error"] or "INVALID_ARGUMENT" in status["last_error"]
    after = command_arrays(robot.commands, start)
    assert len(after) == 1
    np.testing.assert_allclose(after[0], q_err)  # hold, never the previous command again
    robot.send(robot.names, HOME, np.zeros(5))  # the fault clears: commanding resumes
    robot.commands.wait_count(len(robot.commands) + 1, 5.0)
    assert runner.exited() == {}
    assert "inference failed" in runner.log("smrl_controller")


def test_watchdog_holds_once_when_the_states_pause_and_resumes(faulty) -> None:
    runner, robot, diag = faulty
    robot.set_q(HOME)
    robot.resume()
    time.sleep(0.5)
    before = int(wait_status(diag, lambda s: True)["stale_events"])
    log_before = runner.log("smrl_controller").count("no fresh joint state")
    robot.pause()
    t_pause = time.monotonic()
    time.sleep(0.05)  # commands still in flight for the last states land first (< 3 periods)
    start = len(robot.commands)
    robot.commands.wait_count(start + 1, 2.0)  # the hold command
    reaction = robot.commands.times[start] - t_pause
    time.sleep(0.6)
    after = command_arrays(robot.commands, start)
    assert len(after) == 1, "commands kept coming while the state was stale"
    np.testing.assert_allclose(after[0], HOME)
    assert 0.1 < reaction < 0.8  # 3 periods of 50 ms + the check interval + DDS (loose: shared CPUs)
    status = wait_status(diag, lambda s: int(s["stale_events"]) == before + 1)
    assert status["hold"] == "stale_joint_state"
    robot.resume()
    robot.commands.wait_count(start + 3, 2.0)
    wait_status(diag, lambda s: s["hold"] == "none" and int(s["stale_recoveries"]) >= 1)
    assert runner.log("smrl_controller").count("no fresh joint state") == log_before + 1  # logged once


# -- limits, mismatches, hot reload ------------------------------------------------------------


def test_targets_are_clipped_to_the_robots_position_and_velocity_limits(spec, tmp_path: Path) -> None:
    # A model whose own limits are wider than the robot's URDF, run at 100 Hz: its targets
    # overshoot both the position limits and velocity x period; the node clips them.
    wide = dataclasses.replace(spec, lower=spec.lower - 1.0, upper=spec.upper + 1.0)
    z = np.array([3.5, 0.3, 1.3, 1.2, 0.0])  # beyond shoulder_pan's upper limit 2.9
    model = tmp_path / "wide.onnx"
    export_adapted_policy(JointGoalPolicy(spec.obs_dim, spec.n_joints), z, wide, model)
    graph = GraphSpec("clip", (controller_node(str(model), rate_hz=100.0, allow_rate_mismatch=True,
                                                          diagnostics_period_s=0.2),))
    upper, vel = spec.upper, spec.velocity
    with ros_graph(graph, tmp_path) as (runner, probe):
        robot = FakeRobot(probe, spec.joint_names, HOME, rate=100.0, track=False)
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        robot.wait_connected()
        robot.resume()
        robot.commands.wait_count(5, 20.0)
        cmd = command_arrays(robot.commands)[-1]
        assert cmd[0] == pytest.approx(HOME[0] + vel[0] * 0.01)  # velocity x period, not max_step
        robot.set_q([upper[0] - 0.005, 0.3, 1.3, 1.2, 0.0])
        wait_until(lambda: command_arrays(robot.commands)[-1][0] == pytest.approx(upper[0]), 5.0,
                   "a command clipped to the upper limit")
        status = wait_status(diag, lambda s: int(s["position_clipped"]) > 0 and int(s["velocity_clipped"]) > 0)
        assert status["hold"] == "none"
        for cmd in command_arrays(robot.commands):
            assert np.all(cmd <= upper + 1e-12) and np.all(cmd >= spec.lower - 1e-12)
        robot.close()


@pytest.mark.parametrize(("overrides", "expected"), [
    # Each once published a NaN command, stretched the velocity bound or disabled the watchdog.
    ({"rate_hz": float("nan")}, "parameter 'rate_hz': must be a finite number in [0, 1000], got nan"),
    ({"rate_hz": float("inf")}, "parameter 'rate_hz': must be a finite number in [0, 1000], got inf"),
    ({"rate_hz": 1e-9}, "differs from the model's control rate 20 Hz"),
    ({"rate_hz": 100.0}, "set allow_rate_mismatch:=true"),
    ({"watchdog_periods": float("nan")}, "parameter 'watchdog_periods': must be a finite number in [1, 20]"),
    ({"watchdog_periods": 1e9}, "parameter 'watchdog_periods': must be a finite number in [1, 20], got 1000000000.0"),
])
def test_parameters_that_would_weaken_the_safety_layer_are_refused(spec, tmp_path: Path, overrides: dict,
                                                                   expected: str) -> None:
    model = goal_model(spec, HOME, tmp_path / "goal.onnx")
    graph = GraphSpec("refuse", (controller_node(str(model), **overrides),))
    with ros_graph(graph, tmp_path) as (runner, probe):
        assert runner.wait_exit("smrl_controller", 30.0) == 2
        log = runner.log("smrl_controller")
        assert "refusing to start" in log and expected in log and "Traceback" not in log, log


@pytest.mark.parametrize(("change", "expected"), [
    ("joint_names", "joint names: model"),
    ("layout", "block 'gripper_width' is not one the robot side builds"),
])
def test_a_mismatched_model_is_refused_naming_the_mismatch(spec, tmp_path: Path, change: str, expected: str) -> None:
    if change == "joint_names":
        other = dataclasses.replace(spec, joint_names=tuple(f"panda_joint{i}" for i in range(1, 6)))
        policy = JointGoalPolicy(spec.obs_dim, spec.n_joints)
    else:
        other = dataclasses.replace(spec, observation_layout=(*spec.observation_layout, ("gripper_width", 1)))
        policy = JointGoalPolicy(spec.obs_dim + 1, spec.n_joints)
    model = tmp_path / f"{change}.onnx"
    export_adapted_policy(policy, HOME, other, model)
    graph = GraphSpec("refuse", (controller_node(str(model)),))
    with ros_graph(graph, tmp_path) as (runner, probe):
        assert runner.wait_exit("smrl_controller", 30.0) == 2
        log = runner.log("smrl_controller")
        assert "refusing to start" in log and expected in log, log


def test_hot_reload_swaps_the_model_between_ticks(spec, tmp_path: Path) -> None:
    z_a = HOME + np.array([0.3, 0.1, -0.1, 0.1, 0.2])
    z_b = HOME - np.array([0.3, 0.1, 0.2, 0.1, 0.2])
    model_a, model_b = goal_model(spec, z_a, tmp_path / "a.onnx"), goal_model(spec, z_b, tmp_path / "b.onnx")
    graph = GraphSpec("reload", (controller_node(str(model_a), diagnostics_period_s=0.2),))
    with ros_graph(graph, tmp_path) as (runner, probe):
        robot = FakeRobot(probe, spec.joint_names, HOME, rate=20.0, track=True)
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        robot.wait_connected()
        robot.resume()
        wait_until(lambda: len(robot.commands) > 0 and np.allclose(command_arrays(robot.commands)[-1], z_a,
                                                                   atol=2e-3), 10.0, "the arm at goal A")
        # A bad model is refused with the reason; the running one stays.
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"junk")
        result = probe.set_parameters("smrl_controller", {"model_path": str(bad)})[0]
        assert not result.successful and "not an ONNX model" in result.reason
        # Holds before the switch (a stalled test thread at start-up can cost one) are not the
        # switch's: count from here.
        holds_before = int(wait_status(diag, lambda s: int(s["reloads"]) == 0 and s["hold"] == "none")["holds"])
        result = probe.set_parameters("smrl_controller", {"model_path": str(model_b)})[0]
        assert result.successful, result.reason
        wait_until(lambda: np.allclose(command_arrays(robot.commands)[-1], z_b, atol=2e-3), 10.0, "the arm at goal B")
        status = wait_status(diag, lambda s: int(s["reloads"]) == 1)
        assert int(status["reload_failures"]) == 1 and status["model_path"] == str(model_b)
        assert status["hold"] == "none" and int(status["holds"]) == holds_before  # no gap while switching
        robot.close()


def test_enabled_false_pauses_the_commands_and_true_resumes_them(spec, tmp_path: Path) -> None:
    z = HOME + np.array([0.2, 0.1, -0.1, 0.1, 0.1])
    graph = GraphSpec("pause", (controller_node(str(goal_model(spec, z, tmp_path / "g.onnx")), enabled=False,
                                                diagnostics_period_s=0.2, cpu_dma_latency_us=0),))
    with ros_graph(graph, tmp_path) as (runner, probe):
        robot = FakeRobot(probe, spec.joint_names, HOME, rate=20.0, track=True)
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        robot.wait_connected()
        robot.resume()
        # Paused: the loop runs on the states (suppressed commands count up), nothing is published.
        wait_status(diag, lambda st: int(st["suppressed_commands"]) >= 10 and st["enabled"] == "False")
        assert len(robot.commands) == 0
        result = probe.set_parameters("smrl_controller", {"enabled": "yes"})[0]
        assert not result.successful and "parameter 'enabled': expected bool" in result.reason
        assert probe.set_parameters("smrl_controller", {"enabled": True})[0].successful
        wait_until(lambda: len(robot.commands) > 0 and np.allclose(command_arrays(robot.commands)[-1], z, atol=2e-3),
                   10.0, "the arm at the goal once enabled")
        # The latency request was made (held, or refused with the reason on a machine without it).
        log = runner.log("smrl_controller")
        assert "holding /dev/cpu_dma_latency at 0 us" in log or "cpu_dma_latency_us 0 not applied" in log, log
        robot.close()


def test_lifecycle_transitions_load_command_hold_and_release(spec, tmp_path: Path) -> None:
    """autostart false: the controller waits unconfigured; configure loads (a bad model is
    refused with the reason and the node stays up), activate commands, deactivate holds and
    stops, activate resumes, cleanup releases. All through the lifecycle_msgs services."""
    z = HOME + np.array([0.2, 0.1, -0.1, 0.1, 0.1])
    good = goal_model(spec, z, tmp_path / "g.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    graph = GraphSpec("lifecycle", (controller_node(str(bad), autostart=False, diagnostics_period_s=0.2),))
    with ros_graph(graph, tmp_path) as (runner, probe):
        robot = FakeRobot(probe, spec.joint_names, HOME, rate=20.0, track=True)
        robot.resume()
        assert lifecycle_state(probe, "smrl_controller") == "unconfigured"
        assert not change_lifecycle(probe, "smrl_controller", "configure")
        assert "configure refused" in runner.log("smrl_controller") and "not an ONNX model" in \
            runner.log("smrl_controller")
        assert lifecycle_state(probe, "smrl_controller") == "unconfigured" and runner.exited() == {}
        assert probe.set_parameters("smrl_controller", {"model_path": str(good)})[0].successful
        assert change_lifecycle(probe, "smrl_controller", "configure")
        assert lifecycle_state(probe, "smrl_controller") == "inactive"
        robot.wait_connected()
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        status = wait_status(diag, lambda st: True)
        assert status["lifecycle"] == "inactive" and "inactive" in status["message"]
        assert len(robot.commands) == 0  # configured, not active: nothing is commanded

        assert change_lifecycle(probe, "smrl_controller", "activate")
        wait_until(lambda: len(robot.commands) > 0 and np.allclose(command_arrays(robot.commands)[-1], z, atol=2e-3),
                   10.0, "the arm at the goal once active")
        assert change_lifecycle(probe, "smrl_controller", "deactivate")
        n = len(robot.commands)
        time.sleep(0.5)
        assert len(robot.commands) <= n + 1  # at most the hold, issued before the answer ... or in flight
        n = len(robot.commands)
        time.sleep(0.5)
        assert len(robot.commands) == n  # inactive: silent
        robot.set_q(HOME)  # the arm is moved by other means while the controller is inactive
        time.sleep(0.2)

        assert change_lifecycle(probe, "smrl_controller", "activate")
        robot.commands.wait_count(n + 3, 10.0)
        first = command_arrays(robot.commands, n)[0]
        assert np.max(np.abs(first - HOME)) <= spec.velocity.max() / 20.0 + 1e-6  # from where the arm is now
        assert change_lifecycle(probe, "smrl_controller", "deactivate")
        assert change_lifecycle(probe, "smrl_controller", "cleanup")
        assert lifecycle_state(probe, "smrl_controller") == "unconfigured"
        assert "cleaned up: model released" in runner.log("smrl_controller")
        assert runner.exited() == {}
        robot.close()


def test_timer_trigger_commands_at_its_own_rate_on_the_newest_state(spec, tmp_path: Path) -> None:
    model = goal_model(spec, HOME + 0.5, tmp_path / "goal.onnx")
    graph = GraphSpec("timer", (controller_node(str(model), trigger="timer", rate_hz=50.0, allow_rate_mismatch=True,
                                                watchdog_periods=6.0,
                                                diagnostics_period_s=0.2),))
    with ros_graph(graph, tmp_path) as (runner, probe):
        robot = FakeRobot(probe, spec.joint_names, HOME, rate=20.0, track=False)  # slower than the loop
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        robot.wait_connected()
        robot.resume()
        robot.commands.wait_count(10, 20.0)
        n0, t0 = len(robot.commands), time.monotonic()
        time.sleep(1.0)
        rate = (len(robot.commands) - n0) / (time.monotonic() - t0)
        assert 35 < rate < 60, rate  # about 50 Hz, well above the 20 Hz of the states
        status = wait_status(diag, lambda s: s["period_p50_ms"] != "nan" and s["trigger"] == "timer")
        assert float(status["period_p50_ms"]) == pytest.approx(20.0, abs=4.0)  # absolute deadlines
        assert status["hold"] == "none"
        robot.close()
