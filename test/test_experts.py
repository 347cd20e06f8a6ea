"""Scripted experts solve >= 95% of train and test tasks, both families, on smrl_arm and panda_like.

The third arm's (six_axis) expert is checked through ``smrl check-arm`` on fewer tasks
(test_own_arm.py); on all 240 of reach_six_axis.yaml it solved every one.
"""

from __future__ import annotations

import numpy as np
import pytest

from smrl_train.config_loader import load_config
from smrl_train.sim.envs import make_env
from smrl_train.sim.experts import JacobianExpert
from smrl_train.sim.tasks import split_tasks

from conftest import CONFIGS


@pytest.mark.parametrize("name", sorted(set(CONFIGS) - {"reach_six_axis"}))
def test_expert_success_rate(name: str) -> None:
    cfg = load_config(CONFIGS[name])
    env = make_env(cfg)
    u = env.unwrapped
    expert = JacobianExpert(u.arm, u.max_step, u.sim.home, u.family)
    train, test = split_tasks(u, cfg.tasks.n_train, cfg.tasks.n_test, cfg.tasks.seed)
    for split, tasks in (("train", train), ("test", test)):
        successes = []
        for task in tasks:
            u.set_task(task)
            obs, _ = env.reset(seed=task.index)
            for _ in range(cfg.env.episode_length):
                obs, _, _, _, info = env.step(expert.act(obs, np.array(task.goal)))
            successes.append(info["success"])
        rate = float(np.mean(successes))
        assert rate >= 0.95, f"{name} {split}: expert success {rate:.2f}"
    assert u.sim.warning_counts() == {}
