"""Episodes stepped side by side (one env per run, one batched policy forward per step) are the
episodes of the per-task protocol: each run alone, one after the other, gives the same arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from smrl_train.sim.envs import ArmTaskEnv
from smrl_train.sim.tasks import split_tasks
from smrl_train.smac import evaluation
from smrl_train.smac.agent import AdaptiveAgent, EnvPool, Trajectory, act, derived_seed, run_episodes, seeded_generator
from smrl_train.smac.buffers import TaskBuffers
from smrl_train.smac.config import EvalConfig, NetworkConfig
from smrl_train.smac.diagnose import diagnose
from smrl_train.smac.evaluation import meta_test
from smrl_train.smac.sources import EnvEpisodeSource, EpisodeRequest
from smrl_train.smac.trainer import build_networks

from conftest import small_config
from smac_helpers import tiny_config

torch.set_num_threads(1)
STEPS = 15


@pytest.fixture(scope="module")
def reach() -> dict:
    """The reach arm with short episodes, 4 training and 3 held-out tasks, the default recipe's
    network shapes (untrained), and random offline rows for the training tasks."""
    cfg = small_config("reach", episode_length=STEPS)
    env = ArmTaskEnv(cfg)
    train, test = split_tasks(env, 4, 3, 0)
    rng = np.random.default_rng(0)
    arrays = {}
    for t in train:
        env.set_task(t)
        obs, _ = env.reset(seed=t.index)
        rows = []
        for _ in range(2 * STEPS):
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            nxt, reward, *_ = env.step(action)
            rows.append((obs, action, reward, nxt))
            obs = nxt
        o, a, r, n = (np.asarray(c) for c in zip(*rows))
        arrays[t.index] = type("A", (), dict(obs=o, action=a, reward=r, next_obs=n, terminated=np.zeros(len(o), bool),
                                              truncated=np.tile([False] * (STEPS - 1) + [True], 2)))()
    smac = tiny_config("success_tuned", network=dataclasses.replace(NetworkConfig(), policy_ignores=()))
    nets = build_networks(smac, env.observation_space.shape[0], env.action_space.shape[0], seed=0)
    return {"cfg": cfg, "env": env, "train": train, "test": test, "nets": nets, "arrays": arrays,
            "pool": EnvPool(lambda: ArmTaskEnv(cfg), env)}


def _same(a: Trajectory, b: Trajectory) -> None:
    for f in ("obs", "action", "next_obs", "reward", "terminated", "truncated"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert (a.success, a.success_any, a.final_distance, a.kind) == (b.success, b.success_any, b.final_distance, b.kind)


@pytest.mark.parametrize("deterministic", [True, False])
def test_each_agents_actions_are_those_of_a_batch_of_one(reach: dict, deterministic: bool) -> None:
    """The batched forward gives every row the bits of the policy run on that row alone (a
    plain matrix product over the rows would not: about 1e-7 apart)."""
    nets = reach["nets"]
    obs = np.random.default_rng(1).normal(size=(20, nets.policy.obs_dim)).astype(np.float32)

    def agents(n: int) -> list[AdaptiveAgent]:
        out = [AdaptiveAgent(nets.encoder, nets.policy, seeded_generator(7, i), deterministic, "step")
               for i in range(n)]
        for a in out:
            a.begin_episode()
        return out

    alone = []
    with torch.no_grad():
        for i, a in enumerate(agents(20)):  # what an agent acting alone computed before
            mean, log_std = nets.policy(torch.from_numpy(obs[i:i + 1]), a.latent())
            action = torch.tanh(mean) if deterministic else nets.policy.sample(mean, log_std, a.generator)[0]
            alone.append(action.numpy())
    for n in (1, 2, 7, 8, 9, 20):
        assert np.array_equal(act(agents(n), obs[:n]), np.concatenate(alone[:n])), n


def test_meta_test_side_by_side_is_the_per_task_protocol(reach: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    nets, pool, tasks = reach["nets"], reach["pool"], reach["test"]
    cfg = EvalConfig(runs_per_task=2, exploration_episodes=2, resample_latent="step", scored_latent="sample")
    seen: list[tuple[int, int, list[Trajectory]]] = []
    together = meta_test(pool, nets.encoder, nets.policy, tasks, cfg, 3, STEPS,
                         on_run=lambda pos, task, run, trajs: seen.append((pos, run, trajs)))
    assert [(pos, run) for pos, run, _ in seen] == [(p, r) for p in range(3) for r in range(2)]
    # The protocol one run at a time in one env, as the evaluator ran it before runs went side by side.
    env = reach["env"]
    for pos, run, trajs in seen:
        env.set_task(tasks[pos])
        agent = AdaptiveAgent(nets.encoder, nets.policy, seeded_generator(3, 7_000, tasks[pos].index, run), True,
                              "step")
        parts = (3, 7_001, tasks[pos].index, run)
        mine = [run_episodes([env], [agent], [derived_seed(*parts, e)], STEPS, True, "explore")[0] for e in range(2)]
        agent.use_posterior(torch.from_numpy(np.concatenate([t.context(width=nets.encoder.context_dim) for t in mine])),
                            "sample")
        mine += run_episodes([env], [agent], [derived_seed(*parts, 2)], STEPS, True, "final")
        for a, b in zip(trajs, mine, strict=True):
            _same(a, b)
    # Each task alone, and the runs in pieces of 4 (a piece splits a task's runs): the same rows.
    alone = [meta_test(pool, nets.encoder, nets.policy, [t], cfg, 3, STEPS)["tasks"][0] for t in tasks]
    assert alone == together["tasks"]
    monkeypatch.setattr(evaluation, "LOCKSTEP_RUNS", 4)
    assert meta_test(pool, nets.encoder, nets.policy, tasks, cfg, 3, STEPS) == together


def test_diagnose_side_by_side_gives_each_task_its_own_rows(reach: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    nets, pool = reach["nets"], reach["pool"]
    buffers = TaskBuffers.from_task_arrays(reach["arrays"])

    def run(n: int) -> list[dict]:
        return diagnose(pool, nets.encoder, nets.policy, reach["train"], reach["test"], buffers,
                        EvalConfig(resample_latent="episode", scored_latent="mean"), 5,
                        STEPS, n_tasks=n, episodes=(1, 2))["rows"]

    first = reach["train"][0].index, reach["test"][0].index
    every = run(3)
    assert len(every) == 3 * 3 + 3 * 2
    mine = [r for r in every if r["task"] == first[r["split"] == "test"]]
    assert run(1) == mine
    monkeypatch.setattr(evaluation, "LOCKSTEP_RUNS", 2)
    assert run(3) == every


def test_collection_side_by_side_is_one_request_after_the_other(reach: dict) -> None:
    nets, env = reach["nets"], reach["env"]
    task = reach["train"][1]
    mu = torch.randn(1, nets.latent_dim, generator=torch.Generator().manual_seed(0))
    requests = [EpisodeRequest(kind, m, v, det, derived_seed(9, k), res) for k, (kind, m, v, det, res) in enumerate([
        ("prior", torch.zeros_like(mu), torch.ones_like(mu), False, "step"),
        ("posterior", mu, torch.full_like(mu, 0.1), False, "episode"),
        ("explore", torch.zeros_like(mu), torch.ones_like(mu), True, "episode")])]
    shared = AdaptiveAgent(nets.encoder, nets.policy, torch.Generator(), deterministic=False)
    source = EnvEpisodeSource(reach["pool"], {task.index: task}, STEPS)
    for with_rewards in (True, False):
        got = source.collect(task.index, requests, shared, with_rewards)
        env.set_task(task)
        for req, traj in zip(requests, got, strict=True):  # how the source rolled them before: one agent, reseeded
            shared.mu, shared.var = req.mu, req.var
            shared.deterministic, shared.resample = req.deterministic, req.resample
            shared.generator.manual_seed(req.seed)
            _same(traj, run_episodes([env], [shared], [req.seed], STEPS, with_rewards, req.kind)[0])


@pytest.mark.parametrize("resample, draws", [("step", 40), ("episode", 1), (10, 4), ("10", 4), (40, 1)])
def test_z_is_redrawn_as_the_resample_setting_says(reach: dict, resample: str | int, draws: int) -> None:
    # An exploration episode of 40 steps on the prior: "step" draws every step, "episode" once, a
    # period of N steps at steps 0, N, 2N, ... (its digits, as a bundle's metadata carries it, too).
    nets = reach["nets"]
    agent = AdaptiveAgent(nets.encoder, nets.policy, torch.Generator().manual_seed(0), True, resample)
    for _ in range(2):  # every episode starts its schedule afresh
        agent.begin_episode()
        zs = [agent.latent().clone() for _ in range(40)]
        changes = [t for t in range(1, 40) if not torch.equal(zs[t], zs[t - 1])]
        assert len(changes) == draws - 1
        if isinstance(resample, int) or resample.isdigit():
            assert changes == list(range(int(resample), 40, int(resample)))
    with pytest.raises(ValueError, match="resample: expected 'step', 'episode' or a whole number of steps"):
        AdaptiveAgent(nets.encoder, nets.policy, torch.Generator(), True, 0)
