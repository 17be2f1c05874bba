"""World-model training data: token/latent sequences from tokenize shards, pooled actions, window batches.

Shards are what the tokenize service writes (``tokens/<tokenizer_id>/<clip_id>.tar``, see
``worldloom.tokenize.clip_encoder.write_shard``): a one-sample webdataset tar holding
``<clip_id>.tokens.npy`` (int32 ``[t, h, w]``, discrete tokenizer) or ``<clip_id>.latents.npy``
(float16 ``[c, t, h, w]``, continuous tokenizer) and ``<clip_id>.json`` (video_id, frames, resolution,
compression, ...). :func:`load_sequences` turns them into :class:`LatentSequence` objects in the *model layout*:
tokens ``[T, h, w]`` int64 for :class:`~.autoregressive.ARWorldModel`, latents ``[C, T, h, w]`` float32 for
:class:`~.diffusion.DiffusionWorldModel`.

Actions (simulator episodes and uploads that carry them). Ingest stores ``raw/<video_id>/actions.safetensors`` with ``actions``
(``[S, ...]``, one row per environment step) where ``action[i]`` leads from source frame ``i`` to
``i + 1`` (S steps, S + 1 frames). The tokenizer's causal temporal compression ``tc`` maps clip frame 0 to
latent frame 0 and clip frames ``(j-1)*tc+1 .. j*tc`` to latent frame ``j > 0``. So the transition from
latent frame ``j - 1`` to ``j`` is driven by the ``tc`` actions ``action[s + (j-1)*tc .. s + j*tc - 1]``
(those producing the frames latent ``j`` covers; ``s`` = the clip's first source frame) and they are
pooled into one row ``actions[j - 1]`` -- the world models' convention (``actions[:, t-1]`` leads into
frame ``t``), giving ``T - 1`` rows for ``T`` latent frames:

* continuous actions (float, any shape, flattened to ``[D]``): the **mean** over the group (the net
  command over the interval; for velocities / deltas it is the average rate);
* discrete actions (integer ids): the **last** id of the group (the most recent command; a mean of ids is
  meaningless and a majority vote ignores recency).

The clip's first source frame ``s`` comes from its ``ClipRecord`` (``clips/<clip_id>/meta.json``:
``start_frame``, and the train rendition's fps if it was resampled) or, without one, from the shard
meta's ``start_s`` and the episode fps in ``raw/<video_id>/actions.json``; clip frame ``i`` is source frame
``s + round(i * src_fps / clip_fps)``. Latent frames whose actions are not all recorded (past the
episode's end) are cut from the sequence.

Data order: :class:`WindowSampler` draws each batch from a generator seeded with ``(seed, rank, step)``
only, so batch ``n`` is the same whether the job ran straight through or resumed at step ``n`` -- no
iterator state has to be checkpointed.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from worldloom.core.catalog import TRAIN_RENDITION, actions_key, actions_meta_key, read_clip
from worldloom.core.episodes import read_episode_arrays
from worldloom.core.store.base import ObjectNotFound, ObjectStore
from worldloom.models.tokenizer.shards import read_shard  # the reader lives with the writer
from worldloom.models.world.common import ActionSpec

Pool = Literal["mean", "last", "sum", "max"]


@dataclass
class LatentSequence:
    """One clip's latent sequence in model layout, plus pooled actions (``T - 1`` rows) if any."""

    data: Tensor  # tokens [T, h, w] int64 | latents [C, T, h, w] float32
    kind: str  # "discrete" | "continuous"
    actions: Tensor | None = None  # [T - 1, D] float32 | [T - 1] int64
    text: Tensor | None = None  # [384] MiniLM embedding of the clip's caption
    rewards: Tensor | None = None  # [T] float32: reward summed over the steps leading into frame t (0 for t=0)
    terminations: Tensor | None = None  # [T] float32: 1 if an episode ended on the way into frame t
    clip_id: str = ""
    video_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.data.shape[0] if self.kind == "discrete" else self.data.shape[1])

    def window(self, start: int, length: int) -> tuple[Tensor, Tensor | None]:
        """Frames ``start .. start+length-1`` and the ``length - 1`` actions between them."""
        if self.kind == "discrete":
            x = self.data[start:start + length]
        else:
            x = self.data[:, start:start + length]
        a = self.actions[start:start + length - 1] if self.actions is not None else None
        return x, a

    def targets(self, start: int, length: int) -> tuple[Tensor | None, Tensor | None]:
        """Per-frame reward and termination targets of the same window (None where the clip has none)."""
        end = start + length
        return (self.rewards[start:end] if self.rewards is not None else None,
                self.terminations[start:end] if self.terminations is not None else None)

    def truncate(self, frames: int) -> None:
        self.data = self.data[:frames] if self.kind == "discrete" else self.data[:, :frames]
        if self.actions is not None:
            self.actions = self.actions[: max(frames - 1, 0)]
        if self.rewards is not None:
            self.rewards = self.rewards[:frames]
        if self.terminations is not None:
            self.terminations = self.terminations[:frames]


