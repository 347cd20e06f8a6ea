"""The stages of ``make demo`` (:mod:`smrl_ros.demo`): how big the demo is, and each job it runs.

:class:`Budget` (and :data:`BUDGETS`) sizes the mission; :class:`Stage` prints and times a
stage. The stage functions each start their node graphs from :mod:`smrl_ros.graphs` as
subprocesses over DDS and return what the report needs: the offline dataset
(:func:`stage_data`), the training node's phases (:func:`stage_train`), reward-free collection
by the explorer (:func:`stage_explore`) in rounds with the self-supervised phase
(:func:`stage_self_supervised`), the in-process meta-test (:func:`stage_meta_test`), and
adaptation + deployment of both bundles side by side (:func:`stage_adapt`). Stages whose
results exist are not redone.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from smrl_ros.graph_runner import GraphRunner, GraphSpec
from smrl_ros.graphs import adapt_graph, explore_graph, train_graph
from smrl_ros.run_graph import LogTail
from smrl_train.child_processes import die_with_parent
from smrl_train.config import SmrlConfig, package_root
from smrl_train.config_loader import load_config
from smrl_train.config_schema import to_dict

METHODS = ("offline_only", "smac")


@dataclass(frozen=True)
class Budget:
    """How big the demo is. ``smac`` overrides go to the training node (``section.key=value``)."""

    name: str
    n_train: int | None  # None: the config's (and likewise below)
    n_test: int | None  # held-out tasks of the in-process meta-test; adapt_tasks of them are deployed
    episode_length: int | None
    episodes_per_behaviour: int | None
    smac: tuple[str, ...]
    adapt_tasks: int | None  # held-out tasks adapted to over ROS (None: all)
    # Collect-then-train rounds of the self-supervised phase: each round records with the newest
    # bundle, then continues the online run for its share of the iterations (SMAC collects with
    # its current policy; one round on the offline policy's episodes alone does not improve it).
    rounds: int
    evaluate: bool  # in-process meta-test of both runs on every held-out task (a stage of its own)
    threads: int = 1  # torch threads of the training node
    seed: int = 0  # training seed of both runs (smac.seed) and of the explorer's rounds (--seed)


BUDGETS = {
    # The demo: the default reach family and the default (CPU-sized) SMAC recipe of
    # config/reach.yaml; full-budget results live in docs/results/.
    # The learning curve's periodic meta-tests are skipped (eval_every=0): the final meta-test
    # of each run and the adaptation over ROS are the demo's comparison.
    # Per task visit of a round's iterations the explorer records the recipe's in-process plan
    # per visit (episodes_per_visit: for success_tuned 2 explore + 3 posterior episodes).
    # The in-process meta-test uses 8 runs per task on the 40 held-out tasks (320 scored episodes
    # per method: a success rate to about ±3%), of which the first 10 are also adapted to and
    # deployed over ROS (realtime, so 10 keep the demo short). The training node uses both
    # cores (the offline phase runs alone).
    "demo": Budget("demo", None, None, None, None, ("online.eval_every=0", "eval.runs_per_task=8"),
                   adapt_tasks=10, evaluate=True, rounds=4, threads=2),
    # A smoke run of every stage in about a minute (tests).
    "tiny": Budget("tiny", 3, 3, 30, 1, (
        "network.encoder_hidden=[32]", "network.policy_hidden=[32, 32]", "network.q_hidden=[32, 32]",
        "network.decoder_hidden=[16]", "offline.steps=200", "offline.log_every=50", "offline.checkpoint_every=100",
        "online.iterations=2", "online.updates_per_iteration=40", "online.tasks_per_iteration=2",
        "online.eval_every=0", "eval.diagnostic_tasks=0", "online.explore_episodes=1", "online.prior_episodes=1",
        "online.posterior_episodes=1"), adapt_tasks=2, evaluate=True, rounds=2),
}


class Stage:
    """Prints a stage header and times it."""

    times: dict[str, float] = {}
    load: dict[str, float] = {}

    def __init__(self, key: str, title: str) -> None:
        self.key, self.title = key, title

    def __enter__(self) -> Stage:
        print(f"\n== {self.title}", flush=True)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        Stage.times[self.key] = time.monotonic() - self.t0
        Stage.load[self.key] = os.getloadavg()[1]  # 5-min average: other work on the machine shows here
        print(f"   ({self.key}: {Stage.times[self.key]:.0f} s, load average {Stage.load[self.key]:.1f})", flush=True)


# ---------------------------------------------------------------------------------------
# Running node graphs with their logs streamed


def run_to_exit(graph: GraphSpec, node: str, log_dir: Path, timeout: float, quiet: Sequence[str] = (),
                keep: Callable[[str], bool] | None = None) -> str:
    """Run ``graph`` until ``node`` exits (0 expected); stream its log (the lines ``keep``
    accepts; the log files keep all); return it."""
    from smrl_ros.probe import claim_domain_id

    claim = claim_domain_id()
    try:
        with GraphRunner(graph, domain_id=claim.domain_id, log_dir=log_dir, cwd=package_root()) as runner:
            runner.start()
            with LogTail(runner, [n.name for n in graph.nodes if n.name not in quiet], keep=keep):
                code = runner.wait_exit(node, timeout)
            log = runner.log(node)
            if code != 0:
                raise RuntimeError(f"{node} {'did not finish in time' if code is None else f'exited {code}'}; "
                                   f"logs in {log_dir}")
            return log
    finally:
        claim.release()


# ---------------------------------------------------------------------------------------
# Stages


def demo_config(base: Path, budget: Budget, out: Path) -> tuple[Path, SmrlConfig]:
    """The family config of the budget: the base config as is, or a copy in ``out`` with the
    budget's task counts, episode length and offline episodes (where it sets them)."""
    cfg = load_config(base)
    changes = {"n_train": budget.n_train, "n_test": budget.n_test, "episode_length": budget.episode_length,
               "episodes_per_behaviour": budget.episodes_per_behaviour}
    if all(v is None for v in changes.values()):
        return base.resolve(), cfg
    data = to_dict(cfg)
    data.pop("root", None)
    data["arm"]["urdf"] = str(cfg.urdf_path())
    for key in ("n_train", "n_test"):
        if changes[key] is not None:
            data["tasks"][key] = changes[key]
    if changes["episode_length"] is not None:
        data["env"]["episode_length"] = changes["episode_length"]
    if changes["episodes_per_behaviour"] is not None:
        for b in data["data"]["behaviours"]:
            b["episodes"] = changes["episodes_per_behaviour"]
    path = out / f"{base.stem}_{budget.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, load_config(path)


