"""The stages of the mission that join training to the robot: export a run's adaptation bundle,
and train the self-supervised phase on episodes recorded on a robot.

Used by the training node (``smrl_ros/trainer_node.py``) and ``make demo``; the training itself
is :mod:`smrl_train.smac.runner`, the same code as ``smrl train``.

A bundle folder holds::

    encoder.onnx        context (B, C, O + A + 1) -> posterior mean, var (B, L)
    policy.onnx         obs (B, O), z (B, L), noise (B, A) -> action, joint targets (B, A);
                        noise 0: the deterministic policy, N(0, I): a sample of it
    prior_policy.onnx   the adapted-policy form of policy.onnx with z = 0 (the prior mean):
                        what a controller can load before any adaptation
    task_latents.json   per training task, posteriors q(z | offline context) for the
                        explorer's posterior-z episodes (:mod:`smrl_train.robot.task_latents`;
                        written when the export is given the offline data)
    bundle.json         which run and step it came from, and the models' hashes
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smrl_train.data.reward_free import EPISODE_KIND, EPISODE_KINDS, schema_mismatches
from smrl_train.data.store import EpisodeStore, StoreError, TaskArrays
from smrl_train.smac.sources import EpisodeRequest, StoredEpisodeSource

BUNDLE_FILES = ("encoder.onnx", "policy.onnx", "prior_policy.onnx")
_TASK_LATENT_STREAM = 7_000  # seed stream of the export's context draws


def compute_task_latents(encoder: Any, offline: Mapping[int, TaskArrays], context_size: int, per_task: int,
                         seed: int) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """``per_task`` posteriors q(z | c) of each training task, each from its own context batch
    c of ``context_size`` transitions drawn (with replacement, seeded) from the task's offline
    data. Returns mean, var dicts of (per_task, L) float32 arrays keyed by task index."""
    import torch

    from smrl_train.smac.agent import seeded_generator
    from smrl_train.smac.buffers import TaskBuffers

    buffers = TaskBuffers.from_task_arrays(offline)
    generator = seeded_generator(seed, _TASK_LATENT_STREAM, 0)
    mean, var = {}, {}
    with torch.no_grad():
        for task in buffers.task_ids:
            rows = torch.full((per_task,), buffers.row_of[task], dtype=torch.long)
            mu, v = encoder(buffers.context(rows, context_size, generator, offline_only=True,
                                            width=encoder.context_dim))
            mean[task], var[task] = mu.numpy().astype(np.float32), v.numpy().astype(np.float32)
    return mean, var


def export_run_bundle(run_dir: str | Path, config: str | Path, out: str | Path,
                      offline: Mapping[int, TaskArrays] | None = None, latents_per_task: int = 4) -> dict[str, Any]:
    """Export the networks of a training run as an adaptation bundle into ``out``.

    With the run's ``offline`` data (per-task arrays) it also writes ``task_latents.json``:
    ``latents_per_task`` posteriors per training task for posterior-z exploration.
    Returns the bundle description also written to ``out/bundle.json``.
    """
    from smrl_train.config_loader import load_config
    from smrl_train.export import DeploymentSpec, export_bundle, run_metadata
    from smrl_train.robot.runtime import bake_latent, load_model
    from smrl_train.smac.runner import load_networks

    out = Path(out)
    nets, meta = load_networks(run_dir)
    spec = DeploymentSpec.from_config(load_config(config))
    parity = export_bundle(nets.encoder, nets.policy, spec, out,
                           extra_metadata={"smrl.run": str(run_dir), "smrl.method": str(meta.get("method")),
                                           "smrl.step": str(meta.get("step")), **run_metadata(meta)})
    bake_latent(out / "policy.onnx", np.zeros(nets.policy.latent_dim, np.float32), out / "prior_policy.onnx")
    latents_file = None
    if offline is not None:
        from smrl_train.robot.task_latents import FILE_NAME, TaskLatents
        from smrl_train.smac.config import smac_from_yaml_dict

        smac = smac_from_yaml_dict(meta["smac"])
        context_size = int(smac.online.context_size)
        mean, var = compute_task_latents(nets.encoder, offline, context_size, latents_per_task, int(smac.seed))
        TaskLatents(nets.policy.latent_dim, mean, var,
                    {"context_size": context_size, "per_task": latents_per_task, "source": "offline context",
                     "run": str(run_dir), "step": meta.get("step")}).save(out / FILE_NAME)
        latents_file = FILE_NAME
    desc = {"run": str(run_dir), "method": meta.get("method"), "phase": meta.get("phase"), "step": meta.get("step"),
            "iteration": meta.get("iteration"), "parity_excess_error": parity,
            "models": {name: load_model(out / name).info.model_hash for name in BUNDLE_FILES},
            "task_latents": latents_file}
    (out / "bundle.json").write_text(json.dumps(desc, indent=1, sort_keys=True) + "\n")
    return desc


@dataclass(frozen=True)
class RecordedTaskArrays(TaskArrays):
    """A task's recorded episodes, concatenated, with each episode's length and kind
    (:data:`~smrl_train.data.reward_free.EPISODE_KINDS`) in store order."""

    episode_lengths: tuple[int, ...] = ()
    episode_kinds: tuple[str, ...] = ()


class RecordedExplorationSource(StoredEpisodeSource):
    """Recorded episodes (the explorer node's) for the self-supervised phase.

    Each episode is served with the kind it was recorded as: ``explore`` episodes
    (deterministic, prior z: our recipes' ``explore`` kind) enter the task's RL buffer
    and its exploration-context buffer; ``prior`` and ``posterior`` episodes (stochastic policy,
    z from the prior or the task's posterior) enter the RL buffer only, as SMAC's do. Each
    episode is used once, in order, as :class:`StoredEpisodeSource` does; rewards are never read
    (the recordings have none).
    """

    def __init__(self, arrays: Mapping[int, Any]) -> None:
        super().__init__(arrays)
        self.kinds: dict[int, tuple[str, ...]] = {}
        for task, a in self.arrays.items():
            lengths = getattr(a, "episode_lengths", ())
            if lengths:  # episode boundaries as recorded, not guessed from the flags
                ends = np.cumsum(lengths)
                self.episodes[task] = [slice(int(e - n), int(e)) for e, n in zip(ends, lengths)]
            self.kinds[task] = tuple(getattr(a, "episode_kinds", ())) or (EPISODE_KIND,) * len(self.episodes[task])

    def collect(self, task_id: int, requests: Sequence[EpisodeRequest], agent: Any,
                with_rewards: bool) -> list[Any]:
        first = self.cursor.get(task_id, 0)
        trajectories = super().collect(task_id, requests, agent, with_rewards)
        for k, t in enumerate(trajectories):
            t.kind = self.kinds[task_id][first + k]
        return trajectories

    def remaining(self) -> int:
        """Episodes not served yet (all tasks)."""
        return sum(len(eps) - self.cursor[t] for t, eps in self.episodes.items())

    def remaining_by_kind(self) -> dict[str, int]:
        """Episodes not served yet, by kind."""
        return dict(Counter(kind for t, kinds in self.kinds.items() for kind in kinds[self.cursor[t]:]))


def load_recordings(paths: Sequence[str | Path], dataset_manifest: Mapping[str, Any]) -> dict[int, RecordedTaskArrays]:
    """Per-task arrays of one or more reward-free recordings, checked against the dataset,
    with each episode's length and kind.

    Raises:
        StoreError: a store is unreadable, reward-labelled, or its schema differs from the
            dataset's (the message names the store and every differing key), an episode has
            an unknown kind or a task the dataset does not train on (names the file), or there
            are no episodes at all.
    """
    merged: dict[int, list[tuple[Any, str]]] = {}
    known = {int(t["index"]) for t in dataset_manifest.get("tasks", {}).get("train", [])}
    for path in paths:
        store = EpisodeStore.open(path)
        if store.manifest["reward_labelled"]:
            raise StoreError(f"{path}: a recording for the self-supervised phase must be reward-free")
        problems = schema_mismatches(store.manifest, dataset_manifest)
        if problems:
            raise StoreError(f"{path}: does not fit the training dataset: " + "; ".join(problems))
        for file in store.episode_paths():
            episode = store.read_episode(file)
            kind = episode.meta.get("kind", EPISODE_KIND)
            if kind not in EPISODE_KINDS:
                raise StoreError(f"{file}: episode kind {kind!r} is not one of {', '.join(EPISODE_KINDS)}")
            if known and episode.task_index not in known:
                raise StoreError(f"{file}: task {episode.task_index} is not one of the dataset's "
                                 f"{len(known)} training tasks")
            merged.setdefault(episode.task_index, []).append((episode, kind))
    if not merged:
        raise StoreError(f"{', '.join(str(p) for p in paths)}: no recorded episodes to train on")
    out = {}
    for task, episodes in sorted(merged.items()):
        cat = {f: np.concatenate([e.arrays[f] for e, _ in episodes])
               for f in ("obs", "action", "next_obs", "terminated", "truncated")}
        out[task] = RecordedTaskArrays(cat["obs"], cat["action"], None, cat["next_obs"], cat["terminated"],
                                       cat["truncated"], tuple(len(e) for e, _ in episodes),
                                       tuple(k for _, k in episodes))
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
