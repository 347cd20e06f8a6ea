"""The stages of the mission that join training to the robot: export a run's adaptation bundle,
and train the self-supervised phase on episodes recorded on a robot.

Used by the training node (``smrl_ros/trainer_node.py``) and ``make demo``; the training itself
is :mod:`smrl_train.smac.runner`, the same code as ``smrl train``.

A bundle folder holds::

    encoder.onnx        context (B, C, O + A + 1) -> posterior mean, var (B, L)
    policy.onnx         obs (B, O), z (B, L) -> action, joint targets (B, A)
    prior_policy.onnx   the adapted-policy form of policy.onnx with z = 0 (the prior mean):
                        what a controller can load before any adaptation
    bundle.json         which run and step it came from, and the models' hashes
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smrl_train.data.reward_free import EPISODE_KIND, schema_mismatches
from smrl_train.data.store import EpisodeStore, StoreError, TaskArrays
from smrl_train.smac.sources import EpisodeRequest, StoredEpisodeSource

BUNDLE_FILES = ("encoder.onnx", "policy.onnx", "prior_policy.onnx")


def export_run_bundle(run_dir: str | Path, config: str | Path, out: str | Path) -> dict[str, Any]:
    """Export the networks of a training run as an adaptation bundle into ``out``.

    Returns the bundle description also written to ``out/bundle.json``.
    """
    from smrl_train.config import load_config
    from smrl_train.export import DeploymentSpec, export_bundle, run_metadata
    from smrl_train.runtime import bake_latent, load_model
    from smrl_train.smac.runner import load_networks

    out = Path(out)
    nets, meta = load_networks(run_dir)
    spec = DeploymentSpec.from_config(load_config(config))
    parity = export_bundle(nets.encoder, nets.policy, spec, out,
                           extra_metadata={"smrl.run": str(run_dir), "smrl.method": str(meta.get("method")),
                                           "smrl.step": str(meta.get("step")), **run_metadata(meta)})
    bake_latent(out / "policy.onnx", np.zeros(nets.policy.latent_dim, np.float32), out / "prior_policy.onnx")
    desc = {"run": str(run_dir), "method": meta.get("method"), "phase": meta.get("phase"), "step": meta.get("step"),
            "iteration": meta.get("iteration"), "parity_max_abs_diff": parity,
            "models": {name: load_model(out / name).info.model_hash for name in BUNDLE_FILES}}
    (out / "bundle.json").write_text(json.dumps(desc, indent=1, sort_keys=True) + "\n")
    return desc


class RecordedExplorationSource(StoredEpisodeSource):
    """Recorded exploration episodes (the explorer node's) for the self-supervised phase.

    They are deterministic prior-z episodes, the improved recipe's ``explore`` kind, so they
    are served as such: they enter the task's RL buffer and its exploration-context buffer.
    Each episode is used once, in order, as :class:`StoredEpisodeSource` does; rewards are
    never read (the recordings have none).
    """

    def collect(self, task_id: int, requests: Sequence[EpisodeRequest], agent: Any,
                with_rewards: bool) -> list[Any]:
        trajectories = super().collect(task_id, requests, agent, with_rewards)
        for t in trajectories:
            t.kind = EPISODE_KIND
        return trajectories

    def remaining(self) -> int:
        """Episodes not served yet (all tasks)."""
        return sum(len(eps) - self.cursor[t] for t, eps in self.episodes.items())


def load_recordings(paths: Sequence[str | Path], dataset_manifest: Mapping[str, Any]) -> dict[int, TaskArrays]:
    """Per-task arrays of one or more reward-free recordings, checked against the dataset.

    Raises:
        StoreError: a store is unreadable, reward-labelled, or its schema differs from the
            dataset's (the message names the store and every differing key).
    """
    merged: dict[int, list[TaskArrays]] = {}
    for path in paths:
        store = EpisodeStore.open(path)
        if store.manifest["reward_labelled"]:
            raise StoreError(f"{path}: a recording for the self-supervised phase must be reward-free")
        problems = schema_mismatches(store.manifest, dataset_manifest)
        if problems:
            raise StoreError(f"{path}: does not fit the training dataset: " + "; ".join(problems))
        for task, arrays in store.task_arrays().items():
            merged.setdefault(task, []).append(arrays)
    out = {}
    for task, parts in sorted(merged.items()):
        out[task] = TaskArrays(*(np.concatenate([getattr(p, f) for p in parts]) if f != "reward" else None
                                 for f in ("obs", "action", "reward", "next_obs", "terminated", "truncated")))
    return out


# ---------------------------------------------------------------------------------------
# Progress of a run, read from its files (the training node publishes it)


def last_csv_row(path: str | Path) -> dict[str, float] | None:
    """The last complete row of a metrics CSV as floats (None when there is none yet).

    Safe while the trainer appends: a last line without its newline is ignored.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError:
        return None
    lines = text.split("\n")
    if len(lines) < 3:  # header, one row, and the empty string after the final newline
        return None
    header, row = lines[0].split(","), lines[-2].split(",")
    if len(row) != len(header):
        return None
    out = {}
    for key, value in zip(header, row):
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = float("nan")
    return out


def run_progress(run_dir: str | Path, phase: str, total: int) -> dict[str, Any]:
    """Where a run is: ``done`` (steps or iterations), ``total``, and the newest losses.

    Offline runs count updates (metrics.csv key ``step``); online runs count iterations
    (key ``iteration``).
    """
    row = last_csv_row(Path(run_dir) / "metrics.csv") or {}
    key = "step" if phase == "offline" else "iteration"
    done = int(row.get(key, 0) or 0)
    losses = {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("train/")}
    return {"phase": phase, "done": done, "total": int(total), "losses": losses,
            "updates_per_s": row.get("time/updates_per_s")}
