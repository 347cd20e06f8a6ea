"""The training phases, top to bottom: offline meta-training, then self-supervised online.

A :class:`Problem` is all the algorithm needs from the outside world: an env factory for a
task family following :mod:`smrl_train.sim.tasks`' protocol, the train/test tasks, and the offline
per-task arrays of the training tasks. The CLI builds it from a config and a dataset; the
tests build one around a toy family.

Run directory (one per phase and method)::

    config.yaml                resolved config (smac section + problem description), at start
    metrics.csv                train/... averages every log interval (+ time/updates_per_s)
    eval_curve.csv             online runs: test-task evaluation every eval_every iterations
    events.out.tfevents.*      the same rows for TensorBoard (x: update count), when installed
    checkpoint.safetensors     latest state (weights, Adam, RNG, online buffers); atomic
    checkpoint.json            its metadata, human-readable
    eval.json                  final meta-test + z diagnostic (written by evaluate_run)

Hooks for the caller: ``loggers`` receive every row the CSV files get
(:class:`smrl_train.smac.logs.MetricsLogger`, as the runner's own TensorBoard writer does), and
``should_stop``, asked between updates (offline) or iterations (online), ends the run early with
a checkpoint, which ``resume`` continues exactly: how a node stops training on a signal without
an exception.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from smrl_train.config_schema import to_dict
from smrl_train.data.recordings import EXPLORE_KIND, POSTERIOR_KIND, PRIOR_KIND
from smrl_train.smac.agent import AdaptiveAgent, EnvPool, Trajectory, derived_seed, seeded_generator
from smrl_train.smac.buffers import MetaBatchSampler, TaskBuffers
from smrl_train.smac.checkpoint import CHECKPOINT, CheckpointError, read_checkpoint, read_meta, save_checkpoint
from smrl_train.smac.config import DEFAULT_VARIANT, EvalConfig, SmacConfig, resolved, smac_from_yaml_dict
from smrl_train.smac.data_parallel import Ranks
from smrl_train.smac.evaluation import (
    RunHook,
    meta_test,
    random_policy_baseline,
    success_metric,
    task_index,
    z_shift_diagnostic,
)
from smrl_train.smac.labelling import Labeller
from smrl_train.smac.logs import CsvLog, DeviceMean, MetricsLogger, tensorboard_logs
from smrl_train.smac.networks import SmacNetworks
from smrl_train.smac.sources import (
    EnvEpisodeSource,
    EpisodeRequest,
    EpisodeSource,
    PolicySpec,
    RecordedSource,
    collection_plan,
)
from smrl_train.smac.trainer import METRICS, MetaBCTrainer, SmacTrainer, build_networks, training_device

ALGOS = ("smac", "meta_bc")
LABELS = ("decoder", "true")
_COLLECT_STREAM = 1_000  # seed-stream tags: each kind of randomness gets its own stream
_LABEL_STREAM = 2_000
_SAMPLER_STREAM = 3_000
_CURVE_STREAM = 4_000
_TEST_STREAM = 5  # the final meta-test's seed: derived_seed(smac.seed, _TEST_STREAM)


class RunError(ValueError):
    """A run directory does not fit the request (names the directory and the reason)."""


@dataclass
class Problem:
    """A task family plus its offline data.

    env_factory: builds a gymnasium env whose ``unwrapped`` follows the task protocol.
    train_tasks / test_tasks: task values with an ``index`` (or positions are used).
    offline: per-task arrays (``TaskArrays``-like) keyed by training task index.
    max_steps: episode length.
    description: plain dict recorded in each run's config.yaml (env config, data path).
    """

    env_factory: Callable[[], Any]
    train_tasks: Sequence[Any]
    test_tasks: Sequence[Any]
    offline: Mapping[int, Any]
    max_steps: int
    description: dict[str, Any] = field(default_factory=dict)
    _env: Any = None
    _pool: EnvPool | None = None

    @property
    def env(self) -> Any:
        if self._env is None:
            self._env = self.env_factory()
        return self._env

    @property
    def pool(self) -> EnvPool:
        """Envs for episodes run side by side (the first is :attr:`env`)."""
        if self._pool is None:
            self._pool = EnvPool(self.env_factory, self.env)
        return self._pool

    def train_by_index(self) -> dict[int, Any]:
        return {task_index(t, i): t for i, t in enumerate(self.train_tasks)}

    def dims(self) -> tuple[int, int]:
        first = self.offline[sorted(self.offline)[0]]
        return int(first.obs.shape[1]), int(first.action.shape[1])


def method_name(algo: str, phase: str, labels: str, variant: str) -> str:
    """Report name of a run: offline_only, smac, oracle for the default recipe, with the
    recipe as a suffix for the others (smac_paper, oracle_return_tuned), or meta_bc."""
    if algo == "meta_bc":
        return "meta_bc"
    base = "offline_only" if phase == "offline" else ("smac" if labels == "decoder" else "oracle")
    return base if variant == DEFAULT_VARIANT else f"{base}_{variant}"


def data_statistics(arrays: Mapping[int, Any]) -> dict[str, Any]:
    """Mean/std of observations (O,) and rewards over all offline transitions."""
    obs = np.concatenate([a.obs for a in arrays.values()])
    rew = np.concatenate([a.reward for a in arrays.values() if a.reward is not None])
    return {"obs_mean": torch.tensor(obs.mean(0), dtype=torch.float32),
            "obs_std": torch.tensor(obs.std(0), dtype=torch.float32),
            "reward_mean": float(rew.mean()), "reward_std": float(rew.std())}


def _apply_statistics(nets: SmacNetworks, cfg: SmacConfig, stats: Mapping[str, Any]) -> None:
    nets.set_statistics(stats["obs_mean"], stats["obs_std"], nets.act_dim, stats["reward_mean"], stats["reward_std"],
                        bool(cfg.network.normalize_inputs), bool(cfg.loss.normalize_decoder_targets))


def observation_entries(problem: Problem, blocks: Sequence[str], key: str) -> list[int]:
    """The observation entries of the named blocks of the env's ``observation_layout``
    ((name, size) pairs in order); ``key`` names the config field in errors.

    Raises:
        RunError: the env declares no layout, or a name is not one of its blocks.
    """
    if not blocks:
        return []
    layout = getattr(problem.env.unwrapped, "observation_layout", None)
    if layout is None:
        raise RunError(f"smac.{key}: the env declares no observation_layout to find "
                       f"{', '.join(blocks)} in; set smac.{key}: []")
    offsets, start = {}, 0
    for name, size in layout:
        offsets[str(name)] = range(start, start + int(size))
        start += int(size)
    unknown = [b for b in blocks if b not in offsets]
    if unknown:
        raise RunError(f"smac.{key}: {', '.join(unknown)} not in the observation layout "
                       f"({', '.join(offsets)})")
    return sorted(i for b in blocks for i in offsets[b])


def _write_config(run_dir: Path, cfg: SmacConfig, problem: Problem, run: dict[str, Any]) -> None:
    text = yaml.safe_dump({"run": run, "problem": problem.description, "smac": to_dict(cfg)}, sort_keys=False)
    (run_dir / "config.yaml").write_text(text)


def _check_fresh_or_resume(run_dir: Path, resume: bool) -> bool:
    """True when resuming from an existing checkpoint; refuses to overwrite a run silently."""
    exists = (run_dir / CHECKPOINT).exists()
    if resume and not exists:
        raise RunError(f"{run_dir}: nothing to resume (no {CHECKPOINT})")
    if exists and not resume:
        raise RunError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --run")
    return resume


def _check_same_config(run_dir: Path, meta: Mapping[str, Any], cfg: SmacConfig) -> None:
    if meta["smac"] != to_dict(cfg):
        raise RunError(f"{run_dir}: the config differs from the checkpoint's; resume with the same config")


def _log(loggers: Sequence[MetricsLogger], step: int, metrics: Mapping[str, float]) -> None:
    for logger in loggers:
        logger.log(step, metrics)


def _progress(total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="upd", disable=not enabled, dynamic_ncols=True,
                mininterval=1.0, smoothing=0.05)


# ---------------------------------------------------------------------------------------
# Offline phase


def train_offline(problem: Problem, cfg: SmacConfig, run_dir: str | Path, *, algo: str = "smac",
                  method: str | None = None, resume: bool = False, progress: bool = True,
                  stop_after: int | None = None, loggers: Sequence[MetricsLogger] = (),
                  should_stop: Callable[[], bool] | None = None, ranks: Ranks | None = None,
                  device: str | torch.device = "cpu") -> Path:
    """Meta-train on the offline data for ``cfg.offline.steps`` updates (or resume a run).

    ``method`` names the run's report row (default: offline_only[_paper] or meta_bc).
    ``stop_after`` ends the loop after that many total updates with a checkpoint, as an
    interruption would (used by tests). ``loggers`` get each metrics.csv row (keyed by the
    update count) and are closed at the end. ``should_stop`` is asked before every update:
    True ends the loop there with a checkpoint, as ``stop_after`` does. A KeyboardInterrupt
    (Ctrl-C on ``smrl train``) checkpoints too and propagates. ``ranks``: data-parallel training
    under torchrun (:mod:`smrl_train.smac.data_parallel`): every rank runs this function, rank
    0 alone writes. ``device``: where the networks, the optimiser state and the update live
    (the data is sampled on the CPU and moved; the checkpoint is saved on the CPU).
    Returns the run directory.
    """
    dev = training_device(device)
    if algo not in ALGOS:
        raise RunError(f"unknown algorithm {algo!r} (expected one of {', '.join(ALGOS)})")
    ranks = ranks if ranks is not None else Ranks()
    if ranks.parallel and algo != "smac":
        raise RunError(f"{algo} trains in one process (data-parallel training is SMAC's)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = _check_fresh_or_resume(run_dir, resume)
    ranks.barrier()  # every rank has seen the run folder before rank 0 writes into it
    obs_dim, act_dim = problem.dims()

    # Setup: buffers, trainer, normalisation statistics baked into the networks.
    buffers = TaskBuffers.from_task_arrays(problem.offline)
    trainer: SmacTrainer | MetaBCTrainer = SmacTrainer(cfg, obs_dim, act_dim, seed=cfg.seed, ranks=ranks, device=dev) \
        if algo == "smac" else MetaBCTrainer(cfg, obs_dim, act_dim, seed=cfg.seed, device=dev)
    _apply_statistics(trainer.nets, cfg, data_statistics(problem.offline))
    trainer.nets.ignore_policy_inputs(observation_entries(problem, cfg.network.policy_ignores or (),
                                                          "network.policy_ignores"))
    sampler = MetaBatchSampler(buffers, seeded_generator(cfg.seed, _SAMPLER_STREAM),
                               context_episodes=int(cfg.offline.context_episodes or 0),
                               context_width=trainer.nets.encoder.context_dim)
    method = method or method_name(algo, "offline", "true", cfg.variant)
    meta = {"kind": "smrl-smac-run", "algo": algo, "phase": "offline", "method": method, "labels": "true",
            "variant": cfg.variant, "seed": cfg.seed, "gradients": cfg.gradients, "smac": to_dict(cfg),
            "obs_dim": obs_dim, "act_dim": act_dim,
            "task_ids": buffers.task_ids, "step": 0, "finished": False, "problem": problem.description}
    if resuming:  # every rank continues from rank 0's checkpoint
        state, old = read_checkpoint(run_dir)
        _check_same_config(run_dir, old, cfg)
        meta["method"] = method or old.get("method", meta["method"])
        trainer.load_state_dict(state["trainer"])
        sampler.generator.set_state(state["sampler_generator"])
        meta.update(step=old["step"], finished=old["finished"])
    logs: list[MetricsLogger] = []
    if ranks.main:
        log = CsvLog(run_dir / "metrics.csv")
        if resuming:
            log.truncate_after(int(meta["step"]))
        else:
            _write_config(run_dir, cfg, problem, {k: meta[k] for k in ("algo", "phase", "method", "variant", "seed")})
        logs = [log, *tensorboard_logs(run_dir, int(meta["step"]) + 1 if resuming else 0), *loggers]

    def checkpoint(finished: bool = False) -> None:
        meta.update(step=trainer.steps, finished=finished)
        if ranks.main:
            save_checkpoint(run_dir, {"trainer": trainer.state_dict(),
                                      "sampler_generator": sampler.generator.get_state()}, meta)

    # Loop: sample a meta-batch, update, log averages, checkpoint.
    o = cfg.offline
    steps, context_size = resolved(o.steps), resolved(o.context_size)
    total = steps if stop_after is None else min(steps, stop_after)
    running = DeviceMean(METRICS if algo == "smac" else MetaBCTrainer.METRICS)
    bar = _progress(steps, trainer.steps, f"offline {method}", progress and ranks.main)
    tick = time.perf_counter()
    try:
        while trainer.steps < total and not (should_stop is not None and should_stop()):
            batch = sampler.sample(o.meta_batch, o.batch_size, context_size)
            running.add(trainer.step_stats(batch))  # read at log rows only
            bar.update(1)
            if trainer.steps % o.log_every == 0:
                now = time.perf_counter()
                row = {**running.pop(), "time/updates_per_s": o.log_every / (now - tick)}
                tick = now
                _log(logs, trainer.steps, row)
                bar.set_postfix(q=f"{row.get('train/q_loss', 0):.3g}", pi=f"{row.get('train/policy_loss', 0):.3g}")
            if trainer.steps % o.checkpoint_every == 0 and trainer.steps < total:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        raise
    finally:
        bar.close()
        for logger in logs:
            logger.close()
    checkpoint(finished=trainer.steps >= steps)
    ranks.barrier()  # rank 0's checkpoint is on disk before any rank goes on (e.g. to resume)
    return run_dir


# ---------------------------------------------------------------------------------------
# Self-supervised online phase


@dataclass
class OnlineState:
    """Everything the online loop carries between iterations."""

    trainer: SmacTrainer
    labeller: Labeller
    rl: TaskBuffers
    explore: TaskBuffers
    sampler: MetaBatchSampler
    iteration: int = 0
    # The networks that act (collection, curve evaluation): the trainer's on the CPU, else a
    # CPU copy refreshed by acting_nets().
    mirror: SmacNetworks | None = None

    def acting_nets(self) -> SmacNetworks:
        """The trained networks on the CPU, where acting (one step at a time) happens: the
        trainer's own when it trains on the CPU, else a copy with its current weights."""
        if self.trainer.device.type == "cpu":
            return self.trainer.nets
        if self.mirror is None:
            self.mirror = build_networks(self.trainer.cfg, self.trainer.nets.obs_dim, self.trainer.nets.act_dim)
            self.mirror.requires_grad_(False).eval()
        self.mirror.load_state_dict(self.trainer.nets.state_dict())
        return self.mirror


