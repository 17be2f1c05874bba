"""Diffusion world model: a DiT over continuous tokenizer latents, trained with flow matching.

Given clean context latent frames ``[B, C, Tc, h, w]`` it predicts the next ``n_future`` frames.
Context and noisy target frames are patchified (``p x p``) into one token sequence, frame after frame,
and attend to each other (fully, or frame-causally with ``frame_causal=True``).

Flow matching (rectified flow): ``x_t = (1 - t) x_0 + t * noise`` with ``t ~ logit-normal`` (SD3; more
weight on mid noise levels) or uniform, and the network predicts the velocity ``noise - x_0``. Sampling
integrates ``dx/dt = v`` from ``t = 1`` (noise) to ``t = 0`` in a few Euler or Heun steps.

Conditioning enters through adaLN-Zero (DiT), *per frame*: frame ``f`` is modulated by
``timestep_emb(t_f) + action_emb(actions[:, f-1]) + pooled_text``, with ``t_f = 0`` for clean context
frames and the sampled ``t`` for target frames. Per-frame modulation is how the model tells clean from
noisy frames, and gives each frame the action that leads into it. Optionally (``cross_attn=True``) every
block also cross-attends to the projected text tokens.

Classifier-free guidance: during training text and actions are dropped together (replaced by learned
null embeddings) with probability ``cond_drop`` per sample; :meth:`DiffusionWorldModel.sample` mixes
``v_uncond + s * (v_cond - v_uncond)``. Context frames are never dropped, so guidance strengthens the
text/action signal relative to plain continuation.

Residual targets (``residual=True``, what ``config_for_data`` builds): the flow runs on the change from the
last context frame (``target - context[:, :, -1:]``) and sampling adds that frame back. Most of a small
scene stays still from one frame to the next, so an uncertain model's average prediction is "nothing
moves" (copy-last) instead of a grey blur of every possible frame, and capacity goes to what moves.

Long horizons are rolled out in chunks: predict ``n_future`` frames from the last
``max_frames - n_future`` frames, append, repeat (positions are re-indexed from 0 in every window).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

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
    RewardHead,
    RMSNorm,
    SpaceTimePosEmb,
    TextConditioner,
    TimestepEmbedder,
    check_transformer_dims,
    coerce_action_spec,
    modulate,
    rand,
    reward_losses,
)

TSampling = Literal["logit_normal", "uniform"]
Sampler = Literal["euler", "heun"]

#: conditioning of one window: per-frame vectors [B, T, d] (actions + pooled text) and text tokens or None
_Cond = tuple[Tensor, Tensor | None]


@dataclass(frozen=True)
class DiTConfig(DictConfig):
    """Everything needed to rebuild a :class:`DiffusionWorldModel`; round-trips through JSON."""

    in_channels: int = 16
    #: latent frame size ``(h, w)``; fixed because spatial positions are learned.
    latent_size: tuple[int, int] = (16, 16)
    patch_size: int = 2
    #: attention window in frames (context + future); sampling keeps ``max_frames - n_future`` context.
    max_frames: int = 4
    n_future: int = 1
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    action: ActionSpec | None = None
    #: width of text embeddings (MiniLM: 384); ``None`` disables text conditioning.
    text_dim: int | None = TEXT_DIM
    max_text_tokens: int = 8
    cross_attn: bool = False
    #: probability of dropping text + actions together during training (classifier-free guidance).
    cond_drop: float = 0.1
    t_sampling: TSampling = "logit_normal"
    #: frame ``f`` attends only to frames ``<= f`` (else attention over the whole window).
    frame_causal: bool = False
    reward_head: bool = False
    #: flow on ``target - last context frame`` (see the module docstring); needs >= 1 context frame.
    residual: bool = False
    size: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", coerce_action_spec(self.action))
        object.__setattr__(self, "latent_size", tuple(self.latent_size))
        check_transformer_dims(self.n_layer, self.d_model, self.n_head, self.mlp_ratio, self.dropout)
        h, w = self.latent_size
        if self.in_channels < 1 or self.patch_size < 1 or h % self.patch_size or w % self.patch_size or h < 1:
            raise ValueError(f"latent_size {self.latent_size} must be positive multiples of patch_size "
                             f"{self.patch_size}, in_channels >= 1")
        if not 1 <= self.n_future < self.max_frames:
            raise ValueError(f"need 1 <= n_future < max_frames (room for context); got {self.n_future}, "
                             f"{self.max_frames}")
        if not 0.0 <= self.cond_drop <= 1.0:
            raise ValueError(f"cond_drop must be in [0, 1], got {self.cond_drop}")
        if self.t_sampling not in ("logit_normal", "uniform"):
            raise ValueError(f"t_sampling must be 'logit_normal' or 'uniform', got {self.t_sampling!r}")
        if self.text_dim is not None and (self.text_dim < 1 or self.max_text_tokens < 1):
            raise ValueError("text_dim and max_text_tokens must be >= 1")

    @classmethod
    def preset(cls, size: str = "tiny", **overrides: Any) -> DiTConfig:
        """A named transformer size (see :data:`~.common.SIZES`) with any field overridden."""
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        return cls(size=size, **{**SIZES[size], **overrides})

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_size[0] // self.patch_size) * (self.latent_size[1] // self.patch_size)

    @property
    def context_window(self) -> int:
        """Context frames kept per chunk during rollout."""
        return self.max_frames - self.n_future


def patchify(x: Tensor, p: int) -> Tensor:
    """``[B, C, T, H, W]`` -> ``[B, T * H/p * W/p, C * p * p]`` tokens, frame-major then raster order."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)
    return x.reshape(b, t * (h // p) * (w // p), c * p * p)


def unpatchify(x: Tensor, p: int, channels: int, frames: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`patchify`."""
    b = x.shape[0]
    x = x.reshape(b, frames, h // p, w // p, channels, p, p).permute(0, 4, 1, 2, 5, 3, 6)
    return x.reshape(b, channels, frames, h, w)


class DiffusionWorldModel(WorldModel):
    """Flow-matching DiT predicting future latent frames from context latents, actions and text."""

    family: ClassVar[str] = "diffusion"
    description: ClassVar[str] = "diffusion"
    latent_kind: ClassVar[LatentKind] = "continuous"
    time_axis: ClassVar[int] = 2
    sampling_options: ClassVar[tuple[str, ...]] = ("steps", "cfg_scale")
    throughput_unit: ClassVar[str] = "latent_frames_per_s"
    config_class = DiTConfig

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d, p = cfg.d_model, cfg.patch_size
        self.patch_in = nn.Linear(cfg.in_channels * p * p, d)
        self.pos = SpaceTimePosEmb(cfg.max_frames, cfg.tokens_per_frame, d)
        self.t_embed = TimestepEmbedder(d)
        self.actions = ActionEncoder(cfg.action, d) if cfg.action is not None else None
        self.text = TextConditioner(cfg.text_dim, d, cfg.max_text_tokens) if cfg.text_dim else None
        cross = cfg.cross_attn and cfg.text_dim is not None
        self.blocks = nn.ModuleList(Block(d, cfg.n_head, cfg.mlp_ratio, cfg.dropout, cross_attn=cross, adaln=True)
                                    for _ in range(cfg.n_layer))
        self.norm_out = RMSNorm(d, affine=False)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, cfg.in_channels * p * p)
        self.reward = RewardHead(d) if cfg.reward_head else None
        self._init_weights()

    @classmethod
    def from_preset(cls, size: str = "tiny", **overrides: Any) -> DiffusionWorldModel:
        return cls(DiTConfig.preset(size, **overrides))

    def _init_weights(self) -> None:
        """DiT init: xavier linears, N(0, 0.02) embeddings; adaLN projections, the cross-attention output
        and the output layer are zero (adaLN-Zero: every block starts as the identity, v starts at 0)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for lin in self.t_embed.mlp:
            if isinstance(lin, nn.Linear):
                nn.init.normal_(lin.weight, std=0.02)
        blocks = [b for b in self.blocks if isinstance(b, Block)]  # all of them
        zero = [self.ada_out[1], self.out] + [b.ada[1] for b in blocks if b.ada is not None]
        zero += [b.cross.proj for b in blocks if b.cross is not None]
        for lin in zero:  # linears: weight and bias
            for param in lin.parameters():
                nn.init.zeros_(param)
        for name, p in self.named_parameters():
            if name.endswith(("text.pos", ".null")):
                nn.init.normal_(p, std=0.02)

    # ------------------------------------------------------------------------------------ validation

    def _check_latents(self, x: Tensor, name: str, min_frames: int, max_frames: int | None) -> None:
        cfg = self.config
        shape = f"[B, {cfg.in_channels}, T, {cfg.latent_size[0]}, {cfg.latent_size[1]}]"
        if not x.is_floating_point() or x.ndim != 5 or x.shape[1] != cfg.in_channels or \
                tuple(x.shape[3:]) != cfg.latent_size:
            raise ValueError(f"{name} must be float latents {shape}; got {x.dtype} {tuple(x.shape)}")
        if x.shape[2] < min_frames or (max_frames is not None and x.shape[2] > max_frames):
            raise ValueError(f"{name} has {x.shape[2]} frames; {min_frames}..{max_frames} allowed "
                             f"(max_frames={cfg.max_frames} in total)")

    # ----------------------------------------------------------------------------------- the network

    def _conditions(self, batch: int, frames: int, actions: Tensor | None, text: Tensor | None,
                    action_mask: Tensor | None, keep: Tensor | None) -> _Cond:
        """Per-frame conditioning without the timestep ``[B, frames, d]`` and the text tokens (or None).
        ``keep == False`` rows get the null action/text (CFG drop)."""
        cond = self.pos.frame.new_zeros(batch, frames, self.config.d_model)
        if self.actions is not None:
            cond = cond + self.actions.lead_in(actions, frames, batch, action_mask, keep)
        tokens = None
        if self.text is not None:
            tokens, pooled = self.text(text, keep) if text is not None else self.text.null_tokens(batch)
            cond = cond + pooled[:, None]
        return cond, tokens if self.config.cross_attn else None

    def _run(self, clean: Tensor, noisy: Tensor, t: Tensor, cond: _Cond) -> tuple[Tensor | None, Tensor]:
        """-> (velocity for ``noisy`` ``[B, C, Tf, h, w]`` fp32 or None if Tf = 0, per-frame features ``[B, T, d]``)."""
        cfg = self.config
        b, c, tc, h, w = clean.shape
        tf = noisy.shape[2]
        frames, n = tc + tf, cfg.tokens_per_frame
        x = self.patch_in(patchify(torch.cat([clean, noisy.to(clean.dtype)], dim=2), cfg.patch_size))
        x = (x.view(b, frames, n, -1) + self.pos.grid(frames)).flatten(1, 2)
        tau = torch.cat([t.new_zeros(b, tc), t[:, None].expand(b, tf)], dim=1)  # clean context: t = 0
        per_frame, text_tokens = cond
        c_emb = self.t_embed(tau) + per_frame
        mask = None
        if cfg.frame_causal:
            fi = torch.arange(frames, device=x.device).repeat_interleave(n)
            mask = fi[None, :] <= fi[:, None]
        for block in self.blocks:
            x = block(x, mask, cond=c_emb, context=text_tokens)
        feats = x.reshape(b, frames, n, -1).mean(dim=2)
        if tf == 0:
            return None, feats
        shift, scale = self.ada_out(c_emb[:, tc:]).chunk(2, dim=-1)
        y = self.out(modulate(self.norm_out(x[:, tc * n:]), shift, scale))
        return unpatchify(y.float(), cfg.patch_size, c, tf, h, w), feats

    def _sample_t(self, batch: int, generator: torch.Generator | None) -> Tensor:
        if self.config.t_sampling == "uniform":
            return rand((batch,), generator, self.device)
        return torch.sigmoid(rand((batch,), generator, self.device, normal=True))

    def forward(self, context: Tensor, target: Tensor, actions: Tensor | None = None, text: Tensor | None = None,
                *, action_mask: Tensor | None = None, rewards: Tensor | None = None,
                terminations: Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Flow-matching loss for predicting ``target [B, C, Tf, h, w]`` after ``context [B, C, Tc, h, w]``.

        ``actions`` span context + target (``Tc + Tf - 1`` or ``Tc + Tf`` steps); ``text`` ``[B, 384]`` or
        ``[B, L, 384]``. In training mode text and actions are dropped with probability ``cond_drop``.
        Returns ``loss`` (= ``flow_loss`` + reward losses if targets are given), ``velocity`` (the
        prediction), ``t`` ``[B]``, and with the reward head ``reward`` / ``termination_logits``
        ``[B, Tc + Tf]`` (targets ``rewards`` / ``terminations`` have that shape too).
        """
        cfg = self.config
        self._check_latents(context, "context", 0, cfg.max_frames - 1)
        self._check_latents(target, "target", 1, cfg.max_frames - context.shape[2])
        b = context.shape[0]
        if target.shape[0] != b:
            raise ValueError(f"context batch {b} != target batch {target.shape[0]}")
        frames = context.shape[2] + target.shape[2]
        text = self.check_conditioning(b, frames, actions, text, action_mask)
        if self.reward is None and (rewards is not None or terminations is not None):
            raise ValueError("rewards/terminations given but the model has no reward head (config.reward_head)")
        x0 = target.float() - self._anchor(context)
        t = self._sample_t(b, generator)
        noise = rand(tuple(x0.shape), generator, self.device, normal=True)
        tb = t.view(b, 1, 1, 1, 1)
        x_t = (1 - tb) * x0 + tb * noise
        keep = None
        if self.training and cfg.cond_drop > 0:
            keep = rand((b,), generator, self.device) >= cfg.cond_drop
        v, feats = self._run(context, x_t, t, self._conditions(b, frames, actions, text, action_mask, keep))
        assert v is not None
        flow = F.mse_loss(v, noise - x0)
        out: dict[str, Tensor] = {"loss": flow, "flow_loss": flow, "velocity": v, "t": t}
        if self.reward is not None:
            out["reward"], out["termination_logits"] = self.reward(feats)
            extra = reward_losses(out["reward"], out["termination_logits"], rewards, terminations)
            out.update(extra)
            out["loss"] = flow + sum(extra.values(), torch.zeros((), device=flow.device))
        return out

    def _anchor(self, context: Tensor) -> Tensor | float:
        """What the flow's output is added to: the last context frame (residual models) or nothing."""
        if not self.config.residual:
            return 0.0
        if context.shape[2] < 1:
            raise ValueError("a residual diffusion model needs at least one context frame")
        return context[:, :, -1:].float()

    # -------------------------------------------------------------------------------------- sampling

    def _guided(self, clean: Tensor, x: Tensor, t: Tensor, cond: _Cond, uncond: _Cond | None,
                cfg_scale: float) -> Tensor:
        """Velocity with classifier-free guidance (one batched pass for cond + uncond)."""
        if uncond is None:
            v, _ = self._run(clean, x, t, cond)
            assert v is not None
            return v
        tokens = None if cond[1] is None or uncond[1] is None else torch.cat([cond[1], uncond[1]])
        both = (torch.cat([cond[0], uncond[0]]), tokens)
        v, _ = self._run(torch.cat([clean, clean]), torch.cat([x, x]), torch.cat([t, t]), both)
        assert v is not None
        v_c, v_u = v.chunk(2)
        return v_u + cfg_scale * (v_c - v_u)

    def _cond_pair(self, batch: int, frames: int, actions: Tensor | None, text: Tensor | None,
                   action_mask: Tensor | None, cfg_scale: float) -> tuple[_Cond, _Cond | None]:
        cond = self._conditions(batch, frames, actions, text, action_mask, None)
        if cfg_scale == 1.0 or (actions is None and text is None):
            return cond, None
        off = torch.zeros(batch, dtype=torch.bool, device=self.device)
        return cond, self._conditions(batch, frames, actions, text, action_mask, off)

    @torch.no_grad()
    def velocity(self, context: Tensor, x_t: Tensor, t: float | Tensor, actions: Tensor | None = None,
                 text: Tensor | None = None, cfg_scale: float = 1.0, *,
                 action_mask: Tensor | None = None) -> Tensor:
        """Predicted (guided) velocity ``[B, C, Tf, h, w]`` for noisy frames ``x_t`` at time ``t`` (eval mode);
        for a residual model ``x_t`` and the velocity live in residual space (relative to the last context frame)."""
        cfg = self.config
        self._check_latents(context, "context", 0, cfg.max_frames - 1)
        self._check_latents(x_t, "x_t", 1, cfg.max_frames - context.shape[2])
        b, frames = context.shape[0], context.shape[2] + x_t.shape[2]
        text = self.check_conditioning(b, frames, actions, text, action_mask)
        tt = torch.as_tensor(t, dtype=torch.float32, device=self.device).expand(b)
        was_training = self.training
        self.eval()
        try:
            cond, uncond = self._cond_pair(b, frames, actions, text, action_mask, cfg_scale)
            return self._guided(context, x_t.float(), tt, cond, uncond, cfg_scale)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def sample(self, context: Tensor, num_frames: int, actions: Tensor | None = None, text: Tensor | None = None,
               steps: int = 10, cfg_scale: float = 1.0, generator: torch.Generator | None = None, *,
               sampler: Sampler = "euler", action_mask: Tensor | None = None) -> Tensor:
        """Roll out ``num_frames`` new latent frames after ``context [B, C, Tc, h, w]``.

        Works in chunks of ``n_future`` frames (the last one may be shorter), each conditioned on the
        latest ``max_frames - n_future`` frames. ``actions`` cover context and future transitions
        (``Tc + num_frames - 1`` steps, or one more). Each chunk integrates the flow with ``steps``
        Euler (1 evaluation per step) or Heun (2) steps. Returns ``[B, C, Tc + num_frames, h, w]``;
        identical for identical ``generator`` seeds. Runs in eval mode.
        """
        cfg = self.config
        self._check_latents(context, "context", 0, None)  # any length: only the last window is used
        b, c, tc, h, w = context.shape
        total = tc + num_frames
        if num_frames < 1 or steps < 1:
            raise ValueError(f"num_frames and steps must be >= 1; got {num_frames}, {steps}")
        if sampler not in ("euler", "heun"):
            raise ValueError(f"sampler must be 'euler' or 'heun', got {sampler!r}")
        text = self.check_conditioning(b, total, actions, text, action_mask)
        was_training = self.training
        self.eval()
        try:
            video = context.float()
            ts = torch.linspace(1.0, 0.0, steps + 1).tolist()
            while video.shape[2] < total:
                start = max(0, video.shape[2] - cfg.context_window)
                clean = video[:, :, start:]
                n = min(cfg.n_future, total - video.shape[2])
                frames = clean.shape[2] + n
                acts = actions[:, start:start + frames - 1] if actions is not None else None
                mask = action_mask
                if mask is not None and mask.ndim == 3:
                    mask = mask[:, start:start + frames - 1]
                cond, uncond = self._cond_pair(b, frames, acts, text, mask, cfg_scale)
                x = rand((b, c, n, h, w), generator, self.device, normal=True)
                for t0, t1 in itertools.pairwise(ts):
                    tt = torch.full((b,), t0, device=self.device)
                    v = self._guided(clean, x, tt, cond, uncond, cfg_scale)
                    x_next = x + (t1 - t0) * v
                    if sampler == "heun" and t1 > 0:
                        v2 = self._guided(clean, x_next, torch.full((b,), t1, device=self.device), cond, uncond,
                                          cfg_scale)
                        x_next = x + (t1 - t0) * 0.5 * (v + v2)
                    x = x_next
                video = torch.cat([video, x + self._anchor(clean)], dim=2)
        finally:
            self.train(was_training)
        return video.to(context.dtype)

    @torch.no_grad()
    def predict_rewards(self, frames: Tensor, actions: Tensor | None = None, text: Tensor | None = None, *,
                        action_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Reward and termination logits ``[B, T]`` for clean latent frames ``[B, C, T, h, w]`` (e.g. a
        finished rollout window), all passed as context (``t = 0``). Needs ``reward_head=True``."""
        if self.reward is None:
            raise ValueError("the model has no reward head (config.reward_head=False)")
        self._check_latents(frames, "frames", 1, self.config.max_frames)
        b, t = frames.shape[0], frames.shape[2]
        text = self.check_conditioning(b, t, actions, text, action_mask)
        was_training = self.training
        self.eval()
        try:
            empty = frames[:, :, :0]
            zero_t = torch.zeros(b, device=self.device)
            _, feats = self._run(frames, empty, zero_t, self._conditions(b, t, actions, text, action_mask, None))
            reward, term = self.reward(feats)
        finally:
            self.train(was_training)
        return {"reward": reward, "termination_logits": term}

    # --------------------------------------------------------------------- the world-model interface

    @classmethod
    def config_for_data(cls, tokenizer_config: Any, latent_shape: Sequence[int], *, size: str,
                        action: ActionSpec | None, reward_head: bool, window: int, context_frames: int,
                        horizon: int, options: dict[str, Any]) -> DiTConfig:
        """Channels and grid from the shards; a window of ``window`` frames predicting the last
        ``window - context_frames`` (longer horizons roll out in chunks); 2x2 patches from 8x8 latents; residual
        targets (the module docstring says why)."""
        if options:
            raise ValueError(f"options {sorted(options)} do not apply to diffusion models")
        if tokenizer_config.kind != cls.latent_kind or len(latent_shape) != 4:
            raise IncompatibleModel("the diffusion family needs a continuous tokenizer (latent shards [c, t, h, w])")
        c, _, h, w = (int(d) for d in latent_shape)
        return DiTConfig.preset(size, in_channels=c, latent_size=(h, w), patch_size=2 if min(h, w) >= 8 else 1,
                                max_frames=window, n_future=window - context_frames, action=action,
                                reward_head=reward_head, residual=True)

    def check_tokenizer(self, tokenizer_config: Any) -> None:
        cfg = self.config
        if tokenizer_config.kind != "continuous" or tokenizer_config.z_channels != cfg.in_channels:
            raise IncompatibleModel(f"diffusion model with in_channels={cfg.in_channels} needs a continuous "
                                    f"tokenizer with as many latent channels; tokenizer is {tokenizer_config.kind} "
                                    f"({tokenizer_config.z_channels} channels)")

    def check_sequences(self, sequences: Sequence[Any]) -> None:
        cfg = self.config
        if sequences[0].kind != "continuous":
            raise ValueError("the diffusion world model trains on continuous latents; the shards hold tokens")
        c, _, h, w = sequences[0].data.shape
        if c != cfg.in_channels or (h, w) != tuple(cfg.latent_size):
            raise ValueError(f"shards have latents [{c}, T, {h}, {w}]; model expects in_channels="
                             f"{cfg.in_channels}, latent_size={cfg.latent_size}")

    @property
    def latent_grid(self) -> tuple[int, int]:
        h, w = self.config.latent_size
        return int(h), int(w)

    @property
    def items_per_latent_frame(self) -> int:
        return 1

    @property
    def max_new_latents(self) -> int | None:
        return None  # rolls out in chunks of n_future frames

    @classmethod
    def sequence_limit(cls, config: DiTConfig) -> int | None:
        return None  # rolls out in windows

    def context_latents(self, num_new: int) -> int:
        return self.config.context_window

    def encode_video(self, tokenizer: Any, video: Tensor) -> Tensor:
        return tokenizer.encode(video).float()

    def decode_latents(self, tokenizer: Any, latents: Tensor) -> Tensor:
        return tokenizer.decode(latents.float().to(next(tokenizer.parameters()).device)).float()

    def latent_features(self, tokenizer: Any, latents: Tensor) -> Tensor:
        return latents.float()

    def training_inputs(self, batch: dict[str, Tensor], context_frames: int,
                        generator: torch.Generator | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        x = batch["frames"]
        extra = {k: batch.get(k) for k in ("actions", "text", "rewards", "terminations")}
        return (x[:, :, :context_frames], x[:, :, context_frames:]), {**extra, "generator": generator}

    def rollout(self, context: Tensor, num_frames: int, *, actions: Tensor | None = None,
                text: Tensor | None = None, sampling: Sampling | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        sampling = sampling or Sampling()
        steps = 10 if sampling.steps is None else int(sampling.steps)
        cfg_scale = 1.0 if sampling.cfg_scale is None else float(sampling.cfg_scale)
        return self.sample(context.float(), num_frames, actions=actions, text=text, steps=steps, cfg_scale=cfg_scale,
                           generator=generator)

    @torch.no_grad()
    def rollout_rewards(self, latents: Tensor, actions: Tensor | None, text: Tensor | None,
                        context_frames: int) -> tuple[Tensor, Tensor]:
        """The reward head on clean frames (``t = 0``), in windows of at most ``max_frames`` that end at the
        latest frame."""
        total, window = latents.shape[2], self.config.max_frames
        reward = latents.new_zeros(latents.shape[0], total, dtype=torch.float32)
        logits = torch.zeros_like(reward)
        end = total
        while end > context_frames:
            start = max(0, end - window)
            acts = actions[:, start:end - 1] if actions is not None else None
            res = self.predict_rewards(latents[:, :, start:end].float(), acts, text)
            reward[:, start:end], logits[:, start:end] = res["reward"], res["termination_logits"]
            end = start
        return reward[:, context_frames:], logits[:, context_frames:]

    def conditioning_modules(self) -> tuple[str, ...]:
        """The action encoder and the text conditioner (both feed the per-frame adaLN vector) and the
        reward head; the timestep embedder belongs to the flow itself and stays with the trunk."""
        return tuple(n for n in ("actions", "text", "reward") if getattr(self, n) is not None)

    def lora_targets(self) -> tuple[str, ...]:
        """Every Linear of the DiT blocks, the adaLN modulation projections included (they decide how the
        conditioning steers each block, so a new domain's conditioning is adapted there too)."""
        return tuple(n for n, m in self.blocks.named_modules(prefix="blocks") if isinstance(m, nn.Linear))

    def _resolve_sampling(self, sampling: Sampling, limits: SamplingLimits) -> Sampling:
        steps = limits.default_steps if sampling.steps is None else int(sampling.steps)
        if not 1 <= steps <= limits.max_steps:
            raise ValueError(f"steps must be in [1, {limits.max_steps}], got {steps}")
        cfg_scale = 1.0 if sampling.cfg_scale is None else float(sampling.cfg_scale)
        if not 0.0 <= cfg_scale <= limits.max_cfg_scale:
            raise ValueError(f"cfg_scale must be in [0, {limits.max_cfg_scale}], got {cfg_scale}")
        return Sampling(steps=steps, cfg_scale=cfg_scale)
