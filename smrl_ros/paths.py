"""Where a node's path parameters point.

Inputs (URDFs, configs, bundles, datasets) may ship with the package: a relative input that
does not exist from the working directory is looked up in the package (source tree or share
folder). Outputs (stores, run folders, adapted policies) are always relative to the working
directory: never the install tree, where a binary install cannot write and where
``rm -rf install`` would delete a user's data.
"""

from __future__ import annotations

from pathlib import Path

from smrl_train.config import package_root


def input_path(path: str) -> Path:
    """An input as given when it exists (or is absolute), else the package's file of that name."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else package_root() / p


def output_path(path: str) -> Path:
    """An output: relative to the working directory, as an absolute path."""
    return Path(path).expanduser().absolute()
