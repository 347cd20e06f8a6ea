"""The method comparison: per seed, one offline run per recipe shared by its online methods.

Layout under ``out``::

    seed0/offline_only/          offline phase, default recipe  (also the "offline-only" row)
    seed0/smac/ seed0/oracle/    online phases from it (decoder labels / true rewards)
    seed0/offline_only_paper/    offline phase, paper recipe
    seed0/smac_paper/ seed0/oracle_paper/
    seed0/*_return_tuned/        the same for the return-tuned recipe
    seed0/meta_bc/               meta behaviour cloning baseline
    seed0/<ablation>/            online (or offline + online) runs with config overrides

Every stage is skipped when its run has finished and been evaluated, and resumed when it has
a checkpoint, so re-running the same command finishes an interrupted experiment. Seeds can run
as parallel processes (``jobs``), each single-threaded by default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from smrl_train.smac.config import DEFAULT_VARIANT, SmacConfig

# (report-name suffix, variant) of the recipes an experiment compares; the default has no suffix.
RECIPES = (("", DEFAULT_VARIANT), ("_paper", "paper"), ("_return_tuned", "return_tuned"))
BASE_METHODS = tuple(f"{m}{suffix}" for suffix, _ in RECIPES for m in ("offline_only", "smac", "oracle")) + ("meta_bc",)


@dataclass(frozen=True)
class Ablation:
    """An extra row: ``labels`` (decoder/true/none) and ``overrides`` (``section.key=value``)
    applied to the default recipe. ``none`` is an offline-only row (e.g. the offline phase
    trained for as many updates as offline + online, a matched-budget baseline). Otherwise
    overrides of ``network.``/``offline.``/``loss.`` keys get their own offline run, and the
    online phase starts from the shared default offline run."""

    name: str
    labels: str
    overrides: tuple[str, ...]

    @staticmethod
    def parse(spec: str) -> Ablation:
        """``name:labels:key=value,key=value``, e.g.
        ``smac_no_explore_ctx:decoder:online.explore_context_fraction=0,online.explore_episodes=0``."""
        parts = spec.split(":", 2)
        if len(parts) != 3 or parts[1] not in ("decoder", "true", "none"):
            raise ValueError(f"ablation {spec!r}: expected name:decoder|true|none:key=value,...")
        return Ablation(parts[0], parts[1], tuple(p for p in parts[2].split(",") if p))

    @property
    def needs_offline(self) -> bool:
        return any(o.split("=")[0].strip().split(".")[0] in ("network", "offline", "loss") for o in self.overrides)


@dataclass(frozen=True)
class ExperimentSpec:
    config: str
    data: str
    out: str
    smac: SmacConfig
    methods: tuple[str, ...] = BASE_METHODS
    ablations: tuple[Ablation, ...] = ()
    threads: int = 1
    progress: bool = True
    # Training and held-out tasks of each run's `smrl diagnose` (0: none).
    diagnose_tasks: int = 20
    # Where the updates run (--device) and how many processes collect online episodes (--workers).
    device: str = "cpu"
    workers: int = 1


def _finished(run_dir: Path) -> bool:
    from smrl_train.smac.checkpoint import CheckpointError, read_meta

    try:
        return bool(read_meta(run_dir).get("finished")) and (run_dir / "eval.json").exists()
    except CheckpointError:
        return False


def _has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoint.safetensors").exists()


# The parts of a run's CPU that cost.json names: training (its learning curve included), the
# learning curve alone (an online run's periodic test-task evaluation), the meta-test, diagnose.
COST_STAGES = ("training", "learning_curve", "meta_test", "diagnose")


def cpu_seconds() -> float:
    """CPU seconds so far of this process (every thread) and of its children that have ended
    (the online phase's collection workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def record_cost(run_dir: Path, wall_s: float, stages: dict[str, float],
                learning_curve_s: float | None = None) -> None:
    """Add one invocation's wall seconds and its CPU seconds by stage (``training``,
    ``meta_test``, ``diagnose``; their sum is the run's ``cpu_s``) to the run's ``cost.json``;
    ``learning_curve_s`` is the run's learning-curve CPU so far (its checkpoint keeps the count),
    part of ``training``.

    CPU seconds are the process's and its collection workers', so a benchmark's CPU budget is
    the sum over its runs whatever ``--jobs`` ran them side by side. A stage resumed after a kill
    adds the resumed part to what the finished invocations recorded (the killed one's share is
    lost)."""
    path = run_dir / "cost.json"
    cost: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"cpu_s": 0.0, "wall_s": 0.0}
    by_stage: dict[str, float] = dict(cost.get("stages", {}))
    for name, seconds in stages.items():
        by_stage[name] = round(by_stage.get(name, 0.0) + seconds, 1)
    if learning_curve_s is not None:
        by_stage["learning_curve"] = round(learning_curve_s, 1)
    cost = {"cpu_s": round(cost["cpu_s"] + sum(stages.values()), 1), "wall_s": round(cost["wall_s"] + wall_s, 1),
            "stages": {k: by_stage[k] for k in COST_STAGES if k in by_stage}}
    path.write_text(json.dumps(cost) + "\n")


