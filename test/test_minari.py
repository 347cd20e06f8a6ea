"""Minari export and import: a store written as a real Minari dataset loads with minari itself and
imports back to the same arrays and tasks; recordings export with NaN rewards; a dataset written
by others imports when it names each episode's task; every rejection is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from smrl_train.cli import main as smrl_main
from smrl_train.data.generate import generate_dataset
from smrl_train.data.minari_dataset import SMRL_FORMAT, import_minari
from smrl_train.data.store import EpisodeStore

from conftest import CONFIGS, small_config

minari = pytest.importorskip("minari", reason="the minari extra is not installed: pip install 'minari[hdf5]'")
pytest.importorskip("h5py", reason="minari's HDF5 storage needs h5py: pip install 'minari[hdf5]'")


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smrl: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("family", ["reach", "push"])
def test_a_store_exported_to_minari_loads_with_minari_and_imports_back_exactly(
        family: str, tmp_path: Path, capsys, monkeypatch) -> None:
    cfg = small_config(family, n_train=2, n_test=1, episode_length=12)
    data = generate_dataset(cfg, tmp_path / "data", progress=False)
    code = smrl_main(["data", "export-minari", str(tmp_path / "data"), str(tmp_path / "minari"),
                      "--id", f"smrl/{family}-v0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert f"to {tmp_path / 'minari' / 'smrl' / f'{family}-v0'}" in capsys.readouterr().out

    # Read with minari itself, as an offline-RL tool would.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    ds = minari.load_dataset(f"smrl/{family}-v0")
    m = data.manifest
    episodes = list(data.iter_episodes())
    assert ds.total_episodes == len(episodes) and ds.total_steps == sum(len(e) for e in episodes)
    assert ds.observation_space.shape == (m["obs_dim"],) and np.all(np.isinf(ds.observation_space.low))
    assert ds.action_space.shape == (m["act_dim"],)
    assert np.all(ds.action_space.low == -1.0) and np.all(ds.action_space.high == 1.0)
    meta = ds.storage.metadata
    assert meta["smrl_format"] == SMRL_FORMAT and meta["reward_labelled"] is True
    assert json.loads(meta["smrl_manifest"])["joint_names"] == m["joint_names"]
    goals = {t["index"]: t["goal"] for t in m["tasks"]["train"]}
    for k, (ep, info) in enumerate(zip(ds.iterate_episodes(), ds.storage.get_episode_metadata(range(len(ds))))):
        mine = episodes[k]
        assert info["task_index"] == mine.task_index and info["episode_index"] == mine.meta["episode_index"]
        assert info["behaviour"] == mine.meta["behaviour"]
        np.testing.assert_array_equal(info["task_goal"], goals[mine.task_index])
        a = mine.arrays
        assert ep.observations.shape == (len(mine) + 1, m["obs_dim"])
        np.testing.assert_array_equal(ep.observations[0], a["obs"][0])
        np.testing.assert_array_equal(ep.observations[-1], a["next_obs"][-1])
        np.testing.assert_array_equal(ep.actions[[0, -1]], a["action"][[0, -1]])
        np.testing.assert_array_equal(ep.rewards[[0, -1]], a["reward"][[0, -1]])
        assert ep.truncations[-1] and not ep.truncations[:-1].any() and not ep.terminations.any()
        assert "next_observations" not in ep.infos  # generated episodes chain: obs[t + 1] == next_obs[t]
        assert ep.infos["success"].shape == (len(mine) + 1,)

    # Back into a store, by folder: the same files, arrays and tasks. (The CLI reads the
    # repository's config, which differs from the small one only in sizes the import does not
    # check: tasks, episode length.)
    code = smrl_main(["data", "import-minari", str(tmp_path / "minari" / "smrl" / f"{family}-v0"),
                      "--config", f"config/{family}.yaml", "--out", str(tmp_path / "back"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "(written by smrl)" in capsys.readouterr().out
    back = EpisodeStore.open(tmp_path / "back")
    assert [p.name for p in back.episode_paths()] == [p.name for p in data.episode_paths()]
    for mine, theirs in zip(episodes, back.iter_episodes()):
        assert mine.arrays.keys() == theirs.arrays.keys()
        for key in mine.arrays:
            np.testing.assert_array_equal(mine.arrays[key], theirs.arrays[key], err_msg=key)
        assert theirs.meta["behaviour"] == mine.meta["behaviour"]
    assert back.manifest["tasks"] == m["tasks"] and back.manifest["reward_labelled"] is True
    assert back.manifest["generator"]["from"] == m["generator"]

    # ... and by id in the datasets root; the store is what `smrl train offline --data` takes.
    r = import_minari(f"smrl/{family}-v0", cfg, tmp_path / "by_id")
    assert r.episodes == len(episodes) and r.smrl
    from smrl_train.smac.problem import problem_from_files

    problem = problem_from_files(f"config/{family}.yaml", tmp_path / "by_id")
    assert sorted(problem.offline) == [0, 1] and len(problem.test_tasks) == 1


def _recording(data: EpisodeStore, path: Path) -> EpisodeStore:
    """A reward-free store with the dataset's schema and one episode whose states do not chain."""
    manifest = {k: v for k, v in data.manifest.items() if k not in ("format", "version")}
    rec = EpisodeStore.create(path, {**manifest, "reward_labelled": False})
    a = data.read_episode(data.episode_paths()[0]).arrays
    arrays = {k: a[k].copy() for k in ("obs", "action", "next_obs", "terminated", "truncated", "timestamp")}
    arrays["next_obs"][3] += 0.01  # the state re-read between two steps
    rec.write_episode(0, 0, arrays, {"kind": "explore"})
    return rec


