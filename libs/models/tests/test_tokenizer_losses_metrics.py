"""Tokenizer losses and metrics: PSNR/SSIM conventions, foreground PSNR, codebook usage, GAN pieces."""

import math

import pytest
import torch

from worldloom.models.tokenizer.losses import (
    LossConfig,
    PatchDiscriminator,
    hinge_discriminator_loss,
    hinge_generator_loss,
    motion_mask,
    reconstruction_loss,
)
from worldloom.models.tokenizer.metrics import (
    codebook_usage,
    foreground_mask,
    foreground_psnr,
    median_background,
    psnr,
    ssim,
    ssim_frames,
    to_unit,
)


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


def rod_episode(frames: int = 24, size: int = 64, length: int = 20) -> torch.Tensor:
    """``[3, T, size, size]`` in [-1, 1]: a white background, a static grey base line, and a 1-px dark red
    vertical rod that moves one pixel right per frame (a simulator frame in miniature)."""
    v = torch.ones(3, frames, size, size)
    v[:, :, size - 4] = 0.2  # the static base: background, not foreground
    for t in range(frames):
        x = 8 + t
        v[0, t, 10:10 + length, x], v[1:, t, 10:10 + length, x] = 0.6, -0.8
    return v


def test_median_background_and_foreground_mask_of_a_moving_rod():
    video = rod_episode()
    bg = median_background(video)
    clean = torch.ones(3, 64, 64)
    clean[:, 60] = 0.2
    assert torch.equal(bg, to_unit(clean))  # the rod covers each pixel < half the time; the base stays
    u8 = ((video + 1) * 127.5).round().to(torch.uint8)
    assert torch.allclose(median_background(u8), bg, atol=1 / 255)  # uint8 and float agree
    thin = foreground_mask(video, bg, dilate=0)
    assert thin.shape == (24, 64, 64) and thin.dtype == torch.bool
    assert thin.flatten(1).sum(1).tolist() == [20] * 24  # exactly the rod in each frame, not the static base
    assert bool(thin[5, 10:30, 13].all()) and not bool(thin[5, :, 12].any())
    grown = foreground_mask(video, bg)  # default: grown by 1 px, so the rod's neighbours count too
    assert grown.flatten(1).sum(1).tolist() == [3 * 22] * 24
    assert foreground_mask(video[None], bg[None]).shape == (1, 24, 64, 64)
    with pytest.raises(ValueError, match="do not match"):
        foreground_mask(video, bg[:, :32])
    with pytest.raises(ValueError, match="one episode"):
        median_background(video[None])


def test_foreground_psnr_scores_a_background_only_prediction_badly():
    real = rod_episode()[None]  # [1, 3, T, H, W]
    mask = foreground_mask(real, median_background(real[0])[None])
    blank = median_background(real[0])[:, None].expand_as(real[0])[None] * 2 - 1  # background alone, no rod
    near = (real + 0.02 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    fg_blank, pixels = foreground_psnr(blank, real, mask)
    fg_near, _ = foreground_psnr(near, real, mask)
    assert pixels.tolist() == [24 * 66]
    # whole-frame PSNR calls the blank frame good (the rod is 0.5% of the pixels); the foreground does not
    assert float(psnr(blank, real)) > 25.0 and float(fg_blank) < 8.0
    assert float(fg_near) > 35.0 and float(fg_near) - float(fg_blank) > 25.0
    # exact: the rod's 20 px of the 66 masked differ by (0.2, 0.9, 0.9) on [0, 1]; the 46 neighbours match
    want = 10 * math.log10(1 / ((20 / 66) * (0.2**2 + 0.9**2 + 0.9**2) / 3))
    assert float(fg_blank) == pytest.approx(want, abs=1e-3)
    assert float(foreground_psnr(real, real, mask)[0]) == 100.0


def test_foreground_psnr_skips_frames_without_foreground_and_reports_none_for_an_empty_clip():
    real = rod_episode()[None]
    mask = foreground_mask(real, median_background(real[0])[None])
    wrong = real.clone()
    wrong[:, :, 3] = -1.0  # frame 3 is all wrong
    half = mask.clone()
    half[:, 3] = False  # ... but has no foreground: it is skipped, not scored
    assert float(foreground_psnr(wrong, real, half)[0]) == 100.0
    assert float(foreground_psnr(wrong, real, mask)[0]) < 20.0  # 1 of 24 frames all wrong
    pair = torch.cat([real, real])
    empty = torch.stack([mask[0], torch.zeros_like(mask[0])])
    score, pixels = foreground_psnr(pair, pair, empty)
    assert pixels.tolist() == [24 * 66, 0] and score[0] == 100.0 and math.isnan(float(score[1]))
    # images [B, C, H, W] take a [B, H, W] mask
    img, img_mask = real[:, :, 0], mask[:, 0]
    background = (median_background(real[0]) * 2 - 1)[None]
    assert float(foreground_psnr(background, img, img_mask)[0]) < 8.0
    with pytest.raises(ValueError, match="mask shape"):
        foreground_psnr(real, real, mask[:, :3])


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


def test_motion_weight_counts_errors_on_moving_pixels_more():
    """A still white background with a dark dot moving across it: dropping the dot (a blank
    reconstruction) costs more with motion weighting, an equal error on the background the same or less;
    single images are unaffected."""
    clip = torch.ones(1, 3, 5, 8, 8)
    for t in range(5):
        clip[:, :, t, 3, t + 1] = -1.0
    mask = motion_mask(clip)
    assert mask.shape == (1, 1, 5, 8, 8) and float(mask[0, 0, 2, 3, 3]) == 1.0 and float(mask[0, 0, 2, 0, 0]) == 0.0
    blank = torch.ones_like(clip)
    off = LossConfig(ssim_weight=0.0)
    on = LossConfig(ssim_weight=0.0, motion_weight=4.0)
    assert float(reconstruction_loss(blank, clip, on)[0]) > 3 * float(reconstruction_loss(blank, clip, off)[0])
    background_error = clip.clone()
    background_error[:, :, :, 0, 0] = 0.0
    assert float(reconstruction_loss(background_error, clip, on)[0]) <= \
        float(reconstruction_loss(background_error, clip, off)[0])
    image = clip[:, :, :1]
    assert float(reconstruction_loss(blank[:, :, :1], image, on)[0]) == \
        pytest.approx(float(reconstruction_loss(blank[:, :, :1], image, off)[0]))


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
