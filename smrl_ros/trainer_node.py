"""``smrl_trainer``: offline meta-training and the self-supervised phase as a ROS node.

The training is :mod:`smrl_train.smac.runner` (``train_offline``, ``train_online``), the same
code ``smrl train`` runs, on the problem of ``config`` + ``data`` (an offline dataset). The
node adds:

* the self-supervised phase on episodes recorded by ``smrl_explorer`` (``recordings``: one or
  more reward-free episode stores, checked against the dataset's schema; without recordings
  the phase collects in the in-process sim, as ``smrl train online`` does);
* progress on ``~/progress`` (std_msgs/String, JSON: phase, steps or iterations done and
  total, losses, updates/s, ETA) and on the log, every ``progress_period_s``, from the rows
  the runner hands an in-memory logger (:class:`smrl_train.smac.logs.LatestMetrics`);
* every new checkpoint and exported adaptation bundle announced on ``~/checkpoints``
  (std_msgs/String, JSON, latched): the bundle (``encoder.onnx``, ``policy.onnx``,
  ``prior_policy.onnx``) is what the explorer, the adapter and the controller load.

Runs go to ``run_dir/<offline_run>`` and ``run_dir/<online_run>``, bundles to ``.../bundle``.
A finished phase is skipped, an interrupted one resumed from its checkpoint (``resume``), so a
restarted node continues where it stopped. SIGINT/SIGTERM set the flag every smrl node stops
by (:data:`smrl_ros.node_main.STOP`); the runner asks it before each update (offline) or
iteration (online, so a stop waits for the iteration's end), checkpoints and returns, and the
node exits 0. Training runs in the main thread, the ROS executor in a background one.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from smrl_ros import params, topics
from smrl_ros.executors import make_executor
from smrl_ros.node_main import EXIT_STARTUP_REFUSED, STOP, StartupError, stop_on_signals
from smrl_ros.paths import input_path, output_path
from smrl_train.smac.config import VARIANT_ALIASES, VARIANTS

PHASES = ("offline", "online")
EXIT_TRAINING_FAILED = 1


@dataclass(frozen=True)
class TrainerParams:
    config: str = params.param("config/reach.yaml", "task family config YAML (its smac: section is the recipe)")
    data: str = params.param("", "reward-labelled offline dataset (episode store)")
    run_dir: str = params.param("runs/ros", "folder of the runs (one sub-folder per phase), relative to "
                                   "the working directory")
    phases: tuple[str, ...] = params.param(("offline", "online"), "phases to run, in order: offline, online")
    offline_run: str = params.param("offline_only", "sub-folder of the offline run")
    online_run: str = params.param("smac", "sub-folder of the self-supervised run")
    recordings: tuple[str, ...] = params.param((), "reward-free episode stores recorded by smrl_explorer for the "
                                               "online phase (empty: collect in the in-process sim)")
    online_until: int = params.param(0, "stop the online phase after this many iterations in all (0: the config's "
                                         "total); run again with more recordings to continue it, round by round")
    labels: str = params.param("decoder", "online rewards: decoder (SMAC, reward-free) or true (oracle, sim only)")
    smac_file: str = params.param("", "YAML whose smac: section replaces the config's (e.g. config/smac_paper.yaml)")
    variant: str = params.param("", "recipe: success_tuned, return_tuned or paper ('' : the config's)")
    seed: int = params.param(-1, "seed (-1: the config's)")
    overrides: tuple[str, ...] = params.param((), "smac overrides section.key=value, e.g. offline.steps=2000")
    export: bool = params.param(True, "export the adaptation bundle after each phase")
    evaluate: bool = params.param(False, "meta-test each phase on the held-out tasks in-process (eval.json)")
    threads: int = params.param(1, "torch threads (0: torch's default)")
    progress_period_s: float = params.param(2.0, "period of ~/progress and of the progress log line (s)")
    exit_when_done: bool = params.param(True, "exit with status 0 when the phases are done (false: stay up)")

    def __post_init__(self) -> None:
        if not self.data:
            raise params.ParameterError("parameter 'data': required (the offline dataset)")
        if self.online_until < 0:
            raise params.ParameterError(f"parameter 'online_until': must be >= 0, got {self.online_until}")
        bad = [p for p in self.phases if p not in PHASES]
        if bad or not self.phases:
            raise params.ParameterError(f"parameter 'phases': expected offline and/or online, got {list(self.phases)}")
        if self.labels not in ("decoder", "true"):
            raise params.ParameterError(f"parameter 'labels': expected decoder or true, got {self.labels!r}")
        if self.labels == "true" and self.recordings:
            raise params.ParameterError("parameter 'labels': true needs rewards; recordings are reward-free")
        if self.variant not in ("", *VARIANTS, *VARIANT_ALIASES):
            raise params.ParameterError(f"parameter 'variant': expected one of {', '.join(VARIANTS)}, "
                                        f"got {self.variant!r}")
        if self.progress_period_s <= 0 or self.threads < 0:
            raise params.ParameterError("parameters: progress_period_s > 0 and threads >= 0 required")


class TrainerNode(Node):
    """The training node; :meth:`run` trains (main thread), the executor publishes progress."""

    def __init__(self) -> None:
        super().__init__("smrl_trainer")
        params.declare(self, TrainerParams, read_only=tuple(TrainerParams.__dataclass_fields__))
        try:
            p = params.read(self, TrainerParams)
            from smrl_train.smac.problem import problem_from_files, resolve_smac

            self.config_path = input_path(p.config)
            self.smac = resolve_smac(self.config_path, input_path(p.smac_file) if p.smac_file else None,
                                     p.variant or None, p.seed if p.seed >= 0 else None, p.overrides)
            self.problem = problem_from_files(self.config_path, input_path(p.data))
            self.source = None
            if p.recordings and "online" in p.phases:
                from smrl_train.data.store import EpisodeStore
                from smrl_train.smac.sources import RecordedEpisodeSource, load_recordings

                dataset = EpisodeStore.open(input_path(p.data)).manifest
                self.source = RecordedEpisodeSource(load_recordings([input_path(r) for r in p.recordings],
                                                                        dataset))
        except Exception as exc:  # noqa: BLE001 - config, store and parameter errors all refuse the start
            raise StartupError(f"{type(exc).__name__}: {exc}") from None
        self.p = p
        self.root = output_path(p.run_dir)
        self.current: dict[str, Any] | None = None
        self._samples: list[tuple[float, int]] = []
        self._logged_done, self._logged_at = -1, 0.0
        self._last_checkpoint: dict[str, float] = {}
        self.pub_progress = self.create_publisher(String, "~/progress", topics.DEFAULT_QOS)
        self.pub_checkpoints = self.create_publisher(String, "~/checkpoints", topics.LATCHED_QOS)
        self.create_timer(p.progress_period_s, self._report_progress)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.source.remaining_by_kind().items())) \
            if self.source is not None else ""
        recorded = (f"{self.source.remaining()} recorded episodes ({kinds}) from {', '.join(p.recordings)}"
                    if self.source is not None else "the in-process sim")
        self.get_logger().info(
            f"training {self.smac.variant} SMAC on {p.data} ({len(self.problem.train_tasks)} train / "
            f"{len(self.problem.test_tasks)} test tasks): phases {', '.join(p.phases)} into {self.root}; "
            f"offline {self.smac.offline.steps} updates, online {self.smac.online.iterations} x "
            f"{self.smac.online.updates_per_iteration} updates on {recorded}")

    # -- the job (main thread) -------------------------------------------------------------------
    def run(self) -> None:
        import torch

        from smrl_train.smac.checkpoint import CheckpointError, read_meta
        from smrl_train.smac.logs import LatestMetrics
        from smrl_train.smac.runner import evaluate_run, train_offline, train_online

        if self.p.threads:
            torch.set_num_threads(self.p.threads)
        offline_dir = self.root / self.p.offline_run
        online_dir = self.root / self.p.online_run
        for phase in self.p.phases:
            if STOP.is_set():
                self.get_logger().info(f"interrupted before the {phase} phase; start again to continue")
                return
            run_dir = offline_dir if phase == "offline" else online_dir
            try:
                meta = read_meta(run_dir)
            except CheckpointError:
                meta = None
            if meta is not None and meta.get("finished"):
                self.get_logger().info(f"{phase}: {run_dir} has finished already; not training it again")
            else:
                resume = meta is not None
                online_cfg = self._online_config(offline_dir, meta) if phase == "online" else None
                total = self.smac.offline.steps if online_cfg is None else online_cfg.online.iterations
                if phase == "online" and self.p.online_until:
                    total = min(total, self.p.online_until)
                done = int(meta.get("step" if phase == "offline" else "iteration", 0)) if meta else 0
                progress = LatestMetrics(done)
                self.current = {"phase": phase, "run": run_dir, "total": total, "t0": time.monotonic(),
                                "log": progress}
                self._samples, self._logged_done = [], -1
                self.get_logger().info(f"{phase}: {'resuming' if resume else 'starting'} {run_dir}")
                if phase == "offline":
                    train_offline(self.problem, self.smac, run_dir, resume=resume, progress=False,
                                  loggers=[progress], should_stop=STOP.is_set)
                else:
                    # The recipe given to this node (smac_file, variant, seed, overrides) trains the
                    # online phase too; without any, the run's own (resumed) or the offline run's.
                    explicit = online_cfg if self._recipe_given() else None
                    train_online(self.problem, run_dir, offline_run=offline_dir, labels=self.p.labels, cfg=explicit,
                                 source=self.source, resume=resume, progress=False,
                                 stop_after_iterations=self.p.online_until or None, loggers=[progress],
                                 should_stop=STOP.is_set)
                self._report_progress()
                elapsed = time.monotonic() - self.current["t0"]
                self.current = None
                if STOP.is_set():
                    self._announce_checkpoint(phase, run_dir)
                    self.get_logger().info("interrupted: the phase in progress is checkpointed; start again to resume")
                    return
                self.get_logger().info(f"{phase}: done in {elapsed:.0f} s")
            self._announce_checkpoint(phase, run_dir, force=True)
            if self.p.export:
                self._export(phase, run_dir)
            if self.p.evaluate:
                res = evaluate_run(self.problem, run_dir, progress=False, diagnostic=False)
                t = res["test"]
                self.get_logger().info(f"{phase}: meta-test final return {t['final_return']:.2f}, success "
                                       f"{t['success_rate']:.2f} on {len(t['tasks'])} held-out tasks")
                self._announce({"kind": "evaluation", "phase": phase, "run": str(run_dir),
                                "final_return": t["final_return"], "success_rate": t["success_rate"]})

    def _recipe_given(self) -> bool:
        p = self.p
        return bool(p.smac_file or p.variant or p.seed >= 0 or p.overrides)

    def _online_config(self, offline_dir: Path, meta: dict[str, Any] | None) -> Any:
        """The SMAC config the online phase trains with (see train_online's ``cfg``)."""
        from smrl_train.smac.checkpoint import CheckpointError, read_meta
        from smrl_train.smac.config import smac_from_yaml_dict

        if self._recipe_given():
            return self.smac
        if meta is not None and "smac" in meta:  # a resumed online run keeps its own
            return smac_from_yaml_dict(meta["smac"])
        try:
            return smac_from_yaml_dict(read_meta(offline_dir)["smac"])
        except (CheckpointError, KeyError):
            return self.smac

    def _export(self, phase: str, run_dir: Path) -> None:
        from smrl_train.export.run_bundle import export_run_bundle

        bundle = run_dir / "bundle"
        desc = export_run_bundle(run_dir, self.config_path, bundle, offline=self.problem.offline)
        self.get_logger().info(f"{phase}: exported the adaptation bundle {bundle} (step {desc['step']})")
        self._announce({"kind": "bundle", "phase": phase, "run": str(run_dir), "path": str(bundle),
                        "step": desc["step"], "method": desc["method"]})

    # -- progress and announcements (executor thread) -------------------------------------------------
    def _announce(self, payload: dict[str, Any]) -> None:
        self.pub_checkpoints.publish(String(data=json.dumps(payload, sort_keys=True)))

    def _announce_checkpoint(self, phase: str, run_dir: Path, force: bool = False) -> None:
        path = run_dir / "checkpoint.json"
        try:
            mtime = path.stat().st_mtime
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return  # not written yet, or caught mid-replace: the next poll sees it
        if not force and self._last_checkpoint.get(str(path)) == mtime:
            return
        self._last_checkpoint[str(path)] = mtime
        self._announce({"kind": "checkpoint", "phase": phase, "run": str(run_dir),
                        "path": str(run_dir / "checkpoint.safetensors"), "step": meta.get("step"),
                        "iteration": meta.get("iteration"), "finished": meta.get("finished")})

    def _report_progress(self) -> None:
        cur = self.current
        if cur is None:
            return
        prog = cur["log"].progress(cur["phase"], cur["total"])
        now = time.monotonic()
        self._samples.append((now, prog["done"]))
        self._samples = self._samples[-30:]
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        rate = (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else None
        eta = (prog["total"] - prog["done"]) / rate if rate else None
        prog.update(run=str(cur["run"]), elapsed_s=now - cur["t0"], eta_s=eta)
        self.pub_progress.publish(String(data=json.dumps(prog, sort_keys=True)))
        self._announce_checkpoint(cur["phase"], cur["run"])
        if prog["done"] == self._logged_done and now - self._logged_at < 30.0:
            return  # the metrics move every log interval: log when they do (or every 30 s)
        self._logged_done, self._logged_at = prog["done"], now
        unit = "updates" if cur["phase"] == "offline" else "iterations"
        losses = ", ".join(f"{k} {v:.3g}" for k, v in sorted(prog["losses"].items())[:4])
        self.get_logger().info(f"{cur['phase']}: {prog['done']}/{prog['total']} {unit}"
                               + (f", ETA {eta:.0f} s" if eta is not None else "") + (f" ({losses})" if losses else ""))
        self._announce_checkpoint(cur["phase"], cur["run"])


def main(args: list[str] | None = None) -> int:
    """Like :func:`smrl_ros.node_main.run_node`, with the roles of the threads swapped: the
    training runs in the main thread, the executor in a background one."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_on_signals()
    try:
        node = TrainerNode()
    except StartupError as exc:
        rclpy.logging.get_logger("smrl_trainer").fatal(f"refusing to start: {exc}")
        rclpy.try_shutdown()
        return EXIT_STARTUP_REFUSED
    executor = make_executor()
    executor.add_node(node)
    finished = threading.Event()

    def spin() -> None:
        while not finished.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)

    thread = threading.Thread(target=spin, name="smrl_trainer_executor", daemon=True)
    thread.start()
    status = 0
    try:
        node.run()
        while not node.p.exit_when_done and not STOP.is_set():
            time.sleep(0.2)
    except Exception as exc:  # noqa: BLE001 - a failed run is logged and reported by the exit status
        node.get_logger().fatal(f"training failed: {type(exc).__name__}: {exc}")
        status = EXIT_TRAINING_FAILED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(0.2)  # let the last announcements go out
        finished.set()
        thread.join(timeout=2.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
