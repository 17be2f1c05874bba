"""Small charts drawn with Pillow (no matplotlib) for the demo and the CLI: training curves, metric
lines (PSNR by horizon) and side-by-side video grids as GIFs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

Curve = Sequence[Sequence[float]]  # [(step, value), ...]

PSNR_COLOUR = (31, 119, 180)
LOSS_COLOUR = (230, 110, 20)
_AXIS, _GRID, _TEXT = (60, 60, 60), (228, 228, 228), (25, 25, 25)


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k) covering [lo, hi], about ``target`` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, target - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(v, 10))
    return ticks


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 10_000 or abs(v) < 0.01:
        return f"{v:.0e}"
    return f"{v:g}" if abs(v) >= 1 else f"{v:.3g}"


def plot_training_curves(psnr: Curve, loss: Curve, path: str | Path, *, title: str = "tokenizer training",
                         size: tuple[int, int] = (900, 520), val_psnr: float | None = None) -> Path:
    """PSNR (left axis, dB) and loss (right axis) against the training step, as a PNG.

    Axes with ticks and grid, axis labels, a title and a legend; ``val_psnr`` (the held-out PSNR at
    the end of training) is drawn as a dashed line when given.
    """
    img, d, scale, (small, font, big) = _canvas(size)
    width, height = size
    left, right = round(80 * scale), width - round(80 * scale)
    top, bottom = round(50 * scale), height - round(60 * scale)

    steps = [float(s) for s, _ in list(psnr) + list(loss)]
    x_ticks = nice_ticks(min(steps, default=0.0), max(steps, default=1.0))
    x0, x1 = x_ticks[0], x_ticks[-1]
    psnr_vals = [float(v) for _, v in psnr] + ([val_psnr] if val_psnr is not None else [])
    p_ticks = nice_ticks(min(psnr_vals, default=0.0), max(psnr_vals, default=1.0))
    l_ticks = nice_ticks(min((float(v) for _, v in loss), default=0.0), max((float(v) for _, v in loss), default=1.0))

    def sx(v: float) -> float:
        return left + (v - x0) / ((x1 - x0) or 1) * (right - left)

    def sy(v: float, ticks: list[float]) -> float:
        return bottom - (v - ticks[0]) / ((ticks[-1] - ticks[0]) or 1) * (bottom - top)

    # grid and ticks: x (bottom), PSNR (left), loss (right)
    for t in x_ticks:
        x = sx(t)
        d.line([(x, top), (x, bottom)], fill=_GRID)
        d.line([(x, bottom), (x, bottom + 5)], fill=_AXIS)
        d.text((x, bottom + 8), _label(t), fill=_TEXT, font=small, anchor="mt")
    for t in p_ticks:
        y = sy(t, p_ticks)
        d.line([(left, y), (right, y)], fill=_GRID)
        d.line([(left - 5, y), (left, y)], fill=_AXIS)
        d.text((left - 8, y), _label(t), fill=PSNR_COLOUR, font=small, anchor="rm")
    for t in l_ticks:
        y = sy(t, l_ticks)
        d.line([(right, y), (right + 5, y)], fill=_AXIS)
        d.text((right + 8, y), _label(t), fill=LOSS_COLOUR, font=small, anchor="lm")
    d.rectangle([left, top, right, bottom], outline=_AXIS)

    line_w = max(1, round(2 * scale))
    if val_psnr is not None:
        y = sy(val_psnr, p_ticks)
        for xa in range(left, right, 12):
            d.line([(xa, y), (min(xa + 6, right), y)], fill=PSNR_COLOUR, width=1)
    for curve, ticks, colour in ((loss, l_ticks, LOSS_COLOUR), (psnr, p_ticks, PSNR_COLOUR)):
        pts = [(sx(float(s)), sy(float(v), ticks)) for s, v in curve if math.isfinite(float(v))]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=line_w, joint="curve")
        for x, y in pts if len(pts) <= 25 else pts[-1:]:
            d.ellipse([x - 2.5 * scale, y - 2.5 * scale, x + 2.5 * scale, y + 2.5 * scale], fill=colour)

    # labels and title
    d.text(((left + right) / 2, height - 8 * scale), "training step", fill=_TEXT, font=font, anchor="md")
    d.text(((left + right) / 2, top / 2), title, fill=_TEXT, font=big, anchor="mm")
    _vertical_text(img, "PSNR (dB)", font, PSNR_COLOUR, centre=(round(18 * scale), (top + bottom) // 2))
    _vertical_text(img, "loss (L1 + SSIM)", font, LOSS_COLOUR, centre=(width - round(18 * scale), (top + bottom) // 2))

    # legend: in whichever corner of the plot the curves cross least
    entries = [("train PSNR", PSNR_COLOUR, False), ("train loss", LOSS_COLOUR, False)]
    if val_psnr is not None:
        entries.append((f"held-out PSNR {val_psnr:.1f} dB", PSNR_COLOUR, True))
    row = round(20 * scale)
    text_w = max(d.textlength(name, font=small) for name, _, _ in entries)
    box_w, box_h = text_w + 44 * scale, row * len(entries) + 10 * scale
    pad = 10 * scale
    corners = [(right - pad - box_w, bottom - pad - box_h), (right - pad - box_w, top + pad),
               (left + pad, bottom - pad - box_h), (left + pad, top + pad),
               (right - pad - box_w, (top + bottom - box_h) / 2)]
    drawn = [p for curve, ticks in ((loss, l_ticks), (psnr, p_ticks)) for p in _dense(
        [(sx(float(s)), sy(float(v), ticks)) for s, v in curve if math.isfinite(float(v))])]
    if val_psnr is not None:
        drawn += [(x, sy(val_psnr, p_ticks)) for x in range(left, right, 4)]
    m = 12 * scale  # clearance around the box
    bx0, by0 = min(corners, key=lambda c: sum(c[0] - m <= x <= c[0] + box_w + m and c[1] - m <= y <= c[1] + box_h + m
                                              for x, y in drawn))
    bx1 = bx0 + box_w
    d.rectangle([bx0, by0, bx1, by0 + box_h], fill="white", outline=_AXIS)
    for i, (name, colour, dashed) in enumerate(entries):
        y = by0 + 5 * scale + row * i + row / 2
        if dashed:
            d.line([(bx0 + 8 * scale, y), (bx0 + 16 * scale, y)], fill=colour, width=1)
            d.line([(bx0 + 22 * scale, y), (bx0 + 30 * scale, y)], fill=colour, width=1)
        else:
            d.line([(bx0 + 8 * scale, y), (bx0 + 30 * scale, y)], fill=colour, width=line_w)
        d.text((bx0 + 36 * scale, y), name, fill=_TEXT, font=small, anchor="lm")

    return _save_png(img, path)


def _canvas(size: tuple[int, int]):  # noqa: ANN202 - (PIL image, its draw, scale, (small, normal, big) fonts)
    """A white image, its drawing context, the scale against the 900x520 design size and three fonts."""
    from PIL import Image, ImageDraw, ImageFont

    scale = min(size[0] / 900, size[1] / 520)
    fonts = tuple(ImageFont.load_default(size=max(lo, round(pt * scale))) for lo, pt in ((8, 12), (9, 14), (10, 17)))
    img = Image.new("RGB", size, "white")
    return img, ImageDraw.Draw(img), scale, fonts


def _save_png(img, path: str | Path) -> Path:  # noqa: ANN001 - a PIL image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return path


def _dense(pts: list[tuple[float, float]], step: float = 4.0) -> list[tuple[float, float]]:
    """The polyline's vertices plus points every ``step`` pixels along it (for overlap tests)."""
    out = list(pts[:1])
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
        n = max(1, int(math.hypot(xb - xa, yb - ya) / step))
        out.extend((xa + (xb - xa) * k / n, ya + (yb - ya) * k / n) for k in range(1, n + 1))
    return out


