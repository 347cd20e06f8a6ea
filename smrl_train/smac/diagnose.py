"""``smrl diagnose``: which lever matters, in a minute, before paying for a benchmark.

For a trained run it measures how well z identifies the task and what the policy makes of it,
with z inferred from different contexts:

* ``offline``: ``eval.offline_context_size`` transitions of a training task's offline data
  (what the encoder was trained on; training tasks only);
* ``explore k``: the meta-test protocol's own exploration, k deterministic prior-z episodes
  with true rewards (k = 1, 2, 4 by default), on training and on held-out test tasks.

Per context and task split:

* **probe error**: a linear (ridge) probe from the posterior mean to the task parameter (the
  hidden goal), fitted on the training tasks' offline-context posteriors, applied to the
  context's posterior mean: the median distance to the true goal (m). It says whether z
  carries the task in the form the policy was trained on.
* **trilateration bound**: the goal recovered from the same transitions by least squares
  (``env.goal_from_rewards``, where the family has it): the information limit of the context,
  with each reward placed where it was measured (after the step, s'), and as the context rows
  hold it (s, a, r: placed at the state before the step).
* **success / final distance**: one scored episode with z from that posterior (as the
  meta-test draws it), deterministic policy.
* **policy error given z**: the distance from where that episode ended (the point the success
  radius applies to, ``env.achieved``) to where the probe says z puts the goal. With the probe
  error it splits a miss in two: z names the wrong goal (probe error), or the policy does not
  reach the goal z names (this column).
* **z distance**: how far the posterior mean lies from the offline-context one, in units of
  the between-task spread of offline posteriors (training tasks).

Families without a task parameter vector (``task.goal``) get no probe, families without
``goal_from_rewards`` no bound, families without ``info["goal_distance"]`` no final distance,
families without ``achieved`` no policy error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from smrl_train.smac.agent import AdaptiveAgent, EnvPool, Trajectory, derived_seed, run_episodes, seeded_generator
from smrl_train.smac.buffers import TaskBuffers
from smrl_train.smac.config import EvalConfig
from smrl_train.smac.evaluation import chunks, scored_success, success_metric, task_index
from smrl_train.smac.networks import Encoder, TanhGaussianPolicy

_DIAGNOSE_STREAM = 11_000
PROBE_CONTEXTS = 4  # offline contexts per training task the probe is fitted on
RIDGE = 1e-3  # ridge penalty of the probe, relative to the number of rows
# A context's transitions as arrays: obs (n, O), action (n, A), reward (n,), next_obs (n, O).
Transitions = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# A context a scored episode draws z from: (split, context name, task, task index, context rows,
# their transitions, the episode's seed).
Scored = tuple[str, str, Any, int, torch.Tensor, Transitions, int]


def task_parameter(task: Any) -> np.ndarray | None:
    """The task's parameter vector (our families: the hidden goal), or None."""
    goal = getattr(task, "goal", None)
    return None if goal is None else np.asarray(goal, float)


class LinearProbe:
    """Ridge regression z -> task parameter: fit on (n, L) and (n, G), predict (L,) -> (G,)."""

    def __init__(self, z: np.ndarray, target: np.ndarray) -> None:
        self.mean, self.scale = z.mean(0), z.std(0) + 1e-6
        x = np.concatenate([(z - self.mean) / self.scale, np.ones((len(z), 1))], axis=1)
        reg = RIDGE * len(z) * np.eye(x.shape[1])
        reg[-1, -1] = 0.0
        self.w = np.linalg.solve(x.T @ x + reg, x.T @ target)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        x = np.concatenate([(np.atleast_2d(z) - self.mean) / self.scale, np.ones((np.atleast_2d(z).shape[0], 1))], 1)
        return (x @ self.w).squeeze(0) if np.ndim(z) == 1 else x @ self.w


def _context(rows: np.ndarray, width: int) -> torch.Tensor:
    """Full transition rows (n, 2 O + A + 2) of TaskBuffers -> context rows (n, width)."""
    return torch.as_tensor(rows[:, :width], dtype=torch.float32)


def _policy_error(env: Any, final: Trajectory, aim: np.ndarray | None) -> float | None:
    achieved = getattr(env.unwrapped, "achieved", None)
    if achieved is None or aim is None or len(final) == 0:
        return None
    return float(np.linalg.norm(achieved(final.next_obs[-1]) - aim))


