"""Episode stores as Minari datasets, and Minari datasets as reward-labelled offline datasets.

Uses the ``minari`` package (its HDF5 storage: ``pip install 'minari[hdf5]==0.5.4'``, the smrl
``minari`` extra); datasets are written with the library, never by hand.

Export (``smrl data export-minari STORE OUT --id smrl/reach-v0``): every episode of an episode
store (a reward-labelled offline dataset or a reward-free recording) becomes one Minari episode
under ``OUT/<id>/data`` (``OUT`` is a Minari datasets root: ``MINARI_DATASETS_PATH=OUT`` then
``minari.load_dataset(id)`` finds it; the namespace is created there too):

* spaces: observation ``Box(-inf, inf, (obs_dim,), float32)``, action ``Box(-1, 1, (act_dim,),
  float32)`` (the policy's normalised joint-position deltas, ``action.max_step`` rad per unit);
* per episode: ``observations`` (T+1, obs_dim) = the store's ``obs`` then the last ``next_obs``;
  ``actions``, ``terminations``, ``truncations`` as stored (our episodes end at the time limit:
  truncated at the last step); ``rewards`` (T,) float32, NaN in a reward-free recording (so a
  tool that trains on rewards stops instead of learning from made-up zeros; the dataset's
  ``reward_labelled`` says which); ``infos`` with T+1 entries as Minari's DataCollector writes
  them (entry 0 belongs to the first observation, entry t+1 to step t): ``timestamp`` (s; entry 0
  is one control period before the first step), ``success`` (reward-labelled only; entry 0
  False) and, only when an episode's ``next_obs[t]`` differs from ``obs[t+1]``,
  ``next_observations`` (entry 0 repeats the first observation);
* per-episode metadata (``dataset.storage.get_episode_metadata``): ``task_index``,
  ``task_goal`` (when the manifest lists the task), ``episode_index``, ``kind`` and/or
  ``behaviour``, ``smrl_episode`` (the episode file's metadata, JSON);
* dataset metadata: ``reward_labelled``, ``smrl_format`` (:data:`SMRL_FORMAT`),
  ``smrl_manifest`` (the store's manifest as JSON: family, arm, joint names, observation
  layout, action scale, tasks, config), author, algorithm name, description.

Import (``smrl data import-minari DATASET --config CONFIG --out STORE``): a dataset written by
the export, or by others, becomes a new reward-labelled store that ``smrl train offline
--data`` takes. The observation and action spaces must be Boxes of the config's ``obs_dim``
and ``act_dim``; every episode needs the metadata ``task_index`` (and, in a dataset not written
by smrl, ``task_goal`` of the family's goal size): meta-RL learns from which task each episode
comes. A dataset written by smrl must also match the config's family, arm (URDF hash), joint
names and order, observation layout, action scale and control rate, and keeps its tasks and
episode indices; another's gets the tasks its episodes name as training tasks, the
config's held-out test split, and kind ``recorded`` for every episode (its own ``kind`` kept as
``minari_kind``). Rewards must be finite (a reward-free recording cannot be an
offline dataset), actions inside [-1, 1]. Without ``success`` in the infos, success is
recorded as False (counted in the summary).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from smrl_train.data.store import EpisodeStore, StoreError

SMRL_FORMAT = "smrl-minari-1"
DATASETS_PATH_VAR = "MINARI_DATASETS_PATH"
# Episodes handed to minari per write (bounds the memory of an export).
CHUNK = 64
PIN = "minari[hdf5]==0.5.4"


class MinariError(StoreError):
    """A Minari dataset cannot be written or imported (one line naming the dataset and the problem)."""


def _minari() -> Any:
    try:
        import h5py  # noqa: F401 - minari's HDF5 storage, imported lazily by minari itself
        import minari
    except ImportError:
        raise MinariError(f"Minari datasets need the minari package: pip install '{PIN}' "
                          "(or the smrl 'minari' extra)") from None
    return minari


@contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    """Point minari's datasets root (:data:`DATASETS_PATH_VAR`) at ``root`` while inside.
    Not thread-safe: minari reads the root from the environment."""
    old = os.environ.get(DATASETS_PATH_VAR)
    os.environ[DATASETS_PATH_VAR] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(DATASETS_PATH_VAR, None)
        else:
            os.environ[DATASETS_PATH_VAR] = old


def _check_id(dataset_id: str) -> None:
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise MinariError(f"dataset id {dataset_id!r}: expected (namespace/)name-vN, e.g. smrl/reach-v0") from None


# ---------------------------------------------------------------------------------------
# Export


@dataclass
class ExportResult:
    """What an export wrote: the dataset's folder (``OUT/<id>``), episodes and steps."""

    path: Path
    episodes: int
    steps: int


