"""The online phase's collection with 1 and W worker processes (`smrl train online --workers W`).

    .venv/bin/python bench/online_collection.py [--config config/reach.yaml] [--workers 2] [--iterations 4]

A short offline run on a small dataset, then the online phase from it once per worker count,
with the recipe's collection (its episodes per task visit) and few updates, so collection is
what is timed. Per iteration, `time/collect_s` of metrics.csv; the first iteration also starts
the worker processes (reported apart). Medians over the later iterations, each as a ratio to one
worker in the same run: this machine is noisy, compare ratios. The runs' checkpoints are
compared too (the workers collect the episodes one process collects).

What limits it: one process already steps a task visit's episodes side by side (one batched
policy forward per step), and of the default recipe's 5 episodes per visit the 3 posterior ones
can only start once the loop reaches their task (their latent reads the task's buffer with the
generator that labelled the previous task's episodes, as one process does), so a visit's
episodes are parallel only within the task.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smrl_train.config_loader import load_config  # noqa: E402
from smrl_train.data.generate import generate_dataset  # noqa: E402
from smrl_train.smac.problem import problem_from_files, resolve_smac  # noqa: E402
from smrl_train.smac.runner import train_offline, train_online  # noqa: E402


def collect_seconds(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as f:
        return [float(row["time/collect_s"]) for row in csv.DictReader(f)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/reach.yaml")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=8, help="training tasks of the small dataset")
    args = ap.parse_args()

    import dataclasses

    import torch

    torch.set_num_threads(1)
    cfg = load_config(args.config)
    cfg = dataclasses.replace(cfg, tasks=dataclasses.replace(cfg.tasks, n_train=args.tasks, n_test=2))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_dataset(cfg, work / "data", progress=False)
        problem = problem_from_files(args.config, work / "data")
        smac = resolve_smac(args.config, overrides=[
            "offline.steps=20", "offline.log_every=10", f"online.iterations={args.iterations}",
            "online.updates_per_iteration=5", "online.eval_every=0", "eval.diagnostic_tasks=0"])
        offline = train_offline(problem, smac, work / "offline_only", progress=False)
        times, tensors = {}, {}
        for w in (1, args.workers):
            run = train_online(problem, work / f"smac_w{w}", offline_run=offline, cfg=smac, progress=False, workers=w)
            times[w] = collect_seconds(run)
            tensors[w] = load_file(str(run / "checkpoint.safetensors"))
    same = tensors[1].keys() == tensors[args.workers].keys() and all(
        (tensors[1][k] == tensors[args.workers][k]).all() for k in tensors[1])
    base = statistics.median(times[1][1:])
    print(f"online collection, {cfg.env.family} ({args.tasks} training tasks, "
          f"{smac.online.tasks_per_iteration} tasks per iteration), {args.iterations} iterations:")
    print("| workers | first iteration (s) | later iterations, median (s) | vs 1 worker |")
    print("|---|---|---|---|")
    for w, t in times.items():
        later = statistics.median(t[1:])
        print(f"| {w} | {t[0]:.2f} | {later:.2f} | {base / later:.2f}x |")
    print(f"checkpoints identical: {same}")


if __name__ == "__main__":
    main()
