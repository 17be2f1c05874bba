"""Pure parts of the held-out tokenizer benchmark (bench/bench_tokenizer.py): bits per pixel, JPEG at a
bpp budget, evaluation windows, frame preparation, scoring and foreground PSNR on held-out simulator
frames. No training, no data files."""

import importlib.util
import math

import numpy as np
import pytest
import torch
from benchlib.tokenizer import (
    HELDOUT_SIM_SEED,
    SimClip,
    eval_windows,
    evaluate_foreground,
    foreground_scores,
    heldout_sim_clips,
    jpeg_at_bpp,
    jpeg_bits,
    jpeg_clip,
    jpeg_encode,
    jpeg_scan_bytes,
    latent_bpp,
    reconstruct_clips,
    resize_frame,
    round_latents,
    score_clips,
)

from worldloom.models.tokenizer.data import moving_pattern_videos, tensor_to_frames
from worldloom.models.tokenizer.metrics import median_background
from worldloom.models.tokenizer.model import CausalVideoTokenizer, TokenizerConfig

needs_jpeg = pytest.mark.skipif(
    importlib.util.find_spec("PIL") is None and importlib.util.find_spec("cv2") is None,
    reason="the JPEG reference needs Pillow or OpenCV",
)


def _frames(n: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    """``[n, size, size, 3]`` uint8: smooth colours, stripes, shapes and a little noise (JPEG-realistic)."""
    clip = tensor_to_frames(moving_pattern_videos(1, n, size, seed=seed)[0]).astype(np.int16)
    noise = np.random.default_rng(seed).integers(-6, 7, clip.shape)
    return np.clip(clip + noise, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ bpp


def test_latent_bpp_discrete_is_log2_codebook_bits_per_token():
    cfg = TokenizerConfig.preset("tiny", "discrete", "4x8x8")
    # 17 frames -> 1 + 16/4 = 5 latent frames of 8x8 tokens at 64x64
    assert latent_bpp(cfg, 17, 64, 64) == pytest.approx(5 * 8 * 8 * math.log2(64000) / (17 * 64 * 64))
    assert latent_bpp(cfg, 1, 64, 64) == pytest.approx(math.log2(64000) / 64)  # an image: 1 token per 8x8
    assert latent_bpp(cfg, 17, 64, 64, latent_bits=32) == latent_bpp(cfg, 17, 64, 64)  # bits only for continuous
    cfg8 = TokenizerConfig.preset("tiny", "discrete", "8x8x8")
    assert latent_bpp(cfg8, 17, 128, 128) == pytest.approx(3 * math.log2(64000) / (17 * 64))
    # resolution does not change bpp (fixed spatial compression)
    assert latent_bpp(cfg, 17, 128, 128) == pytest.approx(latent_bpp(cfg, 17, 64, 64))


def test_latent_bpp_continuous_counts_channels_times_bits_and_matches_latent_shape():
    cfg = TokenizerConfig.preset("tiny", "continuous", "4x8x8")
    c, t, h, w = CausalVideoTokenizer(cfg).latent_shape(17, 64, 64)
    assert latent_bpp(cfg, 17, 64, 64, latent_bits=16) == pytest.approx(c * t * h * w * 16 / (17 * 64 * 64))
    assert latent_bpp(cfg, 17, 64, 64, latent_bits=16) == pytest.approx(16 * 16 * 5 / (17 * 64))  # ~1.18
    assert latent_bpp(cfg, 17, 64, 64, latent_bits=32) == pytest.approx(2 * latent_bpp(cfg, 17, 64, 64))


@pytest.mark.parametrize("dims", [(16, 64, 64), (17, 60, 64), (0, 64, 64)])
def test_latent_bpp_rejects_shapes_the_model_rejects(dims):
    with pytest.raises(ValueError):
        latent_bpp(TokenizerConfig.preset("tiny", "continuous", "4x8x8"), *dims)


def test_round_latents_float16_or_unchanged():
    z = torch.randn(2, 16, 3, 4, 4)
    assert torch.equal(round_latents(z, 32), z)
    r = round_latents(z, 16)
    assert r.dtype == torch.float32 and torch.equal(r, z.half().float()) and not torch.equal(r, z)
    with pytest.raises(ValueError):
        round_latents(z, 8)


# -------------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize(("frames", "expected"), [
    (17, [(0, 17)]),
    (33, [(0, 17)]),  # the tail shorter than a window is not scored
    (34, [(0, 17), (17, 34)]),
    (49, [(0, 17), (17, 34)]),
    (240, [(s, s + 17) for s in range(0, 17 * 14, 17)]),
    (16, [(0, 9)]),  # shorter than a window: the longest 1 + k*8 that fits
    (9, [(0, 9)]),
    (8, []),
    (0, []),
])
def test_eval_windows(frames, expected):
    spans = eval_windows(frames, 17, 8)
    assert spans == expected
    assert all(b <= frames and (b - a - 1) % 8 == 0 and (b - a - 1) % 4 == 0 for a, b in spans)


