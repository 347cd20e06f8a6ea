"""Where the self-supervised phase gets its episodes: two kinds of source, two contracts.

* A **policy source** acts: the online loop asks it for episodes of a training task by
  :class:`EpisodeRequest` (kind, latent distribution, seed) and it rolls the current policy out.
  :class:`EnvEpisodeSource` does so in an in-process gymnasium env that follows the task protocol
  of :mod:`smrl_train.sim.tasks` (``set_task`` then reset/step).
* A **recorded source** replays: :class:`RecordedEpisodeSource` serves episodes recorded
  elsewhere (the ROS exploration node, a replayed store), each once and in order, with the kind
  it was recorded as; the online loop takes as many per task visit as its recipe collects and
  builds no requests for them. What to record is decided before: the trainer's schedule of task
  visits (:func:`smrl_train.smac.runner.collection_visits`) and the recipe's episodes per visit
  and their kinds, which the exploration node is given as parameters.
  :func:`load_recordings` reads the exploration node's stores, checked against the training
  dataset.

Kinds are :data:`smrl_train.data.recordings.EPISODE_KINDS` everywhere (and ``UNNAMED_KIND`` for
a replayed store that names none). A source returns :class:`~smrl_train.smac.agent.Trajectory`
objects. Asked for episodes without rewards (``with_rewards=False``, the decoder-labelled
phase), a source returns trajectories whose ``reward`` is None: the env source drops rewards as
they arrive, the recorded source never touches the reward field of its arrays.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from smrl_train.data.recordings import EPISODE_KINDS, EXPLORE_KIND, UNNAMED_KIND, schema_mismatches
from smrl_train.data.store import EpisodeStore, StoreError, TaskArrays
from smrl_train.smac.agent import AdaptiveAgent, EnvPool, Trajectory, derived_seed, run_episodes


@dataclass(frozen=True)
class EpisodeRequest:
    """One episode the online phase wants: its latent distribution and how to act.

    kind: ``prior`` (z ~ N(0, I), stochastic), ``posterior`` (z ~ q(z | task context),
    stochastic) or ``explore`` (z ~ N(0, I), deterministic: like test-time exploration).
    mu, var (1, L) of the latent distribution; seed fixes the episode's randomness;
    resample: draw z every "step" or once per "episode".
    """

    kind: str
    mu: torch.Tensor
    var: torch.Tensor
    deterministic: bool
    seed: int
    resample: str = "step"


class PolicySource(Protocol):
    """Acts: turns requests for a training task into trajectories of the current policy."""

    def collect(self, task_id: int, requests: Sequence[EpisodeRequest], agent: AdaptiveAgent,
                with_rewards: bool) -> list[Trajectory]: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class RecordedSource(Protocol):
    """Replays: a training task's next recorded episodes, each with its recorded kind."""

    def take(self, task_id: int, count: int, with_rewards: bool) -> list[Trajectory]: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: Mapping[str, Any]) -> None: ...


EpisodeSource = PolicySource | RecordedSource


def _request_agent(agent: AdaptiveAgent, req: EpisodeRequest) -> AdaptiveAgent:
    """An agent with ``agent``'s networks acting as ``req`` asks: its latent, its mode, a
    generator seeded with its seed (so the episode is a function of the weights, the task and
    the request alone)."""
    one = AdaptiveAgent(agent.encoder, agent.policy, torch.Generator().manual_seed(req.seed), req.deterministic,
                        req.resample)
    one.mu, one.var = req.mu, req.var
    return one


@dataclass(frozen=True)
class PolicySpec:
    """What a collection worker needs to build the policy it loads each round's weights into:
    the run's smac config and the dimensions (:func:`smrl_train.smac.trainer.build_networks`)."""

    cfg: Any
    obs_dim: int
    act_dim: int


