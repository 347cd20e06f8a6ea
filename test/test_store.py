"""The episode store: deterministic datasets, atomic episodes, corruption detected, schema kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from smrl_train.data.generate import generate_dataset
from smrl_train.data.store import EpisodeStore, StoreError, load_task_arrays

from conftest import REPO, small_config, write_config


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_dataset(tmp_path: Path) -> None:
    cfg = small_config("push")
    a = generate_dataset(cfg, tmp_path / "a", progress=False)
    b = generate_dataset(cfg, tmp_path / "b", progress=False)
    fa, fb = _files(a.path), _files(b.path)
    assert len(fa) == 1 + 3 * sum(b.episodes for b in cfg.data.behaviours)  # manifest + episodes
    assert fa == fb
    other = generate_dataset(cfg.__class__(**{**cfg.__dict__, "data": cfg.data.__class__(cfg.data.behaviours, seed=1)}),
                             tmp_path / "c", progress=False)
    assert _files(other.path)["episodes/task0000_ep000000.safetensors"] != fa["episodes/task0000_ep000000.safetensors"]


def test_corrected_behaviour_follows_a_wrong_goal_then_the_true_one(tmp_path: Path) -> None:
    import dataclasses

    from smrl_train.config import BehaviourConfig
    from smrl_train.sim.envs import ArmTaskEnv
    from smrl_train.sim.experts import JacobianExpert

    cfg = small_config("reach", n_train=1, episode_length=40)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, behaviours=(
        BehaviourConfig("corrected", 0.0, 1), BehaviourConfig("wrong_goal", 0.0, 1))))
    store = generate_dataset(cfg, tmp_path / "d", progress=False)
    corrected, wrong = (store.read_episode(p) for p in store.episode_paths())
    true_goal = np.asarray(store.manifest["tasks"]["train"][0]["goal"])
    meta, arrays = corrected.meta, corrected.arrays
    assert meta["behaviour"] == "corrected" and meta["true_goal_from_step"] == 20
    followed = np.asarray(meta["goal_followed"])
    assert np.linalg.norm(followed - true_goal) > 0.05  # the first half aims elsewhere
    # Noise-free, so every action is the expert's: toward the wrong goal, then the true one.
    env = ArmTaskEnv(cfg)
    expert = JacobianExpert(env.arm, env.max_step, env.sim.home, "reach")
    for t in (0, 19, 20, 39):
        aim = followed if t < 20 else true_goal
        np.testing.assert_allclose(arrays["action"][t], np.clip(expert.act(arrays["obs"][t], aim), -1, 1), atol=1e-6)
    ee = slice(10, 13)
    assert (np.linalg.norm(arrays["next_obs"][-1, ee] - true_goal)
            < np.linalg.norm(wrong.arrays["next_obs"][-1, ee] - true_goal))


def test_loader_gives_per_task_arrays_consistent_with_the_manifest(tmp_path: Path) -> None:
    cfg = small_config("reach")
    store = generate_dataset(cfg, tmp_path / "d", progress=False)
    m = store.manifest
    assert m["reward_labelled"] and m["joint_names"] == list(store.manifest["joint_names"])
    assert [t["index"] for t in m["tasks"]["train"]] == [0, 1, 2]
    arrays = load_task_arrays(store.path)
    assert sorted(arrays) == [0, 1, 2]
    ta = arrays[0]
    eps = sum(b.episodes for b in cfg.data.behaviours)
    n = eps * cfg.env.episode_length
    assert ta.obs.shape == (n, m["obs_dim"]) and ta.action.shape == (n, m["act_dim"])
    assert ta.reward is not None and ta.reward.shape == (n,) and ta.reward.dtype == np.float32
    assert ta.truncated.sum() == eps and not ta.terminated.any()
    # next_obs of step t is obs of step t+1 within an episode
    np.testing.assert_array_equal(ta.next_obs[: cfg.env.episode_length - 1], ta.obs[1: cfg.env.episode_length])
    assert np.all(ta.action <= 1) and np.all(ta.action >= -1)


def test_corrupt_episode_is_named(tmp_path: Path) -> None:
    store = generate_dataset(small_config("reach", n_train=1), tmp_path / "d", progress=False)
    path = store.episode_paths()[2]
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=f"{path.name}: checksum mismatch"):
        load_task_arrays(store.path)
    path.write_bytes(bytes(raw[:100]))
    with pytest.raises(StoreError, match="corrupt episode file"):
        store.read_episode(path)


def _forge(store: EpisodeStore, task: int, episode: int, arrays: dict[str, np.ndarray], **meta: int) -> Path:
    """An episode file with a valid checksum but whatever contents: what a buggy writer elsewhere
    (or a hand edit) leaves, bypassing write_episode's checks."""
    from safetensors.numpy import save

    from smrl_train.data.store import _tensor_digest, episode_filename

    info = {"task_index": task, "episode_index": episode, "length": len(arrays["obs"]),
            "sha256": _tensor_digest(arrays), **meta}
    path = store.path / "episodes" / episode_filename(task, episode)
    path.write_bytes(save(arrays, metadata={"episode": json.dumps(info, sort_keys=True)}))
    return path


