"""Tokenizer training losses: L1 + (1 - SSIM), and an optional hinge-loss patch GAN (off by default).

L1 gets the colours and low frequencies right fast; the SSIM term rewards local structure and contrast
that L1 averages away (edges), which is what PSNR-similar reconstructions differ in visually. The GAN
term sharpens textures further but costs a second network and stability, so it is opt-in and usually
switched on only after a reconstruction-only warm-up (``adversarial_start_step``).

Motion weighting (``motion_weight``): in a clip of a small moving object on a still background (a pendulum
rod, a gripper) the background is nearly every pixel, so a plain mean lets a reconstruction that drops the
object score almost perfectly. Pixels that differ from the clip's temporal median by more than
``MOTION_THRESHOLD`` (what moves) get ``1 + motion_weight`` times the L1 weight; single images and still
clips are unaffected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from worldloom.models.tokenizer.metrics import as_frames, ssim_frames


@dataclass(frozen=True)
class LossConfig:
    l1_weight: float = 1.0
    #: weight of ``1 - SSIM`` (computed per frame on the [-1, 1] signal, gaussian window).
    ssim_weight: float = 0.2
    #: generator hinge-loss weight; 0 disables the discriminator entirely.
    adversarial_weight: float = 0.0
    adversarial_start_step: int = 0
    discriminator_channels: int = 64
    #: extra L1 weight on pixels that move within the clip (see the module docstring); 0 disables it.
    motion_weight: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LossConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown LossConfig fields: {sorted(unknown)}")
        return cls(**d)

    def adversarial_active(self, step: int) -> bool:
        return self.adversarial_weight > 0 and step >= self.adversarial_start_step


#: a pixel "moves" when it differs from the clip's temporal median by this much (signal in [-1, 1])
MOTION_THRESHOLD = 0.1


def motion_mask(clip: Tensor) -> Tensor:
    """``[B, 1, T, H, W]`` in [0, 1]: how far each pixel of ``clip [B, 3, T, H, W]`` is from the clip's
    temporal median (the still background), as a fraction of ``MOTION_THRESHOLD``, capped at 1."""
    median = clip.median(dim=2, keepdim=True).values
    return ((clip - median).abs().amax(dim=1, keepdim=True) / MOTION_THRESHOLD).clamp(max=1.0)


def reconstruction_loss(recon: Tensor, target: Tensor, cfg: LossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted L1 + (1 - SSIM) on ``[B, 3, T, H, W]`` in [-1, 1]; computed in fp32 even under autocast."""
    if recon.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(recon.shape)} vs {tuple(target.shape)}")
    recon, target = recon.float(), target.float()
    err = (recon - target).abs()
    if cfg.motion_weight > 0 and target.ndim == 5 and target.shape[2] > 1:
        weight = 1.0 + cfg.motion_weight * motion_mask(target)
        l1 = (err * weight).sum() / (weight.sum() * err.shape[1])
    else:
        l1 = err.mean()
    total = cfg.l1_weight * l1
    parts = {"l1": l1.detach()}
    if cfg.ssim_weight > 0:
        s = ssim_frames(as_frames(recon), as_frames(target), data_range=2.0).mean()
        total = total + cfg.ssim_weight * (1.0 - s)
        parts["ssim"] = s.detach()
    return total, parts


class PatchDiscriminator(nn.Module):
    """Small per-frame PatchGAN (Isola et al. 2017): one real/fake logit per ~22x22 patch of every frame.

    Per-frame keeps it cheap and works for images and videos alike; GroupNorm instead of BatchNorm so
    the statistics do not depend on the (mixed image/video) batch composition.
    """

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers):
            out = channels * min(2**i, 8)
            mods += [nn.Conv2d(ch, out, 4, 2, 1), nn.GroupNorm(min(32, out // 4), out), nn.LeakyReLU(0.2)]
            ch = out
        mods += [nn.Conv2d(ch, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, video: Tensor) -> Tensor:
        """``[B, 3, T, H, W]`` (or ``[B, 3, H, W]``) -> patch logits ``[B*T, 1, h, w]``."""
        return self.net(as_frames(video))


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()

