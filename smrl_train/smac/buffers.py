"""Per-task replay storage and the meta-batch sampler (docs/algorithm.md sections 2 and 3).

All tasks live in one tensor ``(n_tasks, capacity, width)`` whose rows are whole transitions
laid out as ``[obs | action | reward | next_obs | terminated]``, so a meta-batch is a single
gather and a context ``(s, a, r)`` is a contiguous slice of it. The first ``offline_size[i]``
rows of task i are its offline data: they stay untouched, so they double as the frozen
snapshot labelling contexts are drawn from (docs/algorithm.md section 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class MetaBatch:
    """One update's data. T tasks, B RL transitions per task, C context transitions.

    obs/next_obs (T*B, O), action (T*B, A), reward/terminated (T*B,), context (T, C, O+A+1),
    tasks (T,) buffer rows of the tasks; offline (T*B,) 1.0 where the transition is one of the
    offline dataset's (the first ``offline_size`` rows of its task), else 0.0; explored (T*B,)
    1.0 where the transition's task took its context from its exploration episodes, else 0.0.
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor
    context: Tensor
    tasks: Tensor
    offline: Tensor | None = None
    explored: Tensor | None = None

    @property
    def meta_batch(self) -> int:
        return int(self.context.shape[0])

    def to(self, device: torch.device) -> MetaBatch:
        """The same batch on ``device`` (itself when it is there: no copy)."""
        if self.obs.device == device:
            return self

        def move(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device, non_blocking=True)

        return MetaBatch(obs=self.obs.to(device, non_blocking=True), action=self.action.to(device, non_blocking=True),
                         reward=self.reward.to(device, non_blocking=True),
                         next_obs=self.next_obs.to(device, non_blocking=True),
                         terminated=self.terminated.to(device, non_blocking=True),
                         context=self.context.to(device, non_blocking=True),
                         tasks=self.tasks.to(device, non_blocking=True), offline=move(self.offline),
                         explored=move(self.explored))

    @property
    def batch_size(self) -> int:
        return int(self.obs.shape[0]) // self.meta_batch


def episode_starts(terminated: np.ndarray, truncated: np.ndarray | None) -> list[int]:
    """Where episodes begin in concatenated transitions: 0 and after every terminated or
    truncated step. (N,) bools -> offsets."""
    ends = np.asarray(terminated, bool)
    if truncated is not None:
        ends = ends | np.asarray(truncated, bool)
    return [0, *(int(i) + 1 for i in np.flatnonzero(ends[:-1]))]


