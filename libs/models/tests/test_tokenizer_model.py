"""Causal video tokenizer: shapes for every preset and kind, image path, causality, streaming, FSQ."""

import pytest
import torch

from worldloom.models.tokenizer.model import (
    COMPRESSIONS,
    FSQ,
    SIZES,
    CausalVideoTokenizer,
    Kind,
    TokenizerConfig,
)


def _randomised(model: CausalVideoTokenizer, seed: int = 0) -> CausalVideoTokenizer:
    """Perturb every weight: fresh residual branches are zero-initialised (identity), which would make
    causality tests too easy to pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _video(b: int, t: int, hw: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, t, hw, hw, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_config_presets_and_dict_round_trip():
    assert set(COMPRESSIONS) == {"4x8x8", "8x8x8", "8x16x16"}
    assert {"tiny", "base", "large"} <= set(SIZES)
    cfg = TokenizerConfig.preset("base", "discrete", "8x16x16", attention=False)
    assert (cfg.t_compression, cfg.s_compression, cfg.z_channels, cfg.codebook_size) == (8, 16, 6, 64_000)
    assert cfg.attention is False and cfg.size == "base"
    again = TokenizerConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match="unknown"):
        TokenizerConfig.from_dict({**cfg.to_dict(), "nope": 1})
    with pytest.raises(ValueError, match="compression"):
        TokenizerConfig(compression="3x7x7")
    with pytest.raises(ValueError, match="kind"):
        TokenizerConfig(kind="vq")  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_shapes_every_preset_and_kind(compression: str, kind: Kind):
    model = CausalVideoTokenizer.from_preset("tiny", kind, compression).eval()
    tc, sc = COMPRESSIONS[compression]
    t, hw = 1 + 2 * tc, 64 if sc == 16 else 32
    video = _video(2, t, hw)
    with torch.no_grad():
        recon, aux = model(video)
        enc = model.encode(video)
    assert recon.shape == video.shape and recon.dtype == torch.float32
    lat = (3, hw // sc, hw // sc)
    assert model.latent_shape(t, hw, hw)[1:] == lat
    if kind == "continuous":
        assert isinstance(enc, torch.Tensor) and enc.shape == (2, 16, *lat)
        assert aux["latents"].shape == enc.shape
    else:
        codes, indices = enc
        assert codes.shape == (2, 6, *lat) and indices.shape == (2, *lat) and indices.dtype == torch.int64
        assert int(indices.min()) >= 0 and int(indices.max()) < 64_000
        assert codes.abs().max() <= 1.0
        assert torch.equal(model.codes_to_indices(codes), indices)
        assert torch.equal(model.indices_to_codes(indices), codes)
        with torch.no_grad():
            assert torch.allclose(model.decode(indices), model.decode(codes), atol=1e-5)


def test_17x64x64_with_8x8x8():
    model = CausalVideoTokenizer.from_preset("tiny", "continuous", "8x8x8").eval()
    with torch.no_grad():
        z = model.encode(_video(1, 17, 64))
        assert z.shape == (1, 16, 3, 8, 8)
        assert model.decode(z).shape == (1, 3, 17, 64, 64)


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_image_is_a_one_frame_video(kind: Kind):
    model = _randomised(CausalVideoTokenizer.from_preset("tiny", kind))
    video = _video(2, 9, 32)
    with torch.no_grad():
        recon, aux = model(video[:, :, :1])
        assert recon.shape == (2, 3, 1, 32, 32)
        # the image path is exactly the first-frame path of a video
        if kind == "continuous":
            assert aux["latents"].shape == (2, 16, 1, 4, 4)
            assert torch.allclose(model.encode(video)[:, :, :1], aux["latents"], atol=1e-4)
        else:
            assert torch.equal(model.encode(video)[1][:, :1], aux["indices"])


@pytest.mark.parametrize("compression", ["4x8x8", "8x8x8"])
def test_invalid_frame_counts_raise(compression: str):
    model = CausalVideoTokenizer.from_preset("tiny", "continuous", compression)
    tc = COMPRESSIONS[compression][0]
    for bad in (0, 2, tc, tc + 2):
        with pytest.raises(ValueError, match=f"1 \\+ k\\*{tc}"):
            model.encode(torch.zeros(1, 3, bad, 32, 32))
    with pytest.raises(ValueError, match="multiples of 8"):
        model.encode(torch.zeros(1, 3, 1, 36, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        model.encode(torch.zeros(1, 4, 1, 32, 32))
    with pytest.raises(ValueError, match="float"):
        model.encode(torch.zeros(1, 3, 1, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
@pytest.mark.parametrize("compression", ["4x8x8", "8x8x8"])
def test_causality_future_frames_do_not_change_past_latents(kind: Kind, compression: str):
    model = _randomised(CausalVideoTokenizer.from_preset("tiny", kind, compression))
    tc = COMPRESSIONS[compression][0]
    video = _video(1, 1 + 3 * tc, 32)
    for group in range(3):  # latent `group` covers frames up to group*tc
        cut = group * tc + 1
        changed = video.clone()
        changed[:, :, cut:] = _video(1, changed.shape[2] - cut, 32, seed=group + 1)
        with torch.no_grad():
            a, b = model.encode(video), model.encode(changed)
            za, zb = (a, b) if kind == "continuous" else (a[0], b[0])
            assert torch.equal(za[:, :, : group + 1], zb[:, :, : group + 1]), f"latent <= {group} changed"
            assert not torch.allclose(za[:, :, group + 1 :], zb[:, :, group + 1 :])
            # the decoder is causal too: frames before the change decode identically
            ra, rb = model.decode(za), model.decode(zb)
            assert torch.equal(ra[:, :, :cut], rb[:, :, :cut])
            assert not torch.allclose(ra[:, :, cut:], rb[:, :, cut:])


def test_streaming_prefix_encodes_like_the_whole_clip():
    """Encoding the first 1 + k*tc frames gives the first k+1 latents of the whole clip (streaming)."""
    model = _randomised(CausalVideoTokenizer.from_preset("tiny", "continuous", "4x8x8"))
    video = _video(1, 13, 32)
    with torch.no_grad():
        full = model.encode(video)
        for k in range(3):
            assert torch.allclose(model.encode(video[:, :, : 1 + 4 * k]), full[:, :, : k + 1], atol=1e-4)


def test_fsq_codebook_and_index_round_trip():
    fsq = FSQ((8, 8, 8, 5, 5, 5))
    assert fsq.codebook_size == 64_000 and fsq.dim == 6
    every = torch.arange(64_000).view(1, 64_000)
    codes = fsq.indices_to_codes(every)
    assert codes.shape == (1, 6, 64_000) and codes.min() == -1.0 and codes.max() <= 1.0
    assert torch.equal(fsq.codes_to_indices(codes), every)
    assert len({tuple(c) for c in codes[0].T.tolist()}) == 64_000  # distinct grid points
    # quantised encoder outputs land on the grid and survive the round trip
    z = torch.randn(2, 6, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    q = fsq.quantize(z)
    idx = fsq.codes_to_indices(q)
    assert torch.allclose(fsq.indices_to_codes(idx), q)
    assert fsq.codes_to_indices(fsq.quantize(torch.zeros(1, 6, 1))).shape == (1, 1)
    # every level is reachable from a sweep of encoder outputs
    sweep = fsq.quantize(torch.linspace(-5, 5, 1001).expand(1, 6, 1001))
    assert [len(set(sweep[0, i].tolist())) for i in range(6)] == [8, 8, 8, 5, 5, 5]


def test_fsq_straight_through_gradient_flows():
    torch.manual_seed(0)
    fsq = FSQ((8, 8, 8, 5, 5, 5))
    z = torch.randn(2, 6, 5, requires_grad=True)
    (fsq.quantize(z) * torch.randn(2, 6, 5)).sum().backward()
    assert z.grad is not None and bool((z.grad != 0).all())
    # through the whole discrete model down to the first encoder layer
    model = CausalVideoTokenizer.from_preset("tiny", "discrete")
    recon, _ = model(_video(1, 5, 32))
    recon.abs().mean().backward()
    first = model.encoder.conv_in.conv.weight.grad
    assert first is not None and float(first.abs().sum()) > 0


def test_decode_rejects_bad_inputs():
    cont = CausalVideoTokenizer.from_preset("tiny", "continuous")
    disc = CausalVideoTokenizer.from_preset("tiny", "discrete")
    with pytest.raises(ValueError, match="discrete"):
        cont.decode(torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="64000"):
        disc.decode(torch.full((1, 1, 4, 4), 64_000))
    with pytest.raises(ValueError, match="latents"):
        cont.decode(torch.zeros(1, 6, 1, 4, 4))
    with pytest.raises(ValueError, match="discrete"):
        cont.indices_to_codes(torch.zeros(1, 1, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_runs_under_bf16_autocast(kind: Kind):
    """The CUDA training path uses bf16 autocast; CPU autocast exercises the same dtype handling."""
    model = CausalVideoTokenizer.from_preset("tiny", kind)
    video = _video(1, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recon, aux = model(video)
    assert recon.shape == video.shape and torch.isfinite(recon.float()).all()
    recon.float().abs().mean().backward()
    if kind == "discrete":
        assert aux["codes"].dtype == torch.float32 and aux["indices"].dtype == torch.int64
