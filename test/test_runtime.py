"""The robot-side loader refuses bad models with a clear error, and never needs torch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from smrl_train.export.onnx_export import export_adapted_policy, spec_from_env
from smrl_train.robot.model_metadata import KIND_LATENT, DeploymentSpec, ModelError, kind_metadata, parse_metadata
from smrl_train.robot.runtime import (
    PolicyRuntime,
    compatibility_errors,
    load_model,
    read_model,
    set_metadata,
)
from smrl_train.sim.envs import ArmTaskEnv

from conftest import REPO, small_config
from standin_policy import JointGoalPolicy


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    env = ArmTaskEnv(small_config("reach"))
    spec = spec_from_env(env)
    path = tmp_path_factory.mktemp("models") / "good.onnx"
    export_adapted_policy(JointGoalPolicy(spec.obs_dim, spec.n_joints), env.sim.home, spec, path)
    return path


def rewrite(good: Path, out: Path, mutate: Callable[[onnx.ModelProto], None], rehash: bool = True) -> Path:
    """A copy of the good model changed by ``mutate``; re-hashed unless told otherwise, so
    each case trips exactly the check it is about."""
    model = onnx.load(str(good))
    mutate(model)
    if rehash:
        set_metadata(model, {p.key: p.value for p in model.metadata_props})
    out.write_bytes(model.SerializeToString())
    return out


def set_meta(key: str, value: str | None) -> Callable[[onnx.ModelProto], None]:
    def mutate(model: onnx.ModelProto) -> None:
        meta = {p.key: p.value for p in model.metadata_props}
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
        del model.metadata_props[:]
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
    return mutate


def rename_input(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        node.input[:] = ["observation" if i == "obs" else i for i in node.input]
    model.graph.input[0].name = "observation"


def double_input(model: onnx.ModelProto) -> None:
    # A Cast in front keeps the graph valid while the declared input dtype changes.
    for node in model.graph.node:
        node.input[:] = ["obs_f32" if i == "obs" else i for i in node.input]
    model.graph.node.insert(0, helper.make_node("Cast", ["obs"], ["obs_f32"], to=TensorProto.FLOAT))
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE


def widen_obs(model: onnx.ModelProto) -> None:
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 99


def tamper_weight(model: onnx.ModelProto) -> None:
    init = model.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))


def external_data(model: onnx.ModelProto) -> None:
    init = model.graph.initializer[0]
    init.data_location = TensorProto.EXTERNAL
    init.external_data.add(key="location", value="../../etc/passwd")
    init.ClearField("raw_data")


def test_the_schema_reads_back_the_deployment_spec_it_writes() -> None:
    """One schema: what DeploymentSpec.as_metadata() writes, parse_metadata reads back as the same
    spec (a ModelInfo is one), with episode length 0 meaning "not recorded" both ways."""
    spec = spec_from_env(ArmTaskEnv(small_config("reach")))
    for length in (spec.episode_length, 0):
        written = DeploymentSpec(**{**vars(spec), "episode_length": length})
        meta = {**written.as_metadata(), **kind_metadata(KIND_LATENT, latent_dim=3), "smrl.model_hash": "0"}
        info = parse_metadata(meta)
        assert isinstance(info, DeploymentSpec) and info.kind == KIND_LATENT and info.latent_dim == 3
        assert ("smrl.episode_length" in meta) == (length > 0)
        for name, value in vars(written).items():
            np.testing.assert_array_equal(getattr(info, name), value, err_msg=name)
    # The arm as the config names it: the package's URDF relative to the package, ee link, home.
    assert (spec.urdf, spec.ee_link, spec.home) == ("urdf/smrl_arm.urdf", "ee_link", (0.0, 0.3, 1.3, 1.2, 0.0))
    older = {k: v for k, v in {**spec.as_metadata(), **kind_metadata(KIND_LATENT, latent_dim=3),
                               "smrl.model_hash": "0"}.items() if k not in ("smrl.urdf", "smrl.ee_link", "smrl.home")}
    assert (parse_metadata(older).urdf, parse_metadata(older).ee_link, parse_metadata(older).home) == ("", "", ())


CASES = [
    ("junk", None, "not an ONNX model"),
    ("no_metadata", lambda m: m.ClearField("metadata_props"), "metadata is missing"),
    ("missing_joint_names", set_meta("smrl.joint_names", None), "metadata is missing smrl.joint_names"),
    ("bad_json", set_meta("smrl.observation_layout", "[[joint_pos"), "smrl.observation_layout is not valid JSON"),
    ("duplicate_joints", set_meta("smrl.joint_names", '["a", "a", "b", "c", "d"]'), "unique joint names"),
    ("bad_home", set_meta("smrl.home", "[0.0, 0.3]"), "smrl.home: expected 5 numbers"),
    ("short_scale", set_meta("smrl.action_scale", "[0.1, 0.1]"), "smrl.action_scale: expected 5 numbers"),
    ("delta_action", set_meta("smrl.action_type", "joint_position_delta"), "needs joint_position_absolute"),
    ("wrong_kind", set_meta("smrl.kind", "encoder"), "is a encoder model, expected adapted_policy"),
    ("layout_vs_graph", set_meta("smrl.observation_layout", '[["joint_pos", 5], ["joint_vel", 5]]'),
     "input 'obs' axis 1 is 13, expected 10"),
    ("renamed_input", rename_input, "inputs are ['observation'], expected ['obs']"),
    ("double_input", double_input, "input 'obs' has dtype DOUBLE, expected FLOAT"),
    ("wrong_shape", widen_obs, "input 'obs' axis 1 is 99, expected 13"),
    ("broken_graph", lambda m: m.graph.node[0].input.append("undefined_tensor"), "fails the ONNX checker"),
]


@pytest.mark.parametrize(("name", "mutate", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_models_are_refused_naming_the_problem(good: Path, tmp_path: Path, name, mutate, message) -> None:
    if mutate is None:
        path = tmp_path / "junk.onnx"
        path.write_bytes(b"\x00not a model at all" * 10)
    else:
        path = rewrite(good, tmp_path / f"{name}.onnx", mutate)
    with pytest.raises(ModelError) as err:
        PolicyRuntime(path)
    assert message in str(err.value), str(err.value)
    assert str(path) in str(err.value)


def test_a_tampered_weight_fails_the_hash(good: Path, tmp_path: Path) -> None:
    path = rewrite(good, tmp_path / "tampered.onnx", tamper_weight, rehash=False)
    with pytest.raises(ModelError, match="model_hash does not match"):
        read_model(path)


def test_an_edited_joint_order_fails_the_hash(good: Path, tmp_path: Path) -> None:
    """Issue 15, defect 9: the hash covers the metadata, so a model whose joint order was edited
    (the controller maps joints by name, so the edit alone would start) is refused."""
    def swap_joints(model: onnx.ModelProto) -> None:
        for p in model.metadata_props:
            if p.key == "smrl.joint_names":
                names = json.loads(p.value)
                p.value = json.dumps([names[1], names[0], *names[2:]])
    path = rewrite(good, tmp_path / "swapped.onnx", swap_joints, rehash=False)
    with pytest.raises(ModelError, match="model_hash does not match the graph and metadata"):
        read_model(path)


def test_external_data_is_refused(good: Path, tmp_path: Path) -> None:
    path = rewrite(good, tmp_path / "external.onnx", external_data, rehash=False)
    with pytest.raises(ModelError, match="external data"):
        read_model(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "nope.onnx")


def test_session_uses_one_thread_each(good: Path) -> None:
    opts = load_model(good).session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1


def test_act_is_deterministic_and_checks_the_observation_shape(good: Path) -> None:
    runtime = PolicyRuntime(good)
    obs = np.linspace(-1, 1, runtime.info.obs_dim).astype(np.float32)
    assert np.array_equal(runtime.act(obs), runtime.act(obs))
    with pytest.raises(ValueError):
        runtime.act(np.zeros(3, dtype=np.float32))


def test_compatibility_errors_name_each_mismatch(good: Path) -> None:
    info = read_model(good)[1]
    assert compatibility_errors(info, info.joint_names, info.observation_layout) == []
    errors = compatibility_errors(info, ["j1", "j2"], [("joint_pos", 2)], task_family="push", urdf_sha256="0" * 64)
    assert [e.split(":")[0] for e in errors] == ["joint names", "observation layout", "task family", "URDF"]


def test_robot_side_nodes_never_import_torch_or_mujoco() -> None:
    # The smrl_train.robot package itself is checked module by module in test_architecture.py.
    code = ("import sys\n"
            "import smrl_ros.controller_node, smrl_ros.explorer_node, smrl_ros.adapter_node\n"
            "print(','.join(sorted(m for m in ('torch', 'mujoco', 'gymnasium') if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"robot-side imports pulled in: {out.stdout}"
