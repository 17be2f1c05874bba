"""Reconstruction metrics (PSNR, SSIM per clip) and FSQ codebook usage.

Input convention, chosen so model outputs and decoded uint8 frames can be compared directly:

* layout is the model's, ``[B, C, T, H, W]`` (a video clip per batch row) or ``[B, C, H, W]`` (images);
* ``uint8`` tensors are read as ``[0, 255]``; floating tensors as the model range ``[-1, 1]`` and are
  clamped to it (a decoder may overshoot; what is shown to a viewer is clamped too).

Both are mapped to ``[0, 1]`` first, so the same clip gives the same score in either form (up to uint8
rounding). "Per clip" means one number per batch row: PSNR from the MSE over all frames and pixels of
the clip, SSIM as the mean of the per-frame SSIM (gaussian window, as in Wang et al. 2004).
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
