"""``smrl train online --source``: recordings pass the trainer node's checks before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from smrl_train.cli import main
from smrl_train.data.episode_recorder import EpisodeRecorder
from smrl_train.data.generate import generate_dataset
from smrl_train.data.recordings import recording_manifest
from smrl_train.data.store import EpisodeStore
from smrl_train.robot.exploration import LatentExplorer, collect_in_process
from smrl_train.robot.runtime import LatentPolicyRuntime
from smrl_train.sim.envs import ArmTaskEnv

from bundle_helpers import random_bundle
from conftest import small_config, write_config

TINY = ["network.policy_hidden=[32, 32]", "network.q_hidden=[32, 32]", "network.encoder_hidden=[32]",
        "network.decoder_hidden=[16]", "offline.steps=50", "offline.log_every=25", "online.iterations=1",
        "online.updates_per_iteration=10", "online.tasks_per_iteration=2", "online.eval_every=0",
        "eval.diagnostic_tasks=0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("recordings_cli")
    cfg = small_config("reach", n_train=3, n_test=1, episode_length=20)
    data = generate_dataset(cfg, tmp / "data", progress=False)
    config = write_config(cfg, tmp / "reach_small.yaml")
    policy = LatentPolicyRuntime(random_bundle(cfg, tmp / "bundle") / "policy.onnx")
    env = ArmTaskEnv(cfg)
    stores = {}
    for name, index in (("rec", None), ("unknown_task", 7)):
        store = EpisodeStore.create(tmp / name, recording_manifest(policy.info, episode_length=20,
                                                                   generator={"name": "test"},
                                                                   dataset_manifest=data.manifest))
        for task in data.tasks("train")[:2]:
            recorder = EpisodeRecorder(store, task.index if index is None else index)
            collect_in_process(env, LatentExplorer(policy), recorder, task, 1, 0, 20)
        stores[name] = tmp / name
    off = tmp / "runs" / "offline_only"
    sets = [arg for item in TINY for arg in ("--set", item)]
    assert main(["train", "offline", "--config", str(config), "--data", str(tmp / "data"), "--run", str(off),
                 "--quiet", "--no-eval", "--threads", "1", *sets]) == 0
    return {"config": config, "data": tmp / "data", "off": off, "tmp": tmp, **stores}


@pytest.mark.parametrize(("store", "message"), [
    ("data", "must be reward-free"),  # the reward-labelled dataset itself: it once trained on it
    ("unknown_task", "task 7 is not one of the dataset's 3 training tasks"),
])
def test_a_recording_that_does_not_fit_is_refused_in_one_line(setup, capsys, store: str, message: str) -> None:
    code = main(["train", "online", "--config", str(setup["config"]), "--data", str(setup["data"]),
                 "--from", str(setup["off"]), "--run", str(setup["tmp"] / "runs" / store), "--source",
                 str(setup[store]), "--quiet", "--no-eval"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (setup["tmp"] / "runs" / store).exists()


def test_a_fitting_recording_trains_the_online_phase(setup) -> None:
    run = setup["tmp"] / "runs" / "smac"
    assert main(["train", "online", "--config", str(setup["config"]), "--data", str(setup["data"]),
                 "--from", str(setup["off"]), "--run", str(run), "--source", str(setup["rec"]), "--quiet",
                 "--no-eval"]) == 0
    from smrl_train.smac.checkpoint import read_meta

    meta = read_meta(run)
    assert meta["finished"] and meta["source"] == "RecordedEpisodeSource"


def test_an_override_keeps_the_offline_runs_seed_unless_told(setup) -> None:
    """``--set`` rebuilds the config from the YAML; the seed once fell back to the YAML's 0."""
    from smrl_train.smac.checkpoint import read_meta

    sets = [arg for item in TINY for arg in ("--set", item)]
    off = setup["tmp"] / "runs" / "offline_seed4"
    assert main(["train", "offline", "--config", str(setup["config"]), "--data", str(setup["data"]), "--run",
                 str(off), "--seed", "4", "--quiet", "--no-eval", "--threads", "1", *sets]) == 0
    for extra, seed in (([], 4), (["--seed", "7"], 7)):
        run = setup["tmp"] / "runs" / f"online_seed{seed}"
        assert main(["train", "online", "--config", str(setup["config"]), "--data", str(setup["data"]),
                     "--from", str(off), "--run", str(run), "--source", str(setup["rec"]), "--quiet", "--no-eval",
                     *sets, "--set", "online.updates_per_iteration=5", *extra]) == 0
        assert read_meta(run)["smac"]["seed"] == seed