@pytest.mark.parametrize("window", [16, 8, 13, 1])
def test_eval_windows_rejects_lengths_not_1_plus_k_multiple(window):
    with pytest.raises(ValueError):
        eval_windows(100, window, 8)


# ------------------------------------------------------------------------------------------- scoring


def test_score_clips_means_per_clip_scores():
    clips = [_frames(3, 32, seed=s) for s in range(2)]
    same = score_clips(clips, clips)
    assert same["psnr"] == 100.0 and same["ssim"] == pytest.approx(1.0) and same["clips"] == 2 and same["frames"] == 6
    worse = [c.copy() for c in clips]
    worse[1] = np.clip(worse[1].astype(np.int16) + 10, 0, 255).astype(np.uint8)
    s = score_clips(worse, clips)
    assert 100.0 > s["psnr"] > 50.0  # mean of 100 dB and ~28 dB
    with pytest.raises(ValueError):
        score_clips(clips[:1], clips)


def _rod_clip(frames: int = 17, size: int = 32) -> SimClip:
    """A white frame with a static grey floor and a 1-px dark rod 12 px long moving one column per frame."""
    video = np.full((frames, size, size, 3), 255, np.uint8)
    video[:, size - 3] = 120
    for t in range(frames):
        video[t, 4:16, 6 + t] = (200, 30, 30)
    bg = median_background(torch.from_numpy(video).permute(3, 0, 1, 2))
    return SimClip(video, bg)


def test_foreground_scores_a_background_only_reconstruction_badly():
    clip = _rod_clip()
    background = np.broadcast_to(clip.frames[:1].copy(), clip.frames.shape).copy()
    background[:, 4:16] = 255  # the floor stays, the rod is gone
    blank = foreground_scores([background], [clip])
    exact = foreground_scores([clip.frames], [clip])
    assert exact["fg_psnr"] == 100.0 and exact["fg_pixels"] == 17 * 14 * 3 and exact["frames"] == 17
    # whole-frame PSNR calls the blank reconstruction good, the foreground does not
    assert blank["psnr"] > 20.0 and blank["fg_psnr"] is not None and blank["fg_psnr"] < blank["psnr"] - 12.0
    still = SimClip(np.full((17, 32, 32, 3), 255, np.uint8), torch.ones(3, 32, 32))  # nothing moves
    mixed = foreground_scores([clip.frames, still.frames], [clip, still])
    assert mixed["fg_clips"] == 1 and mixed["fg_psnr"] == 100.0 and mixed["clips"] == 2  # the still clip is skipped
    assert foreground_scores([still.frames], [still])["fg_psnr"] is None  # no foreground: no figure
    with pytest.raises(ValueError):
        foreground_scores([clip.frames], [clip, still])


