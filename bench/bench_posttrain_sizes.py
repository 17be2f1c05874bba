"""Post-training methods side by side: trainable parameters per method and the LoRA adapter's size on disk
next to the full model file, for both families at the ``tiny`` and ``small`` presets (sized like the
platform's 4x8x8 tokenizers at 64x64: 8x8 latent frames, a 64,000-code FSQ codebook / 16 latent channels,
7-d actions as Bridge's, a reward head, MiniLM text conditioning).

    .venv/bin/python bench/bench_posttrain_sizes.py [--sizes tiny small] [--rank 8] [--alpha 16]

Counts are exact; the files are written through the real savers (``save_world_checkpoint``,
``save_adapter``) into a temp dir. No training: the step-time / memory / quality comparison on Bridge is
the post-training benchmark's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from worldloom.models.posttrain import LoraOptions, prepare, save_adapter
from worldloom.models.world import ActionSpec, ARConfig, DiTConfig, WorldModel, build_model, save_world_checkpoint


def config(family: str, size: str) -> dict:
    action = ActionSpec.continuous(7)
    if family == "ar":
        return ARConfig.preset(size, vocab_size=64_000, fsq_levels=(8, 8, 8, 5, 5, 5), tokens_per_frame=64,
                               max_frames=8, action=action, reward_head=True).to_dict()
    return DiTConfig.preset(size, in_channels=16, latent_size=(8, 8), patch_size=2, max_frames=4, n_future=1,
                            action=action, reward_head=True).to_dict()


def rows(family: str, size: str, opts: LoraOptions, tmp: Path) -> list[list[str]]:
    out = []
    full_file = save_world_checkpoint(tmp / f"{family}-{size}.safetensors", build_model(family, config(family, size)))
    full_bytes = full_file.stat().st_size
    for method in ("full", "lora", "heads"):
        model: WorldModel = build_model(family, config(family, size))
        model, info = prepare(model, method, lora=opts if method == "lora" else None)
        adapter = "-"
        if method == "lora":
            path = save_adapter(tmp / f"{family}-{size}-lora.safetensors", model, info, base_model="base",
                                base_sha256="-")
            nbytes = path.stat().st_size
            adapter = f"{nbytes / 1e6:.2f} MB ({100 * nbytes / full_bytes:.1f}%)"
        out.append([family, size, method, f"{info.trainable:,}", f"{info.total:,}",
                    f"{100 * info.trainable / info.total:.2f}%", adapter, f"{full_bytes / 1e6:.2f} MB"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=int, default=16)
    args = ap.parse_args()
    opts = LoraOptions(rank=args.rank, alpha=args.alpha)
    head = ["family", "size", "method", "trainable", "total", "trainable %", "adapter file", "full model file"]
    table = []
    with tempfile.TemporaryDirectory(prefix="wl-posttrain-") as tmp:
        for family in ("ar", "diffusion"):
            for size in args.sizes:
                table += rows(family, size, opts, Path(tmp))
    print(f"LoRA rank {opts.rank}, alpha {opts.alpha}, default targets (every Linear of the transformer blocks)\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in table:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
