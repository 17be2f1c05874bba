"""WorldModelEnv: a world model as a batched gymnasium VectorEnv, and Stable-Baselines3 training in it.

Tiny models of both families on CPU; every test runs through the family-neutral interface."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from torch import nn

from worldloom.models.rl import ContextClip, WorldModelEnv
from worldloom.models.rl.sb3 import SB3VecEnv
from worldloom.models.tokenizer.data import frames_to_tensor
from worldloom.models.world import FAMILIES, Sampling
from worldloom.models.world.data import LatentSequence
from worldloom.testkit.imagination import action_spec as _spec
from worldloom.testkit.imagination import context_clips as _clips
from worldloom.testkit.imagination import imagination_model as _model
from worldloom.testkit.imagination import tiny_env as _env

CASES = [("ar", "discrete"), ("diffusion", "continuous"), ("ar", "continuous"), ("diffusion", "discrete")]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _set_termination(env: WorldModelEnv, logit: float) -> None:
    """Force the termination head's output: the last linear's termination row becomes a constant."""
    assert env.model.reward is not None
    last = env.model.reward.mlp[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight[1].zero_()
        last.bias[1] = logit


def _actions(env: WorldModelEnv, seed: int) -> np.ndarray:
    env.action_space.seed(seed)
    return env.action_space.sample()


# ------------------------------------------------------------------------------------------------ spaces


@pytest.mark.parametrize("family,kind", CASES)
@pytest.mark.parametrize("observation", ["pixels", "latents"])
def test_spaces_follow_the_models_action_config_and_the_tokenizer(family: str, kind: str, observation: str) -> None:
    env = _env(family, kind, observation, num_envs=5)
    assert env.num_envs == 5 and env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    if kind == "discrete":
        assert env.single_action_space == gym.spaces.Discrete(3)
        assert env.action_space == gym.spaces.MultiDiscrete([3] * 5)
    else:
        assert env.single_action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        assert env.action_space == gym.spaces.Box(-1.0, 1.0, (5, 2), np.float32)
    h, w = env.model.latent_grid
    if observation == "pixels":
        assert env.single_observation_space == gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    else:
        c = env.tokenizer.config.z_channels
        assert env.single_observation_space == gym.spaces.Box(-np.inf, np.inf, (c, h, w), np.float32)
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space and info == {}


@pytest.mark.parametrize("family,kind", CASES[:2])
@pytest.mark.parametrize("observation", ["pixels", "latents"])
def test_step_returns_batched_arrays_of_the_right_shapes_and_dtypes(family: str, kind: str, observation: str) -> None:
    env = _env(family, kind, observation, num_envs=3)
    env.reset(seed=1)
    for step in range(3):
        obs, reward, terminated, truncated, info = env.step(_actions(env, step))
        assert obs.shape == env.observation_space.shape and obs.dtype == env.single_observation_space.dtype
        assert obs in env.observation_space
        assert reward.shape == (3,) and reward.dtype == np.float32 and np.isfinite(reward).all()
        assert terminated.shape == truncated.shape == (3,)
        assert terminated.dtype == truncated.dtype == np.bool_
        assert isinstance(info, dict)


@pytest.mark.parametrize("family,kind", CASES[:2])
def test_latent_observations_are_the_tokenizers_latents_of_the_context(family: str, kind: str) -> None:
    """After reset a sub-env shows the newest frame of a real context window: the tokenizer's encoding
    of one of the clips, as a policy acting on real frames would see it."""
    env = _env(family, kind, "latents", num_envs=2)
    obs, _ = env.reset(seed=0)
    model, clips = env.model, _clips(kind)
    cands = []
    for clip in clips:
        with torch.no_grad():
            x = model.encode_video(env.tokenizer, frames_to_tensor(clip.frames)[None])
            feats = model.latent_features(env.tokenizer, x)[0]  # [C, T, h, w]
        cands += [feats[:, t].numpy() for t in range(env.context_frames - 1, feats.shape[1])]
    for o in obs:
        assert any(np.allclose(o, c, atol=1e-5) for c in cands)


# ------------------------------------------------------------------------------------- dynamics, seeds


@pytest.mark.parametrize("family,kind", CASES[:2])
def test_different_actions_from_the_same_context_give_different_observations(family: str, kind: str) -> None:
    model, tok = _model(family, _spec(kind))
    if getattr(model, "copy_gain", None) is not None:  # untrained, the AR copy bias repeats the last frame
        with torch.no_grad():                          # whatever the action: this test is about the plumbing
            model.copy_gain.zero_()
    clips = _clips(kind, n=1)
    sampling = Sampling(temperature=0.0) if family == "ar" else Sampling(steps=2)
    env = WorldModelEnv(model, tok, clips, num_envs=2, observation="latents", sampling=sampling, context_frames=2)
    _set_termination(env, -20.0)
    env.reset(seed=0)
    # both sub-envs start from the same window of the same clip and the same sampling noise
    rows_a = [np.array([0, 0]), np.array([1, 1])] if kind == "discrete" else [np.zeros((2, 2), np.float32)] * 2
    rows_b = [np.array([2, 2]), np.array([0, 0])] if kind == "discrete" else [np.ones((2, 2), np.float32)] * 2

    def run(seq: list[np.ndarray]) -> np.ndarray:
        env.reset(seed=7)
        return np.stack([env.step(a)[0] for a in seq])

    a, b, a_again = run(rows_a), run(rows_b), run(rows_a)
    np.testing.assert_array_equal(a, a_again)
    assert not np.allclose(a[-1], b[-1])


@pytest.mark.parametrize("family,kind", CASES[:2])
@pytest.mark.parametrize("observation", ["pixels", "latents"])
def test_reset_seed_is_reproducible(family: str, kind: str, observation: str) -> None:
    env = _env(family, kind, observation, num_envs=4)

    def episode(seed: int) -> list[np.ndarray]:
        out = [env.reset(seed=seed)[0]]
        for step in range(3):
            obs, reward, terminated, truncated, _ = env.step(_actions(env, step))
            out += [obs, reward, terminated, truncated]
        return out

    first, again, other = episode(3), episode(3), episode(4)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(first, other, strict=True))


def test_the_model_is_fed_a_sliding_window_of_context_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step conditions on exactly ``context_frames`` latent frames, the newest ones: past the model's
    ``max_frames`` the window slides instead of growing (the AR model refuses longer inputs)."""
    env = _env("ar", "discrete", num_envs=2, max_episode_steps=50)
    _set_termination(env, -20.0)
    assert env.context_frames == env.model.context_latents(1) == 3
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real = env.model.rollout

    def spy(context, num_frames, **kw):
        out = real(context, num_frames, **kw)
        calls.append((context.clone(), kw["actions"].clone(), out.clone()))
        return out

    monkeypatch.setattr(env.model, "rollout", spy)
    env.reset(seed=0)
    for step in range(8):  # 3 context + 8 new frames > max_frames = 4
        env.step(_actions(env, step))
    assert len(calls) == 8
    for (ctx, acts, out), (nxt, nxt_acts, _) in zip(calls, calls[1:], strict=False):
        assert env.model.num_frames(ctx) == 3 and acts.shape == (2, 3)
        torch.testing.assert_close(nxt, env.model.take_frames(out, 1))  # the oldest frame dropped out
        torch.testing.assert_close(nxt_acts[:, :2], acts[:, 1:])


