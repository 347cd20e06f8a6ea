"""``smrl_explorer``: records reward-free exploration episodes on a simulated or real arm.

It drives the arm with the adaptation bundle's latent policy (``policy.onnx``) and z drawn from
the prior N(0, I) in numpy, redrawn as the model was trained (its ``smrl.latent_resample``
metadata: every step for the paper recipe, once per episode for ours; the
``resample_period`` parameter overrides it; :mod:`smrl_train.robot.exploration`). With
``posterior_episodes`` > 0 the last episodes of each task draw z from the task's posterior
instead (the bundle's ``task_latents.json``, :mod:`smrl_train.robot.task_latents`), and
``prior_episodes`` > 0 records stochastic prior-z episodes: SMAC collects with the stochastic
policy under prior and posterior z, and the trainer files each kind where SMAC puts it
(:data:`smrl_train.data.recordings.EPISODE_KINDS`). Over the standard
topics (``/joint_states`` in, by joint name; ``/forward_position_controller/commands`` out,
reliable) with the controller's safety layer and policy step (episodes by
:class:`smrl_train.robot.episode_driver.EpisodeDriver`, on the node by
:class:`smrl_ros.arm_driver.ArmDriver`). It never subscribes to a reward.

Each episode of a task becomes one file of an episode store (:mod:`smrl_train.data.store`)
whose manifest has the training dataset's schema with ``reward_labelled: false``: obs,
action, next_obs, terminated/truncated flags and the joint-state stamps.

Between episodes the arm is reset by the sim bridge's ``~/reset`` service, or, on a real arm
(``reset_mode: home``), driven to the ``home`` pose under the same limits. With a sim bridge
(``sim_node``), the explorer switches its task before each task's episodes.

Crash safety:

* **SIGKILL / power loss**: episodes are kept in memory and written whole (temporary file,
  fsync, rename, fsync of the folder), and the next episode starts only once the previous
  one is on disk. A kill at any moment loses at most the episode in progress; the store
  holds exactly the finished episodes and never a partial file (leftover ``*.tmp`` files are
  ignored by readers). Restarting with the same parameters appends, numbering on from the
  last episode, and records only what is missing (``episodes_per_task`` is a target).
* **SIGINT / SIGTERM**: the episode in progress is written as a shorter episode whose last
  step is marked ``truncated`` (``on_stop: save``, the default: truncation is not a terminal
  state, so the data stay valid for bootstrapping) or dropped (``on_stop: drop``); the writer
  finishes, and the process exits 0.

Lifecycle (``rclpy.lifecycle``; ``autostart`` takes it to active at start-up): *configure* loads
the model and opens the store, *activate* records (resuming with the first task that still
needs episodes), *deactivate* ends the episode in progress as SIGINT does (``on_stop``) and
holds the arm, *cleanup* flushes the writer and releases everything.

Progress: every episode is logged (count, steps, rate), and ``~/status`` (std_msgs/String,
JSON, latched) and ``/diagnostics`` carry the counters every ``status_period_s``.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import String

import smrl_train
from smrl_ros import params, topics
from smrl_ros.arm_driver import ArmDriver, DriverParams
from smrl_ros.conversions import ERROR, OK, WARN, make_status, seconds_to_stamp
from smrl_ros.node_main import AUTOSTART_HELP, ManagedNode, StartupError, request_exit, run_node
from smrl_ros.paths import input_path, output_path, robot_arm
from smrl_train.data.episode_recorder import EpisodeRecorder
from smrl_train.data.recordings import (
    EXPLORE_KIND,
    POSTERIOR_KIND,
    PRIOR_KIND,
    EpisodeWriter,
    WrittenEpisode,
    recording_manifest,
)
from smrl_train.data.store import EpisodeStore, StoreError
from smrl_train.robot import task_latents
from smrl_train.robot.episode_driver import EpisodeDriver, EpisodeEnd, Transition
from smrl_train.robot.exploration import LatentExplorer, describe_period, episode_rng
from smrl_train.robot.model_metadata import ModelError
from smrl_train.robot.runtime import LatentPolicyRuntime
from smrl_train.robot.urdf import UrdfError

ON_STOP = ("save", "drop")
WRITTEN_POLL_S = 0.005  # how often the executor looks for episodes the writer thread finished


@dataclass(frozen=True)
class ExplorerParams(DriverParams):
    bundle: str = params.param("", "adaptation bundle folder (its policy.onnx) or a latent-policy .onnx file")
    store: str = params.param("", "episode store to record into (created, or appended to when its schema matches); "
                                "relative to the working directory")
    dataset: str = params.param("", "the offline dataset the bundle was trained on: the recording copies its "
                                "manifest (tasks, arm, config) after checking the schema; empty: the schema "
                                "comes from the model's metadata")
    tasks: tuple[int, ...] = params.param((), "training task indices to record, in order (a task listed n times "
                                          "gets n x episodes_per_task); empty: every training task of the dataset "
                                          "(task 0 without one)")
    fleet_share: tuple[int, ...] = params.param((), "[K, N]: this arm records every N-th of the tasks listed, "
                                                "from the K-th (0-based; arm K of a fleet of N); empty: all of them")
    episodes_per_task: int = params.param(1, "episodes each task should have in the store (those already there "
                                          "count, so a re-run finishes the job); 0: record the first task until "
                                          "stopped")
    prior_episodes: int = params.param(
        0, "of each task's episodes_per_task, how many (after the explore ones) sample actions from the "
           "stochastic policy with z from the prior: SMAC's prior-z collection")
    posterior_episodes: int = params.param(
        0, "of each task's episodes_per_task, how many (the last ones) sample actions from the stochastic "
           "policy with z from the task's posterior (the bundle's task_latents.json, computed by the trainer "
           "from the task's offline data): SMAC's posterior-z collection. The other episodes are 'explore' "
           "ones: deterministic policy, z from the prior, as the meta-test explores")
    task_latents: str = params.param("", "task posteriors file for posterior_episodes (empty: task_latents.json "
                                     "beside the bundle's policy.onnx)")
    resample_period: int = params.param(
        0, "steps between draws of z from the prior (0: as the model was trained, from its metadata: every "
           "step or once per episode; 1: every step)")
    robot_id: str = params.param("", "this arm's name in every episode's metadata (a fleet's explorers record into one "
                                 "store; empty: the node's namespace, e.g. arm1 for /arm1, else 'robot')")
    seed: int = params.param(0, "seed of the latent draws (episode k of task t draws from (seed, t, k))",
                             low=0, high=2**31 - 1)
    on_stop: str = params.param("save", "SIGINT/SIGTERM mid-episode: save (write it, last step truncated) or drop")
    exit_when_done: bool = params.param(True, "exit with status 0 once every task has its episodes")
    status_period_s: float = params.param(1.0, "period of ~/status and /diagnostics (s)")
    autostart: bool = params.param(True, AUTOSTART_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bundle:
            raise params.ParameterError("parameter 'bundle': required (an adaptation bundle folder)")
        if not self.store:
            raise params.ParameterError("parameter 'store': required (the episode store to record into)")
        if self.on_stop not in ON_STOP:
            raise params.ParameterError(f"parameter 'on_stop': expected save or drop, got {self.on_stop!r}")
        if self.episodes_per_task < 0 or self.resample_period < 0 or self.status_period_s <= 0:
            raise params.ParameterError("parameters: episodes_per_task >= 0, resample_period >= 0, "
                                        "status_period_s > 0 required")
        if min(self.prior_episodes, self.posterior_episodes) < 0 or \
                self.prior_episodes + self.posterior_episodes > self.episodes_per_task:
            raise params.ParameterError(
                "parameters 'prior_episodes' and 'posterior_episodes': expected >= 0 and together at most "
                f"episodes_per_task ({self.episodes_per_task}), got {self.prior_episodes} and "
                f"{self.posterior_episodes}")
        if self.fleet_share and (len(self.fleet_share) != 2 or not 0 <= self.fleet_share[0] < self.fleet_share[1]):
            raise params.ParameterError(f"parameter 'fleet_share': expected [K, N] with 0 <= K < N, "
                                        f"got {list(self.fleet_share)}")


def latent_policy_path(bundle: str) -> Path:
    """``bundle/policy.onnx`` for a bundle folder, else the file itself."""
    path = input_path(bundle)
    return path / "policy.onnx" if path.is_dir() else path


class ExplorerNode(ManagedNode):
    """The exploration recorder (a lifecycle node); see the module docstring."""

    def __init__(self) -> None:
        super().__init__("smrl_explorer")
        params.declare(self, ExplorerParams, read_only=tuple(ExplorerParams.__dataclass_fields__))

    # -- lifecycle ------------------------------------------------------------------------------
    def configure(self) -> None:
        """Load the model, open (or create) the store, start the writer; StartupError if not."""
        try:
            p = params.read(self, ExplorerParams)
            runtime = LatentPolicyRuntime(latent_policy_path(p.bundle))
            info = runtime.info
            arm = robot_arm(p.urdf_path, p.ee_link, info)
            self.driver = ArmDriver(self, p, arm, info)
            dataset = EpisodeStore.open(input_path(p.dataset)).manifest if p.dataset else None
            # ValueError on bad model metadata refuses the start like the other errors here.
            self.explorer = LatentExplorer(runtime, p.resample_period)
            self.latents = None
            if p.posterior_episodes:
                path = input_path(p.task_latents) if p.task_latents else \
                    latent_policy_path(p.bundle).parent / task_latents.FILE_NAME
                self.latents = task_latents.TaskLatents.load(path)
                if self.latents.latent_dim != info.latent_dim:
                    raise ValueError(f"{path}: latent_dim {self.latents.latent_dim}, but the policy's z has "
                                     f"{info.latent_dim} dimensions")
            generator = {"name": "smrl_explorer", "smrl_version": smrl_train.__version__,
                         "policy": str(runtime.model.path), "model_hash": info.model_hash,
                         "episode_kinds": {"explore": p.episodes_per_task - p.prior_episodes - p.posterior_episodes,
                                           "prior": p.prior_episodes, "posterior": p.posterior_episodes},
                         "resample_period": self.explorer.resample_period, "seed": p.seed}
            manifest = recording_manifest(info, episode_length=self.driver.core.episode_length, generator=generator,
                                          dataset_manifest=dataset)
            self.store = EpisodeStore.create(output_path(p.store), manifest)
        except (params.ParameterError, UrdfError, ModelError, StoreError, ValueError) as exc:  # TaskLatentsError too
            raise StartupError(str(exc)) from None
        self.p = p
        self.robot_id = p.robot_id or self.get_namespace().strip("/").replace("/", "_") or "robot"
        self.urdf_sha256 = arm.urdf_sha256
        self.goals = {t["index"]: t.get("goal") for t in self.store.manifest.get("tasks", {}).get("train", [])}
        listed = tuple(p.tasks) or (tuple(sorted(self.goals)) or (0,))
        if p.fleet_share:
            k, n = p.fleet_share
            mine = set(tuple(dict.fromkeys(listed))[k::n])  # every n-th distinct task, from the k-th
            listed = tuple(t for t in listed if t in mine)
            if not listed:
                raise StartupError(f"fleet_share {list(p.fleet_share)}: no task left for this arm (too few tasks "
                                   f"for {n} arms)")
        # A task listed n times gets n blocks of episodes_per_task (a trainer round that visits
        # it n times wants n fresh blocks); the order is that of first mention.
        self.tasks = tuple(dict.fromkeys(listed))
        self.target = {t: p.episodes_per_task * listed.count(t) for t in self.tasks}
        if self.latents is not None:
            missing = [t for t in self.tasks if t not in self.latents.mean]
            if missing:
                raise StartupError(f"task_latents: no posterior for task(s) {missing}; export the bundle from a "
                                   "run trained on these tasks")
        self.count = {t: self.store.next_episode_index(t) for t in self.tasks}
        self.task_pos = 0
        self.task: int | None = None
        self.recorder: EpisodeRecorder | None = None
        self.state = "starting"
        self.episodes_written = 0
        self.steps_written = 0
        self.episodes_dropped = 0
        self.write_errors: list[str] = []
        self.t_start: float | None = None
        self._episode_t0 = 0.0
        self._exiting = False
        self._submitted: collections.deque[str] = collections.deque()
        self._written: collections.deque[WrittenEpisode] = collections.deque()
        # The writer thread's results are picked up by a short timer, not a guard condition:
        # rclpy's EventsExecutor (smrl_ros.executors) does not support guard conditions.
        self._own_timers = [self.create_timer(WRITTEN_POLL_S, self._poll_written)]
        self.writer = EpisodeWriter(self._written.append)

        core = self.driver.core
        core.policy = self.explorer.act
        core.on_transition = self._on_transition
        core.on_episode_end = self._on_episode_end
        core.on_ready = self._maybe_run
        self.pub_status = self.create_publisher(String, "~/status", topics.LATCHED_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, topics.DEFAULT_QOS)
        self._own_timers.append(self.create_timer(p.status_period_s, self._publish_status))
        self.state = "inactive"
        todo = sum(max(0, self.target[t] - self.count[t]) for t in self.tasks)
        self.get_logger().info(
            f"recording {info.task_family} exploration with {runtime.model.path} (z ~ prior, drawn "
            f"{describe_period(self.explorer.resample_period)}"
            + (f"; then per task {p.prior_episodes} stochastic prior-z episode(s)" if p.prior_episodes else "")
            + (f"; the last {p.posterior_episodes} of each task's episodes stochastic with z ~ its posterior, "
               f"{task_latents.describe(self.latents)}" if self.latents is not None else "")
            + f") into {self.store.path}: tasks {list(self.tasks)}, "
            + (f"{p.episodes_per_task} episode(s) each per listing ({todo} to go)" if p.episodes_per_task
               else "until stopped")
            + f", {self.driver.core.episode_length} steps, {p.mode} mode, reset by {p.reset_mode}")

    def activate(self) -> None:
        """Record: from the first task (in order) that still needs episodes."""
        if self.state in ("done", "failed"):
            self.get_logger().info(f"activated, nothing to record: {self.state}")
            return
        self.task_pos = 0
        self._next_task()

    def deactivate(self) -> None:
        """End the episode in progress (written or dropped as ``on_stop`` says) and hold the arm."""
        self.driver.stop()
        rec = self.recorder
        if rec is not None and rec.steps_in_progress:
            assert self.task is not None
            if self.p.on_stop == "save":
                self.writer.submit(rec, truncated=True, meta=self._episode_meta(interrupted=True))
                self.count[self.task] += 1  # on disk under this index, as a restart would count it
                self.get_logger().info(f"stopping: writing the episode in progress ({rec.steps_in_progress} steps, "
                                       "last step marked truncated)")
            else:
                self.get_logger().info(f"stopping: dropping the episode in progress ({rec.steps_in_progress} steps)")
        self.recorder = None
        if self.state not in ("done", "failed"):
            self.state = "inactive"
        self._publish_status()

    def cleanup(self) -> None:
        """Flush the writer, then release the model, the store, the topics and the timers."""
        if not self.writer.close(timeout=30.0):
            self.get_logger().error("the episode writer did not finish within 30 s")
        self._exiting = True
        self._collect_written()
        if self.state not in ("done", "failed"):
            self.state = "stopped"
        self._publish_status()
        self.get_logger().info(f"stopped: {self.summary()}")
        self.driver.close()
        for timer in self._own_timers:
            self.destroy_timer(timer)
        self.destroy_publisher(self.pub_status)
        self.destroy_publisher(self.pub_diag)
        self._own_timers = []

    # -- the job ----------------------------------------------------------------------------------
    def _target_reached(self, task: int) -> bool:
        return bool(self.p.episodes_per_task) and self.count[task] >= self.target[task]

    def _next_task(self) -> None:
        """Move on to the next task that still needs episodes (cycling when recording forever)."""
        for _ in range(len(self.tasks)):
            task = self.tasks[self.task_pos % len(self.tasks)]
            self.task_pos += 1
            if not self._target_reached(task):
                self._switch_to(task)
                return
        self._done()

    def _switch_to(self, task: int) -> None:
        self.task = task
        self.state = "switching task"
        if not self.p.sim_node:
            self._reset()
            return
        goal = self.goals.get(task)
        values: dict[str, Any] = ({"task_goal": [float(g) for g in goal]} if goal
                                  else {"task_split": "train", "task_index": int(task)})

        def done(ok: bool, reason: str) -> None:
            if not self.active:
                return  # deactivated meanwhile
            if not ok:
                self._fail(f"could not set task {task} on /{self.p.sim_node}: {reason}")
                return
            self.get_logger().info(f"task {task}: {self.p.sim_node} set to {values}")
            self._reset()

        self.driver.set_node_parameters(self.p.sim_node, values, done)

    def _reset(self) -> None:
        self.state = "resetting"
        self.driver.reset()

    def _maybe_run(self) -> None:
        """Start the next episode once the arm is ready and the previous episode is on disk."""
        if not self.active or self.driver.core.phase != EpisodeDriver.READY or self.writer.pending or \
                self.state in ("done", "failed"):
            return
        assert self.task is not None
        self.recorder = EpisodeRecorder(self.store, self.task)
        k = self.count[self.task]
        self.explorer.begin_kind(self._episode_kind(k), episode_rng(self.p.seed, self.task, k), self.task, k,
                                 self.latents)
        self.state = "recording"
        self._episode_t0 = time.monotonic()
        if self.t_start is None:
            self.t_start = self._episode_t0
        self.driver.run(self.driver.core.episode_length)

    def _episode_kind(self, episode_index: int) -> str:
        """Each block of ``episodes_per_task`` episodes of a task in order: explore ones, then
        ``prior_episodes``, then the last ``posterior_episodes`` (recording forever: all explore)."""
        if not self.p.episodes_per_task:
            return EXPLORE_KIND
        k = episode_index % self.p.episodes_per_task
        first_prior = self.p.episodes_per_task - self.p.prior_episodes - self.p.posterior_episodes
        if k < first_prior:
            return EXPLORE_KIND
        return PRIOR_KIND if k < first_prior + self.p.prior_episodes else POSTERIOR_KIND

    def _on_transition(self, tr: Transition) -> None:
        assert self.recorder is not None
        self.recorder.add(tr.obs, tr.action, tr.next_obs, timestamp=tr.stamp)

    def _episode_meta(self, interrupted: bool = False) -> dict[str, Any]:
        assert self.task is not None
        kind = self._episode_kind(self.count[self.task])
        return {"kind": kind, "stochastic": kind != EXPLORE_KIND, "source": "smrl_explorer",
                "robot_id": self.robot_id, "urdf_sha256": self.urdf_sha256,
                "episode_seed": [self.p.seed, self.task, self.count[self.task]],
                "resample_period": self.explorer.resample_period, "mode": self.p.mode, "interrupted": interrupted}

    def _on_episode_end(self, end: EpisodeEnd) -> None:
        assert self.task is not None and self.recorder is not None
        if end.completed:
            rate = end.steps / max(time.monotonic() - self._episode_t0, 1e-9)
            self._submitted.append(f"task {self.task} #{self.count[self.task]}, {end.steps} steps at "
                                   f"{rate:.0f} steps/s")
            self.writer.submit(self.recorder, truncated=True, meta=self._episode_meta())
            self.count[self.task] += 1
        else:
            self.episodes_dropped += 1
            self.get_logger().warning(f"episode of task {self.task} dropped after {end.steps} steps: {end.reason}")
        self.recorder = None
        if self._target_reached(self.task):
            self._next_task()
        else:
            self._reset()

    # -- writer thread -> executor ---------------------------------------------------------------
    def _poll_written(self) -> None:
        if self._written:
            self._on_written()

    def _collect_written(self) -> bool:
        """Count the episodes the writer finished; False when one failed."""
        ok = True
        while self._written:
            result = self._written.popleft()
            if result.path is None:
                self.write_errors.append(result.error)
                ok = False
                continue
            self.episodes_written += 1
            self.steps_written += result.steps
            what = self._submitted.popleft() if self._submitted else f"{result.steps} steps"
            self.get_logger().info(f"episode {self.episodes_written} written ({what}): {result.path.name}")
        return ok

    def _on_written(self) -> None:
        if not self._collect_written():
            self._fail(f"could not write an episode: {self.write_errors[-1]}")
            return
        if self.state == "done" and not self.writer.pending:
            self._exit_if_wanted()
        self._maybe_run()

    # -- ending -------------------------------------------------------------------------------------
    def _done(self) -> None:
        self.state = "done"
        self.driver.stop()
        self._publish_status()
        if not self.writer.pending:
            self._exit_if_wanted()

    def _exit_if_wanted(self) -> None:
        if self._exiting:
            return
        self._exiting = True
        self._publish_status()
        self.get_logger().info(f"done: {self.summary()}")
        if self.p.exit_when_done:
            request_exit(self)

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.driver.stop()
        self.get_logger().error(message)
        self._publish_status()

    # -- status -------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t_start if self.t_start is not None else 0.0
        return {
            "state": self.state, "task": self.task, "store": str(self.store.path),
            "episodes": self.episodes_written, "steps": self.steps_written,
            "episodes_dropped": self.episodes_dropped, "episodes_in_store": len(self.store.episode_paths()),
            "steps_per_s": self.driver.core.counters["steps"] / elapsed if elapsed > 0 else 0.0,
            "elapsed_s": elapsed, "per_task": {str(t): c for t, c in self.count.items()},
            **{f"driver_{k}": v for k, v in self.driver.core.counters.items()},
            "rejected_states": sum(self.driver.mapper.rejected.values()),
        }

    def summary(self) -> str:
        s = self.status()
        return (f"{s['episodes']} episodes ({s['steps']} steps) written this run, {s['episodes_in_store']} in "
                f"{s['store']}, {s['episodes_dropped']} dropped, {s['steps_per_s']:.0f} steps/s")

    def _publish_status(self) -> None:
        s = self.status()
        self.pub_status.publish(String(data=json.dumps(s, sort_keys=True)))
        level = ERROR if self.state == "failed" else (WARN if s["episodes_dropped"] or s["rejected_states"] else OK)
        msg = DiagnosticArray()
        msg.header.stamp = seconds_to_stamp(time.time())
        flat = {k: v for k, v in s.items() if not isinstance(v, dict)}
        arm = self.store.manifest["arm"]["name"]
        msg.status = [make_status("smrl_explorer: recorder", level, self.state, flat, arm)]
        self.pub_diag.publish(msg)


def main(args: list[str] | None = None) -> int:
    return run_node(ExplorerNode, "smrl_explorer", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
