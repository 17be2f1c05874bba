"""Request models of the train API (records: ``worldloom.models.world.registry.WorldModelRecord``)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from worldloom.core.jobs import JobRequest, dataclass_defaults
from worldloom.models.world.common import SIZES
from worldloom.models.world.job import WorldModelJob

_JOB = dataclass_defaults(WorldModelJob)


class WorldModelJobRequest(JobRequest):
    """A world-model pretraining job; budget and window defaults are the worker job's (``WorldModelJob``)."""

    name: str = Field("world-model", min_length=1, max_length=100)
    family: Literal["ar", "diffusion"]
    size: str = Field("tiny", description=f"one of {sorted(SIZES)}")
    tokenizer_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$",
                              description="discrete tokenizer for 'ar', continuous for 'diffusion'; the clips "
                                          "must have been tokenized with it (activate it in the tokenize service)")
    actions: bool = Field(False, description="condition on the episodes' recorded actions (simulator data)")
    text: bool = Field(_JOB["text"], description="condition on the clips' captions (MiniLM embeddings); every "
                                                 "clip needs one")
    rewards: bool = Field(_JOB["rewards"], description="train reward and termination heads on the episodes' "
                                                       "recorded rewards (simulator data; for RL in imagination)")
    window: int = Field(_JOB["window"], ge=2, le=64, description="latent frames per training window")
    context_frames: int = Field(_JOB["context_frames"], ge=1, le=63)
    eval_horizons: list[int] = Field(default_factory=lambda: list(_JOB["eval_horizons"]), max_length=8)
    steps: int = Field(_JOB["steps"], ge=1)
    batch: int = Field(_JOB["batch"], ge=1, le=1024)
    lr: float = Field(_JOB["lr"], gt=0, le=1)
    checkpoint_every: int = Field(_JOB["checkpoint_every"], ge=1)
    log_every: int = Field(_JOB["log_every"], ge=1)
    eval_steps: int = Field(_JOB["eval_steps"], ge=1, le=100, description="diffusion sampling steps for evaluation")
    seed: int = _JOB["seed"]
    ar_head: Literal["factorized", "joint"] | None = Field(
        None, description="ar family only: one softmax per FSQ digit ('factorized', the default: fast) or one over "
                          "the whole codebook ('joint')")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}")
        if self.context_frames >= self.window:
            raise ValueError("context_frames must be smaller than window")
        return self

    def family_options(self) -> dict[str, str]:
        """Request fields that only one family takes (passed to its ``config_for_data``, which refuses them
        for the others)."""
        return {"ar_head": self.ar_head} if self.ar_head is not None else {}