# ------------------------------------------------------------------------------- termination, autoreset


@pytest.mark.parametrize("family,kind", CASES[:2])
def test_termination_from_the_head_ends_the_episode_and_next_step_autoreset_follows(family: str, kind: str) -> None:
    env = _env(family, kind, "latents", num_envs=3, max_episode_steps=6)
    env.reset(seed=0)
    _set_termination(env, 20.0)
    obs, reward, terminated, truncated, _ = env.step(_actions(env, 0))
    assert terminated.all() and not truncated.any()
    # next step: every sub-env resets (its action is ignored), reward 0, not done
    obs2, reward2, terminated2, truncated2, _ = env.step(_actions(env, 1))
    assert not terminated2.any() and not truncated2.any() and (reward2 == 0).all()
    fresh = WorldModelEnv(env.model, env.tokenizer, _clips(kind), num_envs=3, observation="latents",
                          sampling=env.sampling)
    cands = [fresh.reset(seed=s)[0] for s in range(40)]  # reset observations are context frames
    for o in obs2:
        assert any(np.allclose(o, c[i]) for c in cands for i in range(3))
    assert env.step(_actions(env, 2))[2].all()  # the head still says "terminal"
    _set_termination(env, -20.0)
    env.step(_actions(env, 3))  # autoreset
    for step in range(env.max_episode_steps - 1):
        assert not env.step(_actions(env, 4 + step))[3].any()