class TaskBuffers:
    """Transitions of several tasks, appended per task; rows are addressed by task position.

    Args:
        task_ids: the tasks' indices (as in the dataset); row i holds ``task_ids[i]``.
        obs_dim, act_dim: transition sizes.
        capacity: initial rows per task (grows by doubling).
    """

    def __init__(self, task_ids: Sequence[int], obs_dim: int, act_dim: int, capacity: int = 1024) -> None:
        self.task_ids = [int(t) for t in task_ids]
        self.row_of = {t: i for i, t in enumerate(self.task_ids)}
        self.obs_dim, self.act_dim = obs_dim, act_dim
        o, a = obs_dim, act_dim
        self.context_dim = o + a + 1
        self.slices = {"obs": slice(0, o), "action": slice(o, o + a), "reward": slice(o + a, o + a + 1),
                       "next_obs": slice(o + a + 1, 2 * o + a + 1), "terminated": slice(2 * o + a + 1, 2 * o + a + 2)}
        self.width = 2 * o + a + 2
        self.data = torch.zeros(len(self.task_ids), max(1, capacity), self.width)
        self.size = torch.zeros(len(self.task_ids), dtype=torch.long)
        self.offline_size = torch.zeros(len(self.task_ids), dtype=torch.long)
        # Where each task's episodes start (row offsets, ascending), for episode contexts.
        self.starts: list[list[int]] = [[] for _ in self.task_ids]

    # -- filling -----------------------------------------------------------------------------
    def add(self, task_id: int, obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
            next_obs: np.ndarray, terminated: np.ndarray, episode_starts: Sequence[int] = (0,)) -> None:
        """Append n transitions of one task. obs/next_obs (n, O), action (n, A), others (n,);
        ``episode_starts``: where episodes begin within them (default: one episode).

        Rewards must be finite: a NaN here means a label source is broken, and it would
        silently poison every loss.
        """
        row = self.row_of[int(task_id)]
        n = int(np.shape(obs)[0])
        reward = np.asarray(reward, dtype=np.float32).reshape(n, 1)
        if not np.all(np.isfinite(reward)):
            raise ValueError(f"task {task_id}: non-finite rewards offered to the replay buffer")
        rows = np.concatenate([np.asarray(obs, np.float32).reshape(n, -1),
                               np.asarray(action, np.float32).reshape(n, -1),
                               reward, np.asarray(next_obs, np.float32).reshape(n, -1),
                               np.asarray(terminated, np.float32).reshape(n, 1)], axis=1)
        start = int(self.size[row])
        self._ensure(start + n)
        self.data[row, start:start + n] = torch.from_numpy(rows)
        self.size[row] = start + n
        self.starts[row] += [start + int(s) for s in episode_starts if 0 <= int(s) < n]

    def freeze_offline(self) -> None:
        """Mark everything stored so far as offline data (the frozen labelling snapshot)."""
        self.offline_size = self.size.clone()

    def _ensure(self, needed: int) -> None:
        cap = self.data.shape[1]
        if needed <= cap:
            return
        while cap < needed:
            cap *= 2
        grown = torch.zeros(self.data.shape[0], cap, self.width)
        grown[:, : self.data.shape[1]] = self.data
        self.data = grown

    @classmethod
    def from_task_arrays(cls, arrays: Mapping[int, Any], extra_capacity: int = 0) -> TaskBuffers:
        """Buffers holding reward-labelled per-task arrays (``TaskArrays``-like: obs, action,
        reward, next_obs, terminated), marked as the offline snapshot."""
        ids = sorted(arrays)
        first = arrays[ids[0]]
        largest = max(len(arrays[t].obs) for t in ids)
        buf = cls(ids, first.obs.shape[1], first.action.shape[1], capacity=largest + extra_capacity)
        for t in ids:
            a = arrays[t]
            if a.reward is None:
                raise ValueError(f"task {t}: offline data must be reward-labelled")
            buf.add(t, a.obs, a.action, a.reward, a.next_obs, a.terminated,
                    episode_starts(a.terminated, getattr(a, "truncated", None)))
        buf.freeze_offline()
        return buf

    # -- reading -----------------------------------------------------------------------------
    def field(self, name: str, row: int, limit: int | None = None) -> Tensor:
        """One field of one task's stored transitions, (n, dim)."""
        n = int(self.size[row]) if limit is None else limit
        return self.data[row, :n, self.slices[name]]

    def nonempty_rows(self) -> Tensor:
        return torch.nonzero(self.size > 0).squeeze(-1)

    def gather(self, rows: Tensor, count: int, generator: torch.Generator, offline_only: bool = False) -> Tensor:
        """``count`` transitions per task, uniformly with replacement: rows (T,) -> (T, count, width)."""
        return self.gather_marked(rows, count, generator, offline_only)[0]

    def gather_marked(self, rows: Tensor, count: int, generator: torch.Generator,
                offline_only: bool = False) -> tuple[Tensor, Tensor]:
        """:meth:`gather` and whether each drawn transition is offline data, (T, count) bools."""
        sizes = (self.offline_size if offline_only else self.size)[rows]
        if bool((sizes == 0).any()):
            raise ValueError("sampling from a task with no stored transitions")
        u = torch.rand(rows.shape[0], count, generator=generator)
        idx = (u * sizes.unsqueeze(1)).long().clamp_max(sizes.unsqueeze(1) - 1)
        return self.data[rows.unsqueeze(1), idx], idx < self.offline_size[rows].unsqueeze(1)

    def context(self, rows: Tensor, count: int, generator: torch.Generator, offline_only: bool = False,
                width: int | None = None) -> Tensor:
        """Context transitions (s, a, r), or (s, a, r, s') with ``width`` = 2 O + A + 1: rows (T,)
        -> (T, count, width)."""
        return self.gather(rows, count, generator, offline_only)[..., : width or self.context_dim]

    def episode_context(self, rows: Tensor, episodes: int, count: int, generator: torch.Generator,
                        offline_only: bool = False, width: int | None = None) -> Tensor:
        """Context transitions drawn from ``episodes`` whole episodes of each task (chosen
        uniformly, with replacement): what a test-time context of that many episodes looks
        like, rather than a sample of all the task's data. rows (T,) -> (T, count, O + A + 1)."""
        out = []
        for r in rows.tolist():
            limit = int((self.offline_size if offline_only else self.size)[r])
            starts = [s for s in self.starts[r] if s < limit]
            if not starts:
                raise ValueError("sampling from a task with no stored transitions")
            ends = [*starts[1:], limit]
            pick = torch.randint(0, len(starts), (episodes,), generator=generator).tolist()
            idx = torch.cat([torch.arange(starts[i], ends[i]) for i in pick])
            chosen = idx[torch.randint(0, idx.numel(), (count,), generator=generator)]
            out.append(self.data[r, chosen, : width or self.context_dim])
        return torch.stack(out)

    # -- checkpointing -----------------------------------------------------------------------
    def online_part(self) -> dict[str, Tensor]:
        """Everything added after :meth:`freeze_offline`, for checkpoints (offline data is
        reloaded from the dataset)."""
        out = {"size": self.size.clone(), "offline_size": self.offline_size.clone()}
        for row in range(len(self.task_ids)):
            lo, hi = int(self.offline_size[row]), int(self.size[row])
            out[f"rows/{row}"] = self.data[row, lo:hi].clone()
            out[f"starts/{row}"] = torch.tensor([s for s in self.starts[row] if s >= lo], dtype=torch.long)
        return out

    def load_online_part(self, state: Mapping[str, Tensor]) -> None:
        if not torch.equal(state["offline_size"], self.offline_size):
            raise ValueError("checkpoint was made with different offline data (per-task sizes differ)")
        for row in range(len(self.task_ids)):
            part = state[f"rows/{row}"]
            lo = int(self.offline_size[row])
            self._ensure(lo + part.shape[0])
            self.data[row, lo:lo + part.shape[0]] = part
            self.size[row] = lo + part.shape[0]
            online_starts = state.get(f"starts/{row}")
            if online_starts is None:  # a checkpoint of before episode contexts: one episode
                online_starts = torch.tensor([lo] if part.shape[0] else [], dtype=torch.long)
            self.starts[row] = [s for s in self.starts[row] if s < lo] + [int(s) for s in online_starts]