def stage_data(cfg: SmrlConfig, out: Path) -> dict[str, Any]:
    from smrl_train.data.generate import dataset_summary, generate_dataset

    store = generate_dataset(cfg, out, progress=False)
    s = dataset_summary(store)
    print(f"   {s['episodes']} episodes, {s['transitions']} transitions over {s['tasks']} train tasks; "
          f"return {s['return_mean']:.1f} ± {s['return_std']:.1f}; "
          + ", ".join(f"{k} {v['return_mean']:.1f}" for k, v in s["by_behaviour"].items()), flush=True)
    return s


def stage_train(config: Path, data: Path, runs: Path, budget: Budget, phases: list[str], logs: Path,
                recordings: Sequence[Path] = (), online_until: int = 0) -> None:
    # No meta-test in the training node: stage_meta_test runs both runs' side by side.
    graph = train_graph(str(data), config=str(config), run_dir=str(runs), phases=phases,
                        recordings=[str(r) for r in recordings], overrides=list(budget.smac),
                        evaluate=False, threads=budget.threads, online_until=online_until)
    run_to_exit(graph, "smrl_trainer", logs, timeout=3600.0)


def episodes_per_visit(config: Path, budget: Budget) -> dict[str, int]:
    """What the explorer records per task visit, by kind (smrl_train.data.recordings): the
    recipe's in-process collection plan (``smac.online``: explore, prior, posterior episodes),
    resolved from the config and the budget's overrides, so the ROS path collects what the
    in-process loop would."""
    from smrl_train.smac.problem import resolve_smac

    on = resolve_smac(config, overrides=budget.smac).online
    return {"explore": int(on.explore_episodes), "prior": int(on.prior_episodes), "posterior": on.posterior_episodes}


