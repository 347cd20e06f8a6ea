"""The ``smrl.*`` metadata of an exported ONNX model: keys, types, version, writer and reader.

Every model smrl exports carries its deployment contract in the ONNX ``metadata_props`` (all
values strings; lists as JSON). This module is the one definition of that schema, torch-free
(numpy and the standard library), so the export and the robot side cannot drift apart:

* :class:`DeploymentSpec`, the contract's fields; the export (:mod:`smrl_train.export.onnx_export`)
  writes them with :meth:`DeploymentSpec.as_metadata`, and each model's kind with
  :func:`kind_metadata`;
* :func:`parse_metadata`, which the loader (:mod:`smrl_train.robot.runtime`) reads and
  validates them with, into a :class:`ModelInfo`: the same spec plus the model's kind and identity.

The hash (``smrl.model_hash``) is computed over the graph and these entries by
:func:`smrl_train.robot.runtime.set_metadata`.

==========================  =========================  ==========================================
key                         value                      meaning
==========================  =========================  ==========================================
``smrl.format``             ``smrl-onnx``              :data:`FORMAT`
``smrl.format_version``     ``1``                      :data:`FORMAT_VERSION`
``smrl.kind``               str                        one of :data:`KINDS`
``smrl.version``            str                        the smrl version that exported it
``smrl.model_hash``         hex SHA-256                graph + every other entry (set last)
``smrl.joint_names``        JSON list of str           joint order of every per-joint array
``smrl.observation_layout`` JSON [[name, size], ...]   observation blocks, in order
``smrl.action_type``        ``joint_position_absolute`` :data:`ACTION_ABSOLUTE`
``smrl.action_output``      ``joint_targets``          :data:`ACTION_OUTPUT`
``smrl.action_scale``       JSON list of float         max_step per joint (rad)
``smrl.joint_lower``        JSON list of float         URDF position limits (rad)
``smrl.joint_upper``        JSON list of float
``smrl.joint_velocity``     JSON list of float         URDF velocity limits (rad/s)
``smrl.control_hz``         float                      control rate (Hz)
``smrl.arm``                str                        arm name (URDF robot name)
``smrl.urdf_sha256``        hex SHA-256                of the URDF the model was trained on
``smrl.task_family``        str                        ``reach`` or ``push``
``smrl.latent_dim``         int                        size of z
``smrl.z``                  JSON list of float         optional: the baked-in z (adapted policy)
``smrl.episode_length``     int >= 1                   optional: steps per training episode
``smrl.urdf``               str                        optional: the URDF (relative: to the package
                                                       root, as the config names it; else absolute)
``smrl.ee_link``            str                        optional: the end-effector link
``smrl.home``               JSON list of float         optional: the home pose (rad), per joint
``smrl.context_layout``     JSON [[name, size], ...]   optional: the encoder's context rows
``smrl.latent_resample``    ``step``, ``episode``, N   optional: when exploration redraws z
``smrl.run``/``.method``/``.step``  str                optional: the training run it came from
==========================  =========================  ==========================================
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import smrl_train

FORMAT = "smrl-onnx"
FORMAT_VERSION = "1"
KIND_ADAPTED = "adapted_policy"
KIND_LATENT = "latent_policy"
KIND_ENCODER = "encoder"
KINDS = (KIND_ADAPTED, KIND_LATENT, KIND_ENCODER)
ACTION_ABSOLUTE = "joint_position_absolute"
ACTION_OUTPUT = "joint_targets"
# Present in every model; a loader refuses a model without one (in this order in its message).
REQUIRED_METADATA = (
    "smrl.format", "smrl.format_version", "smrl.kind", "smrl.version", "smrl.model_hash",
    "smrl.joint_names", "smrl.observation_layout", "smrl.action_type", "smrl.action_output",
    "smrl.action_scale", "smrl.joint_lower", "smrl.joint_upper", "smrl.joint_velocity",
    "smrl.control_hz", "smrl.arm", "smrl.urdf_sha256", "smrl.task_family", "smrl.latent_dim",
)


class ModelError(ValueError):
    """An ONNX model is unreadable, malformed or does not fit (the message names the problem)."""


def _json_floats(values: Any) -> str:
    return json.dumps([float(x) for x in values])


@dataclass(frozen=True)
class DeploymentSpec:
    """What the robot side must agree on with a model (the export takes it from the training
    env: :func:`smrl_train.export.onnx_export.spec_from_env`). ``max_step`` (written as
    ``smrl.action_scale``), ``lower``, ``upper`` and ``velocity`` are (n_joints,) in
    ``joint_names`` order."""

    joint_names: tuple[str, ...]
    observation_layout: tuple[tuple[str, int], ...]
    max_step: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    control_hz: float
    arm: str
    urdf_sha256: str
    task_family: str
    episode_length: int = 0  # control steps per training episode (0: not recorded)
    # The arm as the training config described it, so the robot side needs no second copy:
    # the URDF (a path relative to the package root, or absolute), the end-effector link and
    # the home pose (rad, joint_names order). Empty: not recorded (older exports).
    urdf: str = ""
    ee_link: str = ""
    home: tuple[float, ...] = ()

    @property
    def obs_dim(self) -> int:
        return sum(size for _, size in self.observation_layout)

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    def as_metadata(self) -> dict[str, str]:
        """The entries every kind carries (all but ``smrl.kind``, ``smrl.latent_dim`` and the
        hash), as ``metadata_props`` strings; ``episode_length`` 0 and an empty ``urdf``,
        ``ee_link`` or ``home`` leave their entry out."""
        return {
            "smrl.format": FORMAT,
            "smrl.format_version": FORMAT_VERSION,
            "smrl.version": smrl_train.__version__,
            "smrl.joint_names": json.dumps(list(self.joint_names)),
            "smrl.observation_layout": json.dumps([[n, k] for n, k in self.observation_layout]),
            "smrl.action_type": ACTION_ABSOLUTE,
            "smrl.action_output": ACTION_OUTPUT,
            "smrl.action_scale": _json_floats(self.max_step),
            "smrl.joint_lower": _json_floats(self.lower),
            "smrl.joint_upper": _json_floats(self.upper),
            "smrl.joint_velocity": _json_floats(self.velocity),
            "smrl.control_hz": repr(float(self.control_hz)),
            "smrl.arm": self.arm,
            "smrl.urdf_sha256": self.urdf_sha256,
            "smrl.task_family": self.task_family,
            **({"smrl.episode_length": str(int(self.episode_length))} if self.episode_length > 0 else {}),
            **({"smrl.urdf": self.urdf} if self.urdf else {}),
            **({"smrl.ee_link": self.ee_link} if self.ee_link else {}),
            **({"smrl.home": _json_floats(self.home)} if self.home else {}),
        }


def kind_metadata(kind: str | None = None, latent_dim: int | None = None, z: Any = None,
                  context_layout: Sequence[tuple[str, int]] | None = None) -> dict[str, str]:
    """The entries that depend on the model's kind, as strings: those given, and only those."""
    meta = {}
    if kind is not None:
        meta["smrl.kind"] = kind
    if latent_dim is not None:
        meta["smrl.latent_dim"] = str(latent_dim)
    if z is not None:
        meta["smrl.z"] = _json_floats(z)
    if context_layout is not None:
        meta["smrl.context_layout"] = json.dumps([[n, k] for n, k in context_layout])
    return meta