# ------------------------------------------------------------------------------------------------ shards



def t_compression_of(meta: dict[str, Any]) -> int:
    """Temporal compression from the shard meta's ``compression`` ("4x8x8" -> 4)."""
    comp = str(meta.get("compression") or "")
    try:
        return int(comp.split("x")[0])
    except ValueError:
        raise ValueError(f"shard meta has no usable compression (got {comp!r})") from None


# ----------------------------------------------------------------------------------------------- actions


def pool_actions(steps: np.ndarray, latent_frames: int, tc: int, offset: int = 0, pool: Pool = "mean",
                 step_of_frame: Seq[int] | None = None) -> tuple[np.ndarray, int]:
    """Pool per-step actions (or rewards: ``pool="sum"``, termination flags: ``pool="max"``) to one row per
    latent transition.

    ``steps`` ``[S, ...]`` (``steps[i]`` leads source frame ``i`` -> ``i + 1``). Clip frame ``k`` is source
    frame ``offset + k`` (or ``step_of_frame[k]`` when given, for resampled clips). Row ``j - 1`` pools
    the actions producing clip frames ``(j-1)*tc+1 .. j*tc``, i.e. source steps from
    ``src((j-1)*tc)`` up to ``src(j*tc) - 1``. Returns ``(pooled, usable_latent_frames)``: rows stop where
    the recorded steps run out (``pooled`` has ``usable - 1`` rows).
    """
    if pool not in ("mean", "last", "sum", "max"):
        raise ValueError(f"pool must be 'mean', 'last', 'sum' or 'max', got {pool!r}")
    flat = steps.reshape(steps.shape[0], -1) if pool == "mean" else steps.reshape(steps.shape[0])

    def src(k: int) -> int:
        if step_of_frame is not None:
            return int(step_of_frame[k]) if k < len(step_of_frame) else -1
        return offset + k

    rows = []
    for j in range(1, latent_frames):
        lo, hi = src((j - 1) * tc), src(j * tc)
        if lo < 0 or hi <= lo or hi > flat.shape[0]:
            break
        group = flat[lo:hi]
        if pool in ("sum", "max"):
            g = group.astype(np.float32)
            rows.append(g.sum() if pool == "sum" else g.max())
        else:
            rows.append(group.astype(np.float32).mean(axis=0) if pool == "mean" else group[-1])
    usable = len(rows) + 1
    if pool in ("sum", "max"):
        out = np.asarray(rows, dtype=np.float32)
    elif pool == "mean":
        out = np.stack(rows).astype(np.float32) if rows else np.zeros((0, flat.shape[1]), np.float32)
    else:
        out = np.asarray(rows, dtype=np.int64)
    return out, usable


def _clip_alignment(store: ObjectStore, meta: dict[str, Any], video_id: str,
                    frames: int) -> tuple[int, list[int] | None]:
    """(first source frame of the clip, per-clip-frame source frame list when fps differs, else None)."""
    clip_fps = src_fps = None
    start = None
    clip_id = meta.get("clip_id")
    if clip_id:
        try:
            rec = read_clip(store, str(clip_id))
            start = rec.start_frame
            src_fps = float(rec.fps or 0) or None
            clip_fps = float(rec.rendition_info.get(TRAIN_RENDITION, {}).get("fps") or 0) or None
        except (ObjectNotFound, ValueError):
            pass
    if start is None:
        try:
            desc = json.loads(store.get_bytes(actions_meta_key(video_id)))
            src_fps = float(desc.get("fps") or 0) or None
        except (ObjectNotFound, ValueError):
            pass
        start = int(round(float(meta.get("start_s") or 0.0) * (src_fps or 0.0)))
    if clip_fps and src_fps and abs(clip_fps - src_fps) > 1e-6:
        ratio = src_fps / clip_fps
        return start, [start + int(round(k * ratio)) for k in range(frames)]
    return start, None


