"""Pictures of the arm: MP4s of stored and evaluated episodes with the hidden goal drawn, the
demo's filmstrip, and one-line errors where nothing can be rendered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from smrl_train.cli import main
from smrl_train.data.store import EpisodeStore
from smrl_train.sim.render import RenderError, check_rendering
from smrl_train.smac.config import EvalConfig

from conftest import REPO, small_config, write_config
from smac_helpers import tiny_config

EPISODE_LENGTH = 30
TILE = (240, 320, 3)  # one picture: height, width, RGB


def _rendering() -> str:
    try:
        check_rendering()
    except RenderError as exc:
        return str(exc)
    return ""


NO_RENDERING = _rendering()
needs_rendering = pytest.mark.skipif(bool(NO_RENDERING), reason=NO_RENDERING or "rendering works")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small reach config and dataset, and a 20-update offline run on it (one meta-test run per task)."""
    from smrl_train.data.generate import generate_dataset
    from smrl_train.smac.problem import problem_from_files
    from smrl_train.smac.runner import evaluate_run, train_offline

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("video")
    cfg = small_config("reach", n_train=3, n_test=2, episode_length=EPISODE_LENGTH)
    config = write_config(cfg, tmp / "reach_small.yaml", drop=("smac",))
    generate_dataset(cfg, tmp / "data", progress=False)
    smac = tiny_config("success_tuned", eval=EvalConfig(runs_per_task=1, diagnostic_tasks=0))
    problem = problem_from_files(config, tmp / "data")
    run = train_offline(problem, smac, tmp / "runs" / "offline_only", progress=False)
    evaluate_run(problem, run, progress=False)
    return {"config": config, "data": tmp / "data", "run": Path(run), "tmp": tmp}


