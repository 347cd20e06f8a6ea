"""``smrl report``: markdown + PNG plots + summary.json from evaluated runs.

Runs are found by their ``eval.json`` (anywhere under the given folders) and grouped by method
name (offline_only, smac, oracle, *_return_tuned, *_paper, meta_bc, ablations); seeds give the spread.
Written to the output folder:

* ``summary.json``: ``{"methods": {name: {"final_return": [per seed], "success_rate": [...],
  "seeds": [...], ...}}, "diagnostic": {...}, "gap_closed": ..., "command": ...}``;
* ``methods.png``: final return and success per method (mean and per-seed points);
* ``curve.png``: test-task final return over self-supervised iterations;
* ``diagnostic.png``: return with z from offline context vs from own exploration;
* ``report.md``: the tables, the plots and the command that reproduces them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smrl_train.smac.logs import read_csv

ORDER = ("offline_only", "smac", "oracle", "offline_only_return_tuned", "smac_return_tuned", "oracle_return_tuned",
         "offline_only_paper", "smac_paper", "oracle_paper", "meta_bc")
DESCRIPTION = {
    "offline_only": "offline phase only (default recipe, success_tuned)",
    "smac": "SMAC, default recipe: reward-free online phase, decoder labels",
    "oracle": "online oracle, default recipe: true rewards online",
    "offline_only_return_tuned": "offline phase only (return_tuned: the earlier default, 'improved')",
    "smac_return_tuned": "SMAC, return_tuned recipe",
    "oracle_return_tuned": "online oracle, return_tuned recipe",
    "offline_only_paper": "offline phase only (paper recipe)",
    "smac_paper": "SMAC, paper recipe (authors' code defaults)",
    "oracle_paper": "online oracle, paper recipe",
    "meta_bc": "meta behaviour cloning (encoder + policy by log-likelihood)",
}


SUFFIXES = ("", "_return_tuned", "_paper")


def _suffix(variant: str) -> str:
    """The report-name suffix of a recipe (none for the default)."""
    from smrl_train.smac.config import DEFAULT_VARIANT, VARIANT_ALIASES

    variant = VARIANT_ALIASES.get(variant, variant)
    return "" if variant == DEFAULT_VARIANT else f"_{variant}"


def find_runs(roots: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every evaluated run under ``roots``: its eval.json plus the folder."""
    runs = []
    for root in roots:
        for path in sorted(Path(root).rglob("eval.json")):
            data = json.loads(path.read_text())
            # Relative to the root (seed0/smac): a committed summary must not name a scratch folder.
            data["run_dir"] = str(path.parent.relative_to(root)) if len(roots) == 1 else str(path.parent)
            data["path"] = path.parent  # where to read its curve from (not written to the summary)
            diag = path.parent / "diagnose.json"
            if diag.exists():
                data["diagnose"] = json.loads(diag.read_text())["table"]
            # The protocol with another number of exploration episodes (smrl eval --exploration-episodes K).
            data["by_exploration"] = {int(p.stem.removeprefix("eval_explore")): json.loads(p.read_text())["test"]
                                      for p in path.parent.glob("eval_explore*.json")}
            protocol = (data.get("eval") or {}).get("exploration_episodes")  # absent in early eval.json files
            if protocol is not None:
                data["by_exploration"].setdefault(int(protocol), data["test"])
            # The protocol with z redrawn every N steps (smrl eval --resample-latent N [--exploration-episodes K]),
            # keyed "N" or "N, K = k".
            data["by_resample"] = {p.stem.removeprefix("eval_resample").replace("_explore", ", K = "):
                                   json.loads(p.read_text())["test"] for p in path.parent.glob("eval_resample*.json")}
            cost_file = path.parent / "cost.json"  # written by smrl experiment (absent in earlier runs)
            cost = json.loads(cost_file.read_text()) if cost_file.exists() else {}
            data["cpu_s"] = cost.get("cpu_s")
            data["cpu_stages"] = cost.get("stages")  # by stage (absent in runs before 2026-12-06)
            runs.append(data)
    return runs


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
    if arr.size == 0:
        return {"mean": math.nan, "std": math.nan}
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def summarise(runs: Sequence[dict[str, Any]], command: str = "") -> dict[str, Any]:
    """The summary.json content (see the module docstring)."""
    methods: dict[str, dict[str, Any]] = {}
    diagnostic: dict[str, dict[str, list[float]]] = {}
    random_returns = []
    for r in sorted(runs, key=lambda r: (r["method"], r["seed"])):
        m = methods.setdefault(r["method"], {"final_return": [], "success_rate": [], "seeds": [], "runs": [],
                                             "variant": r["variant"], "labels": r["labels"], "phase": r["phase"],
                                             "updates": [], "iterations": [], "gradients": [], "cpu_s": [],
                                             "cpu_stages": []})
        m["final_return"].append(r["test"]["final_return"])
        m["success_rate"].append(r["test"]["success_rate"])
        m["seeds"].append(r["seed"])
        m["runs"].append(r["run_dir"])
        m["updates"].append(r.get("updates"))
        m["iterations"].append(r.get("iterations"))
        m["gradients"].append(r.get("gradients", "unrecorded"))
        m["cpu_s"].append(r.get("cpu_s"))
        m["cpu_stages"].append(r.get("cpu_stages"))
        for k, test in r.get("by_exploration", {}).items():
            m.setdefault("success_by_exploration", {}).setdefault(str(k), []).append(test["success_rate"])
        for key, test in r.get("by_resample", {}).items():
            m.setdefault("success_by_resample", {}).setdefault(key, []).append(test["success_rate"])
        random_returns.append(r["random_policy"]["final_return"])
        if r.get("diagnostic"):
            d = diagnostic.setdefault(r["method"], {k: [] for k in ("return_offline_context",
                                                                    "return_exploration_context", "z_distance",
                                                                    "z_spread_between_tasks")})
            for k in d:
                d[k].append(r["diagnostic"][k])
    diagnose: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for row in r.get("diagnose", []):
            key = f"{row['split']} / {row['context']}"
            for field in ("probe_error", "bound_error_rows", "policy_error", "success", "final_distance"):
                value = row.get(field)
                if value is not None:
                    diagnose.setdefault(r["method"], {}).setdefault(f"{key} / {field}", []).append(value)
    for m in methods.values():
        m["final_return_stats"] = _stats(m["final_return"])
        m["success_rate_stats"] = _stats(m["success_rate"])
    out: dict[str, Any] = {"methods": methods, "diagnostic": diagnostic, "diagnose": diagnose,
                           "random_policy_final_return": _stats(random_returns)["mean"], "command": command}
    for suffix in SUFFIXES:
        off, smac, oracle = (methods.get(f"{k}{suffix}") for k in ("offline_only", "smac", "oracle"))
        if off and smac and oracle:
            lo, hi = off["final_return_stats"]["mean"], oracle["final_return_stats"]["mean"]
            mid = smac["final_return_stats"]["mean"]
            out[f"gap_closed{suffix}"] = (mid - lo) / (hi - lo) if abs(hi - lo) > 1e-9 else math.nan
    return out


