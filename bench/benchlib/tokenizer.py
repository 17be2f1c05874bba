"""The pieces of the held-out tokenizer benchmark (``bench/bench_tokenizer.py``, issue #4: train on
simulator + Bridge-train episodes for a wall-clock budget, report on held-out real clips next to JPEG at
the same bits per pixel). Measurements, not library code: nothing under libs/ or services/ imports it.

* data: :func:`load_square_clip` (centre square crop, then antialiased resize, with
  :func:`worldloom.models.frames.fit_frames`), :func:`eval_windows` / :func:`heldout_clips` (Bridge val +
  Sintel cut into ``1 + k*t`` frame windows), :func:`simulator_episodes` (headless gymnasium renders,
  random policy), :func:`training_videos`, :func:`heldout_sim_clips` (simulator episodes on seeds training
  never uses, with each episode's median background);
* rate: :func:`latent_bpp` (bits per pixel of a tokenizer's latent for a clip);
* classical reference: :func:`jpeg_at_bpp` (per frame, the highest JPEG quality whose size fits a bpp
  budget, optionally of a downscaled frame) and :func:`jpeg_clip`;
* model side: :func:`train_for_minutes` (stop by wall clock, cosine lr fitted to the budget),
  :func:`reconstruct_clips`, :func:`score_clips`, :func:`evaluate_heldout`, :func:`codec_fps`;
  :func:`foreground_scores` / :func:`evaluate_foreground`: foreground PSNR (issue 11) of the tokenizer and
  of same-bpp JPEG on held-out simulator frames, with the metric of
  :func:`worldloom.models.tokenizer.metrics.foreground_psnr`.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from worldloom.models.frames import fit_frames
from worldloom.models.tokenizer.data import frames_to_tensor, tensor_to_frames
from worldloom.models.tokenizer.losses import LossConfig
from worldloom.models.tokenizer.metrics import foreground_mask, foreground_psnr, median_background, psnr, ssim
from worldloom.models.tokenizer.model import CausalVideoTokenizer, TokenizerConfig
from worldloom.models.tokenizer.train import Batch, train_step
from worldloom.models.training.optim import lr_at


def median_time(fn: Callable[[], object], reps: int) -> float:
    """Median wall time: robust to the multi-second stalls other processes cause on a shared 2-core box."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def codec_fps(model: CausalVideoTokenizer, video: torch.Tensor, reps: int = 5) -> dict[str, float]:
    """Encode and decode frames per second on ``video`` ``[B, 3, T, H, W]`` (median of ``reps``, after a
    warm-up). A discrete model decodes from token indices (index -> code lookup included)."""
    model.eval()
    enc = model.encode(video)
    latents = enc[1] if isinstance(enc, tuple) else enc
    model.decode(latents)
    enc_s = median_time(lambda: model.encode(video), reps)
    dec_s = median_time(lambda: model.decode(latents), reps)
    n = video.shape[0] * video.shape[2]
    return {"encode_fps": n / enc_s, "decode_fps": n / dec_s}


# ------------------------------------------------------------------------------ held-out benchmark pieces
# Used by bench/bench_tokenizer.py (issue #4). Frames are uint8 ``[T, H, W, 3]`` numpy arrays (as decoded)
# until they reach the model, so the tokenizer and JPEG are scored on exactly the same pixels.

#: Held-out real footage under the shared data folder: name -> glob (never seen in training).
HELDOUT: dict[str, str] = {"bridge-val": "bridge/videos/val/*/rgb.mp4", "sintel": "video/sintel/sintel_clip_10s.mp4"}
BRIDGE_TRAIN = "bridge/videos/train/*/rgb.mp4"
#: Classic-control simulators rendered headless (pygame surface, no display needed).
SIM_ENVS: tuple[str, ...] = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1")
#: 17 = 1 + 4*4 = 1 + 2*8: one window length valid for both temporal compressions, so every config is
#: scored on the same frames.
EVAL_WINDOW = 17
JPEG_QUALITY_RANGE = (1, 95)


