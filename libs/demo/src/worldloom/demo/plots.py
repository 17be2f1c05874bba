"""The demo's figures: training curves and metric lines drawn with matplotlib (Agg, no display), and
side-by-side video grids written as GIFs.

Charts honour matplotlib's rcParams and style sheets (``matplotlib.style.use`` before the demo runs),
except the series colours, which the report's tables refer to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from worldloom.video.transcode import write_gif

Curve = Sequence[Sequence[float]]  # [(step, value), ...]
RGB = tuple[int, int, int]

PSNR_COLOUR: RGB = (31, 119, 180)
LOSS_COLOUR: RGB = (230, 110, 20)
#: round tick steps: 1, 2, 2.5 or 5 x 10^k
TICK_STEPS = [1, 2, 2.5, 5, 10]
DPI = 100


def tick_locator(target: int = 6) -> MaxNLocator:
    """About ``target`` ticks at round steps (:data:`TICK_STEPS`), as every demo chart's value axes use."""
    return MaxNLocator(nbins=max(1, target - 1), steps=TICK_STEPS)


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """The ticks :func:`tick_locator` puts on an axis spanning [lo, hi] (a flat range still gets an axis)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    return [float(t) for t in tick_locator(target).tick_values(lo, hi)]


def _mpl(colour: RGB) -> tuple[float, float, float]:
    r, g, b = colour
    return r / 255, g / 255, b / 255


def _finite(curve: Curve) -> tuple[list[float], list[float]]:
    pts = [(float(x), float(y)) for x, y in curve if math.isfinite(float(y))]
    return [x for x, _ in pts], [y for _, y in pts]


def _figure(size: tuple[int, int]) -> Figure:
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def plot_training_curves(psnr: Curve, loss: Curve, path: str | Path, *, title: str = "tokenizer training",
                         size: tuple[int, int] = (900, 520), val_psnr: float | None = None) -> Path:
    """PSNR (left axis, dB) and loss (right axis) against the training step, as a ``size`` pixel PNG.

    ``val_psnr`` (the held-out PSNR at the end of training) is drawn as a dashed line when given. The
    legend sits below the plot, where it cannot hide a curve of either axis.
    """
    fig = _figure(size)
    ax = fig.add_subplot()
    ax2 = ax.twinx()
    for axis, curve, colour, label in ((ax2, loss, LOSS_COLOUR, "train loss"), (ax, psnr, PSNR_COLOUR, "train PSNR")):
        xs, ys = _finite(curve)
        axis.plot(xs, ys, color=_mpl(colour), linewidth=2, marker="o", markersize=4,
                  markevery=None if len(xs) <= 25 else [len(xs) - 1], label=label)
    if val_psnr is not None:
        ax.axhline(val_psnr, color=_mpl(PSNR_COLOUR), linewidth=1, linestyle="--",
                   label=f"held-out PSNR {val_psnr:.1f} dB")
    ax.set_xlabel("training step")
    ax.set_ylabel("PSNR (dB)", color=_mpl(PSNR_COLOUR))
    ax2.set_ylabel("loss (L1 + SSIM)", color=_mpl(LOSS_COLOUR))
    ax.tick_params(axis="y", colors=_mpl(PSNR_COLOUR))
    ax2.tick_params(axis="y", colors=_mpl(LOSS_COLOUR))
    for axis in (ax, ax2):
        axis.yaxis.set_major_locator(tick_locator())
    ax.xaxis.set_major_locator(tick_locator())
    ax.grid(True, color="0.9")
    ax.set_axisbelow(True)
    ax.set_title(title)
    handles = [h for axis in (ax, ax2) for h in axis.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    return _save_png(fig, path)


def plot_lines(series: Sequence[tuple[str, RGB, bool, Curve]], path: str | Path, *, title: str,
               x_label: str, y_label: str, size: tuple[int, int] = (900, 520)) -> Path:
    """One axis, several named lines ``(name, colour, dashed, [(x, y), ...])`` with markers, as a PNG.

    For a handful of points per line (e.g. PSNR at prediction horizons 1, 2, 4): the x ticks are the
    points' own x values; the legend is to the right of the plot."""
    fig = _figure(size)
    ax = fig.add_subplot()
    xs_all: set[float] = set()
    for name, colour, dashed, pts in series:
        xs, ys = _finite(pts)
        xs_all.update(xs)
        ax.plot(xs, ys, color=_mpl(colour), linewidth=2, linestyle="--" if dashed else "-", marker="o",
                markersize=6, label=name)
    ax.set_xticks(sorted(xs_all))
    ax.yaxis.set_major_locator(tick_locator())
    ax.grid(True, axis="y", color="0.9")
    ax.set_axisbelow(True)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    fig.legend(loc="outside right upper", frameon=False)
    return _save_png(fig, path)


def write_grid_gif(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], path: str | Path, *, zoom: int = 2,
                   fps: float = 6.0) -> Path:
    """A GIF with one row per item and one column per video (``[T, H, W, 3]`` uint8 each, side by side),
    nearest-neighbour zoomed, column labels on top (with Pillow); shorter videos hold their last frame."""
    t = max(len(v) for row in rows for v in row)
    gap = 4
    strips = []
    for row in rows:
        h = max(v.shape[1] for v in row)
        parts = []
        for v in row:
            v = v[np.minimum(np.arange(t), len(v) - 1)]
            parts += [np.pad(v, ((0, 0), (0, h - v.shape[1]), (0, 0), (0, 0)), constant_values=255),
                      np.full((t, h, gap, 3), 255, np.uint8)]
        strips += [np.concatenate(parts[:-1], axis=2), None]
    width = max(s.shape[2] for s in strips if s is not None)
    body = [np.full((t, gap, width, 3), 255, np.uint8) if s is None else
            np.pad(s, ((0, 0), (0, 0), (0, width - s.shape[2]), (0, 0)), constant_values=255) for s in strips[:-1]]
    frames = np.concatenate(body, axis=1).repeat(zoom, axis=1).repeat(zoom, axis=2)
    first = rows[0]
    col_w = [v.shape[2] + gap for v in first]
    centres = [(sum(col_w[:i]) + first[i].shape[2] / 2) / width for i in range(len(first))]
    header = _header(frames.shape[2], list(zip(labels, centres, strict=True)), zoom)
    frames = np.concatenate([np.broadcast_to(header, (t, *header.shape)), frames], axis=1)
    return write_gif(frames, Path(path), fps, max_side=max(frames.shape[1:3]))


def _header(width: int, labels: list[tuple[str, float]], zoom: int) -> np.ndarray:
    """A white strip with column labels centred at fractions of the width."""
    img = Image.new("RGB", (width, 12 * zoom), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=7 * zoom)
    for text, at in labels:
        d.text((width * at, 6 * zoom), text, fill=(20, 20, 20), font=font, anchor="mm")
    return np.asarray(img, dtype=np.uint8)
