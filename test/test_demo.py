"""``make demo``'s orchestration (smrl_ros.demo) end to end at the tiny budget: every stage runs
its nodes over DDS and the report compares offline-only and SMAC per held-out task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smrl_train.data.store import EpisodeStore

pytestmark = pytest.mark.ros


def test_tiny_demo_runs_every_stage_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from smrl_ros.demo import main
    from smrl_ros.demo_stages import METHODS

    assert main(["--budget", "tiny", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for stage in ("1. offline dataset", "2. offline meta-training", "3.1 reward-free collection",
                  "4.1 self-supervised", "3.2 reward-free collection", "4.2 self-supervised",
                  "5. in-process meta-test", "6. adaptation + deployment", "7. report"):
        assert stage in out, stage
    # Round 2 collects with the SMAC bundle round 1 exported, and the online run ends finished.
    assert "with smac's bundle, round 2/2" in out
    assert "[smrl_trainer]" in out and "[smrl_explorer]" in out  # node progress streamed
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary["methods"]) == {"offline_only", "smac"}
    for m in ("offline_only", "smac"):
        rows = summary["adaptation"][m]["tasks"]
        assert [r["task"] for r in rows] == [0, 1] and all(len(r["exploration_returns"]) == 2 for r in rows)
        assert Path(rows[0]["model"]).is_file()
        assert summary["adaptation"][m]["timing"]["windows"] > 0  # the controller ran and reported timing
        # The in-process meta-test covers every held-out task; the first 2 of the 3 are deployed.
        assert [row["task"] for row in json.loads((tmp_path / "runs" / m / "eval.json").read_text())["test"]["tasks"]
                ] == [0, 1, 2]
        assert len(summary["methods"][m]["in_process"]["per_task"]) == 3
    # Each round records 1 explore + 1 prior + 1 posterior episode for each task visit of its
    # online iteration (2 of the 3 training tasks per iteration), as the trainer then asks.
    from smrl_train.smac.checkpoint import read_meta
    from smrl_train.smac.config import smac_from_yaml_dict
    from smrl_train.smac.runner import iteration_tasks

    smac = smac_from_yaml_dict(read_meta(tmp_path / "runs" / "smac")["smac"])
    for r in range(2):
        rec = EpisodeStore.open(tmp_path / "recordings" / f"round{r}")
        episodes = [rec.read_episode(p) for p in rec.episode_paths()]
        visited = sorted(iteration_tasks(smac, [0, 1, 2], r))
        assert rec.manifest["reward_labelled"] is False and len(visited) == 2
        assert [(e.task_index, e.meta["kind"]) for e in episodes] == [
            (t, kind) for t in visited for kind in ("explore", "prior", "posterior")]
    # Every bundle the explorer collected with carried the task posteriors it needs.
    for run in ("offline_only", "smac"):
        assert (tmp_path / "runs" / run / "bundle" / "task_latents.json").is_file()
    assert summary["collection"]["episodes"] == 12 and len(summary["collection"]["rounds"]) == 2
    assert summary["collection"]["kinds"] == {"explore": 4, "prior": 4, "posterior": 4}
    meta = read_meta(tmp_path / "runs" / "smac")
    assert meta["finished"] and meta["iteration"] == 2
    # TensorBoard has both runs, the online one written by two trainer processes (a round each),
    # every metrics.csv row once.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from smrl_train.smac.logs import read_csv

    for run, files in (("offline_only", 1), ("smac", 2)):
        assert len(list((tmp_path / "runs" / run).glob("events.out.tfevents.*"))) == files, run
        board = EventAccumulator(str(tmp_path / "runs" / run), size_guidance={"scalars": 0})
        board.Reload()
        assert [e.step for e in board.Scalars("train/q_loss")] == \
            [int(r["step"]) for r in read_csv(tmp_path / "runs" / run / "metrics.csv")], run
    assert summary["collection"]["steps_per_s"] > 0 and summary["verdict"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "offline_only" in report and "smac" in report and "Loop timing" in report
    assert (tmp_path / "report" / "demo.png").stat().st_size > 0
    # Both runs' adapted episode on the first held-out task (the tests render with MUJOCO_GL=egl).
    assert summary["filmstrip"]["task"] == 0 and set(summary["filmstrip"]["methods"]) == set(METHODS)
    assert "![filmstrip](filmstrip.png)" in report and (tmp_path / "report" / "filmstrip.png").stat().st_size > 0


def test_verdict_needs_the_in_process_difference_above_two_standard_errors_and_the_deployed_sign() -> None:
    from smrl_ros.demo_report import verdict

    def method(deployed: list[float], per_task: list[float]) -> dict:
        return {"deployed_return": deployed, "deployed_return_mean": sum(deployed) / len(deployed),
                "success_rate": 0.0, "in_process": {"final_return": sum(per_task) / len(per_task),
                                                    "success_rate": 0.0, "per_task": per_task}}

    base = [-40.0, -35.0, -50.0, -45.0, -30.0, -42.0]
    offline = method(base, base)
    clear = method([v + 3 for v in base], [v + 4 + 0.5 * (i % 2) for i, v in enumerate(base)])
    assert "+4.25, paired standard error 0.11" in verdict({"offline_only": offline, "smac": clear})
    assert verdict({"offline_only": offline, "smac": clear}).endswith("above offline-only on the held-out tasks "
                                                                       "at this budget.")
    noisy = method([v + 3 for v in base], [v + (8 if i % 2 else -6) for i, v in enumerate(base)])
    assert "does not show SMAC clearly above" in verdict({"offline_only": offline, "smac": noisy})
    deployed_worse = method([v - 1 for v in base], [v + 4 for v in base])
    assert "does not show SMAC clearly above" in verdict({"offline_only": offline, "smac": deployed_worse})


def test_demo_budget_meta_tests_more_held_out_tasks_than_it_deploys(tmp_path: Path) -> None:
    """The demo meta-tests every held-out task of the config and deploys the first few over ROS;
    a budget's config copy that changes the held-out count keeps the first held-out goals (the
    deployed ones) and the training tasks."""
    import dataclasses

    from smrl_ros.demo_stages import BUDGETS, demo_config
    from smrl_train.config_loader import load_config
    from smrl_train.sim.envs import make_env
    from smrl_train.sim.tasks import split_tasks

    base = Path(__file__).resolve().parent.parent / "config" / "reach.yaml"
    orig = load_config(base)
    path, cfg = demo_config(base, BUDGETS["demo"], tmp_path)
    assert path == base.resolve() and cfg.tasks.n_test > BUDGETS["demo"].adapt_tasks
    more = dataclasses.replace(BUDGETS["demo"], n_test=2 * orig.tasks.n_test)
    path, cfg = demo_config(base, more, tmp_path)
    assert path.parent == tmp_path and cfg.tasks.n_test == 2 * orig.tasks.n_test
    assert (cfg.tasks.n_train, cfg.env, cfg.data) == (orig.tasks.n_train, orig.env, orig.data)
    u = make_env(orig).unwrapped
    train, test = split_tasks(u, orig.tasks.n_train, orig.tasks.n_test, orig.tasks.seed)
    train_more, test_more = split_tasks(u, cfg.tasks.n_train, cfg.tasks.n_test, cfg.tasks.seed)
    assert [t.goal for t in train_more] == [t.goal for t in train]
    assert [t.goal for t in test_more[:len(test)]] == [t.goal for t in test]


def test_meta_test_progress_is_read_from_the_progress_bar_in_a_log(tmp_path: Path) -> None:
    from smrl_ros.demo_stages import _tqdm_position

    log = tmp_path / "eval.log"
    assert _tqdm_position(log) == "starting"
    log.write_text("loading\rmeta-test:   5%|5         | 2/40 [00:03<01:00]"
                   "\rmeta-test:  30%|###       | 12/40 [00:20<00:45]")
    assert _tqdm_position(log) == "12/40 tasks"


def test_a_meta_test_is_kept_only_when_newer_than_the_checkpoint_and_complete(tmp_path: Path) -> None:
    import os

    from smrl_ros.demo_stages import _evaluated

    ckpt, ev = tmp_path / "checkpoint.safetensors", tmp_path / "eval.json"
    assert not _evaluated(tmp_path, 3)
    ckpt.write_bytes(b"x")
    ev.write_text(json.dumps({"test": {"tasks": [{}, {}, {}]}}))
    os.utime(ckpt, (1000, 1000))
    os.utime(ev, (2000, 2000))
    assert _evaluated(tmp_path, 3)
    assert not _evaluated(tmp_path, 40)  # an older demo's 10-task meta-test is redone
    os.utime(ckpt, (3000, 3000))  # training continued after the evaluation
    assert not _evaluated(tmp_path, 3)


def test_the_terminal_shows_the_first_and_every_25th_episode_line_and_all_others() -> None:
    from smrl_ros.demo_stages import _every_25th_episode

    shown = [n for n in range(1, 101) if _every_25th_episode(f"episode {n} written (task 1 #0, 200 steps): f")]
    assert shown == [1, 25, 50, 75, 100]
    assert _every_25th_episode("task 4: smrl_sim set to {'task_goal': [0.5, 0.1, 0.3]}")
    assert _every_25th_episode("done: 175 episodes (35000 steps) written this run")
