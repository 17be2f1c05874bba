"""Tokenizer losses and metrics: PSNR/SSIM conventions, codebook usage, GAN pieces."""

import math

import pytest
import torch

from worldloom.models.tokenizer.losses import (
    LossConfig,
    PatchDiscriminator,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from worldloom.models.tokenizer.metrics import codebook_usage, psnr, ssim, ssim_frames, to_unit


def _clip(seed: int = 0, shape=(2, 3, 5, 32, 32)) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_psnr_per_clip_and_uint8_float_agree():
    torch.manual_seed(0)
    a = _clip() * 0.9
    assert psnr(a, a).tolist() == [100.0, 100.0]
    b = a.clone()
    b[1] += 0.02  # only clip 1 differs: MSE on [0, 1] = 0.01**2
    p = psnr(b, a)
    assert p[0] == 100.0 and p[1] == pytest.approx(40.0, abs=0.05)
    def u8(x: torch.Tensor) -> torch.Tensor:
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    noisy = (a + 0.1 * torch.randn_like(a)).clamp(-1, 1)
    assert torch.allclose(psnr(u8(noisy), u8(a)), psnr(noisy, a), atol=0.2)
    assert torch.allclose(ssim(u8(noisy), u8(a)), ssim(noisy, a), atol=0.01)
    assert float(to_unit(torch.tensor([-3.0, 0.0, 1.0])).sum()) == 1.5  # float input is clamped
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:1])


def test_ssim_identity_noise_ordering_and_closed_form():
    torch.manual_seed(0)
    a = _clip()
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)
    s_small = ssim((a + 0.05 * torch.randn_like(a)).clamp(-1, 1), a)
    s_big = ssim((a + 0.4 * torch.randn_like(a)).clamp(-1, 1), a)
    assert bool((s_small > s_big).all()) and bool((s_big > 0).all())
    # constant frames: only the luminance term remains, (2xy + C1) / (x^2 + y^2 + C1)
    x, y = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    assert float(ssim_frames(x, y)) == pytest.approx((2 * 0.12 + c1) / (0.04 + 0.36 + c1), rel=1e-4)
    # images ([B, C, H, W]) work too, and frames smaller than the window
    assert ssim(a[:, :, 0], a[:, :, 0]).shape == (2,)
    assert ssim(a[..., :6, :6], a[..., :6, :6]).shape == (2,)


def test_codebook_usage():
    idx = torch.tensor([0, 1, 2, 3] * 5)
    u = codebook_usage(idx, 64)
    assert u["usage"] == 4 / 64 and u["used"] == 4 and u["perplexity"] == pytest.approx(4.0)
    assert codebook_usage(torch.zeros(10, dtype=torch.long), 64)["perplexity"] == pytest.approx(1.0)
    assert codebook_usage(torch.arange(64_000), 64_000)["usage"] == 1.0
    with pytest.raises(ValueError):
        codebook_usage(torch.tensor([64]), 64)


def test_reconstruction_loss_and_config():
    torch.manual_seed(0)
    a = _clip()
    loss, parts = reconstruction_loss(a, a, LossConfig())
    assert float(loss) == pytest.approx(0.0, abs=1e-5) and float(parts["ssim"]) == pytest.approx(1.0, abs=1e-5)
    recon = (a + 0.3 * torch.randn_like(a)).requires_grad_()
    loss, parts = reconstruction_loss(recon, a, LossConfig(ssim_weight=0.5))
    loss.backward()
    assert float(loss.detach()) > 0 and recon.grad is not None and set(parts) == {"l1", "ssim"}
    assert LossConfig.from_dict(LossConfig(adversarial_weight=0.1).to_dict()).adversarial_weight == 0.1
    assert not LossConfig().adversarial_active(10**6)  # GAN is off by default
    assert not LossConfig(adversarial_weight=0.1, adversarial_start_step=5).adversarial_active(4)


def test_patch_discriminator_and_hinge_losses():
    disc = PatchDiscriminator(channels=16)
    with torch.no_grad():
        logits = disc(_clip(shape=(2, 3, 3, 32, 32)))
        assert disc(_clip(shape=(2, 3, 32, 32))).shape == (2, 1, 4, 4)
    assert logits.shape == (6, 1, 4, 4)
    big, small = torch.full((4,), 5.0), torch.full((4,), -5.0)
    assert float(hinge_discriminator_loss(big, small)) == 0.0  # confident and right: no loss
    assert float(hinge_discriminator_loss(small, big)) == pytest.approx(6.0)
    assert float(hinge_generator_loss(big)) == -5.0
    assert math.isfinite(float(hinge_discriminator_loss(logits, logits)))
