"""The family configuration: one task family on one arm, as typed frozen dataclasses.

Every section (``arm``, ``env``, ``tasks``, ``data``) is a frozen dataclass whose fields carry
their unit in a comment and whose values are checked on construction; a bad value stops with a
:class:`~smrl_train.config_schema.ConfigError` naming the dotted key. :class:`SmrlConfig` holds
the sections and the ``smac:`` section. Files are read by
:func:`smrl_train.config_loader.load_config`, strictly (:mod:`smrl_train.config_schema`): an
unknown key or a value of the wrong type never silently falls back to a default.

Paths in a config (the URDF) are resolved relative to the package root, which is the parent
of the config file's folder: that holds in the source tree (``config/`` beside ``urdf/``) and
in an installed share directory (``share/smrl_ros/config`` beside ``share/smrl_ros/urdf``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smrl_train.config_schema import ConfigError
from smrl_train.families import resolve_family


def _require(ok: bool, key: str, must: str, value: Any) -> None:
    """One line naming the key, what it must be and what it was."""
    if not ok:
        raise ConfigError(f"{key}: must be {must}, got {value!r}")


def _finite(value: Any) -> bool:
    values = value if isinstance(value, tuple) else (value,)
    return all(math.isfinite(v) for v in values)


def _check_box(key: str, low: tuple[float, ...], high: tuple[float, ...]) -> None:
    _require(_finite(low) and _finite(high), key, "finite", (low, high))
    _require(all(lo < hi for lo, hi in zip(low, high)), key, "a box with low < high on every axis",
             {"low": list(low), "high": list(high)})


@dataclass(frozen=True)
class ArmConfig:
    # URDF of the arm; relative paths are resolved against the package root.
    urdf: str = "urdf/smrl_arm.urdf"
    # Name of the URDF link whose origin is the end effector.
    ee_link: str = "ee_link"
    # Home pose (rad, URDF joint order) the arm resets to; empty = middle of the limits.
    home: tuple[float, ...] = ()
    # Largest joint-position change one action of magnitude 1 commands, as a fraction of
    # the joint's velocity limit times the control period (1.0 = full speed).
    max_step_fraction: float = 0.5
    # Position-servo stiffness per unit of the joint's effort limit (1/rad): kp = this x effort.
    servo_stiffness: float = 10.0
    # Damping ratio of each servo at the home pose.
    servo_damping_ratio: float = 1.0
    # Reflected rotor inertia of each joint (kg m^2); URDF has no field for it.
    armature: float = 0.05

    def __post_init__(self) -> None:
        _require(_finite(self.home), "arm.home", "finite joint positions (rad)", list(self.home))
        _require(0.0 < self.max_step_fraction <= 1.0, "arm.max_step_fraction", "in (0, 1]", self.max_step_fraction)
        _require(0.0 < self.servo_stiffness < math.inf, "arm.servo_stiffness", "> 0 and finite", self.servo_stiffness)
        _require(0.0 < self.servo_damping_ratio < math.inf, "arm.servo_damping_ratio", "> 0 and finite",
                 self.servo_damping_ratio)
        _require(0.0 <= self.armature < math.inf, "arm.armature", ">= 0 and finite", self.armature)


@dataclass(frozen=True)
class EnvConfig:
    # Task family: "reach" or "push" (our arm families), an import path "package.module:Name"
    # of a gymnasium env following the task protocol, or a name installed in the entry-point
    # group "smrl.families" (smrl_train.families). Of the keys below an external family uses
    # episode_length (its time limit) and options; the rest describe the arm families.
    family: str = "reach"
    # Keyword arguments of an external family's class, Name(**options); arm families take none.
    options: dict[str, Any] = field(default_factory=dict)
    # Policy control rate (Hz) and episode length (control steps); the paper's horizon is 200.
    control_hz: float = 20.0
    episode_length: int = 200
    # MuJoCo integration step (s); control_period / timestep must be a whole number.
    timestep: float = 0.002
    # Weight of the action cost in the reward: r = -distance - action_cost * |a|^2.
    action_cost: float = 0.01
    # Success radius (m) around the goal.
    success_radius: float = 0.05
    # Uniform noise (rad) added to the home pose at reset.
    reset_noise: float = 0.02
    # Reach: the box (m, base frame) hidden 3-D goals are drawn from.
    reach_goal_low: tuple[float, ...] = (0.30, -0.30, 0.10)
    reach_goal_high: tuple[float, ...] = (0.60, 0.30, 0.45)
    # Push: the puck's start (x, y) and the box its hidden 2-D goals are drawn from; goals
    # closer than push_min_distance to the start are redrawn (they would be solved already).
    puck_start: tuple[float, ...] = (0.45, 0.0)
    push_goal_low: tuple[float, ...] = (0.32, -0.22)
    push_goal_high: tuple[float, ...] = (0.58, 0.22)
    push_min_distance: float = 0.10
    # Push: weight of the hand-to-puck term in the shaped reward
    # r = -|puck - goal| - push_reach_weight * |ee - puck| - action_cost * |a|^2.
    push_reach_weight: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.options, dict) or not all(isinstance(k, str) for k in self.options):
            raise ConfigError(f"env.options: expected a mapping of keyword arguments, got {self.options!r}")
        if resolve_family(self.family).is_arm and self.options:
            raise ConfigError(f"env.options: the {self.family} family takes none (its settings are env.* keys), "
                              f"got {self.options!r}")
        for key in ("control_hz", "timestep"):
            _require(0.0 < getattr(self, key) < math.inf, f"env.{key}", "> 0 and finite", getattr(self, key))
        _require(self.episode_length >= 1, "env.episode_length", ">= 1", self.episode_length)
        for key in ("action_cost", "reset_noise", "push_min_distance", "push_reach_weight"):
            _require(0.0 <= getattr(self, key) < math.inf, f"env.{key}", ">= 0 and finite", getattr(self, key))
        _require(0.0 < self.success_radius < math.inf, "env.success_radius", "> 0 and finite", self.success_radius)
        for key, n in (("reach_goal_low", 3), ("reach_goal_high", 3), ("puck_start", 2),
                       ("push_goal_low", 2), ("push_goal_high", 2)):
            if len(getattr(self, key)) != n:
                raise ConfigError(f"env.{key}: expected a list of {n} floats")
        _require(_finite(self.puck_start), "env.puck_start", "finite", list(self.puck_start))
        _check_box("env.reach_goal_low/high", self.reach_goal_low, self.reach_goal_high)
        _check_box("env.push_goal_low/high", self.push_goal_low, self.push_goal_high)
        ratio = 1.0 / (self.control_hz * self.timestep)
        if abs(ratio - round(ratio)) > 1e-6:
            raise ConfigError(
                f"env.timestep: the control period 1/{self.control_hz} s must be a whole "
                f"number of timesteps of {self.timestep} s"
            )

    @property
    def substeps(self) -> int:
        """MuJoCo steps per control period."""
        return int(round(1.0 / (self.control_hz * self.timestep)))


@dataclass(frozen=True)
class TasksConfig:
    # Number of training and held-out test tasks; test tasks are drawn with seed + 1.
    n_train: int = 40
    n_test: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("n_train", "n_test"):
            _require(getattr(self, key) >= 1, f"tasks.{key}", ">= 1", getattr(self, key))
        _require(self.seed >= 0, "tasks.seed", ">= 0", self.seed)


BEHAVIOUR_KINDS = ("expert", "wrong_goal", "corrected", "random")


@dataclass(frozen=True)
class BehaviourConfig:
    # "expert" (scripted, aims at the true goal), "wrong_goal" (expert aiming at another
    # task's goal), "corrected" (the wrong goal for the first half of the episode, then the
    # true goal: a learner that recovers from its mistake) or "random" (uniform actions).
    kind: str = "expert"
    # Std of Gaussian noise added to the expert's action (in [-1, 1] action units).
    noise: float = 0.0
    # Episodes of this behaviour per task.
    episodes: int = 1

    def __post_init__(self) -> None:
        if self.kind not in BEHAVIOUR_KINDS:
            raise ConfigError(
                f"data.behaviours.kind: expected one of {', '.join(BEHAVIOUR_KINDS)}, got {self.kind!r}"
            )
        _require(0.0 <= self.noise < math.inf, "data.behaviours.noise", ">= 0 and finite", self.noise)
        _require(self.episodes >= 1, "data.behaviours.episodes", ">= 1", self.episodes)


def _default_behaviours() -> tuple[BehaviourConfig, ...]:
    # Mixed competence, standing in for the paper's partly trained PEARL learner: expert-only
    # data lets the decoder predict rewards from states alone and collapses the encoder.
    return (
        BehaviourConfig("expert", 0.1, 1),
        BehaviourConfig("expert", 0.3, 1),
        BehaviourConfig("expert", 0.6, 1),
        BehaviourConfig("wrong_goal", 0.2, 2),
        BehaviourConfig("random", 0.0, 1),
    )


@dataclass(frozen=True)
class DataConfig:
    # Behaviour mix; episodes per task = sum of their episodes (6 x 200 = 1200 transitions,
    # the paper's per-task dataset size).
    behaviours: tuple[BehaviourConfig, ...] = field(default_factory=_default_behaviours)
    seed: int = 0

    def __post_init__(self) -> None:
        _require(len(self.behaviours) >= 1, "data.behaviours", "at least one behaviour", [])
        _require(self.seed >= 0, "data.seed", ">= 0", self.seed)


@dataclass(frozen=True)
class SmrlConfig:
    """The whole configuration of one task family on one arm."""

    arm: ArmConfig = field(default_factory=ArmConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    data: DataConfig = field(default_factory=DataConfig)
    # The algorithm section (``smrl_train.smac.config.SmacConfig``), built from the YAML's
    # ``smac:`` mapping by the loader (:func:`smrl_train.config_loader.load_config`) so one file
    # holds the family and the recipe; None = the SMAC defaults.
    smac: Any = None
    # Folder against which relative paths are resolved (set by the loader, not from YAML).
    root: str = ""

    def __post_init__(self) -> None:
        if self.smac is not None and not dataclasses.is_dataclass(self.smac):
            raise ConfigError(f"smac: expected mapping (SmacConfig), got {type(self.smac).__name__}")

    def urdf_path(self) -> Path:
        """Absolute path of the arm's URDF."""
        path = Path(self.arm.urdf)
        if path.is_absolute():
            return path
        base = Path(self.root) if self.root else package_root()
        return (base / path).resolve()


def package_root() -> Path:
    """The folder holding ``config/`` and ``urdf/``: the source tree or an installed share dir."""
    here = Path(__file__).resolve().parent.parent
    if (here / "urdf").is_dir():
        return here
    try:  # installed with colcon or pip: data files live in share/smrl_ros
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("smrl_ros"))
    except Exception:  # noqa: BLE001 - ament index missing or package not registered
        import sys

        return Path(sys.prefix) / "share" / "smrl_ros"