def stage_explore(config: Path, bundle: Path, data: Path, store: Path, budget: Budget, cfg: SmrlConfig,
                  logs: Path, tasks: Sequence[int] = (), seed: int = 0) -> dict[str, Any]:
    plan = episodes_per_visit(config, budget)
    graph = explore_graph(str(bundle), str(store), config=str(config), explorer_parameters={
        "dataset": str(data), **({"tasks": [int(t) for t in tasks]} if tasks else {}), "seed": seed,
        "prior_episodes": plan["prior"], "posterior_episodes": plan["posterior"],
        "episodes_per_task": sum(plan.values()), "episode_length": cfg.env.episode_length})
    t0 = time.monotonic()
    run_to_exit(graph, "smrl_explorer", logs, timeout=3600.0, quiet=("smrl_sim",), keep=_every_25th_episode)
    wall = time.monotonic() - t0
    log = (logs / "smrl_explorer.log").read_text().splitlines()
    status_line = [ln for ln in log if "stopped:" in ln or "done:" in ln]
    from smrl_train.data.store import EpisodeStore

    s = EpisodeStore.open(store)
    episodes = [s.read_episode(p) for p in s.episode_paths()]
    kinds = dict(Counter(e.meta["kind"] for e in episodes))
    rate = _explorer_rate(status_line[-1]) if status_line else float("nan")
    return {"episodes": len(episodes), "steps": sum(len(e) for e in episodes), "kinds": kinds,
            "steps_per_s": rate, "wall_s": wall}


def stage_meta_test(config: Path, data: Path, runs: Path, logs: Path, n_test: int,
                    poll_s: float = 15.0) -> dict[str, Any]:
    """The in-process meta-test (``smrl eval``) of every run on all held-out tasks of the
    store, one single-threaded process per run side by side (each uses one core); writes each
    run's ``eval.json`` and returns its test summary. Progress is polled from their logs."""
    import subprocess

    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for m in METHODS:
        if _evaluated(runs / m, n_test):
            print(f"   {m}: eval.json is newer than its checkpoint, kept", flush=True)
            continue
        log = logs / f"meta_test_{m}.log"
        with log.open("w") as f:
            procs[m] = subprocess.Popen(
                [sys.executable, "-m", "smrl_train.cli", "eval", "--config", str(config), "--data", str(data),
                 "--run", str(runs / m), "--no-diagnostic", "--threads", "1"],
                stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                preexec_fn=die_with_parent())
    try:
        while any(p.poll() is None for p in procs.values()):
            time.sleep(poll_s if all(p.poll() is None for p in procs.values()) else 1.0)
            print("   meta-test: " + ", ".join(f"{m} {_tqdm_position(logs / f'meta_test_{m}.log')}" for m in procs),
                  flush=True)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    results = {}
    for m in METHODS:
        p = procs.get(m)
        if p is not None and p.returncode != 0:
            tail = (logs / f"meta_test_{m}.log").read_text().strip().splitlines()[-3:]
            raise RuntimeError(f"the meta-test of {m} failed (exit {p.returncode}): " + " | ".join(tail))
        results[m] = json.loads((runs / m / "eval.json").read_text())["test"]
        print(f"   {m}: final return {results[m]['final_return']:.2f}, success "
              f"{100 * results[m]['success_rate']:.0f}% on {len(results[m]['tasks'])} held-out tasks", flush=True)
    return results


def _evaluated(run: Path, n_test: int) -> bool:
    """Whether the run's eval.json covers ``n_test`` held-out tasks and was written after its
    latest checkpoint (a re-run of the demo keeps it; a continued training run makes it stale)."""
    ev, ckpt = run / "eval.json", run / "checkpoint.safetensors"
    if not (ev.exists() and ckpt.exists() and ev.stat().st_mtime >= ckpt.stat().st_mtime):
        return False
    return len(json.loads(ev.read_text())["test"]["tasks"]) == n_test