class MetaBatchSampler:
    """Draws meta-batches: T tasks uniformly with replacement, B RL and C context transitions each
    (with ``context_episodes`` k > 0, the C context transitions come from k whole episodes of
    the task, as at test time; else from all its transitions, the paper).

    With an exploration buffer and ``explore_fraction`` f > 0, the first round(f T) tasks of
    the meta-batch take their context from their deterministic prior-z exploration episodes
    when they have any (our improved recipe), else from the RL buffer (the paper's shared
    RL/encoder buffer, ``use_rl_buffer_for_enc_buffer``).
    """

    def __init__(self, rl: TaskBuffers, generator: torch.Generator, explore: TaskBuffers | None = None,
                 explore_fraction: float = 0.0, context_episodes: int = 0, context_width: int | None = None) -> None:
        self.rl, self.explore, self.explore_fraction = rl, explore, explore_fraction
        self.generator = generator
        self.context_episodes = int(context_episodes)
        self.context_width = context_width

    def _context(self, buf: TaskBuffers, rows: Tensor, count: int) -> Tensor:
        if self.context_episodes > 0:
            return buf.episode_context(rows, self.context_episodes, count, self.generator, width=self.context_width)
        return buf.context(rows, count, self.generator, width=self.context_width)

    def sample(self, meta_batch: int, batch_size: int, context_size: int) -> MetaBatch:
        rows_ok = self.rl.nonempty_rows()
        pick = torch.randint(0, rows_ok.numel(), (meta_batch,), generator=self.generator)
        rows = rows_ok[pick]
        data, offline = self.rl.gather_marked(rows, batch_size, self.generator)
        data = data.reshape(meta_batch * batch_size, -1)
        context = self._context(self.rl, rows, context_size)
        k = int(round(self.explore_fraction * meta_batch))
        explored = torch.zeros(meta_batch)
        if self.explore is not None and k > 0:
            head = rows[:k]
            has = self.explore.size[head] > 0
            if bool(has.any()):
                chosen = head[has]
                context[:k][has] = self._context(self.explore, chosen, context_size)
                explored[:k] = has.float()
        s = self.rl.slices
        return MetaBatch(obs=data[:, s["obs"]], action=data[:, s["action"]], reward=data[:, s["reward"]].squeeze(-1),
                         next_obs=data[:, s["next_obs"]], terminated=data[:, s["terminated"]].squeeze(-1),
                         context=context, tasks=rows, offline=offline.reshape(-1).float(),
                         explored=explored.repeat_interleave(batch_size))
