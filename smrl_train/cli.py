"""The ``smrl`` command line.

    smrl data generate --config config/reach.yaml --out data/reach
    smrl data info data/reach

Other command groups (``train``, ``eval``, ``report``, ``export``) are contributed by their
modules through ``add_subcommands(subparsers)``. Known user errors (bad config, bad store, bad
model) print one line naming the problem and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from smrl_train.config_loader import load_config
from smrl_train.config_schema import ConfigError
from smrl_train.data.store import StoreError
from smrl_train.robot.urdf import UrdfError

# Modules that contribute sub-commands; each exposes add_subcommands(subparsers).
_PLUGINS = ("smrl_train.smac.cli", "smrl_train.export.cli")
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, StoreError, UrdfError, FileNotFoundError)


def _user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus the error types of the optional command groups that are installed."""
    errors = list(USER_ERRORS)
    for module, name in (("smrl_train.robot.model_metadata", "ModelError"),
                         ("smrl_train.smac.checkpoint", "CheckpointError"),
                         ("smrl_train.export.onnx_export", "ExportError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _data_generate(args: argparse.Namespace) -> int:
    from smrl_train.data.generate import dataset_summary, generate_dataset

    cfg = load_config(args.config)
    store = generate_dataset(cfg, args.out, progress=not args.quiet)
    s = dataset_summary(store)
    print(f"wrote {s['episodes']} episodes ({s['transitions']} transitions, {s['tasks']} tasks) to {args.out}")
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from smrl_train.data.generate import dataset_summary
    from smrl_train.data.store import EpisodeStore

    store = EpisodeStore.open(args.path)
    s = dataset_summary(store)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    m = store.manifest
    print(f"store        {args.path}")
    print(f"family       {s['family']} on {s['arm']} ({len(m['joint_names'])} joints: {', '.join(m['joint_names'])})")
    print(f"observation  {' + '.join(f'{n}[{k}]' for n, k in m['observation_layout'])} = {m['obs_dim']}")
    print(f"action       {m['action']['type']} x {m['act_dim']} at {m['control_hz']} Hz")
    print(f"labels       {'reward-labelled' if s['reward_labelled'] else 'reward-free'}")
    print(f"tasks        {s['tasks']} with data; manifest lists "
          + ", ".join(f"{len(v)} {k}" for k, v in m["tasks"].items()))
    print(f"episodes     {s['episodes']}   transitions {s['transitions']}")
    if s["reward_labelled"] and s["episodes"]:
        print(f"return       mean {s['return_mean']:.2f}  std {s['return_std']:.2f}  "
              f"min {s['return_min']:.2f}  max {s['return_max']:.2f}")
        print(f"success      {100 * s['final_success_rate']:.1f}% of episodes end at the goal")
        for name, b in s["by_behaviour"].items():
            print(f"  {name:<12} {b['episodes']:>4} episodes, mean return {b['return_mean']:.2f}")
    if s["stale_temp_files"]:
        print(f"note         {s['stale_temp_files']} temporary file(s) from an interrupted writer (ignored)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smrl", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="offline datasets and recorded episode stores")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser("generate", help="write a reward-labelled multi-task dataset")
    gen.add_argument("--config", required=True, help="config YAML, e.g. config/reach.yaml")
    gen.add_argument("--out", required=True, help="output folder (an episode store)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_data_generate)
    info = data_sub.add_parser("info", help="summarise an episode store")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_data_info)

    for name in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # not written yet / not installed: its commands are absent
                continue
            raise
        module.add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        print(f"smrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