def _episode_buffer(minari: Any, ep: Any, labelled: bool, period: float) -> Any:
    a = ep.arrays
    t = len(ep)
    observations = np.concatenate([a["obs"], a["next_obs"][-1:]]).astype(np.float32)
    stamp = np.concatenate([[a["timestamp"][0] - period], a["timestamp"]]).astype(np.float64)
    infos: dict[str, np.ndarray] = {"timestamp": stamp}
    if labelled:
        infos["success"] = np.concatenate([[False], a["success"]]).astype(bool)
    if not np.array_equal(a["next_obs"][:-1], a["obs"][1:]):
        infos["next_observations"] = np.concatenate([a["obs"][:1], a["next_obs"]]).astype(np.float32)
    rewards = a["reward"].astype(np.float32) if labelled else np.full(t, np.nan, dtype=np.float32)
    return minari.data_collector.EpisodeBuffer(
        observations=observations, actions=a["action"].astype(np.float32), rewards=rewards,
        terminations=a["terminated"].astype(bool), truncations=a["truncated"].astype(bool), infos=infos)


def _episode_metadata(ep: Any, goals: dict[int, list[float]]) -> dict[str, Any]:
    meta: dict[str, Any] = {"task_index": ep.task_index, "episode_index": int(ep.meta["episode_index"]),
                            "smrl_episode": json.dumps(ep.meta, sort_keys=True)}
    if ep.task_index in goals:
        meta["task_goal"] = np.asarray(goals[ep.task_index], dtype=np.float64)
    for key in ("kind", "behaviour"):
        if isinstance(ep.meta.get(key), str):
            meta[key] = ep.meta[key]
    return meta