def test_truncation_at_max_episode_steps() -> None:
    env = _env("ar", "discrete", num_envs=2, max_episode_steps=3)
    _set_termination(env, -20.0)
    env.reset(seed=0)
    flags = [env.step(_actions(env, i))[2:4] for i in range(5)]
    assert [bool(tr.all()) for _, tr in flags] == [False, False, True, False, False]
    assert not any(te.any() for te, _ in flags)


def test_same_step_autoreset_returns_the_reset_observation_and_the_final_one_in_info() -> None:
    env = _env("diffusion", "continuous", "latents", num_envs=3, autoreset_mode=AutoresetMode.SAME_STEP)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    env.reset(seed=0)
    _set_termination(env, 20.0)
    obs, reward, terminated, truncated, info = env.step(_actions(env, 0))
    assert terminated.all() and info["_final_obs"].all()
    final = np.stack(list(info["final_obs"]))
    assert final.shape == obs.shape and not np.allclose(final, obs)
    obs2, reward2, terminated2, _, _ = env.step(_actions(env, 1))
    assert terminated2.all() and (reward2 != 0).all()  # stepped at once, no reset step in between


def test_reset_mask_resets_only_the_masked_sub_envs() -> None:
    env = _env("ar", "discrete", num_envs=3)
    _set_termination(env, -20.0)
    env.reset(seed=0)
    before = env.step(_actions(env, 0))[0]
    after, _ = env.reset(options={"reset_mask": np.array([False, True, False])})
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.zeros(3, bool)})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"seed": 3})


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_refusals_at_construction(family: str) -> None:
    model, tok = _model(family, _spec("discrete"), reward_head=False)
    with pytest.raises(ValueError, match="no reward head"):
        WorldModelEnv(model, tok, _clips("discrete"), num_envs=2)
    model, tok = _model(family, None)
    with pytest.raises(ValueError, match="no action conditioning"):
        WorldModelEnv(model, tok, _clips("discrete"), num_envs=2)
    model, tok = _model(family, _spec("discrete"))
    clips = _clips("discrete")
    with pytest.raises(ValueError, match="observation"):
        WorldModelEnv(model, tok, clips, num_envs=2, observation="state")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="contexts is empty"):
        WorldModelEnv(model, tok, [], num_envs=2)
    limit = model.context_latents(1)
    with pytest.raises(ValueError, match="context_frames"):
        WorldModelEnv(model, tok, clips, num_envs=2, context_frames=limit + 1)
    with pytest.raises(ValueError, match="at least"):  # 5 frames = 2 latent frames < 3
        WorldModelEnv(model, tok, _clips("discrete", frames=5), num_envs=2, context_frames=3)
    with pytest.raises(ValueError, match="frames must be uint8"):
        WorldModelEnv(model, tok, _clips("discrete", size=64), num_envs=2)
    bad = [ContextClip(clips[0].frames, clips[0].actions + 3)]  # ids past num_actions
    with pytest.raises(ValueError, match="actions must be"):
        WorldModelEnv(model, tok, bad, num_envs=2)
    with pytest.raises(ValueError, match="integer ids"):
        WorldModelEnv(model, tok, [ContextClip(clips[0].frames, clips[0].actions.astype(np.float32))], num_envs=2)