@pytest.mark.parametrize("change, needle", [
    (lambda a: dict(a, action=a["action"] * 50), "'action' has values in [-50"),
    (lambda a: dict(a, obs=(a["obs"] + 1e6).astype(np.float32)), "'obs' has a value of magnitude 1e+06"),
    (lambda a: a, "which the manifest does not list"),
])
def test_contents_are_checked_not_only_checksums(tmp_path: Path, change, needle: str) -> None:
    """Issue 15, defect 8: a valid checksum over bad contents is refused on load, naming the file."""
    store = generate_dataset(small_config("reach", n_train=1, n_test=1), tmp_path / "d", progress=False)
    arrays = {k: np.array(v) for k, v in store.read_episode(store.episode_paths()[0]).arrays.items()}
    arrays["action"] = np.clip(arrays["action"] * 2, -1, 1).astype(np.float32)  # some actions at the bounds
    task = 7 if needle.startswith("which") else 0
    _forge(store, task, 99, change(arrays))
    with pytest.raises(StoreError) as err:
        store.task_arrays()
    assert needle in str(err.value)


def test_file_name_and_metadata_must_agree(tmp_path: Path) -> None:
    store = generate_dataset(small_config("reach", n_train=1, n_test=1), tmp_path / "d", progress=False)
    arrays = store.read_episode(store.episode_paths()[0]).arrays
    path = _forge(store, 0, 50, arrays, episode_index=3)
    with pytest.raises(StoreError, match="name and its metadata disagree"):
        store.read_episode(path)


def test_reward_free_store_and_schema_checks(tmp_path: Path) -> None:
    labelled = generate_dataset(small_config("reach", n_train=1), tmp_path / "l", progress=False)
    manifest = {k: v for k, v in labelled.manifest.items() if k not in ("format", "version")}
    free = EpisodeStore.create(tmp_path / "free", {**manifest, "reward_labelled": False})
    ep = labelled.read_episode(labelled.episode_paths()[0])
    with pytest.raises(StoreError, match="must not hold rewards"):
        free.write_episode(0, 0, ep.arrays)
    arrays = {k: v for k, v in ep.arrays.items() if k not in ("reward", "success")}
    free.write_episode(0, free.next_episode_index(0), arrays)
    assert free.next_episode_index(0) == 1
    with pytest.raises(StoreError, match="already exists"):
        free.write_episode(0, 0, arrays)
    bad = dict(arrays, obs=arrays["obs"][:, :3])
    with pytest.raises(StoreError, match="'obs' has shape"):
        free.write_episode(0, 1, bad)
    nan = dict(arrays, action=np.full_like(arrays["action"], np.nan))
    with pytest.raises(StoreError, match="non-finite"):
        free.write_episode(0, 1, nan)
    with pytest.raises(StoreError, match="outside the manifest's bounds"):
        free.write_episode(0, 1, dict(arrays, action=arrays["action"] + 3))
    assert load_task_arrays(free.path)[0].reward is None
    # Re-opening with another schema is refused and names the key.
    with pytest.raises(StoreError, match="different 'joint_names'"):
        EpisodeStore.create(tmp_path / "free", {**manifest, "reward_labelled": False, "joint_names": ["a"]})
    with pytest.raises(StoreError, match="not an episode store"):
        EpisodeStore.open(tmp_path)


def _append_episodes(store_path: str, writer: int, n: int, arrays: dict[str, np.ndarray]) -> None:
    from smrl_train.data.episode_recorder import EpisodeRecorder

    recorder = EpisodeRecorder(EpisodeStore.open(store_path), task_index=0)
    for k in range(n):
        tag = np.float32(20 * writer + k)  # which writer, which of its episodes (k < 20)
        for t in range(len(arrays["obs"])):
            recorder.add(arrays["obs"][t] + tag, arrays["action"][t], arrays["next_obs"][t],
                         timestamp=float(arrays["timestamp"][t]))
        recorder.finish(meta={"robot_id": f"arm{writer}"})


