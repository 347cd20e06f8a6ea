"""Reading a config file: YAML, then every section strictly, then the arm against its URDF.

:func:`load_config` is the one entry point from ``config/*.yaml`` to a checked
:class:`smrl_train.config.SmrlConfig`: it builds the family sections
(:mod:`smrl_train.config`), the ``smac:`` section (:mod:`smrl_train.smac.config`), resolves
relative paths against the package root, and checks the arm section against its URDF
(:func:`smrl_train.sim.arm_sim.check_arm`) when the family is one of ours. Errors are
:class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml

from smrl_train.config import SmrlConfig
from smrl_train.config_schema import ConfigError, from_dict, yaml_error_line
from smrl_train.families import ARM_FAMILIES
from smrl_train.smac.config import smac_from_yaml_dict

T = TypeVar("T")


@overload
def load_config(path: str | Path, *, arm_check: bool = True) -> SmrlConfig: ...
@overload
def load_config(path: str | Path, cls: type[T], *, arm_check: bool = True) -> T: ...
def load_config(path: str | Path, cls: type[Any] = SmrlConfig, *, arm_check: bool = True) -> Any:
    """Load and validate a YAML config file; ``arm_check`` False skips the check of the arm
    section against its URDF (``smrl check-arm`` reports on a bad arm section instead).

    Raises:
        ConfigError: the file is missing, not YAML, or has an unknown key or a bad type.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_line(exc)}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty (a config names at least its arm and env sections)")
    smac = None
    if isinstance(cls, type) and issubclass(cls, SmrlConfig) and isinstance(data, dict) \
            and isinstance(data.get("smac"), dict):
        # The smac: section belongs to smrl_train.smac.config; it is built after the family sections.
        data = dict(data)
        smac = data.pop("smac")
    try:
        cfg = from_dict(cls, data)
        if smac is not None:
            cfg = dataclasses.replace(cfg, smac=smac_from_yaml_dict(smac))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if "root" in {f.name for f in dataclasses.fields(cls)}:
        cfg = dataclasses.replace(cfg, root=str(path.resolve().parent.parent))
    if isinstance(cfg, SmrlConfig) and arm_check and cfg.env.family in ARM_FAMILIES:
        from smrl_train.sim.arm_sim import check_arm  # the sim room knows the URDF and the table

        try:
            check_arm(cfg)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return cfg

