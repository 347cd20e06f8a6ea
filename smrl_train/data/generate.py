"""Generate a reward-labelled multi-task offline dataset with behaviour policies of mixed competence,
for our arm families and for any external family with an ``expert_policy`` hook (smrl_train.families).

The paper's data came from a partly trained PEARL learner; here scripted experts with several
noise levels, experts heading for the wrong goal, and uniform random actions stand in for it
(``data.behaviours`` in the config). Expert-only data would let the reward decoder predict
rewards from states alone and collapse the task encoder, so the mix matters.

Every episode's randomness derives from (data.seed, task index, episode index), so the same
seed gives byte-identical files regardless of order or interruption.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import smrl_train
from smrl_train.child_processes import end_with
from smrl_train.config import SmrlConfig
from smrl_train.config_schema import ConfigError, to_dict
from smrl_train.data.store import EpisodeStore, StoreError, episode_filename
from smrl_train.families.factory import family_env
from smrl_train.sim.envs import ENV_IDS, ArmTaskEnv
from smrl_train.sim.tasks import Task, split_tasks


def store_manifest(env: Any, cfg: SmrlConfig, *, reward_labelled: bool,
                   tasks: dict[str, list[Task]], generator: dict[str, Any]) -> dict[str, Any]:
    """The manifest (schema) of a store holding episodes of ``env`` (``family_env(cfg)``).

    An arm family's carries the robot fields (arm, joint names, observation layout, the action's
    per-joint scale, control rate); an external family's (smrl_train.families) names the family
    by its ``env.family`` and describes the action box, plus its observation layout if it has one.
    """
    config = to_dict(cfg)
    config.pop("root", None)  # machine-specific; would break byte-identical datasets
    if not config["env"]["options"]:
        del config["env"]["options"]  # none: the manifest reads as it did before options existed
    common = {
        "obs_dim": int(env.observation_space.shape[0]),
        "act_dim": int(env.action_space.shape[0]),
        "episode_length": cfg.env.episode_length,
        "reward_labelled": reward_labelled,
        "tasks": {split: [t.as_dict() for t in ts] for split, ts in tasks.items()},
        "generator": generator,
        "config": config,
    }
    if not isinstance(env, ArmTaskEnv):
        del config["arm"]  # describes no part of an external family
        space = env.action_space
        manifest = {"family": cfg.env.family, "env_id": cfg.env.family,
                    "action": {"type": "box", "bounds": [_bound(space.low), _bound(space.high)]}, **common}
        layout = getattr(env, "observation_layout", None)
        if layout:
            manifest["observation_layout"] = [[str(name), int(size)] for name, size in layout]
        return manifest
    return {
        "family": env.family,
        "env_id": ENV_IDS[env.family],
        "arm": {"name": env.arm.name, "urdf": cfg.arm.urdf, "ee_link": cfg.arm.ee_link,
                "urdf_sha256": env.arm.urdf_sha256},
        "joint_names": list(env.joint_names),
        "observation_layout": [[name, size] for name, size in env.observation_layout],
        "action": {"type": "joint_position_delta", "bounds": [-1.0, 1.0],
                   "max_step": [round(float(s), 9) for s in env.max_step]},
        "control_hz": cfg.env.control_hz,
        **common,
    }


def _bound(values: np.ndarray) -> float | list[float]:
    """One action bound: a number when every dimension shares it, else one per dimension."""
    flat = [float(v) for v in np.asarray(values).ravel()]
    return flat[0] if len(set(flat)) == 1 else flat


def manifest_config(manifest: dict[str, Any], where: str) -> SmrlConfig:
    """The config a store at ``where`` was written with (its manifest's ``config``, relative
    paths resolved against the package root), checked against the store like a given one."""
    from smrl_train.config_schema import from_dict

    data = manifest.get("config")
    if not isinstance(data, dict):
        raise StoreError(f"{where}: the manifest carries no config; pass --config")
    try:
        cfg = from_dict(SmrlConfig, {k: v for k, v in data.items() if k != "smac"})
    except ConfigError as exc:
        raise StoreError(f"{where}: the manifest's config: {exc}; pass --config") from None
    problems = config_mismatches(cfg, manifest)
    if problems:
        raise StoreError(f"{where}: the manifest's config does not describe its episodes ({'; '.join(problems)}); "
                         "pass --config")
    return cfg


def config_mismatches(cfg: SmrlConfig, manifest: dict[str, Any]) -> list[str]:
    """Why a store with ``manifest`` does not hold episodes of the arm and family ``cfg``
    describes (empty: it does). Each entry names the key and both values: the family, the
    URDF's hash, the joint names and their order, the observation layout, the action's scale,
    and the control rate (not the episode length: the config's is the meta-test's horizon,
    and data of shorter episodes is fine). The one check the CLI and the nodes make before
    a config and a dataset (or a recording) are used together."""
    from smrl_train.data.recordings import schema_mismatches

    mine = store_manifest(family_env(cfg), cfg, reward_labelled=False, tasks={}, generator={})
    problems = schema_mismatches(mine, manifest, ("config", "data"))
    theirs = (manifest.get("arm") or {}).get("urdf_sha256")
    if theirs is not None and "arm" in mine and theirs != mine["arm"]["urdf_sha256"]:
        problems.append(f"arm.urdf_sha256: config {mine['arm']['urdf_sha256'][:12]} ({cfg.arm.urdf}) != data "
                        f"{str(theirs)[:12]} ({(manifest.get('arm') or {}).get('urdf')})")
    return problems


def rollout(env: Any, policy: Callable[[np.ndarray], np.ndarray], seed: int,
            episode_length: int) -> dict[str, np.ndarray]:
    """One episode of ``policy`` on the env's current task, its actions clipped to the action
    space; arrays as the store wants them (per-step timestamps from an arm's simulation clock)."""
    clock = env.sim if isinstance(env, ArmTaskEnv) else None
    low, high = env.action_space.low, env.action_space.high
    obs, _ = env.reset(seed=seed)
    keys = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "success")
    rows: dict[str, list[Any]] = {k: [] for k in keys + (("timestamp",) if clock else ())}
    for t in range(episode_length):
        action = np.clip(policy(obs), low, high).astype(np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        truncated = bool(truncated) or t == episode_length - 1
        for key, value in (("obs", obs), ("action", action), ("reward", reward), ("next_obs", next_obs),
                           ("terminated", terminated), ("truncated", truncated), ("success", info["success"])):
            rows[key].append(value)
        if clock:
            rows["timestamp"].append(clock.time)
        obs = next_obs
        if terminated or truncated:
            break
    return {k: np.asarray(v) for k, v in rows.items()}


def generate_dataset(cfg: SmrlConfig, out: str | Path, progress: bool = True, workers: int = 1) -> EpisodeStore:
    """Write the offline dataset of ``cfg`` to ``out``; returns the store.

    Episodes already in ``out`` (from an interrupted run with the same config) are kept and
    skipped, so re-running finishes the job. ``workers`` > 1 simulates the tasks in that many
    processes, each writing its own episodes into the store: every episode's randomness
    derives from (data.seed, task, episode), so the files are byte-identical to one worker's.

    Any family (smrl_train.families): the behaviours come from its ``expert_policy`` hook
    (our arms' is the scripted Jacobian expert) and ``random`` from its action space.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    env = family_env(cfg)
    scripted = sorted({b.kind for b in cfg.data.behaviours} - {"random"})
    if scripted and not callable(getattr(env, "expert_policy", None)):
        raise ConfigError(f"data.behaviours: {cfg.env.family} has no expert_policy(task, noise, rng) hook, so only "
                          f"'random' episodes can be generated, not {', '.join(scripted)}")
    train, test = split_tasks(env, cfg.tasks.n_train, cfg.tasks.n_test, cfg.tasks.seed)
    behaviours = [to_dict(b) for b in cfg.data.behaviours]
    generator = {"name": "smrl data generate", "seed": cfg.data.seed, "behaviours": behaviours,
                 "smrl_version": smrl_train.__version__}
    store = EpisodeStore.create(out, store_manifest(env, cfg, reward_labelled=True,
                                                    tasks={"train": train, "test": test}, generator=generator))
    done = {p.name for p in store.episode_paths()}
    # Each task's episode i follows behaviour number kinds[i]. One job per task: its episodes
    # still to write, as (behaviour number, episode index).
    kinds = [b for b, behaviour in enumerate(cfg.data.behaviours) for _ in range(behaviour.episodes)]
    jobs = []
    for task in train:
        todo = [(b, i) for i, b in enumerate(kinds) if episode_filename(task.index, i) not in done]
        if todo:
            jobs.append((task, todo))
    total = len(kinds) * len(train)
    name = getattr(env, "family", cfg.env.family)
    bar = tqdm(total=total, initial=total - sum(len(t) for _, t in jobs), desc=f"generate {name}",
               unit="ep", disable=not progress)
    if workers == 1 or len(jobs) <= 1:
        writer = _TaskWriter(cfg, store.path, env)
        for task, todo in jobs:
            bar.update(writer.write(task, todo))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=_start_worker, initargs=(cfg, str(store.path), os.getpid())) as pool:
            for future in as_completed([pool.submit(_worker_write, task, todo) for task, todo in jobs]):
                bar.update(future.result())  # a worker's exception is raised here
    bar.close()
    return EpisodeStore.open(store.path)


class _TaskWriter:
    """Writes the behaviour episodes of one task at a time into a store (one per process)."""

    def __init__(self, cfg: SmrlConfig, store_path: str | Path, env: Any = None) -> None:
        self.cfg = cfg
        self.env = env if env is not None else family_env(cfg)
        self.store = EpisodeStore.open(store_path)

    def write(self, task: Task, todo: list[tuple[int, int]]) -> int:
        """Write episodes ``todo`` = [(behaviour number, episode index)] of ``task``; returns
        how many."""
        cfg, env = self.cfg, self.env
        for b, index in todo:
            behaviour = cfg.data.behaviours[b]
            rng = np.random.default_rng([cfg.data.seed, task.index, index])
            env.set_task(task)
            followed = task
            if behaviour.kind in ("wrong_goal", "corrected"):
                # Another task of the same family: competent behaviour for the wrong task.
                followed = env.sample_tasks(1, int(rng.integers(2**31)))[0]
            # "corrected" follows the true task from half the episode on.
            switch = cfg.env.episode_length // 2 if behaviour.kind == "corrected" else cfg.env.episode_length
            policy = _behaviour_policy(env, behaviour.kind, behaviour.noise, followed, task, switch, rng)
            arrays = rollout(env, policy, seed=int(rng.integers(2**31)), episode_length=cfg.env.episode_length)
            meta: dict[str, Any] = {"behaviour": behaviour.kind, "noise": behaviour.noise,
                                    "goal_followed": [float(g) for g in followed.goal]}
            if behaviour.kind == "corrected":
                meta["true_goal_from_step"] = switch
            self.store.write_episode(task.index, index, arrays, meta=meta)
        return len(todo)


_WORKER: _TaskWriter | None = None


def _start_worker(cfg: SmrlConfig, store_path: str, parent: int) -> None:
    global _WORKER
    end_with(parent)  # a killed `smrl data generate` stops its workers too (their episodes are atomic)
    _WORKER = _TaskWriter(cfg, store_path)


def _worker_write(task: Task, todo: list[tuple[int, int]]) -> int:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.write(task, todo)


def _behaviour_policy(env: Any, kind: str, noise: float, followed: Task, true_task: Task, switch: int,
                      rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """The action function of one behaviour episode: uniform actions of the action space
    ("random"), or the family's expert for ``followed`` for the first ``switch`` steps and for
    ``true_task`` after, with noise ``noise``; all randomness from ``rng``."""
    if kind == "random":
        space = env.action_space
        low, high = space.low.astype(float), space.high.astype(float)
        return lambda obs: rng.uniform(low, high, size=space.shape)
    first = env.expert_policy(followed, noise, rng)
    then = env.expert_policy(true_task, noise, rng) if kind == "corrected" else first
    step = 0

    def policy(obs: np.ndarray) -> np.ndarray:
        nonlocal step
        act = first if step < switch else then
        step += 1
        return np.asarray(act(obs))

    return policy


def dataset_summary(store: EpisodeStore) -> dict[str, Any]:
    """Counts and return statistics of a store, for ``smrl data info``."""
    m = store.manifest
    per_task: dict[int, list[float]] = {}
    successes: list[bool] = []
    behaviours: dict[str, list[float]] = {}
    transitions = 0
    for ep in store.iter_episodes():
        transitions += len(ep)
        if m["reward_labelled"]:
            ret = float(ep.arrays["reward"].sum())
            per_task.setdefault(ep.task_index, []).append(ret)
            successes.append(bool(ep.arrays["success"][-1]))
            behaviours.setdefault(str(ep.meta.get("behaviour", "?")), []).append(ret)
        else:
            per_task.setdefault(ep.task_index, []).append(float("nan"))
    returns = np.array([r for rs in per_task.values() for r in rs])
    return {
        "family": m["family"], "arm": m.get("arm", {}).get("name"), "reward_labelled": m["reward_labelled"],
        "tasks": len(per_task), "episodes": int(returns.size), "transitions": transitions,
        "return_mean": float(np.mean(returns)) if m["reward_labelled"] and returns.size else None,
        "return_std": float(np.std(returns)) if m["reward_labelled"] and returns.size else None,
        "return_min": float(np.min(returns)) if m["reward_labelled"] and returns.size else None,
        "return_max": float(np.max(returns)) if m["reward_labelled"] and returns.size else None,
        "final_success_rate": float(np.mean(successes)) if successes else None,
        "by_behaviour": {k: {"episodes": len(v), "return_mean": float(np.mean(v))}
                         for k, v in sorted(behaviours.items())},
        "stale_temp_files": len(store.stale_temp_files()),
    }
