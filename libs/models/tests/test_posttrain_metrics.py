"""steps_to_loss_ratio: how many fewer steps a post-trained model needs to reach a validation loss."""

from __future__ import annotations

import pytest

from worldloom.models.posttrain.metrics import steps_to_loss_ratio, steps_to_reach


def test_steps_to_reach_is_the_first_step_at_or_below_the_target() -> None:
    curve = [(10, 2.0), (0, 3.0), (20, 1.5), (30, 1.6)]
    assert steps_to_reach(curve, 1.5) == 20 and steps_to_reach(curve, 2.5) == 10 and steps_to_reach(curve, 1.0) is None


def test_ratio_against_the_scratch_models_best_loss() -> None:
    post = [(0, 2.0), (10, 1.2), (20, 0.9)]
    scratch = [(0, 5.0), (10, 3.0), (20, 2.0), (40, 1.2)]
    out = steps_to_loss_ratio(post, scratch)
    assert out == {"steps_to_loss_target": 1.2, "steps_to_loss_posttrained": 10.0, "steps_to_loss_scratch": 40.0,
                   "steps_to_loss_ratio": pytest.approx(4.0)}
    # already there at step 0 counts as one step; a target the post-trained model never reaches has no ratio
    assert steps_to_loss_ratio(post, scratch, target=2.0)["steps_to_loss_ratio"] == 20.0
    missed = steps_to_loss_ratio(post, scratch, target=0.5)
    assert "steps_to_loss_ratio" not in missed and "steps_to_loss_posttrained" not in missed
    assert steps_to_loss_ratio(post, []) == {}
