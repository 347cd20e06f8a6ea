"""A config's env, whatever its family (:mod:`smrl_train.families`): the bare env the data
generator steps, and the time-limited one trainer and evaluator use."""

from __future__ import annotations

from typing import Any

from smrl_train.config import SmrlConfig
from smrl_train.config_schema import ConfigError
from smrl_train.families import resolve_family


def family_env(cfg: SmrlConfig) -> Any:
    """The bare env of ``cfg``'s family (no time limit): our ``ArmTaskEnv`` or the external
    family's ``factory(**env.options)``, its action space checked."""
    import gymnasium as gym
    import numpy as np

    family = resolve_family(cfg.env.family)
    if family.factory is None:
        from smrl_train.sim.envs import ArmTaskEnv

        return ArmTaskEnv(cfg)
    try:
        env = family.factory(**cfg.env.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"env.options: {cfg.env.family} refuses {cfg.env.options} ({exc})") from None
    space = getattr(env, "action_space", None)
    if not (isinstance(space, gym.spaces.Box) and space.is_bounded() and np.all(space.low >= -1)
            and np.all(space.high <= 1)):
        raise ConfigError(f"env.family: {cfg.env.family} has action space {space}; SMAC's policy acts in "
                          "[-1, 1], so it needs a bounded Box inside [-1, 1] (rescale it, e.g. "
                          "gymnasium.wrappers.RescaleAction)")
    return env


def make_env(cfg: SmrlConfig) -> Any:
    """The env trainer and evaluator use: ``family_env(cfg)`` truncated at ``env.episode_length``
    (our families through their gymnasium ids, as :func:`smrl_train.sim.envs.make_env`)."""
    import gymnasium as gym

    if resolve_family(cfg.env.family).is_arm:
        from smrl_train.sim.envs import make_env as make_arm_env

        return make_arm_env(cfg)
    return gym.wrappers.TimeLimit(family_env(cfg), max_episode_steps=cfg.env.episode_length)
