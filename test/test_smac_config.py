"""The smac: config section: variants, presets, strict loading, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from smrl_train.config_schema import ConfigError, to_dict
from smrl_train.smac.config import (
    VARIANT_DEFAULTS,
    NetworkConfig,
    OfflineConfig,
    SmacConfig,
    load_smac_config,
    paper_preset,
    resolved,
    smac_from_yaml_dict,
)
from smrl_train.smac.problem import apply_overrides, resolve_smac

REPO = Path(__file__).resolve().parent.parent


def _get(cfg: SmacConfig, key: str) -> object:
    sec, name = key.split(".")
    return getattr(getattr(cfg, sec), name)


@pytest.mark.parametrize("variant", ["paper", "return_tuned", "success_tuned"])
def test_variant_fills_every_deviation_field(variant: str) -> None:
    cfg = SmacConfig(variant=variant)
    for key, value in VARIANT_DEFAULTS[variant].items():
        assert _get(cfg, key) == value, key


def test_resolved_reads_a_recipe_field_and_refuses_an_unresolved_one() -> None:
    cfg = SmacConfig(variant="paper", offline=OfflineConfig(steps=7))
    assert resolved(cfg.offline.steps) == 7 and resolved(cfg.offline.context_size) == 64
    assert resolved(cfg.network.policy_ignores) == ()  # a falsy value is a value
    with pytest.raises(ValueError, match="SmacConfig"):
        resolved(OfflineConfig().steps)  # a section on its own keeps the recipe's None


def test_paper_preset_is_the_authors_code() -> None:
    p = paper_preset()
    assert (p.network.encoder_hidden, p.network.policy_hidden, p.network.q_hidden, p.network.decoder_hidden) == (
        (200, 200, 200), (300, 300, 300), (300, 300, 300), (64, 64))
    assert p.network.latent_dim == 5 and not p.network.normalize_inputs
    assert (p.offline.meta_batch, p.offline.batch_size, p.offline.context_size, p.offline.steps) == (4, 128, 64, 50_000)
    assert (p.loss.gamma, p.loss.tau, p.loss.reward_scale, p.loss.kl_weight, p.loss.awac_beta) == (
        0.99, 0.005, 5.0, 0.1, 100.0)
    assert p.loss.policy_lr == p.loss.q_lr == p.loss.context_lr == 3e-4
    assert not p.online.train_encoder and p.online.explore_context_fraction == 0.0 and not p.online.normalize_q_term
    assert (p.online.batch_size, p.online.label_context_size, p.online.updates_per_iteration) == (256, 256, 16_000)
    assert p.eval.exploration_episodes == 2 and p.eval.deterministic
    assert p.network.decoder_ensemble == 1 and p.online.label_pessimism == 0.0  # one decoder, plain labels


def test_paper_yaml_equals_the_preset() -> None:
    assert load_smac_config(REPO / "config" / "smac_paper.yaml") == paper_preset()


def test_explicit_value_beats_the_variant_default_and_round_trips() -> None:
    cfg = smac_from_yaml_dict({"variant": "return_tuned", "loss": {"awac_beta": 100}})
    assert cfg.loss.awac_beta == 100.0 and cfg.online.train_encoder is True
    assert smac_from_yaml_dict(to_dict(cfg)) == cfg


def test_the_latent_can_be_redrawn_every_n_steps() -> None:
    cfg = apply_overrides(smac_from_yaml_dict({}), ["eval.resample_latent=50"])
    assert cfg.eval.resample_latent == 50 and cfg.online.resample_latent == "episode"
    assert smac_from_yaml_dict(to_dict(cfg)) == cfg


def test_with_variant_keeps_sizes_and_swaps_the_recipe() -> None:
    cfg = paper_preset().with_variant("return_tuned")
    assert cfg.network.q_hidden == (300, 300, 300) and cfg.loss.awac_beta == 0.3 and cfg.online.train_encoder


@pytest.mark.parametrize("data, match", [
    ({"variant": "fancy"}, "smac.variant"),
    ({"network": {"latent": 5}}, "smac.network.latent"),
    ({"offline": {"steps": "many"}}, "smac.offline.steps"),
    ({"online": {"explore_context_fraction": 2.0}}, "explore_context_fraction"),
    ({"loss": {"awac_beta": 0}}, "awac_beta"),
    ({"network": {"decoder_ensemble": 0}}, "smac.network.decoder_ensemble"),
    ({"online": {"label_pessimism": -1.0}}, "smac.online.label_pessimism"),
    ({"eval": {"resample_latent": 0}}, "smac.eval.resample_latent: expected 'step', 'episode' or a whole number"),
    ({"online": {"resample_latent": "sometimes"}}, "smac.online.resample_latent: expected 'step', 'episode'"),
])
def test_bad_values_name_the_key(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        smac_from_yaml_dict(data)


def test_overrides() -> None:
    cfg = resolve_smac(None, variant="paper", seed=3, overrides=["online.iterations=7", "network.q_hidden=[8, 8]"])
    assert cfg.variant == "paper" and cfg.seed == 3 and cfg.online.iterations == 7 and cfg.network.q_hidden == (8, 8)
    with pytest.raises(ConfigError, match="smac.online.nope"):
        apply_overrides(cfg, ["online.nope=1"])
    with pytest.raises(ConfigError, match="expected"):
        apply_overrides(cfg, ["online.iterations"])


def test_family_configs_without_smac_section_use_defaults() -> None:
    assert load_smac_config(REPO / "config" / "reach.yaml").variant == "success_tuned"


def test_the_earlier_name_improved_loads_as_return_tuned() -> None:
    cfg = smac_from_yaml_dict({"variant": "improved"})
    assert cfg.variant == "return_tuned" and cfg == SmacConfig(variant="return_tuned")


def test_one_file_holds_the_family_and_the_recipe(tmp_path: Path) -> None:
    from smrl_train.config_loader import load_config

    text = (REPO / "config" / "reach.yaml").read_text().replace("urdf/smrl_arm.urdf", str(REPO / "urdf/smrl_arm.urdf"))
    good = tmp_path / "reach_smac.yaml"
    good.write_text(text + "smac:\n  variant: paper\n  online: {iterations: 3}\n")
    cfg = load_config(good)
    assert cfg.smac == load_smac_config(good) == resolve_smac(good)
    assert cfg.smac.variant == "paper" and cfg.smac.online.iterations == 3 and cfg.smac.loss.awac_beta == 100.0
    assert load_config(REPO / "config" / "reach.yaml").smac is None
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "smac:\n  online: {iterations: many}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: smac.online.iterations: expected int"):
        load_config(bad)


def test_policy_ignores_resolves_layout_blocks_and_names_what_is_missing() -> None:
    from types import SimpleNamespace

    from smrl_train.smac.runner import RunError, observation_entries

    arm = SimpleNamespace(env=SimpleNamespace(unwrapped=SimpleNamespace(
        observation_layout=[("joint_pos", 2), ("joint_vel", 2), ("ee_pos", 3)])))
    assert observation_entries(arm, ("joint_vel",), "network.policy_ignores") == [2, 3]
    assert observation_entries(arm, (), "network.policy_ignores") == []
    with pytest.raises(RunError, match=r"policy_ignores: puck_vel not in the observation layout \(joint_pos, "):
        observation_entries(arm, ("puck_vel",), "network.policy_ignores")
    bare = SimpleNamespace(env=SimpleNamespace(unwrapped=SimpleNamespace()))
    with pytest.raises(RunError, match=r"declares no observation_layout .* set smac.network.policy_ignores: \[\]"):
        observation_entries(bare, ("joint_vel",), "network.policy_ignores")
    assert SmacConfig().network.policy_ignores == ("joint_vel",)
    assert SmacConfig(variant="paper").network.policy_ignores == ()
    with pytest.raises(ConfigError, match="policy_ignores"):
        SmacConfig(network=NetworkConfig(policy_ignores=("",)))


def test_policy_ignores_finds_the_arms_joint_velocities() -> None:
    from types import SimpleNamespace

    from smrl_train.sim.envs import ArmTaskEnv
    from smrl_train.smac.runner import observation_entries

    from conftest import small_config

    env = ArmTaskEnv(small_config("push"))
    n = env.arm.n_joints
    entries = observation_entries(SimpleNamespace(env=env), SmacConfig().network.policy_ignores,
                                  "network.policy_ignores")
    assert entries == list(range(n, 2 * n))
    assert dict(env.observation_layout)["joint_vel"] == n
