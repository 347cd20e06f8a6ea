"""Experiment orchestration: ablation specs, the method table, what each run records of its cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from smrl_train.config_schema import to_dict
from smrl_train.smac.checkpoint import read_meta
from smrl_train.smac.experiment import Ablation, ExperimentSpec, method_table, run_seed

from conftest import write_config
from smac_helpers import tiny_config


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


def test_an_experiment_records_each_run_s_cpu_by_stage(repo: Path, tmp_path: Path) -> None:
    """A real (tiny) experiment on reach: every run's cost.json splits its CPU into training,
    meta-test and diagnose, and an online run's also names its learning curve's share."""
    from smrl_train.config_loader import load_config
    from smrl_train.data.generate import generate_dataset

    config = write_config(load_config(repo / "config" / "reach.yaml"), tmp_path / "reach.yaml")
    data = yaml.safe_load(config.read_text())
    data["tasks"].update(n_train=4, n_test=2)
    data["env"]["episode_length"] = 20
    data["smac"] = to_dict(tiny_config("success_tuned"))
    config.write_text(yaml.safe_dump(data))
    cfg = load_config(config)
    generate_dataset(cfg, tmp_path / "data", progress=False)
    spec = ExperimentSpec(config=str(config), data=str(tmp_path / "data"), out=str(tmp_path / "runs"), smac=cfg.smac,
                          methods=("offline_only", "smac"), progress=False, diagnose_tasks=2)
    run_seed(spec, 0)
    costs = {name: json.loads((tmp_path / "runs" / "seed0" / name / "cost.json").read_text())
             for name in ("offline_only", "smac")}
    for name, cost in costs.items():
        stages = cost["stages"]
        assert all(stages[k] > 0 for k in ("training", "meta_test", "diagnose")), (name, cost)
        # The stages partition the run's CPU (each rounded to 0.1 s).
        assert abs(stages["training"] + stages["meta_test"] + stages["diagnose"] - cost["cpu_s"]) <= 0.2, cost
    assert "learning_curve" not in costs["offline_only"]["stages"]
    curve = costs["smac"]["stages"]["learning_curve"]
    assert 0 < curve < costs["smac"]["stages"]["training"]
    assert curve == round(read_meta(tmp_path / "runs" / "seed0" / "smac")["curve_cpu_s"], 1)
