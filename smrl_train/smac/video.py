"""Pictures of the meta-test: what the agent did while it adapted to a held-out task.

:class:`AdaptationFilm` keeps the meta-test's first run on the first few held-out tasks (through
:func:`smrl_train.smac.runner.evaluate_run`'s ``on_run``) and writes one MP4 per task, the
exploration episodes and the scored episode side by side (``smrl eval --video``).
:func:`write_filmstrip` draws a few frames of scored episodes, one row each, with the end
effector's path against the goal (``make demo``'s report). Both replay the recorded
observations (:mod:`smrl_train.sim.render`), so filming changes no result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
        self.runs: list[tuple[int, Any, list[Trajectory]]] = []

    def keep(self, pos: int, task: Any, run: int, trajs: list[Trajectory]) -> None:
        """The ``on_run`` hook of the meta-test."""
        if run == 0 and pos < self.n_tasks:
            self.runs.append((pos, task, trajs))

    def write(self, cfg: SmrlConfig, out_dir: str | Path, stem: str) -> list[tuple[Path, int]]:
        """One MP4 per kept task, ``out_dir/<stem>_task<index>.mp4`` at the control rate (real
        time); returns each file and its frame count."""
        written = []
        with EpisodeRenderer(cfg) as renderer:
            for pos, task, trajs in self.runs:
                path = Path(out_dir) / f"{stem}_task{task_index(task, pos):04d}.mp4"
                written.append((path, write_mp4(path, renderer.frames(adaptation_clips(task, trajs)),
                                                cfg.env.control_hz)))
        return written


def write_filmstrip(path: str | Path, cfg: SmrlConfig, rows: Sequence[tuple[str, Any, Trajectory]],
                    frames: int = 5) -> Path:
    """A PNG with one row per (label, task, scored episode): ``frames`` pictures spread over the
    episode, then the end effector's path seen from above against the goal's success radius."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), frames + 1, figsize=(3.2 * (frames + 1), 2.6 * len(rows)), squeeze=False)
    with EpisodeRenderer(cfg) as renderer:
        for i, (label, task, traj) in enumerate(rows):
            states = episode_states(traj.obs, traj.next_obs)
            ee = renderer.ee_path(states)
            for ax, t in zip(axes[i], np.linspace(0, len(states) - 1, frames).round().astype(int)):
                ax.imshow(renderer.frame(states[t], task.goal, ee[:t + 1]))
                ax.set_title(f"step {t}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[i, 0].set_ylabel(label, fontsize=9)
            ax = axes[i, -1]
            ax.plot(ee[:, 0], ee[:, 1], color="tab:orange", linewidth=1.2, label="end effector")
            ax.plot(*ee[0, :2], "o", color="tab:orange", markersize=3)
            if cfg.env.family == "push":  # the goal is the puck's
                puck = renderer.puck_path(states)
                ax.plot(puck[:, 0], puck[:, 1], color="tab:red", linewidth=1.2, label="puck")
            ax.add_patch(plt.Circle(task.goal[:2], cfg.env.success_radius, color="tab:green", alpha=0.35,
                                    label="goal"))
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_title(_outcome(traj), fontsize=8)
            ax.set_ylabel("y (m)", fontsize=7)
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.legend(fontsize=6, loc="best")
    axes[-1, -1].set_xlabel("x (m), seen from above", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
