"""Reconstruction metrics (PSNR, SSIM, foreground PSNR per clip) and FSQ codebook usage.

Input convention, chosen so model outputs and decoded uint8 frames can be compared directly:

* layout is the model's, ``[B, C, T, H, W]`` (a video clip per batch row) or ``[B, C, H, W]`` (images);
* ``uint8`` tensors are read as ``[0, 255]``; floating tensors as the model range ``[-1, 1]`` and are
  clamped to it (a decoder may overshoot; what is shown to a viewer is clamped too).

Both are mapped to ``[0, 1]`` first, so the same clip gives the same score in either form (up to uint8
rounding). "Per clip" means one number per batch row: PSNR from the MSE over all frames and pixels of
the clip, SSIM as the mean of the per-frame SSIM (gaussian window, as in Wang et al. 2004).

**Foreground PSNR** is PSNR over the pixels where something is, not over a flat background that a blank
frame reproduces: on a rendered simulator a pendulum rod or a cart pole is ~2% of a 64x64 frame, so a
frame of background alone scores ~25 dB whole-frame PSNR. The background of an episode is the per-pixel
median over its frames (:func:`median_background`: a moving object covers a pixel less than half the
time), the mask is where a *real* frame differs from it (:func:`foreground_mask`), and
:func:`foreground_psnr` scores any prediction or reconstruction over that mask, so every candidate for
the same frames is scored on the same pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def to_unit(x: Tensor) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] -> float32 [0, 1]."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise ValueError(f"expected uint8 or floating tensor, got {x.dtype}")
    return ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim not in (4, 5):
        raise ValueError(f"expected [B, C, T, H, W] or [B, C, H, W], got shape {tuple(pred.shape)}")


@torch.no_grad()
def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB per clip ``[B]`` (peak = full range; identical clips give 100 dB, not inf)."""
    _check_pair(pred, target)
    mse = (to_unit(pred) - to_unit(target)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


#: |frame - background| above this (on the [0, 1] scale, in any channel) marks a foreground pixel. On
#: 64x64 Pendulum / CartPole renders mp4-coded as the train rendition, 0.1 adds <= 0.2% of the pixels
#: (coding ringing around the rod) to the ~2% a raw render marks; 0.02 would add 1.4%.
FG_THRESHOLD = 0.1
#: the mask is grown by this many pixels (a 3x3 max for 1), so a 1-2 px rod and its anti-aliased edge count
FG_DILATE = 1


def median_background(video: Tensor) -> Tensor:
    """An episode's background: the per-pixel median over time of ``[C, T, H, W]`` (uint8 or [-1, 1]),
    as ``[C, H, W]`` on the [0, 1] scale (for even ``T`` the lower of the two middle values)."""
    if video.ndim != 4:
        raise ValueError(f"expected one episode [C, T, H, W], got shape {tuple(video.shape)}")
    return to_unit(video).median(dim=1).values


def foreground_mask(frames: Tensor, background: Tensor, threshold: float = FG_THRESHOLD,
                    dilate: int = FG_DILATE) -> Tensor:
    """Where ``frames`` differ from ``background`` by more than ``threshold`` in any channel, grown by
    ``dilate`` pixels.

    ``frames`` ``[C, T, H, W]`` or ``[B, C, T, H, W]`` (uint8 or [-1, 1]); ``background`` ``[C, H, W]`` (or
    ``[B, C, H, W]``) on the [0, 1] scale, from :func:`median_background`. Returns a bool mask of ``frames``'
    shape without the channel axis (``[T, H, W]`` / ``[B, T, H, W]``).
    """
    if threshold < 0 or dilate < 0:
        raise ValueError(f"threshold and dilate must be >= 0, got {threshold}, {dilate}")
    batched = frames.ndim == 5
    if not batched:
        frames, background = frames[None], background[None]
    if frames.ndim != 5 or background.ndim != 4 or background.shape[1:] != frames.shape[1:2] + frames.shape[3:]:
        raise ValueError(f"frames {tuple(frames.shape)} and background {tuple(background.shape)} do not match")
    diff = (to_unit(frames) - background.to(frames.device)[:, :, None]).abs().amax(dim=1)  # [B, T, H, W]
    mask = diff > threshold
    if dilate:
        b, t, h, w = mask.shape
        k = 2 * dilate + 1
        grown = F.max_pool2d(mask.reshape(b * t, 1, h, w).float(), k, stride=1, padding=dilate)
        mask = grown.reshape(b, t, h, w) > 0
    return mask if batched else mask[0]


@torch.no_grad()
def foreground_psnr(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """PSNR in dB per clip over the masked pixels only, and the number of pixels it used.

    ``pred`` / ``target`` as :func:`psnr`; ``mask`` bool, their shape without the channel axis (from
    :func:`foreground_mask` of the *real* frames). The MSE pools every channel of every masked pixel of
    the clip, so a frame with an empty mask adds nothing (it is skipped). Returns ``(psnr [B], pixels [B])``;
    a clip whose mask is empty everywhere has no foreground score: its PSNR is NaN (report it as
    missing, never as a figure) and its pixel count 0.
    """
    _check_pair(pred, target)
    want = pred.shape[:1] + pred.shape[2:]
    if tuple(mask.shape) != tuple(want):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match {tuple(want)} (frames without channels)")
    m = mask.to(pred.device).bool().unsqueeze(1)
    sq = (to_unit(pred) - to_unit(target)).pow(2) * m
    pixels = m.flatten(1).sum(1)
    mse = sq.flatten(1).sum(1) / (pixels * pred.shape[1]).clamp_min(1)
    out = 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))
    return torch.where(pixels > 0, out, torch.full_like(out, float("nan"))), pixels


