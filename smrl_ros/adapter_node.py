"""``smrl_adapter``: adapts to a new task from a few episodes with rewards, then deploys.

On a new task (its task parameters change, the ``~/adapt`` Trigger service is called, or at
start with ``adapt_on_start``) it

1. sets the task on the sim bridge (``sim_node``; on a real arm the lab sets the task) and
   pauses the controller (``enabled: false`` on ``controller_node``), so it alone commands the arm;
2. runs ``exploration_episodes`` episodes with the bundle's latent policy and z ~ N(0, I)
   drawn as the model was trained (every step or once per episode, from its metadata; the
   meta-test protocol, docs/algorithm.md section 4), recording the
   context (s, a, r) with rewards from ``reward_topic`` (the sim bridge with ``publish_reward``);
3. infers the posterior q(z | context) with ``encoder.onnx`` (onnxruntime, no torch) and bakes
   its mean into an adapted policy (:func:`smrl_train.robot.runtime.bake_latent`) in ``output_dir``;
4. hands it to the controller by setting the controller's ``model_path`` parameter (hot
   reload), resets the arm and re-enables the controller;
5. reports the exploration returns and, unless ``evaluate_steps`` is 0, the return and final
   success of the deployed policy over that many steps: on the log and on ``~/result``
   (std_msgs/String, JSON, latched).

Arm driving, resets and safety are :class:`smrl_train.robot.episode_driver.EpisodeDriver`'s (on the
node: :class:`smrl_ros.arm_driver.ArmDriver`), as in the explorer.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from smrl_ros import params, topics
from smrl_ros.arm_driver import ArmDriver, DriverParams, one_shot
from smrl_ros.node_main import StartupError, request_exit, run_node
from smrl_ros.paths import input_path, output_path, robot_arm
from smrl_train.robot.episode_driver import EpisodeEnd, Transition
from smrl_train.robot.exploration import LatentExplorer, episode_rng
from smrl_train.robot.model_metadata import ModelError
from smrl_train.robot.reward_context import RewardContext
from smrl_train.robot.runtime import EncoderRuntime, LatentPolicyRuntime, bake_latent
from smrl_train.robot.urdf import UrdfError

TASK_PARAMETERS = ("task_split", "task_index", "task_goal")
MAX_ATTEMPTS = 3  # tries per exploration episode before the adaptation is reported failed


@dataclass(frozen=True)
class AdapterParams(DriverParams):
    bundle: str = params.param("", "adaptation bundle folder (encoder.onnx, policy.onnx)")
    output_dir: str = params.param("", "where adapted policies are written, relative to the working "
                                     "directory (empty: <bundle>/adapted)")
    exploration_episodes: int = params.param(2, "episodes with z ~ prior whose rewards form the context")
    resample_period: int = params.param(
        0, "steps between draws of z from the prior (0: as the model was trained, from its metadata: every "
           "step or once per episode; 1: every step)")
    seed: int = params.param(0, "seed of the latent draws", low=0, high=2**31 - 1)
    reward_topic: str = params.param(topics.REWARD, "reward input (std_msgs/Float64, one per control step)")
    success_topic: str = params.param("/smrl_sim/success", "success input for the deployed episode (std_msgs/Bool; "
                                      "'' when there is none)")
    controller_node: str = params.param("smrl_controller", "controller to hand the adapted policy to ('' : none)")
    pause_controller: bool = params.param(True, "disable the controller (its 'enabled' parameter) while exploring")
    evaluate_steps: int = params.param(-1, "after deploying, sum this many rewards as the deployed return (0: don't; "
                                       "-1: one episode of the model's length)", low=-1, high=1_000_000)
    task_split: str = params.param("test", "train or test: which task list task_index indexes (sim bridge)")
    task_index: int = params.param(-1, "the task to adapt to (-1: whatever the sim bridge / lab has set up)")
    task_goal: tuple[float, ...] = params.param((), "explicit hidden goal for the sim bridge (overrides task_index)")
    adapt_on_start: bool = params.param(True, "adapt once at start (else wait for a task change or ~/adapt)")
    exit_when_done: bool = params.param(False, "exit with status 0 after the first adaptation")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bundle:
            raise params.ParameterError("parameter 'bundle': required (an adaptation bundle folder)")
        if self.exploration_episodes < 1 or self.resample_period < 0:
            raise params.ParameterError("parameters: exploration_episodes >= 1, resample_period >= 0 required")
        if self.task_split not in ("train", "test"):
            raise params.ParameterError(f"parameter 'task_split': expected train or test, got {self.task_split!r}")


def task_label(p: AdapterParams) -> str:
    """A short name of the task the parameters select (used in file names and reports)."""
    if p.task_goal:
        return "goal_" + "_".join(f"{g:.3f}" for g in p.task_goal)
    return f"{p.task_split}{p.task_index}" if p.task_index >= 0 else "current"


class AdapterNode(Node):
    """The adapter; see the module docstring."""

    def __init__(self) -> None:
        super().__init__("smrl_adapter")
        dynamic = ("task_split", "task_index", "task_goal", "seed", "exploration_episodes", "evaluate_steps")
        params.declare(self, AdapterParams, read_only=tuple(f for f in AdapterParams.__dataclass_fields__
                                                            if f not in dynamic))
        try:
            p = params.read(self, AdapterParams)
            bundle = input_path(p.bundle)
            self.policy = LatentPolicyRuntime(bundle / "policy.onnx")
            self.encoder = EncoderRuntime(bundle / "encoder.onnx")
            info = self.policy.info
            arm = robot_arm(p.urdf_path, p.ee_link, info)
            e = self.encoder.info
            if (e.joint_names, e.observation_layout, e.latent_dim) != (info.joint_names, info.observation_layout,
                                                                      info.latent_dim):
                raise ModelError(f"{bundle}: encoder.onnx and policy.onnx disagree on joints, observation layout "
                                 "or latent size")
            self.driver = ArmDriver(self, p, arm, info, reward_topic=p.reward_topic)
        except (params.ParameterError, UrdfError, ModelError, ValueError) as exc:
            raise StartupError(str(exc)) from None
        self.p = p
        self.bundle = bundle
        self.output_dir = output_path(p.output_dir) if p.output_dir else bundle / "adapted"
        self.explorer = LatentExplorer(self.policy, p.resample_period)
        self.collected = RewardContext(info.obs_dim, info.n_joints, self.encoder.next_obs)
        self.phase = "idle"
        self.adaptations = 0
        self.attempts = 0
        self.job: dict[str, Any] = {}
        self._queued = False
        self._exiting = False
        self._eval_rewards: list[float] | None = None
        self._success: bool | None = None

        core = self.driver.core
        core.policy = self.explorer.act
        core.on_transition = self._on_transition
        core.on_episode_end = self._on_episode_end
        core.on_ready = self._on_ready
        self.pub_result = self.create_publisher(String, "~/result", topics.LATCHED_QOS)
        self.create_subscription(Float64, p.reward_topic, self._on_eval_reward, topics.DEFAULT_QOS)
        if p.success_topic:
            self.create_subscription(Bool, p.success_topic, self._on_success, topics.DEFAULT_QOS)
        self.create_service(Trigger, "~/adapt", self._on_adapt_service)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._on_parameters)
        self.get_logger().info(
            f"adapting {info.task_family} with {bundle} ({p.exploration_episodes} exploration episode(s) of "
            f"{self.driver.core.episode_length} steps, rewards from {p.reward_topic}, {p.mode} mode); adapted policies "
            f"go to {self.output_dir}" + (f" and to /{p.controller_node}" if p.controller_node else ""))

    # -- triggers --------------------------------------------------------------------------------
    def start(self) -> None:
        if self.p.adapt_on_start:
            self._request()

    def _check_parameters(self, changed: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        values = {f: getattr(self.p, f) for f in AdapterParams.__dataclass_fields__}
        try:
            for c in changed:
                if c.name in values:
                    values[c.name] = params.convert(c.name, c.value, params.field_type(AdapterParams, c.name))
            AdapterParams(**values)
        except params.ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _on_parameters(self, changed: list[rclpy.parameter.Parameter]) -> None:
        self.p = params.read(self, AdapterParams)
        if any(c.name in TASK_PARAMETERS for c in changed):
            self._request()

    def _on_adapt_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        queued = self.phase != "idle"
        self._request()
        response.success = True
        response.message = (f"adaptation to {task_label(self.p)} " + ("queued" if queued else "started")
                            + "; the result comes on ~/result")
        return response

    def _request(self) -> None:
        """Adapt now, or right after the adaptation in progress."""
        if self.phase != "idle":
            self._queued = True
            return
        self._begin()

    # -- one adaptation --------------------------------------------------------------------------
    def _begin(self) -> None:
        p = self.p
        self.adaptations += 1
        self.collected = RewardContext(self.policy.info.obs_dim, self.policy.info.n_joints, self.encoder.next_obs)
        self.job = {"adaptation": self.adaptations, "task": task_label(p), "task_split": p.task_split,
                    "task_index": p.task_index, "task_goal": list(p.task_goal), "t0": time.monotonic()}
        self.get_logger().info(f"adaptation {self.adaptations}: task {self.job['task']}")
        self.phase = "preparing"
        self._set_sim_task()

    def _set_sim_task(self) -> None:
        p = self.p
        if not p.sim_node or (p.task_index < 0 and not p.task_goal):
            self._pause_controller()
            return
        values: dict[str, Any] = ({"task_goal": list(p.task_goal)} if p.task_goal
                                  else {"task_split": p.task_split, "task_index": p.task_index})
        self.driver.set_node_parameters(p.sim_node, values, lambda ok, why: self._pause_controller() if ok
                                        else self._fail(f"could not set the task on /{p.sim_node}: {why}"))

    def _pause_controller(self) -> None:
        p = self.p
        if p.controller_node and p.pause_controller:
            self.driver.set_node_parameters(p.controller_node, {"enabled": False}, lambda ok, why: self._explore()
                                            if ok else self._fail(f"could not pause /{p.controller_node}: {why} "
                                                                  "(a controller with an 'enabled' "
                                                                  "parameter, or pause_controller:=false "
                                                                  "with no controller)"))
            return
        self._explore()

    def _explore(self) -> None:
        others = self.count_publishers(self.p.command_topic) - 1
        if others > 0 and not (self.p.controller_node and self.p.pause_controller):
            self._fail(f"{others} other node(s) publish on {self.p.command_topic}: refusing to explore while "
                       "something else commands the arm")
            return
        self.phase = "exploring"
        self.attempts = 0
        self.driver.reset()

    def _on_ready(self) -> None:
        if self.phase == "exploring":
            episode = len(self.collected.returns)
            self.explorer.begin_episode(episode_rng(self.p.seed, self.adaptations, episode))
            self.driver.run(self.driver.core.episode_length)
        elif self.phase == "deploying":
            self._enable_controller()

    def _on_transition(self, tr: Transition) -> None:
        assert tr.reward is not None
        self.collected.add(tr.obs, tr.action, tr.reward, tr.next_obs)

    def _on_episode_end(self, end: EpisodeEnd) -> None:
        if self.phase != "exploring":
            return
        if not end.completed:
            self.collected.drop_episode()
            self.attempts += 1
            if self.attempts >= MAX_ATTEMPTS:
                self._fail(f"exploration episode failed {self.attempts} times (last: {end.reason})")
                return
            self.driver.reset()
            return
        ret = self.collected.end_episode()
        self.get_logger().info(f"exploration episode {len(self.collected.returns)}/{self.p.exploration_episodes}: "
                               f"return {ret:.2f} over {end.steps} steps")
        if len(self.collected.returns) < self.p.exploration_episodes:
            self.driver.reset()
            return
        self._adapt()

    def _adapt(self) -> None:
        try:
            mean, var = self.encoder.posterior(self.collected.array())
            self.output_dir.mkdir(parents=True, exist_ok=True)
            out = self.output_dir / f"adapted_{self.adaptations:03d}_{self.job['task']}.onnx"
            bake_latent(self.bundle / "policy.onnx", mean, out)
        except (ValueError, ModelError, OSError) as exc:
            self._fail(f"could not write the adapted policy: {exc}")
            return
        self.job.update(model=str(out), z_mean=[float(v) for v in mean], z_var=[float(v) for v in var],
                        context_size=len(self.collected.rows), exploration_returns=list(self.collected.returns))
        self.get_logger().info(f"posterior z {np.round(mean, 3).tolist()} (var {np.round(var, 4).tolist()}) from "
                               f"{len(self.collected.rows)} transitions; wrote {out}")
        if not self.p.controller_node:
            self._finish()
            return
        self.phase = "handing over"

        def reloaded(ok: bool, why: str) -> None:
            if not ok:
                self._fail(f"/{self.p.controller_node} refused the adapted policy: {why}")
                return
            self.get_logger().info(f"/{self.p.controller_node} hot-loaded {out.name}")
            self.phase = "deploying"
            self.driver.reset()

        self.driver.set_node_parameters(self.p.controller_node, {"model_path": str(out)}, reloaded)

    def _evaluate_steps(self) -> int:
        return self.driver.core.episode_length if self.p.evaluate_steps < 0 else self.p.evaluate_steps

    def _enable_controller(self) -> None:
        def enabled(ok: bool, why: str) -> None:
            if not ok:
                self._fail(f"could not enable /{self.p.controller_node}: {why}")
                return
            if self._evaluate_steps():
                self.phase = "evaluating"
                self._success = None
                self._eval_rewards = []
                self.get_logger().info(f"controller running the adapted policy; measuring "
                                       f"{self._evaluate_steps()} steps")
                budget = 2.0 * self._evaluate_steps() / float(self.policy.info.control_hz) + 5.0
                one_shot(self, budget, lambda n=self.adaptations: self._evaluation_timeout(n))
            else:
                self._finish()

        if self.p.pause_controller:
            self.driver.set_node_parameters(self.p.controller_node, {"enabled": True}, enabled)
        else:
            enabled(True, "")

    def _on_eval_reward(self, msg: Float64) -> None:
        if self.phase != "evaluating" or self._eval_rewards is None:
            return
        self._eval_rewards.append(float(msg.data))
        if len(self._eval_rewards) == self._evaluate_steps():
            # The success flag of the same step comes right after its reward.
            one_shot(self, 0.05, self._finish_evaluation_once)

    def _evaluation_timeout(self, adaptation: int) -> None:
        if self.phase == "evaluating" and self.adaptations == adaptation:
            self.get_logger().warning(f"only {len(self._eval_rewards or [])} of {self._evaluate_steps()} rewards "
                                      "arrived while the adapted policy ran")
            self._finish_evaluation_once()

    def _on_success(self, msg: Bool) -> None:
        self._success = bool(msg.data)

    def _finish_evaluation_once(self) -> None:
        if self.phase != "evaluating" or self._eval_rewards is None:
            return
        rewards = self._eval_rewards[: self._evaluate_steps()]
        self._eval_rewards = None
        self.job["deployed"] = {"return": float(np.sum(rewards)), "steps": len(rewards), "success": self._success}
        self._finish()

    # -- results -----------------------------------------------------------------------------------
    def _finish(self, error: str = "") -> None:
        job = dict(self.job)
        job["seconds"] = time.monotonic() - job.pop("t0", time.monotonic())
        job["error"] = error
        self.pub_result.publish(String(data=json.dumps(job, sort_keys=True)))
        if not error:
            deployed = job.get("deployed")
            self.get_logger().info(
                f"adaptation {job['adaptation']} ({job['task']}) done in {job['seconds']:.1f} s: exploration returns "
                + ", ".join(f"{r:.2f}" for r in job.get("exploration_returns", []))
                + (f"; deployed return {deployed['return']:.2f}, success {deployed['success']}" if deployed else ""))
        self.phase = "idle"
        if self.p.exit_when_done and not self._exiting:
            self._exiting = True
            request_exit(self)
        elif self._queued:
            self._queued = False
            self._begin()

    def _fail(self, message: str) -> None:
        self.get_logger().error(f"adaptation {self.adaptations} failed: {message}")
        self.driver.abort("adaptation failed")
        self._finish(error=message)

    def stop(self) -> None:
        self.driver.stop()


def main(args: list[str] | None = None) -> int:
    return run_node(AdapterNode, "smrl_adapter", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
