"""One experiment, start to finish (or from its last finished iteration): the loop the job platform runs.

    iteration 0: warm-up episodes with a uniform random policy
    every iteration: [train the tokenizer: iteration 0 only, when the experiment brings none]
                     -> update the world model on every episode so far -> train the agent in imagination
                     -> evaluate it in the real env -> checkpoint -> collect more episodes with it

Every collected episode is recorded and ingested by the code the ingest service uses too
(:func:`worldloom.sim.gymnasium.record_episode` with a pixels-only wrapper and the agent as the
policy, then :func:`~worldloom.sim.ingest.ingest_recording` over :class:`worldloom.video.ingest.IngestService`): an MP4 of what the agent saw, the
actions / rewards / terminated / truncated arrays and ``videos.ingested``, so curation, search and training see
it like any other video (``source: gymnasium``, attributes ``experiment`` and ``iteration``).

Seeds: training episode ``k`` of the experiment is reset with ``seed + k``; the evaluation episodes after
iteration ``i`` with ``seed + EVAL_SEED_OFFSET + i * eval_episodes + j``; the policy registry records both
ranges so ``POST /v1/policies/{id}/evaluate`` uses seeds never seen in training.

Resume: after each iteration a checkpoint (world model + optimiser, tokenizer, agent + optimiser, and
``state.json``: iteration, real steps, the episodes' video ids and seeds) goes to
``experiments/<id>/checkpoints/``. A restarted service runs the job again from its plan; the loop restores
the last checkpoint and rebuilds its replay buffer from the stored videos and arrays, so a kill costs at
most the iteration in flight (its episodes are ingested again with the same seeds and policy: the same
bytes, which ingest deduplicates).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from worldloom.core.bus import Bus
from worldloom.core.catalog import (
    VideoRecord,
    experiment_prefix,
    experiment_tokenizer_key,
    experiment_world_model_key,
    model_dir,
    policy_key,
    policy_prefix,
    raw_meta_key,
)
from worldloom.core.episodes import EpisodeLimits
from worldloom.core.jobs import ProgressWriter
from worldloom.core.store.base import ObjectStore
from worldloom.models.checkpoint import StoreCheckpoints, fetch_files, publish_files
from worldloom.models.rl import Agent, AgentConfig, ImaginationConfig, ImaginationTrainer, WorldModelEnv, save_policy
from worldloom.models.rl.real import (
    FramePolicy,
    PixelObservation,
    episode_sequence,
    fit_tokenizer,
    update_world_model,
)
from worldloom.models.tokenizer import CausalVideoTokenizer, TokenizerConfig
from worldloom.models.tokenizer.checkpoint import load_checkpoint as load_tokenizer_checkpoint
from worldloom.models.tokenizer.checkpoint import save_checkpoint as save_tokenizer_checkpoint
from worldloom.models.training.worker import JobCancelled
from worldloom.models.world import Sampling
from worldloom.models.world.base import WorldModel
from worldloom.models.world.data import LatentSequence, load_episode_arrays
from worldloom.models.world.factory import build_model, load_world_checkpoint, save_world_checkpoint
from worldloom.sim.envs import make_env
from worldloom.sim.gymnasium import record_episode
from worldloom.sim.ingest import ingest_recording
from worldloom.sim.settings import GymnasiumLimits
from worldloom.video.decode import read_frames
from worldloom.video.ingest import IngestService
from worldloom.video.limits import VideoLimits

log = logging.getLogger("worldloom.rlsim.loop")

EVAL_SEED_OFFSET = 1_000_000
WORLD_FILE, TOKENIZER_FILE, AGENT_FILE, STATE_FILE = (
    "world_model.safetensors",
    "tokenizer.safetensors",
    "agent.safetensors",
    "state.json",
)


@dataclass
class RealEpisode:
    video_id: str
    seed: int
    frames: np.ndarray  # [T + 1, R, R, 3] uint8: what the agent saw (released once encoded)
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def total_reward(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))


@dataclass
class Ingest:
    """What recording and ingesting an episode needs: the shared ingest core over this store and bus."""

    service: IngestService
    episode_limits: EpisodeLimits


def make_ingest(
    store: ObjectStore, bus: Bus, video_limits: VideoLimits, episode_limits: EpisodeLimits, claim_lease_s: float
) -> Ingest:
    from worldloom.core.claims import Claims

    service = IngestService(
        store, bus, video_limits, claims=Claims(store, lease_s=claim_lease_s), episode_limits=episode_limits
    )
    return Ingest(service, episode_limits)


def action_repeat(tokenizer: Any) -> int:
    return int(tokenizer.config.t_compression)


def run_episode(
    env_id: str, resolution: int, seed: int, policy: FramePolicy, max_steps: int, video: Path | None = None
) -> tuple[float, int]:
    """One real episode (not ingested: evaluations); optionally its frames as an MP4. Returns (return, steps)."""
    from worldloom.video.mp4_writer import Mp4Writer

    env = PixelObservation(make_env(env_id), resolution)
    try:
        obs, _ = env.reset(seed=seed)
        total, steps, done = 0.0, 0, False
        while not done and steps < max_steps:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            steps += 1
            done = bool(terminated or truncated)
        if video is not None:
            fps = float(env.metadata.get("render_fps") or 30)
            with Mp4Writer(video, fps) as writer:
                for frame in env.frames:
                    writer.write(frame)
        return total, steps
    finally:
        env.close()


# -------------------------------------------------------------------------------------------- models


def build_tokenizer(spec: dict[str, Any], kind: str) -> CausalVideoTokenizer:
    cfg = TokenizerConfig.preset(spec["size"], kind, spec["compression"])  # type: ignore[arg-type]
    if spec.get("channels"):
        cfg = cfg.replace(channels=int(spec["channels"]))
    return CausalVideoTokenizer(cfg)


def load_registered_tokenizer(store: ObjectStore, key: str, device: torch.device) -> CausalVideoTokenizer:
    with tempfile.TemporaryDirectory(prefix="wl-rl-tok-") as tmp:
        local = fetch_files(store, key, Path(tmp), sidecar=False)
        tok, _ = load_tokenizer_checkpoint(local, device=str(device))
    return tok


def load_world(store: ObjectStore, key: str, device: torch.device) -> WorldModel:
    with tempfile.TemporaryDirectory(prefix="wl-rl-wm-") as tmp:
        local = fetch_files(store, key, Path(tmp))
        model, _ = load_world_checkpoint(local, device=str(device))
    return model


def load_experiment_models(
    store: ObjectStore, experiment_id: str, device: str = "cpu"
) -> tuple[WorldModel, CausalVideoTokenizer]:
    """The finished experiment's world model and tokenizer (what its policy acts through), eval mode."""
    dev = torch.device(device)
    model = load_world(store, experiment_world_model_key(experiment_id), dev).eval()
    tok = load_registered_tokenizer(store, experiment_tokenizer_key(experiment_id), dev).eval()
    return model, tok