def as_frames(x: Tensor) -> Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W]; images pass through."""
    if x.ndim == 4:
        return x
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_frames(x: Tensor, y: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Differentiable SSIM per frame: ``[N, C, H, W]`` pairs -> ``[N]`` (mean over channels and valid pixels).

    Gaussian-weighted local statistics (``valid`` convolution, as the reference implementation);
    the window shrinks to fit frames smaller than ``window``. Used by the loss and by :func:`ssim`.
    """
    n, c, h, w = x.shape
    size = min(window, h, w)
    size -= 1 - size % 2  # keep it odd
    kernel = _gaussian_window(size, sigma, c, x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    stats = F.conv2d(torch.cat([x, y, x * x, y * y, x * y]), kernel, groups=c)
    mx, my, mxx, myy, mxy = stats.split(n)
    vx, vy, cov = mxx - mx * mx, myy - my * my, mxy - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


@torch.no_grad()
def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """SSIM per clip ``[B]``: mean over the clip's frames of the per-frame SSIM on the [0, 1] scale."""
    _check_pair(pred, target)
    per_frame = ssim_frames(as_frames(to_unit(pred)), as_frames(to_unit(target)))
    return per_frame.view(pred.shape[0], -1).mean(1)


@torch.no_grad()
def codebook_usage(indices: Tensor, codebook_size: int) -> dict[str, float]:
    """How much of the FSQ codebook a batch of indices uses.

    ``usage``: fraction of the ``codebook_size`` codes seen at least once; ``perplexity``: exp of the
    entropy of the empirical code distribution (= number of equally used codes it is worth; the
    maximum is ``min(codebook_size, indices.numel())``); ``used``: distinct codes seen.
    """
    flat = indices.flatten().long()
    if flat.numel() == 0:
        return {"usage": 0.0, "perplexity": 0.0, "used": 0.0}
    if int(flat.min()) < 0 or int(flat.max()) >= codebook_size:
        raise ValueError(f"indices must lie in [0, {codebook_size})")
    counts = torch.bincount(flat, minlength=codebook_size).double()
    p = counts[counts > 0] / flat.numel()
    entropy = float(-(p * p.log()).sum())
    used = int((counts > 0).sum())
    return {"usage": used / codebook_size, "perplexity": math.exp(entropy), "used": float(used)}
