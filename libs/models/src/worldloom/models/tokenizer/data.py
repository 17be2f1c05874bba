"""Small data helpers: synthetic moving-pattern clips, uint8 frames -> model tensors, joint image+video batches.

The synthetic clips are for tests and benchmarks: smooth backgrounds plus a few moving shapes, so the
content has both low-frequency colour and sharp moving edges (what a tokenizer must learn) and motion
a causal temporal model can exploit; fully deterministic for a given ``seed``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor


def frames_to_tensor(frames: np.ndarray | Tensor) -> Tensor:
    """``[T, H, W, 3]`` uint8 (as decoded) -> ``[3, T, H, W]`` float32 in [-1, 1] (model layout, no batch)."""
    x = torch.as_tensor(frames)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected [T, H, W, 3] uint8 frames, got {tuple(x.shape)} {x.dtype}")
    return x.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_frames(video: Tensor) -> np.ndarray:
    """``[3, T, H, W]`` float in [-1, 1] -> ``[T, H, W, 3]`` uint8 (clamped, rounded)."""
    x = ((video.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def moving_pattern_videos(batch: int, frames: int, size: int, seed: int = 0) -> Tensor:
    """``[batch, 3, frames, size, size]`` float in [-1, 1]: colour gradient + stripes + moving shapes."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    videos = []
    for _ in range(batch):
        c0, c1 = torch.rand(3, 1, 1, 1, generator=g), torch.rand(3, 1, 1, 1, generator=g)
        angle = torch.rand(1, generator=g) * 6.28
        ramp = (xx * torch.cos(angle) + yy * torch.sin(angle)).clamp(0, 1)
        v = c0 + (c1 - c0) * ramp  # [3, 1, H, W] background
        freq, speed = 1 + 3 * torch.rand(1, generator=g), 0.5 * torch.randn(1, generator=g)
        stripes = 0.15 * torch.sin(6.28 * freq * xx + speed * t)  # [1, T, H, W], drifting
        v = (v + stripes).expand(3, frames, size, size).clone()
        for _ in range(3):
            colour = torch.rand(3, 1, 1, 1, generator=g)
            pos, vel = torch.rand(2, generator=g), (torch.rand(2, generator=g) - 0.5) * 0.12
            radius = 0.08 + 0.12 * torch.rand(1, generator=g)
            cy = (pos[0] + vel[0] * t) % 1.0
            cx = (pos[1] + vel[1] * t) % 1.0
            if torch.rand(1, generator=g) < 0.5:  # disc
                mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2
            else:  # square
                mask = ((yy - cy).abs() < radius) & ((xx - cx).abs() < radius)
            v = torch.where(mask.expand_as(v), colour.expand_as(v), v)
        videos.append(v)
    return torch.stack(videos).clamp(0, 1).mul(2).sub(1)


def joint_batch(videos: Tensor, num_images: int, generator: torch.Generator | None = None) -> list[Tensor]:
    """Joint image+video batch: the clips plus ``num_images`` random single frames as 1-frame videos.

    Training on both teaches the first-frame path (which is exactly the image path) as much as the
    group path; :func:`~worldloom.models.tokenizer.train.train_step` takes the list as one step.
    """
    if num_images <= 0:
        return [videos]
    b, _, t = videos.shape[:3]
    rows = torch.randint(0, b, (num_images,), generator=generator)
    cols = torch.randint(0, t, (num_images,), generator=generator)
    images = videos[rows, :, cols].unsqueeze(2)
    return [videos, images]


class ClipSampler:
    """Endless random ``frames``-long clips from in-memory videos (each ``[3, T, H, W]``), in batches.

    Augmentations for small datasets (a tokenizer overfits a few hundred frames quickly): random
    horizontal flip always; with ``crop`` a random ``crop x crop`` window (decode the videos a bit
    larger than the training size); with ``reverse`` time runs backwards half of the time (still
    physically plausible motion, new sequences for the temporal path).
    """

    def __init__(self, videos: Sequence[Tensor], frames: int, batch: int, num_images: int = 0,
                 seed: int = 0, crop: int | None = None, reverse: bool = False) -> None:
        self.videos = [v for v in videos if v.shape[1] >= frames]
        if not self.videos:
            raise ValueError(f"no video has at least {frames} frames")
        if crop is not None and any(min(v.shape[2:]) < crop for v in self.videos):
            raise ValueError(f"crop {crop} is larger than some video frames")
        self.frames, self.batch, self.num_images = frames, batch, num_images
        self.crop, self.reverse = crop, reverse
        self.g = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[list[Tensor]]:
        return self

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.g))

    def __next__(self) -> list[Tensor]:
        clips = []
        for _ in range(self.batch):
            v = self.videos[self._randint(len(self.videos))]
            start = self._randint(v.shape[1] - self.frames + 1)
            clip = v[:, start : start + self.frames]
            if self.crop is not None:
                y, x = self._randint(v.shape[2] - self.crop + 1), self._randint(v.shape[3] - self.crop + 1)
                clip = clip[:, :, y : y + self.crop, x : x + self.crop]
            if self._randint(2):
                clip = clip.flip(-1)  # horizontal flip
            if self.reverse and self._randint(2):
                clip = clip.flip(1)
            clips.append(clip)
        return joint_batch(torch.stack(clips), self.num_images, self.g)