@needs_jpeg
def test_evaluate_foreground_scores_tokenizer_and_same_bpp_jpeg_on_the_same_pixels():
    torch.manual_seed(0)
    model = CausalVideoTokenizer(TokenizerConfig.preset("tiny", "continuous", "4x8x8").replace(channels=16))
    out = evaluate_foreground(model, {"rod": [_rod_clip()]})
    row, jp = out["rod"], out["rod"]["jpeg"]
    assert row["bpp"] == pytest.approx(latent_bpp(model.config, 17, 32, 32))
    assert row["fg_pixels"] == jp["fg_pixels"] == 17 * 14 * 3  # the same mask for both
    assert row["fg_psnr"] is not None and jp["fg_psnr"] is not None and 0.0 < jp["reached"] <= 1.0
    assert row["fg_psnr"] == foreground_scores(reconstruct_clips(model, [_rod_clip().frames]), [_rod_clip()])["fg_psnr"]


def test_heldout_sim_clips_are_windows_of_unseen_episodes_with_their_background():
    pytest.importorskip("gymnasium")
    sets = heldout_sim_clips(32, ("CartPole-v1",), episodes=1)
    clips = sets["CartPole-v1"]
    assert clips and all(c.frames.shape == (17, 32, 32, 3) and c.background.shape == (3, 32, 32) for c in clips)
    assert {c.episode for c in clips} == {0}
    assert foreground_scores([c.frames for c in clips], clips)["fg_pixels"] > 0  # the cart and pole move
    again = heldout_sim_clips(32, ("CartPole-v1",), episodes=1, seed=HELDOUT_SIM_SEED)["CartPole-v1"]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(clips, again, strict=True))  # seeded
    from benchlib.tokenizer import simulator_episodes

    trained = simulator_episodes("CartPole-v1", 1, 32)[0]  # what training renders first (seed 0)
    assert not np.array_equal(trained[0], clips[0].frames[0])


# ---------------------------------------------------------------------------------------------- JPEG


def _fake_jpeg(payload: bytes) -> bytes:
    app0 = b"\xff\xe0" + (16).to_bytes(2, "big") + b"JFIF\x00" + bytes(9)
    sos = b"\xff\xda" + (12).to_bytes(2, "big") + bytes(10)
    return b"\xff\xd8" + app0 + sos + payload + b"\xff\xd9"


def test_jpeg_scan_bytes_counts_entropy_coded_data_only():
    assert jpeg_scan_bytes(_fake_jpeg(b"\x12\x34\xff\x00\x56")) == 5
    assert jpeg_bits(_fake_jpeg(b"abc"), "scan") == 24
    assert jpeg_bits(_fake_jpeg(b"abc"), "file") == 8 * len(_fake_jpeg(b"abc"))
    for bad in (b"", b"\xff\xd8\xff\xd9", _fake_jpeg(b"x")[:-2], b"\xff\xd8\x00\x00\x00\x00\xff\xd9"):
        with pytest.raises(ValueError):
            jpeg_scan_bytes(bad)
    with pytest.raises(ValueError):
        jpeg_bits(_fake_jpeg(b"x"), "bytes")


@needs_jpeg
def test_real_jpeg_scan_is_the_file_minus_headers_and_grows_with_quality():
    frame = _frames(1)[0]
    sizes = [(len(d), jpeg_scan_bytes(d)) for d in (jpeg_encode(frame, q) for q in (5, 50, 95))]
    for file_bytes, scan in sizes:
        assert 0 < scan < file_bytes - 300  # tables + headers are several hundred bytes
    assert sizes[0][1] < sizes[1][1] < sizes[2][1]


