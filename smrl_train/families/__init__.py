"""Task families by name: ours, an import path, or an installed package's entry point.

``env.family`` in a config names one of

* ``reach`` or ``push``: the arm families of :mod:`smrl_train.sim.envs` (URDF, MuJoCo);
* ``package.module:Name``: an import path to a gymnasium env class (or a function returning
  an env) that follows the task protocol of :mod:`smrl_train.sim.tasks`;
* a name an installed package registers in the entry-point group ``smrl.families``, e.g. in
  its pyproject.toml ``[project.entry-points."smrl.families"] my_suite = "my_pkg.envs:MyFamily"``.

An external family is built as ``Name(**env.options)`` and truncated at ``env.episode_length``;
the ``arm:`` section and the arm-only ``env.*`` keys do not apply to it. Besides the task
protocol it may give

* ``expert_policy(task, noise, rng) -> (obs -> action)``: a scripted policy for ``task``, which
  ``smrl data generate`` turns into every behaviour kind (``expert``; ``wrong_goal``: the expert
  of another task; ``corrected``: wrong for half the episode, then right; ``random`` needs no
  hook: uniform actions of the action space);
* ``success_metric = "any"``: success counts at any step of an episode (default ``"last"``;
  the config's ``smac.eval.success`` overrides it);
* ``observation_layout``: (name, size) blocks of the observation (for ``network.policy_ignores``).

Its action space is a bounded Box inside [-1, 1] (SMAC's policy acts through a tanh).
:mod:`smrl_train.families.example` is a documented example; :mod:`smrl_train.families.factory`
builds a config's env. This module imports no env code: the config resolves names with it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from smrl_train.config_schema import ConfigError

ARM_FAMILIES = ("reach", "push")
ENTRY_POINT_GROUP = "smrl.families"


@dataclass(frozen=True)
class Family:
    """A resolved ``env.family``: its name as configured and, for an external family, the
    factory ``factory(**env.options)`` that builds its env (None for our arm families)."""

    name: str
    factory: Callable[..., Any] | None = None

    @property
    def is_arm(self) -> bool:
        return self.factory is None


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _import(path: str, what: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise ConfigError(f"env.family: cannot import {what} ({exc})") from None
    except AttributeError:
        raise ConfigError(f"env.family: {what}: module '{module}' has no '{attr}'") from None
    if not callable(obj):
        raise ConfigError(f"env.family: {what} is not a class or function")
    return obj


def resolve_family(name: str) -> Family:
    """The family ``name`` refers to (see the module docstring); a ConfigError naming
    ``env.family`` when it is none of them."""
    if name in ARM_FAMILIES:
        return Family(name)
    module, sep, attr = name.partition(":")
    if sep:
        if not module or not attr:
            raise ConfigError(f"env.family: expected an import path 'package.module:Name', got {name!r}")
        return Family(name, _import(name, f"'{name}'"))
    points = _entry_points()
    if name in points:
        return Family(name, _import(points[name].value, f"'{name}' (entry point {points[name].value})"))
    known = ", ".join([*ARM_FAMILIES, *sorted(points)])
    raise ConfigError(f"env.family: unknown family {name!r} (known: {known}; or an import path "
                      "'package.module:Name')")
