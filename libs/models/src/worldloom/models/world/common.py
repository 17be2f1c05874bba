"""Pieces shared by the two world-model families: size presets, action/text conditioning, space-time
positions, norm, attention with an optional KV cache, the transformer block, timestep embedding and
reward heads.

Conventions used by both families
---------------------------------
* Frames are indexed ``t = 0 .. T-1``. ``actions[:, t]`` is the action taken *after* observing frame
  ``t``; it leads to frame ``t + 1`` (the usual RL ``(o_t, a_t) -> o_{t+1}`` alignment of datasets).
  Frame ``t >= 1`` is therefore conditioned on ``actions[:, t - 1]`` and frame 0 on a learned
  "no action" vector. A clip of ``T`` frames takes ``T - 1`` actions, or ``T`` (the last one unused,
  which lets datasets pass frame-aligned arrays unchanged).
* Text is a MiniLM sentence embedding: ``[B, 384]`` (one pooled vector) or ``[B, L, 384]`` (a few
  vectors, e.g. one per caption sentence).
* Nothing hard-codes a dtype: under CUDA bf16 autocast linears run in bf16, norms and losses in fp32.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Self, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ActionKind = Literal["continuous", "discrete"]

#: Width of the text embeddings the models accept (all-MiniLM-L6-v2, see ``worldloom.models.text_embedder``).
TEXT_DIM = 384

#: Transformer size presets shared by both families; the same code runs all of them.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=4, d_model=128, n_head=4),
    "small": dict(n_layer=8, d_model=384, n_head=6),
    "base": dict(n_layer=12, d_model=768, n_head=12),
    "large": dict(n_layer=24, d_model=1024, n_head=16),
}


# ---------------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class ActionSpec:
    """What an action is: ``continuous`` vectors of up to ``dim`` values, or one of ``num_actions`` ids.

    ``dim`` is the *maximum* width over embodiments: a robot with fewer action dimensions passes narrower
    vectors, which are zero-padded (see :class:`ActionEncoder`).
    """

    kind: ActionKind = "continuous"
    dim: int = 0
    num_actions: int = 0

    def __post_init__(self) -> None:
        if self.kind == "continuous":
            if self.dim < 1:
                raise ValueError(f"continuous ActionSpec needs dim >= 1, got {self.dim}")
        elif self.kind == "discrete":
            if self.num_actions < 1:
                raise ValueError(f"discrete ActionSpec needs num_actions >= 1, got {self.num_actions}")
        else:
            raise ValueError(f"ActionSpec.kind must be 'continuous' or 'discrete', got {self.kind!r}")

    @classmethod
    def continuous(cls, dim: int) -> ActionSpec:
        return cls("continuous", dim=dim)

    @classmethod
    def discrete(cls, num_actions: int) -> ActionSpec:
        return cls("discrete", num_actions=num_actions)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Frozen config dataclass -> JSON-ready dict (tuples become lists, nested dataclasses dicts)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(asdict(cfg))


def config_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Inverse of :func:`config_to_dict`; unknown keys are an error (a typo must not be ignored)."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class DictConfig:
    """``to_dict`` / ``from_dict`` / ``replace`` for a frozen config dataclass (checkpoint sidecars and job
    records hold the dict), written once for every model and agent config."""

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cast(Self, config_from_dict(cls, d))

    def replace(self, **changes: Any) -> Self:
        return cast(Self, dataclasses.replace(cast(Any, self), **changes))


def coerce_action_spec(action: ActionSpec | dict[str, Any] | None) -> ActionSpec | None:
    """Accept an :class:`ActionSpec`, its dict form (from JSON) or ``None``."""
    if action is None or isinstance(action, ActionSpec):
        return action
    if isinstance(action, dict):
        return ActionSpec(**action)
    raise ValueError(f"action must be an ActionSpec, a dict or None; got {type(action).__name__}")


def check_transformer_dims(n_layer: int, d_model: int, n_head: int, mlp_ratio: float, dropout: float) -> None:
    if n_layer < 1 or n_head < 1 or d_model < 1:
        raise ValueError("n_layer, n_head and d_model must be >= 1")
    if d_model % n_head or (d_model // n_head) % 2:
        raise ValueError(f"d_model ({d_model}) must split into n_head ({n_head}) heads of even width")
    if mlp_ratio <= 0 or not 0.0 <= dropout < 1.0:
        raise ValueError("mlp_ratio must be > 0 and dropout in [0, 1)")


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
         normal: bool = False) -> Tensor:
    """Uniform / normal fp32 noise drawn on the generator's own device, then moved: a CPU generator gives
    the same numbers whether the model sits on the CPU or a GPU."""
    src = generator.device if generator is not None else device
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=generator, device=src).to(device)


# ------------------------------------------------------------------------------------------ conditioning


class ActionEncoder(nn.Module):
    """Actions -> one ``d_model`` vector per time step (plus a learned ``null`` vector for "no action").

    Continuous actions go through a 2-layer MLP, discrete ones through an embedding table.

    Several embodiments with different action widths share one model: every action is zero-padded to
    ``spec.dim`` and the 0/1 validity mask of its dimensions is appended to the input
    (``Linear(2 * dim)``). A padded dimension then contributes nothing through its value (it is zero),
    yet the model still knows which dimensions exist, so "joint 5 is 0" and "there is no joint 5" differ,
    and the mask pattern doubles as an embodiment id. Narrower actions ``[B, T, D < dim]`` get the mask
    for their first ``D`` dimensions automatically; mixed-embodiment batches pass ``action_mask``
    (bool ``[B, dim]`` or ``[B, T, dim]``) with the actions already padded to ``dim``.
    """

    def __init__(self, spec: ActionSpec, d_model: int) -> None:
        super().__init__()
        self.spec = spec
        if spec.kind == "continuous":
            self.proj = nn.Sequential(nn.Linear(2 * spec.dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        else:
            self.embed = nn.Embedding(spec.num_actions, d_model)
        self.null = nn.Parameter(torch.zeros(d_model))

    def check(self, actions: Tensor, batch: int, lengths: tuple[int, ...],
              action_mask: Tensor | None = None) -> None:
        """Raise ``ValueError`` unless ``actions`` fits the spec, the batch and one of ``lengths`` steps."""
        spec = self.spec
        if spec.kind == "continuous":
            if not actions.is_floating_point() or actions.ndim != 3:
                raise ValueError(f"continuous actions must be float [B, T, D<={spec.dim}]; got "
                                 f"{actions.dtype} {tuple(actions.shape)}")
            if actions.shape[-1] > spec.dim or actions.shape[-1] < 1:
                raise ValueError(f"action width {actions.shape[-1]} does not fit ActionSpec.dim={spec.dim} "
                                 "(narrower actions are zero-padded, wider ones are an error)")
            if action_mask is not None:
                if action_mask.dtype != torch.bool or action_mask.shape[-1] != spec.dim or \
                        action_mask.ndim not in (2, 3) or action_mask.shape[0] != actions.shape[0]:
                    raise ValueError(f"action_mask must be bool [B, {spec.dim}] or [B, T, {spec.dim}]; got "
                                     f"{action_mask.dtype} {tuple(action_mask.shape)}")
                if action_mask.ndim == 3 and action_mask.shape[1] != actions.shape[1]:
                    raise ValueError("action_mask [B, T, dim] must have as many steps as actions")
        else:
            if actions.is_floating_point() or actions.is_complex() or actions.ndim != 2:
                raise ValueError(f"discrete actions must be integer [B, T]; got {actions.dtype} "
                                 f"{tuple(actions.shape)}")
            if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= spec.num_actions):
                raise ValueError(f"discrete action ids must lie in [0, {spec.num_actions})")
            if action_mask is not None:
                raise ValueError("action_mask applies to continuous actions only")
        if actions.shape[0] != batch:
            raise ValueError(f"actions batch size {actions.shape[0]} != {batch}")
        if actions.shape[1] not in lengths:
            want = " or ".join(str(n) for n in sorted(set(lengths)))
            raise ValueError(f"expected {want} action steps (actions[:, t] leads from frame t to t+1); "
                             f"got {actions.shape[1]}")

    def forward(self, actions: Tensor, action_mask: Tensor | None = None) -> Tensor:
        """``[B, T, D]`` float or ``[B, T]`` int -> ``[B, T, d_model]``."""
        if self.spec.kind == "discrete":
            return self.embed(actions.long())
        b, t, width = actions.shape
        valid = torch.zeros(self.spec.dim, dtype=torch.bool, device=actions.device)
        valid[:width] = True
        valid = valid.expand(b, t, -1)
        if action_mask is not None:
            valid = valid & (action_mask if action_mask.ndim == 3 else action_mask[:, None])
        m = valid.to(actions.dtype)
        x = F.pad(actions, (0, self.spec.dim - width)) * m
        return self.proj(torch.cat([x, m], dim=-1))

    def lead_in(self, actions: Tensor | None, frames: int, batch: int, action_mask: Tensor | None = None,
                keep: Tensor | None = None) -> Tensor:
        """Per-frame action conditioning ``[B, frames, d]``: frame ``t`` gets ``actions[:, t-1]``; frame 0,
        frames past the given actions, and samples with ``keep == False`` (CFG drop) get ``null``."""
        out = self.null.expand(batch, frames, -1)
        if actions is None or frames < 2:
            return out
        mask = action_mask[:, : frames - 1] if action_mask is not None and action_mask.ndim == 3 else action_mask
        emb = self(actions[:, : frames - 1], mask).to(out.dtype)  # residual stream dtype, also under autocast
        if keep is not None:
            emb = torch.where(keep[:, None, None], emb, self.null)
        return torch.cat([out[:, :1], emb, out[:, 1 + emb.shape[1]:]], dim=1)


class TextConditioner(nn.Module):
    """MiniLM sentence embeddings ``[B, 384]`` or ``[B, L, 384]`` -> ``L`` tokens of width ``d_model``
    (with a learned position per token) and a pooled vector (mean of the projected tokens).

    A learned ``null`` token stands for "no text" (classifier-free guidance drops text to it)."""

    def __init__(self, text_dim: int, d_model: int, max_tokens: int) -> None:
        super().__init__()
        self.text_dim, self.max_tokens = text_dim, max_tokens
        self.proj = nn.Linear(text_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(max_tokens, d_model))
        self.null = nn.Parameter(torch.zeros(d_model))

    def check(self, text: Tensor, batch: int) -> Tensor:
        """Validate and return text as ``[B, L, text_dim]``."""
        if not text.is_floating_point() or text.ndim not in (2, 3) or text.shape[-1] != self.text_dim:
            raise ValueError(f"text must be float [B, {self.text_dim}] or [B, L, {self.text_dim}]; got "
                             f"{text.dtype} {tuple(text.shape)}")
        text = text[:, None] if text.ndim == 2 else text
        if text.shape[0] != batch:
            raise ValueError(f"text batch size {text.shape[0]} != {batch}")
        if not 1 <= text.shape[1] <= self.max_tokens:
            raise ValueError(f"text has {text.shape[1]} tokens; 1..{self.max_tokens} allowed (max_text_tokens)")
        return text

    def forward(self, text: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``[B, L, text_dim]`` -> ``(tokens [B, L, d], pooled [B, d])``; ``keep == False`` rows -> null."""
        tok = self.proj(text).to(self.null.dtype)
        if keep is not None:
            tok = torch.where(keep[:, None, None], tok, self.null.to(tok.dtype))
        return tok + self.pos[: tok.shape[1]], tok.mean(dim=1)

    def null_tokens(self, batch: int) -> tuple[Tensor, Tensor]:
        """What "no text" looks like: one null token and its pooled vector."""
        tok = self.null.expand(batch, 1, -1)
        return tok + self.pos[:1], tok[:, 0]


