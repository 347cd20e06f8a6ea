"""Record episodes step by step into an episode store (robot side: no torch, no ROS).

The recorder keeps the episode in progress in memory and hands it to the store only when it
is finished, so a process killed mid-episode loses that episode and nothing else: every file
in the store is a whole, verified episode (see :mod:`smrl_train.data.store`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from smrl_train.data.store import EpisodeStore


class EpisodeRecorder:
    """Accumulates transitions of one task and writes each finished episode atomically.

    Args:
        store: the destination; its manifest fixes obs_dim, act_dim and reward labelling.
        task_index: the task the episodes belong to (index into the manifest's tasks, or a
            robot-side id for unlabelled real-world data).
    """

    def __init__(self, store: EpisodeStore, task_index: int) -> None:
        self.store = store
        self.task_index = task_index
        self.labelled = bool(store.manifest["reward_labelled"])
        self.obs_dim = int(store.manifest["obs_dim"])
        self.act_dim = int(store.manifest["act_dim"])
        self.episodes_written = 0
        self.steps_written = 0
        self._rows: dict[str, list[Any]] = {}
        self.abort()

    @property
    def steps_in_progress(self) -> int:
        return len(self._rows["obs"])

    def add(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, *, timestamp: float,
            terminated: bool = False, reward: float | None = None, success: bool | None = None) -> None:
        """Append one transition. obs/next_obs (obs_dim,), action (act_dim,)."""
        if np.shape(obs) != (self.obs_dim,) or np.shape(next_obs) != (self.obs_dim,) \
                or np.shape(action) != (self.act_dim,):
            raise ValueError(f"transition shapes {np.shape(obs)}, {np.shape(action)}, {np.shape(next_obs)} "
                             f"do not fit the store ({self.obs_dim}, {self.act_dim}, {self.obs_dim})")
        if self.labelled and (reward is None or success is None):
            raise ValueError("this store is reward-labelled: pass reward and success")
        if not self.labelled and reward is not None:
            raise ValueError("this store is reward-free: it never holds rewards")
        self._rows["obs"].append(np.asarray(obs, dtype=np.float32))
        self._rows["action"].append(np.asarray(action, dtype=np.float32))
        self._rows["next_obs"].append(np.asarray(next_obs, dtype=np.float32))
        self._rows["terminated"].append(bool(terminated))
        self._rows["timestamp"].append(float(timestamp))
        if self.labelled:
            self._rows["reward"].append(float(reward))  # type: ignore[arg-type]
            self._rows["success"].append(bool(success))

    def finish(self, truncated: bool = True, meta: dict[str, Any] | None = None) -> Path | None:
        """Write the episode in progress (if any) and start a new one; returns the file.

        ``truncated`` marks the last step as a time-limit cut (not a terminal state).
        """
        n = self.steps_in_progress
        if n == 0:
            return None
        arrays = {k: np.asarray(v) for k, v in self._rows.items()}
        arrays["truncated"] = np.zeros(n, dtype=bool)
        arrays["truncated"][-1] = bool(truncated) and not arrays["terminated"][-1]
        path = self.store.append_episode(self.task_index, arrays, meta)
        self.episodes_written += 1
        self.steps_written += n
        self.abort()
        return path

    def abort(self) -> None:
        """Drop the episode in progress."""
        keys = ["obs", "action", "next_obs", "terminated", "timestamp"]
        if self.labelled:
            keys += ["reward", "success"]
        self._rows = {k: [] for k in keys}