def export_minari(store_path: str | Path, out: str | Path, dataset_id: str, *, progress: bool = False,
                  author: str = "smrl") -> ExportResult:
    """Write every episode of the store at ``store_path`` as the Minari dataset ``dataset_id``
    under the datasets root ``out`` (``out/<dataset_id>/data``); see the module docstring.

    Raises:
        MinariError: minari missing, a malformed id, the dataset exists already, an empty store;
            StoreError: an unreadable store. A failed export removes what it wrote.
    """
    minari = _minari()
    import gymnasium as gym

    _check_id(dataset_id)
    store = EpisodeStore.open(store_path)
    m = store.manifest
    paths = store.episode_paths()
    if not paths:
        raise MinariError(f"{store_path}: no episodes to export")
    root = Path(out).absolute()  # minari joins a relative root with its own paths twice
    target = root / dataset_id
    if target.exists():
        raise MinariError(f"{target}: exists already (Minari never overwrites a dataset; pick another --id "
                          "version or folder)")
    labelled = bool(m["reward_labelled"])
    goals = {int(t["index"]): list(t["goal"]) for split in m["tasks"].values() for t in split}
    obs_space = gym.spaces.Box(-np.inf, np.inf, (int(m["obs_dim"]),), np.float32)
    low, high = (float(b) for b in m["action"].get("bounds", (-1.0, 1.0)))
    act_space = gym.spaces.Box(low, high, (int(m["act_dim"]),), np.float32)
    period = 1.0 / float(m["control_hz"])
    generator = m.get("generator") or {}
    description = (f"smrl {m['family']} episodes on the arm {(m.get('arm') or {}).get('name')}: "
                   + ("reward-labelled offline dataset" if labelled else
                      "reward-free recording (rewards are NaN)")
                   + f"; {m['act_dim']} joint-position deltas in [-1, 1] (x action.max_step rad) at "
                   f"{m['control_hz']} Hz; per-episode task_index/task_goal; the store's manifest in smrl_manifest")
    root.mkdir(parents=True, exist_ok=True)
    steps = 0
    try:
        with _datasets_root(root), warnings.catch_warnings():
            # No gymnasium env spec (our env needs its config, which is in smrl_manifest) and no
            # e-mail or permalink: minari warns about each; the description says where things are.
            warnings.filterwarnings("ignore", message=r".*(is set to None|env_spec is None|no environment spec)",
                                    category=UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id, [], observation_space=obs_space, action_space=act_space,
                algorithm_name=str(generator.get("name", "smrl")), author=author, description=description,
                data_format="hdf5")
            storage = dataset.storage
            storage.update_metadata({"smrl_format": SMRL_FORMAT, "reward_labelled": labelled,
                                     "smrl_manifest": json.dumps(m, sort_keys=True)})
            metas: list[dict[str, Any]] = []
            chunk: list[Any] = []
            for path in tqdm(paths, desc=f"export {dataset_id}", unit="ep", disable=not progress):
                ep = store.read_episode(path)
                chunk.append(_episode_buffer(minari, ep, labelled, period))
                metas.append(_episode_metadata(ep, goals))
                steps += len(ep)
                if len(chunk) >= CHUNK:
                    storage.update_episodes(chunk)
                    chunk = []
            if chunk:
                storage.update_episodes(chunk)
            storage.update_episode_metadata(metas, range(len(metas)))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return ExportResult(target, len(paths), steps)


# ---------------------------------------------------------------------------------------
# Import


@dataclass
class ImportResult:
    """What an import wrote."""

    dataset_id: str
    episodes: int = 0
    steps: int = 0
    tasks: int = 0
    smrl: bool = False  # written by smrl (its manifest carried over)
    success_unknown: int = 0  # episodes without a success info (recorded as False)

    def summary(self) -> str:
        note = f"; {self.success_unknown} episodes carry no success info (recorded as False)" \
            if self.success_unknown else ""
        return (f"{self.episodes} episodes ({self.steps} steps, {self.tasks} tasks) of Minari dataset "
                f"{self.dataset_id} ({'written by smrl' if self.smrl else 'not written by smrl'}){note}")


def _open_dataset(minari: Any, source: str | Path) -> Any:
    """The MinariDataset at ``source``: a dataset folder (holding ``data/``), its ``data``
    folder, or an id in the local datasets root (``MINARI_DATASETS_PATH``, else ~/.minari/datasets;
    never downloaded)."""
    path = Path(source)
    if path.exists():
        data = path / "data" if (path / "data" / "metadata.json").exists() else path
        if not (data / "metadata.json").exists():
            raise MinariError(f"{source}: not a Minari dataset (no data/metadata.json)")
    else:
        try:
            _check_id(str(source))
        except MinariError:
            raise MinariError(f"{source}: no such file, folder or Minari dataset id") from None
        root = Path(os.environ.get(DATASETS_PATH_VAR) or Path.home() / ".minari" / "datasets")
        data = root / str(source) / "data"
        if not (data / "metadata.json").exists():
            raise MinariError(f"{source}: no such folder, nor a local Minari dataset of that id in {root} "
                              f"({DATASETS_PATH_VAR}; downloads are not attempted)")
    try:
        return minari.MinariDataset(data.absolute())
    except ImportError as exc:
        raise MinariError(f"{source}: minari cannot read its storage format ({exc})") from None
    except (ValueError, KeyError, OSError, AssertionError, TypeError) as exc:
        raise MinariError(f"{source}: unreadable Minari dataset ({type(exc).__name__}: {exc})") from None


