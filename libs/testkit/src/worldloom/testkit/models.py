"""Tiny tokenizers and world models in a store, where the generate, tokenize and train services load them.

Random weights (no training): for tests of serving, routing and refusals, not of quality.

    put_tokenizer(store, "tok-d", "discrete", tmp)                   # FSQ (4, 4, 4): 64 codes
    put_world_model(store, "wm-ar", tiny_ar(), "ar", "tok-d", tmp)   # weights + registry record

The world models fit these tokenizers on 16x16 frames (2x2 latents, 4 video frames per latent frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from worldloom.core.catalog import tokenizer_model_key, world_model_key
from worldloom.core.store.base import ObjectStore
from worldloom.models.checkpoint import publish_files
from worldloom.models.tokenizer import CausalVideoTokenizer, save_checkpoint
from worldloom.models.tokenizer.model import Kind
from worldloom.models.world import (
    ActionSpec,
    ARConfig,
    ARWorldModel,
    DiffusionWorldModel,
    DiTConfig,
    WorldModel,
    save_world_checkpoint,
)
from worldloom.models.world.registry import WorldModelLineage, WorldModelRecord, WorldModelRegistry

#: the smallest tokenizer that still has every layer kind: 8 channels, no attention, 4x8x8 compression
TINY_TOKENIZER: dict[str, Any] = {"channels": 8, "channel_mult": (1, 1, 1, 1), "attention": False}


def put_file(store: ObjectStore, key: str, path: Path) -> None:
    """Streams a local file into the store under ``key``."""
    with open(path, "rb") as f:
        store.put_file(key, f, path.stat().st_size)


def perturb(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Random init leaves zero-initialised layers (adaLN-Zero): give every weight some signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def put_tokenizer(store: ObjectStore, tid: str, kind: Kind, tmp: Path) -> CausalVideoTokenizer:
    """A random :data:`TINY_TOKENIZER` (``kind`` "discrete": FSQ (4, 4, 4), 64 codes; "continuous": 4 latent
    channels) saved where the registry keeps tokenizer ``tid``'s model; ``tmp`` holds the files on the way."""
    overrides = dict(TINY_TOKENIZER)
    if kind == "discrete":
        overrides["fsq_levels"] = (4, 4, 4)
    else:
        overrides["latent_channels"] = 4
    tok = CausalVideoTokenizer.from_preset("tiny", kind, "4x8x8", **overrides)
    folder = tmp / tid
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / tokenizer_model_key(tid).rsplit("/", 1)[1], tok)
    publish_files(store, folder, tokenizer_model_key(tid).rsplit("/", 1)[0])
    return tok


def put_world_model(store: ObjectStore, model_id: str, model: WorldModel, family: str, tid: str, tmp: Path,
                    state: str = "succeeded") -> None:
    """``model``'s weights where the generate service loads model ``model_id``, and its registry record
    (``family``, trained on tokenizer ``tid``, in ``state``)."""
    folder = tmp / model_id
    folder.mkdir(parents=True, exist_ok=True)
    save_world_checkpoint(folder / world_model_key(model_id).rsplit("/", 1)[1], model)
    publish_files(store, folder, world_model_key(model_id).rsplit("/", 1)[0])
    WorldModelRegistry(store).save(WorldModelRecord(
        model_id=model_id, name=model_id, family=family, state=state, config=model.config.to_dict(),
        lineage=WorldModelLineage(tokenizer_id=tid), announced=True))


def tiny_ar(seed: int = 1, action: ActionSpec | None = None, **overrides: Any) -> ARWorldModel:
    """A perturbed one-layer AR model over the discrete :func:`put_tokenizer` (64 codes, 2x2 tokens a frame,
    4 latent frames), conditioned on continuous 3-d actions unless ``action`` says otherwise."""
    cfg = ARConfig.preset("tiny", vocab_size=64, tokens_per_frame=4, max_frames=4, n_layer=1, d_model=32, n_head=2,
                          action=action or ActionSpec.continuous(3), **overrides)
    model = ARWorldModel(cfg)
    perturb(model, seed)
    return model


def tiny_dit(seed: int = 2, action: ActionSpec | None = None, **overrides: Any) -> DiffusionWorldModel:
    """A perturbed one-layer DiT over the continuous :func:`put_tokenizer` (4 channels, 2x2 latents, 2 context
    + 1 predicted latent frames), conditioned on 5 discrete actions unless ``action`` says otherwise."""
    overrides = {"text_dim": None, **overrides}
    cfg = DiTConfig.preset("tiny", in_channels=4, latent_size=(2, 2), patch_size=1, max_frames=3, n_future=1,
                           n_layer=1, d_model=32, n_head=2, action=action or ActionSpec.discrete(5), **overrides)
    model = DiffusionWorldModel(cfg)
    perturb(model, seed)
    return model
