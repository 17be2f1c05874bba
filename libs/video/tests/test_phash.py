"""phash: stable under re-encoding and rescaling, far apart for different shots."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from worldloom.video.phash import (
    clip_distance,
    clip_phash,
    hamming,
    is_duplicate,
    phash,
    phash_frames,
    resize_area,
)
from worldloom.testkit.media import SINTEL
from worldloom.testkit.media import SINTEL_SHOTS as SHOTS
from worldloom.video.transcode import transcode_clip


def decode(path: Path, max_side: int | None = None) -> np.ndarray:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        w, h = s.codec_context.width, s.codec_context.height
        if max_side:
            k = max_side / max(w, h)
            w, h = round(w * k / 2) * 2, round(h * k / 2) * 2
        return np.stack([f.reformat(width=w, height=h, format="rgb24").to_ndarray() for f in c.decode(s)])


@pytest.fixture(scope="module")
def sintel(shared_data: Path) -> np.ndarray:
    return decode(shared_data / SINTEL, 428)  # half size: the copy below is 120p


def test_hash_basics() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    h = phash(img)
    assert 0 <= h < 2**64 and bin(h).count("1") == 32  # median split: half the bits set
    assert phash(img) == h == phash_frames(img[None])[0]
    assert phash(img[..., 0]) == phash(np.repeat(img[..., :1], 3, axis=2))  # grey input accepted
    assert hamming(h, h) == 0 and hamming(0, 2**64 - 1) == 64
    assert hamming(h, phash(np.clip(img.astype(int) + 20, 0, 255).astype(np.uint8))) <= 4  # brightness shift


def test_resize_area_averages() -> None:
    x = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    assert resize_area(x, 2, 2)[..., 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    assert resize_area(np.ones((3, 7, 5, 3)), 2, 3).shape == (3, 2, 3, 3)


def test_reencoded_clip_at_other_resolution_is_duplicate(shared_data: Path, sintel: np.ndarray, tmp_path: Path) -> None:
    for name, (a, b) in SHOTS.items():
        small = transcode_clip(shared_data / SINTEL, tmp_path / f"{name}.mp4", a, b, short_side=120, crf=32)
        original, copy = clip_phash(sintel[a:b]), clip_phash(decode(small.path))
        assert len(original) == 5
        assert clip_distance(original, copy) <= 6, name  # of 64 bits
        assert is_duplicate(original, copy)


def test_different_shots_are_not_duplicates(sintel: np.ndarray) -> None:
    hashes = {name: clip_phash(sintel[a:b]) for name, (a, b) in SHOTS.items()}
    names = list(hashes)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            assert clip_distance(hashes[x], hashes[y]) >= 16, (x, y)
            assert not is_duplicate(hashes[x], hashes[y])


def test_bridge_episodes_are_distinct(shared_data: Path) -> None:
    paths = sorted((shared_data / "bridge" / "videos").glob("*/*/rgb.mp4"))
    assert len(paths) == 15
    hashes = [clip_phash(decode(p, 128)) for p in paths]
    dist = [clip_distance(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(dist) > 10  # same kitchen-robot setting, still no false duplicate


def test_clip_phash_short_and_empty() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert len(clip_phash(frames)) == 2
    assert clip_distance(clip_phash(frames), clip_phash(frames[:1])) == 0
    with pytest.raises(ValueError):
        clip_phash(frames[:0])
