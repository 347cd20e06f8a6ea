"""Where a node's path parameters point.

Inputs (URDFs, configs, bundles, datasets) may ship with the package: a relative input that
does not exist from the working directory is looked up in the package (source tree or share
folder). The robot's URDF defaults to the one the model names (:func:`robot_arm`). Outputs
(stores, run folders, adapted policies) are always relative to the working directory: never
the install tree, where a binary install cannot write and where ``rm -rf install`` would
delete a user's data.
"""

from __future__ import annotations

from pathlib import Path

from smrl_train.config import package_root
from smrl_train.robot.model_metadata import ModelInfo
from smrl_train.robot.urdf import ArmDescription, UrdfError, load_urdf


def input_path(path: str) -> Path:
    """An input as given when it exists (or is absolute), else the package's file of that name."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else package_root() / p


def output_path(path: str) -> Path:
    """An output: relative to the working directory, as an absolute path."""
    return Path(path).expanduser().absolute()


def robot_arm(urdf_path: str, ee_link: str, info: ModelInfo | None) -> ArmDescription:
    """The robot's URDF: the ``urdf_path`` and ``ee_link`` parameters when set, else the model's
    own (``smrl.urdf`` / ``smrl.ee_link``: the arm of the config it was trained with).

    Raises:
        UrdfError: neither names one (an older export carries no arm), or the
            URDF cannot be read.
    """
    urdf = urdf_path or (info.urdf if info is not None else "")
    link = ee_link or (info.ee_link if info is not None else "")
    if not urdf or not link:
        missing = " and ".join(n for n, v in (("urdf_path", urdf), ("ee_link", link)) if not v)
        raise UrdfError(f"parameter(s) {missing}: required, the model's metadata names no arm (smrl.urdf, "
                        "smrl.ee_link: an older export)")
    return load_urdf(input_path(urdf), link)
