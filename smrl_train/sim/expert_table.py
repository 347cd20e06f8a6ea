"""The scripted experts' success table, after the default offline dataset (the first ``make demo``).

``python -m smrl_train.sim.expert_table --out DIR``, stage by stage:

1. generate the reward-labelled offline dataset of the default reach family;
2. roll out the scripted experts on the train and held-out test tasks of both families on
   both arms and print their success table (the behaviour data's upper anchor).

``make demo`` now runs the whole mission over ROS (:mod:`smrl_ros.demo`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TypedDict

import numpy as np
from tqdm import tqdm

from smrl_train.config_loader import load_config
from smrl_train.data.generate import dataset_summary, generate_dataset
from smrl_train.sim.envs import ArmTaskEnv, make_env
from smrl_train.sim.experts import JacobianExpert
from smrl_train.sim.tasks import split_tasks

REPO = Path(__file__).resolve().parents[2]

# One line of the table: an arm and family's experts on one split of its tasks.
ExpertRow = TypedDict("ExpertRow", {"config": str, "arm": str, "family": str, "split": str, "tasks": int,
                                    "success": float, "return": float})


def expert_table(config_names: list[str]) -> list[ExpertRow]:
    rows: list[ExpertRow] = []
    for name in config_names:
        cfg = load_config(REPO / "config" / f"{name}.yaml")
        env = make_env(cfg)
        u = env.unwrapped
        assert isinstance(u, ArmTaskEnv)
        expert = JacobianExpert(u.arm, u.max_step, u.sim.home, u.family)
        train, test = split_tasks(u, cfg.tasks.n_train, cfg.tasks.n_test, cfg.tasks.seed)
        for split, tasks in (("train", train), ("test", test)):
            successes, returns = [], []
            for task in tqdm(tasks, desc=f"expert {name} {split}", unit="task", leave=False):
                u.set_task(task)
                obs, _ = env.reset(seed=task.index)
                total = 0.0
                for _ in range(cfg.env.episode_length):
                    obs, r, _, _, info = env.step(expert.act(obs, np.array(task.goal)))
                    total += float(r)
                successes.append(info["success"])
                returns.append(total)
            rows.append({"config": name, "arm": u.arm.name, "family": u.family, "split": split,
                         "tasks": len(tasks), "success": float(np.mean(successes)),
                         "return": float(np.mean(returns))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="run the smrl demo on the default sim setup")
    parser.add_argument("--out", default="demo_out", help="folder for everything the demo writes")
    args = parser.parse_args()
    out = Path(args.out)
    t0 = time.time()

    print("== 1. offline dataset (reach, smrl_arm): mixed-competence behaviour policies")
    cfg = load_config(REPO / "config" / "reach.yaml")
    store = generate_dataset(cfg, out / "data" / "reach")
    s = dataset_summary(store)
    print(f"   {s['episodes']} episodes, {s['transitions']} transitions over {s['tasks']} train tasks; "
          f"return {s['return_mean']:.1f} +- {s['return_std']:.1f}; "
          + ", ".join(f"{k} {v['return_mean']:.1f}" for k, v in s["by_behaviour"].items()))

    print("== 2. scripted experts on train and held-out test tasks")
    rows = expert_table(["reach", "push", "reach_panda", "push_panda"])
    print(f"   {'arm':<12}{'family':<8}{'split':<7}{'tasks':>6}{'success':>9}{'mean return':>13}")
    for r in rows:
        print(f"   {r['arm']:<12}{r['family']:<8}{r['split']:<7}{r['tasks']:>6}{100 * r['success']:>8.0f}%"
              f"{r['return']:>13.1f}")
    print(f"demo finished in {time.time() - t0:.0f} s; outputs in {out}/")


if __name__ == "__main__":
    main()
