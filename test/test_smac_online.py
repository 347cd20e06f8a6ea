"""The self-supervised phase: true rewards are never read under decoder labels; labels come
from the frozen offline snapshot; episode sources are pluggable."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from smrl_train.smac.checkpoint import read_checkpoint
from smrl_train.smac.logs import read_csv
from smrl_train.smac.runner import train_offline, train_online
from smrl_train.smac.sources import RecordedEpisodeSource, split_episodes

from smac_helpers import tiny_config
from toy_family import PointDirectionEnv, toy_problem

torch.set_num_threads(1)


class PoisonedRewardEnv(PointDirectionEnv):
    """The toy env with every reward NaN and success always True: reading either shows."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, _, term, trunc, info = super().step(action)
        return obs, float("nan"), term, trunc, {**info, "success": True}


def _cfg(variant: str = "return_tuned"):
    cfg = tiny_config(variant)
    return dataclasses.replace(cfg, online=dataclasses.replace(cfg.online, eval_every=0))


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    problem = toy_problem(n_train=4, n_test=2, max_steps=10, episodes=3)
    root = tmp_path_factory.mktemp("offline")
    runs = {}
    for variant in ("success_tuned", "return_tuned", "paper"):
        runs[variant] = train_offline(problem, _cfg(variant), root / variant, progress=False)
    return {"problem": problem, "runs": runs}


def _poisoned(problem):
    return dataclasses.replace(problem, env_factory=lambda: PoisonedRewardEnv(problem.max_steps), _env=None)


@pytest.mark.parametrize("variant", ["success_tuned", "return_tuned"])
def test_decoder_labelled_phase_never_reads_true_rewards(offline_runs: dict, tmp_path, variant: str) -> None:
    problem = _poisoned(offline_runs["problem"])
    run = train_online(problem, tmp_path / "smac", offline_run=offline_runs["runs"][variant], labels="decoder",
                       progress=False)
    state, meta = read_checkpoint(run)
    assert meta["finished"] and meta["iteration"] == 2
    rows = state["rl"]
    online = torch.cat([rows[f"rows/{i}"] for i in range(4)])
    assert online.shape[0] > 0 and torch.isfinite(online).all()
    for row in read_csv(run / "metrics.csv"):
        assert all(math.isfinite(v) for v in row.values())


@pytest.mark.parametrize("variant", ["success_tuned", "return_tuned"])
def test_oracle_reads_true_rewards_so_the_poison_shows(offline_runs: dict, tmp_path, variant: str) -> None:
    # The same setup with true rewards must fail: proves the test above can catch a leak.
    problem = _poisoned(offline_runs["problem"])
    with pytest.raises(ValueError, match="non-finite"):
        train_online(problem, tmp_path / "oracle", offline_run=offline_runs["runs"][variant], labels="true",
                     progress=False)


def _recorded(problem, reward: str):
    arrays = {}
    for t, a in problem.offline.items():
        r = None if reward == "absent" else np.full_like(a.reward, np.nan)
        arrays[t] = dataclasses.replace(a, reward=r)
    return arrays


@pytest.mark.parametrize("reward", ["nan", "absent"])
def test_stored_reward_free_source(offline_runs: dict, tmp_path, reward: str) -> None:
    problem = offline_runs["problem"]
    source = RecordedEpisodeSource(_recorded(problem, reward))
    run = train_online(problem, tmp_path / reward, offline_run=offline_runs["runs"]["paper"], labels="decoder",
                       source=source, progress=False)
    state, meta = read_checkpoint(run)
    online = torch.cat([state["rl"][f"rows/{i}"] for i in range(4)])
    assert online.shape[0] > 0 and torch.isfinite(online).all()
    assert meta["source"] == "RecordedEpisodeSource"
    # Each task visit takes the recipe's episodes per visit (no requests), up to what the task has.
    from smrl_train.smac.config import resolved, smac_from_yaml_dict
    from smrl_train.smac.runner import collection_visits

    cfg = smac_from_yaml_dict(meta["smac"])
    on = cfg.online
    per_visit = resolved(on.prior_episodes) + on.posterior_episodes + int(on.explore_episodes or 0)
    visits = collection_visits(cfg, sorted(problem.offline), 0, cfg.online.iterations)
    assert per_visit > 0 and visits
    served = {int(t): len(ids) for t, ids in meta["source_state"]["served"].items()}
    assert {t: served.get(t, 0) for t in sorted(problem.offline)} == {
        t: min(len(source.episodes[t]), per_visit * visits.get(t, 0)) for t in sorted(problem.offline)}