class SpaceTimePosEmb(nn.Module):
    """Learned, factorised space-time positions: ``frame[t] + space[s]`` (``s`` = raster index in a frame).

    Learned rather than rotary because absolute positions are bounded by the config window anyway
    (``max_frames`` x ``tokens_per_frame``); factorising needs ``T + N`` vectors instead of ``T * N`` and
    still separates "same place, other time" from "same time, other place"; and a token's embedding
    depends on nothing but its own position, which keeps KV caching trivial."""

    def __init__(self, max_frames: int, tokens_per_frame: int, d_model: int) -> None:
        super().__init__()
        self.frame = nn.Parameter(torch.randn(max_frames, d_model) * 0.02)
        self.space = nn.Parameter(torch.randn(tokens_per_frame, d_model) * 0.02)

    def forward(self, frame: Tensor | int, slot: Tensor | int) -> Tensor:
        return self.frame[frame] + self.space[slot]

    def grid(self, frames: int) -> Tensor:
        """Positions of ``frames`` whole frames: ``[frames, tokens_per_frame, d]``."""
        return self.frame[:frames, None] + self.space


class TimestepEmbedder(nn.Module):
    """Diffusion time ``t`` in [0, 1] -> sinusoidal features of ``1000 t`` -> MLP (as in DiT)."""

    def __init__(self, d_model: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000.0 * t.float()[..., None] * freqs
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


# ----------------------------------------------------------------------------------------- transformer


class RMSNorm(nn.Module):
    """RMS normalisation in fp32 (stable under bf16 autocast); ``affine=False`` for adaLN blocks."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        return y.to(x.dtype)


class KVCache:
    """Keys/values of every layer for incremental decoding.

    Layout: per layer one preallocated buffer ``[B, n_head, max_len, head_dim]`` for keys and one for
    values (allocated on first use, in the dtype the projections produce, so bf16 under autocast).
    ``length`` positions are filled; a forward pass of ``n`` new tokens writes ``[length, length + n)``
    in every layer and then :meth:`advance` moves ``length`` on. Preallocation avoids a ``torch.cat``
    (and a reallocation) per generated token.
    """

    def __init__(self, n_layer: int, max_len: int) -> None:
        self.max_len = max_len
        self.length = 0
        self.keys: list[Tensor | None] = [None] * n_layer
        self.values: list[Tensor | None] = [None] * n_layer

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new ``k, v`` ``[B, H, n, hd]`` at the current position; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        if self.keys[layer] is None:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.keys[layer] = k.new_zeros(shape)
            self.values[layer] = v.new_zeros(shape)
        kb, vb = self.keys[layer], self.values[layer]
        assert kb is not None and vb is not None
        kb[:, :, self.length:end] = k
        vb[:, :, self.length:end] = v
        return kb[:, :, :end], vb[:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


class Attention(nn.Module):
    """Multi-head attention via ``F.scaled_dot_product_attention`` with an explicit boolean mask
    (``True`` = may attend). Self-attention (optionally through a :class:`KVCache`) or cross-attention
    to ``context`` tokens."""

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, cross: bool = False) -> None:
        super().__init__()
        self.n_head, self.dropout, self.cross = n_head, dropout, cross
        if cross:
            self.q, self.kv = nn.Linear(d_model, d_model), nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.n_head, c // self.n_head).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor | None = None, context: Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0) -> Tensor:
        b, n, c = x.shape
        if self.cross:
            assert context is not None
            q = self._heads(self.q(x))
            k, v = (self._heads(t) for t in self.kv(context).chunk(2, dim=-1))
        else:
            q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
            if cache is not None:
                k, v = cache.update(layer, k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class MLP(nn.Sequential):
    def __init__(self, d_model: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        hidden = int(d_model * mlp_ratio)
        super().__init__(nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d_model),
                         nn.Dropout(dropout))


def _grouped(x: Tensor, groups: int) -> Tensor:
    """``[B, L, d]`` -> ``[B, G, L/G, d]`` so per-group (per-frame) modulation can broadcast."""
    b, n, c = x.shape
    return x.view(b, groups, n // groups, c)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with ``shift, scale`` ``[B, G, d]`` applied to ``G`` equal
    contiguous token groups of ``x`` ``[B, L, d]`` (``G = 1``: one vector per sample, as in DiT)."""
    g = _grouped(x, shift.shape[1])
    return (g * (1 + scale[:, :, None]) + shift[:, :, None]).flatten(1, 2)


def gate(x: Tensor, g: Tensor) -> Tensor:
    return (_grouped(x, g.shape[1]) * g[:, :, None]).flatten(1, 2)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention (explicit mask, optional KV cache), optional
    cross-attention to text tokens, MLP.

    With ``adaln=True`` (DiT) the norms have no affine parameters; a conditioning vector per token group
    (``cond`` ``[B, G, d]``, e.g. one per frame) produces shift/scale/gate for the attention and MLP
    branches. The projection producing them is zero-initialised by the model (adaLN-Zero), so each block
    starts as the identity.
    """

    def __init__(self, d_model: int, n_head: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 cross_attn: bool = False, adaln: bool = False) -> None:
        super().__init__()
        self.adaln = adaln
        self.norm1 = RMSNorm(d_model, affine=not adaln)
        self.attn = Attention(d_model, n_head, dropout)
        self.norm_x = RMSNorm(d_model) if cross_attn else None
        self.cross = Attention(d_model, n_head, dropout, cross=True) if cross_attn else None
        self.norm2 = RMSNorm(d_model, affine=not adaln)
        self.mlp = MLP(d_model, mlp_ratio, dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 6 * d_model)) if adaln else None

    def forward(self, x: Tensor, mask: Tensor | None = None, cond: Tensor | None = None,
                context: Tensor | None = None, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        if self.ada is not None:
            if cond is None:
                raise ValueError("adaLN block needs cond [B, G, d]")
            sh1, sc1, g1, sh2, sc2, g2 = self.ada(cond).chunk(6, dim=-1)
            x = x + gate(self.attn(modulate(self.norm1(x), sh1, sc1), mask, cache=cache, layer=layer), g1)
        else:
            x = x + self.attn(self.norm1(x), mask, cache=cache, layer=layer)
        if self.cross is not None and context is not None:
            assert self.norm_x is not None
            x = x + self.cross(self.norm_x(x), context=context)
        if self.ada is not None:
            return x + gate(self.mlp(modulate(self.norm2(x), sh2, sc2)), g2)
        return x + self.mlp(self.norm2(x))


# ---------------------------------------------------------------------------------------------- rewards


class RewardHead(nn.Module):
    """Per-frame reward (a regression, MSE) and termination logit (BCE-with-logits) from one summary
    vector per frame ``[B, T, d]``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, 2))

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """-> ``(reward [B, T], termination_logits [B, T])`` in fp32."""
        out = self.mlp(self.norm(h)).float()
        return out[..., 0], out[..., 1]


def reward_losses(reward: Tensor, termination_logits: Tensor, rewards: Tensor | None,
                  terminations: Tensor | None) -> dict[str, Tensor]:
    """MSE on rewards and BCE on termination flags (``[B, T]`` each, same shape as the predictions)."""
    out: dict[str, Tensor] = {}
    for name, target, pred in (("rewards", rewards, reward), ("terminations", terminations, termination_logits)):
        if target is not None and tuple(target.shape) != tuple(pred.shape):
            raise ValueError(f"{name} must have shape {tuple(pred.shape)} (one value per frame); "
                             f"got {tuple(target.shape)}")
    if rewards is not None:
        out["reward_loss"] = F.mse_loss(reward, rewards.float())
    if terminations is not None:
        out["termination_loss"] = F.binary_cross_entropy_with_logits(termination_logits, terminations.float())
    return out