def _init_online(problem: Problem, cfg: SmacConfig, offline_state: Mapping[str, Any],
                 ranks: Ranks | None = None, device: str | torch.device = "cpu") -> OnlineState:
    obs_dim, act_dim = problem.dims()
    trainer = SmacTrainer(cfg, obs_dim, act_dim, seed=cfg.seed, ranks=ranks, device=device)
    trainer.load_state_dict(offline_state["trainer"])
    trainer.set_phase("online")
    # Labels always come from the encoder/decoder as they were when the offline phase ended.
    labeller = Labeller(trainer.nets.encoder, trainer.nets.decoder, float(cfg.online.label_pessimism or 0.0))
    rl = TaskBuffers.from_task_arrays(problem.offline)
    explore = TaskBuffers(rl.task_ids, obs_dim, act_dim, capacity=256)
    sampler = MetaBatchSampler(rl, seeded_generator(cfg.seed, _SAMPLER_STREAM, 1), explore,
                               float(resolved(cfg.online.explore_context_fraction)),
                               int(cfg.online.context_episodes or 0),
                               trainer.nets.encoder.context_dim)
    return OnlineState(trainer, labeller, rl, explore, sampler)


def iteration_tasks(cfg: SmacConfig, train_ids: Sequence[int], iteration: int) -> list[int]:
    """The training tasks online iteration ``iteration`` collects on and trains with: a fixed
    function of (seed, iteration), so a robot can record for them before the trainer asks."""
    rng = np.random.default_rng(derived_seed(cfg.seed, _COLLECT_STREAM, iteration))
    ids = np.asarray(sorted(train_ids))
    return rng.choice(ids, size=min(cfg.online.tasks_per_iteration, len(ids)), replace=False).tolist()


