"""Generate service: tiny random-init tokenizers + world models in a LocalStore, served in-process and by the
real KServe model server (a subprocess bound to 127.0.0.1 on a free port)."""

from __future__ import annotations

import asyncio
import base64
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from worldloom.core.settings import StoreSettings
from worldloom.core.store import make_store
from worldloom.models.world import ARWorldModel, DiffusionWorldModel
from worldloom.models.world.registry import ModelNotReady
from worldloom.testkit.clips import put_clip
from worldloom.testkit.generate import GenerateServer
from worldloom.testkit.models import perturb, put_tokenizer, put_world_model, tiny_ar, tiny_dit

RES = 16  # 16x16 frames, 4x8x8 compression: 2x2 latent frames, tc = 4
TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _put_clip(store, clip_id: str, tmp: Path) -> None:
    from worldloom.video.mp4_writer import frames_to_mp4

    path = frames_to_mp4(_frames(13, seed=5), tmp / f"{clip_id}.mp4", 8.0)
    put_clip(store, clip_id, path, frames=13, fps=8.0, width=RES, height=RES, video_id="vid-1", source="test",
             config_hash="x")


def _frames(t: int, seed: int = 0, h: int = RES, w: int = RES) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def store_root():
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="wl-gen-test-") as tmp:
        root = Path(tmp) / "store"
        store = make_store(StoreSettings(kind="local", root=root))
        work = Path(tmp) / "work"
        work.mkdir()
        put_tokenizer(store, "tok-d", "discrete", work)
        put_tokenizer(store, "tok-c", "continuous", work)
        ar, dit = tiny_ar(), tiny_dit()
        put_world_model(store, "wm-ar", ar, "ar", "tok-d", work)
        put_world_model(store, "wm-dit", dit, "diffusion", "tok-c", work)
        put_world_model(store, "wm-queued", dit, "diffusion", "tok-c", work, state="queued")
        for mid, model in (("wm-ar-r", ARWorldModel(ar.config.replace(reward_head=True))),
                           ("wm-dit-r", DiffusionWorldModel(dit.config.replace(reward_head=True)))):
            perturb(model, 3)
            put_world_model(store, mid, model, "ar" if mid == "wm-ar-r" else "diffusion",
                            "tok-d" if mid == "wm-ar-r" else "tok-c", work)
        _put_clip(store, "clip-1", work)
        yield root


@pytest.fixture(scope="module")
def store(store_root):
    return make_store(StoreSettings(kind="local", root=store_root))


def _fake_embed(texts: list[str]) -> np.ndarray:
    return np.stack([np.random.default_rng(len(t)).standard_normal(384).astype(np.float32) for t in texts])


def _predictor(store, model_id: str, **kw):
    from worldloom.generate.predictor import WorldModelPredictor

    p = WorldModelPredictor(model_id, store, embed_text=_fake_embed, **kw)
    p.load()
    return p


def _infer(model: str, inputs: list, parameters: dict | None = None):
    from kserve import InferInput, InferRequest

    objs = []
    for name, datatype, arr in inputs:
        arr = np.asarray(arr, dtype=object) if datatype == "BYTES" else np.asarray(arr)
        shape = list(arr.shape)
        data = arr.reshape(-1).tolist()
        objs.append(InferInput(name=name, shape=shape, datatype=datatype, data=data))
    return InferRequest(model_name=model, infer_inputs=objs, parameters=parameters or {})


# ------------------------------------------------------------------------------------------- in process


