"""``smrl export policy|bundle|check``: the export room's command-line sub-commands.

Wired into ``smrl`` by :mod:`smrl_train.cli`. ``policy`` writes one adapted policy
(:func:`smrl_train.export.onnx_export.export_adapted_policy`), ``bundle`` a run's adaptation
bundle (:func:`smrl_train.export.run_bundle.export_run_bundle`), ``check`` loads a model
through the robot-side checks (:func:`smrl_train.robot.runtime.load_model`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from smrl_train.export.onnx_export import export_adapted_policy, spec_from_config


def _load_networks(checkpoint: str) -> Any:
    """The SmacNetworks of a training run (its folder or its checkpoint file)."""
    from smrl_train.smac.runner import load_networks

    return load_networks(checkpoint)[0]


def _parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected numbers, got {text!r}") from None


def _cmd_policy(args: argparse.Namespace) -> int:
    from smrl_train.config_loader import load_config

    cfg = load_config(args.config)
    nets = _load_networks(args.checkpoint)
    if args.z:
        z = np.array(_parse_floats(args.z, "--z"), dtype=np.float32)
    else:
        z = np.zeros(nets.policy.latent_dim, dtype=np.float32)  # the prior mean
    err = export_adapted_policy(nets.policy, z, spec_from_config(cfg), args.out)
    print(f"wrote {args.out} (ONNX error beyond twice torch's float32 error {err:.1e})")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from smrl_train.data.store import load_task_arrays
    from smrl_train.export.run_bundle import export_run_bundle

    offline = load_task_arrays(args.data) if args.data else None
    desc = export_run_bundle(args.checkpoint, args.config, args.out, offline=offline)
    print(f"wrote {args.out}: encoder.onnx, policy.onnx, prior_policy.onnx"
          + (f", {desc['task_latents']}" if desc["task_latents"] else "")
          + ", bundle.json (ONNX error beyond twice torch's float32 error: "
          + ", ".join(f"{k} {v:.1e}" for k, v in desc["parity_excess_error"].items()) + ")")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from smrl_train.robot.runtime import load_model

    model = load_model(args.model)
    print(json.dumps({"path": str(args.model), "kind": model.info.kind, **model.info.as_dict()}, indent=1))
    return 0


def add_subcommands(subparsers: Any) -> None:
    """``smrl export policy|bundle|check``; wired in by :mod:`smrl_train.cli`."""
    export = subparsers.add_parser("export", help="ONNX export for the robot side")
    sub = export.add_subparsers(dest="export_command", required=True)
    pol = sub.add_parser("policy", help="the adapted policy (z baked in) as one ONNX file")
    pol.add_argument("--checkpoint", required=True, help="a training run folder (or its checkpoint file)")
    pol.add_argument("--config", required=True, help="the config the checkpoint was trained with")
    pol.add_argument("--z", default="", help="task latent, comma-separated (default: prior mean 0)")
    pol.add_argument("--out", required=True, help="output .onnx path")
    pol.set_defaults(func=_cmd_policy)
    bun = sub.add_parser("bundle", help="encoder.onnx + policy.onnx (z, noise as inputs) for torch-free "
                         "adaptation and exploration")
    bun.add_argument("--checkpoint", required=True, help="a training run folder (or its checkpoint file)")
    bun.add_argument("--config", required=True)
    bun.add_argument("--out", required=True, help="output folder")
    bun.add_argument("--data", default="", help="the run's offline dataset: also write task_latents.json "
                     "(per-task posteriors for the explorer's posterior_episodes)")
    bun.set_defaults(func=_cmd_bundle)
    chk = sub.add_parser("check", help="load and check an exported model, print its metadata")
    chk.add_argument("model")
    chk.set_defaults(func=_cmd_check)