class EnvEpisodeSource:
    """Collect by acting in gymnasium task-family envs: in-process, a visit's episodes side by
    side, or in ``workers`` processes (each with its own env) when ``workers`` > 1.

    With workers, the online loop hands the round's policy weights to :meth:`set_weights` (a
    state_dict of tensors, sent to the workers as arrays: never a pickled module) and submits
    requests one episode at a time (:meth:`submit`); since every episode is a function of the
    weights, the task and its request (seed included), the trajectories are those one process
    collects.

    Args:
        pool: envs whose ``unwrapped`` has ``set_task`` (one per episode of a visit).
        tasks: training tasks by index (the dataset's task indices).
        max_steps: episode length cap.
        workers: collection processes (1: in-process).
        env_factory: builds the env in a worker (must be picklable: a module-level function
            or a ``functools.partial`` of one); needed when ``workers`` > 1.
        policy: how a worker builds the policy; needed when ``workers`` > 1.
    """

    def __init__(self, pool: EnvPool, tasks: Mapping[int, Any], max_steps: int, workers: int = 1,
                 env_factory: Callable[[], Any] | None = None, policy: PolicySpec | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers > 1 and (env_factory is None or policy is None):
            raise ValueError("collection workers need the env factory and the policy spec")
        self.pool, self.tasks, self.max_steps = pool, dict(tasks), max_steps
        self.workers = workers
        self.env_factory, self.policy = env_factory, policy
        self._pool: ProcessPoolExecutor | None = None
        self._weights: tuple[int, dict[str, np.ndarray]] = (0, {})

    @property
    def parallel(self) -> bool:
        return self.workers > 1

    def collect(self, task_id: int, requests: Sequence[EpisodeRequest], agent: AdaptiveAgent,
                with_rewards: bool) -> list[Trajectory]:
        """The requested episodes with ``agent``'s networks: each its own agent, generator
        seeded with the request's seed, as ``agent`` would roll them one after the other."""
        envs = self.pool.take(len(requests))
        for env in envs:
            env.unwrapped.set_task(self.tasks[task_id])
        agents = [_request_agent(agent, req) for req in requests]
        return run_episodes(envs, agents, [req.seed for req in requests], self.max_steps, with_rewards,
                            [req.kind for req in requests])

    # -- collection workers ----------------------------------------------------------------
    def set_weights(self, policy_state: Mapping[str, torch.Tensor]) -> None:
        """The policy weights the next submitted episodes act with (copied to the host)."""
        version = self._weights[0] + 1
        self._weights = (version, {k: v.detach().to("cpu", copy=True).numpy() for k, v in policy_state.items()})

    def submit(self, task_id: int, request: EpisodeRequest, with_rewards: bool) -> Future[Trajectory]:
        """One episode of the current weights, collected by a worker."""
        if self._pool is None:
            assert self.env_factory is not None and self.policy is not None  # checked in __init__
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"),
                                             initializer=_start_collector,
                                             initargs=(self.env_factory, self.tasks, self.max_steps, self.policy,
                                                       os.getpid()))
        version, weights = self._weights
        if not version:
            raise RuntimeError("set_weights before submitting episodes")
        fields = (request.kind, request.mu.detach().cpu().numpy(), request.var.detach().cpu().numpy(),
                  request.deterministic, request.seed, request.resample)
        return self._pool.submit(_collect_one, version, weights, task_id, fields, with_rewards)

    def close(self) -> None:
        """End the workers (a no-op in-process)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        pass


class _Collector:
    """A worker's env and policy; loads the weights of a new round once."""

    def __init__(self, env_factory: Callable[[], Any], tasks: Mapping[int, Any], max_steps: int,
                 spec: PolicySpec) -> None:
        from smrl_train.smac.trainer import build_networks

        self.env, self.tasks, self.max_steps = env_factory(), dict(tasks), max_steps
        nets = build_networks(spec.cfg, spec.obs_dim, spec.act_dim)
        nets.requires_grad_(False).eval()
        self.agent = AdaptiveAgent(nets.encoder, nets.policy, torch.Generator(), deterministic=False)
        self.version = 0

    def run(self, version: int, weights: Mapping[str, np.ndarray], task_id: int, fields: tuple[Any, ...],
            with_rewards: bool) -> Trajectory:
        if version != self.version:
            self.agent.policy.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            self.version = version
        kind, mu, var, deterministic, seed, resample = fields
        req = EpisodeRequest(kind, torch.from_numpy(mu), torch.from_numpy(var), deterministic, seed, resample)
        self.env.unwrapped.set_task(self.tasks[task_id])
        return run_episodes([self.env], [_request_agent(self.agent, req)], [req.seed], self.max_steps, with_rewards,
                            [req.kind])[0]


_COLLECTOR: _Collector | None = None


def _start_collector(env_factory: Callable[[], Any], tasks: Mapping[int, Any], max_steps: int, spec: PolicySpec,
                     parent: int) -> None:
    global _COLLECTOR
    from smrl_train.child_processes import end_with

    end_with(parent)  # a killed trainer stops its collection workers too
    torch.set_num_threads(1)  # one core each; acting is one small matrix product per step
    _COLLECTOR = _Collector(env_factory, tasks, max_steps, spec)


