"""The SMAC update: gradient flow, what is frozen when, Polyak targets, state round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from smrl_train.smac.trainer import MetaBCTrainer, SmacTrainer

from smac_helpers import ACT, OBS, random_batch, tiny_config

torch.set_num_threads(1)


def _grads(loss: torch.Tensor, module: torch.nn.Module) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, list(module.parameters()), retain_graph=True, allow_unused=True))


def _nonzero(grads: list[torch.Tensor | None]) -> bool:
    return any(g is not None and g.abs().sum() > 0 for g in grads)


def test_critic_and_actor_losses_never_reach_the_encoder() -> None:
    tr = SmacTrainer(tiny_config(), OBS, ACT)
    t = tr.compute_losses(random_batch())
    assert not _nonzero(_grads(t.critic, tr.nets.encoder))
    assert not _nonzero(_grads(t.awr, tr.nets.encoder))
    assert not _nonzero(_grads(t.critic, tr.nets.decoder))
    assert _nonzero(_grads(t.critic, tr.nets.qf))
    assert _nonzero(_grads(t.awr, tr.nets.policy))


def test_decoder_mse_and_kl_train_the_encoder() -> None:
    tr = SmacTrainer(tiny_config(), OBS, ACT)
    t = tr.compute_losses(random_batch())
    assert _nonzero(_grads(t.decoder_mse, tr.nets.encoder))
    assert _nonzero(_grads(t.decoder_mse, tr.nets.decoder))
    assert _nonzero(_grads(t.kl, tr.nets.encoder))
    assert not _nonzero(_grads(t.context, tr.nets.qf)) and not _nonzero(_grads(t.context, tr.nets.policy))


def test_single_backward_equals_separate_backwards() -> None:
    torch.manual_seed(0)
    tr = SmacTrainer(tiny_config(), OBS, ACT)
    t = tr.compute_losses(random_batch())
    params = [p for p in tr.nets.parameters() if p.requires_grad]
    fused = torch.autograd.grad(t.context + t.critic + t.awr, params, retain_graph=True, allow_unused=True)
    parts = [torch.autograd.grad(x, params, retain_graph=True, allow_unused=True) for x in (t.context, t.critic, t.awr)]
    for i, g in enumerate(fused):
        ref = sum((p[i] for p in parts if p[i] is not None), torch.zeros_like(params[i]))
        assert torch.allclose(g if g is not None else torch.zeros_like(params[i]), ref, atol=1e-6)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_paper_online_update_leaves_encoder_and_decoder_unchanged() -> None:
    tr = SmacTrainer(tiny_config("paper"), OBS, ACT)
    tr.update(random_batch(seed=1))  # an offline step first, so Adam has state for everything
    tr.set_phase("online")
    enc, dec = _snapshot(tr.nets.encoder), _snapshot(tr.nets.decoder)
    q, pi = _snapshot(tr.nets.qf), _snapshot(tr.nets.policy)
    for s in range(3):
        m = tr.update(random_batch(seed=2 + s))
    assert _same(enc, _snapshot(tr.nets.encoder)) and _same(dec, _snapshot(tr.nets.decoder))
    assert not _same(q, _snapshot(tr.nets.qf)) and not _same(pi, _snapshot(tr.nets.policy))
    assert m["q_term"] != 0.0 and m["decoder_mse"] == 0.0


def test_improved_online_update_keeps_training_the_encoder() -> None:
    tr = SmacTrainer(tiny_config("return_tuned"), OBS, ACT)
    tr.set_phase("online")
    enc = _snapshot(tr.nets.encoder)
    tr.update(random_batch())
    assert not _same(enc, _snapshot(tr.nets.encoder))


def test_offline_update_has_no_q_term_and_trains_everything() -> None:
    tr = SmacTrainer(tiny_config("paper"), OBS, ACT)
    before = _snapshot(tr.nets)
    m = tr.update(random_batch())
    after = _snapshot(tr.nets)
    assert m["q_term"] == 0.0
    for prefix in ("encoder.net", "decoder.net", "qf.layers", "policy.trunk"):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix


def test_polyak_target_update() -> None:
    tr = SmacTrainer(tiny_config(), OBS, ACT)
    old_target = copy.deepcopy(tr.nets.qf_target.state_dict())
    tr.update(random_batch())
    tau = tr.cfg.loss.tau
    new_q, new_t = tr.nets.qf.state_dict(), tr.nets.qf_target.state_dict()
    for k in old_target:
        if k.startswith("normalizer"):
            continue
        assert torch.allclose(new_t[k], (1 - tau) * old_target[k] + tau * new_q[k], atol=1e-7)


def test_state_dict_round_trip_continues_identically() -> None:
    a = SmacTrainer(tiny_config(), OBS, ACT, seed=3)
    for s in range(3):
        a.update(random_batch(seed=s))
    b = SmacTrainer(tiny_config(), OBS, ACT, seed=99)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    ma, mb = a.update(random_batch(seed=7)), b.update(random_batch(seed=7))
    assert ma == mb
    for (k, v), (_, w) in zip(a.nets.state_dict().items(), b.nets.state_dict().items()):
        assert torch.equal(v, w), k


def test_phase_validation_and_meta_bc_trains_encoder_through_policy() -> None:
    tr = SmacTrainer(tiny_config(), OBS, ACT)
    with pytest.raises(ValueError):
        tr.set_phase("testing")
    bc = MetaBCTrainer(tiny_config(), OBS, ACT)
    enc = _snapshot(bc.nets.encoder)
    m = bc.update(random_batch())
    assert set(m) == {"policy_loss", "log_prob_data", "kl"}
    assert not _same(enc, _snapshot(bc.nets.encoder))


def test_online_q_term_trains_the_policy_but_never_the_critic() -> None:
    import dataclasses

    def after_one_online_update(weight: float) -> SmacTrainer:
        cfg = tiny_config("paper")
        cfg = dataclasses.replace(cfg, online=dataclasses.replace(cfg.online, q_term_weight=weight))
        tr = SmacTrainer(cfg, OBS, ACT, seed=0)
        tr.set_phase("online")
        tr.update(random_batch(seed=4))
        return tr

    small, huge = after_one_online_update(0.0), after_one_online_update(1e3)
    assert _same(_snapshot(small.nets.qf), _snapshot(huge.nets.qf))
    assert not _same(_snapshot(small.nets.policy), _snapshot(huge.nets.policy))


@pytest.mark.parametrize("phase", ["offline", "online"])
def test_bfloat16_matmuls_give_the_float32_losses_to_bf16_precision(phase: str) -> None:
    import dataclasses

    cfg = tiny_config()
    half = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, compute_dtype="bfloat16"))
    full_tr, half_tr = SmacTrainer(cfg, OBS, ACT, seed=4), SmacTrainer(half, OBS, ACT, seed=4)
    half_tr.load_state_dict(full_tr.state_dict())  # same parameters and the same RNG stream
    full_tr.set_phase(phase)
    half_tr.set_phase(phase)
    batch = random_batch()
    a, b = full_tr.compute_losses(batch), half_tr.compute_losses(batch)
    for name in ("critic", "awr", "decoder_mse", "kl"):
        x, y = getattr(a, name).item(), getattr(b, name).item()
        assert y == pytest.approx(x, rel=0.05, abs=1e-3), name
    # bf16 really ran (the losses are not bit-identical), and everything learnable stays float32.
    assert a.q_pred.dtype == b.q_pred.dtype == torch.float32 and not torch.equal(a.q_pred, b.q_pred)
    half_tr.update(batch)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in half_tr.nets.parameters())


@pytest.mark.parametrize("phase", ["offline", "online"])
def test_one_backward_of_the_total_gives_each_network_its_own_losses_gradient(phase: str) -> None:
    tr = SmacTrainer(tiny_config(), OBS, ACT)
    tr.set_phase(phase)
    t = tr.compute_losses(random_batch(seed=2))
    own = {"encoder": t.context, "decoder": t.context, "qf": t.critic, "policy": t.policy}
    total = {name: _grads(t.total, getattr(tr.nets, name)) for name in own}
    for name, loss in own.items():
        for got, want in zip(total[name], _grads(loss, getattr(tr.nets, name))):
            assert (got is None) == (want is None), name
            if want is not None:
                assert torch.allclose(got, want, atol=1e-6), name
    if phase == "online":  # the -Q term is in the total and reaches the policy, not the critic
        assert t.q_term.item() != 0.0
        assert _nonzero(_grads(t.q_term, tr.nets.policy)) and not _nonzero(_grads(t.q_term, tr.nets.qf))


def test_compiled_gradients_follow_autograd() -> None:
    import dataclasses

    cfg = tiny_config()
    auto = SmacTrainer(cfg, OBS, ACT, seed=2)
    comp = SmacTrainer(dataclasses.replace(cfg, gradients="compiled"), OBS, ACT, seed=2)
    for phase, seeds in (("offline", (0, 1)), ("online", (2,))):
        for tr in (auto, comp):
            tr.set_phase(phase)
        for s in seeds:
            ma, mc = auto.update(random_batch(seed=s)), comp.update(random_batch(seed=s))
            for k in ma:
                assert mc[k] == pytest.approx(ma[k], rel=1e-4, abs=1e-5), (phase, k)
    for (name, p), (_, q) in zip(auto.nets.state_dict().items(), comp.nets.state_dict().items()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name


def test_online_actor_on_offline_data_imitates_only_the_datasets_actions() -> None:
    """online.actor_data offline: the advantage-weighted term's gradient comes from the rows the
    meta-batch marks offline; changing the collected rows' actions leaves it unchanged."""
    import dataclasses

    cfg = tiny_config("success_tuned")
    cfg = dataclasses.replace(cfg, online=dataclasses.replace(cfg.online, actor_data="offline"))
    tr = SmacTrainer(cfg, OBS, ACT, seed=0)
    tr.set_phase("online")
    batch = random_batch(seed=5)
    mask = (torch.arange(batch.obs.shape[0]) % 3 == 0).float()
    batch = dataclasses.replace(batch, offline=mask)
    torch.manual_seed(0)
    t = tr.compute_losses(batch)
    kept = -(mask * t.weights * t.log_prob).sum() / mask.sum()
    assert torch.allclose(t.awr, kept)
    # Only the rows kept carry gradient from the term.
    per_row = torch.autograd.grad(t.awr, t.log_prob, retain_graph=True)[0]
    assert torch.all(per_row[mask == 0] == 0) and torch.all(per_row[mask == 1] != 0)
    with pytest.raises(ValueError, match="marks its offline rows"):
        tr.compute_losses(dataclasses.replace(batch, offline=None))


