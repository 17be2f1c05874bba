from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from worldloom.core.service import ApiError, create_app
from worldloom.core.settings import HttpSettings, ServiceSettings

TOKEN = "s3cret"


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def _client(ready: bool = True) -> TestClient:
    router = APIRouter(prefix="/v1")

    @router.post("/items")
    def create(item: Item) -> dict:
        return {"name": item.name}

    @router.get("/boom")
    def boom() -> dict:
        raise RuntimeError("secret internals")

    @router.get("/teapot")
    def teapot() -> dict:
        raise ApiError(409, "conflict", "already there")

    @router.post("/big")
    async def big(request: Request) -> dict:
        return {"n": len(await request.body())}

    settings = ServiceSettings(http=HttpSettings(api_tokens=TOKEN, max_body_bytes=100))
    app = create_app(
        "kit", settings, [router], readiness={"dep": lambda: ready},
        body_limits={("POST", "/v1/big"): 1000},
    )
    return TestClient(app, raise_server_exceptions=False)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_auth_required_except_health_metrics_docs():
    c = _client()
    r = c.post("/v1/items", json={"name": "a"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert c.post("/v1/items", json={"name": "a"}, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.post("/v1/items", json={"name": "a"}, headers=AUTH).json() == {"name": "a"}
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert c.get(path).status_code == 200, path


def test_readiness_reflects_dependencies():
    r = _client(ready=False).get("/readyz")
    assert r.status_code == 503 and r.json() == {"ready": False, "checks": {"dep": False}}


def test_one_error_shape_for_validation_unknown_fields_and_bad_json():
    c = _client()
    r = c.post("/v1/items", json={"name": "a", "extra": 1}, headers=AUTH)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and "extra" in err["message"] and err["request_id"]
    r = c.post("/v1/items", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]["message"]
    r = c.get("/v1/teapot", headers=AUTH)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = c.get("/v1/boom", headers=AUTH)
    assert r.status_code == 500 and "secret" not in r.text
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


def test_body_limits_default_and_per_route():
    c = _client()
    r = c.post("/v1/items", content=b'{"name": "' + b"x" * 200 + b'"}', headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert c.post("/v1/big", content=b"x" * 900, headers=AUTH).json() == {"n": 900}
    assert c.post("/v1/big", content=b"x" * 1001, headers=AUTH).status_code == 413

    def chunks():  # no content-length: the limit is enforced while streaming
        for _ in range(20):
            yield b"x" * 100

    assert c.post("/v1/big", content=chunks(), headers=AUTH).status_code == 413


def test_metrics_count_requests_by_route_and_status():
    c = _client()
    c.get("/v1/teapot", headers=AUTH)
    text = c.get("/metrics").text
    assert 'worldloom_http_requests_total{method="GET",route="/v1/teapot",service="kit",status="409"}' in text
    assert "worldloom_http_request_seconds_bucket" in text


def test_request_id_is_echoed():
    r = _client().get("/healthz", headers={"x-request-id": "abc123"})
    assert r.headers["x-request-id"] == "abc123"


def test_the_token_is_checked_before_the_body_is_read():
    c = _client()
    for body in (b"{not json", b'{"name": 1}', b"x" * 5000):  # malformed, invalid, oversized
        r = c.post("/v1/items", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", body[:20]
        assert r.headers["www-authenticate"] == "Bearer"
    r = c.post("/v1/items", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert c.get("/v1/nowhere").status_code == 401  # unknown paths say nothing to a stranger
    assert c.get("/v1/nowhere", headers=AUTH).status_code == 404


def test_security_headers_and_a_public_page():
    from fastapi.responses import HTMLResponse

    settings = ServiceSettings(http=HttpSettings(api_tokens=TOKEN))
    app = create_app("kit", settings, [], public_paths=("/",))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return "<html><body>hi</body></html>"

    c = TestClient(app)
    r = c.get("/")
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
    for path in ("/healthz", "/metrics", "/v1/anything"):
        assert c.get(path).headers["x-content-type-options"] == "nosniff", path
    assert "content-security-policy" not in c.get("/healthz").headers  # JSON: no page policy needed


def test_openapi_documents_the_error_answers_auth_and_metrics_format():
    spec = _client().get("/openapi.json").json()
    op = spec["paths"]["/v1/items"]["post"]
    for status in ("401", "404", "409", "413", "422"):
        ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody"), (status, ref)
    assert spec["components"]["schemas"]["ErrorDetail"]["required"] == ["code", "message"]
    assert op["security"] == [{"HTTPBearer": []}] and "HTTPBearer" in spec["components"]["securitySchemes"]
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert any(k.startswith("text/plain") for k in metrics), metrics


def test_hostile_json_and_store_key_errors_are_4xx_with_stable_codes():
    """Nesting 30,000 deep or a 5,000-digit number in a JSON body, and an InvalidKey from the store that
    reaches a route, are refusals with a code, never a 500 (the parser recursing, int() refusing)."""
    from worldloom.core.store.local import LocalStore

    router = APIRouter(prefix="/v1")

    class Doc(BaseModel):
        value: object = None

    @router.post("/docs")
    def post_doc(doc: Doc) -> dict:
        return {"ok": True}

    @router.get("/objects/{key:path}")
    def get_object(key: str) -> dict:
        return {"n": len(LocalStore("/tmp/wl-kit-test-store").get_bytes(key))}

    settings = ServiceSettings(http=HttpSettings(api_tokens=TOKEN, max_body_bytes=1 << 20))
    c = TestClient(create_app("kit", settings, [router]), raise_server_exceptions=False)
    json_headers = {**AUTH, "content-type": "application/json"}
    bodies = {
        "deep": b'{"value": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        "deep_objects": b'{"value": ' + b'{"a": ' * 2_000 + b"1" + b"}" * 2_000 + b"}",
        "long_int": b'{"value": ' + b"7" * 5_000 + b"}",
        "long_float": b'{"value": 0.' + b"1" * 5_000 + b"}",
    }
    for name, body in bodies.items():
        r = c.post("/v1/docs", content=body, headers=json_headers)
        assert r.status_code == 400, (name, r.status_code, r.text[:200])
        assert r.json()["error"]["code"] == "invalid_json", name
    deep_but_fine = b'{"value": ' + b"[" * 20 + b'"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["' + b"]" * 20 + b"}"
    assert c.post("/v1/docs", content=deep_but_fine, headers=json_headers).status_code == 200
    for key in ("%2E%2E/x", "a\\b", "%00x", "a//b"):
        r = c.get(f"/v1/objects/{key}", headers=AUTH)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_key", (key, r.text)


def test_scratch_left_by_killed_processes_is_removed_at_start_up_and_never_shown(tmp_path):
    """A process killed with SIGKILL leaves its wl-* scratch in the temp dir; the next service start on the
    host removes it (and nothing of a live process). Refusals never show the server's temp paths."""
    import signal
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from worldloom.core.scratch import scratch_prefix

    code = ("import sys, tempfile, time\nfrom worldloom.core.scratch import scratch_prefix\n"
            "d = tempfile.mkdtemp(prefix=scratch_prefix('curate'))\nopen(d + '/source', 'wb').write(b'x' * 1000)\n"
            "print(d, flush=True)\ntime.sleep(600)\n")
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    left = Path(worker.stdout.readline().strip())
    assert left.name.startswith("wl-curate-"), left
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    assert left.is_dir()  # kill -9 ran no cleanup
    mine = Path(tempfile.mkdtemp(prefix=scratch_prefix("curate")))  # a live process's scratch stays

    router = APIRouter(prefix="/v1")

    @router.get("/fail")
    def fail() -> dict:
        raise ApiError(422, "unreadable", f"The file {mine}/source cannot be read ([Errno 5] '{mine}/source').")

    c = TestClient(create_app("kit", ServiceSettings(http=HttpSettings(api_tokens=TOKEN)), [router]))
    try:
        assert not left.exists() and mine.is_dir()
        message = c.get("/v1/fail", headers=AUTH).json()["error"]["message"]
        assert str(mine) not in message and tempfile.gettempdir() not in message and "<temp file>" in message
    finally:
        mine.rmdir()