def load_episode_arrays(store: ObjectStore, video_id: str) -> dict[str, np.ndarray] | None:
    """The per-step arrays recorded with an episode (simulator or upload), or None when the video has none:
    the one reader of ``raw/<video_id>/actions.safetensors`` (:func:`worldloom.core.episodes.read_episode_arrays`)."""
    return read_episode_arrays(store, video_id)


# ----------------------------------------------------------------------------------------------- loading


def load_sequences(store: ObjectStore, keys: Seq[str], *, actions: Pool | None = None,
                   min_frames: int = 1, text: bool = False,
                   embed: Callable[[list[str]], np.ndarray] | None = None, rewards: bool = False) -> list[LatentSequence]:
    """Read shards ``keys`` into sequences (model layout); with ``actions`` ("mean" for continuous action
    models, "last" for discrete) also load and pool each clip's actions (see the module docstring).

    Every shard must have the same kind and spatial size. With ``actions`` a clip without an actions
    file is an error (an action-conditioned model must not silently train unconditioned); sequences
    shorter than ``min_frames`` (after cutting frames without actions) are dropped. With ``text`` every
    sequence gets its clip's caption (from the catalog) embedded by ``embed`` (default: the packaged
    MiniLM); a clip without a caption is an error, for the same reason. With ``rewards`` every sequence gets
    per-frame reward (summed over the steps into the frame) and termination targets from its episode arrays.
    """
    out: list[LatentSequence] = []
    shape = None
    for key in keys:
        array, kind, meta = read_shard(store.get_bytes(key))
        data = torch.from_numpy(array.astype(np.int64) if kind == "discrete" else array.astype(np.float32))
        this = (kind, tuple(data.shape[-2:]), None if kind == "discrete" else data.shape[0])
        if shape is None:
            shape = this
        elif this != shape:
            raise ValueError(f"{key}: shard {this} differs from the first shard {shape} (kind, h x w, channels)")
        seq = LatentSequence(data, kind, clip_id=str(meta.get("clip_id", "")), video_id=str(meta.get("video_id", "")),
                       meta=meta)
        if actions is not None or rewards:
            _attach_episode(store, key, seq, actions, rewards)
        if seq.frames >= min_frames:
            out.append(seq)
    if text and out:
        _attach_captions(store, out, embed)
    return out


def _attach_episode(store: ObjectStore, key: str, seq: LatentSequence, actions: Pool | None, rewards: bool) -> None:
    """Pooled actions and/or per-frame reward and termination targets from the episode's arrays (read once,
    aligned once); frames past the recorded steps are cut."""
    arrays = (load_episode_arrays(store, seq.video_id) if seq.video_id else None) or {}
    for name, wanted in (("actions", actions is not None), ("rewards", rewards)):
        if wanted and name not in arrays:
            raise ValueError(f"{key}: no {name} for video {seq.video_id!r} ({actions_key(seq.video_id)})")
    if actions == "last" and np.issubdtype(arrays["actions"].dtype, np.floating):
        raise ValueError(f"{key}: discrete pooling needs integer action ids, got {arrays['actions'].dtype}")
    tc = t_compression_of(seq.meta)
    start, step_of_frame = _clip_alignment(store, seq.meta, seq.video_id, 1 + (seq.frames - 1) * tc)
    frames = seq.frames
    usable = frames
    if actions is not None:
        pooled, usable = pool_actions(arrays["actions"], frames, tc, start, actions, step_of_frame)
        seq.actions = torch.from_numpy(pooled)
    if rewards:
        done = np.asarray(arrays.get("terminated", np.zeros_like(arrays["rewards"])), dtype=np.float32)
        r, r_usable = pool_actions(arrays["rewards"], frames, tc, start, "sum", step_of_frame)
        d, _ = pool_actions(done, frames, tc, start, "max", step_of_frame)
        usable = min(usable, r_usable)
        zero = np.zeros(1, np.float32)  # nothing leads into frame 0
        seq.rewards = torch.from_numpy(np.concatenate([zero, r]))
        seq.terminations = torch.from_numpy(np.concatenate([zero, d]))
    seq.truncate(usable)


