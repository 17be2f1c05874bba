"""Held-out clips are whole source videos: clips of one video never land on both sides."""

from __future__ import annotations

import random

from worldloom.core.selection import SelectedClip, Selection


def _clips(videos: int, per_video: int) -> list[SelectedClip]:
    return [SelectedClip(f"clip-{v:02d}-{i}", f"video-{v:02d}", f"clips/clip-{v:02d}-{i}/train.mp4")
            for v in range(videos) for i in range(per_video)]


def test_split_keeps_every_video_on_one_side() -> None:
    clips = _clips(10, 3)
    train, val = Selection(clips).split(0.3)
    assert len(train) + len(val) == 30 and val
    assert {c.video_id for c in train}.isdisjoint({c.video_id for c in val})
    assert abs(len(val) - 9) <= 3  # about the fraction, in whole videos
    shuffled = clips[:]
    random.Random(1).shuffle(shuffled)
    assert {c.clip_id for c in Selection(shuffled).split(0.3)[1]} == {c.clip_id for c in val}  # any listing order


def test_split_needs_two_videos_and_a_fraction() -> None:
    one_video = _clips(1, 6)
    assert Selection(one_video).split(0.5) == (one_video, [])
    assert Selection(_clips(4, 2)).split(0.0)[1] == []
    train, val = Selection(_clips(2, 5)).split(0.9)  # a video always stays for training
    assert len(train) == 5 and len(val) == 5


def test_clips_without_a_video_id_are_their_own_unit() -> None:
    clips = [SelectedClip(f"c{i}", "", f"k{i}") for i in range(10)]
    train, val = Selection(clips).split(0.2)
    assert len(val) == 2 and len(train) == 8
