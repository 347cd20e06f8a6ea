"""Per-task posteriors a training run hands to the robot: ``task_latents.json`` in a bundle.

SMAC's self-supervised phase collects some episodes with z from the *posterior* of the task
(docs/algorithm.md section 3: ``posterior_episodes``, z ~ q(z | c) with c drawn from the
task's buffer), not only from the prior. A robot cannot compute that posterior: it has the
encoder but not the offline data. So the trainer computes, at export time, ``n`` posteriors
per training task from ``n`` context batches of the task's offline data (the frozen-context
choice the decoder labels use too), and writes them beside the models. The exploration node
(``smrl_explorer``, parameter ``posterior_episodes``) draws each posterior episode's z from
one of them, in numpy.

File layout (JSON, small: tasks x n x latent_dim x 2 numbers)::

    {"kind": "smrl-task-latents", "latent_dim": L, "context_size": C, "per_task": n,
     "source": "offline context", "run": ..., "step": ...,
     "tasks": {"<task index>": {"mean": [[L floats] x n], "var": [[L floats] x n]}}}

This module is torch-free (the robot side reads it); the trainer side that fills it is
:func:`smrl_train.export.run_bundle.compute_task_latents`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FILE_NAME = "task_latents.json"
KIND = "smrl-task-latents"


class TaskLatentsError(ValueError):
    """The file is missing, malformed, or lacks a task (the message names the file and key)."""


@dataclass(frozen=True)
class TaskLatents:
    """Posterior (mean, var) arrays of shape (n, L) per training task index."""

    latent_dim: int
    mean: dict[int, np.ndarray]
    var: dict[int, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    def for_episode(self, task: int, episode_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The posterior of ``task`` for its episode ``episode_index``: the task's n posteriors
        taken in turn. Returns mean (L,), var (L,)."""
        if task not in self.mean:
            known = ", ".join(str(t) for t in sorted(self.mean)[:10])
            raise TaskLatentsError(f"no posterior for task {task} (the file has tasks {known}"
                                   f"{', ...' if len(self.mean) > 10 else ''})")
        k = int(episode_index) % len(self.mean[task])
        return self.mean[task][k], self.var[task][k]

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file, rename) as :data:`FILE_NAME`'s layout."""
        path = Path(path)
        payload = {"kind": KIND, "latent_dim": self.latent_dim, **self.info,
                   "tasks": {str(t): {"mean": self.mean[t].tolist(), "var": self.var[t].tolist()}
                             for t in sorted(self.mean)}}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> TaskLatents:
        """Read and check a task-latents file; :class:`TaskLatentsError` names what is wrong."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise TaskLatentsError(f"{path}: not found (a bundle exported by this version of smrl holds "
                                   f"{FILE_NAME}; re-export the run)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise TaskLatentsError(f"{path}: unreadable ({exc})") from None
        if not isinstance(data, Mapping) or data.get("kind") != KIND:
            raise TaskLatentsError(f"{path}: not a task-latents file (key 'kind' must be {KIND!r})")
        dim = data.get("latent_dim")
        if not isinstance(dim, int) or dim < 1:
            raise TaskLatentsError(f"{path}: key 'latent_dim' must be a positive integer, got {dim!r}")
        tasks = data.get("tasks")
        if not isinstance(tasks, Mapping) or not tasks:
            raise TaskLatentsError(f"{path}: key 'tasks' must map task indices to posteriors")
        mean, var = {}, {}
        for key, entry in tasks.items():
            where = f"{path}: tasks.{key}"
            try:
                task = int(key)
                m = np.asarray(entry["mean"], dtype=np.float32)
                v = np.asarray(entry["var"], dtype=np.float32)
            except (KeyError, TypeError, ValueError):
                raise TaskLatentsError(f"{where}: expected an integer key with 'mean' and 'var' lists") from None
            if m.ndim != 2 or m.shape[1] != dim or m.shape != v.shape or len(m) == 0:
                raise TaskLatentsError(f"{where}: mean and var must both be (n, {dim}) with n >= 1, got "
                                       f"{m.shape} and {v.shape}")
            if not (np.all(np.isfinite(m)) and np.all(np.isfinite(v)) and np.all(v > 0)):
                raise TaskLatentsError(f"{where}: values must be finite and variances > 0")
            mean[task], var[task] = m, v
        info = {k: v for k, v in data.items() if k not in ("kind", "latent_dim", "tasks")}
        return cls(dim, mean, var, info)


def describe(latents: TaskLatents) -> str:
    """One line for logs: tasks, posteriors per task, and the mean posterior std."""
    stds = [math.sqrt(float(v.mean())) for v in latents.var.values()]
    n = {len(m) for m in latents.mean.values()}
    return (f"{len(latents.mean)} tasks x {'/'.join(str(k) for k in sorted(n))} posterior(s), "
            f"mean posterior std {float(np.mean(stds)):.3f}")
