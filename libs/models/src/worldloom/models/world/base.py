"""The one interface every world-model family implements, so nothing outside the model files branches on
the family.

A family is a class deriving from :class:`WorldModel` (``ARWorldModel`` over discrete tokens,
``DiffusionWorldModel`` over continuous latents). Callers -- the training job, evaluation, the generate
service, the demo, benchmarks -- only use what is declared here:

* what it works on: ``latent_kind`` (the tokenizer kind it needs), ``time_axis`` (where latent frames
  are in a batch), :meth:`encode_video` / :meth:`decode_latents` (through its tokenizer),
  :meth:`latent_features` (latents as the tokenizer's float grid), :meth:`check_tokenizer`,
  :meth:`check_sequences`;
* training: :meth:`training_inputs` (a window batch -> the family's ``forward`` arguments; call it through
  :func:`training_outputs` so a DDP / compiled wrapper's ``forward`` runs), ``throughput_unit`` and
  :attr:`items_per_latent_frame` for the progress curves;
* prediction: :meth:`rollout` (context latents + actions/text + :class:`Sampling` -> continued latents),
  :meth:`resolve_sampling` (defaults and limits of the options that apply to the family; the others are
  refused), :meth:`context_latents` / :attr:`max_new_latents` (the context window), and, with a reward head,
  :meth:`rollout_rewards`;
* construction: :meth:`config_for_data` (a config sized to a tokenizer and its shards);
* post-training (:mod:`worldloom.models.posttrain`): :meth:`conditioning_modules` (what the ``heads``
  method trains) and :meth:`lora_targets` (the Linear layers LoRA adapts by default).

:mod:`.factory` maps family names to classes and saves / loads checkpoints of any family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import Tensor, nn

from worldloom.models.world.common import ActionEncoder, ActionSpec, RewardHead, TextConditioner

LatentKind = Literal["discrete", "continuous"]


@dataclass(frozen=True)
class Sampling:
    """Sampling options. ``temperature`` / ``top_k`` apply to autoregressive families, ``steps`` /
    ``cfg_scale`` to diffusion; :meth:`WorldModel.rollout` reads the ones of its family (None: its default)."""

    temperature: float | None = None
    top_k: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class SamplingLimits:
    """What a deployment allows per request, and the defaults it fills in."""

    max_temperature: float = 5.0
    max_steps: int = 200
    max_cfg_scale: float = 20.0
    default_temperature: float = 1.0
    default_steps: int = 10


class ModelConfig(Protocol):
    """What a family's config offers (a frozen dataclass): a dict form for JSON, and back."""

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig: ...


class IncompatibleModel(ValueError):
    """A world model and a tokenizer (or shards) that do not fit together."""