def test_predictor_ar_in_process(store):
    from kserve.errors import InvalidInput

    p = _predictor(store, "wm-ar")
    assert p.engine.describe()["resolution"] == [RES, RES]
    # 5 context frames (2 latents) + 4 new frames (1 latent): 2 action rows per latent transition
    req = _infer("wm-ar", [("context_frames", "UINT8", _frames(5)), ("actions", "FP32", np.ones((2, 3))),
                           ("text", "BYTES", ["push the block"])], {"num_frames": 3, "seed": 7, "temperature": "0.9"})
    res = asyncio.run(p.predict(req))
    out = res.outputs[0]
    assert out.name == "frames" and out.datatype == "UINT8" and out.shape == [3, RES, RES, 3]
    assert out.as_numpy().dtype == np.uint8
    assert res.parameters["seed"] == 7 and res.parameters["context_frames_used"] == 5
    # 7 frames of another size: resized, the oldest 2 dropped; per-video-frame actions (7 + 4 - 1 rows) pooled
    req = _infer("wm-ar", [("context_frames", "UINT8", _frames(7, h=24, w=20)),
                           ("actions", "FP32", np.ones((10, 2)))], {"num_frames": 4, "seed": 1})
    res = asyncio.run(p.predict(req))
    assert res.outputs[0].shape == [4, RES, RES, 3] and res.parameters["context_frames_used"] == 5
    # without resizing, other sizes are refused; diffusion-only parameters are refused for AR models
    for inputs, params, why in [
        ([("context_frames", "UINT8", _frames(5, h=24))], {"num_frames": 4, "resize": False}, "trained at 16x16"),
        ([("context_frames", "UINT8", _frames(5))], {"num_frames": 4, "steps": 3}, "diffusion models"),
        ([("context_frames", "UINT8", _frames(5)), ("actions", "FP32", np.ones((4, 3)))], {"num_frames": 4},
         "action rows"),
        ([("context_frames", "UINT8", _frames(5)), ("actions", "FP32", np.ones((2, 4)))], {"num_frames": 4},
         "action width"),
    ]:
        with pytest.raises(InvalidInput, match=why):
            asyncio.run(p.predict(_infer("wm-ar", inputs, params)))


@pytest.mark.parametrize("model_id,actions", [("wm-ar-r", np.ones((2, 3))), ("wm-dit-r", np.array([1, 2]))])
def test_reward_heads_answer_rewards_per_predicted_latent_frame(store, model_id, actions):
    p = _predictor(store, model_id)
    inputs = [("context_frames", "UINT8", _frames(5)), ("actions", "FP32" if actions.dtype.kind == "f" else "INT64",
                                                        actions)]
    res = asyncio.run(p.predict(_infer(model_id, inputs, {"num_frames": 4, "seed": 3})))
    outs = {o.name: o for o in res.outputs}
    assert set(outs) == {"frames", "rewards", "termination_probs"}
    rewards, probs = outs["rewards"].as_numpy(), outs["termination_probs"].as_numpy()
    assert rewards.shape == probs.shape == (1,) and outs["rewards"].datatype == "FP32"  # 4 frames = 1 latent
    assert np.isfinite(rewards).all() and ((probs > 0) & (probs < 1)).all()
    again = asyncio.run(p.predict(_infer(model_id, inputs, {"num_frames": 4, "seed": 3})))
    assert np.array_equal({o.name: o for o in again.outputs}["rewards"].as_numpy(), rewards)
    plain = asyncio.run(_predictor(store, model_id.removesuffix("-r")).predict(
        _infer(model_id.removesuffix("-r"), inputs, {"num_frames": 4, "seed": 3})))
    assert [o.name for o in plain.outputs] == ["frames"]


def test_predictor_diffusion_clip_batch_and_determinism(store):
    p = _predictor(store, "wm-dit")
    inputs = [("clip_id", "BYTES", ["clip-1", "clip-1"]), ("actions", "INT64", [1, 2, 3])]
    params = {"num_frames": 6, "seed": 3, "steps": 2, "cfg_scale": "1.5"}
    a = asyncio.run(p.predict(_infer("wm-dit", inputs, params)))
    frames = a.outputs[0].as_numpy()
    assert frames.shape == (2, 6, RES, RES, 3)  # batched context -> batched output
    assert a.parameters["context_frames_used"] == 5  # DiT window: 2 context latents
    assert not np.array_equal(frames[0], frames[1])  # one generator: each batch row draws its own noise
    b = asyncio.run(p.predict(_infer("wm-dit", inputs, params)))
    assert np.array_equal(b.outputs[0].as_numpy(), frames)