def run_seed(spec: ExperimentSpec, seed: int) -> dict[str, Any]:
    """All stages of one seed; returns {method: eval summary}."""
    import torch

    from smrl_train.smac.checkpoint import read_meta
    from smrl_train.smac.problem import apply_overrides, problem_from_files
    from smrl_train.smac.runner import diagnose_run, evaluate_run, train_offline, train_online

    torch.set_num_threads(spec.threads)
    problem = problem_from_files(spec.config, spec.data)
    root = Path(spec.out) / f"seed{seed}"
    def recipe(variant: str) -> SmacConfig:
        # The default recipe keeps the spec's own overrides; the baselines are their recipes.
        base = spec.smac if spec.smac.variant == variant else spec.smac.with_variant(variant)
        return dataclasses.replace(base, seed=seed)

    default = recipe(DEFAULT_VARIANT)
    results: dict[str, Any] = {}

    def stage(name: str, fn: Any) -> None:
        run_dir = root / name
        if _finished(run_dir):
            results[name] = json.loads((run_dir / "eval.json").read_text())["test"]
            return
        t0, cpu = time.perf_counter(), [cpu_seconds()]
        fn(run_dir, _has_checkpoint(run_dir))
        cpu.append(cpu_seconds())
        res = evaluate_run(problem, run_dir, progress=spec.progress, diagnostic=False, device=spec.device)
        cpu.append(cpu_seconds())
        if spec.diagnose_tasks and name != "meta_bc":
            diagnose_run(problem, run_dir, n_tasks=spec.diagnose_tasks, episodes=(1, 2), progress=spec.progress,
                         device=spec.device)
        cpu.append(cpu_seconds())
        stages = dict(zip(("training", "meta_test", "diagnose"), (b - a for a, b in zip(cpu, cpu[1:]))))
        record_cost(run_dir, wall_s=time.perf_counter() - t0, stages=stages,
                    learning_curve_s=read_meta(run_dir).get("curve_cpu_s"))
        results[name] = res["test"]
        print(f"[seed {seed}] {name:<22} final return {res['test']['final_return']:8.2f}  "
              f"success {res['test']['success_rate']:.2f}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    def offline(cfg: SmacConfig, algo: str = "smac", method: str | None = None) -> Any:
        return lambda d, resume: train_offline(problem, cfg, d, algo=algo, method=method, resume=resume,
                                               progress=spec.progress, device=spec.device)

    def online(parent: str, labels: str, cfg: SmacConfig | None = None, method: str | None = None) -> Any:
        return lambda d, resume: train_online(problem, d, offline_run=root / parent, labels=labels, cfg=cfg,
                                              method=method, resume=resume, progress=spec.progress,
                                              device=spec.device, workers=spec.workers)

    wanted = set(spec.methods)
    shared = any(not a.needs_offline and a.labels != "none" for a in spec.ablations)
    for suffix, variant in RECIPES:
        rows = {f"offline_only{suffix}", f"smac{suffix}", f"oracle{suffix}"}
        if not (wanted & rows or (suffix == "" and shared)):
            continue
        cfg = default if suffix == "" else recipe(variant)
        stage(f"offline_only{suffix}", offline(cfg))
        if f"smac{suffix}" in wanted:
            stage(f"smac{suffix}", online(f"offline_only{suffix}", "decoder"))
        if f"oracle{suffix}" in wanted:
            stage(f"oracle{suffix}", online(f"offline_only{suffix}", "true"))
    if "meta_bc" in wanted:
        stage("meta_bc", offline(default, algo="meta_bc"))
    for ab in spec.ablations:
        cfg = apply_overrides(default, ab.overrides)
        if ab.labels == "none":
            stage(ab.name, offline(cfg, method=ab.name))
            continue
        parent = "offline_only"
        if ab.needs_offline:
            parent = f"{ab.name}_offline"
            stage(parent, offline(cfg, method=parent))
        stage(ab.name, online(parent, ab.labels, cfg, method=ab.name))
    return results


def run_experiment(spec: ExperimentSpec, seeds: Sequence[int], jobs: int = 1) -> dict[int, dict[str, Any]]:
    """Run every seed (in ``jobs`` parallel processes) and return {seed: {method: result}}."""
    Path(spec.out).mkdir(parents=True, exist_ok=True)
    if jobs <= 1 or len(seeds) <= 1:
        return {s: run_seed(spec, s) for s in seeds}
    quiet = dataclasses.replace(spec, progress=False)
    os.environ.setdefault("OMP_NUM_THREADS", str(spec.threads))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {s: pool.submit(run_seed, quiet, s) for s in seeds}
        return {s: f.result() for s, f in futures.items()}


def method_table(summary: dict[str, Any]) -> str:
    """A plain-text table of a report summary (for the demo and the CLI)."""
    from smrl_train.smac.report import ORDER

    names = [n for n in ORDER if n in summary["methods"]] + sorted(n for n in summary["methods"] if n not in ORDER)
    lines = [f"{'method':<22}{'seeds':>6}{'final return':>20}{'success':>16}"]
    for n in names:
        m = summary["methods"][n]
        fr, sr = m["final_return_stats"], m["success_rate_stats"]
        lines.append(f"{n:<22}{len(m['seeds']):>6}{fr['mean']:>12.2f} ± {fr['std']:<5.2f}"
                     f"{sr['mean']:>9.2f} ± {sr['std']:<4.2f}")
    lines.append(f"{'random policy':<22}{'':>6}{summary['random_policy_final_return']:>12.2f}")
    return "\n".join(lines)
