"""Causal video tokenizer (Cosmos-Tokenizer style): continuous or FSQ-discrete latents for images and videos.

    from worldloom.models.tokenizer import CausalVideoTokenizer, fit, save_checkpoint

    model = CausalVideoTokenizer.from_preset("tiny", "discrete", "4x8x8")
    codes, indices = model.encode(video)          # video: [B, 3, 1 + 4k, H, W] in [-1, 1]
    recon = model.decode(indices)

Modules: ``model`` (config, layers, FSQ, encoder/decoder), ``losses`` (L1 + SSIM, optional patch GAN),
``metrics`` (PSNR/SSIM per clip, codebook usage), ``checkpoint`` (safetensors + JSON, no pickle),
``train`` (one-process train_step / fit), ``data`` (synthetic clips, joint image+video batches).
Benchmarks live outside the library, in ``bench/`` (``bench/benchlib/tokenizer.py``).
"""

from worldloom.models.tokenizer.checkpoint import (
    CheckpointError,
    TrainState,
    load_checkpoint,
    read_safetensors,
    save_checkpoint,
)
from worldloom.models.tokenizer.losses import LossConfig, PatchDiscriminator, reconstruction_loss
from worldloom.models.tokenizer.metrics import (
    codebook_usage,
    foreground_mask,
    foreground_psnr,
    median_background,
    psnr,
    ssim,
)
from worldloom.models.tokenizer.model import (
    COMPRESSIONS,
    FSQ,
    SIZES,
    CausalVideoTokenizer,
    TokenizerConfig,
)
from worldloom.models.tokenizer.train import fit, train_step

__all__ = [
    "COMPRESSIONS",
    "FSQ",
    "SIZES",
    "CausalVideoTokenizer",
    "CheckpointError",
    "LossConfig",
    "PatchDiscriminator",
    "TokenizerConfig",
    "TrainState",
    "codebook_usage",
    "fit",
    "foreground_mask",
    "foreground_psnr",
    "load_checkpoint",
    "median_background",
    "psnr",
    "read_safetensors",
    "reconstruction_loss",
    "save_checkpoint",
    "ssim",
    "train_step",
]
