"""Shot detection speed and agreement: worldloom.video.split vs PySceneDetect vs plain decoding.

For each real test video, interleaves repetitions of (a) our ``detect_shots``, (b) PySceneDetect's
``ContentDetector`` through ``scenedetect.detect`` with the OpenCV and the PyAV backend (the faster
one is reported), and (c) a full-resolution PyAV decode of every frame (thread_type AUTO), the
ceiling for anything that must look at every frame. Prints medians (wall and CPU seconds; CPU
time is steadier when other jobs share the machine), frames/s, speed ratios and agreement of the
cut frames with PySceneDetect's ContentDetector goldens.

Usage: python bench/bench_split.py [--reps 5] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import av
import scenedetect
from scenedetect import ContentDetector

from worldloom.video.split import SplitConfig, detect_shots

FILES = [
    "video/pyscenedetect/testvideo.mp4",
    "video/pyscenedetect/fades.mp4",
    "video/sintel/sintel_clip_10s.mp4",
    "video/pyscenedetect/counter.mp4",
]
BACKENDS = ("opencv", "pyav")


def default_data() -> Path:
    override = os.environ.get("WORLDLOOM_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def ours(path: Path, config: SplitConfig) -> list[int]:
    return detect_shots(path, config).cuts


def pyscenedetect(path: Path, backend: str) -> list[int]:
    scenes = scenedetect.detect(str(path), ContentDetector(), backend=backend)
    return [start.frame_num for start, _ in scenes[1:]]


def decode_only(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def agreement(found: list[int], golden: list[int] | None) -> str:
    """'matched/golden +extra, max err' with a tolerance of 1 frame."""
    if golden is None:
        return f"{found} (no golden)"
    matched = [min(abs(f - g) for f in found) for g in golden if found and min(abs(f - g) for f in found) <= 1]
    extra = len(found) - len(matched)
    err = max(matched) if matched else 0
    return f"{len(matched)}/{len(golden)}{f' +{extra}' if extra else ''} err<={err}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions per file (median reported)")
    ap.add_argument("--data", type=Path, default=default_data(), help="the shared data folder")
    ap.add_argument("--analysis-side", type=int, default=SplitConfig().analysis_side)
    args = ap.parse_args()
    config = SplitConfig(analysis_side=args.analysis_side)

    print(f"python {platform.python_version()}, PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), "
          f"scenedetect {scenedetect.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"ours: SplitConfig(analysis_side={config.analysis_side}, threshold={config.threshold}, "
          f"min_scene_len={config.min_scene_len}, fast_decode={config.fast_decode}); {args.reps} reps, medians\n")

    rows = []
    totals = {"frames": 0, "ours": 0.0, "psd": 0.0, "dec": 0.0, "ours_cpu": 0.0, "psd_cpu": 0.0, "dec_cpu": 0.0}
    for rel in FILES:
        path = args.data / rel
        golden_file = path.parent / "goldens" / f"{path.name}.ContentDetector.default.json"
        golden = json.loads(golden_file.read_text())["cuts"] if golden_file.exists() else None
        jobs: dict[str, Callable[[], object]] = {
            "ours": lambda p=path: ours(p, config),
            **{f"psd_{b}": (lambda p=path, b=b: pyscenedetect(p, b)) for b in BACKENDS},
            "dec": lambda p=path: decode_only(p),
        }
        for fn in jobs.values():  # warm-up: file cache, imports, codec init
            fn()
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in jobs}
        outputs: dict[str, object] = {}
        for _ in range(args.reps):
            for name, fn in jobs.items():
                wall, cpu, outputs[name] = timed(fn)
                samples[name].append((wall, cpu))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in samples.items()}
        backend = min(BACKENDS, key=lambda b: med[f"psd_{b}"][0])
        frames = int(outputs["dec"])  # type: ignore[call-overload]
        o, p, d = med["ours"], med[f"psd_{backend}"], med["dec"]
        rows.append((path.name, frames, o, p, backend, d, outputs["ours"], outputs[f"psd_{backend}"], golden,
                     {b: med[f"psd_{b}"][0] for b in BACKENDS}))
        totals["frames"] += frames
        for key, (wall, cpu) in (("ours", o), ("psd", p), ("dec", d)):
            totals[key] += wall
            totals[f"{key}_cpu"] += cpu

    head = (f"{'file':<22}{'frames':>7} | {'ours s':>7}{'cpu':>7}{'fps':>7} | {'PySD s':>7}{'cpu':>7}{'fps':>7} {'backend':<7}"
            f"| {'decode s':>8}{'cpu':>7}{'fps':>7} | {'ours/PySD':>9}{'(cpu)':>7} | {'ours/dec':>8}{'(cpu)':>7}"
            f" | {'ours vs golden':<18}| PySD vs golden")
    print(head)
    print("-" * len(head))
    for name, frames, o, p, backend, d, cuts_o, cuts_p, golden, per_backend in rows:
        print(f"{name:<22}{frames:>7} | {o[0]:>7.3f}{o[1]:>7.3f}{frames / o[0]:>7.0f} | {p[0]:>7.3f}{p[1]:>7.3f}"
              f"{frames / p[0]:>7.0f} {backend:<7}| {d[0]:>8.3f}{d[1]:>7.3f}{frames / d[0]:>7.0f} | "
              f"{p[0] / o[0]:>8.2f}x{p[1] / o[1]:>6.2f}x | {d[0] / o[0]:>8.2f}{d[1] / o[1]:>7.2f} | "
              f"{agreement(cuts_o, golden):<18}| {agreement(cuts_p, golden)}")  # type: ignore[arg-type]
    t = totals
    print("-" * len(head))
    print(f"{'all files':<22}{t['frames']:>7} | {t['ours']:>7.3f}{t['ours_cpu']:>7.3f}{t['frames'] / t['ours']:>7.0f} | "
          f"{t['psd']:>7.3f}{t['psd_cpu']:>7.3f}{t['frames'] / t['psd']:>7.0f} {'best':<7}| {t['dec']:>8.3f}"
          f"{t['dec_cpu']:>7.3f}{t['frames'] / t['dec']:>7.0f} | {t['psd'] / t['ours']:>8.2f}x"
          f"{t['psd_cpu'] / t['ours_cpu']:>6.2f}x | {t['dec'] / t['ours']:>8.2f}{t['dec_cpu'] / t['ours_cpu']:>7.2f} |")
    print("\nPySceneDetect wall s per backend: " + "; ".join(
        f"{r[0]}: " + ", ".join(f"{b} {s:.3f}" for b, s in r[9].items()) for r in rows))
    print("ours/PySD = speed-up (PySD time / ours); ours/dec = decode-only time / ours (1.0 = as fast as decoding).")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
