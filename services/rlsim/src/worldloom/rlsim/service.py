"""RL-sim logic without HTTP: experiments on the job platform, the policy registry, real-env evaluations.

Everything checkable is refused before anything runs (:class:`RlsimError`, a 4xx with a stable code): the env
(allow-list, Gymnasium registry, ``rgb_array`` rendering, an action space the agent handles, recordable by
ingest), the budget and loop sizes against :class:`~worldloom.rlsim.settings.RlLimits`, the world model
(registered and finished, action-conditioned with reward heads, its action space and resolution the env's)
or a new model's config and tokenizer. Unknown request fields are refused by the schemas (422).

The experiment runs in this process on the job platform's thread (one at a time per replica,
:class:`~worldloom.core.jobs.LocalLauncher`): it steps a real env, the world model and the agent in turns, and
ingests its episodes through the ingest service's code onto this service's bus. Finishing is the platform's
order: the loop writes the world model, tokenizer and policy files; the record becomes ``succeeded``; then
:meth:`ExperimentJobs.announce` writes the policy record and publishes ``policies.trained`` (both keyed by the
policy id, so a repeat after a crash is the same record and the same event).
"""

from __future__ import annotations

import json
import math
import tempfile
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from prometheus_client import Counter

from worldloom.core import events
from worldloom.core.bus import Bus
from worldloom.core.catalog import (
    EXPERIMENT_RECORD,
    EXPERIMENTS_ROOT,
    POLICY_RECORD,
    experiment_prefix,
    experiment_tokenizer_key,
    experiment_world_model_key,
    policy_evaluation_prefix,
    policy_key,
    policy_prefix,
    tokenizer_model_key,
    world_model_key,
)
from worldloom.core.errors import Refusal
from worldloom.core.jobs import JobManager, JobNotFound, JobRegistry, LocalLauncher, WorkerSpec, read_progress
from worldloom.core.jobs.registry import valid_job_id
from worldloom.core.settings import TrainingResources
from worldloom.core.store.base import ObjectNotFound, ObjectStore
from worldloom.models.checkpoint import CheckpointError
from worldloom.models.rl import AgentConfig, load_policy
from worldloom.models.rl.real import FramePolicy
from worldloom.models.tokenizer.job import load_tokenizer
from worldloom.models.world import ActionSpec, IncompatibleModel, family_class
from worldloom.models.world.factory import model_config
from worldloom.models.world.registry import WorldModelRegistry
from worldloom.rlsim import loop
from worldloom.rlsim.schemas import (
    EvaluateRequest,
    EvaluationResult,
    ExperimentLineage,
    ExperimentRecord,
    ExperimentRequest,
    PolicyLineage,
    PolicyRecord,
)
from worldloom.rlsim.settings import RlLimits
from worldloom.sim.envs import resolve_env

EVALUATIONS = Counter("worldloom_rlsim_evaluation_episodes_total", "Real episodes run by policy evaluations")


class RlsimError(Refusal):
    """A refused experiment or evaluation request."""


class ExperimentNotFound(JobNotFound):
    code_name = "experiment_not_found"


def policy_id_of(experiment_id: str) -> str:
    """An experiment's policy id: derived, so a re-run finish writes the same record and event."""
    return "pol-" + experiment_id.split("-", 1)[1]


# ------------------------------------------------------------------------------------------ envs


