"""smrl data merge: per-robot stores written by the real recorder merge into one, nothing lost,
nothing doubled on a rerun, schema mismatches refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smrl_train.data.episode_recorder import EpisodeRecorder
from smrl_train.data.generate import generate_dataset
from smrl_train.data.merge import merge_stores
from smrl_train.data.store import EpisodeStore, StoreError

from conftest import REPO, small_config


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict]:
    """Two arms' reward-free stores (two tasks, episodes 0.. in each), recorded step by step."""
    tmp = tmp_path_factory.mktemp("fleet")
    labelled = generate_dataset(small_config("reach", n_train=2, episode_length=6), tmp / "data", progress=False)
    manifest = {k: v for k, v in labelled.manifest.items() if k not in ("format", "version")}
    source = labelled.read_episode(labelled.episode_paths()[0]).arrays
    stores = []
    for arm in (1, 2):
        store = EpisodeStore.create(tmp / f"arm{arm}", {**manifest, "reward_labelled": False})
        for task in (0, 1):
            recorder = EpisodeRecorder(store, task_index=task)
            for k in range(2):
                shift = np.float32(0.01 * (10 * arm + 3 * task + k))  # every episode distinct
                for t in range(len(source["obs"])):
                    recorder.add(source["obs"][t] + shift, source["action"][t], source["next_obs"][t],
                                 timestamp=float(source["timestamp"][t]))
                recorder.finish(meta={"robot_id": f"arm{arm}", "kind": "explore"})
        stores.append(store.path)
    return tmp, stores, manifest


def _contents(store: Path) -> list[tuple[int, str, str | None, int]]:
    s = EpisodeStore.open(store)
    return sorted((e.task_index, e.meta["sha256"], e.meta.get("robot_id"), e.meta.get("episode_index", -1))
                  for e in s.iter_episodes())


def test_merge_keeps_every_episode_once_and_a_rerun_adds_nothing(fleet, tmp_path: Path) -> None:
    _, stores, _ = fleet
    out = tmp_path / "merged"
    r = merge_stores(stores, out)
    assert list(r.added.values()) == [4, 4] and list(r.skipped.values()) == [0, 0]
    merged = EpisodeStore.open(out)
    episodes = list(merged.iter_episodes())
    sources = [EpisodeStore.open(s) for s in stores]
    want = sorted((e.task_index, e.meta["sha256"]) for s in sources for e in s.iter_episodes())
    assert sorted((e.task_index, e.meta["sha256"]) for e in episodes) == want  # each arm's episodes, once
    for e in episodes:  # where it came from, and the arrays byte for byte
        origin = e.meta["merged_from"]
        src = sources[int(origin["robot_id"][-1]) - 1]
        twin = src.read_episode(src.path / "episodes" / f"task{e.task_index:04d}_ep{origin['episode_index']:06d}"
                                ".safetensors")
        assert twin.meta["sha256"] == e.meta["sha256"] and e.meta["kind"] == "explore"
        assert all(np.array_equal(twin.arrays[k], e.arrays[k]) for k in twin.arrays)
    # Task 0: arm1's episodes 0, 1 then arm2's as 2, 3 (the next free slots, as a shared store's).
    assert [(e.meta["episode_index"], e.meta["robot_id"]) for e in episodes if e.task_index == 0] == \
        [(0, "arm1"), (1, "arm1"), (2, "arm2"), (3, "arm2")]
    before = _contents(out)
    again = merge_stores(stores, out)
    assert list(again.added.values()) == [0, 0] and list(again.skipped.values()) == [4, 4]
    assert _contents(out) == before


def test_a_killed_merge_resumes_without_doubles(fleet, tmp_path: Path) -> None:
    _, stores, _ = fleet
    out = tmp_path / "merged"
    merge_stores(stores[:1], out)  # as if killed after the first arm's episodes were published
    r = merge_stores(stores, out)
    assert list(r.added.values()) == [0, 4]
    assert len(EpisodeStore.open(out).episode_paths()) == 8


def test_schema_mismatch_missing_store_and_out_among_inputs_are_one_line(fleet, tmp_path: Path) -> None:
    tmp, stores, manifest = fleet
    other = EpisodeStore.create(tmp_path / "other", {**manifest, "reward_labelled": False,
                                                     "joint_names": list(reversed(manifest["joint_names"]))})
    with pytest.raises(StoreError, match="its schema differs .*joint_names"):
        merge_stores([stores[0], other.path], tmp_path / "m")
    assert not (tmp_path / "m").exists()  # refused before anything is written
    cases = {
        (str(stores[0]), str(other.path), "--out", str(tmp_path / "m")): "its schema differs",
        (str(stores[0]), str(tmp_path / "nope"), "--out", str(tmp_path / "m")): "not an episode store",
        (str(stores[0]), str(stores[1]), "--out", str(stores[1])): "the output store is one of the inputs",
        (str(stores[0]), "--out", str(tmp / "data")): "reward_labelled: True != False",
    }
    for args, needle in cases.items():
        out = subprocess.run([sys.executable, "-m", "smrl_train.cli", "data", "merge", *args], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and out.stderr.startswith("smrl: error: "), out.stderr
        assert needle in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert len(EpisodeStore.open(stores[1]).episode_paths()) == 4  # the input is untouched


def test_cli_merge_reports_what_it_added(fleet, tmp_path: Path) -> None:
    _, stores, _ = fleet
    args = [sys.executable, "-m", "smrl_train.cli", "data", "merge", *map(str, stores), "--out", str(tmp_path / "m")]
    first = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert first.stdout.count("4 episode(s) added, 0 already in") == 2
    second = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert second.stdout.count("0 episode(s) added, 4 already in") == 2
