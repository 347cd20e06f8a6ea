"""Configs are strict: unknown keys and wrong types stop with an error naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smrl_train.config import ConfigError, SmrlConfig, load_config

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["reach", "push", "reach_panda", "push_panda"])
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
    path.write_text("env:\n  control_hz: 20\n  action_cost: 1e-3\n")
    cfg = load_config(path)
    assert cfg.env.control_hz == 20.0 and cfg.env.action_cost == 1e-3


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