def test_model_not_ready(store):
    from worldloom.generate.predictor import WorldModelPredictor

    with pytest.raises(ModelNotReady, match="queued"):
        WorldModelPredictor("wm-queued", store).load()


def test_settings_parse_model_ids(monkeypatch):
    from worldloom.generate.settings import GenerateSettings

    monkeypatch.setenv("WORLDLOOM_GENERATE_MODEL_IDS", "wm-a, wm-b")
    assert GenerateSettings().model_ids == ["wm-a", "wm-b"]
    monkeypatch.setenv("WORLDLOOM_GENERATE_MODEL_IDS", '["wm-c"]')
    assert GenerateSettings().model_ids == ["wm-c"]


# ---------------------------------------------------------------------------------------- real server


class _ServerClient(httpx.Client):
    """An HTTP client of the server that also knows the server's gRPC address."""

    grpc_address = ""


@pytest.fixture(scope="module")
def server(store_root):
    with GenerateServer(store_root, ["wm-ar", "wm-dit"], token=TOKEN, grpc=True,
                        env={"WORLDLOOM_GENERATE_LIMITS__MAX_CONTEXT_FRAMES": "9"}) as generate, \
            _ServerClient(base_url=generate.url, headers=AUTH, timeout=60) as client:
        client.grpc_address = generate.grpc_address
        yield client


def _v2(inputs: list, parameters: dict | None = None) -> dict:
    body: dict = {"inputs": [{"name": n, "datatype": d, "shape": list(np.shape(a)),
                              "data": np.asarray(a).reshape(-1).tolist()} for n, d, a in inputs]}
    if parameters:
        body["parameters"] = parameters
    return body


def test_server_probes_are_public_and_auth_is_required(server):
    base = str(server.base_url)
    assert httpx.get(f"{base}/v2/health/live").status_code == 200
    assert httpx.get(f"{base}/v2/models/wm-ar/ready").status_code == 200
    r = httpx.post(f"{base}/v2/models/wm-ar/infer", json=_v2([("context_frames", "UINT8", _frames(1))], {"num_frames": 1}))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = server.get("/v2/models/wm-dit")
    assert r.status_code == 200 and r.json()["name"] == "wm-dit"
    metrics = server.get("/metrics").text
    assert "request_predict_seconds" in metrics or "worldloom_http_requests_total" in metrics


@pytest.mark.parametrize("model,params", [("wm-ar", {"temperature": 1.0, "top_k": 32}),
                                          ("wm-dit", {"steps": 2, "cfg_scale": 1.0})])