def check_env(env_id: str, limits: RlLimits) -> tuple[gym.Space, int, int]:
    """(action space, episode step limit, render fps) of an env experiments may use; RlsimError otherwise."""
    if env_id not in limits.allowed_envs:
        raise RlsimError(
            422,
            "env_not_allowed",
            f"{env_id!r} is not on this server's allow-list (rl.allowed_envs: {', '.join(limits.allowed_envs)})",
        )
    spec = gym.registry.get(env_id)
    if spec is None:
        raise RlsimError(422, "unknown_env", f"{env_id!r} is allow-listed but not a registered Gymnasium id here")
    try:
        creator = (
            gym.envs.registration.load_env_creator(spec.entry_point)
            if isinstance(spec.entry_point, str)
            else spec.entry_point
        )
    except Exception as exc:
        raise RlsimError(501, "env_unavailable", f"{env_id}: {type(exc).__name__}: {exc}") from None
    modes = (getattr(creator, "metadata", None) or {}).get("render_modes") or []
    if "rgb_array" not in modes:
        raise RlsimError(
            422,
            "env_cannot_render",
            f"{env_id} has no rgb_array render mode (it renders "
            f"{list(modes) or 'nothing'}): experiments observe the env through its pixels only",
        )
    try:
        env = gym.make(env_id, render_mode="rgb_array")
    except Exception as exc:
        raise RlsimError(422, "env_error", f"could not make {env_id}: {type(exc).__name__}: {exc}") from None
    try:
        space = env.action_space
        fps = int(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    probe_obs = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    try:
        AgentConfig.for_spaces(probe_obs, space)
        if isinstance(space, gym.spaces.Box) and not np.isfinite(np.concatenate([space.low, space.high])).all():
            raise ValueError(f"a Box action space needs finite bounds, got {space}")
    except ValueError as exc:
        raise RlsimError(422, "unsupported_action_space", f"{env_id}: {exc}") from None
    resolve_env(env_id)  # recordable (worldloom.sim's allow-list of env families): IngestError otherwise
    steps = spec.max_episode_steps or limits.max_episode_steps
    return space, min(int(steps), limits.max_episode_steps), fps


def env_action_spec(space: gym.Space) -> ActionSpec:
    if isinstance(space, gym.spaces.Discrete):
        return ActionSpec.discrete(int(space.n))
    assert isinstance(space, gym.spaces.Box)
    return ActionSpec.continuous(int(np.prod(space.shape)))


# --------------------------------------------------------------------------------------- hooks


class ExperimentJobs:
    """:class:`~worldloom.core.jobs.JobHooks` for RL experiments."""

    id_prefix = "rl"

    def __init__(
        self,
        store: ObjectStore,
        bus: Bus,
        registry: JobRegistry[ExperimentRecord],
        limits: RlLimits,
        policies: PolicyRegistry,
    ) -> None:
        self.store, self.bus, self.registry, self.limits, self.policies = store, bus, registry, limits, policies

    # ---------------------------------------------------------------------------------------- plan

    def plan(self, job_id: str, req: ExperimentRequest) -> tuple[ExperimentRecord, dict[str, Any]]:
        lim = self.limits
        if req.steps > lim.max_real_steps:
            raise RlsimError(
                422,
                "budget_too_large",
                f"{req.steps} real steps; the limit is {lim.max_real_steps} (rl.max_real_steps)",
            )
        if not lim.min_resolution <= req.resolution <= lim.max_resolution:
            raise RlsimError(
                422,
                "bad_resolution",
                f"resolution must be within {lim.min_resolution}..{lim.max_resolution}, got {req.resolution}",
            )
        if req.agent.imagined_envs > lim.max_imagined_envs:
            raise RlsimError(
                422,
                "too_many_imagined_envs",
                f"{req.agent.imagined_envs} imagined envs; the limit is {lim.max_imagined_envs}",
            )
        iterations = 1 + math.ceil(max(0, req.steps - req.warmup_steps) / req.steps_per_iteration)
        if iterations > lim.max_iterations:
            raise RlsimError(
                422,
                "too_many_iterations",
                f"{req.steps} steps at {req.steps_per_iteration} per "
                f"iteration after {req.warmup_steps} warm-up steps is {iterations} iterations; the limit "
                f"is {lim.max_iterations} (raise steps_per_iteration)",
            )
        space, episode_limit, _ = check_env(req.env_id, lim)
        max_episode_steps = min(req.max_episode_steps or episode_limit, lim.max_episode_steps)
        wm, lineage = self._world_model(req, env_action_spec(space))
        policy_id = policy_id_of(job_id)
        lineage.policy_id = policy_id
        plan = {
            "experiment_id": job_id,
            "policy_id": policy_id,
            "env_id": req.env_id,
            "resolution": req.resolution,
            "steps": req.steps,
            "warmup_steps": min(req.warmup_steps, req.steps),
            "steps_per_iteration": req.steps_per_iteration,
            "max_episode_steps": max_episode_steps,
            "eval_episodes": req.eval_episodes,
            "max_iterations": lim.max_iterations,
            "seed": req.seed,
            "use_gpu": req.use_gpu,
            "world_model": wm,
            "agent": {
                "network": req.agent.network(),
                "imagination": req.agent.imagination(req.seed),
                "updates": req.agent.updates,
                "imagined_envs": req.agent.imagined_envs,
                "imagined_episode_steps": req.agent.imagined_episode_steps,
                "termination_threshold": req.agent.termination_threshold,
            },
        }
        record = ExperimentRecord(
            experiment_id=job_id,
            name=req.name,
            env_id=req.env_id,
            resolution=req.resolution,
            config=wm["config"],
            request=req.model_dump(mode="json"),
            lineage=lineage,
            total_steps=req.steps,
        )
        return record, plan

    def _world_model(self, req: ExperimentRequest, action: ActionSpec) -> tuple[dict[str, Any], ExperimentLineage]:
        spec = req.world_model
        common = {
            "window": spec.window,
            "context_frames": spec.context_frames,
            "updates": spec.updates,
            "batch": spec.batch,
            "lr": spec.lr,
            "sampling_steps": spec.sampling_steps,
        }
        if spec.model_id is not None:
            return self._registered_model(req, action, common)
        assert spec.family is not None
        family = family_class(spec.family)
        if spec.tokenizer_id is not None:
            tokenizer = self._tokenizer(spec.tokenizer_id)
            if tokenizer.config.kind != family.latent_kind:
                raise RlsimError(
                    422,
                    "tokenizer_kind",
                    f"the {spec.family} family needs a {family.latent_kind} "
                    f"tokenizer; {spec.tokenizer_id} is {tokenizer.config.kind}",
                )
            tokenizer_key: str | None = tokenizer_model_key(spec.tokenizer_id)
        else:
            assert spec.tokenizer is not None
            try:
                tokenizer = loop.build_tokenizer(spec.tokenizer.model_dump(), family.latent_kind)
            except (TypeError, ValueError) as exc:
                raise RlsimError(422, "bad_config", f"tokenizer: {exc}") from None
            tokenizer_key = None
        self._check_resolution(req.resolution, tokenizer.config.s_compression)
        tc = tokenizer.config.t_compression
        with torch.no_grad():
            shape = (
                family.__new__(family)
                .encode_video(tokenizer.eval(), torch.zeros(1, 3, 1 + tc, req.resolution, req.resolution))
                .shape[1:]
            )
        try:
            cfg = family.config_for_data(
                tokenizer.config,
                shape,
                size=spec.size,
                action=action,
                reward_head=True,
                window=spec.window,
                context_frames=spec.context_frames,
                horizon=1,
                options={},
            )
            if spec.config:
                cfg = cfg.replace(**spec.config)
            config = cfg.to_dict()
            model_config(spec.family, config)
        except (TypeError, ValueError, IncompatibleModel) as exc:
            raise RlsimError(422, "bad_config", f"world model: {exc}") from None
        wm = {
            **common,
            "family": spec.family,
            "config": config,
            "base_key": None,
            "tokenizer_key": tokenizer_key,
            "tokenizer": spec.tokenizer.model_dump() if spec.tokenizer is not None else None,
        }
        return wm, ExperimentLineage(tokenizer_id=spec.tokenizer_id)

    def _registered_model(
        self, req: ExperimentRequest, action: ActionSpec, common: dict[str, Any]
    ) -> tuple[dict[str, Any], ExperimentLineage]:
        model_id = req.world_model.model_id or ""
        record = WorldModelRegistry(self.store).raw(model_id)  # ModelNotFound: 404
        if record.state != "succeeded":
            raise RlsimError(409, "model_not_ready", f"world model {model_id} is {record.state}")
        try:
            cfg = model_config(record.family, record.config)
        except (TypeError, ValueError) as exc:
            raise RlsimError(422, "bad_model", f"world model {model_id}: {exc}") from None
        if cfg.action is None:
            raise RlsimError(
                422,
                "no_action_conditioning",
                f"world model {model_id} takes no actions: an agent cannot act in it (train one with actions: true)",
            )
        if not cfg.reward_head:
            raise RlsimError(
                422,
                "no_reward_head",
                f"world model {model_id} has no reward and termination heads (train it with rewards: true)",
            )
        if cfg.action != action:
            raise RlsimError(
                422,
                "action_space_mismatch",
                f"world model {model_id} takes {_describe(cfg.action)} actions; {req.env_id} has {_describe(action)}",
            )
        tokenizer_id = record.lineage.tokenizer_id
        tokenizer = self._tokenizer(tokenizer_id)
        self._check_resolution(req.resolution, tokenizer.config.s_compression)
        model = family_class(record.family)(cfg)
        h, w = model.latent_grid
        s = tokenizer.config.s_compression
        if (h * s, w * s) != (req.resolution, req.resolution):
            raise RlsimError(
                422,
                "resolution_mismatch",
                f"world model {model_id} imagines {w * s}x{h * s} frames; "
                f"the experiment asks for {req.resolution}x{req.resolution}",
            )
        limit = model.context_latents(1)
        if req.world_model.context_frames > limit or req.world_model.window > cfg.max_frames:
            raise RlsimError(
                422,
                "bad_config",
                f"world model {model_id} conditions on at most {limit} latent frames "
                f"and trains on windows of at most {cfg.max_frames}; got context_frames="
                f"{req.world_model.context_frames}, window={req.world_model.window}",
            )
        wm = {
            **common,
            "family": record.family,
            "config": record.config,
            "base_key": world_model_key(model_id),
            "tokenizer_key": tokenizer_model_key(tokenizer_id),
            "tokenizer": None,
        }
        return wm, ExperimentLineage(base_world_model=model_id, tokenizer_id=tokenizer_id)

    def _tokenizer(self, tokenizer_id: str) -> Any:
        try:
            return load_tokenizer(self.store, tokenizer_id)
        except CheckpointError as exc:
            raise RlsimError(422, "bad_tokenizer", str(exc)) from None

    @staticmethod
    def _check_resolution(resolution: int, s_compression: int) -> None:
        if resolution % s_compression:
            raise RlsimError(
                422,
                "bad_resolution",
                f"resolution {resolution} is not a multiple of the tokenizer's spatial compression {s_compression}",
            )

    # -------------------------------------------------------------------------------- run, finish

    def worker(self, record: ExperimentRecord, plan: dict[str, Any]) -> WorkerSpec:
        from worldloom.core.catalog import plan_key

        return WorkerSpec(
            job_id=record.job_id,
            loop=f"{loop.__name__}:run_experiment",
            config=plan,
            plan_key=plan_key(experiment_prefix(record.job_id)),
            workers=1,
            use_gpu=bool(plan.get("use_gpu")),
        )

    def model_key(self, job_id: str) -> str:
        return policy_key(policy_id_of(job_id))

    def announce(self, record: ExperimentRecord) -> None:
        """The policy record (from the experiment's lineage), then ``policies.trained``; both keyed by the
        policy id."""
        policy = self.policies.record_for(record)
        payload = events.PolicyTrained(
            policy_id=policy.policy_id,
            experiment_id=record.experiment_id,
            env_id=record.env_id,
            policy_uri=policy.policy_uri,
            world_model_uri=policy.lineage.world_model_uri,
            tokenizer_uri=policy.lineage.tokenizer_uri,
            base_world_model=policy.lineage.base_world_model or "",
            video_ids=policy.lineage.video_ids,
            real_steps=policy.lineage.real_steps,
            resolution=policy.resolution,
            action_kind=policy.action_kind,
            metrics=policy.metrics,
        )
        env = events.new_event(
            "rlsim",
            payload,
            lineage=[record.experiment_id, *policy.lineage.video_ids[:16]],
            event_id=events.effect_id(events.TOPIC_POLICIES_TRAINED, policy.policy_id),
        )
        self.bus.publish(events.TOPIC_POLICIES_TRAINED, env, policy.policy_id)


def _describe(spec: ActionSpec) -> str:
    return f"Discrete({spec.num_actions})" if spec.kind == "discrete" else f"continuous {spec.dim}-D"


# -------------------------------------------------------------------------------------- policies


class PolicyNotFound(Refusal, LookupError):
    def __init__(self, message: str) -> None:
        super().__init__(404, "policy_not_found", message)


class PolicyRegistry:
    """``policies/<id>/record.json`` next to the policy's files; written once per policy, by the announce step."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def key(self, policy_id: str) -> str:
        return f"{policy_prefix(policy_id)}/{POLICY_RECORD}"

    def get(self, policy_id: str) -> PolicyRecord:
        if not valid_job_id(policy_id):
            raise PolicyNotFound(f"no policy {policy_id!r}")
        try:
            return PolicyRecord.model_validate_json(self.store.get_bytes(self.key(policy_id)))
        except ObjectNotFound:
            raise PolicyNotFound(f"no policy {policy_id!r}") from None

    def list(self) -> list[PolicyRecord]:
        ids = sorted(
            {
                i.key.split("/")[1]
                for i in self.store.list("policies/")
                if i.key.endswith(f"/{POLICY_RECORD}") and i.key.count("/") == 2
            }
        )
        return sorted((self.get(i) for i in ids), key=lambda r: r.created_at, reverse=True)

    def record_for(self, experiment: ExperimentRecord) -> PolicyRecord:
        """The policy record of a finished experiment, written if it is not there yet."""
        policy_id = policy_id_of(experiment.experiment_id)
        try:
            return self.get(policy_id)
        except PolicyNotFound:
            pass
        progress = read_progress(self.store, experiment_prefix(experiment.experiment_id))
        notes = (progress.notes if progress else {}).get("lineage") or {}
        if not notes:
            raise RuntimeError(f"experiment {experiment.experiment_id} finished without its lineage notes")
        eid = experiment.experiment_id
        tokenizer_uri = self.store.uri(experiment_tokenizer_key(eid))
        lineage = PolicyLineage(
            experiment_id=eid,
            env_id=experiment.env_id,
            world_model_uri=self.store.uri(experiment_world_model_key(eid)),
            tokenizer_uri=tokenizer_uri,
            base_world_model=experiment.lineage.base_world_model,
            tokenizer_id=experiment.lineage.tokenizer_id,
            video_ids=list(notes["video_ids"]),
            real_steps=int(experiment.metrics.get("real_steps", experiment.total_steps)),
            training_seeds=tuple(notes["training_seeds"]),
            eval_seeds=tuple(notes["eval_seeds"]),
        )
        record = PolicyRecord(
            policy_id=policy_id,
            name=experiment.name,
            env_id=experiment.env_id,
            resolution=experiment.resolution,
            action_kind=notes["action_kind"],
            action_repeat=int(notes["action_repeat"]),
            policy_uri=self.store.uri(policy_key(policy_id)),
            agent_config=notes["agent_config"],
            world_model={"family": notes["world_model_family"], "config": notes["world_model_config"]},
            lineage=lineage,
            metrics=experiment.metrics,
        )
        self.store.put_bytes(self.key(policy_id), record.model_dump_json(indent=1).encode(), "application/json")
        return record


# --------------------------------------------------------------------------------------- service


class RlsimService:
    def __init__(
        self, store: ObjectStore, bus: Bus, limits: RlLimits, resources: TrainingResources, ingest: loop.Ingest
    ) -> None:
        self.store, self.limits = store, limits
        self.registry: JobRegistry[ExperimentRecord] = JobRegistry(
            store,
            ExperimentRecord,
            root=EXPERIMENTS_ROOT,
            record_file=EXPERIMENT_RECORD,
            not_found=ExperimentNotFound,
            kind="experiment",
            metric_kind="rl_experiment",
        )
        self.policies = PolicyRegistry(store)
        self.hooks = ExperimentJobs(store, bus, self.registry, limits, self.policies)

        def runner(spec: WorkerSpec) -> None:
            loop.run_experiment(spec.config, store, ingest)

        # an experiment request is no JobRequest (no dataset: it makes its own data) but has what the platform
        # checks: steps (the real-step budget), workers (always 1) and use_gpu
        self.jobs = JobManager(
            store,
            self.registry,
            self.hooks,
            resources,  # type: ignore[type-var]
            launcher=LocalLauncher(runner),
        )

    # ---------------------------------------------------------------------------------- evaluate

    def evaluate(self, policy_id: str, req: EvaluateRequest) -> EvaluationResult:
        """``req.episodes`` real episodes on fresh seeds: returns, lengths and an MP4 of the first episode."""
        policy = self.policies.get(policy_id)
        if req.episodes > self.limits.max_eval_episodes:
            raise RlsimError(
                422,
                "too_many_episodes",
                f"{req.episodes} episodes; the limit is {self.limits.max_eval_episodes} (rl.max_eval_episodes)",
            )
        lo, hi = policy.lineage.training_seeds
        first = req.seed if req.seed is not None else max(hi, policy.lineage.eval_seeds[1])
        seeds = list(range(first, first + req.episodes))
        if seeds[0] < hi and seeds[-1] >= lo:
            raise RlsimError(
                422,
                "seed_used_in_training",
                f"seeds {seeds[0]}..{seeds[-1]} overlap the training "
                f"episodes' seeds {lo}..{hi - 1}; evaluate on seeds the policy never saw",
            )
        space, max_steps, _ = check_env(policy.env_id, self.limits)
        agent = load_policy(self.store, policy_key(policy_id))
        model, tokenizer = loop.load_experiment_models(self.store, policy.lineage.experiment_id)
        evaluation_id = uuid.uuid4().hex[:12]
        prefix = policy_evaluation_prefix(policy_id, evaluation_id)
        returns, lengths = [], []
        video_key = None
        with tempfile.TemporaryDirectory(prefix="wl-rl-eval-") as tmp:
            for k, seed in enumerate(seeds):
                act = FramePolicy(
                    space,
                    agent,
                    model,
                    tokenizer,
                    action_repeat=policy.action_repeat,
                    seed=seed,
                    deterministic=req.deterministic,
                )
                video = Path(tmp) / "episode-0.mp4" if (k == 0 and req.video) else None
                ret, steps = loop.run_episode(policy.env_id, policy.resolution, seed, act, max_steps, video)
                returns.append(ret)
                lengths.append(steps)
                EVALUATIONS.inc()
                if video is not None:
                    video_key = f"{prefix}/episode-0.mp4"
                    with open(video, "rb") as f:
                        self.store.put_file(video_key, f, video.stat().st_size, "video/mp4")
        result = EvaluationResult(
            evaluation_id=evaluation_id,
            policy_id=policy_id,
            env_id=policy.env_id,
            seeds=seeds,
            returns=returns,
            lengths=lengths,
            mean_return=float(np.mean(returns)),
            std_return=float(np.std(returns)),
            video_key=video_key,
            video_uri=self.store.uri(video_key) if video_key else None,
            video_url=f"/v1/policies/{policy_id}/evaluations/{evaluation_id}/video" if video_key else None,
        )
        self.store.put_bytes(
            f"{prefix}/result.json", json.dumps(result.model_dump(mode="json")).encode(), "application/json"
        )
        return result

    def evaluation_video(self, policy_id: str, evaluation_id: str) -> bytes:
        self.policies.get(policy_id)
        if not valid_job_id(evaluation_id):
            raise RlsimError(404, "evaluation_not_found", f"no evaluation {evaluation_id!r}")
        try:
            return self.store.get_bytes(f"{policy_evaluation_prefix(policy_id, evaluation_id)}/episode-0.mp4")
        except ObjectNotFound:
            raise RlsimError(
                404, "evaluation_not_found", f"policy {policy_id} has no evaluation video {evaluation_id}"
            ) from None

    def close(self) -> None:
        self.jobs.close()