@pytest.mark.parametrize("family,kind", CASES[:2])
def test_refuses_actions_outside_the_action_space(family: str, kind: str) -> None:
    env = _env(family, kind, num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(_actions(env, 0))
    env.reset(seed=0)
    bad = [np.array([0, 3]), np.array([0]), np.array([0.5, 1.0])] if kind == "discrete" else \
        [np.full((2, 2), 1.5, np.float32), np.zeros((2, 3), np.float32), np.array([[0.0, np.nan]] * 2)]
    for a in bad:
        with pytest.raises(ValueError, match="action"):
            env.step(a)


def test_latent_sequences_from_a_dataset_serve_as_contexts() -> None:
    """Tokenized shards (``data.load_sequences``) hold latents and pooled actions already: used as they are."""
    model, tok = _model("diffusion", _spec("continuous"))
    with torch.no_grad():
        x = model.encode_video(tok, torch.rand(2, 3, 13, 32, 32) * 2 - 1)
    seqs = [LatentSequence(data=x[i], kind="continuous", actions=torch.rand(3, 2) * 2 - 1) for i in range(2)]
    env = WorldModelEnv(model, tok, seqs, num_envs=2, observation="pixels", sampling=Sampling(steps=1))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 32, 32, 3) and env.step(_actions(env, 0))[0].dtype == np.uint8
    with pytest.raises(ValueError, match="no actions"):
        WorldModelEnv(model, tok, [LatentSequence(data=x[0], kind="continuous")], num_envs=2)


# ------------------------------------------------------------------------------------ Stable-Baselines3


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_sb3_adapter_resets_finished_envs_at_once_and_keeps_the_last_observation(mode: AutoresetMode) -> None:
    env = _env("ar", "discrete", num_envs=2, autoreset_mode=mode)
    venv = SB3VecEnv(env)
    venv.seed(5)
    venv.reset()
    _set_termination(env, 20.0)
    obs, rewards, dones, infos = venv.step(np.array([0, 1]))
    assert dones.all() and rewards.dtype == np.float32 and len(infos) == 2
    for i, info in enumerate(infos):
        assert info["terminal_observation"].shape == obs[i].shape and info["TimeLimit.truncated"] is False
        assert not np.allclose(info["terminal_observation"], obs[i])
    _set_termination(env, -20.0)
    _, rewards, dones, _ = venv.step(np.array([2, 2]))  # a real step, not a pending reset
    assert not dones.any() and (rewards != 0).all()


def test_sb3_ppo_trains_on_latents_with_continuous_actions() -> None:
    from stable_baselines3 import PPO

    env = _env("diffusion", "continuous", "latents", num_envs=4, max_episode_steps=16)
    model = PPO("MlpPolicy", SB3VecEnv(env), n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    assert model.num_timesteps >= 256
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


def test_sb3_ppo_trains_a_cnn_policy_on_pixels_with_discrete_actions() -> None:
    from stable_baselines3 import PPO

    model, tok = _model("ar", _spec("discrete"), size=64, window=3)
    env = WorldModelEnv(model, tok, _clips("discrete", n=2, frames=9, size=64), num_envs=4, observation="pixels",
                        max_episode_steps=16)
    assert env.single_observation_space.shape == (64, 64, 3)
    ppo = PPO("CnnPolicy", SB3VecEnv(env), n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    before = [p.detach().clone() for p in ppo.policy.parameters()]
    ppo.learn(256)
    assert ppo.num_timesteps >= 256
    assert any(not torch.equal(a, b) for a, b in zip(before, ppo.policy.parameters(), strict=True))


def test_sb3_adapter_works_on_a_plain_gymnasium_vector_env() -> None:
    """The adapter is not specific to world models: a real CartPole SyncVectorEnv (next-step autoreset)."""
    venv = SB3VecEnv(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync"))
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (2, 4)
    finished = 0
    for _ in range(200):
        obs, _, dones, infos = venv.step(np.array([0, 0]))  # always left: episodes end within ~10 steps
        for i in np.flatnonzero(dones):
            finished += 1
            last = infos[i]["terminal_observation"]
            assert abs(last[2]) > 0.2 or abs(last[0]) > 2.4  # the pole fell (or the cart left): a terminal state
            assert abs(obs[i][2]) <= 0.05  # the returned observation is already the new episode's first
    assert finished >= 10
    venv.close()