def _tqdm_position(log: Path) -> str:
    """``12/40 tasks`` from the last progress-bar update in a log (``starting`` before the first)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    found = re.findall(r"meta-test:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", text)
    return f"{found[-1][0]}/{found[-1][1]} tasks" if found else "starting"


def _every_25th_episode(line: str) -> bool:
    """The explorer's per-episode lines on the terminal: the first and every 25th (a round
    writes ~175); its other lines all. ``logs/`` keeps every line."""
    m = re.match(r"episode (\d+) written", line)
    return m is None or int(m.group(1)) % 25 == 0 or m.group(1) == "1"


def round_ends(total: int, rounds: int) -> list[int]:
    """The online iteration each collect-then-train round trains up to: ``rounds`` near-equal
    shares of ``total`` (fewer rounds when there are fewer iterations), the last one ``total``."""
    rounds = max(1, min(rounds, total))
    return [round(total * (r + 1) / rounds) for r in range(rounds)]


def stage_self_supervised(config: Path, data: Path, runs: Path, rec: Path, budget: Budget, cfg: SmrlConfig,
                          logs: Path) -> dict[str, Any]:
    """Stages 3-4, round by round: ``smrl_explorer`` records with the newest bundle (the
    offline one first), then ``smrl_trainer`` continues SMAC's online phase on every recording
    so far up to the round's iteration. Returns the collection totals."""
    from smrl_train.data.store import EpisodeStore
    from smrl_train.smac.problem import resolve_smac
    from smrl_train.smac.runner import collection_visits

    smac = resolve_smac(config, overrides=budget.smac)
    total = smac.online.iterations
    ends = round_ends(total, budget.rounds)
    train_ids = [int(t["index"]) for t in EpisodeStore.open(data).manifest["tasks"]["train"]]
    bundle = runs / "offline_only" / "bundle"
    stores: list[Path] = []
    rounds = []
    for r, until in enumerate(ends):
        store = rec / f"round{r}"
        # Record for the tasks this round's online iterations will visit, a fresh block of
        # episodes per visit, as SMAC's own loop collects per task visit with its current policy.
        visits = collection_visits(smac, train_ids, ends[r - 1] if r else 0, until)
        tasks = [t for t, n in visits.items() for _ in range(n)]
        with Stage(f"explore_{r}", f"3.{r + 1} reward-free collection by smrl_explorer on the sim bridge (lockstep, "
                                   f"over DDS) with {bundle.parent.name}'s bundle, round {r + 1}/{len(ends)}: "
                                   f"{len(tasks)} task visits of iterations {(ends[r - 1] if r else 0) + 1}-{until}"):
            # Each round's store numbers its episodes from 0: a seed per round keeps the rounds'
            # start states, latents and action noise from repeating.
            c = stage_explore(config, bundle, data, store, budget, cfg, logs / f"explore_{r}", tasks,
                              seed=r + 1000 * budget.seed)
            print(f"   recorded {c['episodes']} episodes ({c['steps']} steps) at {c['steps_per_s']:.0f} steps/s",
                  flush=True)
        rounds.append(c)
        stores.append(store)
        with Stage(f"self_supervised_{r}", f"4.{r + 1} self-supervised phase (SMAC) by smrl_trainer on the "
                                           f"recordings so far, up to iteration {until}/{total}"):
            stage_train(config, data, runs, budget, ["online"], logs / f"train_online_{r}", recordings=stores,
                        online_until=until)
        bundle = runs / "smac" / "bundle"
    rates = [c["steps_per_s"] for c in rounds if np.isfinite(c["steps_per_s"])]
    kinds = dict(sum((Counter(c.get("kinds", {})) for c in rounds), Counter()))
    return {"episodes": sum(c["episodes"] for c in rounds), "steps": sum(c["steps"] for c in rounds), "kinds": kinds,
            "steps_per_s": float(np.median(rates)) if rates else float("nan"),
            "wall_s": sum(c["wall_s"] for c in rounds), "rounds": rounds}


def _explorer_rate(line: str) -> float:
    try:
        return float(line.rsplit(",", 1)[-1].split("steps/s")[0])
    except ValueError:
        return float("nan")


# -- adaptation: one graph per method, side by side ---------------------------------------------------