def _box_shape(space: Any) -> tuple[int, ...] | None:
    import gymnasium as gym

    return tuple(space.shape) if isinstance(space, gym.spaces.Box) else None


def import_minari(source: str | Path, cfg: Any, out: str | Path, *, progress: bool = False) -> ImportResult:
    """Import the Minari dataset ``source`` (folder or local id) as a new reward-labelled
    episode store ``out`` for the family and arm of ``cfg``; see the module docstring.

    Raises:
        MinariError: no such dataset, unreadable, spaces of other shapes, another family or arm
            (smrl datasets: every differing manifest key), missing per-episode task metadata,
            non-finite rewards, ``out`` exists; StoreError: an episode fails the store's checks
            (named by its Minari episode id).
    """
    import smrl_train
    from smrl_train.data.generate import config_mismatches, store_manifest
    from smrl_train.data.recordings import UNNAMED_KIND
    from smrl_train.sim.envs import ArmTaskEnv
    from smrl_train.sim.tasks import Task, split_tasks

    minari = _minari()
    dataset = _open_dataset(minari, source)
    out = Path(out)
    if out.exists():
        raise MinariError(f"{out}: exists already (import writes a new store)")
    env = ArmTaskEnv(cfg)
    obs_dim, act_dim = int(env.observation_space.shape[0]), int(env.action_space.shape[0])
    layout = " + ".join(f"{n}[{k}]" for n, k in env.observation_layout)
    storage = dataset.storage
    meta = storage.metadata
    dataset_id = str(meta.get("dataset_id", source))
    ours = meta.get("smrl_format") == SMRL_FORMAT
    theirs: dict[str, Any] = {}
    if ours:
        try:
            theirs = json.loads(meta["smrl_manifest"])
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise MinariError(f"{source}: unreadable smrl_manifest metadata ({exc})") from None
        if theirs.get("family") != cfg.env.family:
            raise MinariError(f"{source}: holds '{theirs.get('family')}' episodes, the config is a "
                              f"'{cfg.env.family}' config")
        problems = config_mismatches(cfg, theirs)
        if problems:
            raise MinariError(f"{source}: not data of the config's arm: " + "; ".join(problems))
        if not theirs.get("reward_labelled"):
            raise MinariError(f"{source}: a reward-free recording (rewards NaN); an offline dataset needs rewards")
    for what, space, want in (("observation", dataset.observation_space, (obs_dim,)),
                              ("action", dataset.action_space, (act_dim,))):
        if _box_shape(space) != want:
            raise MinariError(f"{source}: its {what} space is {space}, the config's {cfg.env.family} on "
                              f"{env.arm.name} needs a Box of shape {want}"
                              + (f" ({layout})" if what == "observation" else " (joint-position deltas in [-1, 1])"))
    n = int(dataset.total_episodes)
    if n == 0:
        raise MinariError(f"{source}: the dataset holds no episodes")
    metas = list(storage.get_episode_metadata(range(n)))
    missing = [i for i, e in enumerate(metas) if "task_index" not in e or (not ours and "task_goal" not in e)]
    if missing:
        raise MinariError(f"{source}: episode {missing[0]} ({len(missing)} of {n}) lacks per-episode task metadata "
                          f"({'task_index' if ours else 'task_index and task_goal'}): meta-RL needs the task of every "
                          "episode (see docs/guide.md, 'Your data: Minari')")
    result = ImportResult(dataset_id=dataset_id, smrl=ours)
    generator: dict[str, Any] = {"name": "smrl data import-minari", "smrl_version": smrl_train.__version__,
                                 "minari_dataset": dataset_id, "source": str(source)}
    if ours:
        manifest = {k: v for k, v in theirs.items() if k not in ("format", "version")}
        manifest["generator"] = {**generator, "from": theirs.get("generator")}
    else:
        goal_dim = len(env.sample_tasks(1, 0)[0].goal)
        goals: dict[int, tuple[float, ...]] = {}
        for i, e in enumerate(metas):
            index, goal = int(e["task_index"]), tuple(float(g) for g in np.ravel(e["task_goal"]))
            if len(goal) != goal_dim:
                raise MinariError(f"{source}: episode {i}'s task_goal has {len(goal)} values, a {cfg.env.family} "
                                  f"goal has {goal_dim}")
            if goals.setdefault(index, goal) != goal:
                raise MinariError(f"{source}: task {index} has two goals ({goals[index]} and {goal}, episode {i})")
        train = [Task(cfg.env.family, i, g) for i, g in sorted(goals.items())]
        _, test = split_tasks(env, 0, cfg.tasks.n_test, cfg.tasks.seed)  # the config's held-out split
        manifest = store_manifest(env, cfg, reward_labelled=True, tasks={"train": train, "test": test},
                                  generator=generator)
    store = EpisodeStore.create(out, manifest)
    period = 1.0 / float(cfg.env.control_hz)
    try:
        for i, ep in enumerate(tqdm(dataset.iterate_episodes(), total=n, desc=f"import {dataset_id}", unit="ep",
                                    disable=not progress)):
            arrays, success_known = _store_arrays(ep, source, i, period)
            result.success_unknown += 0 if success_known else 1
            e = metas[i]
            task = int(e["task_index"])
            if ours:
                info = {k: v for k, v in json.loads(str(e["smrl_episode"])).items()
                        if k not in ("task_index", "episode_index", "length", "sha256")}
                index = int(e["episode_index"])
            else:
                # Their policy is unknown to the trainer: kind "recorded" (RL buffer only), whatever
                # their own label says (kept as minari_kind).
                info = {"kind": UNNAMED_KIND}
                info.update({f"minari_{k}" if k == "kind" else k: e[k] for k in ("kind", "behaviour")
                             if isinstance(e.get(k), str)})
                index = store.next_episode_index(task)
            info.update(source="smrl data import-minari", minari_dataset=dataset_id, minari_episode=int(ep.id))
            try:
                store.write_episode(task, index, arrays, info)
            except StoreError as exc:
                raise MinariError(f"{source}: Minari episode {ep.id}: {exc}") from None
            result.episodes += 1
            result.steps += len(arrays["action"])
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    result.tasks = len({int(e["task_index"]) for e in metas})
    return result


