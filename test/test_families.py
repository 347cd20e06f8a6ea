"""External task families: the registry (names, import paths, entry points, options), the
success metric of the protocol, random baselines from the action space, and the store schema
without robot fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from smrl_train.cli import main
from smrl_train.config import EnvConfig, SmrlConfig, TasksConfig
from smrl_train.config_loader import load_config
from smrl_train.config_schema import ConfigError
from smrl_train.data.generate import generate_dataset
from smrl_train.data.store import EpisodeStore, StoreError
from smrl_train.families import ENTRY_POINT_GROUP, resolve_family
from smrl_train.families.example import PointDirectionEnv
from smrl_train.families.factory import family_env, make_env
from smrl_train.sim.tasks import Task

from conftest import small_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "smrl_train.families.example:PointDirectionEnv"


class BlinkEnv(PointDirectionEnv):
    """Succeeds at step 2 only, moves inside a small action box: the metric and bounds probe."""

    success_metric = "any"

    def __init__(self, max_steps: int = 5) -> None:
        super().__init__(max_steps)
        self.action_space = gym.spaces.Box(0.0, 0.5, shape=(2,), dtype=np.float32)
        self.actions: list[np.ndarray] = []

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.actions.append(np.asarray(action))
        obs, reward, term, trunc, _ = super().step(action)
        return obs, reward, term, trunc, {"success": self.t == 2}


class NoHookEnv(BlinkEnv):
    expert_policy = None  # type: ignore[assignment]


def family_config(family: str = EXAMPLE, **env: object) -> SmrlConfig:
    return SmrlConfig(env=EnvConfig(family=family, episode_length=5, **env))  # type: ignore[arg-type]


def test_family_names_resolve_to_ours_an_import_path_or_an_entry_point(tmp_path, monkeypatch):
    assert resolve_family("reach").is_arm and resolve_family("push").is_arm
    assert resolve_family(EXAMPLE).factory is PointDirectionEnv
    # An installed package's entry point: a real dist-info on sys.path.
    dist = tmp_path / "my_suite-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my_suite\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\npoint = {EXAMPLE}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_family("point").factory is PointDirectionEnv


@pytest.mark.parametrize("family, says", [
    ("reech", "unknown family 'reech' (known: reach, push"),
    ("no_such_pkg.envs:Family", "cannot import 'no_such_pkg.envs:Family'"),
    ("smrl_train.families.example:Nope", "module 'smrl_train.families.example' has no 'Nope'"),
    ("smrl_train.families.example:", "expected an import path"),
])
def test_unknown_families_are_one_line_errors_naming_the_key(family, says):
    with pytest.raises(ConfigError) as err:
        EnvConfig(family=family)
    assert str(err.value).startswith("env.family: ") and says in str(err.value) and "\n" not in str(err.value)


def test_options_reach_the_family_and_are_refused_by_ours():
    env = make_env(family_config(options={"max_steps": 3}))
    env.unwrapped.set_task(Task("point", 0, (1.0, 0.0)))
    env.reset(seed=0)
    assert [env.step(np.ones(2, np.float32))[3] for _ in range(3)] == [False, False, True]
    with pytest.raises(ConfigError, match="env.options: the reach family takes none"):
        EnvConfig(family="reach", options={"max_steps": 3})
    with pytest.raises(ConfigError, match="env.options: .* refuses"):
        family_env(family_config(options={"steps": 3}))


def test_example_config_loads_without_an_arm_check():
    cfg = load_config(REPO / "config" / "example_family.yaml")
    assert cfg.env.family == EXAMPLE and isinstance(family_env(cfg), PointDirectionEnv)


def test_success_metric_last_or_any_and_the_family_default():
    from smrl_train.smac.config import EvalConfig, smac_from_yaml_dict
    from smrl_train.smac.evaluation import random_policy_baseline, success_metric

    env = gym.wrappers.TimeLimit(BlinkEnv(), 5)
    tasks = env.unwrapped.sample_tasks(3, 0)
    assert success_metric(env, EvalConfig()) == "any"  # the family's own
    assert success_metric(env, EvalConfig(success="last")) == "last"
    assert success_metric(gym.wrappers.TimeLimit(PointDirectionEnv(), 5), EvalConfig()) == "last"
    assert random_policy_baseline(env, tasks, 0, 5, "any")["success_rate"] == 1.0
    assert random_policy_baseline(env, tasks, 0, 5, "last")["success_rate"] == 0.0
    with pytest.raises(ConfigError, match="smac.eval.success: expected 'last' or 'any', got 'sometimes'"):
        smac_from_yaml_dict({"eval": {"success": "sometimes"}})


def test_random_baseline_samples_the_action_space_seeded():
    from smrl_train.smac.evaluation import random_policy_baseline

    runs = []
    for _ in range(2):
        env = gym.wrappers.TimeLimit(BlinkEnv(), 5)
        random_policy_baseline(env, env.unwrapped.sample_tasks(2, 0), 7, 5)
        runs.append(np.array(env.unwrapped.actions))
    assert runs[0].min() >= 0.0 and runs[0].max() <= 0.5 and runs[0].std() > 0.05
    np.testing.assert_array_equal(runs[0], runs[1])


def test_external_store_has_no_robot_fields_and_an_arm_store_still_needs_them(tmp_path):
    cfg = family_config(options={"max_steps": 5})
    store = generate_dataset(cfg, tmp_path / "point", progress=False)
    m = store.manifest
    assert m["family"] == EXAMPLE and m["action"] == {"type": "box", "bounds": [-1.0, 1.0]}
    assert not {"joint_names", "control_hz", "arm"} & set(m) and "arm" not in m["config"]
    ep = next(EpisodeStore.open(tmp_path / "point").iter_episodes())
    assert "timestamp" not in ep.arrays and len(ep) == 5
    # Same seed, same bytes.
    again = generate_dataset(cfg, tmp_path / "again", progress=False)
    assert [p.read_bytes() for p in store.episode_paths()] == [p.read_bytes() for p in again.episode_paths()]

    arm = generate_dataset(small_config("reach", n_train=1, n_test=1, episode_length=5), tmp_path / "arm",
                           progress=False).manifest
    arm.pop("joint_names")
    with pytest.raises(StoreError, match="manifest is missing joint_names"):
        EpisodeStore.create(tmp_path / "arm2", arm)


def test_scripted_behaviours_need_the_family_hook(tmp_path):
    cfg = family_config(family=f"{__name__}:NoHookEnv")
    with pytest.raises(ConfigError, match="data.behaviours: .*NoHookEnv has no expert_policy"):
        generate_dataset(cfg, tmp_path / "d", progress=False)
    only_random = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, behaviours=(dataclasses.replace(cfg.data.behaviours[-1], kind="random"),)))
    store = generate_dataset(only_random, tmp_path / "d", progress=False)
    actions = np.concatenate([e.arrays["action"] for e in store.iter_episodes()])
    assert actions.min() >= 0.0 and actions.max() <= 0.5  # the family's action box


def test_actions_outside_minus_one_one_are_refused():
    with pytest.raises(ConfigError, match="env.family: .* needs a bounded Box inside \\[-1, 1\\]"):
        family_env(family_config(family=f"{__name__}:WideEnv"))


class WideEnv(PointDirectionEnv):
    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Box(-2.0, 2.0, shape=(2,), dtype=np.float32)




def test_films_and_renders_are_refused_in_one_line_for_a_family_without_our_scene(tmp_path, capsys):
    config = tmp_path / "point.yaml"
    config.write_text(yaml.safe_dump({"env": {"family": EXAMPLE, "episode_length": 5},
                                      "tasks": {"n_train": 1, "n_test": 1},
                                      "data": {"behaviours": [{"kind": "random"}]}}))
    assert main(["data", "generate", "--config", str(config), "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert main(["data", "render", str(tmp_path / "d"), "--episode", "0"]) == 2
    assert main(["eval", "--config", str(config), "--data", str(tmp_path / "d"), "--run", "r", "--video", "v"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "draws our arms' MuJoCo scene" in err[0] and "films our arms' MuJoCo scene" in err[1]


def test_arm_only_paths_refuse_an_external_family_in_one_line(tmp_path, capsys):
    from smrl_train.export.onnx_export import ExportError, spec_from_config

    with pytest.raises(ExportError, match="a deployment bundle drives an arm's joints; smrl_train.families"):
        spec_from_config(family_config())
    config = tmp_path / "point.yaml"
    config.write_text(yaml.safe_dump({"env": {"family": EXAMPLE}}))
    assert main(["data", "import-bag", str(tmp_path / "bag"), "--config", str(config), "--out", str(tmp_path)]) == 2
    assert "a bag holds an arm's joint states" in capsys.readouterr().err
    pytest.importorskip("minari")
    out = str(tmp_path / "o")
    assert main(["data", "import-minari", str(tmp_path / "m"), "--config", str(config), "--out", out]) == 2
    assert "import-minari files episodes for one of our arm families" in capsys.readouterr().err
    store = tmp_path / "point"
    generate_dataset(dataclasses.replace(family_config(), tasks=TasksConfig(n_train=1, n_test=1)), store,
                     progress=False)
    assert main(["data", "export-minari", str(store), str(tmp_path / "m"), "--id", "smrl/point-v0", "--quiet"]) == 2
    assert "export-minari writes an arm's episodes" in capsys.readouterr().err
