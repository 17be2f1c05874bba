"""World models over tokenizer latents: an autoregressive GPT on discrete indices and a flow-matching DiT
on continuous latents. Both take per-frame actions and MiniLM text embeddings as conditioning.

    from worldloom.models.world import ActionSpec, ARConfig, ARWorldModel, DiTConfig, DiffusionWorldModel

    # discrete: indices [B, T, h, w] from CausalVideoTokenizer(kind="discrete").encode(video)[1]
    ar = ARWorldModel(ARConfig.preset("tiny", tokens_per_frame=h * w, action=ActionSpec.continuous(7)))
    loss = ar(indices, actions=actions, text=text_emb)["loss"]        # actions [B, T-1, 7], text [B, 384]
    future = ar.generate(indices[:, :2], num_frames=3, actions=actions, temperature=0.8, top_k=100)

    # continuous: latents [B, C, T, h, w] from CausalVideoTokenizer(kind="continuous").encode(video)
    dit = DiffusionWorldModel(DiTConfig.preset("tiny", in_channels=16, latent_size=(h, w), max_frames=4))
    loss = dit(latents[:, :, :3], latents[:, :, 3:4], actions=actions[:, :3])["loss"]
    rollout = dit.sample(latents[:, :, :3], num_frames=8, actions=actions, steps=10, cfg_scale=2.0,
                         generator=torch.Generator().manual_seed(0))

Both are :class:`WorldModel` s (``base``): one interface (training inputs, ``rollout`` with
:class:`Sampling`, context window, encode/decode through the tokenizer, reward heads) so callers never
branch on the family; ``factory`` builds one by family name and saves / loads checkpoints
(``save_world_checkpoint`` / ``load_world_checkpoint``: safetensors + JSON sidecar, never pickle).

Modules: ``base`` (the interface), ``factory``, ``common`` (size presets, ActionSpec/ActionEncoder, text
conditioning, space-time positions, attention + KV cache, transformer block, timestep embedding, reward
head), ``autoregressive``, ``diffusion``, ``data`` (shards -> latent sequences, pooled actions, windows),
``evaluation`` (per-horizon quality vs copy-last), ``job`` (the Ray Train loop), ``registry``.
"""

from worldloom.models.world.autoregressive import ARConfig, ARWorldModel
from worldloom.models.world.base import IncompatibleModel, Sampling, SamplingLimits, WorldModel
from worldloom.models.world.common import (
    SIZES,
    TEXT_DIM,
    ActionEncoder,
    ActionSpec,
    Block,
    KVCache,
    RewardHead,
    RMSNorm,
    SpaceTimePosEmb,
    TextConditioner,
    TimestepEmbedder,
)
from worldloom.models.world.diffusion import DiffusionWorldModel, DiTConfig
from worldloom.models.world.factory import (
    FAMILIES,
    build_model,
    family_class,
    load_world_checkpoint,
    save_world_checkpoint,
)

__all__ = [
    "FAMILIES",
    "SIZES",
    "TEXT_DIM",
    "ARConfig",
    "ARWorldModel",
    "ActionEncoder",
    "ActionSpec",
    "Block",
    "DiTConfig",
    "DiffusionWorldModel",
    "IncompatibleModel",
    "KVCache",
    "RMSNorm",
    "RewardHead",
    "Sampling",
    "SamplingLimits",
    "SpaceTimePosEmb",
    "TextConditioner",
    "TimestepEmbedder",
    "WorldModel",
    "build_model",
    "family_class",
    "load_world_checkpoint",
    "save_world_checkpoint",
]
