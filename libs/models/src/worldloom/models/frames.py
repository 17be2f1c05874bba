"""Fitting decoded frames to a model's resolution, one way for every caller.

The generate server fits context frames with it, the CLI fits the real frames it scores predictions
against, and the benchmarks prepare training and evaluation clips: if any of them cropped or resized
differently, scores would compare different pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def fit_frames(frames: np.ndarray, size: tuple[int, int], chunk: int = 32) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 -> ``[N, h, w, 3]`` uint8 for ``size = (h, w)``: centre crop to the target's
    aspect ratio (nothing is squashed), then an antialiased bilinear resize; ``chunk`` frames at a time
    so long videos do not need a float copy of every frame at once. Frames already of ``size`` come
    back as they are."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected [N, H, W, 3] uint8 frames, got {frames.shape} {frames.dtype}")
    rh, rw = size
    _, h, w, _ = frames.shape
    if (h, w) == (rh, rw):
        return frames
    scale = max(rh / h, rw / w)
    ch, cw = min(h, round(rh / scale)), min(w, round(rw / scale))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    out = []
    for i in range(0, len(frames), chunk):
        part = np.ascontiguousarray(frames[i : i + chunk, y0 : y0 + ch, x0 : x0 + cw])
        if (ch, cw) == (rh, rw):
            out.append(part)
            continue
        x = torch.from_numpy(part).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, rh, rw, 3), np.uint8)
