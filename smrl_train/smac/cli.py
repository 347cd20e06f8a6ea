"""SMAC sub-commands of ``smrl`` (wired in by ``smrl_train.cli``)::

    smrl train offline --config config/reach.yaml --data data/reach --run runs/r/offline [--variant paper]
    smrl train online  --config config/reach.yaml --data data/reach --from runs/r/offline \\
                       --run runs/r/smac --labels decoder|true [--source DIR]
    smrl eval          --config config/reach.yaml --data data/reach --run runs/r/smac [--video videos/]
    smrl diagnose      runs/r/smac
    smrl report        --runs runs/r --out docs/results/reach
    smrl experiment    --config config/reach.yaml --data data/reach --out runs/r --seeds 0 1 2 --jobs 2

Every training command accepts ``--resume`` (continue an interrupted run from its checkpoint),
``--smac FILE`` (take the ``smac:`` section from another YAML, e.g. config/smac_paper.yaml),
``--variant``, ``--seed`` and ``--set section.key=value`` overrides.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING, Any

from smrl_train.config_schema import ConfigError

if TYPE_CHECKING:
    from smrl_train.smac.video import AdaptationFilm


def _add_common(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("--config", required=True, help="task family config YAML (its smac: section is used)")
    if data:
        p.add_argument("--data", required=True, help="reward-labelled offline dataset (episode store)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")


def _add_smac(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smac", help="YAML file whose smac: section replaces the config's (e.g. config/smac_paper.yaml)")
    p.add_argument("--variant", choices=("paper", "return_tuned", "success_tuned", "improved"),
                   help="recipe (re-derives its defaults); improved = return_tuned, its earlier name")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a smac key, e.g. --set online.iterations=5 (repeatable)")


def _add_device(p: argparse.ArgumentParser, acting: bool = False) -> None:
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="where the networks act: cpu (default) or cuda (cuda:K)" if acting else
                   "where the updates and the final evaluation run: cpu (default) or cuda (cuda:K); under torchrun "
                   "each process takes cuda:LOCAL_RANK. The online phase's collection and learning curve act on "
                   "the CPU")


def _add_workers(p: argparse.ArgumentParser) -> None:
    from smrl_train.cli import _worker_count

    p.add_argument("--workers", type=_worker_count, default=1, metavar="W",
                   help="processes collecting the online phase's sim episodes (0 = one per core; default 1); "
                        "the same episodes as one process's")


def _device(args: argparse.Namespace) -> Any:
    """The checked ``--device`` (one line and exit 2 when CUDA is asked for and absent)."""
    from smrl_train.smac.trainer import training_device

    return training_device(args.device)


def _workers(args: argparse.Namespace) -> int:
    import os

    return int(args.workers or os.cpu_count() or 1)


def _threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def _smac_cfg(args: argparse.Namespace) -> Any:
    from smrl_train.smac.problem import resolve_smac

    return resolve_smac(args.config, args.smac, args.variant, args.seed, args.overrides)


def _print_eval(res: dict[str, Any]) -> None:
    t = res["test"]
    print(f"{res['method']} (seed {res['seed']}): final return {t['final_return']:.2f}, "
          f"success {t['success_rate']:.2f} "
          f"on {len(t['tasks'])} test tasks; random policy {res['random_policy']['final_return']:.2f}")
    d = res.get("diagnostic")
    if d:
        print(f"  z diagnostic (train tasks): return with z from offline context {d['return_offline_context']:.2f}, "
              f"from own exploration {d['return_exploration_context']:.2f}; z distance {d['z_distance']:.2f} "
              f"(spread {d['z_spread_between_tasks']:.2f})")


def _train_offline(args: argparse.Namespace) -> int:
    from smrl_train.smac.data_parallel import from_environment, rank_device
    from smrl_train.smac.problem import problem_from_files
    from smrl_train.smac.runner import evaluate_run, train_offline

    _threads(args)
    device = _device(args)
    cfg = _smac_cfg(args)
    problem = problem_from_files(args.config, args.data)
    ranks = from_environment(device)  # several processes under torchrun, else one
    train_offline(problem, cfg, args.run, algo=args.algo, method=args.method, resume=args.resume,
                  progress=not args.quiet, ranks=ranks, device=rank_device(device))
    if not ranks.main:
        return 0
    print(f"offline run written to {args.run}" + (f" ({ranks.world} processes)" if ranks.parallel else ""))
    if not args.no_eval:
        _print_eval(evaluate_run(problem, args.run, progress=not args.quiet))
    return 0


def _train_online(args: argparse.Namespace) -> int:
    from smrl_train.smac.data_parallel import from_environment, rank_device
    from smrl_train.smac.problem import problem_from_files
    from smrl_train.smac.runner import evaluate_run, train_online

    _threads(args)
    device = _device(args)
    workers = _workers(args)
    if args.source and workers > 1:
        raise ConfigError(f"--workers {args.workers}: workers collect in the sim; --source replays recordings")
    problem = problem_from_files(args.config, args.data)
    cfg = None
    if args.smac or args.variant or args.seed is not None or args.overrides:
        if args.seed is None and args.from_run and not args.resume:
            # An override must not change the seed behind the user's back: keep the offline run's.
            from smrl_train.smac.checkpoint import read_meta

            args.seed = int(read_meta(args.from_run).get("smac", {}).get("seed", 0))
        cfg = _smac_cfg(args)
    source = None
    if args.source:
        # The trainer node's checks: reward-free, the dataset's schema (arm, joints, layout,
        # rate, family), known tasks, known episode kinds.
        from smrl_train.data.store import EpisodeStore
        from smrl_train.smac.sources import RecordedEpisodeSource, load_recordings

        source = RecordedEpisodeSource(load_recordings(args.source, EpisodeStore.open(args.data).manifest))
    ranks = from_environment(device)  # several processes under torchrun, else one
    train_online(problem, args.run, offline_run=args.from_run, labels=args.labels, cfg=cfg, source=source,
                 method=args.method, resume=args.resume, progress=not args.quiet, ranks=ranks,
                 device=rank_device(device), workers=workers)
    if not ranks.main:
        return 0
    print(f"online run written to {args.run}" + (f" ({ranks.world} processes)" if ranks.parallel else ""))
    if not args.no_eval:
        _print_eval(evaluate_run(problem, args.run, progress=not args.quiet))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import dataclasses

    if args.video:
        if args.video_tasks < 1:
            raise ConfigError(f"--video-tasks: must be >= 1, got {args.video_tasks}")
        from smrl_train.sim.render import check_rendering

        check_rendering()  # before minutes of evaluation, and before MuJoCo is first imported
        from smrl_train.config_loader import load_config
        from smrl_train.families import ARM_FAMILIES

        family = load_config(args.config).env.family
        if family not in ARM_FAMILIES:
            raise ConfigError(f"--video: films our arms' MuJoCo scene; {family} has none")
    from smrl_train.robot.latent_schedule import resample_period
    from smrl_train.smac.config import smac_from_yaml_dict
    from smrl_train.smac.problem import problem_from_files
    from smrl_train.smac.runner import evaluate_run, run_meta
    from smrl_train.smac.video import AdaptationFilm

    _threads(args)
    device = _device(args)
    problem = problem_from_files(args.config, args.data)
    k, resample = args.exploration_episodes, args.resample_latent
    if k is not None and k < 0:
        raise ConfigError(f"--exploration-episodes: must be >= 0, got {k}")
    if resample is not None:
        try:
            resample_period(resample)
        except ValueError as exc:
            raise ConfigError(f"--resample-latent: {exc}") from None
    changes: dict[str, Any] = {}
    if k is not None:
        changes["exploration_episodes"] = k
    if resample is not None:
        changes["resample_latent"] = int(resample) if resample.isdigit() else resample
    # The protocol changed: its own file (eval_exploreK.json is what smrl report tabulates).
    out_name = ("eval" + (f"_resample{resample}" if resample is not None else "")
                + (f"_explore{k}" if k is not None else "") + ".json")
    for run in args.run:
        film = AdaptationFilm(args.video_tasks) if args.video else None
        hook = film.keep if film else None
        if not changes:
            res = evaluate_run(problem, run, progress=not args.quiet, diagnostic=not args.no_diagnostic, on_run=hook,
                               device=device)
            _print_eval(res)
        else:
            cfg = dataclasses.replace(smac_from_yaml_dict(run_meta(run)["smac"]).eval, **changes)
            res = evaluate_run(problem, run, progress=not args.quiet, diagnostic=False, eval_cfg=cfg,
                               out_name=out_name, on_run=hook, device=device)
            protocol = ", ".join(f"{key} {value}" for key, value in changes.items())
            print(f"{res['method']} (seed {res['seed']}), {protocol}: success "
                  f"{res['test']['success_rate']:.2f}, final return {res['test']['final_return']:.2f} "
                  f"-> {run}/{out_name}")
        if film:
            _write_film(film, args, res)
    return 0


def _write_film(film: AdaptationFilm, args: argparse.Namespace, res: dict[str, Any]) -> None:
    import time

    from smrl_train.config_loader import load_config

    t0 = time.perf_counter()
    stem = (f"{res['method']}_seed{res['seed']}"
            + ("" if args.resample_latent is None else f"_resample{args.resample_latent}")
            + ("" if args.exploration_episodes is None else f"_explore{args.exploration_episodes}"))
    written = film.write(load_config(args.config), args.video, stem)
    for path, frames in written:
        print(f"  video {path} ({frames} frames, {path.stat().st_size / 1e3:.0f} kB)")
    print(f"  {len(written)} video(s) in {time.perf_counter() - t0:.0f} s: run 0 of each task, exploration "
          "episodes and the scored one side by side")


def _diagnose(args: argparse.Namespace) -> int:
    from smrl_train.smac.diagnose import format_table
    from smrl_train.smac.problem import problem_from_files
    from smrl_train.smac.runner import diagnose_run, run_meta

    _threads(args)
    device = _device(args)
    described = run_meta(args.run).get("problem", {})
    config, data = args.config or described.get("config"), args.data or described.get("data")
    if not config or not data:
        raise ConfigError(f"{args.run}: the run does not name its config and data; pass --config and --data")
    result = diagnose_run(problem_from_files(config, data), args.run, n_tasks=args.tasks, episodes=args.episodes,
                          progress=not args.quiet, device=device)
    print(f"{result['method']} (seed {result['seed']}), {result['seconds']:.0f} s:")
    print(format_table(result))
    return 0


def _report(args: argparse.Namespace) -> int:
    from smrl_train.smac.report import write_report

    summary = write_report(args.runs, args.out, command=args.command or "", title=args.title)
    print(f"report written to {args.out} ({len(summary['methods'])} methods)")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from smrl_train.smac.experiment import BASE_METHODS, Ablation, ExperimentSpec, run_experiment
    from smrl_train.smac.report import write_report

    device = _device(args)
    cfg = _smac_cfg(args)
    methods = tuple(args.methods or BASE_METHODS)
    unknown = [m for m in methods if m not in BASE_METHODS]
    if unknown:
        raise ConfigError(f"--methods: unknown {', '.join(unknown)} (known: {', '.join(BASE_METHODS)})")
    try:
        ablations = tuple(Ablation.parse(a) for a in args.ablation)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    spec = ExperimentSpec(config=args.config, data=args.data, out=args.out, smac=cfg, methods=methods,
                          ablations=ablations, threads=max(1, args.threads or 1), progress=not args.quiet,
                          diagnose_tasks=args.diagnose_tasks, device=str(device), workers=_workers(args))
    run_experiment(spec, args.seeds, jobs=args.jobs)
    if args.report:
        command = "smrl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("smrl") else ""
        write_report([args.out], args.report, command=command, title=args.title)
        print(f"report written to {args.report}")
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``train``, ``eval``, ``report`` and ``experiment`` to the ``smrl`` parser."""
    train = subparsers.add_parser("train", help="meta-train SMAC (offline phase, self-supervised online phase)")
    tsub = train.add_subparsers(dest="train_command", required=True)

    off = tsub.add_parser("offline", help="offline meta-training on a reward-labelled dataset")
    _add_common(off)
    _add_smac(off)
    # --run-dir: the spelling torchrun lets through (it takes --run for its own --run-path).
    off.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory to write (or resume)")
    off.add_argument("--algo", choices=("smac", "meta_bc"), default="smac", help="meta_bc = behaviour-cloning baseline")
    off.add_argument("--method", help="report row name (default offline_only[_paper] / meta_bc)")
    off.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    off.add_argument("--no-eval", action="store_true", help="skip the meta-test at the end")
    _add_device(off)
    off.set_defaults(func=_train_offline)

    on = tsub.add_parser("online", help="self-supervised phase from a finished offline run")
    _add_common(on)
    _add_smac(on)
    on.add_argument("--from", dest="from_run", help="the offline run to start from")
    on.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory to write (or resume)")
    on.add_argument("--labels", choices=("decoder", "true"), default="decoder",
                    help="decoder = SMAC (reward-free), true = online oracle")
    on.add_argument("--source", action="append", metavar="STORE",
                    help="reward-free recording (episode store) to train on instead of the sim env; repeatable")
    on.add_argument("--method", help="report row name (default smac/oracle[_paper])")
    on.add_argument("--resume", action="store_true")
    on.add_argument("--no-eval", action="store_true")
    _add_device(on)
    _add_workers(on)
    on.set_defaults(func=_train_online)

    ev = subparsers.add_parser("eval", help="meta-test runs on held-out tasks (writes eval.json)")
    _add_common(ev)
    ev.add_argument("--run", required=True, nargs="+", help="run directories")
    ev.add_argument("--no-diagnostic", action="store_true", help="skip the offline-vs-exploration z diagnostic")
    ev.add_argument("--exploration-episodes", type=int, metavar="K",
                    help="the protocol with K exploration episodes instead of the run's; writes eval_exploreK.json "
                         "(eval.json stays the protocol's), which smrl report tabulates")
    ev.add_argument("--resample-latent", metavar="R",
                    help="the protocol with z redrawn as R (step, episode, or every R steps) instead of the run's "
                         "eval.resample_latent; writes eval_resampleR.json (eval.json stays the protocol's)")
    ev.add_argument("--video", metavar="DIR",
                    help="also write MP4s of the first held-out tasks (exploration and scored episodes side by "
                         "side) to DIR; needs imageio and an OpenGL context (MUJOCO_GL=egl without a display)")
    ev.add_argument("--video-tasks", type=int, default=3, metavar="K", help="held-out tasks filmed (default 3)")
    _add_device(ev, acting=True)
    ev.set_defaults(func=_eval)

    dg = subparsers.add_parser("diagnose", help="goal error of a probe on z, the trilateration bound and success, "
                                                "with z from offline context vs 1, 2, 4 exploration episodes")
    dg.add_argument("run", help="a trained run directory")
    dg.add_argument("--config", help="task family config (default: the one the run was trained with)")
    dg.add_argument("--data", help="the offline dataset (default: the one the run was trained with)")
    _add_device(dg, acting=True)
    dg.add_argument("--tasks", type=int, default=20, help="training and held-out tasks evaluated, each")
    dg.add_argument("--episodes", type=int, nargs="+", default=[1, 2, 4], help="exploration episodes per context")
    dg.add_argument("--quiet", action="store_true", help="no progress bar")
    dg.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    dg.set_defaults(func=_diagnose)

    rep = subparsers.add_parser("report", help="markdown + PNG + summary.json from evaluated runs")
    rep.add_argument("--runs", required=True, nargs="+", help="folders searched for eval.json")
    rep.add_argument("--out", required=True, help="report folder, e.g. docs/results/reach")
    rep.add_argument("--title", default="SMAC results")
    rep.add_argument("--command", help="the command that reproduces the runs (printed in the report)")
    rep.set_defaults(func=_report)

    ex = subparsers.add_parser("experiment", help="all methods x seeds (shared offline runs), then a report")
    _add_common(ex)
    _add_smac(ex)
    ex.add_argument("--out", required=True, help="folder of the runs (seed<k>/<method>/)")
    ex.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ex.add_argument("--jobs", type=int, default=1, help="seeds run as this many parallel processes")
    ex.add_argument("--methods", nargs="+", help="subset of the base methods (default all)")
    ex.add_argument("--ablation", action="append", default=[], metavar="NAME:LABELS:KEY=VALUE,...",
                    help="extra row; LABELS decoder|true (online from the shared offline run) or none "
                         "(offline only), e.g. smac_no_explore:decoder:online.explore_context_fraction=0 or "
                         "offline_matched:none:offline.steps=11000")
    ex.add_argument("--diagnose-tasks", type=int, default=20,
                    help="training and held-out tasks of each run's smrl diagnose (0: skip it)")
    ex.add_argument("--report", help="write the report to this folder at the end")
    ex.add_argument("--title", default="SMAC results")
    _add_device(ex)
    _add_workers(ex)
    ex.set_defaults(func=_experiment)


# A user error inside these commands (bad run dir, bad checkpoint) is reported in one line by
# smrl_train.cli: make our error types ConfigError-like for it.
def _register_user_errors() -> None:
    import smrl_train.cli as main_cli
    from smrl_train.smac.checkpoint import CheckpointError
    from smrl_train.smac.runner import RunError

    extra = (RunError, CheckpointError)
    if not all(e in main_cli.USER_ERRORS for e in extra):
        main_cli.USER_ERRORS = tuple(main_cli.USER_ERRORS) + extra


try:
    _register_user_errors()
except ImportError:  # pragma: no cover - the main CLI is not importable in some contexts
    pass
