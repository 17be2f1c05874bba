"""Single-process training: :func:`train_step` (one optimiser step) and :func:`fit` (a plain loop).

Deliberately framework-free so a distributed wrapper (e.g. Ray Train's ``TorchTrainer``: prepare the
model/optimiser, call :func:`train_step` per batch, report the returned floats) needs no changes here.

A batch is one ``[B, 3, T, H, W]`` tensor or a list of them with different ``T`` (joint image+video
training: 1-frame images next to multi-frame clips, see :func:`~.data.joint_batch`); each part's loss
is averaged with equal weight and gradients are accumulated part by part (lower peak memory).
On CUDA the model runs under bf16 autocast (losses stay fp32); on CPU everything is fp32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from worldloom.models.tokenizer.losses import (
    LossConfig,
    PatchDiscriminator,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from worldloom.models.tokenizer.metrics import codebook_usage, psnr
from worldloom.models.tokenizer.model import CausalVideoTokenizer
from worldloom.models.training.optim import autocast_for, lr_at

Batch = Tensor | Sequence[Tensor]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _unwrap(model: nn.Module) -> CausalVideoTokenizer:
    """The tokenizer itself, or the one inside a DDP wrapper (``.module``)."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, CausalVideoTokenizer):
        raise TypeError(f"not a video tokenizer: {type(model).__name__}")
    return inner


def train_step(
    model: CausalVideoTokenizer | nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    loss_cfg: LossConfig | None = None,
    *,
    discriminator: nn.Module | None = None,
    disc_optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    grad_clip: float | None = 1.0,
) -> dict[str, float]:
    """One optimiser step on ``batch``; returns plain floats (loss, l1, ssim, psnr, grad_norm[, gan, usage]).

    The adversarial term is used only when ``discriminator`` is given and ``loss_cfg`` enables it at
    ``step``; the discriminator then takes its own hinge-loss step on the same reconstructions.
    """
    loss_cfg = loss_cfg or LossConfig()
    device = model_device(model)
    parts_in = [batch] if isinstance(batch, Tensor) else list(batch)
    if not parts_in:
        raise ValueError("empty batch")
    disc = discriminator if discriminator is not None and loss_cfg.adversarial_active(step) else None
    fsq = _unwrap(model).fsq
    model.train()
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    fakes: list[tuple[Tensor, Tensor]] = []
    all_indices: list[Tensor] = []

    def add(name: str, value: Tensor | float) -> None:
        sums[name] = sums.get(name, 0.0) + float(value) / len(parts_in)

    for clip in parts_in:
        clip = clip.to(device, non_blocking=True)
        with autocast_for(device):
            recon, aux = model(clip)
        loss, parts = reconstruction_loss(recon, clip, loss_cfg)
        if disc is not None:
            with autocast_for(device):
                logits = disc(recon)
            gen = hinge_generator_loss(logits.float())
            loss = loss + loss_cfg.adversarial_weight * gen
            add("gan_g", gen.detach())
            fakes.append((clip, recon.detach()))
        (loss / len(parts_in)).backward()
        add("loss", loss.detach())
        for name, value in parts.items():
            add(name, value)
        add("psnr", psnr(recon.detach(), clip).mean())
        if "indices" in aux:
            all_indices.append(aux["indices"].flatten())

    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip else math.inf)
    optimizer.step()
    out = {**sums, "grad_norm": float(grad_norm)}

    if disc is not None:
        assert disc_optimizer is not None, "disc_optimizer is required with a discriminator"
        disc_optimizer.zero_grad(set_to_none=True)
        for real, fake in fakes:
            with autocast_for(device):
                d_loss = hinge_discriminator_loss(disc(real).float(), disc(fake).float())
            (d_loss / len(fakes)).backward()
            out["gan_d"] = out.get("gan_d", 0.0) + float(d_loss.detach()) / len(fakes)
        disc_optimizer.step()
    if all_indices and fsq is not None:
        out["code_usage"] = codebook_usage(torch.cat(all_indices), fsq.codebook_size)["usage"]
    return out


def fit(
    model: CausalVideoTokenizer,
    data_iter: Iterable[Batch],
    steps: int,
    lr: float = 1e-3,
    log_every: int = 10,
    on_log: Callable[[dict[str, float]], None] | None = None,
    *,
    loss_cfg: LossConfig | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    warmup: int | None = None,
    start_step: int = 0,
) -> list[dict[str, float]]:
    """Train for ``steps`` steps (AdamW, warm-up + cosine lr); returns the logged averages.

    Every ``log_every`` steps the metrics of the window are averaged, given ``step``, ``lr`` and
    ``sec_per_step``, passed to ``on_log`` and appended to the returned history.
    """
    loss_cfg = loss_cfg or LossConfig()
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    warmup = min(100, max(1, steps // 20)) if warmup is None else warmup
    disc = disc_opt = None
    if loss_cfg.adversarial_weight > 0:
        disc = PatchDiscriminator(loss_cfg.discriminator_channels).to(model_device(model))
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=lr, betas=(0.5, 0.9))
    history: list[dict[str, float]] = []
    window: dict[str, float] = {}
    count, t0 = 0, time.perf_counter()
    it = iter(data_iter)
    for step in range(start_step, start_step + steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step - start_step, steps, lr, warmup)
        logs = train_step(model, next(it), optimizer, loss_cfg, discriminator=disc,
                          disc_optimizer=disc_opt, step=step)
        for k, v in logs.items():
            window[k] = window.get(k, 0.0) + v
        count += 1
        if count == log_every or step == start_step + steps - 1:
            entry = {k: v / count for k, v in window.items()}
            entry.update(step=float(step + 1), lr=optimizer.param_groups[0]["lr"],
                         sec_per_step=(time.perf_counter() - t0) / count)
            history.append(entry)
            if on_log is not None:
                on_log(entry)
            window, count, t0 = {}, 0, time.perf_counter()
    return history
