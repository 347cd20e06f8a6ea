"""Reward-free robot recordings: their manifest, the check that they fit a training dataset,
and a writer thread that puts finished episodes on disk.

The exploration node records into an ordinary episode store (:mod:`smrl_train.data.store`)
whose manifest has the training dataset's schema with ``reward_labelled: false``. The schema
comes from the offline dataset's manifest when the node is given one, else from the model's
ONNX metadata (a robot needs no dataset): both give equal :data:`SCHEMA_KEYS`, which is what
the trainer checks before it uses a recording (:func:`schema_mismatches`).

Robot side: numpy and safetensors only (no torch, no ROS).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smrl_train.data.episode_recorder import EpisodeRecorder

# Manifest keys a recording must share with the dataset it is trained with.
SCHEMA_KEYS = ("family", "joint_names", "observation_layout", "obs_dim", "act_dim", "action", "control_hz")
# The kinds of episode, one vocabulary for the in-process online loop (its requests and
# trajectories), the exploration node (each episode file's meta "kind") and the trainer:
# "explore": deterministic policy, z ~ N(0, I) redrawn every `resample_period` steps; exactly
#   the meta-test's exploration episodes (and our recipes' "explore" episodes): they
#   enter the trainer's RL buffer and its exploration-context buffer.
# "prior": stochastic policy (tanh-Gaussian sample), z ~ N(0, I): SMAC's prior-z collection;
#   RL buffer only.
# "posterior": stochastic policy, z ~ the task's posterior from the trainer's offline context
#   (task_latents.json): SMAC's posterior-z collection; RL buffer only.
EXPLORE_KIND = "explore"
PRIOR_KIND = "prior"
POSTERIOR_KIND = "posterior"
EPISODE_KINDS = (EXPLORE_KIND, PRIOR_KIND, POSTERIOR_KIND)
# Replayed episodes whose store names no kind (a reward-labelled store, an import): RL buffer only.
UNNAMED_KIND = "recorded"


def _max_step(values: Any) -> list[float]:
    # The dataset writer rounds to 9 digits; rounding the model's copy the same way makes the
    # two manifests compare equal.
    return [round(float(s), 9) for s in values]


def schema_from_model(info: Any) -> dict[str, Any]:
    """The schema keys of a store recorded with the model described by ``info``
    (a :class:`smrl_train.robot.model_metadata.ModelInfo`)."""
    return {
        "family": info.task_family,
        "joint_names": list(info.joint_names),
        "observation_layout": [[name, size] for name, size in info.observation_layout],
        "obs_dim": int(info.obs_dim),
        "act_dim": int(info.n_joints),
        "action": {"type": "joint_position_delta", "bounds": [-1.0, 1.0], "max_step": _max_step(info.max_step)},
        "control_hz": float(info.control_hz),
    }


def schema_mismatches(recorded: Mapping[str, Any], dataset: Mapping[str, Any],
                      names: tuple[str, str] = ("recording", "dataset")) -> list[str]:
    """Why episodes under manifest ``recorded`` cannot train with ``dataset`` (empty: they can).

    Each entry names the key and both values (called ``names`` in the message).
    ``action.max_step`` is compared to 1e-6 rad.
    """
    problems = []
    for key in SCHEMA_KEYS:
        a, b = recorded.get(key), dataset.get(key)
        if key == "action" and isinstance(a, Mapping) and isinstance(b, Mapping):
            same = (a.get("type") == b.get("type") and list(a.get("bounds", [])) == list(b.get("bounds", []))
                    and len(a.get("max_step", [])) == len(b.get("max_step", []))
                    and all(abs(float(x) - float(y)) <= 1e-6
                            for x, y in zip(a.get("max_step", []), b.get("max_step", []))))
        elif key == "control_hz" and (a is not None or b is not None):
            same = a is not None and b is not None and abs(float(a) - float(b)) < 1e-9
        else:
            same = a == b
        if not same:
            problems.append(f"{key}: {names[0]} {a!r} != {names[1]} {b!r}")
    return problems


def recording_manifest(info: Any, *, episode_length: int, generator: Mapping[str, Any],
                       dataset_manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a reward-free recording made with the model ``info``.

    With ``dataset_manifest`` (the offline dataset the model was trained on) the recording
    copies it (tasks, arm, config) and must match its schema; without, it is built from the
    model's metadata alone.

    Raises:
        ValueError: the model does not fit the dataset (the message names every key).
    """
    schema = schema_from_model(info)
    if dataset_manifest is not None:
        problems = schema_mismatches(schema, dataset_manifest)
        if problems:
            raise ValueError("the model does not fit the dataset: " + "; ".join(problems))
        base = {k: v for k, v in dataset_manifest.items() if k not in ("format", "version")}
        return {**base, "reward_labelled": False, "generator": dict(generator)}
    return {
        **schema,
        "arm": {"name": info.arm, "urdf_sha256": info.urdf_sha256},
        "episode_length": int(episode_length),
        "reward_labelled": False,
        "tasks": {},
        "generator": dict(generator),
    }


# ---------------------------------------------------------------------------------------
# Writing finished episodes off the control thread


@dataclass(frozen=True)
class WrittenEpisode:
    """What the writer reports for one job: the file (None when it failed), steps and error."""

    path: Path | None
    steps: int
    error: str = ""


class EpisodeWriter:
    """A thread that writes finished episodes, one at a time, in submission order.

    Why a thread: the node's executor thread is where SIGINT/SIGTERM land (as
    KeyboardInterrupt), and a write interrupted between its rename and the recorder's
    bookkeeping could be written twice on the clean-up path; signals never interrupt this
    thread. It also keeps fsync latency out of the control loop.

    Args:
        on_done: called from the writer thread after each job (keep it short and thread-safe).
    """

    def __init__(self, on_done: Callable[[WrittenEpisode], None] | None = None) -> None:
        self._jobs: queue.Queue[tuple[EpisodeRecorder, bool, dict[str, Any]] | None] = queue.Queue()
        self._on_done = on_done
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="smrl_episode_writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet written."""
        with self._lock:
            return self._pending

    def submit(self, recorder: EpisodeRecorder, truncated: bool, meta: dict[str, Any]) -> None:
        """Write the recorder's episode in progress (``recorder.finish``); the caller must not
        touch ``recorder`` afterwards."""
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._jobs.put((recorder, truncated, meta))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            recorder, truncated, meta = job
            steps = recorder.steps_in_progress
            try:
                result = WrittenEpisode(recorder.finish(truncated=truncated, meta=meta), steps)
            except Exception as exc:  # noqa: BLE001 - reported to the node, which logs it
                result = WrittenEpisode(None, steps, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()
            if self._on_done is not None:
                self._on_done(result)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted episode is written; False on timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 30.0) -> bool:
        """Write what is queued, then stop the thread. True when everything was written."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()