@needs_jpeg
@pytest.mark.parametrize("count", ["scan", "file"])
def test_jpeg_at_bpp_picks_the_highest_quality_within_budget(count):
    frame = _frames(1)[0]
    pixels = 64 * 64
    def bpp_of(q: int) -> float:
        return jpeg_bits(jpeg_encode(frame, q), count) / pixels

    target = (bpp_of(30) + bpp_of(31)) / 2 if bpp_of(31) > bpp_of(30) else bpp_of(30) + 1e-9
    res = jpeg_at_bpp(frame, target, count)
    assert res.reached and res.bpp <= target
    assert res.bpp == pytest.approx(bpp_of(res.quality))
    assert res.quality == 95 or bpp_of(res.quality + 1) > target  # closest from below
    assert res.quality >= 28  # ~30 (size is monotone in quality up to rare 1-step ties)
    assert res.bpp >= 0.9 * target
    assert res.file_bpp >= res.bpp and res.min_bpp == pytest.approx(bpp_of(1))
    assert res.decoded.shape == frame.shape and res.decoded.dtype == np.uint8
    err = np.abs(res.decoded.astype(int) - frame.astype(int)).mean()
    assert err < 12  # a real reconstruction of the frame, not noise


@needs_jpeg
def test_jpeg_at_bpp_reports_an_unreachable_budget_instead_of_faking_it():
    frame = _frames(1)[0]
    res = jpeg_at_bpp(frame, 0.001)
    assert not res.reached and res.quality == 1
    assert res.bpp == res.min_bpp > 0.001
    generous = jpeg_at_bpp(frame, 100.0)
    assert generous.reached and generous.quality == 95


@needs_jpeg
def test_jpeg_clip_averages_frames_under_one_budget():
    clip = _frames(3)
    target = jpeg_at_bpp(clip[0], 1.0).bpp
    jc = jpeg_clip(clip, 1.0)
    assert jc.decoded.shape == clip.shape
    assert jc.bpp <= 1.0 and 0.0 <= jc.reached <= 1.0 and jc.reached == 1.0
    assert jc.bpp == pytest.approx(np.mean([jpeg_at_bpp(f, 1.0).bpp for f in clip]))
    assert target <= 1.0 and 1 <= jc.quality <= 95 and jc.file_bpp > jc.bpp


@needs_jpeg
def test_downscaled_jpeg_reaches_budgets_below_plain_jpeg_floor():
    frame = _frames(1)[0]
    floor = jpeg_at_bpp(frame, 0.0).min_bpp  # plain JPEG at quality 1
    target = floor / 2
    plain, half = jpeg_at_bpp(frame, target), jpeg_at_bpp(frame, target, scale=2)
    assert not plain.reached
    assert half.reached and half.bpp <= target and half.scale == 2
    assert half.decoded.shape == frame.shape  # upsampled back to the input size
    clip = np.stack([frame, frame])
    only_plain = jpeg_clip(clip, target)
    assert only_plain.reached == 0.0 and only_plain.scale == 1.0 and only_plain.min_bpp == pytest.approx(floor)
    down = jpeg_clip(clip, target, scales=(1, 2, 4))
    assert down.reached == 1.0 and down.scale in (2.0, 4.0) and down.bpp <= target
    assert down.min_bpp == pytest.approx(floor)  # reported for the first (plain) scale
    def mse(d: np.ndarray) -> float:
        return float(np.mean((d.astype(np.float32) - frame) ** 2))

    fitting = [r for r in (jpeg_at_bpp(frame, target, scale=s) for s in (2, 4)) if r.reached]
    assert mse(down.decoded[0]) == pytest.approx(min(mse(r.decoded) for r in fitting))  # the closest that fits
    assert jpeg_clip(clip, 100.0, scales=(1, 2, 4)).scale == 1.0  # full resolution wins when bits allow
    none_fit = jpeg_clip(clip, 1e-6, scales=(1, 2))
    assert none_fit.reached == 0.0 and none_fit.scale == 2.0  # the cheapest when nothing fits


def test_resize_frame_keeps_constant_colour_and_size_roundtrip():
    frame = np.full((32, 32, 3), 77, np.uint8)
    small = resize_frame(frame, 8, 16)
    assert small.shape == (8, 16, 3) and (small == 77).all()
    assert resize_frame(small, 32, 32).shape == (32, 32, 3)
    assert resize_frame(frame, 32, 32) is frame
