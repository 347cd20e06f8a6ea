"""Configs are strict: unknown keys and wrong types stop with an error naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smrl_train.config import SmrlConfig
from smrl_train.config_loader import load_config
from smrl_train.config_schema import ConfigError

REPO = Path(__file__).resolve().parent.parent
URDF = REPO / "urdf" / "smrl_arm.urdf"


@pytest.mark.parametrize("name", ["reach", "push", "reach_panda", "push_panda", "reach_six_axis"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "config" / f"{name}.yaml")
    assert isinstance(cfg, SmrlConfig)
    assert cfg.urdf_path().is_file()
    assert cfg.env.family == name.split("_")[0]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("env:\n  episode_lenght: 10\n", "unknown key 'env.episode_lenght'"),
        ("env:\n  episode_length: ten\n", "env.episode_length: expected int, got str"),
        ("env:\n  control_hz: [1, 2]\n", "env.control_hz: expected float"),
        ("tasks: 3\n", "tasks: expected mapping (TasksConfig), got int"),
        ("data:\n  behaviours:\n    - {kind: expert, noise: loud}\n", "data.behaviours[0].noise: expected float"),
        ("data:\n  behaviours:\n    - {kind: dance}\n", "data.behaviours.kind"),
        ("env:\n  family: fly\n", "env.family"),
        ("env: [unclosed\n", "not valid YAML"),
        ("arm:\n  home: 0.5\n", "arm.home: expected list of float"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "config").mkdir()
    path = tmp_path / "config" / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_floats_accept_ints_and_scientific_strings(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(f"arm:\n  urdf: {URDF}\nenv:\n  control_hz: 20\n  action_cost: 1e-3\n")
    cfg = load_config(path)
    assert cfg.env.control_hz == 20.0 and cfg.env.action_cost == 1e-3


# Meaning, not only types (issue 15, defect 6): each names its key and what it must be.
_MEANINGLESS = [
    ("tasks:\n  n_train: -3\n", "tasks.n_train: must be >= 1"),
    ("tasks:\n  n_train: 0\n", "tasks.n_train: must be >= 1"),
    ("tasks:\n  n_test: 0\n", "tasks.n_test: must be >= 1"),
    ("data:\n  seed: -1\n", "data.seed: must be >= 0"),
    ("tasks:\n  seed: -1\n", "tasks.seed: must be >= 0"),
    ("env:\n  reach_goal_low: [0.6, -0.3, 0.1]\n  reach_goal_high: [0.3, 0.3, 0.45]\n",
     "env.reach_goal_low/high: must be a box with low < high"),
    ("env:\n  push_goal_high: [.nan, 0.2]\n", "env.push_goal_low/high: must be finite"),
    ("arm:\n  home: [0.0, .nan, 1.3, 1.2, 0.0]\n", "arm.home: must be finite"),
    ("data:\n  behaviours:\n    - {kind: expert, noise: .nan}\n", "data.behaviours.noise: must be >= 0 and finite"),
    ("data:\n  behaviours:\n    - {kind: expert, episodes: 0}\n", "data.behaviours.episodes: must be >= 1"),
    ("data:\n  behaviours: []\n", "data.behaviours: must be at least one behaviour"),
    ("arm:\n  servo_stiffness: -10\n", "arm.servo_stiffness: must be > 0"),
    ("arm:\n  armature: -0.1\n", "arm.armature: must be >= 0"),
    ("arm:\n  max_step_fraction: 0\n", "arm.max_step_fraction: must be in (0, 1]"),
    ("arm:\n  max_step_fraction: -0.5\n", "arm.max_step_fraction: must be in (0, 1]"),
    ("env:\n  control_hz: .inf\n", "env.control_hz: must be > 0 and finite"),
    ("env:\n  success_radius: -0.05\n", "env.success_radius: must be > 0"),
    ("env:\n  reset_noise: .nan\n", "env.reset_noise: must be >= 0 and finite"),
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("arm:\n  home: [0.0, 0.3, 9.0, 1.2, 0.0]\n",
     "arm.home: outside the URDF's joint limits: elbow 9.000 not in [-2.600, 2.600]"),
    ("arm:\n  home: [0.0, 0.3, 1.3]\n", "arm.home: expected 5 values"),
    ("arm:\n  home: [0.0, 1.9, 0.0, 0.0, 0.0]\n", "not above the table"),
    ("arm:\n  ee_link: no_such_link\n", "arm.urdf / arm.ee_link"),
    ("arm:\n  urdf: urdf/missing.urdf\n", "arm.urdf / arm.ee_link"),
    # Found by the property tests (test_properties.py): accepted, or another exception than ConfigError.
    ("smac:\n  loss: {policy_lr: .nan}\n", "smac.loss.policy_lr: must be finite, got nan"),
    ("smac:\n  loss: {kl_weight: -1}\n", "smac.loss.kl_weight: must be >= 0"),
    ("smac:\n  offline: {checkpoint_every: 0}\n", "smac.offline.checkpoint_every: must be > 0"),
    ("smac:\n  network: {policy_hidden: [0, 64]}\n", "smac.network.policy_hidden: layer widths must be >= 1"),
    ("smac:\n  seed: -5\n", "smac.seed: must be >= 0"),
    ("env:\n  control_hz: 1" + "0" * 400 + "\n", "env.control_hz: must be a finite float, got an integer of 401"),
    ("tasks:\n  seed: 1" + "0" * 30 + "\n", "tasks.seed: must fit in a signed 64-bit integer"),
    ("env: {control_hz: 20\n  !#: x\n", "not valid YAML: "),
]


@pytest.mark.parametrize("text, needle", _MEANINGLESS)
def test_meaningless_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "urdf").mkdir()
    (tmp_path / "urdf" / "smrl_arm.urdf").write_bytes(URDF.read_bytes())
    path = tmp_path / "config" / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_reports_meaningless_config_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"arm:\n  urdf: {URDF}\ntasks:\n  n_train: 0\n")
    out = subprocess.run([sys.executable, "-m", "smrl_train.cli", "data", "generate", "--config", str(path),
                          "--out", str(tmp_path / "d")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "tasks.n_train: must be >= 1, got 0" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "d").exists()


def test_cli_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("env:\n  episode_length: 1.5\n")
    out = subprocess.run(
        [sys.executable, "-m", "smrl_train.cli", "data", "generate", "--config", str(path),
         "--out", str(tmp_path / "d")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert out.returncode == 2
    assert "env.episode_length: expected int, got float" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "d").exists()


def test_config_and_data_must_describe_the_same_arm(tmp_path: Path) -> None:
    """Issue 15, defect 7: one check of a config against the data it is used with, made before
    training (another arm's config on smrl_arm data used to train to exit 0)."""
    import dataclasses

    from smrl_train.data.generate import config_mismatches, generate_dataset

    from conftest import small_config

    cfg = small_config("reach", n_train=1, n_test=1, episode_length=10)
    store = generate_dataset(cfg, tmp_path / "data", progress=False)
    assert config_mismatches(cfg, store.manifest) == []
    panda = config_mismatches(load_config(REPO / "config" / "reach_panda.yaml"), store.manifest)
    assert any(p.startswith("joint_names: config ['panda_joint1'") for p in panda)
    assert any(p.startswith("arm.urdf_sha256: config") for p in panda) and any("obs_dim" in p for p in panda)
    slower = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, control_hz=10.0))
    assert any(p.startswith("control_hz: config 10.0 != data 20.0") for p in config_mismatches(slower, store.manifest))
    longer = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, episode_length=20))
    assert config_mismatches(longer, store.manifest) == []  # the horizon is the config's to choose

    out = subprocess.run([sys.executable, "-m", "smrl_train.cli", "train", "offline", "--config",
                          str(REPO / "config" / "reach_panda.yaml"), "--data", str(tmp_path / "data"),
                          "--run", str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "not data of the arm" in out.stderr and "joint_names" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()