def test_stored_source_cannot_serve_the_oracle_without_rewards(offline_runs: dict, tmp_path) -> None:
    problem = offline_runs["problem"]
    source = RecordedEpisodeSource(_recorded(problem, "absent"))
    with pytest.raises(ValueError, match="reward-free"):
        train_online(problem, tmp_path / "o", offline_run=offline_runs["runs"]["paper"], labels="true", source=source,
                     progress=False)


def test_labels_come_from_the_frozen_offline_snapshot(offline_runs: dict, tmp_path) -> None:
    problem = offline_runs["problem"]
    parent = offline_runs["runs"]["return_tuned"]
    run = train_online(problem, tmp_path / "smac", offline_run=parent, labels="decoder", progress=False)
    off_state, _ = read_checkpoint(parent)
    on_state, _ = read_checkpoint(run)
    off_enc = {k[len("encoder."):]: v for k, v in off_state["trainer"]["nets"].items() if k.startswith("encoder.")}
    live_enc = {k[len("encoder."):]: v for k, v in on_state["trainer"]["nets"].items() if k.startswith("encoder.")}
    label_enc = on_state["labeller"]["encoder"]
    assert all(torch.equal(label_enc[k], off_enc[k]) for k in off_enc)
    # The improved recipe keeps training the live encoder; the labeller must not follow it.
    assert any(not torch.equal(live_enc[k], off_enc[k]) for k in off_enc)


def test_paper_online_run_keeps_encoder_and_decoder_frozen(offline_runs: dict, tmp_path) -> None:
    problem = offline_runs["problem"]
    parent = offline_runs["runs"]["paper"]
    run = train_online(problem, tmp_path / "smac_paper", offline_run=parent, labels="decoder", progress=False)
    off, _ = read_checkpoint(parent)
    on, meta = read_checkpoint(run)
    assert meta["method"] == "smac_paper"
    for k, v in off["trainer"]["nets"].items():
        if k.startswith(("encoder.", "decoder.")):
            assert torch.equal(v, on["trainer"]["nets"][k]), k
    assert any(not torch.equal(v, on["trainer"]["nets"][k]) for k, v in off["trainer"]["nets"].items()
               if k.startswith("policy."))


def test_explore_episodes_fill_the_explore_buffer(offline_runs: dict, tmp_path) -> None:
    problem = offline_runs["problem"]
    run = train_online(problem, tmp_path / "smac", offline_run=offline_runs["runs"]["return_tuned"], labels="decoder",
                       progress=False)
    state, _ = read_checkpoint(run)
    n_explore = sum(state["explore"][f"rows/{i}"].shape[0] for i in range(4))
    # 2 iterations x 2 tasks x explore_episodes (2) x 10 steps
    assert n_explore == 2 * 2 * 2 * 10


def test_split_episodes() -> None:
    term = np.array([0, 0, 1, 0, 0, 0], bool)
    trunc = np.array([0, 0, 0, 0, 1, 0], bool)
    assert split_episodes(term, trunc) == [slice(0, 3), slice(3, 5), slice(5, 6)]