def test_a_recording_exports_with_nan_rewards_and_its_exact_next_states(tmp_path: Path, capsys,
                                                                       monkeypatch) -> None:
    cfg = small_config("reach", n_train=1, n_test=1, episode_length=10)
    data = generate_dataset(cfg, tmp_path / "data", progress=False)
    rec = _recording(data, tmp_path / "rec")
    monkeypatch.chdir(tmp_path)  # a relative datasets root, as typed on the command line
    assert smrl_main(["data", "export-minari", "rec", "m", "--id", "rec-v1", "--quiet"]) == 0
    monkeypatch.setenv("MINARI_DATASETS_PATH", "m")
    ds = minari.load_dataset("rec-v1")
    assert ds.storage.metadata["reward_labelled"] is False
    ep = ds[0]
    mine = rec.read_episode(rec.episode_paths()[0]).arrays
    assert np.isnan(ep.rewards).all() and "success" not in ep.infos
    assert ds.storage.get_episode_metadata([0]).__next__()["kind"] == "explore"
    np.testing.assert_array_equal(ep.infos["next_observations"][1:], mine["next_obs"])
    np.testing.assert_array_equal(ep.observations[:-1], mine["obs"])
    np.testing.assert_array_equal(ep.infos["timestamp"][1:], mine["timestamp"])
    # A recording is no offline dataset.
    capsys.readouterr()
    code = smrl_main(["data", "import-minari", "rec-v1", "--config", str(CONFIGS["reach"]), "--out",
                      str(tmp_path / "x"), "--quiet"])
    assert code == 2 and "a reward-free recording (rewards NaN)" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def _foreign(root: Path, dataset_id: str, obs_dim: int, act_dim: int, monkeypatch, *, tasks: bool = True,
             episodes: int = 3, steps: int = 6) -> Path:
    """A dataset written by someone else with minari's own API (no smrl metadata)."""
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    rng = np.random.default_rng(0)
    buffers = [EpisodeBuffer(observations=rng.uniform(-1, 1, (steps + 1, obs_dim)).astype(np.float32),
                             actions=rng.uniform(-1, 1, (steps, act_dim)).astype(np.float32),
                             rewards=rng.uniform(-1, 0, steps), terminations=np.zeros(steps, bool),
                             truncations=np.arange(steps) == steps - 1) for _ in range(episodes)]
    with pytest.warns(UserWarning):  # minari asks for an author, a permalink, an env spec
        ds = minari.create_dataset_from_buffers(
            dataset_id, buffers, observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            action_space=gym.spaces.Box(-1, 1, (act_dim,), np.float32))
    if tasks:
        ds.storage.update_episode_metadata(
            [{"task_index": k % 2, "task_goal": np.array([0.4, 0.1 * (k % 2), 0.2]), "kind": "explore"}
             for k in range(episodes)])
    return root / dataset_id


def test_a_dataset_written_by_others_imports_when_it_names_each_episodes_task(tmp_path: Path, monkeypatch) -> None:
    cfg = small_config("reach", n_train=2, n_test=2)
    path = _foreign(tmp_path / "m", "others/arm-v0", 13, 5, monkeypatch)
    r = import_minari(path, cfg, tmp_path / "store")
    assert (r.episodes, r.steps, r.tasks, r.smrl, r.success_unknown) == (3, 18, 2, False, 3)
    store = EpisodeStore.open(tmp_path / "store")
    assert [t.goal for t in store.tasks("train")] == [(0.4, 0.0, 0.2), (0.4, 0.1, 0.2)]
    assert len(store.tasks("test")) == 2
    arrays = store.task_arrays()
    ds = minari.MinariDataset(path / "data")
    np.testing.assert_array_equal(arrays[0].obs[:6], ds[0].observations[:-1])
    np.testing.assert_array_equal(arrays[0].reward[:6], ds[0].rewards.astype(np.float32))
    ep = store.read_episode(store.episode_paths()[0])
    # Their "explore" is not ours (the latent policy's): the trainer sees a recorded episode.
    assert ep.meta["kind"] == "recorded" and ep.meta["minari_kind"] == "explore"
    assert ep.meta["minari_dataset"] == "others/arm-v0"
    np.testing.assert_allclose(ep.arrays["timestamp"], np.arange(1, 7) / cfg.env.control_hz)


