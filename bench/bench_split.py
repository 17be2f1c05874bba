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
        return "n/a"
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

    timing: list[list[str]] = []
    agree: list[list[str]] = []
    backends_note: list[str] = []
    total = {k: [0.0, 0.0] for k in ("ours", "psd", "dec")}
    total_frames = 0
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
        for _ in range(args.reps):  # interleaved, so load changes hit every contender alike
            for name, fn in jobs.items():
                wall, cpu, outputs[name] = timed(fn)
                samples[name].append((wall, cpu))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in samples.items()}
        backend = min(BACKENDS, key=lambda b: med[f"psd_{b}"][0])
        frames = int(outputs["dec"])  # type: ignore[call-overload]
        o, p, d = med["ours"], med[f"psd_{backend}"], med["dec"]
        for key, m in (("ours", o), ("psd", p), ("dec", d)):
            total[key][0] += m[0]
            total[key][1] += m[1]
        total_frames += frames
        timing.append(_timing_row(path.name, frames, o, p, d, backend))
        cuts_o, cuts_p = outputs["ours"], outputs[f"psd_{backend}"]
        agree.append([path.name, str(golden if golden is not None else "-"), str(cuts_o), str(cuts_p),
                      agreement(cuts_o, golden), agreement(cuts_p, golden)])  # type: ignore[arg-type]
        backends_note.append(f"{path.name} " + "/".join(f"{med[f'psd_{b}'][0]:.3f}" for b in BACKENDS))
    timing.append(_timing_row("all files", total_frames, tuple(total["ours"]), tuple(total["psd"]),
                              tuple(total["dec"]), "best"))

    print(_table(["file", "frames", "ours s (cpu)", "PySD s (cpu)", "decode s (cpu)", "ours f/s", "PySD f/s",
                  "decode f/s", "ours vs PySD", "ours / decode"], timing))
    print("ours vs PySD = PySD time / ours time (wall, cpu); ours / decode = decode-only time / ours time.")
    print(f"PySceneDetect {'/'.join(BACKENDS)} wall s: " + "; ".join(backends_note))
    print()
    print(_table(["file", "golden cuts", "ours cuts", "PySD cuts", "ours vs golden", "PySD vs golden"], agree))
    print("x/y = golden cuts found within 1 frame; +n = extra cuts; err = largest offset in frames.")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


def _timing_row(name: str, frames: int, o: tuple[float, ...], p: tuple[float, ...], d: tuple[float, ...],
                backend: str) -> list[str]:
    return [name, str(frames), f"{o[0]:.3f} ({o[1]:.3f})", f"{p[0]:.3f} ({p[1]:.3f}) {backend}",
            f"{d[0]:.3f} ({d[1]:.3f})", f"{frames / o[0]:.0f}", f"{frames / p[0]:.0f}", f"{frames / d[0]:.0f}",
            f"{p[0] / o[0]:.2f}x ({p[1] / o[1]:.2f}x)", f"{d[0] / o[0]:.2f} ({d[1] / o[1]:.2f})"]


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    def line(r: list[str]) -> str:
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, rows)])

if __name__ == "__main__":
    main()
