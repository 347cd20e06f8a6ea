"""Robot-side inference on exported ONNX models: numpy + onnx + onnxruntime, never torch.

Loading checks a model before anything runs it and refuses a bad one with a
:class:`ModelError` that names what is wrong:

1. the file is a single-file ONNX model (no external data: a model must not make the loader
   read other paths) that passes ``onnx.checker.check_model(full_check=True)``;
2. every metadata key of :data:`~smrl_train.robot.model_metadata.REQUIRED_METADATA` is present and parses
   (:func:`~smrl_train.robot.model_metadata.parse_metadata`); the kind is the
   expected one; ``smrl.model_hash`` matches the graph and the metadata (a corrupted or edited file fails);
3. input and output names, dtypes (float32) and shapes match the kind's contract and the
   metadata (observation size, number of joints, latent size), both in the ONNX graph and in
   the session onnxruntime builds from it.

:class:`PolicyRuntime` runs the adapted policy with one intra-op and one inter-op thread
(a control loop must not fan out over cores it shares with the executor), warmed up at load.
:class:`EncoderRuntime` and :class:`LatentPolicyRuntime` run the adaptation bundle, and
:func:`bake_latent` turns ``policy.onnx`` plus an inferred z into an adapted policy, so a robot
adapts without torch. Shapes: see :mod:`smrl_train.export.onnx_export`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from smrl_train.robot.model_metadata import (
    KIND_ADAPTED,
    KIND_ENCODER,
    KIND_LATENT,
    ModelError,
    ModelInfo,
    kind_metadata,
    parse_metadata,
)


def _digest(graph: onnx.GraphProto, metadata: dict[str, str]) -> str:
    digest = hashlib.sha256(graph.SerializeToString(deterministic=True))
    digest.update(json.dumps({k: v for k, v in metadata.items() if k != "smrl.model_hash"}, sort_keys=True).encode())
    return digest.hexdigest()


def model_hash(model: onnx.ModelProto) -> str:
    """SHA-256 of the serialised graph (weights and ops) and of every metadata entry but the
    hash itself (sorted JSON): an edit of either, e.g. of the joint order, fails the load."""
    return _digest(model.graph, {p.key: p.value for p in model.metadata_props})


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace the model's metadata by ``metadata`` plus its ``smrl.model_hash``, sorted by key."""
    entries = {**metadata, "smrl.model_hash": _digest(model.graph, metadata)}
    del model.metadata_props[:]
    for key, value in sorted(entries.items()):
        model.metadata_props.add(key=key, value=value)


def _io_contract(info: ModelInfo) -> tuple[list[tuple[str, list[int | None]]], list[tuple[str, list[int | None]]]]:
    """Expected (name, shape) of inputs and outputs; None marks a dynamic axis."""
    n, obs, lat = info.n_joints, info.obs_dim, info.latent_dim
    policy_out: list[tuple[str, list[int | None]]] = [("action", [None, n]), ("joint_targets", [None, n])]
    if info.kind == KIND_ADAPTED:
        return [("obs", [None, obs])], policy_out
    if info.kind == KIND_LATENT:
        return [("obs", [None, obs]), ("z", [None, lat]), ("noise", [None, n])], policy_out
    return [("context", [None, None, obs + n + 1])], [("mean", [None, lat]), ("var", [None, lat])]


def _graph_shape(value: onnx.ValueInfoProto) -> tuple[int, list[int | None]]:
    t = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return t.elem_type, dims


def _check_io(kind_io: list[tuple[str, list[int | None]]], actual: list[tuple[str, int, list[Any]]],
              what: str) -> None:
    names = [a[0] for a in actual]
    want = [k[0] for k in kind_io]
    if names != want:
        raise ModelError(f"{what} are {names}, expected {want}")
    for (name, shape), (_, dtype, dims) in zip(kind_io, actual, strict=True):
        if dtype != TensorProto.FLOAT:
            raise ModelError(f"{what[:-1]} '{name}' has dtype {TensorProto.DataType.Name(dtype)}, expected FLOAT")
        if len(dims) != len(shape):
            raise ModelError(f"{what[:-1]} '{name}' has rank {len(dims)}, expected shape {shape}")
        for i, (d, w) in enumerate(zip(dims, shape, strict=True)):
            # A dynamic axis in the contract accepts anything; a fixed one must match exactly.
            if w is not None and d != w:
                raise ModelError(f"{what[:-1]} '{name}' axis {i} is {d}, expected {w} (shape {shape})")


