"""Simulated robot arms (MuJoCo Reacher-v5, Pusher-v5) in worldloom.sim: rendering, scripted controllers.

The base world model of the sim-to-real demo (issue 12) is pretrained on these: pixels rendered
headless (MUJOCO_GL=egl), actions and rewards stored beside them. Checks that the scripted controllers
do their task better than random (Reacher reaches the target, Pusher's palm gets to the object),
that they are deterministic per seed, and that "scripted" is refused where no script exists. The HTTP job
that ingests 64x64 arm episodes is tested with the ingest service (services/ingest/tests/test_mujoco_arms.py).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from worldloom.sim import record_episodes
from worldloom.sim.policies import make_policy
from worldloom.video.ingest import IngestError

SIZE = {"width": 64, "height": 64}


def _rollout(env_id: str, policy: str, seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(observations, actions) of one episode without rendering (the controllers read observations only)."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    act = make_policy(policy, env.action_space, seed, env_id)
    observations, actions = [obs], []
    for _ in range(steps):
        actions.append(act(obs))
        obs, *_ = env.step(actions[-1])
        observations.append(obs)
    env.close()
    return np.asarray(observations), np.asarray(actions)


def test_scripted_reacher_reaches_the_target_random_does_not():
    final = {
        p: [np.linalg.norm(_rollout("Reacher-v5", p, s, 50)[0][-1, 8:10]) for s in range(4)]
        for p in ("random", "scripted")
    }
    start = [np.linalg.norm(_rollout("Reacher-v5", "random", s, 0)[0][0, 8:10]) for s in range(4)]
    assert np.mean(final["scripted"]) < 0.03 < 0.5 * np.mean(start)  # metres, fingertip to target
    assert np.mean(final["random"]) > 2 * np.mean(final["scripted"])


def test_scripted_pusher_moves_its_palm_to_the_object():
    def closest(policy: str, seed: int) -> float:
        obs, _ = _rollout("Pusher-v5", policy, seed, 60)
        return float(np.min(np.linalg.norm(obs[:, 14:17] - obs[:, 17:20], axis=1)))

    scripted = [closest("scripted", s) for s in range(3)]
    random = [closest("random", s) for s in range(3)]
    assert max(scripted) < 0.12 and min(random) > 2 * max(scripted), (scripted, random)


def test_scripted_is_deterministic_per_seed_and_noise_changes_it():
    a = _rollout("Reacher-v5", "scripted:0.1", 3, 10)[1]
    assert np.array_equal(a, _rollout("Reacher-v5", "scripted:0.1", 3, 10)[1])
    assert not np.array_equal(a, _rollout("Reacher-v5", "scripted", 3, 10)[1])


@pytest.mark.parametrize(
    ("env_id", "policy"),
    [
        ("CartPole-v1", "scripted"),
        ("Hopper-v5", "scripted"),
        ("Reacher-v5", "scripted:2"),
        ("Reacher-v5", "scripted:x"),
    ],
)
def test_scripted_refused_without_a_script_or_with_a_bad_noise(env_id, policy, tmp_path):
    with pytest.raises(IngestError) as err:
        record_episodes(env_id, 1, policy, 0, 3, tmp_path)
    assert (err.value.status, err.value.code) == (422, "invalid_policy")
    assert list(tmp_path.iterdir()) == []  # refused before any env ran


def test_shadow_map_sized_to_the_frame():
    from worldloom.sim.envs import make_env

    small, large = make_env("Pusher-v5", SIZE), make_env("Pusher-v5", {"width": 1024, "height": 768})
    try:  # 4096^2 by default: most of a 64x64 frame's render time on a software GL
        assert small.unwrapped.model.vis.quality.shadowsize == 512
        assert large.unwrapped.model.vis.quality.shadowsize == 4096
    finally:
        small.close()
        large.close()


def test_a_process_that_renders_mujoco_can_then_build_torch_optimizers() -> None:
    """Mesa's software EGL and triton each carry an LLVM: triton loaded after Mesa segfaulted the process
    (the first AdamW imports it). make_env loads triton first; a fresh interpreter renders a MuJoCo frame,
    then builds an optimizer, and exits 0."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from worldloom.sim.envs import make_env\n"
        "env = make_env('Reacher-v5', {'width': 32, 'height': 32})\n"
        "env.reset(seed=0)\n"
        "assert env.render().shape == (32, 32, 3)\n"
        "torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (done.returncode, done.stderr[-2000:])
