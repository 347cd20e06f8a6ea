"""Meta-test protocol (docs/algorithm.md section 4) and the paper's z-shift diagnostic.

Protocol per task and run: ``exploration_episodes`` episodes with z ~ N(0, I) re-drawn every
step, whose transitions and *true* rewards form the context; then one episode with z ~
q(z | all that context), re-drawn every step. The policy is deterministic (tanh of the mean).
The metric is the final episode's return and its success flag, averaged over runs, then over
tasks. Success is scored by ``eval.success``: "last" (``info["success"]`` at the episode's last
step) or "any" (at any step); unset, the family decides (:func:`success_metric`).

Diagnostic (the paper's Ant-Dir figure): on training tasks, the final-episode return when z
comes from the task's *offline* context versus from the agent's own exploration, and how far
the two posterior means lie apart compared with the spread of offline posteriors across tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from smrl_train.config_schema import ConfigError
from smrl_train.smac.agent import AdaptiveAgent, EnvPool, Trajectory, derived_seed, run_episodes, seeded_generator
from smrl_train.smac.buffers import TaskBuffers
from smrl_train.smac.config import EvalConfig
from smrl_train.smac.networks import Encoder, TanhGaussianPolicy

_EVAL_STREAM = 7_000  # seed-stream tags keep evaluation randomness apart from training's
_DIAG_STREAM = 8_000


T = TypeVar("T")
SUCCESS_METRICS = ("last", "any")


def success_metric(env: Any, cfg: EvalConfig) -> str:
    """How an episode's success is scored: ``eval.success`` if set, else the family's own
    (``success_metric`` on the unwrapped env), else "last"."""
    metric = cfg.success or getattr(getattr(env, "unwrapped", env), "success_metric", "last")
    if metric not in SUCCESS_METRICS:
        raise ConfigError(f"the env's success_metric: expected 'last' or 'any', got {metric!r}")
    return str(metric)


def scored_success(traj: Trajectory, metric: str) -> float:
    """1.0 when ``traj`` counts as a success under ``metric`` ("last" or "any"), else 0.0."""
    return float(bool(traj.success_any if metric == "any" else traj.success))


def task_index(task: Any, position: int) -> int:
    """A task's index (``task.index`` when it has one, else its position)."""
    return int(getattr(task, "index", position))


# Protocol runs stepped side by side at most, one env each (the meta-test's 40 tasks x 4 runs in
# one go): enough that the batched policy forward costs little next to the envs' steps.
LOCKSTEP_RUNS = 160


def explore_then_act(envs: Sequence[Any], agents: Sequence[AdaptiveAgent], n_explore: int, max_steps: int,
                     seed_parts: Sequence[Sequence[int]], scored_latent: str = "sample"
                     ) -> list[tuple[list[Trajectory], torch.Tensor, torch.Tensor]]:
    """Run the protocol's exploration episodes and one posterior episode, with z drawn from the
    posterior or its mean (``scored_latent``), for each (env, agent, seed parts) side by side
    (:func:`~smrl_train.smac.agent.run_episodes`); each env is on its run's task.

    Returns per run all trajectories (exploration first, final last) and the posterior mean and
    variance (1, L) of the final episode (the prior when there was no exploration).
    """
    for agent in agents:
        agent.use_prior()
    trajs: list[list[Trajectory]] = [[] for _ in agents]
    for ep in range(n_explore):
        done = run_episodes(envs, agents, [derived_seed(*parts, ep) for parts in seed_parts], max_steps, True,
                            "explore")
        for own, t in zip(trajs, done):
            own.append(t)
    posteriors = []
    for agent, own in zip(agents, trajs):
        if own:
            ctx = np.concatenate([t.context(width=agent.encoder.context_dim) for t in own])
            posteriors.append(agent.use_posterior(torch.from_numpy(ctx), scored_latent))
        else:
            agent.use_prior()
            posteriors.append((agent.mu, agent.var))
    finals = run_episodes(envs, agents, [derived_seed(*parts, n_explore) for parts in seed_parts], max_steps, True,
                          "final")
    return [(own + [final], mu, var) for own, final, (mu, var) in zip(trajs, finals, posteriors)]