# ---------------------------------------------------------------------------------------------- loop


class Experiment:
    """The loop over one frozen plan (see the module docstring)."""

    def __init__(self, plan: dict[str, Any], store: ObjectStore, ingest: Ingest) -> None:
        self.plan, self.store, self.ingest = plan, store, ingest
        self.id: str = plan["experiment_id"]
        self.prefix = experiment_prefix(self.id)
        self.wm: dict[str, Any] = plan["world_model"]
        self.agent_plan: dict[str, Any] = plan["agent"]
        self.seed: int = int(plan["seed"])
        self.budget: int = int(plan["steps"])
        self.device = torch.device("cuda" if plan.get("use_gpu") and torch.cuda.is_available() else "cpu")
        self.writer = ProgressWriter(store, self.prefix, self.budget)
        self.ckpts = StoreCheckpoints(store, self.prefix)
        self.episodes: list[RealEpisode] = []
        self.real_steps = 0
        self.iteration = 0
        self.eval_steps = 0
        self.sequences: dict[str, LatentSequence] = {}
        self.best_return: float | None = None
        self.last_return: float | None = None

    # ------------------------------------------------------------------------------ setup, resume

    def _models(self) -> None:
        torch.manual_seed(self.seed)
        if self.wm.get("base_key"):
            self.model = load_world(self.store, self.wm["base_key"], self.device)
        else:
            self.model = build_model(self.wm["family"], self.wm["config"]).to(self.device)
        if self.wm.get("tokenizer_key"):
            self.tokenizer = load_registered_tokenizer(self.store, self.wm["tokenizer_key"], self.device)
            self.train_tokenizer = False
        else:
            self.tokenizer = build_tokenizer(self.wm["tokenizer"], self.model.latent_kind).to(self.device)
            self.train_tokenizer = True
        self.tokenizer.eval()
        self.model.eval()
        self.wm_optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.wm["lr"], betas=(0.9, 0.95), weight_decay=0.01
        )
        self.tok_optimizer = torch.optim.Adam(
            self.tokenizer.parameters(), lr=(self.wm.get("tokenizer") or {}).get("lr", 1e-3)
        )
        self.repeat = action_repeat(self.tokenizer)
        probe = PixelObservation(make_env(self.plan["env_id"]), self.plan["resolution"])
        self.action_space = probe.action_space
        probe.close()
        self.agent: Agent | None = None
        self.trainer_state: dict[str, Any] | None = None
        self.wm_updates = 0

    def _restore(self) -> None:
        with tempfile.TemporaryDirectory(prefix="wl-rl-resume-") as tmp:
            folder = Path(tmp)
            step = self.ckpts.restore(folder)
            if step is None:
                self.writer.resumed(0, [os.getpid()])
                return
            state = json.loads((folder / STATE_FILE).read_text())
            load_world_checkpoint(
                folder / WORLD_FILE, model=self.model, optimizer=self.wm_optimizer, device=str(self.device)
            )
            load_tokenizer_checkpoint(folder / TOKENIZER_FILE, model=self.tokenizer, device=str(self.device))
            self.tokenizer.eval()
            self.model.eval()
            self.iteration, self.real_steps = int(state["iteration"]), int(state["real_steps"])
            self.eval_steps, self.wm_updates = int(state.get("eval_steps", 0)), int(state.get("wm_updates", 0))
            self.best_return, self.last_return = state.get("best_return"), state.get("last_return")
            self.episodes = [self._stored_episode(e["video_id"], int(e["seed"])) for e in state["episodes"]]
            env = self._imagined_env()
            self.agent = self._new_agent(env)
            trainer = ImaginationTrainer(self.agent, env, self._imagination_config())
            trainer.restore(folder / AGENT_FILE)
            self.trainer_state = self._trainer_state(trainer)
        self.writer.resumed(self.real_steps, [os.getpid()])
        log.info("experiment %s resumed at iteration %d (%d real steps)", self.id, self.iteration, self.real_steps)

    def _stored_episode(self, video_id: str, seed: int) -> RealEpisode:
        """An ingested episode back from the store: its video (what the agent saw) and its arrays."""
        record = self.store.get_record(raw_meta_key(video_id), VideoRecord)
        arrays = load_episode_arrays(self.store, video_id)
        if arrays is None:
            raise RuntimeError(f"episode video {video_id} has lost its arrays")
        with tempfile.TemporaryDirectory(prefix="wl-rl-ep-") as tmp:
            path = Path(tmp) / "episode.mp4"
            self.store.download(self.store.key_from_uri(record.uri), str(path))
            res = int(self.plan["resolution"])
            frames, _ = read_frames(path, size=(res, res))
        return RealEpisode(
            video_id,
            seed,
            frames,
            arrays["actions"],
            arrays["rewards"],
            arrays.get("terminated", np.zeros(len(arrays["rewards"]), bool)),
        )

    # ------------------------------------------------------------------------------------- pieces

    def _check_cancel(self) -> None:
        if self.writer.cancelled():
            raise JobCancelled()

    def _policy(self, seed: int, deterministic: bool = False) -> FramePolicy:
        return FramePolicy(
            self.action_space,
            self.agent,
            self.model,
            self.tokenizer,
            action_repeat=self.repeat,
            seed=seed,
            deterministic=deterministic,
        )

    def collect(self, steps: int) -> None:
        """Real episodes with the current policy (random before the first agent) until ``steps`` more real
        steps are spent; each is recorded and ingested as it ends."""
        target = min(self.budget, self.real_steps + steps)
        # pixels are in the video: no observation arrays (the simulator's state is not recorded either)
        limits = GymnasiumLimits(max_steps=max(1, int(self.plan["max_episode_steps"])), max_observation_bytes=0)
        while self.real_steps < target:
            index = len(self.episodes)
            seed = self.seed + index
            holder: list[PixelObservation] = []

            def wrap(env: gym.Env, holder: list[PixelObservation] = holder) -> gym.Env:
                holder.append(PixelObservation(env, int(self.plan["resolution"])))
                return holder[0]

            max_steps = min(int(self.plan["max_episode_steps"]), target - self.real_steps)
            name = "random" if self.agent is None else f"rlsim:{self.id}/iteration-{self.iteration}"
            with tempfile.TemporaryDirectory(prefix="wl-rl-rec-") as tmp:
                rec = record_episode(
                    self.plan["env_id"],
                    index,
                    seed,
                    name,
                    max_steps,
                    Path(tmp),
                    limits=limits,
                    episode_limits=self.ingest.episode_limits,
                    wrap=wrap,
                    act=self._policy(seed),
                )
                result = ingest_recording(
                    self.ingest.service, rec, {"experiment": self.id, "iteration": str(self.iteration)}
                )
            arrays = rec.arrays.arrays
            episode = RealEpisode(
                result.video.video_id,
                seed,
                np.stack(holder[0].frames),
                arrays["actions"],
                arrays["rewards"],
                arrays["terminated"],
            )
            self.episodes.append(episode)
            self.real_steps += episode.steps
            self.writer.log(self.real_steps, {"episode_return": episode.total_reward})
            self._check_cancel()

    def _sequences(self) -> list[LatentSequence]:
        out = []
        for ep in self.episodes:
            seq = self.sequences.get(ep.video_id)
            if seq is None:
                seq = episode_sequence(
                    self.model, self.tokenizer, ep.frames, ep.actions, ep.rewards, ep.terminated, video_id=ep.video_id
                )
                if seq is None:
                    continue
                self.sequences[ep.video_id] = seq
            out.append(seq)
        return out

    def _imagined_env(self) -> WorldModelEnv:
        seqs = [s for s in self._sequences() if s.frames >= self.wm["context_frames"]]
        if not seqs:
            raise RuntimeError(
                f"no real episode has {self.wm['context_frames']} latent frames to start imagined "
                "episodes from; collect longer episodes (warmup_steps) or lower context_frames"
            )
        space = self.action_space
        low, high = -1.0, 1.0  # a discrete env ignores them
        if isinstance(space, gym.spaces.Box):
            low, high = float(np.min(space.low)), float(np.max(space.high))
        sampling = (
            Sampling(steps=int(self.wm["sampling_steps"])) if "steps" in self.model.sampling_options else Sampling()
        )
        return WorldModelEnv(
            self.model,
            self.tokenizer,
            seqs,
            num_envs=int(self.agent_plan["imagined_envs"]),
            observation="latents",
            max_episode_steps=int(self.agent_plan["imagined_episode_steps"]),
            context_frames=int(self.wm["context_frames"]),
            sampling=sampling,
            action_low=low,
            action_high=high,
            termination_threshold=float(self.agent_plan.get("termination_threshold", 0.5)),
        )

    def _new_agent(self, env: WorldModelEnv) -> Agent:
        cfg = AgentConfig.for_spaces(
            env.single_observation_space, env.single_action_space, **self.agent_plan["network"]
        )
        torch.manual_seed(self.seed + 1)
        return Agent(cfg).to(self.device)

    def _imagination_config(self) -> ImaginationConfig:
        return ImaginationConfig(**{**self.agent_plan["imagination"], "seed": self.seed + self.iteration})

    @staticmethod
    def _trainer_state(trainer: ImaginationTrainer) -> dict[str, Any]:
        return {
            "optimizer": trainer.optimizer.state_dict(),
            "scale": trainer.normalizer.scale,
            "iteration": trainer.iteration,
        }

    def improve(self) -> dict[str, float]:
        """Tokenizer (first iteration, when the experiment trains it), world model, then the agent."""
        values: dict[str, float] = {}
        clock = time.perf_counter()
        if self.train_tokenizer and self.iteration == 0:
            spec = self.wm["tokenizer"]
            m = fit_tokenizer(
                self.tokenizer,
                self.tok_optimizer,
                [ep.frames for ep in self.episodes],
                steps=int(spec["steps"]),
                batch=int(spec["batch"]),
                clip_frames=1 + self.repeat * 2,
                lr=float(spec["lr"]),
                seed=self.seed,
            )
            values["tokenizer_loss"] = float(m.get("loss", float("nan")))
            values["tokenizer_s"] = time.perf_counter() - clock
            clock = time.perf_counter()
            self.sequences.clear()
            self._check_cancel()
        losses = update_world_model(
            self.model,
            self.wm_optimizer,
            self._sequences(),
            steps=int(self.wm["updates"]),
            batch=int(self.wm["batch"]),
            window=int(self.wm["window"]),
            context_frames=int(self.wm["context_frames"]),
            lr=float(self.wm["lr"]),
            seed=self.seed,
            start_step=self.wm_updates,
        )
        self.wm_updates += int(self.wm["updates"])
        names = {"loss": "world_model_loss", "reward_loss": "reward_loss", "termination_loss": "termination_loss"}
        values.update({names[k]: v for k, v in losses.items() if k in names})
        values["world_model_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        self._check_cancel()

        env = self._imagined_env()
        if self.agent is None:
            self.agent = self._new_agent(env)
        trainer = ImaginationTrainer(self.agent, env, self._imagination_config())
        if self.trainer_state is not None:
            trainer.optimizer.load_state_dict(self.trainer_state["optimizer"])
            trainer.normalizer.scale = self.trainer_state["scale"]
            trainer.iteration = int(self.trainer_state["iteration"])
        self.agent.train()
        imagined, rates, ends, steps = [], [], 0, 0
        for i in range(int(self.agent_plan["updates"])):
            it = trainer.step()
            imagined.append(it.imagined_return)
            rates.append(it.imagined_steps_per_s)
            ends, steps = ends + it.episodes, steps + it.imagined_steps
            if i % 10 == 9:
                self._check_cancel()
        self.agent.eval()
        self.trainer = trainer
        self.trainer_state = self._trainer_state(trainer)
        values["imagined_return"] = float(np.mean(imagined[-10:]))
        values["imagined_steps_per_s"] = float(np.median(rates))
        values["imagined_episode_ends"] = ends / max(1, steps)  # per imagined step: terminations + truncations
        values["imagination_s"] = time.perf_counter() - clock
        # the tokenizer is final from here on: an encoded episode's pixels are not needed again (30,000 real
        # steps at 64x64 would otherwise hold ~370 MB; a resumed run decodes them from the stored videos)
        for ep in self.episodes:
            if ep.video_id in self.sequences:
                ep.frames = ep.frames[:0]
        return values

    def evaluate(self) -> dict[str, float]:
        n = int(self.plan["eval_episodes"])
        if n == 0:
            return {}
        clock = time.perf_counter()
        returns = []
        for j in range(n):
            seed = self.seed + EVAL_SEED_OFFSET + self.iteration * n + j
            ret, steps = run_episode(
                self.plan["env_id"],
                int(self.plan["resolution"]),
                seed,
                self._policy(seed, deterministic=True),
                int(self.plan["max_episode_steps"]),
            )
            returns.append(ret)
            self.eval_steps += steps
        self.last_return = float(np.mean(returns))
        self.best_return = self.last_return if self.best_return is None else max(self.best_return, self.last_return)
        return {
            "real_return": self.last_return,
            "real_return_std": float(np.std(returns)),
            "evaluation_s": time.perf_counter() - clock,
        }

    def checkpoint(self) -> None:
        state = {
            "iteration": self.iteration,
            "real_steps": self.real_steps,
            "eval_steps": self.eval_steps,
            "wm_updates": self.wm_updates,
            "best_return": self.best_return,
            "last_return": self.last_return,
            "episodes": [{"video_id": e.video_id, "seed": e.seed} for e in self.episodes],
        }

        def write(folder: Path) -> None:
            save_world_checkpoint(folder / WORLD_FILE, self.model, optimizer=self.wm_optimizer, step=self.wm_updates)
            save_tokenizer_checkpoint(folder / TOKENIZER_FILE, self.tokenizer)
            self.trainer.save(folder / AGENT_FILE)
            (folder / STATE_FILE).write_text(json.dumps(state))

        self.ckpts.save(self.iteration, write)

    # ---------------------------------------------------------------------------------------- run

    def run(self) -> None:
        self._models()
        self._restore()
        max_iterations = int(self.plan["max_iterations"])
        while self.real_steps < self.budget:
            start = time.perf_counter()
            first = self.iteration == 0
            self.collect(int(self.plan["warmup_steps"] if first else self.plan["steps_per_iteration"]))
            collect_s = time.perf_counter() - start
            values = self.improve()
            values["collect_s"] = collect_s
            values.update(self.evaluate())
            values["iteration_s"] = time.perf_counter() - start
            self.iteration += 1
            self.writer.log(self.real_steps, values, force=True)
            self.writer.progress.notes.update(
                iteration=self.iteration,
                episodes=len(self.episodes),
                eval_steps=self.eval_steps,
                real_steps=self.real_steps,
            )
            self.checkpoint()
            log.info(
                "experiment %s iteration %d: %d real steps, %s",
                self.id,
                self.iteration,
                self.real_steps,
                {k: round(v, 3) for k, v in values.items()},
            )
            if self.iteration >= max_iterations:
                break
        if self.agent is None:  # resumed after the last checkpoint of a finished run
            raise RuntimeError("the experiment ended without an agent")
        self.finish()

    def finish(self) -> None:
        """Outputs first (world model, tokenizer, policy), then the progress that says succeeded."""
        assert self.agent is not None
        with tempfile.TemporaryDirectory(prefix="wl-rl-final-") as tmp:
            folder = Path(tmp) / "model"
            folder.mkdir()
            save_world_checkpoint(
                folder / WORLD_FILE,
                self.model,
                step=self.wm_updates,
                extra={
                    "experiment_id": self.id,
                    "window": self.wm["window"],
                    "context_frames": self.wm["context_frames"],
                },
            )
            save_tokenizer_checkpoint(folder / TOKENIZER_FILE, self.tokenizer)
            publish_files(self.store, folder, model_dir(self.prefix))
            pol = Path(tmp) / "policy"
            pol.mkdir()
            save_policy(
                pol / "policy.safetensors",
                self.agent,
                step=self.iteration,
                extra={"experiment_id": self.id, "action_repeat": self.repeat},
            )
            publish_files(self.store, pol, model_dir(policy_prefix(self.plan["policy_id"])))
        n_eval = int(self.plan["eval_episodes"])
        self.writer.note(
            "lineage",
            {
                "video_ids": [e.video_id for e in self.episodes],
                "training_seeds": [self.seed, self.seed + len(self.episodes)],
                "eval_seeds": [self.seed + EVAL_SEED_OFFSET, self.seed + EVAL_SEED_OFFSET + self.iteration * n_eval],
                "action_repeat": self.repeat,
                "action_kind": self.agent.config.action_kind,
                "agent_config": self.agent.config.to_dict(),
                "world_model_family": self.model.family,
                "world_model_config": self.model.config.to_dict(),
                "tokenizer_key": self.wm.get("tokenizer_key"),
            },
        )
        metrics = {
            "real_steps": float(self.real_steps),
            "episodes": float(len(self.episodes)),
            "iterations": float(self.iteration),
            "eval_steps": float(self.eval_steps),
        }
        if self.last_return is not None:
            metrics["final_return"] = self.last_return
        if self.best_return is not None:
            metrics["best_return"] = self.best_return
        assert self.store.exists(policy_key(self.plan["policy_id"]))
        self.writer.finish("succeeded", metrics)


def run_experiment(plan: dict[str, Any], store: ObjectStore, ingest: Ingest) -> None:
    """The job platform's worker body: run the plan; a cancel marker ends it as cancelled."""
    experiment = Experiment(plan, store, ingest)
    try:
        experiment.run()
    except JobCancelled:
        experiment.writer.finish("cancelled", error="cancelled by user")
    except Exception as exc:
        experiment.writer.progress.error = f"{type(exc).__name__}: {exc}"
        experiment.writer.flush(force=True)
        raise
