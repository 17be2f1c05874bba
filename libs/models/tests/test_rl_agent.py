"""The imagination agent: lambda-returns, return normalisation, action sampling, policy checkpoints, learning
on a vector env with a known optimum, and training inside a tiny WorldModelEnv."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from worldloom.models.checkpoint import CheckpointError
from worldloom.models.rl import (
    Agent,
    AgentConfig,
    ImaginationConfig,
    ImaginationTrainer,
    ReturnNormalizer,
    encode_frames,
    evaluate,
    lambda_returns,
    load_policy,
    save_policy,
)
from worldloom.testkit.imagination import context_clips, tiny_env


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class SignEnv(gym.vector.VectorEnv):
    """A task with a known optimum and no world model: observations ~ N(0, 1)^4; an action whose sign
    matches ``obs[0]``'s earns 1 and the episode goes on (a new observation), a wrong one terminates it
    with 0; episodes are truncated after ``length`` steps. Optimal return ``length``; a random policy's
    is ``sum_k 0.5^k`` ~= 1."""

    def __init__(self, num_envs: int, kind: str, length: int = 10,
                 mode: AutoresetMode = AutoresetMode.NEXT_STEP) -> None:
        self.num_envs, self.kind, self.length, self.mode = num_envs, kind, length, mode
        self.metadata = {"autoreset_mode": mode}
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.single_action_space = (gym.spaces.Discrete(2) if kind == "discrete"
                                    else gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def _draw(self, rows: np.ndarray) -> None:
        self._obs[rows] = self.np_random.standard_normal((len(rows), 4)).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._obs = np.zeros((self.num_envs, 4), np.float32)
        self._t = np.zeros(self.num_envs, int)
        self._auto = np.zeros(self.num_envs, bool)
        self._draw(np.arange(self.num_envs))
        return self._obs.copy(), {}

    def step(self, actions):
        a = np.asarray(actions)
        assert a in self.action_space
        up = a == 1 if self.kind == "discrete" else a[:, 0] > 0
        right = up == (self._obs[:, 0] > 0)
        live = ~self._auto  # NEXT_STEP: a sub-env whose episode ended last step resets now
        reward = (right & live).astype(np.float32)
        term = ~right & live
        self._t[live] += 1
        trunc = live & ~term & (self._t >= self.length)
        done = term | trunc
        self._draw(np.flatnonzero(live & ~done))
        info: dict = {}
        if self.mode == AutoresetMode.SAME_STEP and done.any():
            final = np.full(self.num_envs, None, object)
            for i in np.flatnonzero(done):
                final[i] = self._obs[i].copy()
            info = {"final_obs": final, "_final_obs": done}
            self._draw(np.flatnonzero(done))
            self._t[done] = 0
        if self.mode == AutoresetMode.NEXT_STEP:
            self._draw(np.flatnonzero(self._auto))
            self._t[self._auto] = 0
            self._auto = done
        return self._obs.copy(), reward, term, trunc, info


def _agent(env: gym.vector.VectorEnv, seed: int = 0, **kw) -> Agent:
    torch.manual_seed(seed)
    return Agent(AgentConfig.for_spaces(env.single_observation_space, env.single_action_space, **kw))


# ------------------------------------------------------------------------------------------ lambda-returns


def test_lambda_returns_match_a_hand_computed_example_with_termination_and_truncation() -> None:
    """gamma 0.9, lambda 0.5, three envs over three steps: (0) no episode end, (1) terminated at step 1,
    (2) truncated at step 0 (bootstraps from the final observation's value and stops there)."""
    rewards = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
    next_values = torch.tensor([[10.0, 4.0, 2.0], [20.0, 8.0, 5.0], [30.0, 6.0, 7.0]])
    continues = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    boundaries = torch.tensor([[False, False, True], [False, True, False], [False, False, False]])
    got = lambda_returns(rewards, next_values, continues, boundaries, gamma=0.9, lam=0.5)
    # env 0: R2 = 3 + .9 * 30 = 30; R1 = 2 + .9 * (.5 * 20 + .5 * 30) = 24.5; R0 = 1 + .9 * (5 + 12.25)
    # env 1: R2 = 1 + .9 * 6 = 6.4; R1 = 1 (terminated: nothing after it); R0 = 1 + .9 * (.5 * 4 + .5 * 1)
    # env 2: R2 = .9 * 7 = 6.3; R1 = .9 * (.5 * 5 + .5 * 6.3) = 5.085; R0 = .9 * 2 = 1.8 (truncated)
    want = torch.tensor([[16.525, 3.25, 1.8], [24.5, 1.0, 5.085], [30.0, 6.4, 6.3]])
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_lambda_returns_reduce_to_monte_carlo_and_one_step_td() -> None:
    g = torch.Generator().manual_seed(0)
    r, v = torch.rand(5, 3, generator=g), torch.rand(5, 3, generator=g)
    c, b = torch.ones(5, 3), torch.zeros(5, 3, dtype=torch.bool)
    mc = lambda_returns(r, v, c, b, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(mc[0].numpy(), (r.sum(0) + v[-1]).numpy(), rtol=1e-6)  # all rewards, then the value at the horizon
    td = lambda_returns(r, v, c, b, gamma=0.9, lam=0.0)
    np.testing.assert_allclose(td.numpy(), (r + 0.9 * v).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="must all be"):
        lambda_returns(r, v[:-1], c, b, gamma=0.9, lam=0.5)


# ----------------------------------------------------------------------------------- return normalisation


def test_return_scale_is_an_ema_of_the_percentile_range_and_never_amplifies() -> None:
    norm = ReturnNormalizer(decay=0.99)
    assert norm.scale is None and norm.divisor == 1.0
    assert norm.update(torch.linspace(0.0, 10.0, 1001)) == pytest.approx(9.0)  # P95 - P5; the first batch sets S
    assert norm.update(torch.linspace(0.0, 0.5, 1001)) == pytest.approx(0.99 * 9.0 + 0.01 * 0.45)
    outlier = torch.zeros(1000)
    outlier[0] = 1e6  # one huge return moves neither percentile
    assert norm.update(outlier) == pytest.approx(0.99 * (0.99 * 9.0 + 0.01 * 0.45))
    small = ReturnNormalizer()
    small.update(torch.linspace(0.0, 0.5, 101))
    assert small.scale == pytest.approx(0.45) and small.divisor == 1.0  # small returns are not scaled up


def test_trainer_divides_advantages_by_the_return_scale() -> None:
    """Rewards x100 give returns 100x wider; the scale follows, so the actor's loss stays the same size."""
    class Scaled(SignEnv):
        def step(self, actions):
            obs, r, term, trunc, info = super().step(actions)
            return obs, r * 100.0, term, trunc, info

    losses = {}
    for name, env in (("plain", SignEnv(8, "discrete")), ("x100", Scaled(8, "discrete"))):
        trainer = ImaginationTrainer(_agent(env), env, ImaginationConfig(horizon=8, entropy=0.0))
        m = trainer.train(3)
        losses[name] = (np.mean([abs(x.actor_loss) for x in m]), m[-1].return_scale)
    assert losses["x100"][1] == pytest.approx(100 * losses["plain"][1], rel=0.2)
    assert losses["x100"][0] < 5 * losses["plain"][0]


# ------------------------------------------------------------------------------------------------ actions


@pytest.mark.parametrize("space", [gym.spaces.Discrete(5), gym.spaces.Box(-2.0, 3.0, (3,), np.float32)])
def test_sampled_and_deterministic_actions_lie_in_the_action_space(space: gym.Space) -> None:
    obs_space = gym.spaces.Box(-np.inf, np.inf, (3, 2, 2), np.float32)
    torch.manual_seed(0)
    agent = Agent(AgentConfig.for_spaces(obs_space, space, hidden=32))
    with torch.no_grad():  # a wide policy: means near the bounds and samples past them get clipped
        agent.actor[-1].weight.normal_(0.0, 3.0)
    obs = np.random.default_rng(0).standard_normal((500, 3, 2, 2)).astype(np.float32)
    acts = agent.act(obs, generator=torch.Generator().manual_seed(0))
    assert all(a in space for a in acts)
    if isinstance(space, gym.spaces.Discrete):
        assert acts.dtype == np.int64 and set(acts.tolist()) == set(range(5))  # every action is reachable
    else:
        assert acts.dtype == np.float32 and acts.shape == (500, 3)
        assert (acts == 3.0).any() and (acts == -2.0).any() and ((acts > -2.0) & (acts < 3.0)).any()
    det = agent.act(obs, deterministic=True)
    assert all(a in space for a in det)
    np.testing.assert_array_equal(det, agent.act(obs, deterministic=True))
    one = agent.act(obs[0], deterministic=True)
    assert one in space
    np.testing.assert_array_equal(one, det[0])
    same = agent.act(obs, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(acts, same)  # the generator decides the noise
    with pytest.raises(ValueError, match="observations must be"):
        agent.act(obs[:, :2])


def test_spaces_the_agent_cannot_handle_are_refused() -> None:
    box = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    with pytest.raises(ValueError, match="float Box observations"):
        AgentConfig.for_spaces(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="Discrete or 1-D Box"):
        AgentConfig.for_spaces(box, gym.spaces.MultiDiscrete([2, 3]))
    with pytest.raises(ValueError, match="Discrete or 1-D Box"):
        AgentConfig.for_spaces(box, gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32))
    with pytest.raises(ValueError, match="one bound"):
        AgentConfig.for_spaces(box, gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 1.0], np.float32)))
    with pytest.raises(ValueError, match="finite"):
        AgentConfig.for_spaces(box, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    with pytest.raises(ValueError, match="num_actions >= 2"):
        AgentConfig.for_spaces(box, gym.spaces.Discrete(1))
    env = SignEnv(2, "discrete")
    other = Agent(AgentConfig.for_spaces(env.single_observation_space, gym.spaces.Discrete(3)))
    with pytest.raises(ValueError, match="do not match"):
        ImaginationTrainer(other, env)
    with pytest.raises(ValueError, match="unknown AgentConfig fields"):
        AgentConfig.from_dict({**AgentConfig(num_actions=2).to_dict(), "hiden": 3})


# -------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_save_then_load_gives_identical_actions_from_a_safetensors_file(kind: str, tmp_path: Path) -> None:
    env = SignEnv(4, kind)
    agent = _agent(env, hidden=32)
    ImaginationTrainer(agent, env, ImaginationConfig(horizon=4)).train(2)  # weights off their init
    path = save_policy(tmp_path / "policy.safetensors", agent, step=2, extra={"note": "test"})
    raw = path.read_bytes()
    assert raw[8:9] == b"{" and not raw.startswith(b"PK") and not raw.startswith(b"\x80")  # safetensors framing
    assert not list(tmp_path.glob("*.pt")) and (tmp_path / "policy.json").is_file()
    loaded = load_policy(path)
    assert loaded.config == agent.config
    obs = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    for a, b in zip(agent.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_load_policy_from_a_store_and_refusals(tmp_path: Path) -> None:
    from worldloom.core.store.local import LocalStore
    from worldloom.models.checkpoint import publish_files

    env = SignEnv(2, "discrete")
    agent = _agent(env, hidden=16)
    save_policy(tmp_path / "ckpt" / "policy.safetensors", agent)
    store = LocalStore(tmp_path / "store")
    publish_files(store, tmp_path / "ckpt", "policies/p1")
    loaded = load_policy(store, "policies/p1/policy.safetensors")
    obs = np.random.default_rng(2).standard_normal((16, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    with pytest.raises(ValueError, match="needs the weights' key"):
        load_policy(store)
    pickled = tmp_path / "pickled.safetensors"
    torch.save(agent.state_dict(), pickled)
    with pytest.raises(CheckpointError, match="pickle"):
        load_policy(pickled)
    tampered = tmp_path / "ckpt" / "policy.safetensors"
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_policy(tampered)


def test_trainer_checkpoint_resumes_weights_optimizer_iteration_and_return_scale(tmp_path: Path) -> None:
    env = SignEnv(4, "continuous")
    trainer = ImaginationTrainer(_agent(env, hidden=16), env, ImaginationConfig(horizon=4))
    trainer.train(3)
    path = trainer.save(tmp_path / "trainer.safetensors")
    assert (tmp_path / "trainer.optim.safetensors").is_file()
    fresh = ImaginationTrainer(_agent(env, seed=1, hidden=16), env, ImaginationConfig(horizon=4))
    assert fresh.restore(path) == 3 and fresh.iteration == 3
    assert fresh.normalizer.scale == trainer.normalizer.scale is not None
    for a, b in zip(trainer.agent.state_dict().values(), fresh.agent.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    mine, theirs = trainer.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k]["exp_avg"], theirs[k]["exp_avg"]) for k in mine)
    assert fresh.train(1)[0].iteration == 4
    obs = np.random.default_rng(3).standard_normal((8, 4)).astype(np.float32)
    np.testing.assert_array_equal(load_policy(path).act(obs, deterministic=True),
                                  trainer.agent.act(obs, deterministic=True))  # a policy checkpoint too
    with pytest.raises(CheckpointError, match="without trainer state"):
        fresh.restore(save_policy(tmp_path / "policy.safetensors", trainer.agent))
    other = ImaginationTrainer(_agent(env, hidden=32), env)
    with pytest.raises(CheckpointError, match="config differs"):
        other.restore(path)


# --------------------------------------------------------------------------------------------- learning


@pytest.mark.parametrize("kind,mode", [("discrete", AutoresetMode.NEXT_STEP), ("continuous", AutoresetMode.SAME_STEP)])
def test_agent_learns_the_sign_task_far_better_than_random(kind: str, mode: AutoresetMode) -> None:
    """100 iterations of 16 envs x 16 steps; the stochastic policy's mean return over 200 fresh episodes
    must beat the untrained (uniform / centred) policy's by a wide margin (random ~1, optimum 10)."""
    env = SignEnv(16, kind, mode=mode)
    agent = _agent(env, hidden=64)
    random_returns = evaluate(agent, SignEnv(8, kind, mode=mode), 200, deterministic=False, seed=1)
    seen = []
    metrics = ImaginationTrainer(agent, env, ImaginationConfig(horizon=16, actor_lr=1e-3, critic_lr=1e-3)).train(
        100, progress=seen.append)
    assert seen == metrics and len(metrics) == 100 and [m.iteration for m in metrics] == list(range(1, 101))
    trained = evaluate(agent, SignEnv(8, kind, mode=mode), 200, deterministic=False, seed=2)
    assert len(random_returns) == len(trained) == 200
    print(f"{kind}: random {np.mean(random_returns):.2f}, trained {np.mean(trained):.2f}, "
          f"greedy {np.mean(evaluate(agent, SignEnv(8, kind, mode=mode), 200, seed=3)):.2f}")
    assert np.mean(random_returns) < 2.0
    assert np.mean(trained) > np.mean(random_returns) + 4.0
    assert metrics[-1].entropy < metrics[0].entropy  # the policy sharpened
    last = metrics[-10:]
    assert np.mean([m.episode_return for m in last if m.episode_return is not None]) > 4.0


@pytest.mark.parametrize("kind,mode", [("discrete", AutoresetMode.NEXT_STEP), ("continuous", AutoresetMode.SAME_STEP)])
def test_evaluate_refuses_to_run_past_max_steps(kind: str, mode: AutoresetMode) -> None:
    """An agent that is always right never ends a 50-step episode, so 5 steps must raise. (This was asked
    of the trained agent, which is only mostly right: on unseeded draws it sometimes ended the episode
    within 5 steps, and a fresh-clone run failed that way.)"""
    env = SignEnv(1, kind, length=50, mode=mode)
    agent = _agent(env, hidden=16)

    def oracle(obs: np.ndarray, **_: object) -> np.ndarray:
        up = obs[:, 0] > 0
        return up.astype(np.int64) if kind == "discrete" else np.where(up, 0.5, -0.5)[:, None].astype(np.float32)

    agent.act = oracle  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="did not end within 5 steps"):
        evaluate(agent, env, 1, max_steps=5, seed=0)
    assert evaluate(agent, SignEnv(1, kind, length=3, mode=mode), 2, max_steps=10, seed=0) == [3.0, 3.0]


# ----------------------------------------------------------------------------------- inside a world model


@pytest.mark.parametrize("family,kind", [("ar", "discrete"), ("diffusion", "continuous")])
def test_trainer_runs_inside_a_world_model_env_and_acts_on_real_frames(family: str, kind: str) -> None:
    env = tiny_env(family, kind, "latents", num_envs=3, max_episode_steps=4)
    agent = _agent(env, hidden=32)
    before = [p.detach().clone() for p in agent.actor.parameters()]
    metrics = ImaginationTrainer(agent, env, ImaginationConfig(horizon=5)).train(2)
    assert len(metrics) == 2
    for m in metrics:
        assert 0 < m.imagined_steps <= 15 and m.imagined_steps_per_s > 0
        assert all(np.isfinite([m.imagined_return, m.actor_loss, m.critic_loss, m.entropy, m.return_scale]))
    assert metrics[-1].episodes >= 3  # episodes of 4 steps ended within 10 steps per sub-env
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.actor.parameters(), strict=True))
    # real frames -> the tokenizer's latents: what the env shows for the same frames in imagination
    clip = context_clips(kind)[0]
    with torch.no_grad():
        x = env.model.encode_video(env.tokenizer, torch.as_tensor(clip.frames).permute(3, 0, 1, 2)[None].float()
                                   .div(127.5).sub(1.0))
        feats = env.model.latent_features(env.tokenizer, x)[0]  # [C, T, h, w]
    latents = encode_frames(env.model, env.tokenizer, clip.frames[:9])  # 1 + 2 * tc frames: latent frame 2
    assert latents.shape == env.single_observation_space.shape and latents.dtype == np.float32
    np.testing.assert_allclose(latents, feats[:, 2].numpy(), atol=1e-4)
    batch = encode_frames(env.model, env.tokenizer, np.stack([clip.frames[:9], clip.frames[2:11]]))
    np.testing.assert_allclose(batch[0], latents, atol=1e-5)
    act = agent.act_on_frames(clip.frames[:9], env.model, env.tokenizer, deterministic=True)
    assert act in env.single_action_space
    np.testing.assert_array_equal(act, agent.act(latents, deterministic=True))
    with pytest.raises(ValueError, match="frames must be uint8"):
        encode_frames(env.model, env.tokenizer, clip.frames[:, :16])