def chunks(items: Sequence[T]) -> list[Sequence[T]]:
    """``items`` in consecutive pieces of at most :data:`LOCKSTEP_RUNS` (runs to step side by side)."""
    return [items[i: i + LOCKSTEP_RUNS] for i in range(0, len(items), LOCKSTEP_RUNS)]


# Called with (task position, task, run, trajectories) after each run of the protocol.
RunHook = Callable[[int, Any, int, list[Trajectory]], None]


def meta_test(pool: EnvPool, encoder: Encoder, policy: TanhGaussianPolicy, tasks: Sequence[Any], cfg: EvalConfig,
              seed: int, max_steps: int, progress: bool = False, on_run: RunHook | None = None) -> dict[str, Any]:
    """The meta-test protocol on ``tasks``, its runs side by side in envs of ``pool``. Returns a
    JSON-able summary with per-task rows.

    A run's seeds depend on the task's index and the run's number only, so any task's runs can
    be replayed alone, with the same episodes. ``on_run`` sees each run's episodes (to film
    them), in task then run order, and changes nothing.
    """
    metric = success_metric(pool.take(1)[0], cfg)
    runs = [(pos, task, task_index(task, pos), run) for pos, task in enumerate(tasks)
            for run in range(cfg.runs_per_task)]
    finals: dict[int, list[float]] = {}
    successes: dict[int, list[float]] = {}
    curves: dict[int, list[list[float | None]]] = {}
    bar = tqdm(total=len(tasks), desc="meta-test", unit="task", disable=not progress, leave=False)
    for chunk in chunks(runs):
        envs = pool.take(len(chunk))
        for env, (_, task, _, _) in zip(envs, chunk):
            env.unwrapped.set_task(task)
        agents = [AdaptiveAgent(encoder, policy, seeded_generator(seed, _EVAL_STREAM, idx, run), cfg.deterministic,
                                str(cfg.resample_latent)) for _, _, idx, run in chunk]
        done = explore_then_act(envs, agents, cfg.exploration_episodes, max_steps,
                                [(seed, _EVAL_STREAM + 1, idx, run) for _, _, idx, run in chunk],
                                str(cfg.scored_latent))
        for (pos, task, _, run), (trajs, _, _) in zip(chunk, done):
            if on_run is not None:
                on_run(pos, task, run, trajs)
            curves.setdefault(pos, []).append([t.episode_return for t in trajs])
            final_return = trajs[-1].episode_return
            assert final_return is not None  # the protocol's episodes run with rewards
            finals.setdefault(pos, []).append(final_return)
            successes.setdefault(pos, []).append(scored_success(trajs[-1], metric))
        bar.update(len({pos for pos, *_ in chunk if len(finals[pos]) == cfg.runs_per_task}))
    bar.close()
    rows = [{"task": task_index(task, pos), "final_return": float(np.mean(finals[pos])),
             "success": float(np.mean(successes[pos])),
             "returns_by_episode": np.mean(np.asarray(curves[pos], float), axis=0).tolist()}
            for pos, task in enumerate(tasks) if cfg.runs_per_task]
    return {
        "final_return": float(np.mean([r["final_return"] for r in rows])) if rows else float("nan"),
        "success_rate": float(np.mean([r["success"] for r in rows])) if rows else float("nan"),
        "returns_by_episode": np.mean([r["returns_by_episode"] for r in rows], axis=0).tolist() if rows else [],
        "tasks": rows,
    }


