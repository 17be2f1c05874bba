"""The real side of RL in a world model: pixels-only observations, decisions at the world model's clock,
episode tails padded so terminations reach the reward head, and updates that lower the losses."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from worldloom.models.rl import Agent, AgentConfig
from worldloom.models.rl.real import (
    FramePolicy,
    PixelObservation,
    episode_sequence,
    fit_tokenizer,
    square_frame,
    update_world_model,
)
from worldloom.models.world import ActionSpec
from worldloom.testkit.imagination import imagination_model


def test_square_frame_pads_instead_of_cropping() -> None:
    frame = np.full((40, 60, 3), 255, np.uint8)
    frame[:, :2] = 0  # a mark at the left edge: a centre crop would cut it
    out = square_frame(frame, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[:, 0].mean() < 128  # still there


def test_pixel_observation_shows_only_pixels() -> None:
    env = PixelObservation(gym.make("CartPole-v1", render_mode="rgb_array"), 32)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    for _ in range(8):  # the pole falls: the frames show it
        obs2, reward, *_ = env.step(0)
    assert reward == 1.0 and not np.array_equal(obs, obs2) and len(env.frames) == 9
    assert env.render() is env.frames[-1]
    env.close()
    with pytest.raises(ValueError, match="rgb_array"):
        PixelObservation(gym.make("CartPole-v1"), 32)


def test_frame_policy_decides_every_action_repeat_frames() -> None:
    model, tok = imagination_model("ar", ActionSpec.discrete(2), size=32)
    agent = Agent(
        AgentConfig(
            obs_shape=tuple(
                model.latent_features(tok, model.encode_video(tok, torch.zeros(1, 3, 1, 32, 32))).shape[1:2]
            )
            + tuple(model.latent_grid),
            num_actions=2,
        )
    )
    act = FramePolicy(gym.spaces.Discrete(2), agent, model, tok, action_repeat=4, seed=0)
    rng = np.random.default_rng(0)
    actions = [act(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(12)]
    for start in (0, 4, 8):  # held between decisions
        assert len(set(actions[start : start + 4])) == 1
    assert all(a in (0, 1) for a in actions) and act.decide_s > 0
    rand = FramePolicy(gym.spaces.Discrete(2), None, None, None, action_repeat=2, seed=1)
    seq = [rand(None) for _ in range(20)]
    assert all(seq[i] == seq[i + 1] for i in range(0, 20, 2)) and len(set(seq)) == 2


def test_episode_sequence_pads_the_tail_so_the_termination_is_seen() -> None:
    model, tok = imagination_model("ar", ActionSpec.discrete(2), size=32)
    steps = 10  # 11 frames: 1 + 2 * 4 encode, two steps (with the terminal one) would be lost without padding
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (steps + 1, 32, 32, 3), dtype=np.uint8)
    actions = rng.integers(0, 2, steps)
    rewards = np.ones(steps, np.float32)
    terminated = np.zeros(steps, bool)
    terminated[-1] = True
    seq = episode_sequence(model, tok, frames, actions, rewards, terminated, video_id="v")
    assert seq is not None and seq.frames == 4  # 1 + ceil(10 / 4)
    assert seq.actions is not None and seq.actions.tolist() == [actions[3], actions[7], actions[9]]
    assert seq.rewards is not None and seq.rewards.tolist() == [0, 4, 4, 2]  # padded steps earn nothing
    assert seq.terminations is not None and seq.terminations.tolist() == [0, 0, 0, 1]
    assert episode_sequence(model, tok, frames[:1], actions[:0], rewards[:0], terminated[:0]) is None
    with pytest.raises(ValueError, match="frames"):
        episode_sequence(model, tok, frames[:5], actions, rewards, terminated)


def test_updates_lower_the_losses() -> None:
    torch.manual_seed(0)
    model, tok = imagination_model("ar", ActionSpec.discrete(2), size=32)
    rng = np.random.default_rng(1)
    episodes = []
    for _ in range(3):
        frames = rng.integers(0, 256, (21, 32, 32, 3), dtype=np.uint8)
        term = np.zeros(20, bool)
        term[-1] = True
        episodes.append((frames, rng.integers(0, 2, 20), np.ones(20, np.float32), term))
    seqs = [episode_sequence(model, tok, *ep) for ep in episodes]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    kw = dict(batch=4, window=4, context_frames=3, lr=3e-3, seed=0)
    first = update_world_model(model, opt, [s for s in seqs if s is not None], steps=3, **kw)
    last = update_world_model(model, opt, [s for s in seqs if s is not None], steps=3, start_step=3, **kw)
    assert {"loss", "reward_loss", "termination_loss"} <= set(first)
    assert last["loss"] < first["loss"] and not model.training
    tok_opt = torch.optim.Adam(tok.parameters(), lr=1e-3)
    m = fit_tokenizer(tok, tok_opt, [ep[0] for ep in episodes], steps=2, batch=2, clip_frames=9, lr=1e-3, seed=0)
    assert np.isfinite(m["loss"]) and not tok.training
    with pytest.raises(ValueError, match="clip_frames"):
        fit_tokenizer(tok, tok_opt, [episodes[0][0]], steps=1, batch=1, clip_frames=8, lr=1e-3, seed=0)
