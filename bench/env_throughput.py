"""Env step rate against a raw mj_step loop of the same model, and dataset-generation throughput.

    .venv/bin/python bench/env_throughput.py [--config config/reach.yaml] [--repeats 5]

The raw loop runs the same compiled model for the same number of physics steps (one control
period = `substeps` mj_step calls) with constant controls: the ratio env/raw is the cost of
our Python env layer (action scaling, observation, reward) on top of MuJoCo. Medians of
`--repeats` runs; this machine is noisy, so compare ratios, not absolute rates.

Then dataset generation (`smrl data generate --workers W`): transitions/s with 1, 2 and one
worker per core on `--worker-tasks` tasks, each as a ratio to one worker in the same run, and
how generation grows with the number of training tasks (`--tasks`, default 40 200 1000; the
store's size beside it), with one worker per core.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mujoco
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smrl_train.config_loader import load_config  # noqa: E402
from smrl_train.data.generate import generate_dataset  # noqa: E402
from smrl_train.sim.envs import make_env  # noqa: E402


def env_rate(cfg, steps: int) -> float:
    env = make_env(cfg)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, env.action_space.shape[0])).astype(np.float32)
    t = time.perf_counter()
    for i in range(steps):
        _, _, term, trunc, _ = env.step(actions[i])
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t)


def raw_rate(cfg, steps: int) -> float:
    sim = make_env(cfg).unwrapped.sim
    model, data, n = sim.model, sim.data, sim.substeps
    data.ctrl[:] = sim.home if model.nu == len(sim.home) else data.ctrl
    t = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(model, data, nstep=n)
    return steps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", nargs="*", default=["config/reach.yaml", "config/push.yaml"])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker-tasks", type=int, default=20, help="training tasks of the workers' comparison")
    parser.add_argument("--tasks", type=int, nargs="*", default=[40, 200, 1000], help="training task counts")
    args = parser.parse_args()
    print(f"{'config':<22}{'env steps/s':>14}{'raw mj_step periods/s':>24}{'ratio env/raw':>16}")
    for path in args.config:
        cfg = load_config(path)
        env_rates = [env_rate(cfg, args.steps) for _ in range(args.repeats)]
        raw_rates = [raw_rate(cfg, args.steps) for _ in range(args.repeats)]
        ratios = [e / r for e, r in zip(env_rates, raw_rates)]
        print(f"{Path(path).name:<22}{statistics.median(env_rates):>14.0f}{statistics.median(raw_rates):>24.0f}"
              f"{statistics.median(ratios):>16.2f}")
    print()
    workers = sorted({1, 2, os.cpu_count() or 1})
    print(f"{'config':<22}{'workers':>8}{'generation transitions/s':>26}{'ratio to 1 worker':>20}")
    for path in args.config:
        cfg = with_tasks(load_config(path), args.worker_tasks)
        rates = {w: [generation(cfg, w)[0] for _ in range(args.repeats)] for w in workers}
        for w in workers:
            ratios = [r / one for r, one in zip(rates[w], rates[1])]
            print(f"{Path(path).name:<22}{w:>8}{statistics.median(rates[w]):>26.0f}{statistics.median(ratios):>20.2f}")
    print()
    w = max(workers)
    print(f"{'config':<22}{'tasks':>7}{'episodes':>10}{'wall s':>9}{'transitions/s':>15}{'store MB':>10}"
          f"   ({w} workers)")
    for path in args.config:
        for n in args.tasks:
            rate, wall, episodes, size = generation(with_tasks(load_config(path), n), w)
            print(f"{Path(path).name:<22}{n:>7}{episodes:>10}{wall:>9.1f}{rate:>15.0f}{size / 1e6:>10.1f}")


def with_tasks(cfg, n_train: int):
    return dataclasses.replace(cfg, tasks=dataclasses.replace(cfg.tasks, n_train=n_train))


def generation(cfg, workers: int) -> tuple[float, float, int, int]:
    """(transitions/s, wall s, episodes, bytes) of generating ``cfg``'s dataset."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = generate_dataset(cfg, Path(tmp) / "d", progress=False, workers=workers)
        wall = time.perf_counter() - t
        paths = store.episode_paths()
        n = sum(len(store.read_episode(p)) for p in paths)
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return n / wall, wall, len(paths), size

if __name__ == "__main__":
    main()