def read_model(path: str | Path, kind: str | None = None) -> tuple[onnx.ModelProto, ModelInfo]:
    """Load, check and describe the model at ``path`` (see the module docstring).

    Args:
        kind: the expected ``smrl.kind`` (None: any).
    Raises:
        ModelError: naming the first problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for junk input
        raise ModelError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            raise ModelError(f"{path}: tensor '{init.name}' uses external data; only single-file models load")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - checker and shape-inference errors
        raise ModelError(f"{path}: fails the ONNX checker: {exc}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        info = parse_metadata(meta)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    if kind is not None and info.kind != kind:
        raise ModelError(f"{path}: is a {info.kind} model, expected {kind}")
    if model_hash(model) != info.model_hash:
        raise ModelError(f"{path}: smrl.model_hash does not match the graph and metadata (corrupted or edited file)")
    if info.observation_layout[0] != ("joint_pos", info.n_joints):
        raise ModelError(f"{path}: observation layout must start with joint_pos[{info.n_joints}]")
    inputs, outputs = _io_contract(info)
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]
    try:
        _check_io(inputs, [(v.name, *_graph_shape(v)) for v in graph_inputs], "inputs")
        _check_io(outputs, [(v.name, *_graph_shape(v)) for v in model.graph.output], "outputs")
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    return model, info


_ORT_TYPES = {"tensor(float)": TensorProto.FLOAT, "tensor(double)": TensorProto.DOUBLE,
              "tensor(int64)": TensorProto.INT64}


def make_session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime CPU session with ``threads`` intra-op and 1 inter-op thread."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Fatal only: a failing model would print an error on every tick; the node reports the
    # failure itself, once per hold.
    opts.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                providers=["CPUExecutionProvider"])


@dataclass
class LoadedModel:
    """A checked model: its metadata and an onnxruntime session for it."""

    path: Path
    info: ModelInfo
    session: ort.InferenceSession


def load_model(path: str | Path, kind: str | None = None, threads: int = 1) -> LoadedModel:
    """:func:`read_model`, then a session whose inputs/outputs are checked again (as ORT sees them)."""
    model, info = read_model(path, kind)
    try:
        session = make_session(model, threads)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise ModelError(f"{path}: onnxruntime cannot load it: {exc}") from None
    inputs, outputs = _io_contract(info)

    def seen(args: Sequence[Any]) -> list[tuple[str, int, list[Any]]]:
        return [(a.name, _ORT_TYPES.get(a.type, -1),
                 [d if isinstance(d, int) else None for d in a.shape]) for a in args]

    try:
        _check_io(inputs, seen(session.get_inputs()), "inputs")
        _check_io(outputs, seen(session.get_outputs()), "outputs")
    except ModelError as exc:
        raise ModelError(f"{path}: {exc} (onnxruntime session)") from None
    return LoadedModel(Path(path), info, session)


def compatibility_errors(info: ModelInfo, joint_names: Sequence[str],
                         observation_layout: Sequence[tuple[str, int]], task_family: str | None = None,
                         urdf_sha256: str | None = None) -> list[str]:
    """Why a model does not fit a robot (empty when it fits); each entry names the mismatch."""
    errors = []
    if tuple(joint_names) != info.joint_names:
        errors.append(f"joint names: model {list(info.joint_names)} != robot {list(joint_names)}")
    layout = tuple((str(n), int(k)) for n, k in observation_layout)
    if layout != info.observation_layout:
        errors.append(f"observation layout: model {[list(b) for b in info.observation_layout]} "
                      f"!= robot {[list(b) for b in layout]}")
    if task_family is not None and task_family != info.task_family:
        errors.append(f"task family: model {info.task_family} != robot {task_family}")
    if urdf_sha256 is not None and urdf_sha256 != info.urdf_sha256:
        errors.append(f"URDF: model trained on {info.arm} sha256 {info.urdf_sha256[:12]}..., "
                      f"robot URDF sha256 {urdf_sha256[:12]}...")
    return errors


# ---------------------------------------------------------------------------------------
# Runtimes


class PolicyRuntime:
    """The adapted policy: ``act(obs (obs_dim,)) -> joint targets (n,)``.

    Args:
        path: an ``adapted_policy`` ONNX file.
        warmup: inference runs at load so the first control tick is not the slow one.
    """

    def __init__(self, path: str | Path, warmup: int = 50) -> None:
        self.model = load_model(path, KIND_ADAPTED)
        self.info = self.model.info
        self._session = self.model.session
        self._obs = np.zeros((1, self.info.obs_dim), dtype=np.float32)
        self._outputs = ["action", "joint_targets"]
        for _ in range(warmup):
            self.act_full(self._obs[0])

    def act_full(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """obs (obs_dim,) -> normalised action (n,) float32, joint targets (n,) float64."""
        self._obs[0] = obs  # raises on a wrong shape; casts to float32
        action, targets = self._session.run(self._outputs, {"obs": self._obs})
        return action[0], targets[0].astype(np.float64)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """obs (obs_dim,) -> absolute joint targets (n,) float64, in ``info.joint_names`` order."""
        return self.act_full(obs)[1]


class LatentPolicyRuntime:
    """The bundle's policy: ``act(obs (obs_dim,), z (L,), noise (n,) | None) -> (action (n,),
    targets (n,))``; action = tanh(mean + std * noise), deterministic tanh(mean) without noise."""

    def __init__(self, path: str | Path, warmup: int = 20) -> None:
        self.model = load_model(path, KIND_LATENT)
        self.info = self.model.info
        self._session = self.model.session
        self._obs = np.zeros((1, self.info.obs_dim), dtype=np.float32)
        self._z = np.zeros((1, self.info.latent_dim), dtype=np.float32)
        self._zero_noise = np.zeros((1, self.info.n_joints), dtype=np.float32)
        self._noise = np.zeros((1, self.info.n_joints), dtype=np.float32)
        for _ in range(warmup):
            self.act(self._obs[0], self._z[0])

    def act(self, obs: np.ndarray, z: np.ndarray, noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        self._obs[0] = obs
        self._z[0] = z
        feed_noise = self._zero_noise
        if noise is not None:
            self._noise[0] = noise
            feed_noise = self._noise
        action, targets = self._session.run(["action", "joint_targets"],
                                            {"obs": self._obs, "z": self._z, "noise": feed_noise})
        return action[0], targets[0].astype(np.float64)


class EncoderRuntime:
    """The bundle's encoder: ``posterior(context (C, D)) -> mean (L,), var (L,)``, with rows of
    (s, a, r), D = obs_dim + n + 1, or (s, a, r, s'), D = 2 obs_dim + n + 1 (``next_obs``): the
    graph's input width says which."""

    def __init__(self, path: str | Path) -> None:
        self.model = load_model(path, KIND_ENCODER)
        self.info = self.model.info
        base = self.info.obs_dim + self.info.n_joints + 1
        width = self.model.session.get_inputs()[0].shape[-1]
        self.context_dim = int(width) if isinstance(width, int) else base
        if self.context_dim not in (base, base + self.info.obs_dim):
            raise ModelError(f"{path}: encoder context width {self.context_dim} is neither (s, a, r) ({base}) nor "
                             f"(s, a, r, s') ({base + self.info.obs_dim})")
        self.next_obs = self.context_dim > base

    def posterior(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        context = np.asarray(context, dtype=np.float32)
        if context.ndim != 2 or context.shape[1] != self.context_dim or len(context) == 0:
            raise ValueError(f"context must be (C > 0, {self.context_dim}) rows of (s, a, r), got {context.shape}")
        if not np.all(np.isfinite(context)):
            raise ValueError("context has non-finite values")
        mean, var = self.model.session.run(["mean", "var"], {"context": context[None]})
        return mean[0].astype(np.float64), var[0].astype(np.float64)


def bake_latent(latent_policy: str | Path, z: np.ndarray, out: str | Path) -> Path:
    """Write an ``adapted_policy`` from a bundle's ``policy.onnx`` with ``z`` (L,) fixed.

    The ``z`` input becomes a constant broadcast to the batch, the kind and hash are updated,
    and the result is re-read through :func:`read_model`. Torch-free (the adapter node's path).
    """
    model, info = read_model(latent_policy, KIND_LATENT)
    z = np.asarray(z, dtype=np.float32).reshape(-1)
    if z.shape != (info.latent_dim,) or not np.all(np.isfinite(z)):
        raise ValueError(f"z must be {info.latent_dim} finite values, got {z}")
    graph = model.graph
    for name in ("z", "noise"):
        graph.input.remove(next(v for v in graph.input if v.name == name))
    graph.initializer.extend([
        onnx.numpy_helper.from_array(z[None], "smrl_z_value"),
        onnx.numpy_helper.from_array(np.zeros((1, info.n_joints), np.float32), "smrl_noise_value"),
        onnx.numpy_helper.from_array(np.array([0], dtype=np.int64), "smrl_z_axis0"),
        onnx.numpy_helper.from_array(np.array([info.latent_dim], dtype=np.int64), "smrl_z_width"),
        onnx.numpy_helper.from_array(np.array([info.n_joints], dtype=np.int64), "smrl_noise_width"),
    ])
    # z = Expand(z_value, [batch(obs), L]) and noise = 0 (the deterministic policy) likewise:
    # the graph keeps its dynamic batch axis.
    nodes = [
        helper.make_node("Shape", ["obs"], ["smrl_obs_shape"]),
        helper.make_node("Gather", ["smrl_obs_shape", "smrl_z_axis0"], ["smrl_batch"], axis=0),
        helper.make_node("Concat", ["smrl_batch", "smrl_z_width"], ["smrl_z_shape"], axis=0),
        helper.make_node("Expand", ["smrl_z_value", "smrl_z_shape"], ["z"]),
        helper.make_node("Concat", ["smrl_batch", "smrl_noise_width"], ["smrl_noise_shape"], axis=0),
        helper.make_node("Expand", ["smrl_noise_value", "smrl_noise_shape"], ["noise"]),
    ]
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(kind_metadata(KIND_ADAPTED, z=z))
    set_metadata(model, meta)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(out)  # atomic: the controller may be watching this path
    read_model(out, KIND_ADAPTED)
    return out
