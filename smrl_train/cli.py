"""The ``smrl`` command line.

    smrl data generate --config config/reach.yaml --out data/reach
    smrl data info data/reach
    smrl data merge rec/arm1 rec/arm2 --out rec/fleet
    smrl data render data/reach --episode 0 --out episode0.mp4
    smrl data import-bag my_bag --config config/reach.yaml --out data/my_arm
    smrl data export-bag data/reach reach_bag
    smrl data export-minari data/reach minari_datasets --id smrl/reach-v0
    smrl data import-minari minari_datasets/smrl/reach-v0 --config config/reach.yaml --out data/from_minari
    smrl check-arm config/reach_six_axis.yaml [--tasks 10] [--suggest] [--json]

Other command groups (``train``, ``eval``, ``report``, ``export``) are contributed by their
modules through ``add_subcommands(subparsers)``. Known user errors (bad config, bad store, bad
model) print one line naming the problem and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from smrl_train.config_loader import load_config
from smrl_train.config_schema import ConfigError
from smrl_train.data.store import StoreError
from smrl_train.families import ARM_FAMILIES
from smrl_train.robot.urdf import UrdfError

# Modules that contribute sub-commands; each exposes add_subcommands(subparsers).
_PLUGINS = ("smrl_train.smac.cli", "smrl_train.export.cli")
# Top-level modules of the optional extras (setup.py) those command groups import.
_EXTRAS = ("torch",)
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, StoreError, UrdfError, FileNotFoundError)


def _user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus the error types of the optional command groups that are installed."""
    errors = list(USER_ERRORS)
    for module, name in (("smrl_train.robot.model_metadata", "ModelError"),
                         ("smrl_train.smac.checkpoint", "CheckpointError"),
                         ("smrl_train.export.onnx_export", "ExportError"),
                         ("smrl_train.sim.render", "RenderError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _worker_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return n


def _data_generate(args: argparse.Namespace) -> int:
    from smrl_train.data.generate import dataset_summary, generate_dataset

    cfg = load_config(args.config)
    store = generate_dataset(cfg, args.out, progress=not args.quiet, workers=args.workers or os.cpu_count() or 1)
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
    if "joint_names" in m:
        joints = m["joint_names"]
        print(f"family       {s['family']} on {s['arm']} ({len(joints)} joints: {', '.join(joints)})")
    else:  # an external family (smrl_train.families): no arm, its robot fields are optional
        print(f"family       {s['family']}")
    layout = m.get("observation_layout")
    print(f"observation  {' + '.join(f'{n}[{k}]' for n, k in layout) if layout else 'obs'} = {m['obs_dim']}")
    rate = f" at {m['control_hz']} Hz" if "control_hz" in m else ""
    print(f"action       {(m.get('action') or {}).get('type', 'action')} x {m['act_dim']}{rate}")
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


def _data_merge(args: argparse.Namespace) -> int:
    from smrl_train.data.merge import merge_stores

    r = merge_stores(args.stores, args.out)
    for name in r.added:
        print(f"{name}: {r.added[name]} episode(s) added, {r.skipped[name]} already in {r.out}")
    return 0


def _data_render(args: argparse.Namespace) -> int:
    from smrl_train.sim.render import check_rendering

    check_rendering()  # before MuJoCo is first imported: it reads MUJOCO_GL then
    from smrl_train.data.generate import config_mismatches, manifest_config
    from smrl_train.data.store import EpisodeStore, StoreError, episode_filename
    from smrl_train.sim.render import Clip, EpisodeRenderer, episode_states, write_mp4

    store = EpisodeStore.open(args.store)
    m = store.manifest
    if args.config:
        cfg = load_config(args.config)
        problems = config_mismatches(cfg, m)
        if problems:
            raise StoreError(f"{args.store}: not episodes of the arm {args.config} describes: " + "; ".join(problems))
    else:
        cfg = manifest_config(m, args.store)
    if cfg.env.family not in ARM_FAMILIES:
        raise StoreError(f"{args.store}: smrl data render draws our arms' MuJoCo scene; {cfg.env.family} has none")
    paths = store.episode_paths()
    if args.task is not None:
        path = store.path / "episodes" / episode_filename(args.task, args.episode)
        if path not in paths:
            raise StoreError(f"{args.store}: no episode {args.episode} of task {args.task}")
    elif 0 <= args.episode < len(paths):
        path = paths[args.episode]
    else:
        raise StoreError(f"{args.store}: --episode {args.episode} out of range (the store holds {len(paths)} "
                         "episodes, numbered from 0; or give --task and the task's episode index)")
    ep = store.read_episode(path)
    task, index = ep.task_index, int(ep.meta["episode_index"])
    goals = {int(t["index"]): t["goal"] for split in m["tasks"].values() for t in split}
    text = f"task {task} episode {index}"
    for key in ("behaviour", "kind"):
        if key in ep.meta:
            text += f" ({ep.meta[key]})"
    if m["reward_labelled"]:
        text += f": return {float(ep.arrays['reward'].sum()):.1f}" + (", success" if ep.arrays["success"][-1] else "")
    out = args.out or f"task{task:04d}_ep{index:06d}.mp4"
    with EpisodeRenderer(cfg) as renderer:
        clip = Clip(episode_states(ep.arrays["obs"], ep.arrays["next_obs"]), goals.get(task), text)
        frames = write_mp4(out, renderer.frames([clip]), m["control_hz"])
    note = "" if task in goals else "; the manifest lists no such task, so no goal is drawn"
    print(f"wrote {out}: {text}, {frames} frames at {m['control_hz']:g} fps{note}")
    return 0


def _data_import_bag(args: argparse.Namespace) -> int:
    from smrl_train.data.rosbag import import_bag

    cfg = load_config(args.config)
    if cfg.env.family not in ARM_FAMILIES:
        raise ConfigError(f"env.family: a bag holds an arm's joint states; {cfg.env.family} is not one of our arm "
                          f"families ({', '.join(ARM_FAMILIES)})")
    r = import_bag(args.bag, cfg, args.out, joint_states=args.joint_states, commands=args.commands,
                   object_pose=args.object_pose, marker=args.marker, task=args.task, stepping=args.stepping,
                   gap_s=args.gap, min_steps=args.min_steps, ignore_extra_joints=args.ignore_extra_joints,
                   dataset=args.dataset)
    print(f"wrote {r.summary()} to {args.out} (task {args.task}, kind 'recorded')")
    return 0


def _data_export_bag(args: argparse.Namespace) -> int:
    from smrl_train.data.rosbag import export_bag

    episodes, messages = export_bag(args.store, args.bag)
    print(f"wrote {episodes} episodes ({messages} messages) to {args.bag} (rosbag2, MCAP)")
    return 0


def _data_export_minari(args: argparse.Namespace) -> int:
    from smrl_train.data.minari_dataset import export_minari

    r = export_minari(args.store, args.out, args.id, progress=not args.quiet)
    print(f"wrote {r.episodes} episodes ({r.steps} steps) to {r.path} (Minari dataset {args.id}; load it with "
          f"MINARI_DATASETS_PATH={args.out} and minari.load_dataset('{args.id}'))")
    return 0


def _data_import_minari(args: argparse.Namespace) -> int:
    from smrl_train.data.minari_dataset import import_minari

    cfg = load_config(args.config)
    r = import_minari(args.dataset, cfg, args.out, progress=not args.quiet)
    print(f"wrote {r.summary()} to {args.out} (reward-labelled)")
    return 0


def _check_arm(args: argparse.Namespace) -> int:
    from smrl_train.sim.arm_check import arm_report, format_report

    if args.tasks < 0:
        raise ConfigError(f"--tasks: must be >= 0, got {args.tasks}")
    cfg = load_config(args.config, arm_check=False)  # a bad home is reported, with a suggestion
    report = arm_report(cfg, args.tasks, suggest=True if args.suggest else None)
    print(json.dumps(report.as_dict(), indent=1) if args.json else format_report(report))
    return 1 if report.problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smrl", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="offline datasets and recorded episode stores")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser("generate", help="write a reward-labelled multi-task dataset")
    gen.add_argument("--config", required=True, help="config YAML, e.g. config/reach.yaml")
    gen.add_argument("--out", required=True, help="output folder (an episode store)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--workers", type=_worker_count, default=1,
                     help="simulation processes (0 = one per core); the files are the same for any number")
    gen.set_defaults(func=_data_generate)
    info = data_sub.add_parser("info", help="summarise an episode store")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_data_info)
    mer = data_sub.add_parser("merge", help="merge episode stores of one schema (e.g. one per arm) into one; "
                                            "rerunning adds nothing")
    mer.add_argument("stores", nargs="+", metavar="STORE", help="input episode stores")
    mer.add_argument("--out", required=True, help="the merged store (created, or an existing one of the same schema)")
    mer.set_defaults(func=_data_merge)
    ren = data_sub.add_parser("render", help="MP4 of a stored episode, with its hidden goal drawn")
    ren.add_argument("store")
    ren.add_argument("--episode", type=int, required=True,
                     help="the store's N-th episode (from 0, in file order), or with --task that task's episode N")
    ren.add_argument("--task", type=int, help="task index (the episode files' taskNNNN)")
    ren.add_argument("--out", help="MP4 file (default taskNNNN_epNNNNNN.mp4 here)")
    ren.add_argument("--config", help="family config (default: the one in the store's manifest)")
    ren.set_defaults(func=_data_render)
    imp = data_sub.add_parser("import-bag", help="a rosbag2 recording of an arm as a reward-free episode store")
    imp.add_argument("bag", help="rosbag2 folder (sqlite3 or MCAP)")
    imp.add_argument("--config", required=True, help="config YAML of the arm and family, e.g. config/reach.yaml")
    imp.add_argument("--out", required=True, help="episode store to write (created, or appended to)")
    imp.add_argument("--joint-states", default="/joint_states", help="sensor_msgs/JointState topic")
    imp.add_argument("--commands", default="/forward_position_controller/commands",
                     help="std_msgs/Float64MultiArray position command topic (the model's joint order)")
    imp.add_argument("--object-pose", help="geometry_msgs/PoseStamped object topic (push; default /puck_pose)")
    imp.add_argument("--marker", help="topic whose every message starts a new episode (any type)")
    imp.add_argument("--task", type=int, default=0, help="training task the episodes are filed under (default 0)")
    imp.add_argument("--stepping", choices=("time", "commands"), default="time",
                     help="time: resample at the control rate (a real arm); commands: one step per command "
                          "(a lockstep simulation)")
    imp.add_argument("--gap", type=float, default=0.0,
                     help="a pause in the commands longer than this (s) starts an episode (0: 5 periods, >= 0.5 s)")
    imp.add_argument("--min-steps", type=int, default=2, help="drop pieces shorter than this")
    imp.add_argument("--ignore-extra-joints", action="store_true",
                     help="drop joint-state entries of joints the URDF does not have (else an error)")
    imp.add_argument("--dataset", help="training dataset whose schema the store must have (its tasks are copied)")
    imp.set_defaults(func=_data_import_bag)
    exp = data_sub.add_parser("export-bag", help="an episode store as a rosbag2 (MCAP) for Foxglove / ros2 bag play")
    exp.add_argument("store")
    exp.add_argument("bag", help="bag folder to create")
    exp.set_defaults(func=_data_export_bag)
    emi = data_sub.add_parser("export-minari", help="an episode store as a Minari dataset (offline-RL tools load it)")
    emi.add_argument("store")
    emi.add_argument("out", help="Minari datasets root: the dataset goes to OUT/<id> (MINARI_DATASETS_PATH=OUT)")
    emi.add_argument("--id", required=True, help="Minari dataset id, (namespace/)name-vN, e.g. smrl/reach-v0")
    emi.add_argument("--quiet", action="store_true", help="no progress bar")
    emi.set_defaults(func=_data_export_minari)
    imi = data_sub.add_parser("import-minari", help="a Minari dataset as a reward-labelled offline dataset")
    imi.add_argument("dataset", help="Minari dataset folder (OUT/<id>) or an id in the local datasets root "
                                     "(MINARI_DATASETS_PATH, else ~/.minari/datasets)")
    imi.add_argument("--config", required=True, help="config YAML of the arm and family, e.g. config/reach.yaml")
    imi.add_argument("--out", required=True, help="episode store to create")
    imi.add_argument("--quiet", action="store_true", help="no progress bar")
    imi.set_defaults(func=_data_import_minari)

    chk = sub.add_parser("check-arm", help="an arm section against its URDF, the table, the workspace and the "
                         "scripted expert; suggests a home pose when the given one is bad (exit status 1)")
    chk.add_argument("config", help="config YAML, e.g. config/reach_six_axis.yaml")
    chk.add_argument("--tasks", type=int, default=10, help="training tasks the expert is run on (0: skip)")
    chk.add_argument("--suggest", action="store_true", help="suggest a home pose even when the given one is good")
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    chk.set_defaults(func=_check_arm)

    for name in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Not written yet / not installed, or its extra is not (torch: pip install smrl_ros[train]):
            # its commands are absent, the data commands still work.
            if exc.name and (name.startswith(exc.name) or exc.name.split(".")[0] in _EXTRAS):
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