def _attach_captions(store: ObjectStore, sequences: list[LatentSequence],
                     embed: Callable[[list[str]], np.ndarray] | None) -> None:
    from worldloom.core.catalog import ClipRecord, clip_meta_key

    captions = []
    for seq in sequences:
        try:
            caption = ClipRecord.model_validate_json(store.get_bytes(clip_meta_key(seq.clip_id))).caption.strip()
        except ObjectNotFound:
            caption = ""
        if not caption:
            raise ValueError(f"clip {seq.clip_id!r} has no caption; train without text or curate it with captions")
        captions.append(caption)
    if embed is None:
        from worldloom.models.text_embedder import shared_text_embedder

        embed = shared_text_embedder().encode
    vectors = torch.from_numpy(np.asarray(embed(captions), dtype=np.float32))
    for seq, vec in zip(sequences, vectors, strict=True):
        seq.text = vec


# ----------------------------------------------------------------------------------------------- sampling


def batch_seed(seed: int, rank: int, step: int) -> int:
    """The generator seed of batch ``step`` on ``rank`` (mixed so nearby values do not correlate)."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + 0x5EED) % (2**63 - 1)


class WindowSampler:
    """Fixed-length windows ``window`` frames long, ``batch`` at a time, deterministic in (seed, rank, step).

    ``batch_at(step)`` -> ``{"frames": [B, T, h, w] int64 | [B, C, T, h, w] float32, "actions":
    [B, T-1, D] | [B, T-1] (only when every sequence has actions), "index": [B, 2] (sequence, start)}``.
    Windows are drawn uniformly over all valid (sequence, start) positions, so long clips count in
    proportion to their length. Iterating yields ``batch_at(start_step), batch_at(start_step + 1), ...``.
    """

    def __init__(self, sequences: Seq[LatentSequence], window: int, batch: int, *, seed: int = 0, rank: int = 0,
                 start_step: int = 0) -> None:
        if window < 1 or batch < 1:
            raise ValueError("window and batch must be >= 1")
        self.sequences = [s for s in sequences if s.frames >= window]
        if not self.sequences:
            longest = max((s.frames for s in sequences), default=0)
            raise ValueError(f"no sequence has {window} latent frames (longest: {longest})")
        self.window, self.batch, self.seed, self.rank = window, batch, seed, rank
        self.with_actions = all(s.actions is not None for s in self.sequences)
        self.with_text = all(s.text is not None for s in self.sequences)
        self.with_rewards = all(s.rewards is not None for s in self.sequences)
        counts = [s.frames - window + 1 for s in self.sequences]
        self._cum = np.cumsum(counts).tolist()
        self.step = start_step

    @property
    def positions(self) -> int:
        return int(self._cum[-1])

    def batch_at(self, step: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(batch_seed(self.seed, self.rank, step))
        picks = torch.randint(self.positions, (self.batch,), generator=g).tolist()
        frames, acts, texts, targets, index = [], [], [], [], []
        for p in picks:
            i = bisect.bisect_right(self._cum, p)
            start = p - (self._cum[i - 1] if i else 0)
            x, a = self.sequences[i].window(start, self.window)
            frames.append(x)
            acts.append(a)
            texts.append(self.sequences[i].text)
            targets.append(self.sequences[i].targets(start, self.window))
            index.append((i, start))
        out = {"frames": torch.stack(frames), "index": torch.tensor(index, dtype=torch.long)}
        # a with_* flag means every sequence has that field: the filters only narrow the type
        if self.with_actions:
            out["actions"] = torch.stack([a for a in acts if a is not None])
        if self.with_text:
            out["text"] = torch.stack([t for t in texts if t is not None])
        if self.with_rewards:
            out["rewards"] = torch.stack([r for r, _ in targets if r is not None])
            out["terminations"] = torch.stack([d for _, d in targets if d is not None])
        return out

    def __iter__(self) -> WindowSampler:
        return self

    def __next__(self) -> dict[str, Tensor]:
        out = self.batch_at(self.step)
        self.step += 1
        return out


def episode_action_spec(store: ObjectStore, video_id: str) -> ActionSpec | None:
    """The action space an episode was recorded with (``raw/<video_id>/actions.json``: a gymnasium
    ``Discrete(n)`` or a ``Box`` of some shape, flattened), or None when the video has no actions."""
    try:
        space = json.loads(store.get_bytes(actions_meta_key(video_id)))["action_space"]
    except (ObjectNotFound, KeyError, TypeError, ValueError):
        return None
    if space.get("type") == "Discrete":
        return ActionSpec.discrete(int(space["n"]))
    dim = 1
    for d in space.get("shape") or [1]:
        dim *= int(d)
    return ActionSpec.continuous(dim)