def _collect_one(version: int, weights: Mapping[str, np.ndarray], task_id: int, fields: tuple[Any, ...],
                 with_rewards: bool) -> Trajectory:
    assert _COLLECTOR is not None, "collection worker not initialised"
    return _COLLECTOR.run(version, weights, task_id, fields, with_rewards)


def split_episodes(terminated: np.ndarray, truncated: np.ndarray) -> list[slice]:
    """Episode boundaries of concatenated transitions: a new episode starts after each
    terminated or truncated step. (N,) bools -> slices."""
    ends = np.flatnonzero(np.asarray(terminated, bool) | np.asarray(truncated, bool))
    out, start = [], 0
    for e in ends:
        out.append(slice(start, int(e) + 1))
        start = int(e) + 1
    if start < len(terminated):
        out.append(slice(start, len(terminated)))
    return out


def collection_plan(kinds: Sequence[tuple[str, int]], latent_for: Callable[[str], tuple[torch.Tensor, torch.Tensor]],
                    seed_parts: Sequence[int], resample: Mapping[str, str] | None = None) -> list[EpisodeRequest]:
    """Requests for (kind, count) pairs; latents from ``latent_for(kind)``; seeds derived
    from ``seed_parts`` plus the episode's position; ``resample[kind]`` ("step" default)."""
    out, k = [], 0
    for kind, count in kinds:
        for _ in range(count):
            mu, var = latent_for(kind)
            out.append(EpisodeRequest(kind, mu, var, deterministic=(kind == EXPLORE_KIND),
                                      seed=derived_seed(*seed_parts, k), resample=(resample or {}).get(kind, "step")))
            k += 1
    return out


@dataclass(frozen=True)
class RecordedTaskArrays(TaskArrays):
    """A task's recorded episodes, concatenated, with each episode's length, kind
    (:data:`~smrl_train.data.recordings.EPISODE_KINDS`) and identity (the SHA-256 of its
    arrays) in store order."""

    episode_lengths: tuple[int, ...] = ()
    episode_kinds: tuple[str, ...] = ()
    episode_ids: tuple[str, ...] = ()


