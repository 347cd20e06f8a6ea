"""Checkpoints: one safetensors file, written atomically, loaded without unpickling.

A training state is a nested structure of dicts/lists holding tensors (weights, Adam moments,
generator states) and plain values (step counters, config, Adam hyper-parameters). It is
split into flat tensors, stored as safetensors, and a JSON *skeleton* stored in the same
file's metadata (so the two can never disagree), where every tensor is replaced by its key.
A human-readable ``checkpoint.json`` beside it repeats the metadata.

Files are written to a temporary name, fsynced and renamed (``atomic_write_bytes``), so a
kill leaves the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from smrl_train.data.store import atomic_write_bytes

CHECKPOINT = "checkpoint.safetensors"
FORMAT = "smrl-smac-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or of another format (names the file)."""


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into ``{key: tensor}`` and a JSON-able skeleton."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().to("cpu", copy=True).contiguous()  # device-independent file
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[k, walk(v, f"{path}/{k}")] for k, v in obj.items()]}
        if isinstance(obj, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {path or '/'}")

    skeleton = walk(state, prefix)
    return tensors, skeleton


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`flatten_state` (dict keys keep their int/str type)."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: unflatten_state(tensors, v) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(tensors, v) for v in skeleton["__tuple__"])
    if isinstance(skeleton, list):
        return [unflatten_state(tensors, v) for v in skeleton]
    return skeleton


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Atomically write ``state`` (nested tensors/values) and ``meta`` (plain JSON) to the run dir."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors, skeleton = flatten_state(state)
    header = {"format": FORMAT, "version": VERSION, "meta": meta, "state": skeleton}
    payload = st_save(tensors, metadata={"smrl": json.dumps(header, sort_keys=True)})
    path = run_dir / CHECKPOINT
    atomic_write_bytes(path, payload)
    atomic_write_bytes(run_dir / "checkpoint.json", (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``(state, meta)`` from a checkpoint file or a run directory holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})["smrl"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, KeyError, json.JSONDecodeError, Exception) as exc:  # safetensors raises its own types
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{path}: not a {FORMAT} v{VERSION} file")
    return unflatten_state(tensors, header["state"]), header["meta"]


def read_meta(path: str | Path) -> dict[str, Any]:
    """Only the metadata of a checkpoint (cheap: no tensors are read)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["smrl"])["meta"]
    except Exception as exc:  # noqa: BLE001 - any read failure is a bad checkpoint
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
