"""Autoregressive world model: a GPT over the discrete tokenizer's indices, frame after frame.

Sequence layout (``N = tokens_per_frame = h * w``, ``L`` text tokens, ``T`` frames)::

    [text_0 .. text_{L-1}] [F_0 x_{0,0} .. x_{0,N-1}] [F_1 x_{1,0} .. x_{1,N-1}] ...

Every frame opens with a *frame token* ``F_t`` = learned frame-start vector + the embedding of the action
that leads into frame ``t`` (``actions[:, t-1]``; a learned "no action" vector for ``t = 0`` or when no
actions are given). A token sees the text, every earlier frame, the frame token of its own frame and its
own frame's earlier tokens in raster order: plain causal attention over the flattened sequence, which is
block-causal over time. The output at ``F_t`` predicts ``x_{t,0}`` and the output at ``x_{t,s}`` predicts
``x_{t,s+1}``, so frame ``t``'s ``N`` predictions come from its own ``N + 1``-slot block (the last slot,
``x_{t,N-1}``, predicts nothing and instead summarises the frame for the reward head). Why a separate
frame token rather than adding the action to the frame's tokens: the first token of frame ``t`` must see
the action, and adding ``a_{t-1}`` to the tokens of frame ``t - 1`` would hand frame ``t - 1``'s own
predictions the policy's choice, which depends on that frame's content (a leak).

Text (MiniLM, 384-d) is projected into a prefix of ``L`` tokens, visible to everything after it.

Positions are learned and factorised (frame index + raster index within a frame, see
:class:`~.common.SpaceTimePosEmb`); the frame token of frame ``t`` gets the frame position only.

Vocabulary, two heads:

* ``fsq_levels=None``: a full ``Linear(d_model, vocab_size)`` softmax whose weight is *tied* to the input
  embedding (``tie_embeddings=True``), for any codebook.
* ``fsq_levels=(8, 8, 8, 5, 5, 5)`` (the tokenizer's FSQ levels, ``prod == vocab_size``): an FSQ id *is* a
  tuple of digits (``id = sum d_i * prod(levels[:i])``, the tokenizer's order), so the input embedding is
  the sum of one small table per digit and the head predicts every digit with its own softmax (``sum(levels)
  = 39`` logits instead of 64,000), digits independent given the context. Why: a 64k-way head dominates
  the cost of a small model (three quarters of CPU sampling time, 8M of its parameters) and, with FSQ
  codebooks that use under 1% of their codes, most rows of a joint table are never trained; neighbouring
  codes share digits, so the factorised tables generalise across them. It is what MAGVIT-v2-style
  lookup-free / FSQ tokens are usually modelled with, at the cost of ignoring correlations between the
  digits of one token.

Copy bias (``copy_prev=True``, what ``config_for_data`` builds): the logits of token ``x_{t,s}`` get a learned
gain (one per FSQ digit, or one for a joint head) added on the id the same position held in frame ``t - 1``.
Most of a small scene does not change between frames; without the bias a small model first learns the
codebook's marginal (a blank background) and only much later that "same as before" is the best guess, so
it predicts nothing moving and loses even the still parts. With it, "nothing moves" is the starting point
and the transformer spends its capacity on what changes.

Sampling (:meth:`ARWorldModel.generate`) feeds one token at a time through a :class:`~.common.KVCache`,
or, with ``use_kv_cache=False``, recomputes the whole prefix for each token (the reference the cache is
tested against). Randomness comes only from the given ``torch.Generator`` (Gumbel-max sampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldloom.models.world.base import IncompatibleModel, LatentKind, Sampling, SamplingLimits, WorldModel
from worldloom.models.world.common import (
    SIZES,
    TEXT_DIM,
    ActionEncoder,
    ActionSpec,
    Block,
    DictConfig,
    KVCache,
    RewardHead,
    RMSNorm,
    SpaceTimePosEmb,
    TextConditioner,
    check_transformer_dims,
    coerce_action_spec,
    rand,
    reward_losses,
)

#: starting copy gain (logits): with FSQ digits of 5-8 levels the previous digit starts at ~50-60%
COPY_GAIN_INIT = 2.0
#: largest codebook for which a factorised head's top-k forms the joint distribution (a [B, vocab] tensor)
MAX_JOINT_TOP_K_VOCAB = 1 << 20


@dataclass(frozen=True)
class ARConfig(DictConfig):
    """Everything needed to rebuild an :class:`ARWorldModel`; round-trips through JSON."""

    vocab_size: int = 64_000
    tokens_per_frame: int = 256
    max_frames: int = 16
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    action: ActionSpec | None = None
    #: width of text embeddings (MiniLM: 384); ``None`` disables text conditioning.
    text_dim: int | None = TEXT_DIM
    max_text_tokens: int = 8
    tie_embeddings: bool = True
    #: the tokenizer's FSQ levels: factorised per-digit embedding and head (see the module docstring).
    fsq_levels: tuple[int, ...] | None = None
    reward_head: bool = False
    #: add a learned gain on the previous frame's id at the same position (see the module docstring).
    copy_prev: bool = False
    size: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", coerce_action_spec(self.action))
        check_transformer_dims(self.n_layer, self.d_model, self.n_head, self.mlp_ratio, self.dropout)
        if self.vocab_size < 2 or self.tokens_per_frame < 1 or self.max_frames < 1:
            raise ValueError("vocab_size must be >= 2, tokens_per_frame and max_frames >= 1")
        if self.text_dim is not None and (self.text_dim < 1 or self.max_text_tokens < 1):
            raise ValueError("text_dim and max_text_tokens must be >= 1")
        if self.fsq_levels is not None:
            levels = tuple(int(v) for v in self.fsq_levels)
            object.__setattr__(self, "fsq_levels", levels)
            if not levels or min(levels) < 2 or math.prod(levels) != self.vocab_size:
                raise ValueError(f"fsq_levels {levels} must be >= 2 each with product == vocab_size={self.vocab_size}")

    @classmethod
    def preset(cls, size: str = "tiny", **overrides: Any) -> ARConfig:
        """A named transformer size (see :data:`~.common.SIZES`) with any field overridden."""
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        return cls(size=size, **{**SIZES[size], **overrides})

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, size: str = "tiny", factorized: bool = True, **overrides: Any) -> ARConfig:
        """A preset sized to a discrete tokenizer's codebook (``tokenizer``: its ``TokenizerConfig``);
        ``factorized`` uses its FSQ levels for the per-digit embedding and head."""
        levels = tuple(tokenizer.fsq_levels) if factorized else None
        return cls.preset(size, vocab_size=tokenizer.codebook_size, fsq_levels=levels, **overrides)

    @property
    def max_seq_len(self) -> int:
        """Longest flattened sequence: text prefix + one frame token and ``N`` tokens per frame."""
        return (self.max_text_tokens if self.text_dim else 0) + self.max_frames * (self.tokens_per_frame + 1)


class DigitEmbedding(nn.Module):
    """FSQ id -> sum of one learned vector per digit; ``digits``/``compose`` convert between ids and digits
    in the tokenizer's order (``id = sum d_i * prod(levels[:i])``). One table, rows offset per digit."""

    levels: Tensor  # buffers, registered in __init__
    basis: Tensor
    offsets: Tensor

    def __init__(self, levels: tuple[int, ...], d_model: int) -> None:
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.long)
        self.sizes = [int(v) for v in levels]
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", torch.cumprod(torch.cat([lv.new_ones(1), lv[:-1]]), 0), persistent=False)
        self.register_buffer("offsets", torch.cumsum(lv, 0) - lv, persistent=False)
        self.weight = nn.Parameter(torch.randn(sum(self.sizes), d_model) * 0.02)  # no .item(): meta-safe

    def digits(self, ids: Tensor) -> Tensor:
        return (ids[..., None] // self.basis) % self.levels

    def compose(self, digits: Tensor) -> Tensor:
        return (digits * self.basis).sum(-1)

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(self.digits(ids) + self.offsets, self.weight).sum(-2)


class ARWorldModel(WorldModel):
    """Next-token world model over discrete video tokens ``[B, T, h, w]`` (``h * w = tokens_per_frame``)."""

    family: ClassVar[str] = "ar"
    description: ClassVar[str] = "autoregressive"
    latent_kind: ClassVar[LatentKind] = "discrete"
    time_axis: ClassVar[int] = 1
    sampling_options: ClassVar[tuple[str, ...]] = ("temperature", "top_k")
    throughput_unit: ClassVar[str] = "tokens_per_s"
    config_class = ARConfig

    def __init__(self, config: ARConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d = cfg.d_model
        self.wte: DigitEmbedding | nn.Embedding = DigitEmbedding(cfg.fsq_levels, d) if cfg.fsq_levels else nn.Embedding(cfg.vocab_size, d)
        self.pos = SpaceTimePosEmb(cfg.max_frames, cfg.tokens_per_frame, d)
        self.frame_start = nn.Parameter(torch.zeros(d))
        self.actions = ActionEncoder(cfg.action, d) if cfg.action is not None else None
        self.text = TextConditioner(cfg.text_dim, d, cfg.max_text_tokens) if cfg.text_dim else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_head, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(d)
        if cfg.fsq_levels:
            self.lm_head: nn.Module | None = nn.Linear(d, sum(cfg.fsq_levels), bias=False)
        else:
            self.lm_head = None if cfg.tie_embeddings else nn.Linear(d, cfg.vocab_size, bias=False)
        self.reward = RewardHead(d) if cfg.reward_head else None
        n_gain = len(cfg.fsq_levels) if cfg.fsq_levels else 1
        self.copy_gain = nn.Parameter(torch.full((n_gain,), COPY_GAIN_INIT)) if cfg.copy_prev else None
        self._init_weights()

    @classmethod
    def from_preset(cls, size: str = "tiny", **overrides: Any) -> ARWorldModel:
        return cls(ARConfig.preset(size, **overrides))

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layer)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * self.config.n_layer))
            elif name.endswith(("text.pos", "frame_start", ".null")):
                nn.init.normal_(p, std=0.02)

    # ------------------------------------------------------------------------------------ validation

    def _check_tokens(self, tokens: Tensor, min_frames: int = 1) -> None:
        cfg = self.config
        if tokens.ndim != 4 or tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(f"tokens must be integer [B, T, h, w]; got {tokens.dtype} {tuple(tokens.shape)}")
        b, t, h, w = tokens.shape
        if h * w != cfg.tokens_per_frame:
            raise ValueError(f"frames of {h}x{w} = {h * w} tokens; the model expects tokens_per_frame="
                             f"{cfg.tokens_per_frame}")
        if not min_frames <= t <= cfg.max_frames:
            raise ValueError(f"{t} frames given; between {min_frames} and max_frames={cfg.max_frames} allowed")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
            raise ValueError(f"token ids must lie in [0, vocab_size={cfg.vocab_size})")

    # ------------------------------------------------------------------------------------- embedding

    def _token_emb(self, ids: Tensor, frame: Tensor | int, slot: Tensor | int) -> Tensor:
        """Embedding of image tokens ``ids`` at frame index ``frame`` and raster index ``slot``."""
        return self.wte(ids) + self.pos(frame, slot)

    def _frame_tokens(self, actions: Tensor | None, frames: int, batch: int,
                      action_mask: Tensor | None) -> Tensor:
        """The ``F_t`` slot of every frame: ``[B, frames, d]``."""
        lead = self.frame_start + self.pos.frame[:frames]
        if self.actions is not None:
            lead = lead + self.actions.lead_in(actions, frames, batch, action_mask)
        return lead.expand(batch, frames, -1)

    def _text_prefix(self, text: Tensor | None, batch: int) -> Tensor:
        if text is None or self.text is None:
            return self.frame_start.new_zeros(batch, 0, self.config.d_model)
        return self.text(text)[0]

    def _embed(self, tokens: Tensor, actions: Tensor | None, text: Tensor | None,
               action_mask: Tensor | None) -> Tensor:
        """Flattened input sequence ``[B, L + T * (N + 1), d]`` (see the module docstring)."""
        b, t = tokens.shape[:2]
        n = self.config.tokens_per_frame
        img = self.wte(tokens.reshape(b, t, n)) + self.pos.grid(t)  # same sums as _token_emb, batched
        lead = self._frame_tokens(actions, t, b, action_mask)
        frames = torch.cat([lead[:, :, None].to(img.dtype), img], dim=2).reshape(b, t * (n + 1), -1)
        return torch.cat([self._text_prefix(text, b).to(img.dtype), frames], dim=1)

    # ----------------------------------------------------------------------------------- transformer

    def _transformer(self, x: Tensor, mask: Tensor | None, cache: KVCache | None = None) -> Tensor:
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, cache=cache, layer=i)
        if cache is not None:
            cache.advance(x.shape[1])
        return self.norm(x)

    def _head(self, h: Tensor) -> Tensor:
        """Logits: ``[..., vocab_size]``, or ``[..., sum(fsq_levels)]`` (every digit's logits side by side)."""
        return self.lm_head(h) if self.lm_head is not None else F.linear(h, self.wte.weight)

    def _copy_bias(self, logits: Tensor, prev: Tensor) -> Tensor:
        """``logits [..., V']`` plus the copy gain on ``prev`` (ids ``[...]``, the same position one frame
        earlier); unchanged without ``copy_prev``."""
        if self.copy_gain is None:
            return logits
        if isinstance(self.wte, DigitEmbedding):
            idx = self.wte.digits(prev) + self.wte.offsets
            gain = self.copy_gain.to(logits.dtype).expand(*idx.shape)
        else:
            idx, gain = prev[..., None], self.copy_gain.to(logits.dtype).expand(*prev.shape, 1)
        return logits.scatter_add(-1, idx, gain)

    def _nll(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean negative log-likelihood of ``targets`` per token (factorised: the sum over its digits)."""
        if not isinstance(self.wte, DigitEmbedding):
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        digits = self.wte.digits(targets).reshape(-1, len(self.wte.sizes))
        parts = logits.reshape(-1, logits.shape[-1]).float().split(self.wte.sizes, dim=-1)
        return sum((F.cross_entropy(p, digits[:, i]) for i, p in enumerate(parts)), logits.new_zeros((), dtype=torch.float32))

    @staticmethod
    def _causal_mask(n_new: int, start: int, device: torch.device) -> Tensor | None:
        """Bool mask ``[n_new, start + n_new]``: query ``i`` (position ``start + i``) sees keys ``<= start + i``."""
        if n_new == 1:
            return None  # a single newest token sees everything before it
        q = torch.arange(start, start + n_new, device=device)[:, None]
        return torch.arange(start + n_new, device=device)[None, :] <= q

    def forward(self, tokens: Tensor, actions: Tensor | None = None, text: Tensor | None = None, *,
                action_mask: Tensor | None = None, rewards: Tensor | None = None,
                terminations: Tensor | None = None, context_frames: int = 1) -> dict[str, Tensor]:
        """Teacher-forced pass over ``tokens [B, T, h, w]``.

        Returns ``logits [B, T, h, w, V]`` (``logits[:, t, i, j]`` predicts ``tokens[:, t, i, j]``; with
        ``fsq_levels``: ``digit_logits [B, T, h, w, sum(levels)]``), and
        ``loss`` = next-token cross-entropy (factorised: summed over digits) over frames ``>= context_frames`` (absent if there are none),
        plus reward/termination predictions ``[B, T]`` (and their losses, added to ``loss``, when
        ``rewards`` / ``terminations`` ``[B, T]`` are given) if the reward head is enabled.
        """
        self._check_tokens(tokens)
        b, t, h, w = tokens.shape
        text = self.check_conditioning(b, t, actions, text, action_mask)
        if not 0 <= context_frames <= t:
            raise ValueError(f"context_frames must be in [0, {t}], got {context_frames}")
        n = self.config.tokens_per_frame
        x = self._embed(tokens, actions, text, action_mask)
        hid = self._transformer(x, self._causal_mask(x.shape[1], 0, x.device))
        frames = hid[:, hid.shape[1] - t * (n + 1):].reshape(b, t, n + 1, -1)
        logits = self._head(frames[:, :, :n])
        if self.copy_gain is not None and t > 1:
            flat = tokens.reshape(b, t, n)
            logits = torch.cat([logits[:, :1], self._copy_bias(logits[:, 1:], flat[:, :-1])], dim=1)
        key = "digit_logits" if self.config.fsq_levels else "logits"
        out: dict[str, Tensor] = {key: logits.view(b, t, h, w, -1)}
        if t > context_frames:
            out["ce_loss"] = out["loss"] = self._nll(logits[:, context_frames:], tokens[:, context_frames:])
        if self.reward is not None:
            out["reward"], out["termination_logits"] = self.reward(frames[:, :, n])
            extra = reward_losses(out["reward"], out["termination_logits"], rewards, terminations)
            out.update(extra)
            if extra:
                total = sum(extra.values(), torch.zeros((), device=tokens.device))
                out["loss"] = out["loss"] + total if "loss" in out else total
        elif rewards is not None or terminations is not None:
            raise ValueError("rewards/terminations given but the model has no reward head (config.reward_head)")
        return out

    # -------------------------------------------------------------------------------------- sampling

    def _sample(self, logits: Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None) -> Tensor:
        """Token ids ``[B]`` from head logits ``[B, *]``.

        Factorised heads sample every digit on its own (the digits are independent given the context),
        except with ``top_k``: "the k most likely codes" is a statement about whole codes, so the joint
        log-probabilities (the sum of the digits') are formed over the whole codebook and top-k applies to
        those -- a per-digit top-k would keep far more than k codes (every code for k >= the largest level).
        """
        if not isinstance(self.wte, DigitEmbedding):
            return _sample_categorical(logits, temperature, top_k, generator)
        parts = logits.float().split(self.wte.sizes, -1)
        if top_k is not None and top_k < self.config.vocab_size:
            return _sample_categorical(self._joint_log_probs(parts), temperature, top_k, generator)
        noise = rand((logits.shape[0], logits.shape[-1]), generator, logits.device)
        digits = [_sample_categorical(p, temperature, None, None, u)
                  for p, u in zip(parts, noise.split(self.wte.sizes, -1), strict=True)]
        return self.wte.compose(torch.stack(digits, dim=-1))

    def _joint_log_probs(self, parts: tuple[Tensor, ...]) -> Tensor:
        """``[B, vocab_size]`` log-probabilities of every code, indexed by code id (``id = sum d_i *
        prod(levels[:i])``: digit 0 varies fastest, so the digits are broadcast in reverse order)."""
        b, n = parts[0].shape[0], len(parts)
        joint = parts[0].new_zeros(b, *([1] * n))
        for i, p in enumerate(parts):
            shape = [b] + [1] * n
            shape[n - i] = p.shape[-1]
            joint = joint + torch.log_softmax(p, dim=-1).view(shape)
        return joint.reshape(b, -1)

    @torch.no_grad()
    def generate(self, context_tokens: Tensor, num_frames: int, actions: Tensor | None = None,
                 text: Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, use_kv_cache: bool = True, *,
                 action_mask: Tensor | None = None) -> Tensor:
        """Continue ``context_tokens [B, Tc, h, w]`` (``Tc >= 0``) by ``num_frames`` frames.

        ``actions`` covers context *and* future transitions: ``Tc + num_frames - 1`` steps (or one more,
        unused). ``temperature=0`` is greedy; ``top_k`` keeps the ``k`` most likely ids. Returns
        ``[B, Tc + num_frames, h, w]`` int64 (the context is copied through). Runs in eval mode.
        """
        cfg = self.config
        self._check_tokens(context_tokens, min_frames=0)
        b, tc, h, w = context_tokens.shape
        total = tc + num_frames
        if num_frames < 1 or total > cfg.max_frames:
            raise ValueError(f"need 1 <= num_frames and context + num_frames <= max_frames={cfg.max_frames}; "
                             f"got {tc} + {num_frames}")
        if temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError("temperature must be >= 0 and top_k >= 1")
        text = self.check_conditioning(b, total, actions, text, action_mask)
        was_training = self.training
        self.eval()
        try:
            out = self._generate(context_tokens, total, actions, text, action_mask, temperature, top_k,
                                 generator, use_kv_cache)
        finally:
            self.train(was_training)
        return out.view(b, total, h, w)

    def _generate(self, ctx: Tensor, total: int, actions: Tensor | None, text: Tensor | None,
                  action_mask: Tensor | None, temperature: float, top_k: int | None,
                  generator: torch.Generator | None, use_kv_cache: bool) -> Tensor:
        b, tc = ctx.shape[:2]
        n = self.config.tokens_per_frame
        out = ctx.new_zeros(b, total, n, dtype=torch.long)
        out[:, :tc] = ctx.reshape(b, tc, n)
        # Embeddings of the whole sequence, written as tokens are sampled; both paths read from here.
        prefix = self._embed(out[:, :tc], actions, text, action_mask) if tc else self._text_prefix(text, b)
        lead = self._frame_tokens(actions, total, b, action_mask).to(prefix.dtype)
        seq = prefix.new_zeros(b, prefix.shape[1] + (total - tc) * (n + 1), prefix.shape[2])
        seq[:, : prefix.shape[1]] = prefix
        filled = prefix.shape[1]
        cache = KVCache(self.config.n_layer, seq.shape[1]) if use_kv_cache else None
        for t in range(tc, total):
            seq[:, filled] = lead[:, t]
            filled += 1
            for s in range(n):
                if cache is not None:  # feed only what the cache has not seen yet (frame token + last id)
                    new = seq[:, cache.length:filled]
                    hid = self._transformer(new, self._causal_mask(new.shape[1], cache.length, seq.device), cache)
                else:  # reference path: recompute the full prefix
                    hid = self._transformer(seq[:, :filled], self._causal_mask(filled, 0, seq.device))
                logits = self._head(hid[:, -1])
                if t > 0:
                    logits = self._copy_bias(logits, out[:, t - 1, s])
                tok = self._sample(logits, temperature, top_k, generator)
                out[:, t, s] = tok
                seq[:, filled] = self._token_emb(tok, t, s).to(seq.dtype)
                filled += 1
        return out


    # --------------------------------------------------------------------- the world-model interface

    @classmethod
    def config_for_data(cls, tokenizer_config: Any, latent_shape: Sequence[int], *, size: str,
                        action: ActionSpec | None, reward_head: bool, window: int, context_frames: int,
                        horizon: int, options: dict[str, Any]) -> ARConfig:
        """Vocabulary from the tokenizer's codebook (per-digit head with ``ar_head="factorized"``, the
        default), ``tokens_per_frame`` from the shards, room for the context plus the longest horizon, the
        copy bias (the module docstring says why)."""
        opts = dict(options)
        head = opts.pop("ar_head", None) or "factorized"
        if opts:
            raise ValueError(f"options {sorted(opts)} do not apply to autoregressive models")
        if head not in ("factorized", "joint"):
            raise ValueError(f"ar_head must be 'factorized' or 'joint', got {head!r}")
        if tokenizer_config.kind != cls.latent_kind or len(latent_shape) != 3:
            raise IncompatibleModel("the ar family needs a discrete tokenizer (token shards [t, h, w])")
        _, h, w = latent_shape
        return ARConfig.for_tokenizer(tokenizer_config, size, factorized=head == "factorized",
                                      tokens_per_frame=int(h) * int(w), action=action, reward_head=reward_head,
                                      max_frames=max(window, context_frames + horizon), copy_prev=True)

    def check_tokenizer(self, tokenizer_config: Any) -> None:
        cfg = self.config
        if tokenizer_config.kind != "discrete" or tokenizer_config.codebook_size != cfg.vocab_size:
            raise IncompatibleModel(f"AR model with vocab_size={cfg.vocab_size} needs a discrete tokenizer with as "
                                    f"many codes; tokenizer is {tokenizer_config.kind} "
                                    f"({tokenizer_config.codebook_size} codes)")
        _ = self.latent_grid

    def check_sequences(self, sequences: Sequence[Any]) -> None:
        cfg = self.config
        if sequences[0].kind != "discrete":
            raise ValueError("the AR world model trains on discrete tokens; the shards hold continuous latents")
        h, w = sequences[0].data.shape[-2:]
        if h * w != cfg.tokens_per_frame:
            raise ValueError(f"shards have {h}x{w} tokens per frame; model tokens_per_frame={cfg.tokens_per_frame}")
        top = max(int(s.data.max()) for s in sequences)
        if top >= cfg.vocab_size:
            raise ValueError(f"token id {top} >= model vocab_size={cfg.vocab_size}")

    @property
    def latent_grid(self) -> tuple[int, int]:
        side = math.isqrt(self.config.tokens_per_frame)
        if side * side != self.config.tokens_per_frame:
            raise IncompatibleModel(f"tokens_per_frame={self.config.tokens_per_frame} is not a square latent frame")
        return side, side

    @property
    def items_per_latent_frame(self) -> int:
        return self.config.tokens_per_frame

    @property
    def max_new_latents(self) -> int | None:
        return self.config.max_frames - 1

    @classmethod
    def sequence_limit(cls, config: ARConfig) -> int | None:
        return config.max_frames

    def context_latents(self, num_new: int) -> int:
        return self.config.max_frames - num_new

    def encode_video(self, tokenizer: Any, video: Tensor) -> Tensor:
        return tokenizer.encode(video)[1]

    def decode_latents(self, tokenizer: Any, latents: Tensor) -> Tensor:
        return tokenizer.decode(latents.to(next(tokenizer.parameters()).device)).float()

    def latent_features(self, tokenizer: Any, latents: Tensor) -> Tensor:
        """Token ids -> the FSQ codes they stand for (``[B, dim, T, h, w]`` in [-1, 1])."""
        return tokenizer.indices_to_codes(latents.to(next(tokenizer.parameters()).device)).float()

    def training_inputs(self, batch: dict[str, Tensor], context_frames: int,
                        generator: torch.Generator | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        extra = {k: batch.get(k) for k in ("actions", "text", "rewards", "terminations")}
        return (batch["frames"],), {**extra, "context_frames": context_frames}

    def rollout(self, context: Tensor, num_frames: int, *, actions: Tensor | None = None,
                text: Tensor | None = None, sampling: Sampling | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        sampling = sampling or Sampling()
        temperature = 1.0 if sampling.temperature is None else float(sampling.temperature)
        return self.generate(context, num_frames, actions=actions, text=text, temperature=temperature,
                             top_k=sampling.top_k, generator=generator)

    @torch.no_grad()
    def rollout_rewards(self, latents: Tensor, actions: Tensor | None, text: Tensor | None,
                        context_frames: int) -> tuple[Tensor, Tensor]:
        """One teacher-forced pass over context + rollout."""
        if self.reward is None:
            raise ValueError("the model has no reward head (config.reward_head=False)")
        res = self(latents, actions=actions, text=text, context_frames=latents.shape[1])
        return res["reward"][:, context_frames:], res["termination_logits"][:, context_frames:]

    def conditioning_modules(self) -> tuple[str, ...]:
        """The action encoder (into the frame tokens), the text prefix projection and the reward head;
        the token embedding and LM head are not among them (they are the codebook's, shared with the trunk)."""
        return tuple(n for n in ("actions", "text", "reward") if getattr(self, n) is not None)

    def lora_targets(self) -> tuple[str, ...]:
        """Every Linear of the transformer blocks (attention qkv / output, MLP in / out)."""
        return tuple(n for n, m in self.blocks.named_modules(prefix="blocks") if isinstance(m, nn.Linear))

    def _resolve_sampling(self, sampling: Sampling, limits: SamplingLimits) -> Sampling:
        temperature = limits.default_temperature if sampling.temperature is None else float(sampling.temperature)
        if not 0.0 <= temperature <= limits.max_temperature:
            raise ValueError(f"temperature must be in [0, {limits.max_temperature}], got {temperature}")
        vocab = self.config.vocab_size
        if sampling.top_k is not None and not 1 <= sampling.top_k <= vocab:
            raise ValueError(f"top_k must be in [1, {vocab}], got {sampling.top_k}")
        if sampling.top_k is not None and self.config.fsq_levels and vocab > MAX_JOINT_TOP_K_VOCAB:
            raise ValueError(f"top_k over a factorised head forms the joint distribution over all {vocab} codes; "
                             f"this model's codebook is larger than {MAX_JOINT_TOP_K_VOCAB}: sample without top_k")
        return Sampling(temperature=temperature, top_k=sampling.top_k)


def _sample_categorical(logits: Tensor, temperature: float, top_k: int | None,
                        generator: torch.Generator | None, u: Tensor | None = None) -> Tensor:
    """Gumbel-max sampling (``temperature == 0``: greedy) from ``[B, V]`` -> ``[B]``; ``u`` = uniform noise."""
    logits = logits.float()
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if temperature == 0:
        return logits.argmax(dim=-1)
    if u is None:
        u = rand(tuple(logits.shape), generator, logits.device)
    u = u.clamp(min=torch.finfo(torch.float32).tiny)
    return (logits / temperature - torch.log(-torch.log(u))).argmax(dim=-1)
