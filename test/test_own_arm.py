"""Your own arm from one config: ``smrl check-arm``, and the third shipped arm (six_axis, 6-DoF
with tool0 fixed after its last joint) through the whole path from config/reach_six_axis.yaml
alone: dataset, a short training run, export, and the controller on the sim bridge through
control.launch.py's graph, with no URDF, end-effector link or home given anywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from smrl_train.cli import main
from smrl_train.config_schema import to_dict
from smrl_train.robot.urdf import load_urdf

from conftest import CONFIGS, REPO, small_config, write_config

SIX_AXIS = CONFIGS["reach_six_axis"]


def check_arm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check-arm", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_arm_reports_the_six_axis_arm(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check_arm(capsys, str(SIX_AXIS), "--tasks", "5")
    assert code == 0, out
    for joint in ("joint_1", "joint_6"):
        assert f"             {joint} " in out  # one row per joint, with its limits
    assert "fixed        flange_tool0" in out and "end effector tool0" in out
    assert "inside it" in out and "above the table" in out
    assert "expert       5/5 tasks solved (100%)" in out and out.rstrip().endswith("verdict      ok")
    code, out, _ = check_arm(capsys, str(SIX_AXIS), "--tasks", "20", "--json")
    report = json.loads(out)
    assert code == 0 and report["expert_success"] >= 0.9 and report["problems"] == []
    assert [j["name"] for j in report["joints"]] == [f"joint_{i}" for i in range(1, 7)]
    assert report["home_ee"][2] > report["table_z"]


def _config_with_home(tmp_path: Path, home: list[float]) -> Path:
    data = yaml.safe_load(SIX_AXIS.read_text())
    data["arm"].update(urdf=str(REPO / "urdf" / "six_axis.urdf"), home=home)
    path = tmp_path / "config" / "my_arm.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_arm_suggests_a_home_that_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Shoulder and elbow folded down: the tool is under the table top.
    bad = _config_with_home(tmp_path, [0.0, 1.8, 1.0, 0.0, 1.0, 0.0])
    code, out, _ = check_arm(capsys, str(bad), "--tasks", "5", "--json")
    report = json.loads(out)
    assert code == 1 and report["expert_tasks"] == 0  # not run from a home under the table
    assert report["problems"] == ["arm.home: puts the end effector at z = -0.220 m, not above the table (z = 0.0 m)"]
    suggested = report["suggested_home"]
    assert report["suggested_success"] >= 0.9 and report["suggested_ee"][2] > 0.1
    code, out, _ = check_arm(capsys, str(_config_with_home(tmp_path, suggested)), "--tasks", "5")
    assert code == 0 and "verdict      ok" in out, out
    code, out, _ = check_arm(capsys, str(_config_with_home(tmp_path, [0.0, 0.3, 1.3, 0.0, 2.5, 0.0])), "--tasks", "0")
    assert code == 1
    assert "problem      arm.home: outside the URDF's joint limits: joint_5 2.500 not in [-2.100, 2.100]" in out
    assert "suggested    home: [" in out


@pytest.mark.parametrize("edit, needle", [
    ({"urdf": "urdf/none.urdf"}, "cannot read URDF"),
    ({"urdf": str(REPO / "urdf" / "six_axis.urdf"), "ee_link": "tool9"}, "end-effector link 'tool9' not found"),
])
def test_check_arm_bad_arm_sections_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        edit: dict[str, str], needle: str) -> None:
    data = yaml.safe_load(SIX_AXIS.read_text())
    data["arm"].update(edit)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out, err = check_arm(capsys, str(path))
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1, err


def test_the_urdfs_tool_frame_is_a_fixed_link_after_the_last_joint() -> None:
    arm = load_urdf(REPO / "urdf" / "six_axis.urdf", "tool0")
    assert arm.n_joints == 6 and [j.kind for j in arm.chain[-1:]] == ["fixed"] and arm.chain[-2].child == "flange"


@pytest.mark.ros
def test_six_axis_whole_path_from_its_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Data, a few dozen updates of training, export, and the exported policy driving the sim
    bridge's six_axis through control.launch.py: config/reach_six_axis.yaml is the only place
    the arm is named."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from smrl_ros import topics
    from smrl_train.robot.runtime import read_model

    from ros_harness import command_arrays, latest_status, load_launch, ros_graph
    from smac_helpers import tiny_config

    cfg = small_config("reach_six_axis", n_train=3, n_test=1, episode_length=30)
    config = write_config(cfg, tmp_path / "six_axis_small.yaml")
    smac = to_dict(tiny_config("success_tuned"))
    smac["offline"].update(steps=40, log_every=20, checkpoint_every=40)
    smac_file = tmp_path / "smac.yaml"
    smac_file.write_text(yaml.safe_dump({"smac": smac}))
    store, run, bundle = tmp_path / "data", tmp_path / "run", tmp_path / "bundle"
    assert main(["data", "generate", "--config", str(config), "--out", str(store), "--quiet"]) == 0
    assert main(["train", "offline", "--config", str(config), "--data", str(store), "--run", str(run),
                 "--smac", str(smac_file), "--quiet", "--no-eval", "--threads", "1"]) == 0
    assert main(["export", "bundle", "--checkpoint", str(run), "--config", str(config), "--out", str(bundle)]) == 0
    capsys.readouterr()
    model = bundle / "prior_policy.onnx"
    info = read_model(model)[1]
    assert (info.arm, info.urdf, info.ee_link) == ("six_axis", "urdf/six_axis.urdf", "tool0")
    assert info.home == cfg.arm.home and len(info.joint_names) == 6

    launch = load_launch("control.launch.py")
    graph = launch.build({**{a.name: a.default for a in launch.ARGUMENTS}, "model_path": str(model),
                          "config": "config/reach_six_axis.yaml"})
    arm = load_urdf(cfg.urdf_path(), "tool0")
    with ros_graph(graph, tmp_path) as (runner, probe):
        from diagnostic_msgs.msg import DiagnosticArray

        states = probe.subscribe(topics.JOINT_STATES, JointState, topics.STATE_SUB_QOS)
        commands = probe.subscribe(topics.COMMANDS, Float64MultiArray, topics.COMMAND_QOS)
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        commands.wait_count(20, 60.0)
        states.wait_count(20, 10.0)
        diag.wait_for(lambda _: (latest_status(diag, "smrl_controller") or {}).get("commands", "0") != "0", 10.0,
                      "controller diagnostics")
        assert runner.exited() == {}
        log = runner.log("smrl_controller")
    assert list(states.latest.name) == list(arm.joint_names)
    sent = np.array(command_arrays(commands))
    assert sent.shape[1] == 6 and np.all(np.isfinite(sent))
    assert np.all(sent >= arm.lower - 1e-9) and np.all(sent <= arm.upper + 1e-9)
    status = latest_status(diag, "smrl_controller")
    assert status is not None and status["hold"] == "none" and int(status["inference_errors"]) == 0
    assert "another URDF" not in log  # the sim's arm is the one the model was trained on
