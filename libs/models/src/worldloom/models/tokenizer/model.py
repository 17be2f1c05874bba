"""Causal video tokenizer (continuous autoencoder or FSQ-discrete), in the spirit of NVIDIA Cosmos Tokenizer.

Everything the model is lives in this one file, nanoGPT style: config dataclass, layers, FSQ, encoder,
decoder and the public :class:`CausalVideoTokenizer`.

Layout and causality
--------------------
Video is ``[B, 3, T, H, W]`` float in ``[-1, 1]`` with ``T = 1 + k * t_compression``: the first frame is
encoded alone and every later group of ``t_compression`` frames becomes one latent frame. An image is
simply a one-frame video, so one model serves images and videos, and because nothing looks at the future
the tokenizer can run on a stream chunk by chunk.

Causality is kept by construction:

* every convolution pads time only on the past side (replicating the first frame), never the future;
* temporal downsampling is a stride-2 causal conv (latent ``j`` sees frames ``<= j * t_compression``);
* temporal upsampling turns latent 0 into 1 frame and every later latent into ``t_compression`` frames;
* normalisation is per frame (GroupNorm statistics over ``C, H, W`` of one frame, never over time);
* temporal attention uses a causal mask, spatial attention looks at one frame.

Spatial work starts after a ``patch_size`` pixel-unshuffle (the same information as Cosmos' Haar
wavelet patchify; ``conv_in`` learns the mixing), which makes the high-resolution end cheap. The
residual blocks factorise each 3x3x3 conv into a 1x3x3 spatial and a 3x1x1 causal temporal conv
(fewer FLOPs, as in Cosmos).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Kind = Literal["continuous", "discrete"]

#: name -> (temporal compression, spatial compression); "TxHxW".
COMPRESSIONS: dict[str, tuple[int, int]] = {"4x8x8": (4, 8), "8x8x8": (8, 8), "8x16x16": (8, 16)}

#: Size presets; the same code runs all of them. "tiny" trains on a CPU in minutes.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1, patch_size=4, attention=True),
    "small": dict(channels=64, channel_mult=(1, 2, 2, 4), num_res_blocks=1, patch_size=4, attention=True),
    "base": dict(channels=128, channel_mult=(1, 2, 4, 4), num_res_blocks=2, patch_size=4, attention=True),
    "large": dict(channels=192, channel_mult=(1, 2, 4, 4), num_res_blocks=3, patch_size=4, attention=True),
}

DEFAULT_FSQ_LEVELS: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # 64,000 codes, Cosmos DV's choice


@dataclass(frozen=True)
class TokenizerConfig:
    """Everything needed to rebuild the model; round-trips through JSON via :meth:`to_dict`."""

    kind: Kind = "continuous"
    compression: str = "4x8x8"
    channels: int = 32
    #: channel multiplier per level (level 0 = after patchify); the last value repeats if too short.
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 1
    patch_size: int = 4
    #: latent channels of the continuous variant (the discrete one uses ``len(fsq_levels)``).
    latent_channels: int = 16
    fsq_levels: tuple[int, ...] = DEFAULT_FSQ_LEVELS
    #: spatial + causal temporal self-attention in the bottleneck; cheap there (few tokens) and it
    #: gives the latent global context, which convolutions alone reach only through depth.
    attention: bool = True
    dropout: float = 0.0
    size: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("continuous", "discrete"):
            raise ValueError(f"kind must be 'continuous' or 'discrete', got {self.kind!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {self.compression!r}")
        if not _is_pow2(self.patch_size) or self.patch_size > self.s_compression:
            raise ValueError(f"patch_size must be a power of two <= {self.s_compression}, got {self.patch_size}")
        if self.channels < 8 or self.channels % 8 or not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError("channels must be a positive multiple of 8 and channel_mult positive")
        if self.num_res_blocks < 1 or self.latent_channels < 1:
            raise ValueError("num_res_blocks and latent_channels must be >= 1")
        if not self.fsq_levels or min(self.fsq_levels) < 2:
            raise ValueError(f"fsq_levels must be non-empty with every level >= 2, got {self.fsq_levels}")

    @classmethod
    def preset(cls, size: str = "tiny", kind: Kind = "continuous", compression: str = "4x8x8",
               **overrides: Any) -> TokenizerConfig:
        """A named size preset (see :data:`SIZES`) with any field overridden."""
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        return cls(kind=kind, compression=compression, size=size, **{**SIZES[size], **overrides})

    @property
    def t_compression(self) -> int:
        return COMPRESSIONS[self.compression][0]

    @property
    def s_compression(self) -> int:
        return COMPRESSIONS[self.compression][1]

    @property
    def num_spatial_downs(self) -> int:
        return int(math.log2(self.s_compression // self.patch_size))

    @property
    def num_temporal_downs(self) -> int:
        return int(math.log2(self.t_compression))

    @property
    def num_stages(self) -> int:
        """Downsampling stages; stage ``i`` halves space if ``i < num_spatial_downs``, time likewise."""
        return max(self.num_spatial_downs, self.num_temporal_downs)

    @property
    def z_channels(self) -> int:
        """Channels of what the encoder emits: latent channels, or one per FSQ dimension."""
        return self.latent_channels if self.kind == "continuous" else len(self.fsq_levels)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels)

    def level_channels(self, level: int) -> int:
        return self.channels * self.channel_mult[min(level, len(self.channel_mult) - 1)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TokenizerConfig fields: {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**values)

    def replace(self, **changes: Any) -> TokenizerConfig:
        return replace(self, **changes)


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


# ----------------------------------------------------------------------------------------------- layers


class CausalConv3d(nn.Module):
    """Conv3d that pads time on the past side only (first frame replicated), so output t sees inputs <= t.

    With temporal stride 2 and kernel 3, ``1 + 2m`` frames become ``1 + m``: output 0 is frame 0 alone,
    output j covers frames ``2j-2 .. 2j``. Spatial padding is symmetric zeros (``same`` for stride 1);
    for spatial stride 2 the pad is (0, 1) like LDM/Cosmos so ``H`` halves exactly.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (3, 3, 3),
                 stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        kt, kh, kw = kernel
        self.time_pad = kt - 1
        self.down_pad = stride[1] > 1
        spatial = (0, 0) if self.down_pad else (kh // 2, kw // 2)
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=(0, *spatial))

    def forward(self, x: Tensor) -> Tensor:
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        if self.down_pad:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class FactorizedConv(nn.Sequential):
    """1x3x3 spatial conv followed by a 3x1x1 causal temporal conv (cheaper than a full 3x3x3)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(CausalConv3d(cin, cout, (1, 3, 3)), CausalConv3d(cout, cout, (3, 1, 1)))


class FrameGroupNorm(nn.Module):
    """GroupNorm with statistics per frame: normalising over time would leak the future into the past."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.groups = math.gcd(channels, max(1, min(32, channels // 4)))
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        g = x.view(b, self.groups, c // self.groups, t, h, w).float()  # fp32 statistics under bf16 autocast
        var, mean = torch.var_mean(g, dim=(2, 4, 5), keepdim=True, unbiased=False)
        g = ((g - mean) * torch.rsqrt(var + 1e-6)).view(b, c, t, h, w)
        return (g * self.weight.view(1, c, 1, 1, 1) + self.bias.view(1, c, 1, 1, 1)).to(x.dtype)


class ResBlock(nn.Module):
    """Pre-norm residual block of two factorised causal convs; the second is zero-initialised so a
    fresh block is the identity (deep stacks start well conditioned)."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = FrameGroupNorm(cin), FactorizedConv(cin, cout)
        self.norm2, self.conv2 = FrameGroupNorm(cout), FactorizedConv(cout, cout)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()
        temporal = self.conv2[1]
        assert isinstance(temporal, CausalConv3d)  # FactorizedConv is (spatial, temporal)
        nn.init.zeros_(temporal.conv.weight)
        if temporal.conv.bias is not None:  # always: Conv3d has a bias by default
            nn.init.zeros_(temporal.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention within each frame, then causal temporal self-attention per position."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // 64)
        self.norm_s, self.norm_t = FrameGroupNorm(channels), FrameGroupNorm(channels)
        self.qkv_s, self.qkv_t = nn.Linear(channels, 3 * channels), nn.Linear(channels, 3 * channels)
        self.out_s, self.out_t = nn.Linear(channels, channels), nn.Linear(channels, channels)
        for lin in (self.out_s, self.out_t):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _attend(self, tokens: Tensor, qkv: nn.Linear, out: nn.Linear, causal: bool) -> Tensor:
        n, length, c = tokens.shape
        q, k, v = qkv(tokens).view(n, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return out(y.transpose(1, 2).reshape(n, length, c))

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        s = self.norm_s(x).permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
        x = x + self._attend(s, self.qkv_s, self.out_s, False).view(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        # also for t == 1, so an image gets exactly the first-frame path of a video
        tt = self.norm_t(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
        y = self._attend(tt, self.qkv_t, self.out_t, True).view(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        return x + y


class Downsample(nn.Module):
    """Halve space (strided conv + average-pool shortcut) and/or time (causal stride-2 conv + causal
    average-pool shortcut); the pooled shortcut keeps an easy identity-like path for optimisation."""

    def __init__(self, channels: int, spatial: bool, temporal: bool) -> None:
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        if spatial:
            self.conv_s = CausalConv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2))
        if temporal:
            self.conv_t = CausalConv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.spatial:
            x = self.conv_s(x) + F.avg_pool3d(x, (1, 2, 2))
        if self.temporal:
            # frames (2j-1, 2j) -> j; frame 0 pairs with a copy of itself
            pooled = F.avg_pool3d(torch.cat([x[:, :, :1], x], dim=2), (2, 1, 1))
            x = self.conv_t(x) + pooled
        return x


class Upsample(nn.Module):
    """Inverse of :class:`Downsample`: time first (latent 0 -> 1 frame, later ones -> 2 frames each,
    predicted by a causal conv into two sub-frames), then space (nearest x2 + conv)."""

    def __init__(self, channels: int, spatial: bool, temporal: bool) -> None:
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        if temporal:
            self.conv_t = CausalConv3d(channels, 2 * channels, (3, 1, 1))
        if spatial:
            self.conv_s = CausalConv3d(channels, channels, (1, 3, 3))

    def forward(self, x: Tensor) -> Tensor:
        if self.temporal:
            b, c, t, h, w = x.shape
            y = self.conv_t(x).view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
            x = (y + x.repeat_interleave(2, dim=2))[:, :, 1:]
        if self.spatial:
            x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
            x = x + self.conv_s(x)
        return x


# ------------------------------------------------------------------------------------------------- FSQ


class FSQ(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023): bound each channel with tanh, round to one of
    ``levels[i]`` values, straight-through gradient. No codebook to learn or collapse; the implicit
    codebook is the grid, ``prod(levels)`` codes. Codes are normalised to ``[-1, 1]`` per channel."""

    levels: Tensor  # buffers, registered in __init__
    basis: Tensor

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.int64)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), lv[:-1]]), 0)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.codebook_size = int(lv.prod())

    @property
    def dim(self) -> int:
        return int(self.levels.numel())

    def _shape(self, ndim: int) -> tuple[int, ...]:
        return (1, -1) + (1,) * (ndim - 2)  # broadcast along channel dim 1

    def quantize(self, z: Tensor) -> Tensor:
        """``[B, dim, ...]`` float -> codes on the grid, normalised to [-1, 1]; gradients pass straight."""
        lv = self.levels.to(z.dtype).view(self._shape(z.ndim))
        half_l = (lv - 1) * (1 - 1e-3) / 2
        offset = torch.where(self.levels.view(self._shape(z.ndim)) % 2 == 0, 0.5, 0.0).to(z.dtype)
        bounded = torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through estimator
        return rounded / (self.levels.view(self._shape(z.ndim)) // 2)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """``[B, dim, ...]`` normalised codes -> ``[B, ...]`` int64 indices in ``[0, codebook_size)``."""
        shape = self._shape(codes.ndim)
        half = (self.levels // 2).view(shape)
        digits = (codes * half + half).round().long()
        return (digits * self.basis.view(shape)).sum(dim=1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """``[B, ...]`` integer indices -> ``[B, dim, ...]`` normalised float codes."""
        idx = indices.long().unsqueeze(1)
        shape = self._shape(idx.ndim)
        digits = (idx // self.basis.view(shape)) % self.levels.view(shape)
        half = (self.levels // 2).view(shape)
        return (digits - half).float() / half


# -------------------------------------------------------------------------------------- encoder/decoder


def _patchify(x: Tensor, p: int) -> Tensor:
    """[B, C, T, H, W] -> [B, C*p*p, T, H/p, W/p] (pixel unshuffle per frame)."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def _unpatchify(x: Tensor, p: int) -> Tensor:
    if p == 1:
        return x
    b, cpp, t, h, w = x.shape
    c = cpp // (p * p)
    x = x.view(b, c, p, p, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(b, c, t, h * p, w * p)


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.patch = cfg.patch_size
        ch = cfg.level_channels(0)
        self.conv_in = CausalConv3d(3 * cfg.patch_size**2, ch)
        self.blocks = nn.ModuleList()
        for level in range(cfg.num_stages + 1):
            out = cfg.level_channels(level)
            for _ in range(cfg.num_res_blocks):
                self.blocks.append(ResBlock(ch, out, cfg.dropout))
                ch = out
            if level < cfg.num_stages:
                self.blocks.append(Downsample(ch, level < cfg.num_spatial_downs, level < cfg.num_temporal_downs))
        mid = [ResBlock(ch, ch, cfg.dropout)] + ([AttentionBlock(ch)] if cfg.attention else [])
        self.mid = nn.Sequential(*mid, ResBlock(ch, ch, cfg.dropout))
        self.norm_out = FrameGroupNorm(ch)
        self.conv_out = CausalConv3d(ch, cfg.z_channels, (1, 3, 3))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(_patchify(x, self.patch))
        for block in self.blocks:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.patch = cfg.patch_size
        ch = cfg.level_channels(cfg.num_stages)
        self.conv_in = CausalConv3d(cfg.z_channels, ch)
        mid = [ResBlock(ch, ch, cfg.dropout)] + ([AttentionBlock(ch)] if cfg.attention else [])
        self.mid = nn.Sequential(*mid, ResBlock(ch, ch, cfg.dropout))
        self.blocks = nn.ModuleList()
        for level in reversed(range(cfg.num_stages + 1)):
            out = cfg.level_channels(level)
            for _ in range(cfg.num_res_blocks):
                self.blocks.append(ResBlock(ch, out, cfg.dropout))
                ch = out
            if level > 0:
                stage = level - 1
                self.blocks.append(Upsample(ch, stage < cfg.num_spatial_downs, stage < cfg.num_temporal_downs))
        self.norm_out = FrameGroupNorm(ch)
        self.conv_out = CausalConv3d(ch, 3 * cfg.patch_size**2)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for block in self.blocks:
            h = block(h)
        return _unpatchify(self.conv_out(F.silu(self.norm_out(h))), self.patch)


# --------------------------------------------------------------------------------------------- public


class CausalVideoTokenizer(nn.Module):
    """Causal video tokenizer: ``encode`` -> latents (continuous) or ``(codes, indices)`` (discrete),
    ``decode`` -> video, ``forward`` -> ``(reconstruction, aux)`` for training."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.fsq = FSQ(config.fsq_levels) if config.kind == "discrete" else None

    @classmethod
    def from_preset(cls, size: str = "tiny", kind: Kind = "continuous", compression: str = "4x8x8",
                    **overrides: Any) -> CausalVideoTokenizer:
        return cls(TokenizerConfig.preset(size, kind, compression, **overrides))

    @property
    def is_discrete(self) -> bool:
        return self.fsq is not None

    def _require_fsq(self) -> FSQ:
        if self.fsq is None:
            raise ValueError("codes/indices exist only for kind='discrete' tokenizers")
        return self.fsq

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """FSQ codes ``[B, dim, t, h, w]`` -> token indices ``[B, t, h, w]`` (int64, ``< codebook_size``)."""
        return self._require_fsq().codes_to_indices(codes)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Token indices ``[B, t, h, w]`` -> FSQ codes ``[B, dim, t, h, w]`` in [-1, 1]."""
        return self._require_fsq().indices_to_codes(indices)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(C, t, h, w)`` of the latent for a ``frames x height x width`` input (``C`` = FSQ dim if discrete)."""
        self._check_dims(frames, height, width)
        cfg = self.config
        return (cfg.z_channels, 1 + (frames - 1) // cfg.t_compression,
                height // cfg.s_compression, width // cfg.s_compression)

    def _check_dims(self, frames: int, height: int, width: int) -> None:
        tc, sc = self.config.t_compression, self.config.s_compression
        if frames < 1 or (frames - 1) % tc:
            ok = ", ".join(str(1 + k * tc) for k in range(4))
            raise ValueError(f"number of frames must be 1 + k*{tc} for compression {self.config.compression} "
                             f"(e.g. {ok}, ...); got {frames}")
        if height % sc or width % sc or height < sc or width < sc:
            raise ValueError(f"height and width must be positive multiples of {sc}; got {height}x{width}")

    def _check_video(self, video: Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, T, H, W] (images: T=1); got shape {tuple(video.shape)}")
        if not video.is_floating_point():
            raise ValueError(f"video must be float in [-1, 1]; got dtype {video.dtype}")
        self._check_dims(*video.shape[2:])

    def encode(self, video: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Continuous: latents ``[B, C, t, h, w]``. Discrete: ``(codes [B, dim, t, h, w], indices [B, t, h, w])``."""
        self._check_video(video)
        z = self.encoder(video)
        if self.fsq is None:
            return z
        codes = self.fsq.quantize(z.float())
        return codes, self.fsq.codes_to_indices(codes.detach())

    def decode(self, latents_or_indices: Tensor) -> Tensor:
        """Latents / FSQ codes ``[B, C, t, h, w]`` or integer indices ``[B, t, h, w]`` -> video ``[B, 3, T, H, W]``."""
        z = latents_or_indices
        if not z.is_floating_point():
            if self.fsq is None:
                raise ValueError("integer indices can only be decoded by a discrete tokenizer")
            if z.ndim != 4:
                raise ValueError(f"indices must be [B, t, h, w]; got shape {tuple(z.shape)}")
            if z.numel() and (int(z.min()) < 0 or int(z.max()) >= self.fsq.codebook_size):
                raise ValueError(f"indices must lie in [0, {self.fsq.codebook_size})")
            z = self.fsq.indices_to_codes(z)
        if z.ndim != 5 or z.shape[1] != self.config.z_channels:
            raise ValueError(f"latents must be [B, {self.config.z_channels}, t, h, w]; got shape {tuple(z.shape)}")
        return self.decoder(z.to(self.decoder.conv_in.conv.weight.dtype))

    def forward(self, video: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Reconstruct ``video``; ``aux`` holds ``latents`` (continuous) or ``codes`` and ``indices``."""
        enc = self.encode(video)
        if isinstance(enc, tuple):
            codes, indices = enc
            return self.decoder(codes.to(video.dtype)), {"codes": codes, "indices": indices}
        return self.decoder(enc), {"latents": enc}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