def load_square_clip(path: Path, res: int, chunk: int = 32) -> np.ndarray:
    """Decode a whole video (PyAV, streamed in chunks) into ``[T, res, res, 3]`` via
    :func:`~worldloom.models.frames.fit_frames`."""
    from worldloom.video.decode import iter_frames  # optional dependency: only the benches decode mp4

    parts: list[np.ndarray] = []
    buf: list[np.ndarray] = []
    for frame in iter_frames(path):
        buf.append(frame.image)
        if len(buf) == chunk:
            parts.append(fit_frames(np.stack(buf), (res, res)))
            buf = []
    if buf:
        parts.append(fit_frames(np.stack(buf), (res, res)))
    if not parts:
        raise ValueError(f"{path}: no frames decoded")
    return np.concatenate(parts)


def eval_windows(num_frames: int, window: int = EVAL_WINDOW, multiple: int = 8) -> list[tuple[int, int]]:
    """Non-overlapping ``[start, end)`` windows of ``window`` frames from the start of a video.

    ``window`` must be ``1 + k*multiple`` (``multiple`` = the largest temporal compression evaluated, so
    every model takes the same frames). A video shorter than ``window`` gives one window of the longest
    valid length ``1 + k*multiple`` (k >= 1) it holds, or none; leftover tail frames are not scored.
    """
    if window < 1 + multiple or (window - 1) % multiple:
        raise ValueError(f"window must be 1 + k*{multiple} with k >= 1, got {window}")
    spans = [(s, s + window) for s in range(0, num_frames - window + 1, window)]
    if not spans and num_frames > multiple:
        spans = [(0, 1 + (num_frames - 1) // multiple * multiple)]
    return spans


def heldout_clips(data: Path, res: int, window: int = EVAL_WINDOW, multiple: int = 8,
                  max_clips: int | None = None) -> dict[str, list[np.ndarray]]:
    """Held-out windows per dataset (:data:`HELDOUT`), each ``[T, res, res, 3]`` uint8 (``data`` = shared data)."""
    sets: dict[str, list[np.ndarray]] = {}
    for name, pattern in HELDOUT.items():
        paths = sorted(data.glob(pattern))
        if not paths:
            raise FileNotFoundError(f"no held-out videos match {data / pattern}")
        clips = []
        for path in paths:
            video = load_square_clip(path, res)
            clips += [video[a:b] for a, b in eval_windows(len(video), window, multiple)]
        sets[name] = clips[:max_clips] if max_clips else clips
    return sets


def simulator_episodes(env_id: str, episodes: int, res: int, *, min_frames: int = EVAL_WINDOW,
                       max_frames: int = 96, seed: int = 0, max_tries: int = 50) -> list[np.ndarray]:
    """``episodes`` random-policy episodes of a gymnasium env rendered headless (``rgb_array``), each
    ``[T, res, res, 3]`` uint8 (centre square crop + resize), ``min_frames <= T <= max_frames`` (shorter
    episodes, e.g. an early CartPole fall, are skipped and another seed is tried)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    import gymnasium as gym  # optional dependency: only the tokenizer bench renders simulators

    env = gym.make(env_id, render_mode="rgb_array")
    env.action_space.seed(seed)
    out: list[np.ndarray] = []
    try:
        for attempt in range(max_tries):
            if len(out) == episodes:
                break
            env.reset(seed=seed + attempt)
            frames = [env.render()]
            while len(frames) < max_frames:
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                frames.append(env.render())
                if terminated or truncated:
                    break
            if len(frames) >= min_frames:
                out.append(fit_frames(np.stack(frames), (res, res)))
    finally:
        env.close()
    return out


#: held-out simulators for foreground PSNR (issue 11's aim: >= 25 dB on held-out Pendulum and CartPole)
FG_ENVS: tuple[str, ...] = ("Pendulum-v1", "CartPole-v1")
#: reset seeds of the held-out simulator episodes start here: training renders seeds ``seed + 1000 * env
#: index + attempt`` (a few thousand at most), so the two never share an initial state or action stream
HELDOUT_SIM_SEED = 1_000_000
#: issue 11's aim for foreground PSNR on held-out simulator frames (dB)
FG_GOAL_DB = 25.0


@dataclass(frozen=True)
class SimClip:
    frames: np.ndarray  # [T, H, W, 3] uint8: one evaluation window of an episode
    background: torch.Tensor = field(repr=False)  # [3, H, W] on [0, 1]: the whole episode's per-pixel median
    episode: int = 0


def heldout_sim_clips(res: int, envs: Sequence[str] = FG_ENVS, episodes: int = 4, *, seed: int = HELDOUT_SIM_SEED,
                      window: int = EVAL_WINDOW, multiple: int = 8,
                      max_frames: int = 96) -> dict[str, list[SimClip]]:
    """Random-policy episodes of each simulator on held-out seeds (:data:`HELDOUT_SIM_SEED`), cut into
    evaluation windows like :func:`heldout_clips`; every window carries the background of its whole episode."""
    out: dict[str, list[SimClip]] = {}
    for i, env_id in enumerate(envs):
        clips = []
        for e, video in enumerate(simulator_episodes(env_id, episodes, res, max_frames=max_frames, seed=seed + 1000 * i)):
            background = median_background(_model_layout(video)[0])
            clips += [SimClip(video[a:b], background, e) for a, b in eval_windows(len(video), window, multiple)]
        if not clips:
            raise ValueError(f"{env_id}: no held-out episode of {window} frames")
        out[env_id] = clips
    return out


@dataclass
class TrainingData:
    videos: list[torch.Tensor]  # each [3, T, H, W] in [-1, 1]
    summary: dict[str, dict[str, int]]  # source -> {"videos": n, "frames": n}


def training_videos(data: Path, res: int, *, sim_envs: Sequence[str] = SIM_ENVS, sim_episodes: int = 2,
                    sim_max_frames: int = 96, seed: int = 0) -> TrainingData:
    """Bridge train episodes plus simulator episodes, all centre-square ``res x res``, as model tensors."""
    sources: dict[str, list[np.ndarray]] = {"bridge-train": [load_square_clip(p, res)
                                                             for p in sorted(data.glob(BRIDGE_TRAIN))]}
    for i, env_id in enumerate(sim_envs):
        sources[env_id] = simulator_episodes(env_id, sim_episodes, res, max_frames=sim_max_frames,
                                             seed=seed + 1000 * i)
    if not sources["bridge-train"]:
        raise FileNotFoundError(f"no training videos match {data / BRIDGE_TRAIN}")
    videos = [frames_to_tensor(v) for vs in sources.values() for v in vs]
    summary = {k: {"videos": len(vs), "frames": sum(len(v) for v in vs)} for k, vs in sources.items()}
    return TrainingData(videos, summary)


# ---------------------------------------------------------------------------------------- rate (bpp)


def latent_bpp(config: TokenizerConfig, frames: int, height: int, width: int, latent_bits: int = 16) -> float:
    """Bits per pixel of the tokenizer's latent for one ``frames x height x width`` clip.

    Discrete: ``log2(codebook_size)`` bits per token (64,000 codes = 15.97 bits; an ideal fixed-length
    code, no entropy coding). Continuous: ``latent_channels * latent_bits`` bits per latent position
    (16 = the latents stored as float16, which :func:`reconstruct_clips` applies before decoding).
    The first frame has a latent frame of its own, so a ``1 + k*t`` clip costs slightly more per pixel
    than ``1/t`` of an image's latent.
    """
    tc, sc = config.t_compression, config.s_compression
    if frames < 1 or (frames - 1) % tc or height % sc or width % sc:
        raise ValueError(f"{frames}x{height}x{width} does not fit compression {config.compression}")
    positions = (1 + (frames - 1) // tc) * (height // sc) * (width // sc)
    bits = math.log2(config.codebook_size) if config.kind == "discrete" else config.z_channels * latent_bits
    return positions * bits / (frames * height * width)


def round_latents(z: torch.Tensor, latent_bits: int) -> torch.Tensor:
    """Continuous latents as they would be stored: float16 (``16``) or unchanged float32 (``32``)."""
    if latent_bits == 16:
        return z.half().float()
    if latent_bits == 32:
        return z
    raise ValueError(f"latent_bits must be 16 or 32, got {latent_bits}")


# ------------------------------------------------------------------------------ JPEG at a bpp budget


def jpeg_backend() -> str:
    """``pillow`` when installed, else ``opencv`` (both wrap libjpeg(-turbo) with IJG quality scaling)."""
    if importlib.util.find_spec("PIL") is not None:
        return "pillow"
    if importlib.util.find_spec("cv2") is not None:
        return "opencv"
    raise ImportError("the JPEG reference needs Pillow or OpenCV (opencv-python-headless)")


def jpeg_encode(frame: np.ndarray, quality: int, backend: str | None = None) -> bytes:
    """Baseline JPEG of an ``[H, W, 3]`` uint8 RGB frame: 4:2:0 chroma subsampling, standard (Annex K)
    Huffman tables (no per-image optimisation), IJG quality ``quality``."""
    backend = backend or jpeg_backend()
    if backend == "pillow":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(frame, "RGB").save(buf, "JPEG", quality=int(quality), subsampling=2, optimize=False)
        return buf.getvalue()
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 0,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), params)
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return data.tobytes()


def jpeg_decode(data: bytes, backend: str | None = None) -> np.ndarray:
    """JPEG bytes -> ``[H, W, 3]`` uint8 RGB."""
    backend = backend or jpeg_backend()
    if backend == "pillow":
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable JPEG")
    return np.ascontiguousarray(img[..., ::-1])


def jpeg_scan_bytes(data: bytes) -> int:
    """Bytes of entropy-coded image data in a baseline JPEG: everything after the SOS header up to EOI.

    The rest of the file (JFIF header, quantisation and Huffman tables) is fixed given the quality and
    the standard tables, i.e. side information a decoder can know in advance, as in Motion-JPEG, where
    the tables are not repeated per frame; with 64x64 frames it is ~600 bytes (~1.2 bpp) per file.
    """
    if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        raise ValueError("not a complete JPEG (missing SOI/EOI)")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data follows its header
            return len(data) - (pos + 2 + length) - 2
        pos += 2 + length
    raise ValueError("JPEG without a scan (SOS) segment")


def jpeg_bits(data: bytes, count: str = "scan") -> int:
    """Bits a JPEG costs: ``scan`` (entropy-coded data only, see :func:`jpeg_scan_bytes`) or ``file``."""
    if count == "scan":
        return 8 * jpeg_scan_bytes(data)
    if count == "file":
        return 8 * len(data)
    raise ValueError(f"count must be 'scan' or 'file', got {count!r}")


@dataclass(frozen=True)
class JpegFrame:
    quality: int
    bpp: float  # bits per (full-resolution) pixel as counted for the budget (``count``)
    file_bpp: float  # the whole file, headers and tables included
    min_bpp: float  # bpp (as counted) at the lowest quality: the cheapest this frame can be at this scale
    reached: bool  # bpp <= target
    decoded: np.ndarray = field(repr=False)  # [H, W, 3] uint8, at the input's size
    scale: int = 1  # encoded at 1/scale of the size in each dimension, upsampled back after decoding


def resize_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> ``[height, width, 3]`` uint8, bilinear (antialiased when shrinking)."""
    if frame.shape[:2] == (height, width):
        return frame
    t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0).float()
    shrink = height < frame.shape[0] or width < frame.shape[1]
    t = F.interpolate(t, size=(height, width), mode="bilinear", antialias=shrink, align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def jpeg_at_bpp(frame: np.ndarray, target_bpp: float, count: str = "scan", backend: str | None = None,
                scale: int = 1) -> JpegFrame:
    """JPEG of ``frame`` at the highest quality in 1..95 whose bpp is <= ``target_bpp`` (binary search on
    the quality; size grows with quality). If even quality 1 is above the budget, quality 1 is returned
    with ``reached=False``: the caller must report that instead of pretending the budget was met.

    ``scale`` > 1 encodes a ``1/scale`` downscaled frame (bits still divided by the full pixel count) and
    upsamples the decoded frame back: the classical way to reach rates plain JPEG cannot.
    """
    backend = backend or jpeg_backend()
    h, w = frame.shape[:2]
    small = resize_frame(frame, h // scale, w // scale) if scale > 1 else frame
    pixels = h * w
    cache: dict[int, bytes] = {}

    def bpp(q: int) -> float:
        if q not in cache:
            cache[q] = jpeg_encode(small, q, backend)
        return jpeg_bits(cache[q], count) / pixels

    lo, hi = JPEG_QUALITY_RANGE
    best, min_bpp = lo, bpp(lo)
    if min_bpp <= target_bpp:
        lo += 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if bpp(mid) <= target_bpp:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
    data = cache[best]
    decoded = resize_frame(jpeg_decode(data, backend), h, w)
    return JpegFrame(best, bpp(best), 8 * len(data) / pixels, min_bpp, bpp(best) <= target_bpp, decoded, scale)


@dataclass(frozen=True)
class JpegClip:
    decoded: np.ndarray  # [T, H, W, 3] uint8
    bpp: float
    file_bpp: float
    min_bpp: float  # at the first scale tried (plain JPEG for the default scales)
    quality: float
    reached: float  # fraction of frames that met the budget
    scale: float  # mean downscale factor used


def jpeg_clip(clip: np.ndarray, target_bpp: float, count: str = "scan", backend: str | None = None,
              scales: Sequence[int] = (1,)) -> JpegClip:
    """:func:`jpeg_at_bpp` on every frame of ``[T, H, W, 3]`` ``clip`` (each frame gets the same budget).

    With several ``scales`` each frame is coded at every scale and, of those within the budget, the one
    closest to the frame (lowest MSE) is kept: an encoder-side choice, as any encoder's mode decision;
    if none fits, the cheapest. The default ``(1,)`` is plain JPEG; ``(1, 2, 4)`` adds downscaled JPEG for
    budgets below plain JPEG's floor. ``min_bpp`` is that of the first scale.
    """
    if not scales:
        raise ValueError("scales must not be empty")
    chosen, floors = [], []
    for f in clip:
        options = [jpeg_at_bpp(f, target_bpp, count, backend, s) for s in scales]
        floors.append(options[0].min_bpp)
        fitting = [o for o in options if o.reached]
        if fitting:
            chosen.append(min(fitting, key=lambda o: float(np.mean((o.decoded.astype(np.float32) - f) ** 2))))
        else:
            chosen.append(min(options, key=lambda o: o.bpp))
    def mean(xs: list[float]) -> float:
        return float(sum(xs) / len(xs))

    return JpegClip(np.stack([r.decoded for r in chosen]), mean([r.bpp for r in chosen]),
                    mean([r.file_bpp for r in chosen]), mean(floors), mean([r.quality for r in chosen]),
                    mean([float(r.reached) for r in chosen]), mean([r.scale for r in chosen]))


# ----------------------------------------------------------------------------- scoring and training


def _model_layout(clip: np.ndarray) -> torch.Tensor:
    """``[T, H, W, 3]`` uint8 -> ``[1, 3, T, H, W]`` uint8 (the metrics read uint8 as [0, 255])."""
    return torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2).unsqueeze(0)


def clip_scores(pred: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-clip PSNR (dB, MSE over the whole clip) and SSIM (mean over frames) of uint8 clips."""
    if len(pred) != len(ref) or not ref:
        raise ValueError(f"need the same non-zero number of clips, got {len(pred)} and {len(ref)}")
    p = [float(psnr(_model_layout(a), _model_layout(b))[0]) for a, b in zip(pred, ref, strict=True)]
    s = [float(ssim(_model_layout(a), _model_layout(b))[0]) for a, b in zip(pred, ref, strict=True)]
    return p, s


def score_clips(pred: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean over clips of :func:`clip_scores`, plus the number of clips and frames."""
    return {k: v for k, v in _scores(pred, ref).items() if not isinstance(v, list)}  # type: ignore[misc]


def _scores(pred: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> dict[str, object]:
    """:func:`score_clips` plus the per-clip lists ``clip_psnr`` and ``clip_ssim``."""
    p, s = clip_scores(pred, ref)
    return {"psnr": statistics.fmean(p), "ssim": statistics.fmean(s), "clips": float(len(ref)),
            "frames": float(sum(len(c) for c in ref)), "clip_psnr": p, "clip_ssim": s}


def foreground_scores(pred: Sequence[np.ndarray], clips: Sequence[SimClip]) -> dict[str, float | None]:
    """Foreground PSNR of uint8 ``pred`` clips against held-out simulator ``clips`` (mask: where the real
    frame differs from its episode's median background, grown by 1 px; see
    :func:`~worldloom.models.tokenizer.metrics.foreground_psnr`), and whole-clip PSNR for comparison.

    ``fg_psnr`` is the mean over the clips that have foreground pixels (``fg_clips`` of them; ``None`` when
    none has any), ``fg_pixels`` the pixels it pooled; frames without foreground are skipped.
    """
    if len(pred) != len(clips) or not clips:
        raise ValueError(f"need the same non-zero number of clips, got {len(pred)} and {len(clips)}")
    scores, pixels, whole = [], 0, []
    for p, c in zip(pred, clips, strict=True):
        ref, got = _model_layout(c.frames), _model_layout(p)
        fg, n = foreground_psnr(got, ref, foreground_mask(ref, c.background[None]))
        pixels += int(n[0])
        if int(n[0]):
            scores.append(float(fg[0]))
        whole.append(float(psnr(got, ref)[0]))
    return {"fg_psnr": statistics.fmean(scores) if scores else None, "fg_pixels": float(pixels),
            "fg_clips": float(len(scores)), "psnr": statistics.fmean(whole), "clips": float(len(clips)),
            "frames": float(sum(len(c.frames) for c in clips))}


def evaluate_foreground(model: CausalVideoTokenizer, sets: dict[str, list[SimClip]], *, latent_bits: int = 16,
                        jpeg_count: str = "scan", jpeg: bool = True) -> dict[str, dict[str, object]]:
    """Per held-out simulator (:func:`heldout_sim_clips`): the tokenizer's reconstruction scored by
    :func:`foreground_scores`, its bpp, and (``jpeg``) plain JPEG at the same bpp on the same frames
    (``"jpeg"``: the same scores plus ``bpp`` and ``reached``, the fraction of frames within the budget)."""
    out: dict[str, dict[str, object]] = {}
    for env_id, clips in sets.items():
        frames = [c.frames for c in clips]
        targets = [latent_bpp(model.config, len(f), f.shape[1], f.shape[2], latent_bits) for f in frames]
        weights = [len(f) for f in frames]
        row: dict[str, object] = dict(foreground_scores(reconstruct_clips(model, frames, latent_bits), clips))
        row["bpp"] = float(np.average(targets, weights=weights))
        if jpeg:
            jp = [jpeg_clip(f, t, jpeg_count) for f, t in zip(frames, targets, strict=True)]
            jrow: dict[str, object] = dict(foreground_scores([j.decoded for j in jp], clips))
            jrow["bpp"] = float(np.average([j.bpp for j in jp], weights=weights))
            jrow["reached"] = float(np.average([j.reached for j in jp], weights=weights))
            row["jpeg"] = jrow
        out[env_id] = row
    return out


@torch.no_grad()
def reconstruct_clips(model: CausalVideoTokenizer, clips: Sequence[np.ndarray], latent_bits: int = 16,
                      batch: int = 4) -> list[np.ndarray]:
    """Encode + decode each clip as a codec would: discrete through its integer tokens, continuous through
    latents rounded to ``latent_bits``; returns uint8 frames (clamped, rounded) like the input."""
    model.eval()
    out: list[np.ndarray] = [np.empty(0)] * len(clips)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(clips):
        by_shape.setdefault(c.shape, []).append(i)
    for idx in by_shape.values():
        for j in range(0, len(idx), batch):
            rows = idx[j : j + batch]
            video = torch.stack([frames_to_tensor(clips[i]) for i in rows])
            enc = model.encode(video)
            recon = model.decode(enc[1] if isinstance(enc, tuple) else round_latents(enc, latent_bits))
            for i, r in zip(rows, recon, strict=True):
                out[i] = tensor_to_frames(r)
    return out


@dataclass
class BudgetRun:
    steps: int
    planned_steps: int  # the last estimate of how many steps fit the budget (what the cosine aimed at)
    seconds: float  # wall clock counted against the budget (from the end of the first step)
    history: list[dict[str, float]]
    first_step_seconds: float = 0.0  # the uncounted first step


def train_for_minutes(model: CausalVideoTokenizer, batches: Iterable[Batch], minutes: float, lr: float = 1e-3, *,
                      probe_steps: int = 5, log_every: int = 25, loss_cfg: LossConfig | None = None,
                      on_log: Callable[[dict[str, float]], None] | None = None,
                      clock: Callable[[], float] = time.perf_counter) -> BudgetRun:
    """Train (AdamW, warm-up + cosine as :func:`~.train.fit`) until ``minutes`` of wall clock are spent.

    The clock starts after the first step (it trains too, but its one-off costs, oneDNN kernel selection
    and allocator growth, can take seconds). The cosine needs a step count: after ``probe_steps`` timed
    steps it is set to the steps the remaining budget allows at that pace, and re-estimated at every log
    from the recent pace (the load on a shared machine changes), so the lr reaches its floor about when
    the time runs out. Training stops by the clock only.
    """
    if minutes <= 0:
        raise ValueError("minutes must be positive")
    budget = minutes * 60.0
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    it: Iterator[Batch] = iter(batches)
    planned, warmup, step = 0, 100, 0
    window: dict[str, float] = {}
    count, start = 0, clock()
    t_window, first_step_s = start, 0.0
    history: list[dict[str, float]] = []

    def plan(sec_per_step: float) -> int:
        return step + max(1, int((budget - (clock() - start)) / max(sec_per_step, 1e-6)))

    while step == 0 or clock() - start < budget:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, planned or 10**9, lr, warmup)
        logs = train_step(model, next(it), opt, loss_cfg)
        step += 1
        if step == 1:
            first_step_s = clock() - start
            start = clock()  # the budget starts now (see above)
        elif step == 1 + probe_steps:
            planned = plan((clock() - start) / probe_steps)
            warmup = min(100, max(probe_steps + 1, planned // 20))
        for k, v in logs.items():
            window[k] = window.get(k, 0.0) + v
        count += 1
        if count == log_every:
            history.append(_log_entry(window, count, step, planned, opt, clock() - t_window, clock() - start))
            if planned:
                planned = plan(history[-1]["sec_per_step"])
            if on_log is not None:
                on_log(history[-1])
            window, count, t_window = {}, 0, clock()
    if count:
        history.append(_log_entry(window, count, step, planned, opt, clock() - t_window, clock() - start))
        if on_log is not None:
            on_log(history[-1])
    return BudgetRun(step, planned or step, clock() - start, history, first_step_s)


def _log_entry(window: dict[str, float], count: int, step: int, planned: int, opt: torch.optim.Optimizer,
               window_s: float, elapsed_s: float) -> dict[str, float]:
    entry = {k: v / count for k, v in window.items()}
    entry.update(step=float(step), planned_steps=float(planned), lr=float(opt.param_groups[0]["lr"]),
                 sec_per_step=window_s / count, minutes=elapsed_s / 60.0)
    return entry


def evaluate_heldout(model: CausalVideoTokenizer, sets: dict[str, list[np.ndarray]], *, latent_bits: int = 16,
                     jpeg_count: str = "scan", jpeg: bool = True,
                     down_scales: Sequence[int] = (1, 2, 4)) -> dict[str, object]:
    """Tokenizer and same-bpp JPEG scores per held-out dataset (clips from :func:`heldout_clips`).

    Each clip's JPEG budget is the tokenizer's :func:`latent_bpp` for that clip's shape. Where plain JPEG
    misses the budget on some frame, ``jpeg_down`` adds JPEG of downscaled frames (``down_scales``, see
    :func:`jpeg_clip`). Returns ``{"bpp": frame-weighted mean bpp, "<dataset>": {"psnr", "ssim", "clips",
    "frames", "bpp", "clip_psnr", "clip_ssim", "jpeg": {the same scores, "bpp", "file_bpp", "min_bpp",
    "quality", "reached", "scale"}[, "jpeg_down": {...}]}}``.
    """
    out: dict[str, object] = {}
    bits = frames = 0.0
    for name, clips in sets.items():
        targets = [latent_bpp(model.config, len(c), c.shape[1], c.shape[2], latent_bits) for c in clips]
        weights = [len(c) for c in clips]
        recon = reconstruct_clips(model, clips, latent_bits)
        row = _scores(recon, clips)
        bpp = float(np.average(targets, weights=weights))
        row["bpp"] = bpp
        bits, frames = bits + bpp * sum(weights), frames + sum(weights)
        if jpeg:
            row["jpeg"] = _jpeg_row(clips, targets, weights, jpeg_count, (1,))
            if row["jpeg"]["reached"] < 1.0 and tuple(down_scales) != (1,):  # type: ignore[index]
                row["jpeg_down"] = _jpeg_row(clips, targets, weights, jpeg_count, down_scales)
        out[name] = row
    out["bpp"] = bits / frames if frames else float("nan")
    return out


def _jpeg_row(clips: Sequence[np.ndarray], targets: Sequence[float], weights: Sequence[int], count: str,
              scales: Sequence[int]) -> dict[str, object]:
    jp = [jpeg_clip(c, t, count, scales=scales) for c, t in zip(clips, targets, strict=True)]
    decoded = [j.decoded for j in jp]
    row = _scores(decoded, clips)
    for key in ("bpp", "file_bpp", "min_bpp", "quality", "reached", "scale"):
        row[key] = float(np.average([getattr(j, key) for j in jp], weights=weights))
    return row
