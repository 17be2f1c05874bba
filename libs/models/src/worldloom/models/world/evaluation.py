"""Prediction quality of a world model per horizon, next to a copy-last-frame baseline.

For each held-out sequence the first ``context_frames`` latent frames are given and the model predicts
``max(horizons)`` more with :meth:`~.base.WorldModel.rollout` (the given :class:`~.base.Sampling`, e.g.
greedy AR with ``temperature=0``, diffusion with ``steps`` Euler steps; a seeded generator). Context + prediction is decoded *as one sequence* by the tokenizer (its
decoder is causal in time, so a latent frame must be decoded after its predecessors, never alone).

Horizons are counted in **latent frames** after the context. With temporal compression ``tc`` latent
frame ``j > 0`` decodes to video frames ``(j-1)*tc+1 .. j*tc`` (latent 0 is video frame 0 alone), so
horizon ``h`` with ``C`` context latents is latent ``C - 1 + h`` = video frames
``(C+h-2)*tc+1 .. (C+h-1)*tc`` of the clip: the ``h``-th block of ``tc`` frames after the last context
video frame ``(C-1)*tc`` (h = 1, 4, 8 with 4x compression: video frames 1-4, 13-16, 29-32 after it).
Metrics for a horizon are PSNR/SSIM over that block of ``tc`` frames only (not cumulative), averaged
over sequences, measured

* ``*_vs_decoded``: against the tokenizer's decoding of the ground-truth latents (what the world model
  can reach at best: it isolates dynamics errors from tokenizer reconstruction error);
* ``*_vs_real``: against the real clip frames (only for sequences given a ``real_videos`` entry).

The **copy-last** baseline repeats the last context *video* frame (pixels, i.e. "nothing moves") for
every predicted frame: the decoded last context frame for ``vs_decoded`` and the real one for
``vs_real``. A world model that does not beat it has not learnt dynamics.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any

import torch
from torch import Tensor

from worldloom.models.tokenizer.metrics import psnr, ssim
from worldloom.models.tokenizer.model import CausalVideoTokenizer
from worldloom.models.world.base import Sampling, WorldModel
from worldloom.models.world.data import LatentSequence

DEFAULT_HORIZONS = (1, 4, 8)


def horizon_video_frames(horizon: int, context_frames: int, tc: int) -> tuple[int, int]:
    """First and last clip video frame (inclusive) of latent frame ``context_frames - 1 + horizon``."""
    j = context_frames - 1 + horizon
    return (j - 1) * tc + 1, j * tc


def _score(pred: Tensor, target: Tensor) -> tuple[list[float], list[float]]:
    return psnr(pred, target).tolist(), ssim(pred, target).tolist()


@torch.no_grad()
def evaluate_prediction(model: WorldModel, tokenizer: CausalVideoTokenizer, sequences: Seq[LatentSequence], *,
                        context_frames: int = 1, horizons: Seq[int] = DEFAULT_HORIZONS,
                        real_videos: Seq[Tensor | None] | None = None,
                        sampling: Sampling | None = None, seed: int = 0,
                        max_sequences: int = 8, batch: int = 4) -> dict[str, Any]:
    """Per-horizon PSNR/SSIM of the model's predictions and of the copy-last baseline.

    ``sequences`` need ``context_frames + max(horizons)`` latent frames (shorter ones are skipped; the
    first ``max_sequences`` long enough are used, each from its first frame). ``real_videos[i]`` (optional,
    ``[3, T, H, W]`` in [-1, 1], clip frame 0 first) are the real frames of ``sequences[i]``. Actions
    are passed when the model is action-conditioned and the sequences carry them. ``sampling`` defaults to
    greedy AR decoding and 10 diffusion steps.

    Returns ``{"horizons", "context_frames", "video_frames_per_latent", "video_frames": {h: (first, last)},
    "sequences", "model": {h: {"psnr_vs_decoded", "ssim_vs_decoded"[, "psnr_vs_real", "ssim_vs_real"]}},
    "copy_last": {same}}``. Deterministic for a given ``seed``.
    """
    sampling = sampling or Sampling(temperature=0.0, steps=10)  # greedy AR, 10 Euler steps
    horizons = sorted({int(h) for h in horizons})
    if not horizons or horizons[0] < 1:
        raise ValueError(f"horizons must be >= 1, got {horizons}")
    if context_frames < 1:
        raise ValueError("context_frames must be >= 1 (the copy-last baseline needs a last frame)")
    hmax = horizons[-1]
    need = context_frames + hmax
    limit = model.max_sequence_latents
    if limit is not None and need > limit:
        raise ValueError(f"context {context_frames} + horizon {hmax} exceeds the {model.family} model's "
                         f"max_frames={limit}")
    tc = tokenizer.config.t_compression
    chosen = [i for i, s in enumerate(sequences) if s.frames >= need][:max_sequences]
    if not chosen:
        raise ValueError(f"no sequence has {need} latent frames (context {context_frames} + horizon {hmax})")
    use_text = getattr(model, "text", None) is not None and all(sequences[i].text is not None for i in chosen)
    use_actions = getattr(model, "actions", None) is not None and all(sequences[i].actions is not None
                                                                       for i in chosen)
    device = next(model.parameters()).device
    was_training = model.training, tokenizer.training
    model.eval()
    tokenizer.eval()
    g = torch.Generator().manual_seed(seed)
    last_ctx = (context_frames - 1) * tc
    spans = {h: horizon_video_frames(h, context_frames, tc) for h in horizons}
    acc: dict[str, dict[int, dict[str, list[float]]]] = {"model": {}, "copy_last": {}}
    try:
        for b0 in range(0, len(chosen), batch):
            idx = chosen[b0:b0 + batch]
            windows = [sequences[i].window(0, need) for i in idx]
            x = torch.stack([w[0] for w in windows]).to(device)
            ctx = model.take_frames(x, 0, context_frames)
            # with use_actions / use_text every chosen sequence has them: the filters only narrow the type
            acts = torch.stack([a for _, a in windows if a is not None]).to(device) if use_actions else None
            texts = [t for t in (sequences[i].text for i in idx) if t is not None]
            text = torch.stack(texts).to(device) if use_text else None
            pred = model.rollout(ctx, hmax, actions=acts, text=text, sampling=sampling, generator=g)
            video_pred = model.decode_latents(tokenizer, pred).clamp(-1, 1)
            video_gt = model.decode_latents(tokenizer, x).clamp(-1, 1)
            reals = [real_videos[i] if real_videos is not None and i < len(real_videos) else None for i in idx]
            for h, (lo, hi) in spans.items():
                target = video_gt[:, :, lo:hi + 1]
                copy = video_gt[:, :, last_ctx:last_ctx + 1].expand_as(target)
                for name, p in (("model", video_pred[:, :, lo:hi + 1]), ("copy_last", copy)):
                    ps, ss = _score(p, target)
                    slot = acc[name].setdefault(h, {})
                    slot.setdefault("psnr_vs_decoded", []).extend(ps)
                    slot.setdefault("ssim_vs_decoded", []).extend(ss)
                for k, real in enumerate(reals):
                    if real is None or real.shape[1] <= hi or tuple(real.shape[2:]) != tuple(target.shape[3:]):
                        continue
                    r = real.to(target.device).float()[None]
                    rt = r[:, :, lo:hi + 1]
                    rc = r[:, :, last_ctx:last_ctx + 1].expand_as(rt)
                    for name, p in (("model", video_pred[k:k + 1, :, lo:hi + 1]), ("copy_last", rc)):
                        ps, ss = _score(p, rt)
                        slot = acc[name][h]
                        slot.setdefault("psnr_vs_real", []).extend(ps)
                        slot.setdefault("ssim_vs_real", []).extend(ss)
    finally:
        model.train(was_training[0])
        tokenizer.train(was_training[1])
    result: dict[str, Any] = {"horizons": horizons, "context_frames": context_frames, "video_frames_per_latent": tc,
                              "video_frames": spans, "sequences": len(chosen)}
    for name, per_h in acc.items():
        result[name] = {h: {k: sum(v) / len(v) for k, v in vals.items()} for h, vals in per_h.items()}
    return result


def flat_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"<prefix>model_h1_psnr_vs_decoded": ..., "<prefix>copy_last_h1_psnr_vs_decoded": ...}`` (floats only,
    for ``Progress.metrics``)."""
    out: dict[str, float] = {}
    for name in ("model", "copy_last"):
        for h, vals in result.get(name, {}).items():
            for k, v in vals.items():
                out[f"{prefix}{name}_h{h}_{k}"] = float(v)
    if "sequences" in result:
        out[f"{prefix}eval_sequences"] = float(result["sequences"])
    return out