def adapt_method(method: str, bundle: Path, config: Path, cfg: SmrlConfig, tasks: Sequence[int], out: Path,
                 results: dict[str, Any]) -> None:
    """Adapt to each held-out task in turn and run the adapted policy; fills ``results[method]``."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from smrl_ros import topics
    from smrl_ros.conversions import status_values
    from smrl_ros.probe import RosProbe, claim_domain_id

    claim = claim_domain_id()
    graph = adapt_graph(str(bundle), config=str(config),
                        sim_parameters={"task_split": "test", "task_index": int(tasks[0])},
                        adapter_parameters={"adapt_on_start": False, "output_dir": str(out / "models"),
                                            "episode_length": cfg.env.episode_length,
                                            "evaluate_steps": cfg.env.episode_length})
    rows: list[dict[str, Any]] = []
    timing: list[dict[str, str]] = []
    runner = GraphRunner(graph, domain_id=claim.domain_id, log_dir=out / "logs", cwd=package_root())
    probe = RosProbe(claim.domain_id, f"demo_{method}")
    try:
        inbox = probe.subscribe("/smrl_adapter/result", String, topics.LATCHED_QOS)

        def on_diag(msg: DiagnosticArray) -> None:
            for st in msg.status:
                values = status_values(st)
                if st.name.startswith("smrl_controller") and values.get("enabled") == "True" \
                        and values.get("hold") == "none":
                    timing.append(values)

        probe.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diag, 10)
        runner.start()
        wait_for_node(probe, "smrl_adapter", 60.0)
        for k, task in enumerate(tasks):
            results_before = len(inbox)
            replies = probe.set_parameters("smrl_adapter", {"task_split": "test", "task_index": int(task)}, 30.0)
            if not all(r.successful for r in replies):
                raise RuntimeError(f"{method}: the adapter refused task {task}: {[r.reason for r in replies]}")
            budget_s = 6.0 * cfg.env.episode_length / cfg.env.control_hz + 60.0
            inbox.wait_count(results_before + 1, budget_s)
            res = json.loads(inbox.snapshot()[-1].data)
            if res.get("error"):
                raise RuntimeError(f"{method}, test task {task}: {res['error']}")
            dep = res.get("deployed") or {}
            rows.append({"task": int(task), "exploration_returns": res["exploration_returns"],
                         "deployed_return": dep.get("return"), "success": bool(dep.get("success")),
                         "z_mean": res["z_mean"], "model": res["model"], "seconds": res["seconds"]})
            print(f"   [{method}] test task {task} ({k + 1}/{len(tasks)}): exploration "
                  + ", ".join(f"{r:.1f}" for r in res["exploration_returns"])
                  + f" -> deployed return {dep.get('return', float('nan')):.1f}, "
                  + f"{'success' if dep.get('success') else 'no success'} ({res['seconds']:.0f} s)", flush=True)
    finally:
        probe.close()
        runner.close()
        claim.release()
    results[method] = {"tasks": rows, "timing": _timing_summary(timing)}


def wait_for_node(probe: Any, name: str, timeout: float) -> None:
    from smrl_ros.probe import wait_until

    wait_until(lambda: name in probe.node.get_node_names(), timeout, f"node {name}")
    time.sleep(1.0)  # its parameter service and subscriptions are discovered too


def _timing_summary(windows: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Controller loop timing over the deployed episodes, from its 1 s diagnostics windows:
    the median over windows of each window's p50 and p99, the largest max, and the periods
    missed meanwhile (the counter's growth over those windows)."""
    def col(key: str) -> np.ndarray:
        arr = np.asarray([float(w[key]) for w in windows if key in w], float)
        return arr[np.isfinite(arr)]

    out: dict[str, float] = {"windows": float(len(windows))}
    for name in ("period", "compute"):
        p50, p99, mx = col(f"{name}_p50_ms"), col(f"{name}_p99_ms"), col(f"{name}_max_ms")
        out[f"{name}_p50_ms"] = float(np.median(p50)) if p50.size else float("nan")
        out[f"{name}_p99_ms"] = float(np.median(p99)) if p99.size else float("nan")
        out[f"{name}_max_ms"] = float(np.max(mx)) if mx.size else float("nan")
    missed = col("missed_periods")
    out["missed_periods"] = float(missed.max() - missed.min()) if missed.size else float("nan")
    return out


def stage_adapt(bundles: Mapping[str, Path], config: Path, cfg: SmrlConfig, tasks: Sequence[int],
                out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def work(method: str) -> None:
        try:
            adapt_method(method, bundles[method], config, cfg, tasks, out / method, results)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(m,), daemon=True) for m in bundles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
