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

Checkpoints: ``safetensors.torch.save_file(model.state_dict(), path)`` plus ``json.dump(model.config.to_dict())``;
rebuild with ``ARWorldModel(ARConfig.from_dict(json.load(f)))`` and ``load_state_dict``.

Modules: ``common`` (size presets, ActionSpec/ActionEncoder, text conditioning, space-time positions,
attention + KV cache, transformer block, timestep embedding, reward head), ``autoregressive``,
``diffusion``.
"""

from worldloom.models.world.autoregressive import ARConfig, ARWorldModel
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

__all__ = [
    "SIZES",
    "TEXT_DIM",
    "ARConfig",
    "ARWorldModel",
    "ActionEncoder",
    "ActionSpec",
    "Block",
    "DiTConfig",
    "DiffusionWorldModel",
    "KVCache",
    "RMSNorm",
    "RewardHead",
    "SpaceTimePosEmb",
    "TextConditioner",
    "TimestepEmbedder",
]