class WorldModel(nn.Module, ABC):
    """Base of every family: the shared conditioning checks plus the interface (see the module docstring)."""

    family: ClassVar[str]
    #: the family in words, for messages ("autoregressive")
    description: ClassVar[str]
    latent_kind: ClassVar[LatentKind]
    #: axis of latent frames in a batch: 1 for tokens ``[B, T, h, w]``, 2 for latents ``[B, C, T, h, w]``
    time_axis: ClassVar[int]
    #: the :class:`Sampling` fields this family uses
    sampling_options: ClassVar[tuple[str, ...]]
    #: name of the training-throughput curve (e.g. ``tokens_per_s``)
    throughput_unit: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]

    config: Any
    actions: ActionEncoder | None
    text: TextConditioner | None
    reward: RewardHead | None

    # ------------------------------------------------------------------------------------------ shared

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def action_spec(self) -> ActionSpec | None:
        return self.config.action

    def take_frames(self, x: Tensor, start: int, stop: int | None = None) -> Tensor:
        """Latent frames ``start:stop`` of a batch in this family's layout."""
        index = [slice(None)] * x.ndim
        index[self.time_axis] = slice(start, stop)
        return x[tuple(index)]

    def num_frames(self, x: Tensor) -> int:
        return int(x.shape[self.time_axis])

    def check_conditioning(self, batch: int, frames: int, actions: Tensor | None, text: Tensor | None,
                           action_mask: Tensor | None) -> Tensor | None:
        """Validate actions (``frames - 1`` or ``frames`` steps) and text; returns text as ``[B, L, dim]``."""
        if actions is not None:
            if self.actions is None:
                raise ValueError("actions given but the model has no action conditioning (config.action is None)")
            self.actions.check(actions, batch, (max(frames - 1, 0), frames), action_mask)
        elif action_mask is not None:
            raise ValueError("action_mask given without actions")
        if text is None:
            return None
        if self.text is None:
            raise ValueError("text given but the model has no text conditioning (config.text_dim is None)")
        return self.text.check(text, batch)

    def resolve_sampling(self, sampling: Sampling, limits: SamplingLimits) -> Sampling:
        """The options of this family with defaults filled in; options of other families are refused
        (ValueError naming them), out-of-range values too."""
        for name in sorted(set(sampling.given()) - set(self.sampling_options)):
            owners = [c.description for c in WorldModel.__subclasses__() if name in c.sampling_options]
            raise ValueError(f"'{name}' applies to {' / '.join(owners) or 'other'} models; this is "
                             f"{'an' if self.description[0] in 'aeiou' else 'a'} {self.description} model "
                             f"(use {' / '.join(self.sampling_options)})")
        return self._resolve_sampling(sampling, limits)

    # -------------------------------------------------------------------------------- per family

    @classmethod
    @abstractmethod
    def config_for_data(cls, tokenizer_config: Any, latent_shape: Sequence[int], *, size: str,
                        action: ActionSpec | None, reward_head: bool, window: int, context_frames: int,
                        horizon: int, options: dict[str, Any]) -> Any:
        """A config of ``size`` for a tokenizer and one shard's latent array shape (``[t, h, w]`` tokens or
        ``[c, t, h, w]`` latents); ``options`` are family-specific request fields (unknown ones refused)."""

    @abstractmethod
    def check_tokenizer(self, tokenizer_config: Any) -> None:
        """Raise :class:`IncompatibleModel` when the tokenizer's latents are not what this model takes."""

    @abstractmethod
    def check_sequences(self, sequences: Sequence[Any]) -> None:
        """Raise ValueError when training sequences (``data.LatentSequence``) do not fit this model."""

    @property
    @abstractmethod
    def latent_grid(self) -> tuple[int, int]:
        """Latent frame height and width."""

    @property
    @abstractmethod
    def items_per_latent_frame(self) -> int:
        """Units of ``throughput_unit`` per latent frame (tokens per frame, or 1)."""

    @property
    @abstractmethod
    def max_new_latents(self) -> int | None:
        """Longest rollout in latent frames (None: unbounded, e.g. a sliding window)."""

    @classmethod
    @abstractmethod
    def sequence_limit(cls, config: Any) -> int | None:
        """Longest context + rollout in latent frames a model of ``config`` handles (None: unbounded)."""

    @property
    def max_sequence_latents(self) -> int | None:
        return self.sequence_limit(self.config)

    @abstractmethod
    def context_latents(self, num_new: int) -> int:
        """Context latent frames a rollout of ``num_new`` frames conditions on (older ones are dropped)."""

    @abstractmethod
    def encode_video(self, tokenizer: Any, video: Tensor) -> Tensor:
        """Video ``[B, 3, T, H, W]`` in [-1, 1] -> this model's latent layout."""

    @abstractmethod
    def decode_latents(self, tokenizer: Any, latents: Tensor) -> Tensor:
        """Latents in this model's layout -> video ``[B, 3, T, H, W]`` (float)."""

    @abstractmethod
    def latent_features(self, tokenizer: Any, latents: Tensor) -> Tensor:
        """Latents in this model's layout -> the tokenizer's continuous latent grid ``[B, C, T, h, w]``
        float32 (what a policy acting on latents sees, the same for real frames encoded by the tokenizer)."""

    @abstractmethod
    def training_inputs(self, batch: dict[str, Tensor], context_frames: int,
                        generator: torch.Generator | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``forward`` arguments for a window batch (``frames`` and optional ``actions``, ``text``,
        ``rewards``, ``terminations``): the loss covers frames after the first ``context_frames``."""

    @abstractmethod
    def rollout(self, context: Tensor, num_frames: int, *, actions: Tensor | None = None,
                text: Tensor | None = None, sampling: Sampling | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """``context`` continued by ``num_frames`` latent frames (the context is included in the result);
        ``sampling`` None means the family's defaults."""

    @abstractmethod
    def rollout_rewards(self, latents: Tensor, actions: Tensor | None, text: Tensor | None,
                        context_frames: int) -> tuple[Tensor, Tensor]:
        """Predicted reward and termination logits ``[B, T - context_frames]`` of the frames after the
        context of a finished rollout (needs the reward head)."""

    @abstractmethod
    def conditioning_modules(self) -> tuple[str, ...]:
        """Names (as in ``named_modules``) of the conditioning layers and heads this model has: what
        post-training with ``method="heads"`` trains while the dynamics trunk stays frozen."""

    @abstractmethod
    def lora_targets(self) -> tuple[str, ...]:
        """Names of the ``nn.Linear`` layers LoRA adapts when a request names no target modules (the
        trunk's: where the learnt dynamics live); empty when the family has none."""

    @abstractmethod
    def _resolve_sampling(self, sampling: Sampling, limits: SamplingLimits) -> Sampling:
        """Fill defaults and check ranges of this family's own options."""


def unwrap(model: nn.Module) -> WorldModel:
    """The world model inside a DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrapper."""
    inner: Any = model
    while not isinstance(inner, WorldModel):
        inner = getattr(inner, "module", None) or getattr(inner, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"not a world model: {type(model).__name__}")
    return inner


def training_outputs(model: nn.Module, batch: dict[str, Tensor], context_frames: int, *,
                     generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """The model's outputs on one window batch, called through ``model`` itself so a DDP / compiled
    wrapper's ``forward`` runs (gradient sync): ``loss`` and, with reward targets, their losses."""
    args, kwargs = unwrap(model).training_inputs(batch, context_frames, generator)
    return model(*args, **kwargs)