def test_rejections_are_one_line_each(tmp_path: Path, capsys, monkeypatch) -> None:
    cfg = small_config("reach", n_train=1, n_test=1, episode_length=8)
    generate_dataset(cfg, tmp_path / "data", progress=False)
    assert smrl_main(["data", "export-minari", str(tmp_path / "data"), str(tmp_path / "m"), "--id",
                      "smrl/reach-v0", "--quiet"]) == 0
    wrong_obs = _foreign(tmp_path / "m", "others/wide-v0", 20, 5, monkeypatch)
    no_tasks = _foreign(tmp_path / "m", "others/untasked-v0", 13, 5, monkeypatch, tasks=False)
    imports: dict[str, tuple[str, str]] = {
        "nothing: no such file, folder or Minari dataset id": (str(tmp_path / "nothing"), "reach"),
        "nobody/none-v0: no such folder, nor a local Minari dataset": ("nobody/none-v0", "reach"),
        "not a Minari dataset (no data/metadata.json)": (str(tmp_path / "data"), "reach"),
        "its observation space is Box(-inf, inf, (20,), float32), the config's reach on smrl_arm needs a Box of "
        "shape (13,)": (str(wrong_obs), "reach"),
        "episode 0 (3 of 3) lacks per-episode task metadata (task_index and task_goal)": (str(no_tasks), "reach"),
        "holds 'reach' episodes, the config is a 'push' config": ("smrl/reach-v0", "push"),
        "not data of the config's arm: joint_names": ("smrl/reach-v0", "reach_panda"),
    }
    for i, (expected, (source, config)) in enumerate(imports.items()):
        code = smrl_main(["data", "import-minari", source, "--config", f"config/{config}.yaml", "--out",
                          str(tmp_path / f"out{i}"), "--quiet"])
        assert code == 2 and expected in one_line(capsys.readouterr().err), expected
        assert not (tmp_path / f"out{i}").exists()
    exports = {
        "dataset id 'reach': expected (namespace/)name-vN": ["--id", "reach"],
        "exists already (Minari never overwrites a dataset": ["--id", "smrl/reach-v0"],
    }
    for expected, extra in exports.items():
        code = smrl_main(["data", "export-minari", str(tmp_path / "data"), str(tmp_path / "m"), *extra])
        assert code == 2 and expected in one_line(capsys.readouterr().err), expected
    code = smrl_main(["data", "export-minari", str(tmp_path / "nothing"), str(tmp_path / "m2"), "--id", "a-v0"])
    assert code == 2 and "not an episode store" in one_line(capsys.readouterr().err)
    # The store's own checks, named by the Minari episode: actions outside [-1, 1].
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "m"))
    with pytest.warns(UserWarning):
        ds = minari.create_dataset_from_buffers(
            "others/loud-v0", [EpisodeBuffer(observations=np.zeros((3, 13), np.float32),
                                             actions=np.full((2, 5), 3.0, np.float32), rewards=np.zeros(2),
                                             terminations=np.zeros(2, bool), truncations=np.array([False, True]))],
            observation_space=gym.spaces.Box(-np.inf, np.inf, (13,), np.float32),
            action_space=gym.spaces.Box(-5, 5, (5,), np.float32))
    ds.storage.update_episode_metadata([{"task_index": 0, "task_goal": np.array([0.4, 0.0, 0.2])}])
    code = smrl_main(["data", "import-minari", "others/loud-v0", "--config", "config/reach.yaml", "--out",
                      str(tmp_path / "loud"), "--quiet"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "Minari episode 0: " in line and "outside the manifest's bounds" in line, line


def test_without_h5py_the_commands_say_what_to_install(tmp_path: Path, capsys, monkeypatch) -> None:
    # A venv without the extra, simulated by making the import fail as it would there.
    monkeypatch.setitem(sys.modules, "h5py", None)
    code = smrl_main(["data", "export-minari", str(tmp_path), str(tmp_path / "m"), "--id", "a-v0"])
    assert code == 2 and "pip install 'minari[hdf5]==0.5.4'" in one_line(capsys.readouterr().err)
