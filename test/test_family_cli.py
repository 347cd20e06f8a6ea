"""Acceptance of issue 18: an external task family, named by an import path outside smrl,
goes through the whole command line with its own data and metrics, no project code changed."""

from __future__ import annotations

import json

import yaml

from smrl_train.cli import main

# toy_family is a test module, not part of smrl: the family is named as a user's package would be.
SUITE = {
    "env": {"family": "toy_family:PointDirectionEnv", "options": {"max_steps": 10}, "episode_length": 10},
    "tasks": {"n_train": 4, "n_test": 2, "seed": 0},
    "data": {"seed": 0, "behaviours": [{"kind": "expert", "noise": 0.3, "episodes": 2},
                                       {"kind": "wrong_goal", "noise": 0.3, "episodes": 1},
                                       {"kind": "corrected", "noise": 0.3, "episodes": 1},
                                       {"kind": "random", "episodes": 1}]},
    "smac": {
        "network": {"encoder_hidden": [16], "policy_hidden": [16, 16], "q_hidden": [16, 16],
                    "decoder_hidden": [8], "policy_ignores": []},
        "offline": {"steps": 20, "meta_batch": 3, "batch_size": 8, "context_size": 5, "log_every": 5,
                    "checkpoint_every": 10},
        "online": {"iterations": 2, "tasks_per_iteration": 2, "updates_per_iteration": 5, "prior_episodes": 1,
                   "posterior_episodes": 1, "meta_batch": 3, "batch_size": 8, "context_size": 5,
                   "label_context_size": 10, "eval_every": 1},
        # Success at any step, as many suites score it (the family's own default is "last").
        "eval": {"success": "any", "runs_per_task": 1, "diagnostic_tasks": 2},
    },
}


def test_an_external_family_through_generate_train_eval_and_report(tmp_path, capsys):
    config, data, runs = tmp_path / "suite.yaml", tmp_path / "data", tmp_path / "runs"
    config.write_text(yaml.safe_dump(SUITE))
    common = ["--config", str(config), "--data", str(data), "--quiet", "--threads", "1"]

    assert main(["data", "generate", "--config", str(config), "--out", str(data), "--quiet"]) == 0
    # Worker processes import the family by its path too, and write the same bytes.
    assert main(["data", "generate", "--config", str(config), "--out", str(tmp_path / "w2"), "--workers", "2",
                 "--quiet"]) == 0
    assert [p.read_bytes() for p in sorted((data / "episodes").iterdir())] == \
        [p.read_bytes() for p in sorted((tmp_path / "w2" / "episodes").iterdir())]
    assert main(["data", "info", str(data)]) == 0
    assert "family       toy_family:PointDirectionEnv" in capsys.readouterr().out
    assert main(["train", "offline", *common, "--run", str(runs / "offline"), "--no-eval"]) == 0
    assert main(["train", "online", *common, "--from", str(runs / "offline"), "--run", str(runs / "smac"),
                 "--labels", "decoder", "--no-eval"]) == 0
    assert main(["eval", *common, "--run", str(runs / "offline"), str(runs / "smac")]) == 0
    assert main(["report", "--runs", str(runs), "--out", str(tmp_path / "report")]) == 0

    for name in ("offline", "smac"):
        res = json.loads((runs / name / "eval.json").read_text())
        assert res["eval"]["success"] == "any"
        assert [t["task"] for t in res["test"]["tasks"]] == [0, 1]
        assert 0.0 <= res["random_policy"]["success_rate"] <= 1.0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary["methods"]) == {"offline_only", "smac"}
    assert "Success counted at any step of the scored episode." in (tmp_path / "report" / "report.md").read_text()
    # A store of another family is refused in one line, naming both.
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SUITE, "env": {**SUITE["env"],
                                                       "family": "smrl_train.families.example:PointDirectionEnv"}}))
    assert main(["eval", "--config", str(other), "--data", str(data), "--run", str(runs / "smac"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds 'toy_family:PointDirectionEnv' episodes" in err and len(err.strip().splitlines()) == 1
