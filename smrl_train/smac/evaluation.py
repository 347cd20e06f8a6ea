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
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from smrl_train.config_schema import ConfigError
from smrl_train.smac.agent import AdaptiveAgent, Trajectory, derived_seed, run_episode, seeded_generator
from smrl_train.smac.buffers import TaskBuffers
from smrl_train.smac.config import EvalConfig
from smrl_train.smac.networks import Encoder, TanhGaussianPolicy

_EVAL_STREAM = 7_000  # seed-stream tags keep evaluation randomness apart from training's
_DIAG_STREAM = 8_000


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


def explore_then_act(env: Any, agent: AdaptiveAgent, n_explore: int, max_steps: int, seed_parts: Sequence[int],
                     scored_latent: str = "sample") -> tuple[list[Trajectory], torch.Tensor, torch.Tensor]:
    """Run the protocol's exploration episodes and one posterior episode, with z drawn from the
    posterior or its mean (``scored_latent``).

    Returns all trajectories (exploration first, final last) and the posterior mean and
    variance (1, L) of the final episode (the prior when there was no exploration).
    """
    agent.use_prior()
    trajs, ctx = [], []
    for ep in range(n_explore):
        t = run_episode(env, agent, derived_seed(*seed_parts, ep), max_steps, True, "explore")
        trajs.append(t)
        ctx.append(t.context(width=agent.encoder.context_dim))
    if ctx:
        mu, var = agent.use_posterior(torch.from_numpy(np.concatenate(ctx)), scored_latent)
    else:
        agent.use_prior()
        mu, var = agent.mu, agent.var
    trajs.append(run_episode(env, agent, derived_seed(*seed_parts, n_explore), max_steps, True, "final"))
    return trajs, mu, var


# Called with (task position, task, run, trajectories) after each run of the protocol.
RunHook = Callable[[int, Any, int, list[Trajectory]], None]


def meta_test(env: Any, encoder: Encoder, policy: TanhGaussianPolicy, tasks: Sequence[Any], cfg: EvalConfig,
              seed: int, max_steps: int, progress: bool = False, on_run: RunHook | None = None) -> dict[str, Any]:
    """The meta-test protocol on ``tasks``. Returns a JSON-able summary with per-task rows.

    A run's seeds depend on the task's index and the run's number only, so any task's runs can
    be replayed alone. ``on_run`` sees each run's episodes (to film them) and changes nothing.
    """
    rows = []
    metric = success_metric(env, cfg)
    for pos, task in enumerate(tqdm(tasks, desc="meta-test", unit="task", disable=not progress, leave=False)):
        env.unwrapped.set_task(task)
        idx = task_index(task, pos)
        finals, successes, curves = [], [], []
        for run in range(cfg.runs_per_task):
            agent = AdaptiveAgent(encoder, policy, seeded_generator(seed, _EVAL_STREAM, idx, run), cfg.deterministic,
                                  str(cfg.resample_latent))
            trajs, _, _ = explore_then_act(env, agent, cfg.exploration_episodes, max_steps,
                                           (seed, _EVAL_STREAM + 1, idx, run), str(cfg.scored_latent))
            if on_run is not None:
                on_run(pos, task, run, trajs)
            curves.append([t.episode_return for t in trajs])
            final_return = trajs[-1].episode_return
            assert final_return is not None  # the protocol's episodes run with rewards
            finals.append(final_return)
            successes.append(scored_success(trajs[-1], metric))
        rows.append({"task": idx, "final_return": float(np.mean(finals)), "success": float(np.mean(successes)),
                     "returns_by_episode": np.mean(np.asarray(curves, float), axis=0).tolist()})
    return {
        "final_return": float(np.mean([r["final_return"] for r in rows])) if rows else float("nan"),
        "success_rate": float(np.mean([r["success"] for r in rows])) if rows else float("nan"),
        "returns_by_episode": np.mean([r["returns_by_episode"] for r in rows], axis=0).tolist() if rows else [],
        "tasks": rows,
    }


@torch.no_grad()
def z_shift_diagnostic(env: Any, encoder: Encoder, policy: TanhGaussianPolicy, tasks: Sequence[Any],
                       buffers: TaskBuffers, cfg: EvalConfig, seed: int, max_steps: int,
                       progress: bool = False) -> dict[str, Any]:
    """Return with z from offline context vs from own exploration, on training ``tasks``.

    ``buffers`` must hold the tasks' offline data (its frozen offline part is used).
    """
    rows, mu_off_all = [], []
    metric = success_metric(env, cfg)
    for pos, task in enumerate(tqdm(tasks, desc="z diagnostic", unit="task", disable=not progress, leave=False)):
        idx = task_index(task, pos)
        if idx not in buffers.row_of:
            continue
        env.unwrapped.set_task(task)
        gen = seeded_generator(seed, _DIAG_STREAM, idx)
        row = torch.tensor([buffers.row_of[idx]])
        offline_ctx = buffers.context(row, cfg.offline_context_size, gen, offline_only=True,
                                      width=encoder.context_dim)[0]
        agent = AdaptiveAgent(encoder, policy, gen, cfg.deterministic, str(cfg.resample_latent))
        mu_off, _ = agent.use_posterior(offline_ctx, str(cfg.scored_latent))
        t_off = run_episode(env, agent, derived_seed(seed, _DIAG_STREAM + 1, idx), max_steps, True, "final")
        trajs, mu_exp, _ = explore_then_act(env, agent, cfg.exploration_episodes, max_steps,
                                            (seed, _DIAG_STREAM + 2, idx), str(cfg.scored_latent))
        mu_off_all.append(mu_off.squeeze(0))
        rows.append({"task": idx, "return_offline_context": t_off.episode_return,
                     "success_offline_context": scored_success(t_off, metric),
                     "return_exploration_context": trajs[-1].episode_return,
                     "success_exploration_context": scored_success(trajs[-1], metric),
                     "z_distance": float((mu_exp - mu_off).norm())})
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