@torch.no_grad()
def z_shift_diagnostic(pool: EnvPool, encoder: Encoder, policy: TanhGaussianPolicy, tasks: Sequence[Any],
                       buffers: TaskBuffers, cfg: EvalConfig, seed: int, max_steps: int,
                       progress: bool = False) -> dict[str, Any]:
    """Return with z from offline context vs from own exploration, on training ``tasks``, the
    tasks side by side in envs of ``pool``.

    ``buffers`` must hold the tasks' offline data (its frozen offline part is used).
    """
    rows, mu_off_all = [], []
    metric = success_metric(pool.take(1)[0], cfg)
    known = [(task, idx) for task, idx in ((t, task_index(t, p)) for p, t in enumerate(tasks)) if idx in buffers.row_of]
    bar = tqdm(total=len(known), desc="z diagnostic", unit="task", disable=not progress, leave=False)
    for chunk in chunks(known):
        envs = pool.take(len(chunk))
        agents, mus_off = [], []
        for env, (task, idx) in zip(envs, chunk):
            env.unwrapped.set_task(task)
            gen = seeded_generator(seed, _DIAG_STREAM, idx)
            offline_ctx = buffers.context(torch.tensor([buffers.row_of[idx]]), cfg.offline_context_size, gen,
                                          offline_only=True, width=encoder.context_dim)[0]
            agent = AdaptiveAgent(encoder, policy, gen, cfg.deterministic, str(cfg.resample_latent))
            mus_off.append(agent.use_posterior(offline_ctx, str(cfg.scored_latent))[0])
            agents.append(agent)
        t_offs = run_episodes(envs, agents, [derived_seed(seed, _DIAG_STREAM + 1, idx) for _, idx in chunk],
                              max_steps, True, "final")
        explored = explore_then_act(envs, agents, cfg.exploration_episodes, max_steps,
                                    [(seed, _DIAG_STREAM + 2, idx) for _, idx in chunk], str(cfg.scored_latent))
        for (_, idx), mu_off, t_off, (trajs, mu_exp, _) in zip(chunk, mus_off, t_offs, explored):
            mu_off_all.append(mu_off.squeeze(0))
            rows.append({"task": idx, "return_offline_context": t_off.episode_return,
                         "success_offline_context": scored_success(t_off, metric),
                         "return_exploration_context": trajs[-1].episode_return,
                         "success_exploration_context": scored_success(trajs[-1], metric),
                         "z_distance": float((mu_exp - mu_off).norm())})
        bar.update(len(chunk))
    bar.close()
    if not rows:
        return {}
    mus = torch.stack(mu_off_all)
    spread = float(mus.std(dim=0).mean()) if len(rows) > 1 else float("nan")
    return {
        "return_offline_context": float(np.mean([r["return_offline_context"] for r in rows])),
        "return_exploration_context": float(np.mean([r["return_exploration_context"] for r in rows])),
        "success_offline_context": float(np.mean([r["success_offline_context"] for r in rows])),
        "success_exploration_context": float(np.mean([r["success_exploration_context"] for r in rows])),
        "z_distance": float(np.mean([r["z_distance"] for r in rows])),
        "z_spread_between_tasks": spread,
        "tasks": rows,
    }


def random_actions(space: Any, seed: int) -> Callable[[], np.ndarray]:
    """Seeded uniform actions of a gymnasium action space: ``rng.uniform(low, high)`` for a
    bounded Box (so Box(-1, 1) gives exactly ``rng.uniform(-1, 1)``), else the space's own
    ``sample()`` seeded with ``seed``."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Box) and space.is_bounded():
        rng = np.random.default_rng(seed)
        low, high, dtype = space.low.astype(float), space.high.astype(float), space.dtype
        return lambda: rng.uniform(low, high, space.shape).astype(dtype)
    space.seed(seed)
    return space.sample


def random_policy_baseline(env: Any, tasks: Sequence[Any], seed: int, max_steps: int,
                           metric: str = "last") -> dict[str, float]:
    """Return and success (scored by ``metric``) of uniform random actions from the env's
    action space, one episode per task (a floor)."""
    act = random_actions(env.action_space, seed)
    rets, succ = [], []
    for pos, task in enumerate(tasks):
        env.unwrapped.set_task(task)
        env.reset(seed=derived_seed(seed, 9_000, task_index(task, pos)))
        total, success, success_any = 0.0, False, False
        for _ in range(max_steps):
            _, r, term, trunc, info = env.step(act())
            total += float(r)
            success = bool(info.get("success", False))
            success_any = success_any or success
            if term or trunc:
                break
        rets.append(total)
        succ.append(float(success_any if metric == "any" else success))
    return {"final_return": float(np.mean(rets)), "success_rate": float(np.mean(succ))}