def test_pessimistic_labels_are_ensemble_mean_minus_k_std() -> None:
    from smrl_train.smac.labelling import Labeller
    from smrl_train.smac.networks import ContextEncoder, RewardDecoder, sample_gaussian

    torch.manual_seed(3)
    enc = ContextEncoder(3, 1, 2, (8,))
    dec = RewardDecoder(3, 1, 2, (8,), ensemble=3)
    dec.reward_mean.fill_(-0.2)
    dec.reward_std.fill_(0.5)
    obs, act = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32), np.zeros((5, 1), np.float32)
    ctx = torch.randn(7, 5)
    labels = Labeller(enc, dec, pessimism=1.5).label(obs, act, ctx, torch.Generator().manual_seed(9))
    # By hand: the same z draw, every member, mean - 1.5 std (population std) in reward units.
    mu, var = enc(ctx.unsqueeze(0))
    z = sample_gaussian(mu, var, torch.Generator().manual_seed(9)).expand(5, -1)
    with torch.no_grad():
        m = dec.members(torch.from_numpy(obs), torch.from_numpy(act), z) * 0.5 - 0.2
    expected = (m.mean(0) - 1.5 * m.std(0, correction=0)).numpy()
    np.testing.assert_allclose(labels, expected, rtol=1e-5, atol=1e-6)
    assert np.all(labels < m.mean(0).numpy())  # members disagree, so every label is lowered
    # Without pessimism the label is the ensemble mean.
    plain = Labeller(enc, dec).label(obs, act, ctx, torch.Generator().manual_seed(9))
    np.testing.assert_allclose(plain, m.mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_recorded_posterior_episodes_enter_the_rl_buffer_but_not_the_explore_buffer(offline_runs: dict,
                                                                                     tmp_path) -> None:
    from smrl_train.smac.sources import RecordedEpisodeSource, RecordedTaskArrays

    problem = offline_runs["problem"]
    kinds = ("explore", "posterior", "explore")
    recorded = {}
    for task, a in problem.offline.items():  # 3 episodes of 10 steps per toy task, rewards dropped
        n = 10 * len(kinds)
        recorded[task] = RecordedTaskArrays(a.obs[:n], a.action[:n], None, a.next_obs[:n], a.terminated[:n],
                                            a.truncated[:n], (10,) * len(kinds), kinds)
    source = RecordedEpisodeSource(recorded)
    assert source.remaining_by_kind() == {"explore": 2 * 4, "posterior": 1 * 4}
    run = train_online(problem, tmp_path / "smac", offline_run=offline_runs["runs"]["return_tuned"], labels="decoder",
                       source=source, progress=False)
    state, _ = read_checkpoint(run)
    served = {t: kinds[:len(source.served[t])] for t in source.served}
    assert sum(len(k) for k in served.values()) > 0
    for row, t in enumerate(sorted(recorded)):
        explore_rows = state["explore"][f"rows/{row}"].shape[0]
        assert explore_rows == 10 * served[t].count("explore"), (t, served[t])
    online = state["rl"]["size"] - state["rl"]["offline_size"]
    assert online.tolist() == [10 * len(served[t]) for t in sorted(recorded)]


def test_the_scored_episode_can_act_on_the_posterior_mean() -> None:
    from smrl_train.smac.agent import AdaptiveAgent
    from smrl_train.smac.trainer import build_networks

    nets = build_networks(tiny_config("success_tuned"), 4, 2, seed=0)
    context = torch.randn(30, nets.encoder.context_dim, generator=torch.Generator().manual_seed(0))
    draws = {}
    for latent in ("sample", "mean"):
        agent = AdaptiveAgent(nets.encoder, nets.policy, torch.Generator().manual_seed(1), resample="episode")
        mu, var = agent.use_posterior(context, latent)
        zs = []
        for _ in range(3):
            agent.begin_episode()
            zs.append(agent.z.clone())
        draws[latent] = torch.stack(zs)
        assert (var > 0).all()  # the posterior itself is reported either way
    assert torch.allclose(draws["mean"], mu.expand(3, -1)) and not torch.allclose(draws["sample"], mu.expand(3, -1))
    with pytest.raises(ValueError, match="latent"):
        AdaptiveAgent(nets.encoder, nets.policy, torch.Generator()).use_posterior(context, "mode")