def _vertical_text(img, text: str, font, colour: tuple[int, int, int], centre: tuple[int, int]) -> None:  # noqa: ANN001
    from PIL import Image, ImageDraw

    probe = ImageDraw.Draw(img)
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    label = Image.new("RGBA", (x1 - x0 + 4, y1 - y0 + 4), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((2 - x0, 2 - y0), text, fill=colour, font=font)
    label = label.rotate(90, expand=True)
    img.paste(label, (centre[0] - label.width // 2, centre[1] - label.height // 2), label)


def plot_lines(series: Sequence[tuple[str, tuple[int, int, int], bool, Curve]], path: str | Path, *, title: str,
               x_label: str, y_label: str, size: tuple[int, int] = (900, 520)) -> Path:
    """One axis, several named lines ``(name, colour, dashed, [(x, y), ...])`` with markers, as a PNG.

    For a handful of points per line (e.g. PSNR at prediction horizons 1, 2, 4); x ticks are the
    points' own x values."""
    img, d, scale, (small, font, big) = _canvas(size)
    width, height = size
    left, right = round(80 * scale), width - round(230 * scale)
    top, bottom = round(50 * scale), height - round(60 * scale)
    xs = sorted({float(x) for *_, pts in series for x, _ in pts}) or [0.0, 1.0]
    ys = [float(y) for *_, pts in series for _, y in pts if math.isfinite(float(y))]
    y_ticks = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    x0, x1 = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1

    def sx(v: float) -> float:
        return left + 20 * scale + (v - x0) / (x1 - x0) * (right - left - 40 * scale)

    def sy(v: float) -> float:
        return bottom - (v - y_ticks[0]) / ((y_ticks[-1] - y_ticks[0]) or 1) * (bottom - top)

    for t in y_ticks:
        d.line([(left, sy(t)), (right, sy(t))], fill=_GRID)
        d.text((left - 8, sy(t)), _label(t), fill=_TEXT, font=small, anchor="rm")
    for t in xs:
        d.line([(sx(t), bottom), (sx(t), bottom + 5)], fill=_AXIS)
        d.text((sx(t), bottom + 8), _label(t), fill=_TEXT, font=small, anchor="mt")
    d.rectangle([left, top, right, bottom], outline=_AXIS)
    line_w = max(1, round(2 * scale))
    for name, colour, dashed, pts in series:
        xy = [(sx(float(x)), sy(float(y))) for x, y in pts if math.isfinite(float(y))]
        if dashed:
            for xa, ya in _dense(xy, 6.0)[::2]:
                d.ellipse([xa - line_w / 2, ya - line_w / 2, xa + line_w / 2, ya + line_w / 2], fill=colour)
        elif len(xy) > 1:
            d.line(xy, fill=colour, width=line_w)
        for x, y in xy:
            d.ellipse([x - 3.5 * scale, y - 3.5 * scale, x + 3.5 * scale, y + 3.5 * scale], fill=colour)
    d.text(((left + right) / 2, height - 8 * scale), x_label, fill=_TEXT, font=font, anchor="md")
    d.text((width / 2, top / 2), title, fill=_TEXT, font=big, anchor="mm")
    _vertical_text(img, y_label, font, _TEXT, centre=(round(18 * scale), (top + bottom) // 2))
    row = round(22 * scale)
    for i, (name, colour, dashed, _) in enumerate(series):  # legend to the right of the plot
        y = top + row * i + row / 2
        xa = right + 14 * scale
        if dashed:
            for k in range(0, round(24 * scale), round(6 * scale)):
                d.line([(xa + k, y), (xa + k + 3 * scale, y)], fill=colour, width=line_w)
        else:
            d.line([(xa, y), (xa + 24 * scale, y)], fill=colour, width=line_w)
        d.text((xa + 30 * scale, y), name, fill=_TEXT, font=small, anchor="lm")
    return _save_png(img, path)


def write_grid_gif(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], path: str | Path, *, zoom: int = 2,
                   fps: float = 6.0) -> Path:
    """A GIF with one row per item and one column per video (``[T, H, W, 3]`` uint8 each, side by side),
    nearest-neighbour zoomed, column labels on top (with Pillow); shorter videos hold their last frame."""
    from worldloom.video.transcode import write_gif

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
    header = _header(frames.shape[2], list(zip(labels, centres)), zoom)
    if header is not None:
        frames = np.concatenate([np.broadcast_to(header, (t, *header.shape)), frames], axis=1)
    return write_gif(frames, Path(path), fps, max_side=max(frames.shape[1:3]))


def _header(width: int, labels: list[tuple[str, float]], zoom: int) -> np.ndarray | None:
    """A white strip with column labels centred at fractions of the width, or None without Pillow."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return None
    img = Image.new("RGB", (width, 12 * zoom), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=7 * zoom)
    for text, at in labels:
        d.text((width * at, 6 * zoom), text, fill=(20, 20, 20), font=font, anchor="mm")
    return np.asarray(img, dtype=np.uint8)