def _ordered(names: Sequence[str]) -> list[str]:
    return [n for n in ORDER if n in names] + sorted(n for n in names if n not in ORDER)


def _plots(summary: dict[str, Any], runs: Sequence[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    names = _ordered(list(summary["methods"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.3 * len(names) + 3), 4))
    for ax, key, label in ((axes[0], "final_return", "final-episode return"),
                           (axes[1], "success_rate", "success rate")):
        for i, n in enumerate(names):
            vals = summary["methods"][n][key]
            ax.bar(i, np.mean(vals), color="C0" if "paper" not in n else "C1", alpha=0.6)
            ax.errorbar(i, np.mean(vals), yerr=np.std(vals, ddof=1) if len(vals) > 1 else 0, color="k", capsize=3)
            ax.scatter([i] * len(vals), vals, color="k", s=10, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        ax.set_ylabel(label)
        ax.set_title(f"held-out test tasks: {label}")
    if not math.isnan(summary.get("random_policy_final_return", math.nan)):
        axes[0].axhline(summary["random_policy_final_return"], color="r", ls="--", lw=1, label="random policy")
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "methods.png", dpi=110)
    plt.close(fig)
    made.append("methods.png")

    curves: dict[str, list[list[dict[str, float]]]] = {}
    for r in runs:
        rows = read_csv(Path(r.get("path", r["run_dir"])) / "eval_curve.csv")
        if rows:
            curves.setdefault(r["method"], []).append(rows)
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k, (n, seeds) in enumerate(sorted(curves.items())):
            its = sorted({row["iteration"] for rows in seeds for row in rows})
            mean = [np.nanmean([row["eval/final_return"] for rows in seeds for row in rows if row["iteration"] == it])
                    for it in its]
            ax.plot(its, mean, marker="o", label=n, color=f"C{k}")
            for rows in seeds:
                ax.plot([row["iteration"] for row in rows], [row["eval/final_return"] for row in rows],
                        color=f"C{k}", alpha=0.25, lw=1)
        ax.set_xlabel("self-supervised iteration")
        ax.set_ylabel("test final-episode return")
        ax.set_title("learning curve of the online phase (mean over seeds; thin: seeds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "curve.png", dpi=110)
        plt.close(fig)
        made.append("curve.png")

    diag = summary["diagnostic"]
    if diag:
        dn = _ordered(list(diag))
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(dn) + 2), 4))
        x = np.arange(len(dn))
        off = [np.mean(diag[n]["return_offline_context"]) for n in dn]
        exp = [np.mean(diag[n]["return_exploration_context"]) for n in dn]
        ax.bar(x - 0.2, off, 0.4, label="z from offline context")
        ax.bar(x + 0.2, exp, 0.4, label="z from own exploration")
        ax.set_xticks(x, dn, rotation=35, ha="right")
        ax.set_ylabel("final-episode return (training tasks)")
        ax.set_title("z distribution shift (paper's diagnostic)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "diagnostic.png", dpi=110)
        plt.close(fig)
        made.append("diagnostic.png")
    return made


def _per_seed_table(summary: dict[str, Any]) -> list[str]:
    """Every seed's final return, and each method minus offline-only of the same recipe on the
    same seed (same offline run, same test tasks: a paired difference, far less noisy than
    comparing the two means)."""
    methods = summary["methods"]
    seeds = sorted({s for m in methods.values() for s in m["seeds"]})
    lines = ["Per seed (final return; in brackets: minus the same seed's offline-only of the same recipe):", "",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | paired difference, mean ± std |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for n in _ordered(list(methods)):
        m = methods[n]
        base = methods.get(f"offline_only{_suffix(m['variant'])}")
        by_seed = dict(zip(m["seeds"], m["final_return"]))
        base_by_seed = dict(zip(base["seeds"], base["final_return"])) if base and base is not m else {}
        cells, diffs = [], []
        for s in seeds:
            if s not in by_seed:
                cells.append("")
                continue
            cell = f"{by_seed[s]:.2f}"
            if s in base_by_seed:
                diffs.append(by_seed[s] - base_by_seed[s])
                cell += f" ({diffs[-1]:+.2f})"
            cells.append(cell)
        paired = _fmt(_stats(diffs)) if diffs else ""
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {paired} |")
    return lines


def _exploration_table(summary: dict[str, Any]) -> list[str]:
    """Success by the number of exploration episodes before the scored one (the protocol's and
    those of ``smrl eval --exploration-episodes K``), where a run was evaluated with more than one."""
    counts = sorted({int(k) for m in summary["methods"].values() for k in m.get("success_by_exploration", {})})
    if len(counts) < 2:
        return []
    return _success_table(summary, "success_by_exploration", [str(k) for k in counts], "K", (
        "## Success by exploration episodes",
        "The protocol with K exploration episodes (with rewards) before the scored episode"))


def _resample_table(summary: dict[str, Any]) -> list[str]:
    """Success with the exploration episodes' z redrawn every N steps (``smrl eval
    --resample-latent N``, with K exploration episodes when ``--exploration-episodes K``)."""
    keys = sorted({k for m in summary["methods"].values() for k in m.get("success_by_resample", {})},
                  key=lambda k: (int(k.split(",")[0]), k))
    if not keys:
        return []
    return _success_table(summary, "success_by_resample", keys, "N", (
        "## Success with z redrawn every N steps",
        "The protocol with the latent redrawn every N steps (`smrl eval --resample-latent N`; K exploration "
        "episodes where given, else the protocol's)"))


def _success_table(summary: dict[str, Any], field: str, keys: Sequence[str], symbol: str,
                   heading: tuple[str, str]) -> list[str]:
    """A markdown table of success per method (rows) and protocol variant (columns ``keys`` of
    each method's ``field``): mean ± std over seeds, the seeds in brackets."""
    title, what = heading
    lines = ["", title, "", f"{what}; mean ± std over seeds, the seeds in brackets.", "",
             "| method | " + " | ".join(f"{symbol} = {k}" for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for n in _ordered(list(summary["methods"])):
        by = summary["methods"][n].get(field, {})
        if by:
            lines.append(f"| {n} | " + " | ".join(_seeds_cell(by.get(k)) for k in keys) + " |")
    return lines


def _seeds_cell(values: Sequence[float] | None) -> str:
    """``mean ± std (seed / seed / ...)`` of a rate over seeds, or empty."""
    return f"{_fmt(_stats(values))} ({' / '.join(f'{v:.2f}' for v in values)})" if values else ""


def _diagnose_table(summary: dict[str, Any]) -> list[str]:
    """`smrl diagnose` per method, mean over seeds: the goal error of a linear probe on z and
    success, with z from offline context (training tasks) vs the agent's own exploration
    (held-out tasks), and the trilateration bound of the same exploration contexts."""
    diag = summary.get("diagnose") or {}
    if not diag:
        return []

    def cell(method: str, key: str, cm: bool = True) -> str:
        vals = diag[method].get(key)
        if not vals:
            return ""
        s = _stats([100 * v for v in vals] if cm else vals)
        return f"{s['mean']:.1f} ± {s['std']:.1f}" if cm else f"{s['mean']:.2f} ± {s['std']:.2f}"

    lines = ["", "## Task identification (smrl diagnose)", "",
             "Goal error (cm) of a linear probe from the posterior mean z (fitted on training tasks' offline-context "
             "posteriors) and success of one scored episode with that z: z from the task's offline context (training "
             "tasks) and from the agent's own 1 or 2 exploration episodes (held-out tasks); the trilateration bound is "
             "the goal least squares recovers from the same exploration rows. The z shift SMAC is about is the gap "
             "between the offline and exploration columns; compare offline_only (before the self-supervised phase) "
             "with smac (after). Policy error given z: from where the scored episode ended to the goal the probe "
             "reads from z (a miss with a small probe error is the policy's, not the encoder's).", "",
             "| method | probe, offline ctx | probe, explore 1 | probe, explore 2 | bound, explore 2 "
             "| policy error given z, offline ctx / explore 2 | success, offline ctx | success, explore 2 |",
             "|---|---|---|---|---|---|---|---|"]
    for n in _ordered(list(diag)):
        policy = [cell(n, "train / offline / policy_error"), cell(n, "test / explore 2 / policy_error")]
        cells = [cell(n, "train / offline / probe_error"), cell(n, "test / explore 1 / probe_error"),
                 cell(n, "test / explore 2 / probe_error"), cell(n, "test / explore 2 / bound_error_rows"),
                 " / ".join(policy) if any(policy) else "",
                 cell(n, "train / offline / success", False), cell(n, "test / explore 2 / success", False)]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def _cost_lines(summary: dict[str, Any]) -> list[str]:
    """The CPU time of the runs (training, evaluation and diagnosis of each stage, from the
    ``cost.json`` that ``smrl experiment`` writes), and how many runs recorded it."""
    costs = [c for m in summary["methods"].values() for c in m.get("cpu_s", [])]
    known = [c for c in costs if c is not None]
    if not known:
        return []
    line = f"CPU time of these runs: {sum(known) / 3600:.2f} CPU-hours (sum over {len(known)} runs"
    line += ")." if len(known) == len(costs) else f"; {len(costs) - len(known)} earlier runs did not record it)."
    return [line, ""] + _stage_lines(summary)


def _stage_lines(summary: dict[str, Any]) -> list[str]:
    """Where each row's CPU went, CPU minutes per run (median over the seeds that recorded it):
    what a benchmark gives up by dropping a stage (a learning curve, say)."""
    def minutes(values: Sequence[float]) -> str:
        return f"{np.median(values) / 60:.1f}"

    rows = []
    for n in _ordered(list(summary["methods"])):
        m = summary["methods"][n]
        stages = [st for c, st in zip(m["cpu_s"], m.get("cpu_stages", [])) if c is not None and st]
        if not stages:
            continue
        curve = [st.get("learning_curve", 0.0) for st in stages]
        columns = ([sum(st.get(k, 0.0) for k in ("training", "meta_test", "diagnose")) for st in stages],
                   [st.get("training", 0.0) - c for st, c in zip(stages, curve)],
                   curve,
                   [st.get("meta_test", 0.0) for st in stages],
                   [st.get("diagnose", 0.0) for st in stages])
        rows.append(f"| {n} | {len(stages)} | " + " | ".join(minutes(v) for v in columns) + " |")
    if not rows:
        return []
    return ["Where the CPU went, CPU minutes per run (median over the seeds that recorded it; training without "
            "its learning curve, the curve, the meta-test with its random floor, `smrl diagnose`):", "",
            "| method | seeds | total | training | learning curve | meta-test | diagnose |",
            "|---|---|---|---|---|---|---|", *rows, ""]


def _success_line(runs: Sequence[dict[str, Any]]) -> str:
    """How the runs scored success (smac.eval.success; runs from before it existed: "last")."""
    where = {"last": "at the scored episode's last step", "any": "at any step of the scored episode"}
    metrics = sorted({str((r.get("eval") or {}).get("success") or "last") for r in runs})
    return "Success counted " + " or ".join(where.get(m, m) for m in metrics) + (
        " (the runs differ)." if len(metrics) > 1 else ".")


def _fmt(s: dict[str, float], digits: int = 2) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def write_report(roots: Sequence[str | Path], out: str | Path, command: str = "", title: str = "SMAC results",
                 notes: str = "") -> dict[str, Any]:
    """Summarise the evaluated runs under ``roots`` into ``out`` (see the module docstring)."""
    runs = find_runs(roots)
    if not runs:
        raise FileNotFoundError(f"no evaluated runs (eval.json) under {', '.join(map(str, roots))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs, command)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    images = _plots(summary, runs, out)
    lines = [f"# {title}", ""]
    if command:
        lines += ["Reproduce with:", "", "```", command, "```", ""]
    if notes:
        lines += [notes, ""]
    lines += ["Held-out test tasks; meta-test protocol of the paper (2 exploration episodes with z ~ prior, "
              f"then the posterior z and the deterministic policy); mean ± std over seeds. {_success_line(runs)}", "",
              "| method | seeds | final return | success rate | updates | gradients | CPU min per seed "
              "| description |",
              "|---|---|---|---|---|---|---|---|"]
    for n in _ordered(list(summary["methods"])):
        m = summary["methods"][n]
        ups = sorted({u for u in m["updates"] if u is not None})
        cpu = [c / 60 for c in m.get("cpu_s", []) if c is not None]
        lines.append(f"| {n} | {len(m['seeds'])} | {_fmt(m['final_return_stats'])} | "
                     f"{_fmt(m['success_rate_stats'])} | {', '.join(map(str, ups))} | "
                     f"{', '.join(sorted(set(m['gradients'])))} | {f'{np.median(cpu):.0f}' if cpu else ''} | "
                     f"{DESCRIPTION.get(n, 'ablation')} |")
    lines += ["", f"Random policy: final return {summary['random_policy_final_return']:.2f}.", ""]
    lines += _cost_lines(summary)
    lines += _per_seed_table(summary) + [""]
    for suffix in SUFFIXES:
        if f"gap_closed{suffix}" not in summary:
            continue
        ms = summary["methods"]
        off, ora = ms[f"offline_only{suffix}"], ms[f"oracle{suffix}"]
        gap = ora["final_return_stats"]["mean"] - off["final_return_stats"]["mean"]
        spread = max(off["final_return_stats"]["std"], ora["final_return_stats"]["std"])
        if gap <= spread:
            lines.append(f"oracle{suffix} is not above offline_only{suffix} by more than the seed spread "
                         f"(gap {gap:.2f}, spread {spread:.2f}): no gap for smac{suffix} to close.")
        else:
            lines.append(f"Gap offline_only{suffix} -> oracle{suffix}: {gap:.2f} (seed spread {spread:.2f}); "
                         f"smac{suffix} closes {100 * summary[f'gap_closed{suffix}']:.0f}% of it.")
    if summary["diagnostic"]:
        lines += ["", "## z distribution shift", "",
                  "Training tasks: final-episode return with z inferred from the task's offline context versus from "
                  "the agent's own prior-z exploration, and the distance between the two posterior means (relative "
                  "to the spread of offline posteriors across tasks).", "",
                  "| method | z from offline context | z from own exploration | z distance | z spread |",
                  "|---|---|---|---|---|"]
        for n in _ordered(list(summary["diagnostic"])):
            d = summary["diagnostic"][n]
            lines.append(f"| {n} | {_fmt(_stats(d['return_offline_context']))} | "
                         f"{_fmt(_stats(d['return_exploration_context']))} | {_fmt(_stats(d['z_distance']))} | "
                         f"{_fmt(_stats(d['z_spread_between_tasks']))} |")
    lines += _exploration_table(summary)
    lines += _resample_table(summary)
    lines += _diagnose_table(summary)
    lines += [""] + [f"![{i}]({i})" for i in images] + [""]
    (out / "report.md").write_text("\n".join(lines))
    return summary
