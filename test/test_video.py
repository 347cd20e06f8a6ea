"""Pictures of the arm: MP4s of stored and evaluated episodes with the hidden goal drawn, the
demo's filmstrip, and one-line errors where nothing can be rendered."""

from __future__ import annotations

import numpy as np
import pytest

from smrl_train.sim.render import RenderError, check_rendering

from conftest import small_config

EPISODE_LENGTH = 30
TILE = (240, 320, 3)  # one picture: height, width, RGB


def _rendering() -> str:
    try:
        check_rendering()
    except RenderError as exc:
        return str(exc)
    return ""


NO_RENDERING = _rendering()
needs_rendering = pytest.mark.skipif(bool(NO_RENDERING), reason=NO_RENDERING or "rendering works")


@needs_rendering
@pytest.mark.parametrize("family", ["reach", "push"])
def test_goal_marker_is_drawn_at_the_goal_in_the_scene_only(family: str) -> None:
    from smrl_train.sim.arm_sim import ArmSim
    from smrl_train.sim.envs import ArmTaskEnv
    from smrl_train.sim.render import EpisodeRenderer

    cfg = small_config(family)
    env = ArmTaskEnv(cfg)
    task = env.sample_tasks(1, 3)[0]
    obs, _ = env.reset(seed=0)
    with EpisodeRenderer(cfg) as renderer:
        bare, marked = renderer.frame(obs), renderer.frame(obs, task.goal)
        assert renderer.sim.model.ngeom == ArmSim(cfg).model.ngeom  # nothing added to the model
    changed = np.abs(marked.astype(int) - bare.astype(int)).sum(axis=2) > 30
    assert changed.sum() > 50, changed.sum()  # a marker of the 5 cm success radius, seen from 1.6 m
    r, g, b = (marked[changed][:, i].astype(int) for i in range(3))
    assert np.mean(g > np.maximum(r, b)) > 0.9  # green where it changed
