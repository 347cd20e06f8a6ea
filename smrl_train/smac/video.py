"""Pictures of the meta-test: what the agent did while it adapted to a held-out task.

:class:`AdaptationFilm` keeps the meta-test's first run on the first few held-out tasks (through
:func:`smrl_train.smac.runner.evaluate_run`'s ``on_run``) and writes one MP4 per task, the
exploration episodes and the scored episode side by side (``smrl eval --video``). It replays
the recorded observations (:mod:`smrl_train.sim.render`), so filming changes no result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smrl_train.config import SmrlConfig
from smrl_train.sim.render import Clip, EpisodeRenderer, episode_states, write_mp4
from smrl_train.smac.agent import Trajectory
from smrl_train.smac.evaluation import task_index


def _outcome(traj: Trajectory) -> str:
    return f"return {traj.episode_return:.1f}" + (", success" if traj.success else "")


def adaptation_clips(task: Any, trajs: Sequence[Trajectory]) -> list[Clip]:
    """One clip per episode of a protocol run: the exploration episodes, then the scored one."""
    goal = getattr(task, "goal", None)
    clips = [Clip(episode_states(t.obs, t.next_obs), goal, f"explore {k + 1}: {_outcome(t)}")
             for k, t in enumerate(trajs[:-1])]
    final = trajs[-1]
    return [*clips, Clip(episode_states(final.obs, final.next_obs), goal, f"adapted: {_outcome(final)}")]


class AdaptationFilm:
    """Keeps run 0 of the meta-test on the first ``n_tasks`` tasks; :meth:`write` films them."""

    def __init__(self, n_tasks: int) -> None:
        self.n_tasks = n_tasks
        self.runs: list[tuple[Any, list[Trajectory]]] = []

    def keep(self, pos: int, task: Any, run: int, trajs: list[Trajectory]) -> None:
        """The ``on_run`` hook of the meta-test."""
        if run == 0 and pos < self.n_tasks:
            self.runs.append((task, trajs))

    def write(self, cfg: SmrlConfig, out_dir: str | Path, stem: str) -> list[tuple[Path, int]]:
        """One MP4 per kept task, ``out_dir/<stem>_task<index>.mp4`` at the control rate (real
        time); returns each file and its frame count."""
        written = []
        with EpisodeRenderer(cfg) as renderer:
            for pos, (task, trajs) in enumerate(self.runs):
                path = Path(out_dir) / f"{stem}_task{task_index(task, pos):04d}.mp4"
                written.append((path, write_mp4(path, renderer.frames(adaptation_clips(task, trajs)),
                                                cfg.env.control_hz)))
        return written
