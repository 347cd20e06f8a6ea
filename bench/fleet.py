"""A fleet of simulated arms recording into one store: steps/s in total and per arm, N = 1, 2, 4.

    .venv/bin/python bench/fleet.py [--arms 1 2 4] [--repeats 3] [--config config/reach.yaml]

Each run starts ``launch/fleet.launch.py``'s graph (N sim bridges in lockstep and N explorers,
each pair under /armK, in one DDS domain) on a small dataset's training tasks with a random
policy bundle, and reads every episode's lockstep rate from the explorers' logs ("... steps at
X steps/s"). Per arm: the median episode rate; in total: the sum over the arms running side by
side. The ratio is the total against the one-arm rate of the same repeat. On 2 cores every arm
is two processes that wait on each other through DDS, so more than two arms share the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))  # bundle_helpers, conftest: a random bundle and a small config

RATE = re.compile(r"\[(arm\d+)/smrl_explorer\].*steps at (\d+) steps/s")


def fleet_rates(arms: int, data: Path, bundle: Path, store: Path, config: str, episode_length: int,
                episodes: int) -> dict[str, float]:
    """Median episode rate (steps/s) of each arm in one fleet run."""
    from smrl_ros.probe import claim_domain_id
    from smrl_ros.run_graph import main

    claim = claim_domain_id()
    out = io.StringIO()
    os.environ["ROS_DOMAIN_ID"] = str(claim.domain_id)
    try:
        with contextlib.redirect_stdout(out):
            code = main(["fleet.launch.py", f"arms:={arms}", f"bundle:={bundle}", f"store:={store}",
                         f"dataset:={data}", f"config:={config}", f"episode_length:={episode_length}",
                         f"episodes_per_task:={episodes}"])
    finally:
        claim.release()
    if code != 0:
        raise SystemExit(f"fleet of {arms} failed:\n{out.getvalue()[-3000:]}")
    per_arm: dict[str, list[float]] = {}
    for arm, rate in RATE.findall(out.getvalue()):
        per_arm.setdefault(arm, []).append(float(rate))
    return {arm: statistics.median(r) for arm, r in sorted(per_arm.items())}


def main() -> None:
    from smrl_train.data.generate import generate_dataset

    from bundle_helpers import random_bundle
    from conftest import small_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="reach", help="a config name of test/conftest.py's small_config")
    parser.add_argument("--episode-length", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cfg = small_config(args.config, n_train=8, n_test=1, episode_length=args.episode_length)
        generate_dataset(cfg, tmp / "data", progress=False)
        bundle = random_bundle(cfg, tmp / "bundle")
        config = str(REPO / "config" / f"{args.config}.yaml")
        totals: dict[int, list[float]] = {n: [] for n in args.arms}
        per_arm: dict[int, list[float]] = {n: [] for n in args.arms}
        for r in range(args.repeats):
            for n in args.arms:
                rates = fleet_rates(n, tmp / "data", bundle, tmp / f"store{r}_{n}", config, args.episode_length,
                                    args.episodes)
                totals[n].append(sum(rates.values()))
                per_arm[n].append(statistics.median(rates.values()))
        one = totals[min(args.arms)]
        print(f"fleet of simulated arms (lockstep over DDS), medians of {args.repeats}")
        print(f"{'arms':>5}{'total steps/s':>15}{'per arm':>10}{'total / ' + str(min(args.arms)) + ' arm':>16}")
        for n in args.arms:
            ratio = statistics.median(t / o for t, o in zip(totals[n], one))
            print(f"{n:>5}{statistics.median(totals[n]):>15.0f}{statistics.median(per_arm[n]):>10.0f}{ratio:>16.2f}")


if __name__ == "__main__":
    main()
