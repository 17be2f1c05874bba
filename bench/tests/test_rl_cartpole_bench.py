"""The RL bench's pure parts (thresholds, the efficiency ratio, the report), its requests against the service's
schema and limits, and a tiny run of its worldloom side (32x32, 60 real steps: seconds; the quick and full
modes are run by hand: `bench/bench_rl_cartpole.py --quick`)."""

from __future__ import annotations

from pathlib import Path

import bench_rl_cartpole as bench
import pytest

from worldloom.rlsim.schemas import ExperimentRequest
from worldloom.rlsim.settings import RlLimits


def test_first_reaching_and_the_ratio() -> None:
    curve = [(1000, 20.0), (2000, 199.0), (3000, 150.0), (4000, 480.0)]
    assert bench.first_reaching(curve, 195) == 2000 and bench.first_reaching(curve, 450) == 4000
    assert bench.first_reaching(curve, 500) is None
    ours = bench.SideResult("w", [200.0], curve, 1.0)
    ppo = bench.SideResult("p", [100.0], [(5000, 100.0), (8000, 300.0)], 1.0)
    assert bench.efficiency_ratio(ppo, ours, (195, 450)) == (195, 4.0)
    assert bench.efficiency_ratio(ppo, ours, (450,)) is None
    text = bench.report("CartPole-v1", 30000, ours, ppo)
    assert "steps to 195" in text and "4.00" in text


@pytest.mark.parametrize("env_id", sorted(bench.THRESHOLDS))
@pytest.mark.parametrize("quick", [True, False])
def test_the_bench_requests_are_valid_and_within_the_default_limits(env_id: str, quick: bool) -> None:
    steps = 1500 if quick else 30_000
    req = ExperimentRequest.model_validate(bench.experiment_request(env_id, steps, 64, 0, quick, 5, "cpu"))
    lim = RlLimits()
    assert req.steps <= lim.max_real_steps and env_id in lim.allowed_envs
    assert 1 + -(-(req.steps - req.warmup_steps) // req.steps_per_iteration) <= lim.max_iterations


def test_the_worldloom_side_runs_tiny(tmp_path: Path) -> None:
    req = bench.experiment_request("CartPole-v1", 60, 32, 0, True, 1, "cpu")
    req["world_model"].update(
        config={"n_layer": 1, "d_model": 32, "n_head": 2},
        updates=2,
        batch=2,
        tokenizer={"channels": 16, "steps": 1, "batch": 1},
    )
    req["agent"].update(hidden=16, layers=1, updates=2, imagined_envs=2, horizon=2)
    req.update(warmup_steps=60, max_episode_steps=30)
    side = bench.run_worldloom(req, 2, tmp_path, poll_s=0.1, log=lambda _m: None)
    assert len(side.final_returns) == 2 and [s for s, _ in side.curve] == [60]
    assert side.notes["iterations"] == 1 and side.notes["policy"].startswith("pol-")
