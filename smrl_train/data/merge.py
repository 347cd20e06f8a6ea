"""``smrl data merge``: one store from several (e.g. one per arm of a fleet).

Every input must have the output's schema (the keys :func:`smrl_train.data.recordings.
schema_mismatches` compares, reward labelling, and for reward-labelled datasets the task
list); the first input's manifest founds a new output store. Episodes keep their task and
their arrays byte for byte. Their index in the merged store is the task's next free one, as when
a fleet's recorders append to one shared store (:meth:`EpisodeStore.append_episode`): per-robot
stores all number their episodes from 0, so indices are slots, not identities. An episode's
identity is its task and the SHA-256 of its arrays (in its metadata); the merge records where
it came from (``merged_from``: the source store's ``robot_id`` where the episodes carry one, and
the episode's index there) and skips an episode whose identity the output already holds. So
merging again adds nothing, and a killed merge (each episode is published whole) resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smrl_train.data.recordings import schema_mismatches
from smrl_train.data.store import FORMAT, EpisodeStore, StoreError


@dataclass(frozen=True)
class MergeResult:
    """Episodes written and skipped (already in the output) per input store, in input order."""

    out: Path
    added: dict[str, int]
    skipped: dict[str, int]


def _schema_problems(store: EpisodeStore, first: EpisodeStore) -> list[str]:
    a, b = store.manifest, first.manifest
    problems = schema_mismatches(a, b, (str(store.path), str(first.path)))
    if a["reward_labelled"] != b["reward_labelled"]:
        problems.append(f"reward_labelled: {a['reward_labelled']} != {b['reward_labelled']}")
    elif a["reward_labelled"] and a.get("tasks") != b.get("tasks"):
        problems.append("tasks: the reward-labelled datasets list different tasks")
    return problems


def merge_stores(inputs: Sequence[str | Path], out: str | Path) -> MergeResult:
    """Merge the stores ``inputs`` into ``out`` (created from the first input's manifest, or an
    existing store of the same schema). See the module docstring.

    Raises:
        StoreError: no inputs, a missing or unreadable store, ``out`` among the inputs, a
            schema differing from the first input's or the output's (names the store and keys).
    """
    if not inputs:
        raise StoreError("smrl data merge: no input stores")
    out = Path(out)
    for path in inputs:
        if Path(path).resolve() == out.resolve():
            raise StoreError(f"{path}: the output store is one of the inputs; choose another --out")
    stores = [EpisodeStore.open(p) for p in inputs]  # each missing one refused by name
    for store in stores[1:]:
        problems = _schema_problems(store, stores[0])
        if problems:
            raise StoreError(f"{store.path}: its schema differs from {stores[0].path}'s: " + "; ".join(problems))
    manifest: dict[str, Any] = {k: v for k, v in stores[0].manifest.items() if k not in ("format", "version")}
    if out.exists() and (out / "manifest.json").exists():
        target = EpisodeStore.open(out)
        problems = _schema_problems(target, stores[0])
        if problems:
            raise StoreError(f"{out}: the existing output's schema differs from {stores[0].path}'s: "
                             + "; ".join(problems))
    else:
        target = EpisodeStore.create(out, manifest)
    assert target.manifest["format"] == FORMAT
    have = target.episode_keys()
    added: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for store in stores:
        name = str(store.path)
        added[name] = skipped[name] = 0
        for path in store.episode_paths():
            episode = store.read_episode(path)  # checksum, shapes and bounds checked
            key = (episode.task_index, episode.meta["sha256"])
            if key in have:
                skipped[name] += 1
                continue
            meta = {k: v for k, v in episode.meta.items()
                    if k not in ("task_index", "episode_index", "length", "sha256")}
            meta.setdefault("merged_from", {"robot_id": episode.meta.get("robot_id"),
                                            "episode_index": episode.meta["episode_index"]})
            target.append_episode(episode.task_index, episode.arrays, meta)
            have.add(key)
            added[name] += 1
    return MergeResult(out, added, skipped)
