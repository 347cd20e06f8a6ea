"""Env step rate against a raw mj_step loop of the same model, and dataset-generation throughput.

    .venv/bin/python bench/env_throughput.py [--config config/reach.yaml] [--repeats 5]

The raw loop runs the same compiled model for the same number of physics steps (one control
period = `substeps` mj_step calls) with constant controls: the ratio env/raw is the cost of
our Python env layer (action scaling, observation, reward) on top of MuJoCo. Medians of
`--repeats` runs; this machine is noisy, so compare ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
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
    print(f"{'config':<22}{'generation transitions/s':>26}{'wall s':>10}")
    for path in args.config:
        cfg = load_config(path)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            store = generate_dataset(cfg, Path(tmp) / "d", progress=False)
            wall = time.perf_counter() - t
            n = sum(len(store.read_episode(p)) for p in store.episode_paths())
        print(f"{Path(path).name:<22}{n / wall:>26.0f}{wall:>10.1f}")


if __name__ == "__main__":
    main()
