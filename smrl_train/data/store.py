"""The episode store: reward-labelled offline datasets and reward-free robot recordings alike.

On disk (documented in docs/guide.md, "Episode store format")::

    DIR/manifest.json                       schema, written once, atomically
    DIR/episodes/task0003_ep000012.safetensors   one file per finished episode

Each episode file is written atomically (temporary file, fsync, rename, fsync of the folder),
so a writer killed at any moment leaves only whole episodes; leftover ``*.tmp`` files are
ignored by readers and listed by ``smrl data info``. Files are safetensors (no pickle), with
one metadata entry ``episode`` holding sorted JSON (task index, episode index, behaviour, seed,
length and a SHA-256 of the tensor bytes, checked on load). The same seed therefore gives
byte-identical files.

Contents are checked on write and on load, not only the checksum: shapes and dtypes against
the manifest, finite values, actions inside the manifest's bounds, observations of physical
magnitude (|x| <= ``OBS_ABS_MAX``), a file name that matches its metadata, and (in reward-labelled
stores) only tasks the manifest lists. A file read back must hold exactly the arrays and dtypes
the writer writes; every refusal is a :class:`StoreError` naming the file.

Tensors per episode of T steps: ``obs`` (T, obs_dim) f32, ``action`` (T, act_dim) f32,
``next_obs`` (T, obs_dim) f32, ``terminated`` (T,) bool, ``truncated`` (T,) bool,
``timestamp`` (T,) f64 (s), and, in reward-labelled stores only, ``reward`` (T,) f32 and
``success`` (T,) bool.

A robot's store (an arm family's: its manifest names an ``arm`` or the family is one of ours)
must carry the robot fields (``ROBOT_KEYS``, per-step timestamps); an external family's
(smrl_train.families) may leave them out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from smrl_train.families import ARM_FAMILIES

FORMAT = "smrl-episodes"
VERSION = 1
MANIFEST = "manifest.json"
EPISODES = "episodes"
_NAME = re.compile(r"^task(\d{4})_ep(\d{6})\.safetensors$")
REQUIRED = ("obs", "action", "next_obs", "terminated", "truncated")
# Per-step arrays a robot's episodes also carry (optional for other families).
ROBOT_ARRAYS = ("timestamp",)
LABELLED = ("reward", "success")
# Largest magnitude an observation entry may have (rad, rad/s, m): far beyond any arm's joint
# range, speed or reach, so a value past it is a unit or logging error, not a state.
OBS_ABS_MAX = 1e3
# Manifest keys a reader relies on, and those a robot's store adds.
MANIFEST_KEYS = ("format", "version", "family", "obs_dim", "act_dim", "reward_labelled", "tasks", "generator")
ROBOT_KEYS = ("joint_names", "observation_layout", "action", "control_hz")


def is_robot_manifest(manifest: dict[str, Any]) -> bool:
    """Whether a manifest describes a robot's episodes (an arm, or one of our arm families)."""
    return "arm" in manifest or manifest.get("family") in ARM_FAMILIES


def missing_keys(manifest: dict[str, Any]) -> list[str]:
    """The keys a reader relies on that ``manifest`` lacks (robot keys only for a robot)."""
    keys = MANIFEST_KEYS + (ROBOT_KEYS if is_robot_manifest(manifest) else ())
    return [k for k in keys if k not in manifest]


class StoreError(ValueError):
    """A store, manifest or episode file is missing, corrupt or inconsistent (names the file)."""


class EpisodeExistsError(StoreError):
    """The episode file to write is already there (another writer took the index)."""


@dataclass(frozen=True)
class Episode:
    """One episode: arrays keyed by name (see the module docstring) and its metadata."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def task_index(self) -> int:
        return int(self.meta["task_index"])

    def __len__(self) -> int:
        return int(self.arrays["obs"].shape[0])


@dataclass(frozen=True)
class TaskArrays:
    """All transitions of one task, episodes concatenated. N transitions.

    obs/next_obs (N, obs_dim) f32, action (N, act_dim) f32, reward (N,) f32 or None for
    reward-free data, terminated/truncated (N,) bool.
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray | None
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __len__(self) -> int:
        return int(self.obs.shape[0])


