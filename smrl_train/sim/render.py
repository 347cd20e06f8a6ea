"""Pictures of the arm: recorded episodes posed into the sim's model and drawn by MuJoCo's
offscreen renderer, with the hidden goal and the end-effector's path drawn in.

Frames come from observations (joint positions, the puck's centre), never from stepping the
physics, so a picture can be made of any episode a store or an evaluation recorded, and making
it changes nothing the episode computed. The goal marker (a translucent sphere of the success
radius around a reach goal, a disc of it on the table under a push goal) and the path are added
to the render scene only: they are not part of the model.

MuJoCo reads ``MUJOCO_GL`` when it is first imported; without a display ``MUJOCO_GL=egl`` gives
an offscreen context. :func:`check_rendering` turns a missing context (or a missing imageio for
MP4) into one :class:`RenderError` line, so this module imports MuJoCo only inside functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smrl_train.config import SmrlConfig

WIDTH, HEIGHT = 320, 240  # one tile; even, as H.264 needs
GOAL_RGBA = (0.1, 0.9, 0.2, 0.35)
PATH_RGBA = (1.0, 0.55, 0.0, 1.0)
PATH_WIDTH_PX = 3.0
# A free camera in front of the arm, looking at the workspace between its base and the goals.
CAMERA = {"lookat": (0.35, 0.0, 0.25), "distance": 1.6, "azimuth": 150.0, "elevation": -30.0}
MP4_HINT = ("writing MP4 needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg (the package's "
            "video extra; requirements.txt pins them)")
GL_HINT = "set MUJOCO_GL=egl to render without a display"


class RenderError(RuntimeError):
    """Pictures cannot be made here (no OpenGL context, no imageio); says what to do, in one line."""


def check_rendering(mp4: bool = True) -> None:
    """Raise :class:`RenderError` now, before any work, when frames (or MP4 files) cannot be made."""
    if mp4:
        try:
            import imageio.v2  # noqa: F401
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            raise RenderError(MP4_HINT) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GLFW warns before it fails: the error says it all
            import mujoco

            with mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8):
                pass
    except Exception as exc:  # noqa: BLE001 - MuJoCo raises RuntimeError, FatalError, AttributeError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RenderError(f"cannot render: no OpenGL context ({reason}); {GL_HINT}") from None


@dataclass(frozen=True)
class Clip:
    """One episode to draw: its observations (T + 1, O), first to last state, the goal to mark
    (None: unknown) and a caption."""

    observations: np.ndarray
    goal: Sequence[float] | None = None
    caption: str = ""


def episode_states(obs: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """The T + 1 states of an episode of T transitions: each step's observation, then the last one's."""
    return np.concatenate([np.asarray(obs), np.asarray(next_obs)[-1:]])


class EpisodeRenderer:
    """Draws a family's scene posed from observations. Use as a context manager (it holds a GL context)."""

    def __init__(self, cfg: SmrlConfig, width: int = WIDTH, height: int = HEIGHT) -> None:
        import mujoco

        from smrl_train.sim.arm_sim import ArmSim

        self.cfg = cfg
        self.sim = ArmSim(cfg)  # its own model and data: posed, never stepped
        n = self.sim.arm.n_joints
        self._ee, self._puck = slice(2 * n, 2 * n + 3), slice(2 * n + 3, 2 * n + 6)
        self.width, self.height = width, height
        self.renderer = mujoco.Renderer(self.sim.model, height, width)
        self.camera = mujoco.MjvCamera()
        self.camera.lookat[:] = CAMERA["lookat"]
        self.camera.distance = CAMERA["distance"]
        self.camera.azimuth = CAMERA["azimuth"]
        self.camera.elevation = CAMERA["elevation"]
        self.option = mujoco.MjvOption()
        self.option.sitegroup[2] = 0  # the model's own goal site: the scene-only marker replaces it

    def __enter__(self) -> EpisodeRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.renderer.close()

    def ee_path(self, observations: np.ndarray) -> np.ndarray:
        """End-effector positions (T, 3) read from observations (T, O)."""
        return np.asarray(observations, float)[:, self._ee]

    def puck_path(self, observations: np.ndarray) -> np.ndarray:
        """Puck centres (T, 3) read from push observations (T, O)."""
        return np.asarray(observations, float)[:, self._puck]

    def frame(self, obs: np.ndarray, goal: Sequence[float] | None = None,
              path: np.ndarray | None = None) -> np.ndarray:
        """One picture (H, W, 3) uint8 of the arm in state ``obs``, with the goal and ``path``
        (k, 3), the end effector's positions so far."""
        import mujoco

        self.sim.set_pose(obs)
        self.renderer.update_scene(self.sim.data, self.camera, self.option)
        scene = self.renderer.scene
        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0  # a third of the time, and no information
        if goal is not None:
            self._add_goal(scene, goal)
        if path is not None:
            for a, b in zip(path[:-1], path[1:]):
                geom = self._new_geom(scene, mujoco.mjtGeom.mjGEOM_LINE, (0, 0, 0), (0, 0, 0), PATH_RGBA)
                if geom is None:
                    break
                mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_LINE, PATH_WIDTH_PX, a, b)
        return self.renderer.render().copy()

    def _add_goal(self, scene: Any, goal: Sequence[float]) -> None:
        import mujoco

        from smrl_train.sim.mjcf import TABLE_TOP_Z

        r = self.cfg.env.success_radius
        if len(goal) == 3:  # reach: the ball the end effector must enter
            self._new_geom(scene, mujoco.mjtGeom.mjGEOM_SPHERE, (r, r, r), goal, GOAL_RGBA)
        else:  # push: the disc the puck's centre must enter
            # mjv_initGeom takes a cylinder's size as MJCF does: (radius, half-height).
            self._new_geom(scene, mujoco.mjtGeom.mjGEOM_CYLINDER, (r, 0.002, 0),
                           (goal[0], goal[1], TABLE_TOP_Z + 0.002), GOAL_RGBA)

    @staticmethod
    def _new_geom(scene: Any, kind: Any, size: Sequence[float], pos: Sequence[float],
                  rgba: Sequence[float]) -> Any:
        import mujoco

        if scene.ngeom >= scene.maxgeom:
            return None
        geom = scene.geoms[scene.ngeom]
        mujoco.mjv_initGeom(geom, kind, np.asarray(size, float), np.asarray(pos, float), np.eye(3).ravel(),
                            np.asarray(rgba, np.float32))
        scene.ngeom += 1
        return geom

    def frames(self, clips: Sequence[Clip]) -> Iterator[np.ndarray]:
        """The clips side by side, step by step (a finished clip holds its last state), captioned."""
        paths = [self.ee_path(c.observations) for c in clips]
        for t in range(max(len(c.observations) for c in clips)):
            tiles = []
            for clip, path in zip(clips, paths):
                k = min(t, len(clip.observations) - 1)
                tiles.append(caption(self.frame(clip.observations[k], clip.goal, path[:k + 1]), clip.caption))
            yield tile(tiles)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with ``text`` written in its top-left corner on a dark band."""
    if not text:
        return image
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    left, top, right, bottom = draw.textbbox((4, 3), text)
    draw.rectangle((0, 0, right + 4, bottom + 3), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255))
    return np.asarray(picture)


def tile(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Images of one height in a row, ``gap`` white pixels apart."""
    spacer = np.full((images[0].shape[0], gap, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for image in images:
        row += [spacer, image] if row else [image]
    return np.concatenate(row, axis=1)


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write ``frames`` (H, W, 3) uint8 as an H.264 MP4 at ``fps``, streaming; returns the frame count."""
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise RenderError(MP4_HINT) from None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                macro_block_size=2, ffmpeg_log_level="error")
    count = 0
    try:
        for image in frames:
            writer.append_data(image)
            count += 1
    finally:
        writer.close()
    return count