def collection_visits(cfg: SmacConfig, train_ids: Sequence[int], first: int, stop: int) -> dict[int, int]:
    """How often each training task is visited by online iterations ``first`` to ``stop - 1``:
    what a robot should record for the next collect-then-train round (``prior_episodes +
    posterior_episodes + explore_episodes`` per visit)."""
    visits = Counter(t for it in range(first, stop) for t in iteration_tasks(cfg, train_ids, it))
    return dict(sorted(visits.items()))


@torch.no_grad()
def collect_iteration(st: OnlineState, source: EpisodeSource, labels: str, cfg: SmacConfig,
                      train_ids: Sequence[int]) -> dict[str, float]:
    """Collect on this iteration's training tasks, label, and add to the task buffers.

    Per task visit: ``prior_episodes`` with z ~ N(0, I) (stochastic policy),
    ``posterior_episodes`` with z ~ q(z | context from the task's buffer), and
    ``explore_episodes`` deterministic prior-z episodes (our recipes); a policy source is asked
    for them by request, a recorded source gives its next as many episodes, each of its recorded
    kind. Rewards: the frozen decoder with z_r from the task's offline context, once per
    trajectory (``decoder``), or the env's (``true``, the oracle).

    An env source with workers (:class:`EnvEpisodeSource`) gets every episode whose latent is
    the prior at once (they depend on no draw of this loop), and a task's posterior episodes
    when the loop reaches the task, their latents drawn where one process draws them: every
    episode is a function of its seed, so the buffers are those of one process.
    """
    on, it = cfg.online, st.iteration
    tasks = iteration_tasks(cfg, train_ids, it)
    nets = st.acting_nets()
    prior = (torch.zeros(1, nets.latent_dim), torch.ones(1, nets.latent_dim))
    agent = AdaptiveAgent(nets.encoder, nets.policy, torch.Generator(), deterministic=False)
    label_gen = seeded_generator(cfg.seed, _LABEL_STREAM, it)
    per_visit = [(PRIOR_KIND, resolved(on.prior_episodes)), (POSTERIOR_KIND, on.posterior_episodes),
                 (EXPLORE_KIND, int(on.explore_episodes or 0))]
    with_rewards = labels == "true"
    counts = {"transitions": 0.0, "episodes": 0.0}
    resample = {PRIOR_KIND: str(on.resample_latent), POSTERIOR_KIND: str(on.resample_latent),
                EXPLORE_KIND: str(cfg.eval.resample_latent)}

    def latent_for(kind: str, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if kind != POSTERIOR_KIND:
            return prior
        context = st.rl.context(row, resolved(on.context_size), label_gen, width=nets.encoder.context_dim)
        return nets.encoder(context)

    def plan_for(tid: int, latent: Callable[[str], tuple[torch.Tensor, torch.Tensor]]) -> list[EpisodeRequest]:
        return collection_plan(per_visit, latent, (cfg.seed, _COLLECT_STREAM + 1, it, tid), resample)

    pooled = isinstance(source, EnvEpisodeSource) and source.parallel
    pending: dict[int, list[tuple[EpisodeRequest, Future[Trajectory] | None]]] = {}
    if isinstance(source, EnvEpisodeSource) and pooled:
        source.set_weights(nets.policy.state_dict())
        for tid in tasks:  # the prior-latent episodes of every task, now; posterior ones wait
            pending[tid] = [(req, None if req.kind == POSTERIOR_KIND else source.submit(tid, req, with_rewards))
                            for req in plan_for(tid, lambda kind: prior)]
    for tid in tasks:
        row = torch.tensor([st.rl.row_of[tid]])
        if isinstance(source, RecordedSource):
            trajectories = source.take(tid, sum(n for _, n in per_visit), with_rewards)
        elif isinstance(source, EnvEpisodeSource) and pooled:
            futures = []
            for req, future in pending.pop(tid):
                if future is None:
                    mu, var = latent_for(req.kind, row)
                    future = source.submit(tid, dataclasses.replace(req, mu=mu, var=var), with_rewards)
                futures.append(future)
            trajectories = [f.result() for f in futures]  # a worker's exception is raised here
        else:
            trajectories = source.collect(tid, plan_for(tid, functools.partial(latent_for, row=row)), agent,
                                          with_rewards)
        for traj in trajectories:
            if labels == "decoder":
                ctx = st.rl.context(row, on.label_context_size, label_gen, offline_only=True,
                                    width=st.labeller.encoder.context_dim)[0]
                reward = st.labeller.label(traj.obs, traj.action, ctx, label_gen)
            else:
                assert traj.reward is not None
                reward = traj.reward
            st.rl.add(tid, traj.obs, traj.action, reward, traj.next_obs, traj.terminated)
            if traj.kind == EXPLORE_KIND:
                st.explore.add(tid, traj.obs, traj.action, reward, traj.next_obs, traj.terminated)
            counts["transitions"] += len(traj)
            counts["episodes"] += 1
    return counts


def train_online(problem: Problem, run_dir: str | Path, *, offline_run: str | Path | None = None,
                 labels: str = "decoder", cfg: SmacConfig | None = None, source: EpisodeSource | None = None,
                 method: str | None = None, resume: bool = False, progress: bool = True,
                 stop_after_iterations: int | None = None, loggers: Sequence[MetricsLogger] = (),
                 should_stop: Callable[[], bool] | None = None, ranks: Ranks | None = None,
                 device: str | torch.device = "cpu", workers: int = 1) -> Path:
    """The self-supervised phase from a finished offline run (or resume an online run).

    ``method`` names the run's report row (default from labels and variant).
    ``labels="decoder"`` is SMAC (the source is asked for reward-free episodes); ``"true"`` is
    the online oracle. ``cfg`` defaults to the offline run's config; its network section must
    match. ``source`` defaults to the problem's env. ``stop_after_iterations`` ends the run
    after that many iterations in all, with a checkpoint. ``loggers`` get each metrics.csv and
    eval_curve.csv row (keyed by the iteration) and are closed at the end. ``should_stop`` is
    asked before every iteration (an iteration is never cut short: only its end can be
    resumed): True ends the run there with a checkpoint. ``ranks``: data-parallel training
    under torchrun; every rank collects, labels and evaluates the same episodes (so their
    buffers stay the same), shares the updates, and rank 0 alone writes. ``device``: where the
    updates run (acting and labelling stay on the CPU). ``workers``: processes collecting the
    env source's episodes (the problem's env, when ``source`` is None); the same episodes as
    one process's.
    """
    dev = training_device(device)
    if workers < 1:
        raise RunError(f"workers must be >= 1, got {workers}")
    if workers > 1 and source is not None:
        raise RunError(f"{workers} collection workers act in the sim; a given episode source collects by itself")
    if labels not in LABELS:
        raise RunError(f"labels must be one of {', '.join(LABELS)}, got {labels!r}")
    ranks = ranks if ranks is not None else Ranks()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = _check_fresh_or_resume(run_dir, resume)
    ranks.barrier()  # every rank has seen the run folder before rank 0 writes into it
    if resuming:
        state, old = read_checkpoint(run_dir)
        cfg = smac_from_yaml_dict(old["smac"]) if cfg is None else cfg
        _check_same_config(run_dir, old, cfg)
        if old["labels"] != labels:
            raise RunError(f"{run_dir}: the run uses --labels {old['labels']}, not {labels}")
        offline_run = old["parent"]
        method = method or old.get("method")
    else:
        if offline_run is None:
            raise RunError("the online phase needs --from OFFLINE_RUN")
        state, parent = read_checkpoint(offline_run)
        if parent.get("algo") != "smac" or parent.get("phase") != "offline":
            raise RunError(f"{offline_run}: not an offline SMAC run")
        if not parent.get("finished"):
            raise RunError(f"{offline_run}: the offline run has not finished (resume it first)")
        parent_cfg = smac_from_yaml_dict(parent["smac"])
        cfg = parent_cfg if cfg is None else cfg
        if cfg.network != parent_cfg.network:
            raise RunError(f"{offline_run}: its network config differs from the one given")
    assert cfg is not None
    st = _init_online(problem, cfg, state, ranks, dev)
    method = method or method_name("smac", "online", labels, cfg.variant)
    meta: dict[str, Any] = {
        "kind": "smrl-smac-run", "algo": "smac", "phase": "online", "method": method, "labels": labels,
        "variant": cfg.variant, "seed": cfg.seed, "gradients": cfg.gradients, "smac": to_dict(cfg),
        "obs_dim": problem.dims()[0],
        "act_dim": problem.dims()[1], "task_ids": st.rl.task_ids, "parent": str(offline_run), "iteration": 0,
        "step": st.trainer.steps, "finished": False, "problem": problem.description, "source": "env"}
    log = CsvLog(run_dir / "metrics.csv", key="iteration")
    curve = CsvLog(run_dir / "eval_curve.csv", key="iteration")
    if source is None:
        source = EnvEpisodeSource(problem.pool, problem.train_by_index(), problem.max_steps, workers,
                                  problem.env_factory, PolicySpec(cfg, *problem.dims()))
    else:
        meta["source"] = type(source).__name__
    if resuming:
        st.trainer.load_state_dict(state["trainer"])
        st.labeller.load_state_dict(state["labeller"])
        st.rl.load_online_part(state["rl"])
        st.explore.load_online_part(state["explore"])
        st.sampler.generator.set_state(state["sampler_generator"])
        st.iteration = int(old["iteration"])
        source.load_state(old.get("source_state", {}))
        meta.update(iteration=st.iteration, step=st.trainer.steps, finished=old["finished"],
                    curve_cpu_s=float(old.get("curve_cpu_s", 0.0)))
        if ranks.main:
            log.truncate_after(st.iteration)
            curve.truncate_after(st.iteration)
    elif ranks.main:
        _write_config(run_dir, cfg, problem, {k: meta[k] for k in ("algo", "phase", "method", "labels", "variant",
                                                                   "seed", "parent")})
    board = tensorboard_logs(run_dir, st.trainer.steps + 1 if resuming else 0) if ranks.main else []
    logs, curve_logs = ([log, *board, *loggers], [curve, *board, *loggers]) if ranks.main else ([], [])

    def checkpoint() -> None:
        meta.update(iteration=st.iteration, step=st.trainer.steps, finished=st.iteration >= on.iterations,
                    source_state=source.state())
        if not ranks.main:
            return
        save_checkpoint(run_dir, {"trainer": st.trainer.state_dict(), "labeller": st.labeller.state_dict(),
                                  "rl": st.rl.online_part(), "explore": st.explore.online_part(),
                                  "sampler_generator": st.sampler.generator.get_state()}, meta)

    def curve_point() -> None:
        cpu0 = time.process_time()
        tasks = list(problem.test_tasks)
        if cfg.eval.curve_tasks:
            tasks = tasks[: cfg.eval.curve_tasks]
        acting = st.acting_nets()
        res = meta_test(problem.pool, acting.encoder, acting.policy, tasks,
                        dataclasses.replace(cfg.eval, runs_per_task=cfg.eval.curve_runs_per_task),
                        derived_seed(cfg.seed, _CURVE_STREAM),
                        problem.max_steps)
        _log(curve_logs, st.iteration, {"step": st.trainer.steps, "eval/final_return": res["final_return"],
                                         "eval/success_rate": res["success_rate"]})
        # What the curve costs, kept with the checkpoint (smrl experiment's cost.json reads it).
        meta["curve_cpu_s"] = round(meta.get("curve_cpu_s", 0.0) + time.process_time() - cpu0, 2)

    # Loop: collect and label, then update actor and critic; evaluate and checkpoint.
    on = cfg.online
    last = on.iterations if stop_after_iterations is None else min(on.iterations, stop_after_iterations)
    train_ids = st.rl.task_ids
    bar = _progress(on.iterations * on.updates_per_iteration, st.iteration * on.updates_per_iteration,
                    f"online {method}", progress and ranks.main)
    try:
        if st.iteration == 0 and on.eval_every and not resuming:
            curve_point()  # the starting point: the offline agent
        while st.iteration < last and not (should_stop is not None and should_stop()):
            t0 = time.perf_counter()
            counts = collect_iteration(st, source, labels, cfg, train_ids)
            t1 = time.perf_counter()
            running = DeviceMean(METRICS)
            for _ in range(on.updates_per_iteration):
                running.add(st.trainer.step_stats(st.sampler.sample(on.meta_batch, on.batch_size,
                                                                    resolved(on.context_size))))
                bar.update(1)
            t2 = time.perf_counter()
            st.iteration += 1
            row = {"step": st.trainer.steps, **running.pop(),
                   "data/online_transitions": float((st.rl.size - st.rl.offline_size).sum()),
                   "data/collected": counts["transitions"], "time/collect_s": t1 - t0,
                   "time/updates_per_s": on.updates_per_iteration / max(t2 - t1, 1e-9)}
            _log(logs, st.iteration, row)
            bar.set_postfix(it=st.iteration, q=f"{row.get('train/q_loss', 0):.3g}")
            if on.eval_every and (st.iteration % on.eval_every == 0 or st.iteration == on.iterations):
                curve_point()
            if st.iteration % on.checkpoint_every == 0 or st.iteration == last:
                checkpoint()
    finally:
        bar.close()
        if isinstance(source, EnvEpisodeSource):
            source.close()
        for logger in [*logs, curve]:
            logger.close()
    checkpoint()
    ranks.barrier()  # rank 0's checkpoint is on disk before any rank goes on
    return run_dir


# ---------------------------------------------------------------------------------------
# Evaluation of a finished run


def load_networks(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SmacNetworks, dict[str, Any]]:
    """The trained networks of a run (encoder, policy, critics, decoder) on ``device``, and its
    metadata.

    This is what ``smrl_train.export.onnx_export`` builds its ONNX graphs from: ``nets.encoder`` maps a
    context (T, C, O + A + 1) to the posterior (T, L) x 2 and ``nets.policy.act_mean(obs, z)``
    gives the deterministic action; both carry their normalisation buffers.
    """
    state, meta = read_checkpoint(run_dir)
    cfg = smac_from_yaml_dict(meta["smac"])
    nets = build_networks(cfg, int(meta["obs_dim"]), int(meta["act_dim"]), detach_policy_z=meta["algo"] == "smac")
    nets.load_state_dict(state["trainer"]["nets"])
    nets.requires_grad_(False).eval()
    return nets.to(device), meta


def evaluate_run(problem: Problem, run_dir: str | Path, *, progress: bool = True, diagnostic: bool = True,
                 out_name: str = "eval.json", eval_cfg: EvalConfig | None = None,
                 on_run: RunHook | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Meta-test on the problem's test tasks (+ the z diagnostic on training tasks), the
    networks on ``device``; writes ``out_name`` in the run dir. ``eval_cfg`` replaces the run's
    evaluation settings; ``on_run`` sees the meta-test's episodes
    (:func:`smrl_train.smac.evaluation.meta_test`)."""
    run_dir = Path(run_dir)
    nets, meta = load_networks(run_dir, device)
    cfg = smac_from_yaml_dict(meta["smac"])
    if eval_cfg is not None:
        cfg = dataclasses.replace(cfg, eval=eval_cfg)
    env = problem.env
    # The success metric the scores use, resolved against the family and recorded with them.
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, success=success_metric(env, cfg.eval)))
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "method": meta["method"], "algo": meta["algo"], "phase": meta["phase"], "labels": meta["labels"],
        "variant": meta["variant"], "seed": meta["seed"], "updates": meta.get("step"),
        # The gradient path that trained the run (its parent's too, for an online run).
        "gradients": meta.get("gradients", cfg.gradients),
        "iterations": meta.get("iteration"), "finished": meta.get("finished"), "eval": to_dict(cfg.eval),
        "test": meta_test(problem.pool, nets.encoder, nets.policy, problem.test_tasks, cfg.eval,
                          derived_seed(cfg.seed, _TEST_STREAM), problem.max_steps, progress, on_run),
        "random_policy": random_policy_baseline(env, problem.test_tasks, derived_seed(cfg.seed, 6), problem.max_steps,
                                                str(cfg.eval.success)),
    }
    if diagnostic and cfg.eval.diagnostic_tasks:
        buffers = TaskBuffers.from_task_arrays(problem.offline)
        tasks = list(problem.train_tasks)[: cfg.eval.diagnostic_tasks]
        result["diagnostic"] = z_shift_diagnostic(problem.pool, nets.encoder, nets.policy, tasks, buffers, cfg.eval,
                                                  derived_seed(cfg.seed, 8), problem.max_steps, progress)
    result["eval_seconds"] = time.perf_counter() - t0
    (run_dir / out_name).write_text(json.dumps(result, indent=1) + "\n")
    return result


def protocol_episodes(problem: Problem, run_dir: str | Path, tasks: Sequence[Any]) -> list[list[Trajectory]]:
    """The first meta-test run on each of ``tasks`` (held-out tasks with their indices): its
    exploration episodes, then the scored one. The same episodes :func:`evaluate_run` scores
    first, with its seeds, recomputed without writing anything (for pictures)."""
    nets, meta = load_networks(run_dir)
    cfg = smac_from_yaml_dict(meta["smac"])
    episodes: list[list[Trajectory]] = []
    meta_test(problem.pool, nets.encoder, nets.policy, tasks, dataclasses.replace(cfg.eval, runs_per_task=1),
              derived_seed(cfg.seed, _TEST_STREAM), problem.max_steps,
              on_run=lambda pos, task, run, trajs: episodes.append(trajs))
    return episodes


def diagnose_run(problem: Problem, run_dir: str | Path, *, n_tasks: int = 20, episodes: Sequence[int] = (1, 2, 4),
                 progress: bool = True, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``smrl diagnose``: probe error, trilateration bound and success with z from offline
    context and from 1, 2, 4 exploration episodes (:mod:`smrl_train.smac.diagnose`), the
    networks on ``device``; writes ``diagnose.json`` and ``diagnose.md`` in the run dir."""
    from smrl_train.smac.diagnose import diagnose, format_table

    run_dir = Path(run_dir)
    nets, meta = load_networks(run_dir, device)
    cfg = smac_from_yaml_dict(meta["smac"])
    t0 = time.perf_counter()
    result = diagnose(problem.pool, nets.encoder, nets.policy, problem.train_tasks, problem.test_tasks,
                      TaskBuffers.from_task_arrays(problem.offline), cfg.eval, derived_seed(cfg.seed, 12),
                      problem.max_steps, n_tasks=n_tasks, episodes=episodes, progress=progress)
    result.update(method=meta["method"], seed=meta["seed"], variant=meta["variant"], updates=meta.get("step"),
                  eval=to_dict(cfg.eval), seconds=time.perf_counter() - t0)
    (run_dir / "diagnose.json").write_text(json.dumps(result, indent=1) + "\n")
    (run_dir / "diagnose.md").write_text(f"# diagnose {run_dir.name} ({meta['method']}, seed {meta['seed']})\n\n"
                                         + format_table(result) + "\n")
    return result


def run_meta(run_dir: str | Path) -> dict[str, Any]:
    """A run's checkpoint metadata (raises RunError when there is none)."""
    try:
        return read_meta(run_dir)
    except CheckpointError as exc:
        raise RunError(str(exc)) from None