# ---------------------------------------------------------------------------------------
# Atomic writes


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_beside(path: Path, payload: bytes) -> Path:
    """``payload`` on disk (synced) in a hidden file beside ``path``, named for this process."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that a crash leaves the old file or the new one, whole."""
    os.replace(_write_beside(path, payload), path)
    _fsync_dir(path.parent)


def publish_new_bytes(path: Path, payload: bytes) -> bool:
    """Write ``payload`` to ``path`` whole, only if no file is there: False (nothing written)
    when one is, even if another process publishes it at the same moment (the complete file
    is hard-linked into place, which fails if the name exists)."""
    tmp = _write_beside(path, payload)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    _fsync_dir(path.parent)
    return True


def _tensor_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _fmt(bound: np.ndarray) -> str:
    return f"{float(bound):g}" if bound.ndim == 0 else "[" + ", ".join(f"{float(b):g}" for b in bound) + "]"


def episode_filename(task_index: int, episode_index: int) -> str:
    return f"task{task_index:04d}_ep{episode_index:06d}.safetensors"


# ---------------------------------------------------------------------------------------
# Store


class EpisodeStore:
    """A folder of episodes plus its manifest. Create with :meth:`create`, open with :meth:`open`."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, manifest: dict[str, Any]) -> EpisodeStore:
        """Create a store, or open an existing one whose schema matches ``manifest``.

        Re-opening lets a recorder append after a restart; a schema mismatch (other joints,
        observation layout, reward labelling) refuses, naming the differing key.
        """
        path = Path(path)
        manifest = {"format": FORMAT, "version": VERSION, **manifest}
        missing = missing_keys(manifest)
        if missing:
            raise StoreError(f"manifest is missing {', '.join(missing)}")
        (path / EPISODES).mkdir(parents=True, exist_ok=True)
        if (path / MANIFEST).exists():
            store = cls.open(path)
            for key in ("family", "joint_names", "observation_layout", "obs_dim", "act_dim",
                        "action", "reward_labelled"):
                if store.manifest.get(key) != json.loads(json.dumps(manifest.get(key))):
                    raise StoreError(f"{path / MANIFEST}: existing store has a different '{key}' "
                                     f"({store.manifest.get(key)!r} != {manifest.get(key)!r})")
            return store
        atomic_write_bytes(path / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
        return cls(path, json.loads(json.dumps(manifest)))

    @classmethod
    def open(cls, path: str | Path) -> EpisodeStore:
        path = Path(path)
        mpath = path / MANIFEST
        try:
            manifest = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise StoreError(f"{path}: not an episode store (no {MANIFEST})") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{mpath}: unreadable manifest ({exc})") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise StoreError(f"{mpath}: format {manifest.get('format')} v{manifest.get('version')}, "
                             f"expected {FORMAT} v{VERSION}")
        missing = missing_keys(manifest)
        if missing:
            raise StoreError(f"{mpath}: manifest is missing {', '.join(missing)}")
        return cls(path, manifest)

    # -- writing ---------------------------------------------------------------------------
    def next_episode_index(self, task_index: int) -> int:
        used = [e for t, e, _ in self._entries() if t == task_index]
        return max(used) + 1 if used else 0

    def write_episode(self, task_index: int, episode_index: int, arrays: dict[str, np.ndarray],
                      meta: dict[str, Any] | None = None) -> Path:
        """Validate and atomically write one finished episode; returns its path."""
        arrays = self._validate(arrays, f"episode task {task_index} #{episode_index}")
        info = dict(meta or {})
        info.update(task_index=int(task_index), episode_index=int(episode_index),
                    length=int(arrays["obs"].shape[0]), sha256=_tensor_digest(arrays))
        payload = st_save(arrays, metadata={"episode": json.dumps(info, sort_keys=True)})
        target = self.path / EPISODES / episode_filename(task_index, episode_index)
        if not publish_new_bytes(target, payload):
            raise EpisodeExistsError(f"{target}: episode already exists")
        return target

    def episode_key(self, task_index: int, arrays: dict[str, np.ndarray]) -> tuple[int, str]:
        """An episode's identity: its task and the SHA-256 of its arrays (as written: validated
        and converted), the ``sha256`` its file's metadata will hold."""
        return int(task_index), _tensor_digest(self._validate(arrays, f"episode of task {task_index}"))

    def episode_keys(self) -> set[tuple[int, str]]:
        """The identities (:meth:`episode_key`) of the episodes the store holds (each verified)."""
        return {(ep.task_index, str(ep.meta["sha256"])) for ep in self.iter_episodes()}

    def append_episode(self, task_index: int, arrays: dict[str, np.ndarray],
                       meta: dict[str, Any] | None = None) -> Path:
        """Write one finished episode under the task's next free episode index; several
        processes may append to one store at once (a fleet of recorders): an index another
        writer took first is skipped, never overwritten."""
        for _ in range(1000):
            try:
                return self.write_episode(task_index, self.next_episode_index(task_index), arrays, meta)
            except EpisodeExistsError:
                continue
        raise StoreError(f"{self.path}: no free episode index for task {task_index} after 1000 tries")

    def _validate(self, arrays: dict[str, np.ndarray], what: str, exact_dtypes: bool = False) -> dict[str, np.ndarray]:
        """The arrays a store holds, converted to their dtypes (``exact_dtypes``: a file read
        back must already have them, as :meth:`write_episode` writes them); StoreError naming
        ``what`` and the array otherwise."""
        robot = is_robot_manifest(self.manifest)
        names = REQUIRED + (ROBOT_ARRAYS if robot or "timestamp" in arrays else ()) + \
            (LABELLED if self.manifest["reward_labelled"] else ())
        missing = [n for n in names if n not in arrays]
        if missing:
            raise StoreError(f"{what}: missing arrays {', '.join(missing)}")
        if not self.manifest["reward_labelled"] and "reward" in arrays:
            raise StoreError(f"{what}: a reward-free store must not hold rewards")
        if np.ndim(arrays["obs"]) == 0:
            raise StoreError(f"{what}: 'obs' is a scalar, expected one row per step")
        t = int(np.shape(arrays["obs"])[0])
        if t == 0:
            raise StoreError(f"{what}: empty episode")
        shapes = {"obs": (t, self.manifest["obs_dim"]), "next_obs": (t, self.manifest["obs_dim"]),
                  "action": (t, self.manifest["act_dim"])}
        dtypes = {"obs": np.float32, "next_obs": np.float32, "action": np.float32, "reward": np.float32,
                  "terminated": np.bool_, "truncated": np.bool_, "success": np.bool_, "timestamp": np.float64}
        out: dict[str, np.ndarray] = {}
        for name in names:
            if exact_dtypes and np.asarray(arrays[name]).dtype != dtypes[name]:
                raise StoreError(f"{what}: '{name}' has dtype {np.asarray(arrays[name]).dtype}, "
                                 f"expected {np.dtype(dtypes[name])}")
            arr: np.ndarray = np.ascontiguousarray(np.asarray(arrays[name]).astype(dtypes[name], copy=False))
            want = shapes.get(name, (t,))
            if arr.shape != want:
                raise StoreError(f"{what}: '{name}' has shape {arr.shape}, expected {want}")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise StoreError(f"{what}: '{name}' holds non-finite values")
            out[name] = arr
        bounds = (self.manifest.get("action") or {}).get("bounds", (-1.0, 1.0))
        low, high = (np.asarray(b, float) for b in bounds)  # a number each, or one per dimension
        act = out["action"]
        if np.any(act < low - 1e-6) or np.any(act > high + 1e-6):
            raise StoreError(f"{what}: 'action' has values in [{act.min():.3g}, {act.max():.3g}], outside the "
                             f"manifest's bounds [{_fmt(low)}, {_fmt(high)}]")
        for name in ("obs", "next_obs"):
            worst = float(np.abs(out[name]).max())
            if worst > OBS_ABS_MAX:
                state = "a state of an arm" if robot else "a physical state"
                raise StoreError(f"{what}: '{name}' has a value of magnitude {worst:.3g} (> {OBS_ABS_MAX:g}: "
                                 f"not {state}; units?)")
        return out

    # -- reading ---------------------------------------------------------------------------
    def _entries(self) -> list[tuple[int, int, Path]]:
        folder = self.path / EPISODES
        entries = []
        for p in folder.iterdir() if folder.is_dir() else []:
            m = _NAME.match(p.name)
            if m:
                entries.append((int(m.group(1)), int(m.group(2)), p))
        return sorted(entries)

    def episode_paths(self) -> list[Path]:
        """Finished episode files, sorted by task then episode index."""
        return [p for _, _, p in self._entries()]

    def stale_temp_files(self) -> list[Path]:
        """Temporary files a killed writer left behind (never read as data)."""
        folder = self.path / EPISODES
        return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp")) if folder.is_dir() else []

    def read_episode(self, path: Path) -> Episode:
        """Load and verify one episode file (no pickle; checksum and shapes checked)."""
        try:
            raw = Path(path).read_bytes()
            arrays = st_load(raw)
            # safetensors layout: u64 little-endian header length, then the JSON header.
            header_len = int.from_bytes(raw[:8], "little")
            meta = json.loads(json.loads(raw[8:8 + header_len])["__metadata__"]["episode"])
        except (OSError, SafetensorError, KeyError, TypeError, json.JSONDecodeError, ValueError) as exc:
            raise StoreError(f"{path}: corrupt episode file ({exc})") from None
        if not isinstance(meta, dict):
            raise StoreError(f"{path}: corrupt episode file (its metadata is a {type(meta).__name__}, not a mapping)")
        if _tensor_digest(arrays) != meta.get("sha256"):
            raise StoreError(f"{path}: checksum mismatch, the file is corrupt")
        named = _NAME.match(Path(path).name)
        if named and (int(named.group(1)), int(named.group(2))) != (meta.get("task_index"), meta.get("episode_index")):
            raise StoreError(f"{path}: the file's name and its metadata disagree (task {meta.get('task_index')} "
                             f"episode {meta.get('episode_index')})")
        extra = sorted(set(arrays) - set(REQUIRED + ROBOT_ARRAYS + LABELLED))
        if extra:
            raise StoreError(f"{path}: unknown arrays {', '.join(extra)}")
        return Episode(self._validate(arrays, str(path), exact_dtypes=True), meta)

    def iter_episodes(self) -> Iterator[Episode]:
        for _path, episode in self._iter_with_paths():
            yield episode

    def _iter_with_paths(self) -> Iterator[tuple[Path, Episode]]:
        for path in self.episode_paths():
            yield path, self.read_episode(path)

    def task_arrays(self) -> dict[int, TaskArrays]:
        """Per-task transition arrays for training, keyed by task index."""
        grouped: dict[int, list[Episode]] = {}
        # An offline dataset's manifest lists its tasks; recordings are checked against their
        # dataset by the trainer (smrl_train.smac.sources.load_recordings), not here.
        known = ({int(t["index"]) for split in self.manifest["tasks"].values() for t in split}
                 if self.manifest["reward_labelled"] else set())
        for path, ep in self._iter_with_paths():
            if known and ep.task_index not in known:
                raise StoreError(f"{path}: the episode names task {ep.task_index}, which the manifest does not "
                                 f"list (tasks {min(known)}..{max(known)})")
            grouped.setdefault(ep.task_index, []).append(ep)
        labelled = bool(self.manifest["reward_labelled"])
        out = {}
        for task, eps in sorted(grouped.items()):
            cat = {k: np.concatenate([e.arrays[k] for e in eps]) for k in eps[0].arrays}
            out[task] = TaskArrays(cat["obs"], cat["action"], cat["reward"] if labelled else None,
                                   cat["next_obs"], cat["terminated"], cat["truncated"])
        return out

    def tasks(self, split: str = "train") -> list[Any]:
        """The store's tasks of ``split`` ("train" or "test") as :class:`smrl_train.sim.tasks.Task`."""
        from smrl_train.sim.tasks import Task

        return [Task.from_dict(t) for t in self.manifest["tasks"].get(split, [])]


def load_task_arrays(path: str | Path) -> dict[int, TaskArrays]:
    """Per-task arrays of the store at ``path`` (see :class:`TaskArrays`)."""
    return EpisodeStore.open(path).task_arrays()
