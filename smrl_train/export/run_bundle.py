"""A training run's adaptation bundle: what the robot side needs from it, exported in one call.

Used by ``smrl export bundle``, the training node (``smrl_ros/trainer_node.py``) and ``make
demo``; the models themselves are written by :mod:`smrl_train.export.onnx_export`.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from smrl_train.data.store import TaskArrays
from smrl_train.export.onnx_export import export_bundle, spec_from_config

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
    from smrl_train.robot.runtime import bake_latent, load_model
    from smrl_train.smac.runner import load_networks

    out = Path(out)
    nets, meta = load_networks(run_dir)
    spec = spec_from_config(load_config(config))
    parity = export_bundle(nets.encoder, nets.policy, spec, out,
                           extra_metadata={"smrl.run": str(run_dir), "smrl.method": str(meta.get("method")),
                                           "smrl.step": str(meta.get("step")), **run_metadata(meta)})
    bake_latent(out / "policy.onnx", np.zeros(nets.policy.latent_dim, np.float32), out / "prior_policy.onnx")
    latents_file = None
    if offline is not None:
        from smrl_train.robot.task_latents import FILE_NAME, TaskLatents
        from smrl_train.smac.config import resolved, smac_from_yaml_dict

        smac = smac_from_yaml_dict(meta["smac"])
        context_size = int(resolved(smac.online.context_size))
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


def run_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """Metadata of a bundle that comes from its training run: ``smrl.latent_resample``, when
    the recipe draws z at exploration ("step" or "episode", ``smac.eval.resample_latent``), so
    the robot-side explorer and adapter explore the way the model was trained and evaluated."""
    resample = ((meta.get("smac") or {}).get("eval") or {}).get("resample_latent") or "step"
    return {"smrl.latent_resample": str(resample)}