def test_concurrent_writers_into_one_store_never_collide(tmp_path: Path) -> None:
    import multiprocessing

    labelled = generate_dataset(small_config("reach", n_train=1, episode_length=5), tmp_path / "l", progress=False)
    manifest = {k: v for k, v in labelled.manifest.items() if k not in ("format", "version")}
    free = EpisodeStore.create(tmp_path / "fleet", {**manifest, "reward_labelled": False})
    ep = labelled.read_episode(labelled.episode_paths()[0])
    arrays = {k: v for k, v in ep.arrays.items() if k not in ("reward", "success")}
    writers, n = 4, 12
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_episodes, args=(str(free.path), w, n, arrays)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    episodes = [free.read_episode(p) for p in free.episode_paths()]
    assert sorted(e.meta["episode_index"] for e in episodes) == list(range(writers * n))  # no gap, no clash
    tags = sorted(int(round(float(e.arrays["obs"][0, 0] - arrays["obs"][0, 0]))) for e in episodes)
    assert tags == sorted(20 * w + k for w in range(writers) for k in range(n))  # nothing lost or overwritten
    assert {e.meta["robot_id"] for e in episodes} == {f"arm{w}" for w in range(writers)}
    assert not list(free.path.rglob("*.tmp"))


def test_workers_write_the_same_bytes_as_one_process(tmp_path: Path) -> None:
    cfg = small_config("push", n_train=4, episode_length=30)
    one = _files(generate_dataset(cfg, tmp_path / "one", progress=False).path)
    two = generate_dataset(cfg, tmp_path / "two", progress=False, workers=2)
    assert _files(two.path) == one and len(one) == 1 + 4 * len(cfg.data.behaviours)
    # A partial store (an interrupted run) is finished by workers to the same bytes.
    for p in two.episode_paths()[::3]:
        p.unlink()
    generate_dataset(cfg, tmp_path / "two", progress=False, workers=3)
    assert _files(two.path) == one
    with pytest.raises(ValueError, match="workers must be >= 1"):
        generate_dataset(cfg, tmp_path / "three", progress=False, workers=0)


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_generate_leaves_only_whole_episodes(tmp_path: Path, workers: int) -> None:
    cfg = small_config("push", n_train=4, episode_length=100)
    (tmp_path / "config").mkdir()
    cfg_path = write_config(cfg, tmp_path / "config" / "c.yaml")
    out = tmp_path / "d"
    n_episodes = 4 * len(cfg.data.behaviours)  # one episode per behaviour and task
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "smrl_train.cli", "data", "generate", "--config", str(cfg_path), "--out", str(out),
           "--workers", str(workers), "--quiet"]
    for delay in (1.5, 2.5):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env)
        deadline = time.time() + 60
        while time.time() < deadline and len(list((out / "episodes").glob("*.safetensors"))) < (3 if delay < 2 else 8):
            time.sleep(0.05)
        time.sleep(delay * 0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The workers died with it: nothing is written after the kill.
        written = len(list((out / "episodes").glob("*.safetensors")))
        time.sleep(1.0)
        assert len(list((out / "episodes").glob("*.safetensors"))) == written
        store = EpisodeStore.open(out)
        paths = store.episode_paths()
        assert 0 < len(paths) < n_episodes
        for p in paths:  # every listed episode is whole and verified
            assert len(store.read_episode(p)) == 100
    # Re-running finishes the job; the result equals an uninterrupted run byte for byte.
    subprocess.run(cmd, cwd=REPO, env=env, check=True)
    fresh = tmp_path / "fresh"
    subprocess.run(cmd[:-5] + ["--out", str(fresh), "--quiet"], cwd=REPO, env=env, check=True)
    resumed = {k: v for k, v in _files(out).items() if not k.endswith(".tmp")}
    assert resumed == _files(fresh)
    info = subprocess.run([sys.executable, "-m", "smrl_train.cli", "data", "info", str(out), "--json"],
                          cwd=REPO, capture_output=True, text=True, check=True)
    summary = json.loads(info.stdout)
    assert summary["episodes"] == n_episodes and summary["transitions"] == 100 * n_episodes and summary["tasks"] == 4