def test_server_infer_deterministic_per_seed(server, model, params):
    ctx = _frames(5, seed=11)
    def infer(seed: int) -> np.ndarray:
        r = server.post(f"/v2/models/{model}/infer",
                        json=_v2([("context_frames", "UINT8", ctx)], {"num_frames": 4, "seed": seed, **params}))
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["name"] == "frames" and out["datatype"] == "UINT8" and out["shape"] == [4, RES, RES, 3]
        assert r.json()["parameters"]["seed"] == seed
        return np.asarray(out["data"], dtype=np.uint8).reshape(out["shape"])
    a, b, c = infer(5), infer(5), infer(6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_server_refuses_malformed_v2_requests_with_a_reason_and_stays_up(server):
    """Hand-written bad Open Inference Protocol requests: each a 4xx with a reason, none a 5xx."""
    ok = _frames(5)
    frames = {"name": "context_frames", "datatype": "UINT8", "shape": list(ok.shape),
              "data": ok.reshape(-1).tolist()}
    cases = {
        "wrong datatype": {"inputs": [{**frames, "datatype": "FP32"}], "parameters": {"num_frames": 4}},
        "shape/data mismatch": {"inputs": [{**frames, "data": frames["data"][:-7]}], "parameters": {"num_frames": 4}},
        "huge shape": {"inputs": [{**frames, "shape": [10**6, 10**6, 10**6, 3]}], "parameters": {"num_frames": 4}},
        "negative shape": {"inputs": [{**frames, "shape": [-5, RES, RES, 3]}], "parameters": {"num_frames": 4}},
        "NaN action": {"inputs": [frames, {"name": "actions", "datatype": "FP32", "shape": [2, 3],
                                           "data": [float("nan")] * 6}], "parameters": {"num_frames": 4}},
        "negative num_frames": {"inputs": [frames], "parameters": {"num_frames": -3}},
        "huge num_frames": {"inputs": [frames], "parameters": {"num_frames": 10**9}},
        "num_frames not a number": {"inputs": [frames], "parameters": {"num_frames": "many"}},
        "no inputs": {"inputs": [], "parameters": {"num_frames": 4}},
        "not json": None,
    }
    for why, body in cases.items():
        if body is None:
            r = server.post("/v2/models/wm-ar/infer", content=b"{not json", headers={"content-type": "application/json"})
        else:
            import json as _json

            r = server.post("/v2/models/wm-ar/infer", content=_json.dumps(body, allow_nan=True),
                            headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (why, r.status_code, r.text[:300])
        assert r.text.strip(), why  # a reason, not an empty answer
    r = server.post("/v2/models/wm-nope/infer", json=_v2([("context_frames", "UINT8", ok)], {"num_frames": 4}))
    assert r.status_code == 404, r.text
    assert server.get("/v2/health/ready").status_code == 200  # still serving
    r = server.post("/v2/models/wm-ar/infer", json=_v2([("context_frames", "UINT8", ok)], {"num_frames": 4, "seed": 1}))
    assert r.status_code == 200, r.text


def test_server_binary_output(server):
    r = server.post("/v2/models/wm-ar/infer", json=_v2([("context_frames", "UINT8", _frames(1))],
                                                        {"num_frames": 4, "seed": 1, "binary_data_output": True}))
    assert r.status_code == 200, r.text
    json_len = int(r.headers["inference-header-content-length"])
    assert len(r.content) - json_len == 4 * RES * RES * 3


@pytest.mark.parametrize("model,inputs,params,status,why", [
    ("wm-ar", [("context_frames", "UINT8", _frames(5))], {"num_frames": 999}, 400, "num_frames"),
    ("wm-ar", [("context_frames", "UINT8", _frames(13))], {"num_frames": 4}, 400, "context frames"),
    ("wm-ar", [("context_frames", "FP32", _frames(5).astype(np.float32))], {"num_frames": 4}, 400, "UINT8"),
    ("wm-ar", [("context_frames", "UINT8", _frames(5)[..., 0])], {"num_frames": 4}, 400, "[T, H, W, 3]"),
    ("wm-ar", [("context_frames", "UINT8", _frames(5)), ("prompt", "BYTES", ["x"])], {"num_frames": 4}, 400,
     "unknown input 'prompt'"),
    ("wm-ar", [("context_frames", "UINT8", _frames(5))], {"num_frames": 4, "sneed": 1}, 400, "unknown parameter"),
    ("wm-ar", [("context_frames", "UINT8", _frames(1))], None, 400, "num_frames' is required"),
    ("wm-dit", [("context_frames", "UINT8", _frames(5))], {"num_frames": 4, "steps": 10_000}, 400, "steps"),
    ("wm-dit", [("context_frames", "UINT8", _frames(5)), ("actions", "FP32", np.ones((2, 3)))], {"num_frames": 4},
     400, "discrete actions"),
    ("wm-dit", [("context_frames", "UINT8", _frames(5)), ("text", "BYTES", ["hi"])], {"num_frames": 4}, 400,
     "takes no text"),
    ("wm-dit", [("clip_id", "BYTES", ["no-such-clip"])], {"num_frames": 4}, 400, "no clip"),
    ("wm-nope", [("context_frames", "UINT8", _frames(1))], {"num_frames": 4}, 404, "wm-nope"),
])
def test_server_bad_inputs(server, model, inputs, params, status, why):
    r = server.post(f"/v2/models/{model}/infer", json=_v2(inputs, params))
    assert r.status_code == status, r.text
    assert why in r.json()["error"], r.text


def test_server_rejects_shape_data_mismatch_and_bad_json(server):
    body = {"inputs": [{"name": "context_frames", "datatype": "UINT8", "shape": [5, RES, RES, 3], "data": [1, 2, 3]}],
            "parameters": {"num_frames": 4}}
    r = server.post("/v2/models/wm-ar/infer", json=body)
    assert r.status_code == 400 and "does not match shape" in r.json()["error"]
    r = server.post("/v2/models/wm-ar/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


@pytest.mark.parametrize("fmt,magic", [("mp4", b"ftyp"), ("gif", b"GIF8")])
def test_server_video_route(server, fmt, magic):
    ctx = _frames(5, seed=3)
    body = {"context_frames": {"shape": list(ctx.shape), "b64": base64.b64encode(ctx.tobytes()).decode()},
            "num_frames": 8, "seed": 2, "format": fmt, "fps": 4, "actions": [[0.5, 0.5, 0.5]] * 3}
    r = server.post("/v1/models/wm-ar:video", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ("video/mp4" if fmt == "mp4" else "image/gif")
    assert r.headers["x-seed"] == "2" and r.headers["x-frames"] == "8"
    assert magic in r.content[:12]
    if fmt == "mp4":
        from worldloom.video.decode import read_frames

        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(r.content)
            f.flush()
            frames, _ = read_frames(f.name)
        assert frames.shape == (8, RES, RES, 3)


def test_server_video_route_errors(server):
    r = server.post("/v1/models/wm-nope:video", json={"clip_id": "clip-1", "num_frames": 4})
    assert r.status_code == 404
    r = server.post("/v1/models/wm-dit:video", json={"clip_id": "clip-1", "num_frames": 4, "format": "avi"})
    assert r.status_code == 422
    r = server.post("/v1/models/wm-dit:video", json={"clip_id": "clip-1", "num_frames": 4, "temperature": 0.5})
    assert r.status_code == 400 and "autoregressive" in r.json()["error"]
    r = server.post("/v1/models/wm-dit:video", json={"clip_id": "clip-1", "num_frames": 4, "steps": 2,
                                                     "format": "gif", "actions": [1, 2]})
    assert r.status_code == 200, r.text
    assert r.content[:4] == b"GIF8"


GRPC_AUTH = (("authorization", f"Bearer {TOKEN}"),)


def test_server_grpc_needs_the_token_except_for_probes(server):
    """Inference, model metadata and the model repository need the REST token on gRPC metadata."""
    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    async def run() -> None:
        client = InferenceGRPCClient(server.grpc_address)
        channel = grpc.aio.insecure_channel(server.grpc_address)
        try:
            frames = InferInput("context_frames", [5, RES, RES, 3], "UINT8")
            frames.set_data_from_numpy(_frames(5), binary_data=True)
            num = InferInput("num_frames", [1], "INT32")
            num.set_data_from_numpy(np.array([4], np.int32), binary_data=True)
            request = InferRequest(model_name="wm-ar", infer_inputs=[frames, num])
            for headers in (None, (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await client.infer(request, headers=headers)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, headers
                assert "bearer token" in err.value.details()
            stub = GRPCInferenceServiceStub(channel)
            for call, req in ((stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="wm-ar")),
                              (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="wm-ar")),
                              (stub.ModelMetadata, pb.ModelMetadataRequest(name="wm-ar"))):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(req)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert await client.is_server_live() and await client.is_server_ready()
            assert await client.is_model_ready("wm-ar")  # not unloaded by the refused call
            res = await client.infer(request, headers=GRPC_AUTH)
            assert res.outputs[0].shape == [4, RES, RES, 3]
        finally:
            await channel.close()
            await client.close()

    asyncio.run(run())


def test_server_grpc(server):
    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    def tensor(name: str, datatype: str, arr: np.ndarray) -> InferInput:
        inp = InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr, binary_data=True)
        return inp

    async def run() -> None:
        client = InferenceGRPCClient(server.grpc_address)
        try:
            inputs = [tensor("context_frames", "UINT8", _frames(5)), tensor("num_frames", "INT32", np.array([4], np.int32)),
                      tensor("seed", "INT64", np.array([9])), tensor("temperature", "FP32", np.array([0.7], np.float32))]
            res = await client.infer(InferRequest(model_name="wm-ar", infer_inputs=inputs), headers=GRPC_AUTH)
            assert res.outputs[0].shape == [4, RES, RES, 3] and res.outputs[0].as_numpy().dtype == np.uint8
            assert res.parameters["seed"].int64_param == 9
            bad = inputs[:2] + [tensor("prompt", "BYTES", np.array([b"x"], dtype=object))]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.infer(InferRequest(model_name="wm-ar", infer_inputs=bad), headers=GRPC_AUTH)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown input" in err.value.details()
        finally:
            await client.close()

    asyncio.run(run())


def test_build_predictors_fails_fast_or_skips(store_root):
    from worldloom.generate.app import build_predictors
    from worldloom.generate.settings import GenerateSettings

    settings = GenerateSettings(model_ids=["wm-dit", "wm-queued"], store={"root": store_root}, device="cpu",
                                preload_text_embedder=False)
    with pytest.raises(SystemExit, match="cannot serve model wm-queued: model wm-queued is queued"):
        build_predictors(settings)
    served = build_predictors(settings.model_copy(update={"skip_unloadable": True}))
    assert [p.name for p in served] == ["wm-dit"]


def test_lora_adapter_model_is_served_on_its_cached_base(tmp_path):
    """A LoRA post-trained model kept as an adapter (a new embodiment's 5-wide actions on a 3-wide base):
    the store holds only the adapter, the predictor builds base + adapter (no merged copy anywhere) with
    exactly the trained weights, and serves actions of the new width while the base refuses them."""
    import copy

    from kserve.errors import InvalidInput

    from worldloom.core.catalog import world_model_adapter_key, world_model_key
    from worldloom.models.checkpoint import publish_files
    from worldloom.models.posttrain import LoraOptions, prepare, resize_actions, save_adapter
    from worldloom.models.world import ActionSpec
    from worldloom.models.world.registry import (
        BASES,
        WorldModelLineage,
        WorldModelRecord,
        WorldModelRegistry,
        load_world_model,
        stored_weights_sha256,
    )

    store = make_store(StoreSettings(kind="local", root=tmp_path / "store"))
    put_tokenizer(store, "tok-d", "discrete", tmp_path)
    base = tiny_ar()
    put_world_model(store, "wm-base", base, "ar", "tok-d", tmp_path)
    child = copy.deepcopy(base)
    change = resize_actions(child, ActionSpec.continuous(5), resize=True)
    child, info = prepare(child, "lora", lora=LoraOptions(rank=2, alpha=4), new_modules=change.new_modules)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():  # "trained": the adapters and the new encoder moved
        for p in child.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    folder = tmp_path / "adapter"
    sha = stored_weights_sha256(store, world_model_key("wm-base"))
    save_adapter(folder / "adapter.safetensors", child, info, base_model="wm-base", base_sha256=sha)
    publish_files(store, folder, world_model_adapter_key("wm-lora").rsplit("/", 1)[0])
    WorldModelRegistry(store).save(WorldModelRecord(
        model_id="wm-lora", name="wm-lora", family="ar", config=child.config.to_dict(), state="succeeded",
        lineage=WorldModelLineage(tokenizer_id="tok-d", parent_model="wm-base", posttrain={"method": "lora"})))
    assert not store.exists(world_model_key("wm-lora"))

    loaded = load_world_model(store, "wm-lora")
    want = child.state_dict()
    got = loaded.model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    cached = len(BASES)  # the cache holds one base however many times its adapters load
    load_world_model(store, "wm-lora")
    assert len(BASES) == cached

    inputs = [("context_frames", "UINT8", _frames(5)), ("actions", "FP32", np.ones((2, 5)))]
    res = asyncio.run(_predictor(store, "wm-lora").predict(_infer("wm-lora", inputs, {"num_frames": 4, "seed": 2})))
    assert res.outputs[0].shape == [4, RES, RES, 3]
    with pytest.raises(InvalidInput, match="action width"):
        asyncio.run(_predictor(store, "wm-base").predict(_infer("wm-base", inputs, {"num_frames": 4})))
