"""Requests and records of the RL-sim API: experiments (jobs on the job platform), policies, evaluations."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from worldloom.core.jobs import JobRecord, dataclass_defaults
from worldloom.models.rl import ImaginationConfig
from worldloom.models.world.common import SIZES

_IMAGINATION = dataclass_defaults(ImaginationConfig)
_ID = r"^[a-z0-9][a-z0-9-]{2,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizerSpec(_Strict):
    """A tokenizer the experiment trains itself on its first real episodes (then frozen: the policy acts on
    its latents, so they must not drift under it)."""

    size: str = Field("tiny", description="tokenizer size preset")
    compression: Literal["4x8x8", "8x8x8", "8x16x16"] = "4x8x8"
    channels: int | None = Field(None, ge=4, le=512, description="override the preset's base channels")
    steps: int = Field(300, ge=1, le=100_000, description="reconstruction steps on the warm-up episodes")
    batch: int = Field(8, ge=1, le=256)
    lr: float = Field(1e-3, gt=0, le=1)


class WorldModelSpec(_Strict):
    """The world model to learn in: a registered one to start from (``model_id``: pretrained or post-trained,
    with action conditioning and reward heads) or a new one (``family``, ``size``; its tokenizer is
    ``tokenizer_id`` from the tokenize service or ``tokenizer``, trained by the experiment)."""

    model_id: str | None = Field(None, pattern=_ID, description="start from this registered world model")
    family: Literal["ar", "diffusion"] | None = None
    size: str = Field("tiny", description=f"one of {sorted(SIZES)}")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of the new model's config fields "
        "(e.g. n_layer, d_model): checked by the family's config",
    )
    tokenizer_id: str | None = Field(None, pattern=_ID, description="a trained tokenizer (tokenize service)")
    tokenizer: TokenizerSpec | None = None
    window: int = Field(4, ge=2, le=64, description="latent frames per training window")
    context_frames: int = Field(3, ge=1, le=63, description="latent frames the model and the imagined env condition on")
    updates: int = Field(100, ge=1, le=100_000, description="world-model optimiser steps per iteration")
    batch: int = Field(8, ge=1, le=1024)
    lr: float = Field(3e-4, gt=0, le=1)
    sampling_steps: int = Field(4, ge=1, le=100, description="diffusion family: flow steps per imagined frame")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.model_id is not None:
            if self.family is not None or self.tokenizer_id is not None or self.tokenizer is not None or self.config:
                raise ValueError(
                    "give either model_id (start from a registered model) or a new model's family, "
                    "config and tokenizer, not both"
                )
            return self
        if self.family is None:
            raise ValueError("give model_id or a new model's family ('ar' or 'diffusion')")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}")
        if (self.tokenizer_id is None) == (self.tokenizer is None):
            raise ValueError(
                "a new world model needs exactly one of tokenizer_id (a trained tokenizer) or "
                "tokenizer (trained by the experiment)"
            )
        if self.context_frames >= self.window:
            raise ValueError("context_frames must be smaller than window")
        return self


class AgentSpec(_Strict):
    """The imagination actor-critic (``worldloom.models.rl``): networks, and how it learns per iteration."""

    hidden: int = Field(256, ge=8, le=4096)
    layers: int = Field(2, ge=1, le=8)
    unimix: float = Field(0.01, ge=0, lt=1)
    min_std: float = Field(0.1, gt=0, le=10)
    max_std: float = Field(1.0, gt=0, le=10)
    updates: int = Field(
        50, ge=1, le=100_000, description="imagination iterations (actor + critic steps) per experiment iteration"
    )
    imagined_envs: int = Field(16, ge=1, description="imagined environments stepping in one batch")
    imagined_episode_steps: int = Field(100, ge=1, le=10_000, description="imagined steps before truncation")
    termination_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="an imagined episode ends where the "
        "termination head's probability passes this (rare terminations, e.g. "
        "CartPole's, may need it lower)",
    )
    horizon: int = Field(_IMAGINATION["horizon"], ge=1, le=1000)
    gamma: float = Field(_IMAGINATION["gamma"], ge=0, le=1)
    lam: float = Field(_IMAGINATION["lam"], ge=0, le=1)
    entropy: float = Field(_IMAGINATION["entropy"], ge=0)
    actor_lr: float = Field(_IMAGINATION["actor_lr"], gt=0, le=1)
    critic_lr: float = Field(_IMAGINATION["critic_lr"], gt=0, le=1)

    def imagination(self, seed: int) -> dict[str, Any]:
        names = ("horizon", "gamma", "lam", "entropy", "actor_lr", "critic_lr")
        return {**{n: getattr(self, n) for n in names}, "seed": seed}

    def network(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in ("hidden", "layers", "unimix", "min_std", "max_std")}


class ExperimentRequest(_Strict):
    """An experiment: act in a real env from pixels, ingest the episodes, update the world model, train the
    agent in imagination, evaluate in the real env, repeat until ``steps`` real steps are spent."""

    name: str = Field("experiment", min_length=1, max_length=100)
    env_id: str = Field(min_length=1, max_length=100, description="a Gymnasium id on the server's allow-list")
    resolution: int = Field(64, description="observations are the rendered frames at resolution x resolution")
    steps: int = Field(
        ge=1,
        description="budget of real environment steps (the episodes the world model learns "
        "from); evaluation episodes are counted apart",
    )
    warmup_steps: int = Field(2000, ge=1, description="real steps with a uniform random policy before the first update")
    steps_per_iteration: int = Field(1000, ge=1, description="real steps the current policy collects per iteration")
    max_episode_steps: int | None = Field(
        None, ge=1, description="truncate real episodes here (default: the env's own limit, capped by the server's)"
    )
    eval_episodes: int = Field(
        5,
        ge=0,
        le=100,
        description="real evaluation episodes after each iteration (fresh seeds, deterministic policy; not ingested)",
    )
    world_model: WorldModelSpec
    agent: AgentSpec = AgentSpec()
    seed: int = Field(0, ge=0, le=2**30)
    use_gpu: bool = Field(False, description="train on a GPU (one)")

    @property
    def workers(self) -> int:
        """One process: the real env, the world model and the agent take turns (the job platform checks it)."""
        return 1


class ExperimentLineage(BaseModel):
    base_world_model: str | None = Field(None, description="the registered model the experiment started from")
    tokenizer_id: str | None = Field(
        None,
        description="the registered tokenizer; None when the experiment trained "
        "its own (experiments/<id>/model/tokenizer.safetensors)",
    )
    policy_id: str = ""


class ExperimentRecord(JobRecord):
    """``step``/``total_steps``/``percent`` count real steps; ``curves`` hold (real step, value) points:
    ``real_return`` (mean return of the evaluation episodes), ``episode_return`` (collected episodes),
    ``imagined_return``, ``world_model_loss``, ``reward_loss``, ``termination_loss``, ``tokenizer_loss``,
    ``imagined_steps_per_s``, and seconds per phase (``collect_s``, ``tokenizer_s``, ``world_model_s``,
    ``imagination_s``, ``evaluation_s``, ``iteration_s``); ``notes`` the iteration, episode and step counts."""

    id_field = "experiment_id"

    experiment_id: str
    env_id: str
    resolution: int
    lineage: ExperimentLineage = Field(default_factory=ExperimentLineage)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def real_steps(self) -> int:
        """Real environment steps used so far (``step``; the budget is ``total_steps``)."""
        return self.step


class PolicyLineage(BaseModel):
    experiment_id: str
    env_id: str
    world_model_uri: str = Field(description="the world model the policy was trained in (after the experiment)")
    tokenizer_uri: str = Field(description="the tokenizer whose latents the policy acts on")
    base_world_model: str | None = None
    tokenizer_id: str | None = None
    video_ids: list[str] = Field(
        default_factory=list, description="the ingested real episodes the world model learnt from"
    )
    real_steps: int = 0
    training_seeds: tuple[int, int] = Field((0, 0), description="[first, last + 1) seeds of the training episodes")
    eval_seeds: tuple[int, int] = Field((0, 0), description="[first, last + 1) seeds of the per-iteration evaluations")


class PolicyRecord(BaseModel):
    policy_id: str
    name: str
    env_id: str
    resolution: int
    action_kind: Literal["discrete", "continuous"]
    action_repeat: int = Field(description="real steps per decision (the tokenizer's temporal compression)")
    policy_uri: str
    agent_config: dict[str, Any]
    world_model: dict[str, Any] = Field(description="family and config of the world model")
    lineage: PolicyLineage
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class EvaluateRequest(_Strict):
    episodes: int = Field(10, ge=1, description="real episodes (server limit: max_eval_episodes)")
    seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1_000_000,
        description="first seed (episode k: seed + k); "
        "default: past every seed the experiment used; a seed it trained on is refused",
    )
    deterministic: bool = Field(True, description="the policy's most likely action instead of a sample")
    video: bool = Field(True, description="store the first episode as an MP4 (what the agent saw)")


class EvaluationResult(BaseModel):
    evaluation_id: str
    policy_id: str
    env_id: str
    seeds: list[int]
    returns: list[float]
    lengths: list[int]
    mean_return: float
    std_return: float
    video_key: str | None = Field(None, description="object key of the MP4 of the first episode")
    video_uri: str | None = None
    video_url: str | None = Field(None, description="GET it from this service (path)")