def test_an_imported_bag_trains_the_online_phase_unchanged(setup, capsys) -> None:
    """A recording exported as a rosbag2 and imported back (kind 'recorded') passes the same
    checks and trains."""
    pytest.importorskip("rosbags")
    tmp = setup["tmp"]
    assert main(["data", "export-bag", str(setup["rec"]), str(tmp / "rec_bag")]) == 0
    assert main(["data", "import-bag", str(tmp / "rec_bag"), "--config", str(setup["config"]), "--out",
                 str(tmp / "imported"), "--task", "1", "--dataset", str(setup["data"])]) == 0
    assert "wrote 2 episodes (40 steps)" in capsys.readouterr().out
    run = tmp / "runs" / "from_bag"
    assert main(["train", "online", "--config", str(setup["config"]), "--data", str(setup["data"]),
                 "--from", str(setup["off"]), "--run", str(run), "--source", str(tmp / "imported"), "--quiet",
                 "--no-eval"]) == 0
    from smrl_train.smac.checkpoint import read_meta

    assert read_meta(run)["finished"]


def test_recordings_that_grow_between_rounds_serve_each_episode_once(setup, tmp_path: Path) -> None:
    """The trainer node's rounds: a resumed run's source is built from the stores as they are
    now and told what the earlier round served (by identity). New episodes in any of several
    stores are served next; none twice, none skipped (a count per task once served the wrong
    ones when a store listed before another grew)."""
    import shutil

    from smrl_train.smac.sources import RecordedEpisodeSource, load_recordings

    manifest = EpisodeStore.open(setup["data"]).manifest
    cfg = small_config("reach", n_train=3, n_test=1, episode_length=20)
    policy = LatentPolicyRuntime(random_bundle(cfg, tmp_path / "bundle") / "policy.onnx")
    env = ArmTaskEnv(cfg)
    train = EpisodeStore.open(setup["data"]).tasks("train")[:2]

    def record(store: Path, seed: int) -> None:
        for task in train:
            collect_in_process(env, LatentExplorer(policy), EpisodeRecorder(EpisodeStore.open(store), task.index),
                               task, 1, seed, 20)

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(setup["rec"], a)  # an episode of each of two tasks
    EpisodeStore.create(b, {k: v for k, v in EpisodeStore.open(a).manifest.items() if k not in ("format", "version")})
    record(b, 7)
    first = RecordedEpisodeSource(load_recordings([a, b], manifest))
    round_one = [t for task in (0, 1) for t in first.take(task, 2, with_rewards=False)]
    record(a, 5)  # the fleet records more while round one trains, into store a (listed first)
    second = RecordedEpisodeSource(load_recordings([a, b], manifest))
    second.load_state(first.state())
    round_two = [t for task in (0, 1) for t in second.take(task, 10, with_rewards=False)]
    everything = RecordedEpisodeSource(load_recordings([a, b], manifest))
    all_episodes = [t for task in (0, 1) for t in everything.take(task, 10, with_rewards=False)]

    def key(t) -> bytes:
        return t.obs.tobytes() + t.action.tobytes()

    served = [key(t) for t in round_one + round_two]
    assert len(round_one) == 4 and len(all_episodes) == 6
    assert len(served) == len(set(served)) == 6 and set(served) == {key(t) for t in all_episodes}
    assert second.remaining() == 0
