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

With real frames two more measurements (issue 11), both ``None`` / absent where no real frames are given:

* ``fg_psnr_vs_real``: PSNR over the *foreground* of the real frames only
  (:func:`~worldloom.models.tokenizer.metrics.foreground_psnr`; background = the per-pixel median over
  all the real clip's frames, mask = where a real horizon frame differs from it, grown by 1 px), so a
  blank or background-only prediction scores badly even where whole-frame PSNR is high.
  ``fg_pixels_vs_real`` is the number of pixels it pooled (summed over sequences); a sequence whose
  horizon frames have no foreground pixel is skipped, and with none at all the score is ``None``.
* ``action_gain_db`` (model only, action-conditioned models given actions): ``psnr_vs_real`` with the
  true actions minus ``psnr_vs_real_shuffled_actions``, the same rollout (same noise) with the evaluated
  windows' action rows permuted across time and sequences by a seeded permutation. Positive means the
  model uses the actions it is given; ~0 means it ignores them.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any

import torch
from torch import Tensor

from worldloom.models.tokenizer.metrics import foreground_mask, foreground_psnr, median_background, psnr, ssim
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


def shuffled_actions(actions: Tensor, seed: int) -> Tensor:
    """``actions`` ``[N, T, ...]`` with its ``N*T`` rows permuted across time and sequences (seeded): the
    same actions, no longer the ones that led to the frames."""
    rows = actions.reshape(actions.shape[0] * actions.shape[1], *actions.shape[2:])
    perm = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))
    return rows[perm].reshape(actions.shape)


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
    "sequences", "real_sequences", "model": {h: {"psnr_vs_decoded", "ssim_vs_decoded"[, "psnr_vs_real",
    "ssim_vs_real", "fg_psnr_vs_real", "fg_pixels_vs_real"[, "psnr_vs_real_shuffled_actions",
    "action_gain_db"]]}}, "copy_last": {the same without the action keys}}`` (see the module docstring;
    ``fg_psnr_vs_real`` is ``None`` where no evaluated frame had a foreground pixel). Deterministic for a
    given ``seed``.
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
    reals_all = [real_videos[i] if real_videos is not None and i < len(real_videos) else None for i in chosen]
    # with use_actions every chosen sequence has actions: the filter only narrows the type
    all_acts = torch.stack([a for a in (sequences[i].window(0, need)[1] for i in chosen) if a is not None]) \
        if use_actions else None
    shuffled = shuffled_actions(all_acts, seed + 0x5AFF1E) if all_acts is not None else None
    scored_real: set[int] = set()  # positions in `chosen` scored against real frames
    try:
        for b0 in range(0, len(chosen), batch):
            idx = chosen[b0:b0 + batch]
            x = torch.stack([sequences[i].window(0, need)[0] for i in idx]).to(device)
            ctx = model.take_frames(x, 0, context_frames)
            acts = all_acts[b0:b0 + len(idx)].to(device) if all_acts is not None else None
            texts = [t for t in (sequences[i].text for i in idx) if t is not None]
            text = torch.stack(texts).to(device) if use_text else None
            reals = reals_all[b0:b0 + len(idx)]
            same_noise = torch.Generator().set_state(g.get_state())  # the shuffled rollout draws the same noise
            pred = model.rollout(ctx, hmax, actions=acts, text=text, sampling=sampling, generator=g)
            video_pred = model.decode_latents(tokenizer, pred).clamp(-1, 1)
            video_gt = model.decode_latents(tokenizer, x).clamp(-1, 1)
            video_shuf = None
            if shuffled is not None and any(r is not None for r in reals):
                pred_shuf = model.rollout(ctx, hmax, actions=shuffled[b0:b0 + len(idx)].to(device), text=text,
                                          sampling=sampling, generator=same_noise)
                video_shuf = model.decode_latents(tokenizer, pred_shuf).clamp(-1, 1)
            backgrounds = [median_background(r.float()) if r is not None else None for r in reals]
            for h, (lo, hi) in spans.items():
                target = video_gt[:, :, lo:hi + 1]
                copy = video_gt[:, :, last_ctx:last_ctx + 1].expand_as(target)
                for name, p in (("model", video_pred[:, :, lo:hi + 1]), ("copy_last", copy)):
                    ps, ss = _score(p, target)
                    slot = acc[name].setdefault(h, {})
                    slot.setdefault("psnr_vs_decoded", []).extend(ps)
                    slot.setdefault("ssim_vs_decoded", []).extend(ss)
                for k, real in enumerate(reals):
                    bg = backgrounds[k]
                    if real is None or bg is None or real.shape[1] <= hi or \
                            tuple(real.shape[2:]) != tuple(target.shape[3:]):
                        continue
                    scored_real.add(b0 + k)
                    r = real.to(target.device).float()[None]
                    rt = r[:, :, lo:hi + 1]
                    rc = r[:, :, last_ctx:last_ctx + 1].expand_as(rt)
                    mask = foreground_mask(rt, bg[None])
                    for name, p in (("model", video_pred[k:k + 1, :, lo:hi + 1]), ("copy_last", rc)):
                        ps, ss = _score(p, rt)
                        fg, pixels = foreground_psnr(p, rt, mask)
                        slot = acc[name][h]
                        slot.setdefault("psnr_vs_real", []).extend(ps)
                        slot.setdefault("ssim_vs_real", []).extend(ss)
                        slot.setdefault("fg_psnr_vs_real", []).extend(v for v in fg.tolist() if v == v)  # skip NaN
                        slot.setdefault("fg_pixels_vs_real", []).append(float(pixels.sum()))
                    if video_shuf is not None:
                        ps, _ = _score(video_shuf[k:k + 1, :, lo:hi + 1], rt)
                        acc["model"][h].setdefault("psnr_vs_real_shuffled_actions", []).extend(ps)
    finally:
        model.train(was_training[0])
        tokenizer.train(was_training[1])
    result: dict[str, Any] = {"horizons": horizons, "context_frames": context_frames, "video_frames_per_latent": tc,
                              "video_frames": spans, "sequences": len(chosen), "real_sequences": len(scored_real)}
    for name, per_h in acc.items():
        result[name] = {h: _summarise(vals) for h, vals in per_h.items()}
    return result


def _summarise(vals: dict[str, list[float]]) -> dict[str, float | None]:
    """Means over sequences; pixel counts are summed; an empty list (no foreground anywhere) is None."""
    out: dict[str, float | None] = {k: (sum(v) if k.startswith("fg_pixels") else sum(v) / len(v)) if v else None
                                    for k, v in vals.items()}
    true, shuffled = out.get("psnr_vs_real"), out.get("psnr_vs_real_shuffled_actions")
    if true is not None and shuffled is not None:
        out["action_gain_db"] = true - shuffled  # the same sequences: a mean of differences
    return out


def flat_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"<prefix>model_h1_psnr_vs_decoded": ..., "<prefix>copy_last_h1_psnr_vs_decoded": ...}`` (floats only,
    for ``Progress.metrics``); a ``None`` (not measured) is left out, never written as a number."""
    out: dict[str, float] = {}
    for name in ("model", "copy_last"):
        for h, vals in result.get(name, {}).items():
            for k, v in vals.items():
                if v is not None:
                    out[f"{prefix}{name}_h{h}_{k}"] = float(v)
    for key, label in (("sequences", "eval_sequences"), ("real_sequences", "eval_real_sequences")):
        if key in result:
            out[f"{prefix}{label}"] = float(result[key])
    return out