def test_online_actor_context_offline_imitates_only_under_offline_context_z() -> None:
    """online.actor_context offline: the advantage-weighted term keeps the offline rows of the
    tasks whose context came from their offline data; the exploration-context tasks' rows carry
    no gradient from it (they still train the critic)."""
    import dataclasses

    cfg = tiny_config("success_tuned")
    cfg = dataclasses.replace(cfg, online=dataclasses.replace(cfg.online, actor_data="offline",
                                                              actor_context="offline"))
    tr = SmacTrainer(cfg, OBS, ACT, seed=0)
    tr.set_phase("online")
    batch = random_batch(seed=6)  # 3 tasks x 8 rows
    offline = (torch.arange(24) % 2 == 0).float()
    explored = torch.tensor([1.0, 0.0, 0.0]).repeat_interleave(8)  # task 0: exploration context
    batch = dataclasses.replace(batch, offline=offline, explored=explored)
    torch.manual_seed(0)
    t = tr.compute_losses(batch)
    kept = offline * (1 - explored)
    assert torch.allclose(t.awr, -(kept * t.weights * t.log_prob).sum() / kept.sum())
    per_row = torch.autograd.grad(t.awr, t.log_prob, retain_graph=True)[0]
    assert torch.all(per_row[kept == 0] == 0) and torch.all(per_row[kept == 1] != 0)
    assert t.critic.requires_grad  # the critic still learns from every row