def _bound(env: Any, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
           goal: np.ndarray | None) -> float | None:
    estimate = getattr(env.unwrapped, "goal_from_rewards", None)
    if estimate is None or goal is None:
        return None
    error = float(np.linalg.norm(estimate(obs, action, reward, next_obs) - goal))
    return error if np.isfinite(error) else None  # the rows do not determine the goal


@torch.no_grad()
def diagnose(pool: EnvPool, encoder: Encoder, policy: TanhGaussianPolicy, train_tasks: Sequence[Any],
             test_tasks: Sequence[Any], buffers: TaskBuffers, cfg: EvalConfig, seed: int, max_steps: int,
             n_tasks: int = 20, episodes: Sequence[int] = (1, 2, 4), progress: bool = False) -> dict[str, Any]:
    """The diagnostic table of a trained encoder + policy (module docstring). ``buffers`` holds
    the training tasks' offline data; ``n_tasks`` of each split are evaluated, side by side in
    envs of ``pool``."""
    s = buffers.slices
    gen = seeded_generator(seed, _DIAGNOSE_STREAM)
    device = next(encoder.parameters()).device

    def offline_rows(row: int, count: int) -> np.ndarray:
        return buffers.gather(torch.tensor([row]), count, gen, offline_only=True)[0].numpy()

    # The probe, on every training task's offline-context posteriors.
    z_fit, y_fit, z_offline = [], [], {}
    for pos, task in enumerate(train_tasks):
        idx, goal = task_index(task, pos), task_parameter(task)
        if idx not in buffers.row_of:
            continue
        mus = [encoder(_context(offline_rows(buffers.row_of[idx], cfg.offline_context_size), encoder.context_dim)
                       .to(device).unsqueeze(0))[0].squeeze(0).cpu().numpy() for _ in range(PROBE_CONTEXTS)]
        z_offline[idx] = np.mean(mus, axis=0)
        if goal is not None:
            z_fit += mus
            y_fit += [goal] * len(mus)
    probe = LinearProbe(np.asarray(z_fit), np.asarray(y_fit)) if z_fit else None
    offline_z = np.asarray(list(z_offline.values()))
    spread = float(offline_z.std(0).mean()) if len(offline_z) > 1 else float("nan")

    rows: list[dict[str, Any]] = []
    metric = success_metric(pool.take(1)[0], cfg)

    # What each task is scored on, in table order; the offline contexts are drawn first, in that order.
    splits = [("train", list(train_tasks)[:n_tasks]), ("test", list(test_tasks)[:n_tasks])]
    visits = [(split, task, task_index(task, pos)) for split, tasks in splits for pos, task in enumerate(tasks)]
    offline: dict[int, Scored] = {}
    for k, (split, task, idx) in enumerate(visits):
        if split == "train" and idx in buffers.row_of:
            full = offline_rows(buffers.row_of[idx], cfg.offline_context_size)
            offline[k] = (split, "offline", task, idx, _context(full, encoder.context_dim),
                          (full[:, s["obs"]], full[:, s["action"]], full[:, s["reward"]].squeeze(-1),
                           full[:, s["next_obs"]]), derived_seed(seed, _DIAGNOSE_STREAM + 1, idx, 0))

    # The protocol's exploration: deterministic policy, z from the prior; every task side by side.
    bar = tqdm(total=len(visits) * (max(episodes) + len(episodes)) + len(offline), desc="diagnose", unit="episode",
               disable=not progress, leave=False)
    explored: list[list[Trajectory]] = []
    for chunk in chunks(visits):
        envs = pool.take(len(chunk))
        explorers = []
        for env, (_, task, idx) in zip(envs, chunk):
            env.unwrapped.set_task(task)
            explorers.append(AdaptiveAgent(encoder, policy, seeded_generator(seed, _DIAGNOSE_STREAM + 2, idx),
                                           cfg.deterministic, str(cfg.resample_latent)))
        trajs: list[list[Trajectory]] = [[] for _ in chunk]
        for e in range(max(episodes)):
            done = run_episodes(envs, explorers, [derived_seed(seed, _DIAGNOSE_STREAM + 3, idx, e)
                                                  for _, _, idx in chunk], max_steps, True, "explore")
            for own, t in zip(trajs, done):
                own.append(t)
            bar.update(len(chunk))
        explored += trajs

    scored: list[Scored] = []
    for k, ((split, task, idx), own) in enumerate(zip(visits, explored)):
        if k in offline:
            scored.append(offline[k])
        for n in episodes:
            part = own[:n]
            context = torch.from_numpy(np.concatenate([t.context(width=encoder.context_dim) for t in part]))
            obs, action, reward, next_obs = (np.concatenate([getattr(t, f) for t in part]) for f in
                                             ("obs", "action", "reward", "next_obs"))
            scored.append((split, f"explore {n}", task, idx, context, (obs, action, reward, next_obs),
                           derived_seed(seed, _DIAGNOSE_STREAM + 4, idx, n)))

    # One scored episode per context, z from its posterior; every context side by side.
    for batch in chunks(scored):
        envs = pool.take(len(batch))
        agents = []
        for env, (_, _, task, _, context, _, episode_seed) in zip(envs, batch):
            env.unwrapped.set_task(task)
            agent = AdaptiveAgent(encoder, policy, seeded_generator(episode_seed), cfg.deterministic,
                                  str(cfg.resample_latent))
            agent.use_posterior(context, str(cfg.scored_latent))
            agents.append(agent)
        finals = run_episodes(envs, agents, [c[-1] for c in batch], max_steps, True, "final")
        for env, agent, final, (split, source, task, idx, _, transitions, _) in zip(envs, agents, finals, batch):
            goal = task_parameter(task)
            z = agent.mu.squeeze(0).cpu().numpy()
            aim = None if probe is None or goal is None else probe(z)
            rows.append({
                "split": split, "context": source, "task": idx,
                "probe_error": None if aim is None else float(np.linalg.norm(aim - goal)),
                "policy_error": _policy_error(env, final, aim),
                "bound_error": _bound(env, *transitions, goal),
                "bound_error_rows": _bound(env, *transitions[:3], transitions[0], goal),
                "success": scored_success(final, metric), "final_distance": final.final_distance,
                "z_distance": float(np.linalg.norm(z - z_offline[idx]) / spread)
                if split == "train" and idx in z_offline else None,
            })
        bar.update(len(batch))
    bar.close()
    return {"rows": rows, "table": summarise(rows), "z_spread_between_tasks": spread,
            "probe_fit_error": _median([float(np.linalg.norm(probe(z) - y)) for z, y in zip(z_fit, y_fit)])
            if probe is not None else None}


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else None


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (split, context): medians of the errors and distances, mean success."""
    keys = sorted({(r["split"], r["context"]) for r in rows}, key=lambda k: (k[0] != "train", k[1] != "offline", k[1]))
    out = []
    for split, source in keys:
        sel = [r for r in rows if r["split"] == split and r["context"] == source]
        out.append({"split": split, "context": source, "tasks": len(sel),
                    "probe_error": _median([r["probe_error"] for r in sel]),
                    "bound_error": _median([r["bound_error"] for r in sel]),
                    "bound_error_rows": _median([r["bound_error_rows"] for r in sel]),
                    "policy_error": _median([r["policy_error"] for r in sel]),
                    "success": float(np.mean([r["success"] for r in sel])),
                    "final_distance": _median([r["final_distance"] for r in sel]),
                    "z_distance": _median([r["z_distance"] for r in sel])})
    return out


def format_table(result: dict[str, Any]) -> str:
    """The table as markdown (distances in cm)."""
    def cm(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    lines = ["| tasks | z from | probe goal error (cm) | trilateration bound, s' / (s, a, r) rows (cm) | success "
             "| final distance (cm) | policy error given z (cm) | z distance (spreads) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["table"]:
        zd = "n/a" if r["z_distance"] is None else f"{r['z_distance']:.2f}"
        lines.append(f"| {r['split']} ({r['tasks']}) | {r['context']} | {cm(r['probe_error'])} | "
                     f"{cm(r['bound_error'])} / {cm(r['bound_error_rows'])} | {r['success']:.2f} | "
                     f"{cm(r['final_distance'])} | {cm(r.get('policy_error'))} | {zd} |")
    fit = result.get("probe_fit_error")
    lines.append("")
    lines.append(f"Probe fitted on the training tasks' offline-context posteriors (in-sample error "
                 f"{cm(fit)} cm); medians over tasks, success is the mean. Policy error given z: final "
                 f"position to the goal the probe reads from z (a miss with a small probe error is the "
                 f"policy's).")
    return "\n".join(lines)
