"""Build a :class:`~smrl_train.smac.runner.Problem` from a config file and an episode store,
and resolve the ``smac:`` config with command-line overrides."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from smrl_train.config_loader import load_config
from smrl_train.config_schema import ConfigError, to_dict
from smrl_train.smac.config import SmacConfig, load_smac_config, smac_from_yaml_dict
from smrl_train.smac.runner import Problem


def problem_from_files(config: str | Path, data: str | Path) -> Problem:
    """The task family of ``config`` with the offline data of the store at ``data``.

    Train/test tasks come from the store's manifest (so evaluation uses exactly the split the
    data was generated for); the env is the family's (``smrl_train.families.factory.make_env``:
    our arms, an import path or an installed entry point).
    """
    from smrl_train.data.generate import config_mismatches
    from smrl_train.data.store import EpisodeStore, StoreError
    from smrl_train.families.factory import make_env

    cfg = load_config(config)
    store = EpisodeStore.open(data)
    m = store.manifest
    if m["family"] != cfg.env.family:
        raise StoreError(f"{data}: holds '{m['family']}' episodes but {config} is a '{cfg.env.family}' config")
    problems = config_mismatches(cfg, m)
    if problems:
        raise StoreError(f"{data}: not data of the {'arm' if 'arm' in m else 'family'} {config} describes: "
                         + "; ".join(problems))
    if not m["reward_labelled"]:
        raise StoreError(f"{data}: offline meta-training needs a reward-labelled store")
    train, test = store.tasks("train"), store.tasks("test")
    offline = store.task_arrays()
    missing = [t.index for t in train if t.index not in offline]
    if missing:
        raise StoreError(f"{data}: no episodes for training tasks {missing[:5]}")
    # A partial, not a closure: collection workers (train_online's workers) build their env with it.
    return Problem(env_factory=functools.partial(make_env, cfg), train_tasks=train, test_tasks=test, offline=offline,
                   max_steps=cfg.env.episode_length,
                   description={"config": str(config), "data": str(data), "family": cfg.env.family,
                                "arm": m.get("arm", {}).get("name"), "obs_dim": m["obs_dim"], "act_dim": m["act_dim"],
                                "train_tasks": len(train), "test_tasks": len(test),
                                "env": to_dict(cfg.env)})


def apply_overrides(cfg: SmacConfig, overrides: Sequence[str]) -> SmacConfig:
    """``section.key=value`` overrides (values parsed as YAML), validated like the file.

    Example: ``online.train_encoder=false``, ``loss.awac_beta=100``, ``network.q_hidden=[64,64]``.
    """
    if not overrides:
        return cfg
    data: dict[str, Any] = to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"--set {item!r}: unknown section 'smac.{p}'")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"--set {item!r}: unknown key 'smac.{key.strip()}'")
        node[parts[-1]] = yaml.safe_load(raw)
    return smac_from_yaml_dict(data)


def resolve_smac(config: str | Path | None, smac_file: str | Path | None = None, variant: str | None = None,
                 seed: int | None = None, overrides: Sequence[str] = ()) -> SmacConfig:
    """The ``smac:`` config: ``smac_file`` if given, else ``config``'s section, else defaults;
    then ``variant`` (re-derives the variant's deviation defaults), ``seed`` and ``--set``."""
    source = smac_file or config
    cfg = load_smac_config(source) if source else SmacConfig()
    if variant is not None and variant != cfg.variant:
        cfg = cfg.with_variant(variant)
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    return apply_overrides(cfg, overrides)
