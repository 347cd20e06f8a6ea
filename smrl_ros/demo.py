"""``make demo``: the whole mission over ROS 2 on the default reach family, stage by stage.

    python -m smrl_ros.demo [--out demo_out] [--budget tiny|demo] [--config config/reach.yaml]

1. **data**: the reward-labelled offline dataset (mixed-competence behaviour policies);
2. **offline meta-training** by the training node (``smrl_trainer``), which exports the
   offline-only adaptation bundle;
3. **reward-free collection** by the exploration node (``smrl_explorer``) on the sim bridge in
   lockstep mode, over DDS, with the newest bundle: per task, deterministic prior-z episodes
   and stochastic prior-z and posterior-z ones (the bundle's ``task_latents.json``), as SMAC
   collects; no reward is published or read;
4. **self-supervised training** (SMAC) by the training node on the recorded episodes so far,
   continuing the online run up to this round's share of its iterations; it exports the SMAC
   bundle, which the next round of 3 collects with (``rounds`` rounds of 3-4: SMAC collects
   with its current policy);
5. **in-process meta-test** (``smrl eval``) of both runs on all held-out tasks, one process
   per run side by side: the statistically stronger comparison (many runs per task);
6. **adaptation and deployment** on the first held-out test tasks, for both bundles side by
   side (one ROS domain each): the adapter (``smrl_adapter``) explores each task with rewards
   from the sim bridge (realtime), infers z, writes the adapted policy and hot-loads it into
   the controller (``smrl_controller``), which then runs it for one episode;
7. **report** (``report/report.md``, ``report/demo.png``, ``report/filmstrip.png``,
   ``report/summary.json``): per held-out task, offline-only vs SMAC: exploration returns,
   deployed return and success, the in-process meta-test of the same runs, the controller's
   loop timing, the collection rate and the wall time of every stage; and pictures of both
   runs' adapted episode on the first held-out task (skipped with a note where MuJoCo cannot
   render: ``make demo`` sets ``MUJOCO_GL=egl`` unless it is set).

Every node runs as its own process, started from the graph descriptions of
:mod:`smrl_ros.graphs` with the parameter files of ``config/``, exactly as the launch files
start them on a ROS 2 install; node logs stream here with a prefix and are kept in ``logs/``.
Stages whose results exist are not redone, so an interrupted demo continues where it stopped.
``--budget tiny`` shrinks everything to about a minute (the test suite runs it).

This module runs the mission (:func:`main`); the budgets and every stage are in
:mod:`smrl_ros.demo_stages`, the report and the verdict in :mod:`smrl_ros.demo_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from smrl_ros.demo_report import summarise, verdict, write_filmstrip, write_report
from smrl_ros.demo_stages import (
    BUDGETS,
    METHODS,
    Stage,
    demo_config,
    stage_adapt,
    stage_data,
    stage_meta_test,
    stage_self_supervised,
    stage_train,
)
from smrl_train.config import package_root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the whole smrl mission over ROS 2 (make demo)")
    parser.add_argument("--out", default="demo_out", help="folder for everything the demo writes")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="demo")
    parser.add_argument("--config", default="config/reach.yaml", help="the task family config")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (both runs and the explorer); the data and the tasks stay the config's")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a smac key of both runs, e.g. --set gradients=manual (repeatable)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    budget = BUDGETS[args.budget]
    if args.seed:
        budget = dataclasses.replace(budget, seed=args.seed, smac=(*budget.smac, f"seed={args.seed}"))
    if args.overrides:
        budget = dataclasses.replace(budget, smac=(*budget.smac, *args.overrides))
    out = Path(args.out).resolve()
    t_start = time.monotonic()
    Stage.times, Stage.load = {}, {}
    base = Path(args.config) if Path(args.config).exists() else package_root() / args.config
    config, cfg = demo_config(base, budget, out / "config")
    data, runs, rec, logs = out / "data" / cfg.env.family, out / "runs", out / "recordings", out / "logs"

    with Stage("data", f"1. offline dataset ({cfg.env.family}, {cfg.tasks.n_train} train tasks, mixed-competence "
                       "behaviour)"):
        data_summary = stage_data(cfg, data)
    with Stage("offline", "2. offline meta-training by the training node (smrl_trainer)"):
        stage_train(config, data, runs, budget, ["offline"], logs / "train_offline")
    collection = stage_self_supervised(config, data, runs, rec, budget, cfg, logs)
    if budget.evaluate:
        with Stage("meta_test", f"5. in-process meta-test of both runs on all {cfg.tasks.n_test} held-out tasks "
                                "(smrl eval, one process per run)"):
            stage_meta_test(config, data, runs, logs / "meta_test", cfg.tasks.n_test)
    n_test = cfg.tasks.n_test if budget.adapt_tasks is None else min(budget.adapt_tasks, cfg.tasks.n_test)
    tasks = list(range(n_test))
    with Stage("adapt_deploy", f"6. adaptation + deployment on {n_test} held-out tasks: adapter -> controller on "
                               "the sim bridge (realtime), offline-only and SMAC side by side"):
        adapt = stage_adapt({m: runs / m / "bundle" for m in METHODS}, config, cfg, tasks, out / "adapt")
    with Stage("report", "7. report"):
        from smrl_train.smac.problem import resolve_smac

        methods = summarise(adapt, runs)
        summary = {"budget": budget.name, "arm": Path(cfg.arm.urdf).stem,
                   "n_train": cfg.tasks.n_train, "n_test": cfg.tasks.n_test,
                   "eval_runs_per_task": resolve_smac(config, overrides=budget.smac).eval.runs_per_task,
                   "command": f"python -m smrl_ros.demo --budget {budget.name}"
                              + (f" --seed {budget.seed}" if budget.seed else "")
                              + "".join(f" --set {o}" for o in args.overrides), "seed": budget.seed,
                   "gradients": resolve_smac(config, overrides=budget.smac).gradients,
                   "data": {k: data_summary[k] for k in ("episodes", "transitions")}, "collection": collection,
                   "adaptation": adapt, "methods": methods, "verdict": verdict(methods),
                   "filmstrip": write_filmstrip(out / "report", config, data, runs, task=tasks[0]),
                   "stage_seconds": dict(Stage.times), "stage_load_average": dict(Stage.load),
                   "wall_s": time.monotonic() - t_start}
        report = write_report(out / "report", summary)
        summary["wall_s"] = time.monotonic() - t_start
        (out / "report" / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(f"\n{summary['verdict']}")
    print(f"report: {report} (+ demo.png, filmstrip.png, summary.json); demo finished in "
          f"{summary['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
