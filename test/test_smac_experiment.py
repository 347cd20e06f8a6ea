"""Experiment orchestration pieces: ablation specs and the method table."""

from __future__ import annotations

import pytest

from smrl_train.smac.experiment import Ablation, method_table


def test_ablation_spec_parsing() -> None:
    a = Ablation.parse("smac_frozen:decoder:online.train_encoder=false,online.explore_episodes=0")
    assert a == Ablation("smac_frozen", "decoder", ("online.train_encoder=false", "online.explore_episodes=0"))
    assert not a.needs_offline  # shares the improved offline run
    assert Ablation.parse("o:true:loss.awac_beta=1").needs_offline  # loss keys change the offline phase
    assert Ablation.parse("matched:none:offline.steps=100").labels == "none"
    with pytest.raises(ValueError):
        Ablation.parse("bad:maybe:x=1")
    with pytest.raises(ValueError):
        Ablation.parse("missing_parts")


def test_method_table_lists_known_methods_first() -> None:
    stats = {"mean": 1.0, "std": 0.5}
    m = {"seeds": [0, 1], "final_return_stats": stats, "success_rate_stats": stats}
    summary = {"methods": {"zeta": m, "oracle": m, "offline_only": m}, "random_policy_final_return": -3.0}
    lines = method_table(summary).splitlines()
    assert [ln.split()[0] for ln in lines[1:4]] == ["offline_only", "oracle", "zeta"]
    assert "random policy" in lines[-1]