class RecordedEpisodeSource:
    """Serve recorded episodes, each once, in order, per task, with the kind it was recorded as.

    ``explore`` episodes (deterministic, prior z: our recipes' ``explore`` kind) enter the
    task's RL buffer and its exploration-context buffer; ``prior`` and ``posterior`` episodes
    (stochastic policy, z from the prior or the task's posterior) and unnamed ones enter the RL
    buffer only, as SMAC's do. When a task's episodes run out it returns fewer or none. Rewards
    are read only when asked for (``with_rewards``: the oracle on a reward-labelled store);
    recordings have none, and a reward-free store cannot serve the oracle.

    Its state (:meth:`state`, kept in the online run's checkpoint) names the episodes served by
    identity, so a resumed run (the next round of the trainer node) serves each episode once
    even when the recordings grew in between, in any of several stores.

    Args:
        arrays: per-task arrays keyed by training task index: :class:`RecordedTaskArrays`
            (episode boundaries and kinds as recorded) or any ``TaskArrays``-like (episodes
            split at terminated/truncated steps, kind ``UNNAMED_KIND``).
    """

    def __init__(self, arrays: Mapping[int, Any]) -> None:
        self.arrays = dict(arrays)
        self.episodes: dict[int, list[slice]] = {}
        self.kinds: dict[int, tuple[str, ...]] = {}
        self.ids: dict[int, tuple[str, ...]] = {}
        for task, a in self.arrays.items():
            lengths = getattr(a, "episode_lengths", ())
            if lengths:  # episode boundaries as recorded, not guessed from the flags
                ends = np.cumsum(lengths)
                self.episodes[task] = [slice(int(e - n), int(e)) for e, n in zip(ends, lengths)]
            else:
                self.episodes[task] = split_episodes(a.terminated, a.truncated)
            self.kinds[task] = tuple(getattr(a, "episode_kinds", ())) or (UNNAMED_KIND,) * len(self.episodes[task])
            self.ids[task] = tuple(getattr(a, "episode_ids", ())) or tuple(map(str, range(len(self.episodes[task]))))
        self.pending = {t: list(range(len(eps))) for t, eps in self.episodes.items()}  # not served yet, in order
        self.served: dict[int, list[str]] = {t: [] for t in self.arrays}

    def take(self, task_id: int, count: int, with_rewards: bool) -> list[Trajectory]:
        """The task's next ``count`` episodes (fewer when they run out)."""
        if task_id not in self.arrays:
            return []
        a, todo = self.arrays[task_id], self.pending[task_id]
        out = []
        for k in todo[:count]:
            s = self.episodes[task_id][k]
            reward = None
            if with_rewards:
                if a.reward is None:
                    raise ValueError(f"task {task_id}: the stored episodes are reward-free; "
                                     "true-reward labels need a reward-labelled store")
                reward = np.asarray(a.reward[s], np.float32)
            out.append(Trajectory(obs=np.asarray(a.obs[s], np.float32), action=np.asarray(a.action[s], np.float32),
                                  next_obs=np.asarray(a.next_obs[s], np.float32),
                                  terminated=np.asarray(a.terminated[s], bool),
                                  truncated=np.asarray(a.truncated[s], bool), reward=reward,
                                  kind=self.kinds[task_id][k]))
            self.served[task_id].append(self.ids[task_id][k])
        del todo[:len(out)]
        return out

    @property
    def task_ids(self) -> list[int]:
        return sorted(self.arrays)

    def remaining(self) -> int:
        """Episodes not served yet (all tasks)."""
        return sum(len(todo) for todo in self.pending.values())

    def remaining_by_kind(self) -> dict[str, int]:
        """Episodes not served yet, by kind."""
        return dict(Counter(self.kinds[t][k] for t, todo in self.pending.items() for k in todo))

    def state(self) -> dict[str, Any]:
        return {"served": {str(t): list(ids) for t, ids in self.served.items() if ids}}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Mark the episodes an earlier run served (by identity; a checkpoint from before
        identities were kept holds a count per task: the first ones in store order)."""
        for t, ids in state.get("served", {}).items():
            task, done = int(t), set(ids)
            if task in self.pending:
                self.pending[task] = [k for k in self.pending[task] if self.ids[task][k] not in done]
                self.served[task] = list(ids)
        for t, n in state.get("cursor", {}).items():
            task = int(t)
            if task in self.pending:
                self.served[task] = [self.ids[task][k] for k in self.pending[task][:int(n)]]
                del self.pending[task][:int(n)]


def load_recordings(paths: Sequence[str | Path], dataset_manifest: Mapping[str, Any]) -> dict[int, RecordedTaskArrays]:
    """Per-task arrays of one or more reward-free recordings, checked against the dataset,
    with each episode's length and kind.

    Raises:
        StoreError: a store is unreadable, reward-labelled, or its schema differs from the
            dataset's (the message names the store and every differing key), an episode has
            an unknown kind or a task the dataset does not train on (names the file), or there
            are no episodes at all.
    """
    merged: dict[int, list[tuple[Any, str]]] = {}
    known = {int(t["index"]) for t in dataset_manifest.get("tasks", {}).get("train", [])}
    for path in paths:
        store = EpisodeStore.open(path)
        if store.manifest["reward_labelled"]:
            raise StoreError(f"{path}: a recording for the self-supervised phase must be reward-free")
        problems = schema_mismatches(store.manifest, dataset_manifest)
        if problems:
            raise StoreError(f"{path}: does not fit the training dataset: " + "; ".join(problems))
        for file in store.episode_paths():
            episode = store.read_episode(file)
            kind = episode.meta.get("kind", EXPLORE_KIND)
            if kind not in EPISODE_KINDS + (UNNAMED_KIND,):
                raise StoreError(f"{file}: episode kind {kind!r} is not one of "
                                 f"{', '.join(EPISODE_KINDS + (UNNAMED_KIND,))}")
            if known and episode.task_index not in known:
                raise StoreError(f"{file}: task {episode.task_index} is not one of the dataset's "
                                 f"{len(known)} training tasks")
            merged.setdefault(episode.task_index, []).append((episode, kind))
    if not merged:
        raise StoreError(f"{', '.join(str(p) for p in paths)}: no recorded episodes to train on")
    out = {}
    for task, episodes in sorted(merged.items()):
        cat = {f: np.concatenate([e.arrays[f] for e, _ in episodes])
               for f in ("obs", "action", "next_obs", "terminated", "truncated")}
        out[task] = RecordedTaskArrays(cat["obs"], cat["action"], None, cat["next_obs"], cat["terminated"],
                                       cat["truncated"], tuple(len(e) for e, _ in episodes),
                                       tuple(k for _, k in episodes), tuple(str(e.meta["sha256"]) for e, _ in episodes))
    return out