@dataclass(frozen=True, kw_only=True)
class ModelInfo(DeploymentSpec):
    """The parsed ``smrl.*`` metadata of a model: its :class:`DeploymentSpec`, what kind of
    model it is, and where it came from (``metadata``: every entry, as read)."""

    kind: str
    version: str
    model_hash: str
    action_type: str
    action_output: str
    latent_dim: int
    z: tuple[float, ...] | None = None
    metadata: dict[str, str] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (for logs and ``smrl export check``)."""
        return {
            "kind": self.kind, "smrl_version": self.version, "model_hash": self.model_hash,
            "arm": self.arm, "urdf_sha256": self.urdf_sha256, "task_family": self.task_family,
            "joint_names": list(self.joint_names),
            "observation_layout": [list(b) for b in self.observation_layout],
            "action_type": self.action_type, "action_output": self.action_output,
            "action_scale": self.max_step.tolist(), "control_hz": self.control_hz,
            "latent_dim": self.latent_dim, "z": list(self.z) if self.z is not None else None,
            "episode_length": self.episode_length or None,
            "urdf": self.urdf or None, "ee_link": self.ee_link or None, "home": list(self.home) or None,
        }


def _json(meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise ModelError(f"metadata {key} is not valid JSON: {meta[key]!r}") from None


def _floats(meta: dict[str, str], key: str, n: int) -> np.ndarray:
    value = _json(meta, key)
    if not isinstance(value, list) or len(value) != n or not all(isinstance(v, (int, float)) for v in value):
        raise ModelError(f"metadata {key}: expected {n} numbers (one per joint), got {meta[key]}")
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"metadata {key}: non-finite value in {meta[key]}")
    return arr


def parse_metadata(meta: dict[str, str]) -> ModelInfo:
    """``smrl.*`` metadata -> :class:`ModelInfo`; raises :class:`ModelError` naming the key."""
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ModelError(f"metadata is missing {', '.join(missing)} (not an smrl export?)")
    if meta["smrl.format"] != FORMAT or meta["smrl.format_version"] != FORMAT_VERSION:
        raise ModelError(f"metadata format {meta['smrl.format']} v{meta['smrl.format_version']}, "
                         f"expected {FORMAT} v{FORMAT_VERSION}")
    if meta["smrl.kind"] not in KINDS:
        raise ModelError(f"metadata smrl.kind {meta['smrl.kind']!r} is not one of {', '.join(KINDS)}")
    names = _json(meta, "smrl.joint_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names):
        raise ModelError(f"metadata smrl.joint_names: expected unique joint names, got {meta['smrl.joint_names']}")
    layout = _json(meta, "smrl.observation_layout")
    if not isinstance(layout, list) or not all(
            isinstance(b, list) and len(b) == 2 and isinstance(b[0], str) and isinstance(b[1], int) and b[1] > 0
            for b in layout):
        raise ModelError(f"metadata smrl.observation_layout: expected [[name, size], ...], got "
                         f"{meta['smrl.observation_layout']}")
    if meta["smrl.action_type"] != ACTION_ABSOLUTE or meta["smrl.action_output"] != ACTION_OUTPUT:
        raise ModelError(f"metadata smrl.action_type {meta['smrl.action_type']!r} via "
                         f"{meta['smrl.action_output']!r}: this runtime needs {ACTION_ABSOLUTE} via {ACTION_OUTPUT}")
    n = len(names)
    try:
        control_hz = float(meta["smrl.control_hz"])
        latent_dim = int(meta["smrl.latent_dim"])
    except ValueError:
        raise ModelError("metadata smrl.control_hz / smrl.latent_dim are not numbers") from None
    if not (np.isfinite(control_hz) and control_hz > 0) or latent_dim <= 0:
        raise ModelError(f"metadata: control_hz {control_hz} and latent_dim {latent_dim} must be > 0")
    z = None
    if "smrl.z" in meta:
        z = tuple(float(v) for v in _floats(meta, "smrl.z", latent_dim))
    episode_length = 0
    if "smrl.episode_length" in meta:
        text = meta["smrl.episode_length"]
        if not text.isdigit() or int(text) < 1:
            raise ModelError(f"metadata smrl.episode_length {text!r} is not a positive integer")
        episode_length = int(text)
    home = tuple(float(v) for v in _floats(meta, "smrl.home", n)) if "smrl.home" in meta else ()
    return ModelInfo(
        kind=meta["smrl.kind"], version=meta["smrl.version"], model_hash=meta["smrl.model_hash"],
        joint_names=tuple(names), observation_layout=tuple((str(a), int(b)) for a, b in layout),
        action_type=meta["smrl.action_type"], action_output=meta["smrl.action_output"],
        max_step=_floats(meta, "smrl.action_scale", n), lower=_floats(meta, "smrl.joint_lower", n),
        upper=_floats(meta, "smrl.joint_upper", n), velocity=_floats(meta, "smrl.joint_velocity", n),
        control_hz=control_hz, arm=meta["smrl.arm"], urdf_sha256=meta["smrl.urdf_sha256"],
        task_family=meta["smrl.task_family"], latent_dim=latent_dim, z=z,
        episode_length=episode_length, urdf=meta.get("smrl.urdf", ""), ee_link=meta.get("smrl.ee_link", ""),
        home=home, metadata=dict(meta),
    )
