"""World-model inference without any serving layer: context video in, predicted video frames out.

One :class:`WorldModelEngine` wraps a :class:`~worldloom.models.world.registry.LoadedWorldModel`
(world model + its tokenizer) and answers :class:`GenerateRequest` s:

1. the context frames (uint8 ``[B, T, H, W, 3]``) are brought to the model's training resolution
   (``R x R`` with ``R = latent side * spatial compression``; other sizes are centre-cropped to a square
   and resized when ``resize`` is on, else refused) and cut to a causal length ``1 + k * tc`` that fits
   the model's window: the *oldest* frames are dropped;
2. the tokenizer encodes them into the model's latent layout (``WorldModel.encode_video``);
3. the world model predicts ``ceil(num_frames / tc)`` latent frames (``WorldModel.rollout`` with the
   request's sampling options, checked by ``WorldModel.resolve_sampling``), with a CPU ``torch.Generator``
   seeded from the request, so the same seed gives the same frames on any device;
4. context + predicted latents are decoded *together* (the decoder is causal, so the new frames see the
   context) and the first ``num_frames`` new video frames are returned.

Actions follow the world models' convention (``actions[t - 1]`` leads into latent frame ``t``), given
either per latent transition (``Lc + Ln - 1`` rows, or one more, unused) or per video-frame transition
of the frames the request sent (``T + Ln * tc - 1`` rows), which are pooled per latent frame as in
training (mean for continuous actions, last id for discrete ones; see ``worldloom.models.world.data``).

Every violation raises :class:`BadInput` with a sentence naming the limit; the serving layer maps it to 400.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from worldloom.generate.settings import Limits
from worldloom.models.frames import fit_frames
from worldloom.models.tokenizer.data import frames_to_tensor, tensor_to_frames
from worldloom.models.world import Sampling as ModelSampling
from worldloom.models.world import SamplingLimits
from worldloom.models.world.registry import LoadedWorldModel

MAX_SEED = 2**63 - 1


class BadInput(ValueError):
    """The request cannot be served as given; the message says why (maps to HTTP 400)."""


@dataclass
class Sampling:
    """A request's seed and sampling options (which options apply depends on the model's family)."""

    seed: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None

    def options(self) -> ModelSampling:
        return ModelSampling(temperature=self.temperature, top_k=self.top_k, steps=self.steps,
                             cfg_scale=self.cfg_scale)


@dataclass
class GenerateRequest:
    context: np.ndarray  # uint8 [B, T, H, W, 3]
    num_frames: int
    actions: np.ndarray | None = None  # [B, N, D] float | [B, N] int
    text: list[str] | None = None  # one prompt, or one per batch item
    sampling: Sampling = field(default_factory=Sampling)
    resize: bool = True


@dataclass
class GenerateResult:
    frames: np.ndarray  # uint8 [B, num_frames, R, R, 3]
    seed: int
    context_frames_used: int  # video frames of the context that were encoded (the latest ones)
    context_latent_frames: int
    predicted_latent_frames: int
    info: dict[str, Any] = field(default_factory=dict)
    #: with a reward head: predicted reward and termination probability per predicted latent frame [B, Ln]
    rewards: np.ndarray | None = None
    terminations: np.ndarray | None = None


def _text_embedder() -> Callable[[list[str]], np.ndarray]:
    from worldloom.models.text_embedder import shared_text_embedder

    return shared_text_embedder().encode


class WorldModelEngine:
    """Inference for one loaded world model; thread-safe (one generation at a time)."""

    def __init__(self, loaded: LoadedWorldModel, limits: Limits | None = None, *, default_steps: int = 10,
                 default_temperature: float = 1.0,
                 embed_text: Callable[[list[str]], np.ndarray] | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.limits = limits or Limits()
        self.default_steps = default_steps
        self.default_temperature = default_temperature
        self._embed_text = embed_text
        self._lock = threading.Lock()
        tcfg = self.tokenizer.config
        self.tc, self.sc = tcfg.t_compression, tcfg.s_compression
        self.family = self.model.family
        self.model.check_tokenizer(tcfg)  # IncompatibleModel: a registry / training problem
        self.latent_hw = self.model.latent_grid
        self.resolution = (self.latent_hw[0] * self.sc, self.latent_hw[1] * self.sc)
        self.device = next(self.model.parameters()).device
        self.tok_device = next(self.tokenizer.parameters()).device

    # ------------------------------------------------------------------------------------- properties

    @property
    def action_spec(self) -> Any:
        return self.model.config.action

    @property
    def has_text(self) -> bool:
        return self.model.config.text_dim is not None

    @property
    def max_num_frames(self) -> int:
        """Longest prediction (video frames) this model and the limits allow."""
        longest = self.model.max_new_latents
        return self.limits.max_num_frames if longest is None else min(self.limits.max_num_frames, longest * self.tc)

    def context_window(self, num_frames: int) -> int:
        """Context video frames used for a prediction of ``num_frames`` (more are dropped, oldest first)."""
        lc = self.model.context_latents(-(-num_frames // self.tc))
        lc = max(1, min(lc, 1 + (self.limits.max_context_frames - 1) // self.tc))
        return 1 + (lc - 1) * self.tc

    def describe(self) -> dict[str, Any]:
        spec = self.action_spec
        return {
            "family": self.family,
            "tokenizer_id": self.loaded.record.lineage.tokenizer_id,
            "resolution": list(self.resolution),
            "t_compression": self.tc,
            "s_compression": self.sc,
            "max_num_frames": self.max_num_frames,
            "max_context_frames": self.limits.max_context_frames,
            "action": None if spec is None else {"kind": spec.kind, "dim": spec.dim, "num_actions": spec.num_actions},
            "text": self.has_text,
        }

    # --------------------------------------------------------------------------------------- checking

    def _check_sampling(self, s: Sampling) -> tuple[int, ModelSampling]:
        seed = s.seed if s.seed is not None else secrets.randbits(62)
        if not 0 <= seed <= MAX_SEED:
            raise BadInput(f"seed must be in [0, 2^63 - 1], got {seed}")
        lim = self.limits
        limits = SamplingLimits(max_temperature=lim.max_temperature, max_steps=lim.max_steps,
                                max_cfg_scale=lim.max_cfg_scale, default_temperature=self.default_temperature,
                                default_steps=self.default_steps)
        try:
            return seed, self.model.resolve_sampling(s.options(), limits)
        except ValueError as exc:
            raise BadInput(f"{self.loaded.record.model_id}: {exc}") from None

    def _check_context(self, context: np.ndarray) -> np.ndarray:
        lim = self.limits
        if not isinstance(context, np.ndarray) or context.dtype != np.uint8:
            raise BadInput("context frames must be uint8")
        if context.ndim != 5 or context.shape[-1] != 3:
            raise BadInput(f"context frames must be [T, H, W, 3] or [B, T, H, W, 3] RGB; got {list(context.shape)}")
        b, t, h, w, _ = context.shape
        if not 1 <= b <= lim.max_batch:
            raise BadInput(f"batch of {b}; 1..{lim.max_batch} videos per request")
        if not 1 <= t <= lim.max_context_frames:
            raise BadInput(f"{t} context frames; 1..{lim.max_context_frames} allowed")
        if min(h, w) < 1 or max(h, w) > lim.max_input_side:
            raise BadInput(f"context frames of {h}x{w}; each side must be 1..{lim.max_input_side} pixels")
        return context

    def _fit_resolution(self, context: np.ndarray, resize: bool) -> np.ndarray:
        """Centre-crop to the model's aspect and resize (antialiased bilinear) to its training resolution
        (:func:`~worldloom.models.frames.fit_frames`, as the CLI fits the frames it scores against)."""
        rh, rw = self.resolution
        b, t, h, w, _ = context.shape
        if (h, w) == (rh, rw):
            return context
        if not resize:
            raise BadInput(f"context frames are {h}x{w}; this model was trained at {rh}x{rw} (send that size, "
                           "or resize=true to centre-crop and resize)")
        return fit_frames(context.reshape(b * t, h, w, 3), (rh, rw)).reshape(b, t, rh, rw, 3)

    def _check_actions(self, actions: np.ndarray | None, batch: int, sent_frames: int, trim: int, lc: int,
                       ln: int) -> torch.Tensor | None:
        if actions is None:
            return None
        spec = self.action_spec
        if spec is None:
            raise BadInput(f"model {self.loaded.record.model_id} takes no actions")
        arr = np.asarray(actions)
        lat_rows, vid_rows = lc + ln - 1, sent_frames + ln * self.tc - 1
        if spec.kind == "continuous":
            if not np.issubdtype(arr.dtype, np.floating):
                raise BadInput(f"continuous actions must be float [N, D] or [B, N, D]; got {arr.dtype}")
            arr = arr.astype(np.float32)
            if arr.ndim == 2:
                arr = np.broadcast_to(arr[None], (batch, *arr.shape))
            if arr.ndim != 3:
                raise BadInput(f"continuous actions must be [N, D] or [B, N, D]; got shape {list(actions.shape)}")
            if not 1 <= arr.shape[2] <= spec.dim:
                raise BadInput(f"action width {arr.shape[2]}; this model takes 1..{spec.dim} values per action "
                               "(narrower ones are zero-padded)")
            if not np.isfinite(arr).all() or float(np.abs(arr).max(initial=0.0)) > self.limits.max_action_value:
                raise BadInput(f"actions must be finite with |value| <= {self.limits.max_action_value}")
        else:
            if not np.issubdtype(arr.dtype, np.integer):
                raise BadInput(f"discrete actions must be integer ids [N] or [B, N]; got {arr.dtype}")
            arr = arr.astype(np.int64)
            if arr.ndim == 1:
                arr = np.broadcast_to(arr[None], (batch, *arr.shape))
            if arr.ndim != 2:
                raise BadInput(f"discrete actions must be [N] or [B, N]; got shape {list(actions.shape)}")
            if arr.size and (arr.min() < 0 or arr.max() >= spec.num_actions):
                raise BadInput(f"discrete action ids must lie in [0, {spec.num_actions})")
        if arr.shape[0] != batch:
            raise BadInput(f"actions for {arr.shape[0]} videos, context for {batch}")
        rows = arr.shape[1]
        if rows in (lat_rows, lat_rows + 1):
            pooled = arr[:, :lat_rows]
        elif rows == vid_rows:
            per_video = arr[:, trim:]  # the rows of dropped context frames go with them
            grouped = per_video.reshape(batch, lat_rows, self.tc, *per_video.shape[2:])
            pooled = grouped.mean(axis=2) if spec.kind == "continuous" else grouped[:, :, -1]
        else:
            hint = f" or {vid_rows} (one per video-frame transition, pooled per latent frame)" if self.tc > 1 else ""
            raise BadInput(f"{rows} action rows; expected {lat_rows} (one per latent transition: {lc} context + "
                           f"{ln} predicted latent frames - 1){hint}")
        return torch.from_numpy(np.array(pooled, copy=True)).to(self.device)

    def _check_text(self, text: list[str] | None, batch: int) -> torch.Tensor | None:
        if text is None:
            return None
        if not self.has_text:
            raise BadInput(f"model {self.loaded.record.model_id} takes no text")
        if len(text) not in (1, batch):
            raise BadInput(f"{len(text)} text prompts for {batch} videos; give 1 or {batch}")
        for prompt in text:
            if not isinstance(prompt, str) or not prompt.strip():
                raise BadInput("text prompts must be non-empty strings")
            if len(prompt) > self.limits.max_text_chars:
                raise BadInput(f"text of {len(prompt)} characters; the limit is {self.limits.max_text_chars}")
        embed = self._embed_text or _text_embedder()
        vecs = np.asarray(embed(list(text)), dtype=np.float32)
        if vecs.shape[0] == 1 and batch > 1:
            vecs = np.repeat(vecs, batch, axis=0)
        return torch.from_numpy(vecs).to(self.device)

    # ------------------------------------------------------------------------------------ generation

    def generate(self, req: GenerateRequest) -> GenerateResult:
        context = self._check_context(req.context)
        n = int(req.num_frames)
        if not 1 <= n <= self.max_num_frames:
            raise BadInput(f"num_frames={n}; this model predicts 1..{self.max_num_frames} frames per request")
        seed, sampling = self._check_sampling(req.sampling)
        b, t = context.shape[:2]
        ln = -(-n // self.tc)
        window = self.context_window(n)
        used = min(window, 1 + (t - 1) // self.tc * self.tc)
        trim = t - used
        lc = 1 + (used - 1) // self.tc
        actions = self._check_actions(req.actions, b, t, trim, lc, ln)
        text = self._check_text(req.text, b)
        context = self._fit_resolution(np.array(context[:, trim:], copy=True), req.resize)
        video = torch.stack([frames_to_tensor(clip) for clip in context]).to(self.tok_device)
        generator = torch.Generator().manual_seed(int(seed))
        with self._lock, torch.no_grad():
            ctx = self.model.encode_video(self.tokenizer, video).to(self.device)
            out = self.model.rollout(ctx, ln, actions=actions, text=text, sampling=sampling, generator=generator)
            decoded = self.model.decode_latents(self.tokenizer, out)
            heads = None
            if self.model.reward is not None:
                reward, logits = self.model.rollout_rewards(out, actions, text, lc)
                heads = reward.float().cpu().numpy(), torch.sigmoid(logits.float()).cpu().numpy()
        new = decoded[:, :, decoded.shape[2] - ln * self.tc:][:, :, :n]
        frames = np.stack([tensor_to_frames(v) for v in new])
        info = {"family": self.family, "resolution": list(self.resolution), "seed": int(seed),
                "context_frames_used": used, "context_latent_frames": lc, "predicted_latent_frames": ln,
                **{name: getattr(sampling, name) for name in self.model.sampling_options}}
        result = GenerateResult(frames, int(seed), used, lc, ln, info)
        if heads is not None:
            result.rewards, result.terminations = heads
        return result
