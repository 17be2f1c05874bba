"""fit_frames: the one crop + resize the generate server, the CLI and the benchmarks apply to frames."""

import numpy as np
import pytest

from worldloom.models.frames import fit_frames


def test_fit_frames_center_crops_then_resizes():  # was bench's square_resize test
    frames = np.zeros((2, 40, 60, 3), np.uint8)
    frames[:, :, :10] = 255  # left and right bands outside the centre 40x40 square
    frames[:, :, 50:] = 255
    frames[:, :, 10:50, 1] = 100
    out = fit_frames(frames, (16, 16))
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
    assert (out[..., 0] == 0).all() and (out[..., 1] == 100).all()  # bands cropped away, colour kept
    assert fit_frames(frames[:, :, 10:50], (40, 40)).tolist() == frames[:, :, 10:50].tolist()  # same size: as is
    with pytest.raises(ValueError):
        fit_frames(frames.astype(np.float32), (16, 16))


def test_fit_frames_keeps_the_target_aspect_and_streams_in_chunks():
    frames = np.zeros((5, 40, 40, 3), np.uint8)
    frames[:, :10] = 255  # top and bottom bands outside the centre 20x40 strip a 1:2 target keeps
    frames[:, 30:] = 255
    out = fit_frames(frames, (8, 16), chunk=2)
    assert out.shape == (5, 8, 16, 3) and (out == 0).all()
    assert fit_frames(frames[:0], (8, 16)).shape == (0, 8, 16, 3)