def _store_arrays(ep: Any, source: str | Path, i: int, period: float) -> tuple[dict[str, np.ndarray], bool]:
    """The store's arrays of Minari episode ``ep`` and whether it carried success infos."""
    obs = np.asarray(ep.observations)
    action = np.asarray(ep.actions)
    t = int(action.shape[0])
    if obs.ndim != 2 or obs.shape[0] != t + 1:
        raise MinariError(f"{source}: Minari episode {ep.id} has observations of shape {obs.shape} for {t} actions "
                          f"(expected ({t + 1}, obs_dim))")
    reward = np.asarray(ep.rewards, dtype=np.float64)
    if not np.all(np.isfinite(reward)):
        raise MinariError(f"{source}: Minari episode {ep.id} has non-finite rewards (a reward-free recording?); "
                          "an offline dataset needs rewards")
    infos = ep.infos or {}

    def info(key: str) -> np.ndarray | None:
        v = infos.get(key)
        if v is None:
            return None
        v = np.asarray(v)
        return v[1:] if v.shape[0] == t + 1 else v if v.shape[0] == t else None

    nxt = info("next_observations")
    success = info("success")
    stamp = info("timestamp")
    arrays = {"obs": obs[:-1], "action": action, "next_obs": obs[1:] if nxt is None else nxt,
              "reward": reward.astype(np.float32), "terminated": np.asarray(ep.terminations, dtype=bool),
              "truncated": np.asarray(ep.truncations, dtype=bool),
              "success": np.zeros(t, dtype=bool) if success is None else success.astype(bool),
              "timestamp": (np.arange(1, t + 1) * period) if stamp is None else stamp.astype(np.float64)}
    return arrays, success is not None
