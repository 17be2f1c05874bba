"""How much post-training saves: steps each run needed to reach a validation loss.

Both phases of a post-training job with the ``scratch`` baseline log the held-out validation loss at the
same phase-local steps (``val_loss`` and ``scratch_val_loss`` curves, step 0 included). The ratio of the
steps the scratch model needed to reach a target loss to the steps the post-trained model needed is the
"x times fewer steps" figure; by default the target is the best loss the scratch model reached.
"""

from __future__ import annotations

from collections.abc import Sequence


def steps_to_reach(curve: Sequence[Sequence[float]], target: float) -> int | None:
    """The first step whose value is at or below ``target`` (None: never reached)."""
    for step, value in sorted((int(s), float(v)) for s, v in curve):
        if value <= target:
            return step
    return None


def steps_to_loss_ratio(posttrained: Sequence[Sequence[float]], scratch: Sequence[Sequence[float]],
                        target: float | None = None) -> dict[str, float]:
    """``{"steps_to_loss_target", "steps_to_loss_posttrained", "steps_to_loss_scratch", "steps_to_loss_ratio"}``
    for ``target`` (default: the scratch curve's minimum). The ratio is scratch steps / post-trained steps
    (a post-trained model at or below the target already at step 0 counts as 1 step); keys whose value
    is undefined (a curve that never reaches the target, an empty curve) are left out, never invented."""
    if not scratch:
        return {}
    goal = min(float(v) for _, v in scratch) if target is None else float(target)
    out: dict[str, float] = {"steps_to_loss_target": goal}
    post, base = steps_to_reach(posttrained, goal), steps_to_reach(scratch, goal)
    if post is not None:
        out["steps_to_loss_posttrained"] = float(post)
    if base is not None:
        out["steps_to_loss_scratch"] = float(base)
    if post is not None and base is not None:
        out["steps_to_loss_ratio"] = base / max(post, 1)
    return out
