"""Request models of the posttrain API (records: ``worldloom.models.world.registry.WorldModelRecord``)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worldloom.core.clipsearch import SearchRequest
from worldloom.core.jobs import JobRequest, dataclass_defaults
from worldloom.core.selection import DatasetRef
from worldloom.models.posttrain.job import PosttrainJob

_JOB = dataclass_defaults(PosttrainJob)
_ID = r"^[a-z0-9][a-z0-9-]{2,63}$"


class SearchData(SearchRequest):
    """A search over curated clips (text, an image or a clip id; filters; ``top_k``) whose hits the job
    trains on; they are saved as a dataset version (the query in its manifest) before the job starts."""

    save_as: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
                                description="dataset name for the hits (default posttrain-<model id>)")


class LoraRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, ge=1, le=1024)
    alpha: int = Field(16, ge=1, le=65536, description="the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, min_length=1, max_length=256,
                                             description="Linear layer names (peft's rule: a name or its last "
                                                         "dotted parts); default: the family's trunk layers")


class ActionRequest(BaseModel):
    """The new embodiment's action space; when given it must be the episodes' (taken from them when not)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["continuous", "discrete"]
    dim: int = Field(0, ge=0, le=4096, description="continuous: the action width")
    num_actions: int = Field(0, ge=0, le=1_000_000, description="discrete: the number of action ids")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind == "continuous" and self.dim < 1:
            raise ValueError("a continuous action needs dim >= 1")
        if self.kind == "discrete" and self.num_actions < 1:
            raise ValueError("a discrete action needs num_actions >= 1")
        return self

    def spec(self) -> dict[str, int | str]:
        return {"kind": self.kind, "dim": self.dim if self.kind == "continuous" else 0,
                "num_actions": self.num_actions if self.kind == "discrete" else 0}


class PosttrainRequest(JobRequest):
    """A post-training job on a registered model. The data: exactly one of ``dataset``, ``clips`` or
    ``search``. The budget: ``steps``, or ``minutes`` of training (``steps`` then caps it)."""

    name: str = Field("posttrained", min_length=1, max_length=100)
    base_model: str = Field(pattern=_ID, description="a succeeded model of the registry (pretrained or post-trained)")
    tokenizer_id: str | None = Field(None, pattern=_ID, description="optional check: the tokenizer the data is "
                                     "tokenized with; it must be the base model's")
    search: SearchData | None = Field(None, description="or the hits of a search (saved as a dataset version)")
    mode: Literal["unsupervised", "supervised", "action", "reward"] = Field(
        description="unsupervised: a new domain's unlabeled video; supervised: captions / instructions as text "
                    "conditioning; action: a new embodiment's actions; reward: reward and termination heads")
    method: Literal["full", "lora", "heads"] = Field(
        "lora", description="full: every weight; lora: low-rank adapters on the trunk (peft); heads: only the "
                            "conditioning layers and heads (and the mode's new modules)")
    lora: LoraRequest | None = Field(None, description="method lora only (defaults when omitted)")
    merge: bool = Field(False, description="lora: fold the adapter into a plain model (default: keep only the "
                                           "adapter, served on top of the base)")
    action: ActionRequest | None = Field(None, description="action / reward mode: the action space (default: the "
                                                     "episodes')")
    resize_actions: bool = Field(False, description="action / reward mode: rebuild the action encoder for a width / kind "
                                                    "the base's does not take (required for one that does not fit)")
    baselines: list[Literal["scratch"]] = Field(default_factory=list, max_length=1, description=(
        "also train a same-size model from scratch on the same data with the same budget and evaluate it"))
    minutes: float | None = Field(None, gt=0, description="wall-time budget per phase instead of a step count")
    steps: int = Field(_JOB["steps"], ge=1)
    window: int | None = Field(None, ge=2, le=64, description="latent frames per window (default: the base's)")
    context_frames: int | None = Field(None, ge=1, le=63, description="default: the base's")
    eval_horizons: list[int] = Field(default_factory=lambda: list(_JOB["eval_horizons"]), max_length=8)
    batch: int = Field(_JOB["batch"], ge=1, le=1024)
    lr: float = Field(_JOB["lr"], gt=0, le=1)
    checkpoint_every: int = Field(_JOB["checkpoint_every"], ge=1)
    log_every: int = Field(_JOB["log_every"], ge=1)
    val_every: int = Field(_JOB["val_every"], ge=1, description="steps between held-out validation-loss points")
    eval_steps: int = Field(_JOB["eval_steps"], ge=1, le=100, description="diffusion sampling steps for evaluation")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of the clips held out for evaluation, as whole "
                                                             "episodes / source videos (never single clips)")
    held_out: DatasetRef | None = Field(None, description=(
        "the evaluation episodes as a saved dataset (e.g. a benchmark's val split) instead of a hashed "
        "val_fraction of the data: every selected clip of their videos leaves training"))

    @model_validator(mode="after")
    def _one_data_source(self) -> Self:  # replaces JobRequest's: a search is a third source
        given = [k for k in ("dataset", "clips", "search") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of 'dataset', 'clips' or 'search' (got {given or 'none'})")
        if self.lora is not None and self.method != "lora":
            raise ValueError(f"'lora' options given but the method is {self.method!r}")
        if self.merge and self.method != "lora":
            raise ValueError("'merge' applies to method 'lora' only")
        if (self.action is not None or self.resize_actions) and self.mode not in ("action", "reward"):
            raise ValueError("'action' and 'resize_actions' apply to modes 'action' and 'reward' only")
        if self.window is not None and self.context_frames is not None and self.context_frames >= self.window:
            raise ValueError("context_frames must be smaller than window")
        return self
