"""Do episodes recorded over ROS train the same as episodes recorded in-process?

    .venv/bin/python bench/ros_vs_inprocess.py --from demo_out [--seeds 0 1 2] [--jobs 2]

Uses a finished ``make demo`` folder: its dataset, its offline run and the reward-free episodes
``smrl_explorer`` recorded over DDS on the sim bridge with the offline bundle in the demo's
first round (``recordings/round0``). It records the
same episodes per task in-process, kind by kind (:func:`smrl_train.robot.exploration.collect_in_process`:
same bundle, task posteriors, latent schedule and seeds, the gym env instead of the bridge), then runs the
self-supervised phase from the same offline run on each recording, for each seed, and meta-tests
every run on the held-out tasks. Prints final return and success per source and seed, and
whether the two sources differ by more than the seed spread. Results go to ``--out``
(``summary.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SOURCES = ("ros", "inprocess")


def record_in_process(demo: Path, config: Path, out: Path) -> Path:
    """The in-process twin of the explorer's recording (same tasks and episode counts)."""
    from smrl_train.config_loader import load_config
    from smrl_train.data.episode_recorder import EpisodeRecorder
    from smrl_train.data.recordings import recording_manifest
    from smrl_train.data.store import EpisodeStore
    from smrl_train.robot.exploration import LatentExplorer, collect_in_process
    from smrl_train.robot.runtime import LatentPolicyRuntime
    from smrl_train.robot.task_latents import FILE_NAME, TaskLatents
    from smrl_train.sim.envs import ArmTaskEnv

    ros = EpisodeStore.open(demo / "recordings" / "round0")
    if (out / "manifest.json").exists():
        return out
    cfg = load_config(config)
    data = EpisodeStore.open(demo / "data" / cfg.env.family)
    bundle = demo / "runs" / "offline_only" / "bundle"
    policy = LatentPolicyRuntime(bundle / "policy.onnx")
    store = EpisodeStore.create(out, recording_manifest(policy.info, episode_length=cfg.env.episode_length,
                                                        generator={"name": "in-process twin"},
                                                        dataset_manifest=data.manifest))
    kinds: dict[int, list[str]] = {}  # per task, the kind of each recorded episode, in order
    for path in ros.episode_paths():
        ep = ros.read_episode(path)
        kinds.setdefault(ep.task_index, []).append(ep.meta.get("kind", "explore"))
    latents = TaskLatents.load(bundle / FILE_NAME) if any("posterior" in k for k in kinds.values()) else None
    env = ArmTaskEnv(cfg)
    explorer = LatentExplorer(policy)
    tasks = {t.index: t for t in data.tasks("train")}
    t0 = time.perf_counter()
    steps = 0
    for task, task_kinds in sorted(kinds.items()):
        steps += collect_in_process(env, explorer, EpisodeRecorder(store, task), tasks[task], len(task_kinds), 0,
                                    cfg.env.episode_length, kinds=task_kinds, latents=latents)
    print(f"in-process recording: {sum(len(k) for k in kinds.values())} episodes, {steps} steps at "
          f"{steps / (time.perf_counter() - t0):.0f} steps/s")
    return out


def train_and_eval(args: tuple[str, int, str, str, str, str]) -> dict[str, object]:
    source, seed, config, data, offline, rec = args
    import torch

    from smrl_train.data.store import EpisodeStore
    from smrl_train.smac.checkpoint import read_meta
    from smrl_train.smac.config import smac_from_yaml_dict
    from smrl_train.smac.problem import problem_from_files
    from smrl_train.smac.runner import evaluate_run, train_online
    from smrl_train.smac.sources import RecordedEpisodeSource, load_recordings

    torch.set_num_threads(1)
    problem = problem_from_files(config, data)
    cfg = dataclasses.replace(smac_from_yaml_dict(read_meta(offline)["smac"]), seed=seed)
    run = Path(rec).parent.parent / "bench_ros_vs_inprocess" / source / f"seed{seed}"
    if not (run / "eval.json").exists():
        arrays = load_recordings([rec], EpisodeStore.open(data).manifest)
        train_online(problem, run, offline_run=offline, labels="decoder", cfg=cfg,
                     source=RecordedEpisodeSource(arrays), resume=(run / "checkpoint.safetensors").exists(),
                     progress=False, method=f"smac_{source}")
        evaluate_run(problem, run, progress=False, diagnostic=False)
    test = json.loads((run / "eval.json").read_text())["test"]
    return {"source": source, "seed": seed, "final_return": test["final_return"], "success_rate": test["success_rate"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="demo", default="demo_out", help="a finished make demo folder")
    parser.add_argument("--config", default="config/reach.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    demo = Path(args.demo).resolve()
    config = Path(args.config).resolve()
    from smrl_train.config_loader import load_config

    family = load_config(config).env.family
    data, offline = demo / "data" / family, demo / "runs" / "offline_only"
    recs = {"ros": demo / "recordings" / "round0",
            "inprocess": record_in_process(demo, config, demo / "recordings" / "inprocess")}
    jobs = [(s, seed, str(config), str(data), str(offline), str(recs[s])) for seed in args.seeds for s in SOURCES]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(train_and_eval, jobs))
    print(f"\nself-supervised phase from the same offline run, {len(args.seeds)} seeds "
          f"({time.perf_counter() - t0:.0f} s):")
    print(f"{'source':<11}{'seed':>5}{'final return':>14}{'success':>9}")
    for r in rows:
        print(f"{r['source']:<11}{r['seed']:>5}{r['final_return']:>14.2f}{r['success_rate']:>9.2f}")
    stats = {}
    for s in SOURCES:
        fr = np.array([r["final_return"] for r in rows if r["source"] == s])
        sr = np.array([r["success_rate"] for r in rows if r["source"] == s])
        stats[s] = {"final_return_mean": float(fr.mean()), "final_return_std": float(fr.std(ddof=1)) if fr.size > 1
                    else 0.0, "success_rate_mean": float(sr.mean())}
        print(f"{s:<11} mean {fr.mean():.2f} ± {stats[s]['final_return_std']:.2f}, success {sr.mean():.2f}")
    diff = stats["ros"]["final_return_mean"] - stats["inprocess"]["final_return_mean"]
    spread = max(stats["ros"]["final_return_std"], stats["inprocess"]["final_return_std"])
    same = abs(diff) <= spread
    print(f"difference ros - in-process {diff:+.2f}; seed spread {spread:.2f}: "
          + ("the same within seed spread" if same else "LARGER than the seed spread"))
    out = demo / "bench_ros_vs_inprocess"
    out.mkdir(exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"rows": rows, "stats": stats, "difference": diff,
                                                  "seed_spread": spread, "within_spread": bool(same)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
