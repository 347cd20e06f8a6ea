"""The manual accelerator (smrl_train/smac/manual_grad.py) against the definition of the update.

``smac.gradients: manual`` computes the gradients of ``step.step_losses`` by hand. On configs
drawn at random from its allowlist, with the same noise, the gradients of every parameter must
agree with autograd's to float32 round-off in both phases, and so must the parameters after
several updates. Anything outside the allowlist is refused by name.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from smrl_train.config_schema import ConfigError
from smrl_train.smac import manual_grad
from smrl_train.smac.config import SmacConfig
from smrl_train.smac.trainer import SmacTrainer

from smac_helpers import ACT, OBS, random_batch, tiny_config

torch.set_num_threads(1)


def _with(cfg: SmacConfig, **fields: object) -> SmacConfig:
    """``cfg`` with dotted fields replaced, e.g. ``network__latent_dim=3``."""
    sections: dict[str, dict[str, object]] = {}
    top = {}
    for key, value in fields.items():
        if "__" in key:
            sec, name = key.split("__")
            sections.setdefault(sec, {})[name] = value
        else:
            top[key] = value
    return dataclasses.replace(cfg, **top, **{s: dataclasses.replace(getattr(cfg, s), **v)
                                              for s, v in sections.items()})


def _random_config(rng: random.Random) -> SmacConfig:
    """A config drawn from manual_grad.IMPLEMENTED (float32; bfloat16 has its own test)."""
    def widths(most: int) -> tuple[int, ...]:
        return tuple(rng.randint(3, 20) for _ in range(rng.randint(1, most)))

    cfg = tiny_config(rng.choice(["paper", "return_tuned"]))
    return _with(cfg, gradients="manual",
                 network__encoder_hidden=widths(3), network__policy_hidden=widths(3), network__q_hidden=widths(3),
                 network__decoder_hidden=widths(2), network__latent_dim=rng.randint(1, 6),
                 network__normalize_inputs=rng.random() < 0.5, network__decoder_ensemble=rng.randint(1, 4),
                 loss__gamma=rng.uniform(0.5, 0.999), loss__tau=rng.uniform(0.001, 1.0),
                 loss__reward_scale=rng.uniform(0.1, 10.0), loss__kl_weight=rng.uniform(0.0, 1.0),
                 loss__normalize_decoder_targets=rng.random() < 0.5, loss__awac_beta=rng.uniform(0.1, 100.0),
                 loss__awac_normalize_advantage=rng.random() < 0.5, loss__policy_lr=rng.uniform(1e-4, 1e-2),
                 loss__q_lr=rng.uniform(1e-4, 1e-2), loss__context_lr=rng.uniform(1e-4, 1e-2),
                 online__q_term_weight=rng.uniform(0.0, 3.0), online__normalize_q_term=rng.random() < 0.5,
                 online__train_encoder=rng.random() < 0.5)


def _pair(cfg: SmacConfig, obs: int, act: int, seed: int = 5) -> tuple[SmacTrainer, SmacTrainer]:
    manual = SmacTrainer(_with(cfg, gradients="manual"), obs, act, seed=seed)
    auto = SmacTrainer(_with(cfg, gradients="autograd"), obs, act, seed=seed)
    # Normalisation statistics as the runner sets them (identity where switched off).
    g = torch.Generator().manual_seed(seed)
    stats = (torch.randn(obs, generator=g), torch.rand(obs, generator=g) + 0.5, act, -0.3, 0.7,
             bool(cfg.network.normalize_inputs), bool(cfg.loss.normalize_decoder_targets))
    for tr in (manual, auto):
        tr.nets.set_statistics(*stats)
    return manual, auto


def _assert_same_updates(manual: SmacTrainer, auto: SmacTrainer, batches: list, label: str) -> None:
    for step, batch in enumerate(batches):
        m, a = manual.update(batch), auto.update(batch)
        assert m.keys() == a.keys()
        for k in m:
            assert m[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (label, step, k)
        for (name, p), (_, q) in zip(manual.nets.named_parameters(), auto.nets.named_parameters()):
            assert (p.grad is None) == (q.grad is None), (label, name)
            if q.grad is not None:
                assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5), (label, step, name)
    for (name, p), (_, q) in zip(manual.nets.state_dict().items(), auto.nets.state_dict().items()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), (label, name)


@pytest.mark.parametrize("draw", range(8))
def test_manual_gradients_equal_autograd_on_random_allowlisted_configs(draw: int) -> None:
    rng = random.Random(draw)
    cfg = _random_config(rng)
    obs, act = rng.randint(2, 6), rng.randint(1, 3)
    T, B, C = rng.randint(1, 4), rng.randint(2, 9), rng.randint(1, 7)
    manual, auto = _pair(cfg, obs, act, seed=draw)
    for phase in ("offline", "online"):
        manual.set_phase(phase)
        auto.set_phase(phase)
        batches = [random_batch(T, B, C, seed=100 * draw + s, obs=obs, act=act) for s in range(2)]
        _assert_same_updates(manual, auto, batches, f"draw {draw} {phase}: {cfg}")
    trained = {n.split(".")[0] for n, p in auto.nets.named_parameters() if p.grad is not None}
    assert {"policy", "qf"} <= trained
    assert ("encoder" in trained) == bool(cfg.online.train_encoder)  # the last update was online


@pytest.mark.parametrize("variant", ["paper", "return_tuned"])
@pytest.mark.parametrize("phase", ["offline", "online"])
def test_manual_gradients_equal_autograd_in_both_recipes(variant: str, phase: str) -> None:
    manual, auto = _pair(tiny_config(variant), OBS, ACT)
    for tr in (manual, auto):
        tr.set_phase(phase)
    _assert_same_updates(manual, auto, [random_batch(seed=s) for s in range(3)], f"{variant} {phase}")


def test_manual_refuses_what_it_does_not_implement_by_name() -> None:
    mean = _with(tiny_config(), gradients="manual", network__encoder_aggregation="mean")
    with pytest.raises(ConfigError, match=r"smac\.network\.encoder_aggregation = 'mean'"):
        SmacTrainer(mean, OBS, ACT)
    SmacTrainer(_with(mean, gradients="autograd"), OBS, ACT)  # the definition takes any config

    # A field that is neither implemented nor declared outside the update (a new loss option,
    # say) is refused, not ignored.
    cfg = _with(tiny_config(), gradients="manual")
    key = "loss.awac_normalize_advantage"
    saved = manual_grad.IMPLEMENTED.pop(key)
    try:
        with pytest.raises(ConfigError, match=r"does not implement smac\.loss\.awac_normalize_advantage;"):
            SmacTrainer(cfg, OBS, ACT)
    finally:
        manual_grad.IMPLEMENTED[key] = saved

    # A module type it does not know (a LayerNorm in the policy) is refused too.
    tr = SmacTrainer(cfg, OBS, ACT)
    tr.nets.policy.trunk.insert(1, torch.nn.LayerNorm(16))
    with pytest.raises(ConfigError, match=r"module policy\.trunk\.1 \(LayerNorm\)"):
        manual_grad.check_implemented(cfg, tr.nets)


def test_every_config_field_is_classified_for_the_manual_path() -> None:
    fields = {k for k, _ in manual_grad.config_fields(SmacConfig())}
    assert fields == set(manual_grad.IMPLEMENTED) | manual_grad.OUTSIDE_THE_UPDATE
    assert not set(manual_grad.IMPLEMENTED) & manual_grad.OUTSIDE_THE_UPDATE


def test_layer_backward_matches_autograd_in_float64() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    dims = (4, 6, 5, 3)
    plain = [(torch.randn(o, i, dtype=torch.float64, generator=g, requires_grad=True),
              torch.randn(o, dtype=torch.float64, generator=g, requires_grad=True)) for i, o in zip(dims, dims[1:])]
    ens = [(torch.randn(2, i, o, dtype=torch.float64, generator=g, requires_grad=True),
            torch.randn(2, 1, o, dtype=torch.float64, generator=g, requires_grad=True))
           for i, o in zip((4, 6, 5), (6, 5, 1))]
    seed_grad = torch.randn(7, 3, dtype=torch.float64, generator=g)
    out, inputs = manual_grad.mlp_forward([(w.detach(), b.detach()) for w, b in plain], x.detach())
    grads, gx = manual_grad.mlp_backward([(w.detach(), b.detach()) for w, b in plain], inputs, seed_grad,
                                         input_grad=True)
    h = x
    for i, (w, b) in enumerate(plain):
        h = h @ w.t() + b
        h = h.relu() if i < len(plain) - 1 else h
    ref = torch.autograd.grad(h, [x, *[t for pair in plain for t in pair]], seed_grad)
    assert torch.allclose(out.double(), h.detach(), atol=1e-5)  # mlp_forward hands back float32
    for got, want in zip([gx, *[t for pair in grads for t in pair]], ref):
        assert torch.allclose(got.double(), want, atol=1e-5)

    seed_e = torch.randn(2, 7, dtype=torch.float64, generator=g)
    q, e_inputs = manual_grad.ensemble_forward([(w.detach(), b.detach()) for w, b in ens], x.detach())
    e_grads, e_gx = manual_grad.ensemble_backward([(w.detach(), b.detach()) for w, b in ens], e_inputs, seed_e,
                                                  input_cols=slice(1, 3))
    h = x.unsqueeze(0).expand(2, 7, 4)
    for i, (w, b) in enumerate(ens):
        h = torch.baddbmm(b, h, w)
        h = h.relu() if i < len(ens) - 1 else h
    ref = torch.autograd.grad(h.squeeze(-1), [x, *[t for pair in ens for t in pair]], seed_e)
    assert torch.allclose(q.double(), h.squeeze(-1).detach(), atol=1e-5)
    assert torch.allclose(e_gx.double(), ref[0][:, 1:3], atol=1e-5)
    for got, want in zip([t for pair in e_grads for t in pair], ref[1:]):
        assert torch.allclose(got.double(), want, atol=1e-5)


@pytest.mark.parametrize("phase", ["offline", "online"])
def test_manual_bfloat16_gradients_follow_float32(phase: str) -> None:
    cfg = tiny_config()
    half = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, compute_dtype="bfloat16"))
    full_tr = SmacTrainer(_with(cfg, gradients="manual"), OBS, ACT, seed=4)
    half_tr = SmacTrainer(_with(half, gradients="manual"), OBS, ACT, seed=4)
    for tr in (full_tr, half_tr):
        tr.set_phase(phase)
        tr.update(random_batch(seed=9))

    def flat(tr: SmacTrainer) -> torch.Tensor:
        return torch.cat([p.grad.flatten() for p in tr.nets.parameters() if p.grad is not None])

    a, b = flat(full_tr), flat(half_tr)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
    assert not torch.equal(a, b)  # bfloat16 really ran
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in half_tr.nets.parameters())


def test_lean_fused_adam_steps_exactly_like_torch_adam() -> None:
    from smrl_train.smac.trainer import _LeanFusedAdam

    g = torch.Generator().manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(4, 3, generator=g)) for _ in range(3)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a, b = _LeanFusedAdam(ours, 1e-2), torch.optim.Adam(ref, lr=1e-2, fused=True)
    for step in range(5):
        for p, q in zip(ours, ref):
            grad = torch.randn(4, 3, generator=g)
            p.grad, q.grad = grad.clone(), grad.clone()
        if step == 2:  # a parameter without a gradient is skipped (its step count stays)
            ours[1].grad = ref[1].grad = None
        a.step()
        b.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, ref))
    assert [a.state[p]["step"].item() for p in ours] == [b.state[q]["step"].item() for q in ref] == [5, 4, 5]
    assert a.state_dict()["param_groups"] == b.state_dict()["param_groups"]


def test_allocator_thresholds_are_accepted_once() -> None:
    from smrl_train.smac import allocator

    assert allocator.retain_freed_memory()  # glibc accepted both thresholds
    assert allocator._done and allocator.retain_freed_memory()  # and a second call is a no-op
