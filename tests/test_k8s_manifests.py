"""The example Kubernetes manifests stay in step with the code: every WORLDLOOM_* variable they set is a
real setting that loads, ports and probes match the server, and the Ray version matches the pinned one.
(Schemas of the KServe / KubeRay CRDs are not checked here: no cluster or CRD schema is available offline.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "k8s"


def _load(name: str) -> dict:
    docs = list(yaml.safe_load_all((K8S / name).read_text()))
    assert len(docs) == 1
    return docs[0]


def test_inference_service_env_is_valid_generate_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from worldloom.generate.settings import GenerateSettings

    isvc = _load("kserve/generate-inferenceservice.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container" and container["command"][-1] == "worldloom.generate"
    for var in container["env"]:
        assert var["name"].startswith("WORLDLOOM_GENERATE_"), var
        monkeypatch.setenv(var["name"], var.get("value", "from-a-secret"))
    settings = GenerateSettings()  # extra="forbid": a misspelt variable fails here
    assert settings.model_ids and settings.device == "cuda" and settings.store.kind == "s3"
    port = settings.http.port
    assert [p["containerPort"] for p in container["ports"]] == [port]
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == port and get["path"] in ("/v2/health/ready", "/v2/health/live")
    limits = container["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_ray_cluster_matches_the_pinned_ray_and_the_services_settings() -> None:
    import ray

    from worldloom.tokenize.settings import TokenizeSettings
    from worldloom.train.settings import TrainSettings

    cluster = _load("kuberay/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["rayVersion"] == ray.__version__
    text = (K8S / "kuberay/raycluster.yaml").read_text()
    for prefix, cls in (("WORLDLOOM_TRAIN_", TrainSettings), ("WORLDLOOM_TOKENIZE_", TokenizeSettings)):
        names = re.findall(rf"{prefix}([A-Z_]+)=", text)
        assert names and all(_is_setting(cls, n) for n in names), names
    (gpu,) = cluster["spec"]["workerGroupSpecs"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def _is_setting(cls: type, name: str) -> bool:
    """``TRAINING__RAY_ADDRESS`` names a field of a nested settings block (``__`` is the delimiter)."""
    for part in name.lower().split("__"):
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return False
        cls = field.annotation
    return True
