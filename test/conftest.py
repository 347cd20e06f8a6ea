"""Shared fixtures: small configs and datasets made on the fly (nothing large is committed)."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# ROS 2 from pip: Fast DDS on loopback. Each ROS test picks its own ROS_DOMAIN_ID.
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# Pictures (test_video.py) without a display: MuJoCo picks its OpenGL backend at its first import.
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")

# Property-based tests (test_properties.py): the same examples on every run and machine
# (derandomized: a fixed seed, so a red run is reproducible and CI never flakes), bounded so
# the file runs in seconds; no example database, and Hypothesis' caches outside the tree (no
# .hypothesis/ folder in the repo); no per-example deadline (the machine is shared; a slow
# example is not a failure).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "smrl-hypothesis")
settings.register_profile("smrl", max_examples=60, derandomize=True, database=None, deadline=None,
                          print_blob=False, suppress_health_check=(HealthCheck.too_slow,))
settings.load_profile("smrl")

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {
    "reach": REPO / "config" / "reach.yaml",
    "push": REPO / "config" / "push.yaml",
    "reach_panda": REPO / "config" / "reach_panda.yaml",
    "push_panda": REPO / "config" / "push_panda.yaml",
    "reach_six_axis": REPO / "config" / "reach_six_axis.yaml",
}


def small_config(name: str = "reach", n_train: int = 3, n_test: int = 2, episodes_per_behaviour: int = 1,
                 episode_length: int = 40):
    """A config of ``name`` shrunk for fast tests (few tasks, short episodes)."""
    from smrl_train.config_loader import load_config

    cfg = load_config(CONFIGS[name])
    behaviours = tuple(dataclasses.replace(b, episodes=episodes_per_behaviour) for b in cfg.data.behaviours)
    return dataclasses.replace(
        cfg,
        tasks=dataclasses.replace(cfg.tasks, n_train=n_train, n_test=n_test),
        env=dataclasses.replace(cfg.env, episode_length=episode_length),
        data=dataclasses.replace(cfg.data, behaviours=behaviours),
    )


def write_config(cfg, path: Path, drop: tuple[str, ...] = ()) -> Path:
    """``cfg`` as a YAML config file at ``path`` that loads from anywhere (the arm's URDF by
    absolute path), without the sections named in ``drop``; returns ``path``."""
    from smrl_train.config_schema import to_dict

    data = to_dict(cfg)
    for key in ("root", *drop):
        data.pop(key)
    data["arm"]["urdf"] = str(cfg.urdf_path())
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def repo() -> Path:
    return REPO