def _read_mp4(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(path, plugin="FFMPEG")


def _without_timing(path: Path) -> dict[str, Any]:
    res = json.loads(path.read_text())
    res.pop("eval_seconds")
    return res


@needs_rendering
def test_eval_video_films_the_scored_episodes_and_changes_no_result(tiny_run: dict[str, Path],
                                                                    capsys: pytest.CaptureFixture) -> None:
    args = ["eval", "--config", str(tiny_run["config"]), "--data", str(tiny_run["data"]), "--run",
            str(tiny_run["run"]), "--quiet", "--no-diagnostic", "--threads", "1"]
    assert main(args) == 0
    plain = _without_timing(tiny_run["run"] / "eval.json")
    videos = tiny_run["tmp"] / "videos"
    assert main([*args, "--video", str(videos), "--video-tasks", "1"]) == 0
    assert _without_timing(tiny_run["run"] / "eval.json") == plain
    out = capsys.readouterr().out
    files = sorted(videos.iterdir())
    assert [f.name for f in files] == ["offline_only_seed0_task0000.mp4"], files
    assert f"video {files[0]}" in out
    frames = _read_mp4(files[0])
    # Two exploration episodes and the scored one side by side, 4 white pixels apart; every
    # state of the episode, the first to the last.
    assert frames.shape == (EPISODE_LENGTH + 1, TILE[0], 3 * TILE[1] + 2 * 4, 3)
    assert frames[:, :, TILE[1]:TILE[1] + 4].min() > 200


@needs_rendering
def test_protocol_episodes_are_the_episodes_the_meta_test_scores(tiny_run: dict[str, Path]) -> None:
    from smrl_train.smac.problem import problem_from_files
    from smrl_train.smac.runner import evaluate_run, protocol_episodes
    from smrl_train.smac.video import AdaptationFilm

    problem = problem_from_files(tiny_run["config"], tiny_run["data"])
    film = AdaptationFilm(n_tasks=2)
    res = evaluate_run(problem, tiny_run["run"], progress=False, diagnostic=False, on_run=film.keep)
    replayed = protocol_episodes(problem, tiny_run["run"], [problem.test_tasks[1]])[0]
    kept = film.runs[1][2]
    assert [t.episode_return for t in replayed] == [t.episode_return for t in kept]
    assert np.array_equal(replayed[-1].obs, kept[-1].obs)
    assert replayed[-1].episode_return == pytest.approx(res["test"]["tasks"][1]["final_return"])


@needs_rendering
def test_data_render_writes_a_stored_episode(tiny_run: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ep.mp4"
    assert main(["data", "render", str(tiny_run["data"]), "--task", "1", "--episode", "2", "--out", str(out)]) == 0
    assert "task 1 episode 2" in capsys.readouterr().out
    frames = _read_mp4(out)
    assert frames.shape == (EPISODE_LENGTH + 1, *TILE)
    assert frames[0].std() > 10  # a picture, not a blank
    # Without --task, episodes are counted across the store in file order.
    n = [p.name for p in EpisodeStore.open(tiny_run["data"]).episode_paths()].index("task0001_ep000002.safetensors")
    assert main(["data", "render", str(tiny_run["data"]), "--episode", str(n), "--out", str(tmp_path / "n.mp4")]) == 0
    assert np.array_equal(_read_mp4(tmp_path / "n.mp4"), frames)
    assert main(["data", "render", str(tiny_run["data"]), "--episode", "99"]) == 2
    assert "out of range" in capsys.readouterr().err


@needs_rendering
@pytest.mark.parametrize("family", ["reach", "push"])
def test_goal_marker_is_drawn_at_the_goal_in_the_scene_only(family: str) -> None:
    from smrl_train.sim.arm_sim import ArmSim
    from smrl_train.sim.envs import ArmTaskEnv
    from smrl_train.sim.render import EpisodeRenderer

    cfg = small_config(family)
    env = ArmTaskEnv(cfg)
    task = env.sample_tasks(1, 3)[0]
    obs, _ = env.reset(seed=0)
    with EpisodeRenderer(cfg) as renderer:
        bare, marked = renderer.frame(obs), renderer.frame(obs, task.goal)
        assert renderer.sim.model.ngeom == ArmSim(cfg).model.ngeom  # nothing added to the model
    changed = np.abs(marked.astype(int) - bare.astype(int)).sum(axis=2) > 30
    assert changed.sum() > 50, changed.sum()  # a marker of the 5 cm success radius, seen from 1.6 m
    r, g, b = (marked[changed][:, i].astype(int) for i in range(3))
    assert np.mean(g > np.maximum(r, b)) > 0.9  # green where it changed


def test_missing_imageio_is_one_line_saying_what_to_install(tiny_run: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "imageio", None)  # import imageio raises ImportError
    assert main(["data", "render", str(tiny_run["data"]), "--episode", "0", "--out", "x.mp4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0] and "imageio-ffmpeg" in err[0], err


def test_no_opengl_context_is_one_line_saying_to_set_mujoco_gl(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    """GLFW without a display cannot create a context; an unknown MUJOCO_GL fails MuJoCo's import."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    cases = {"glfw": ["data", "render", str(tiny_run["data"]), "--episode", "0", "--out", str(tmp_path / "x.mp4")],
             "invalid": ["eval", "--config", str(tiny_run["config"]), "--data", str(tiny_run["data"]),
                         "--run", str(tiny_run["run"]), "--video", str(tmp_path / "v")]}
    for gl, args in cases.items():
        proc = subprocess.run([sys.executable, "-m", "smrl_train.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, env={**env, "MUJOCO_GL": gl, "PYTHONPATH": str(REPO)}, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "MUJOCO_GL=egl" in lines[0], (gl, proc.stderr)
    assert not list(tmp_path.glob("**/*.mp4"))


@needs_rendering
def test_demo_filmstrip_shows_both_methods_on_one_held_out_task(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    from smrl_ros.demo_report import write_filmstrip

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run["run"], runs / "offline_only")
    shutil.copytree(tiny_run["run"], runs / "smac")  # a stand-in for the online run
    film = write_filmstrip(tmp_path / "report", tiny_run["config"], tiny_run["data"], runs, task=1)
    assert film["file"] == "filmstrip.png" and film["task"] == 1 and set(film["methods"]) == {"offline_only", "smac"}
    scored = json.loads((tiny_run["run"] / "eval.json").read_text())["test"]["tasks"][1]["final_return"]
    assert film["methods"]["smac"]["return"] == pytest.approx(scored)  # the meta-test's scored episode
    width, height = Image.open(tmp_path / "report" / "filmstrip.png").size
    assert width > 2 * height  # frames in a row, two rows


def test_demo_filmstrip_is_a_note_where_nothing_renders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import smrl_train.sim.render as render
    from smrl_ros.demo_report import _filmstrip_lines, write_filmstrip

    def no_gl(mp4: bool = True) -> None:
        raise RenderError("cannot render: no OpenGL context (test); set MUJOCO_GL=egl to render without a display")

    monkeypatch.setattr(render, "check_rendering", no_gl)
    film = write_filmstrip(tmp_path, tmp_path / "none.yaml", tmp_path / "none", tmp_path / "runs")
    assert film == {"note": "No filmstrip: cannot render: no OpenGL context (test); set MUJOCO_GL=egl to render "
                            "without a display."}
    assert _filmstrip_lines(film) == ["", film["note"]] and not (tmp_path / "filmstrip.png").exists()
