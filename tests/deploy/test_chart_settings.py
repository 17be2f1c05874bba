"""The chart stays in step with the code: every WORLDLOOM_* variable it renders loads into the service's
settings class (extra="forbid": a misspelt variable fails), the Strimzi topics are the code's topics and
their DLQs, the KEDA consumer groups and topics are the consumers' own, and the Ray and KServe pieces
match the pinned Ray and the model server's settings."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import typing

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from worldloom.core import events
from worldloom.core.settings import SettingsError, load_settings
from worldloom.testkit.chart import PROFILES, component, kinds, service_pods, values

FROM_A_SECRET = "from-a-secret"
GPU_KEY = "nvidia.com/gpu"


def settings_class(service: str) -> type[BaseSettings]:
    """The service's settings class: the one in worldloom.<service>.settings with its env prefix."""
    module = importlib.import_module(f"worldloom.{service}.settings")
    prefix = f"WORLDLOOM_{service.upper()}_"
    (cls,) = {c for c in vars(module).values() if isinstance(c, type) and issubclass(c, BaseSettings)
              and c.model_config.get("env_prefix") == prefix}
    return cls


def is_field(model: type[BaseModel], name: str) -> bool:
    """Whether NAME (after the prefix, blocks joined by "__") is a field of the settings class.

    pydantic-settings ignores a top-level variable that names no field (only nested blocks forbid
    extras), so a misspelt WORLDLOOM_INGEST_MAX_UPLOD_BYTES would load silently: check it here."""
    head, _, rest = name.lower().partition("__")
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    for candidate in (field.annotation, *typing.get_args(field.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return is_field(candidate, rest)
        if typing.get_origin(candidate) is dict or candidate is dict:
            return True  # a dict setting takes any key
    return False


def load_rendered(service: str, container: dict, monkeypatch: pytest.MonkeyPatch) -> BaseSettings:
    """Loads the container's environment into the settings class as the service does at start-up,
    after checking that every variable names a field."""
    for name in [n for n in os.environ if n.startswith("WORLDLOOM_")]:
        monkeypatch.delenv(name)
    prefix = f"WORLDLOOM_{service.upper()}_"
    for var in container["env"]:
        if var["name"].startswith("WORLDLOOM_"):
            assert var["name"].startswith(prefix), f"{service} gets another service's variable {var['name']}"
            if not is_field(settings_class(service), var["name"].removeprefix(prefix)):
                raise SettingsError(f"{var['name']} is not a setting of {settings_class(service).__name__}")
            # a Secret's value is the cluster's; any string loads the same way
            monkeypatch.setenv(var["name"], var.get("value", FROM_A_SECRET))
    return load_settings(settings_class(service))


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_every_rendered_setting_loads_into_its_service_settings_class(render, monkeypatch, profile):
    docs = render(profile)
    pods = service_pods(docs)
    assert pods
    v = values(profile)
    for service, pod in pods.items():
        (container,) = pod["containers"]
        settings = load_rendered(service, container, monkeypatch)
        # the chart's own derivations, as the service reads them
        assert settings.http.host == "0.0.0.0" and settings.http.port == container["ports"][0]["containerPort"]
        assert settings.http.tokens() == [FROM_A_SECRET]
        if settings.bus.kind == "kafka":
            assert settings.bus.bootstrap_servers in (
                v["kafka"]["external"]["bootstrapServers"], "wl-worldloom-kafka-kafka-bootstrap:9092")
        assert settings.store.kind == "s3" and settings.store.bucket == v["objectStore"]["bucket"]
        assert settings.store.secret_key.get_secret_value() == FROM_A_SECRET
        for key, value in v["services"][service].get("settings", {}).items():
            if not isinstance(value, dict):
                assert getattr(settings, key) == value, (service, key)


def test_a_misspelt_setting_fails_the_check(render, monkeypatch):
    docs = render(None, "--set", "services.ingest.settings.max_uplod_bytes=10")
    (container,) = service_pods(docs)["ingest"]["containers"]
    with pytest.raises(SettingsError, match="WORLDLOOM_INGEST_MAX_UPLOD_BYTES"):
        load_rendered("ingest", container, monkeypatch)
    docs = render(None, "--set", "services.ingest.settings.limits.max_widht=10")
    (container,) = service_pods(docs)["ingest"]["containers"]
    with pytest.raises(SettingsError, match="WORLDLOOM_INGEST_LIMITS__MAX_WIDHT"):
        load_rendered("ingest", container, monkeypatch)


def test_a_secret_setting_is_rendered_from_its_secret(render, monkeypatch):
    (container,) = service_pods(render("gpu"))["curate"]["containers"]
    (var,) = [e for e in container["env"] if e["name"] == "WORLDLOOM_CURATE_VLM_API_KEY"]
    assert var["valueFrom"]["secretKeyRef"] == {"name": "worldloom-vlm", "key": "api_key"}
    assert load_rendered("curate", container, monkeypatch).vlm_api_key.get_secret_value() == FROM_A_SECRET


# ------------------------------------------------------------------------------ topics and groups


def code_topics() -> set[str]:
    return {value for name, value in vars(events).items() if name.startswith("TOPIC_")}


@pytest.mark.parametrize("profile", PROFILES)
def test_strimzi_topics_are_the_code_topics_and_their_dlqs(render, profile):
    docs = render(profile)
    topics = {t["spec"]["topicName"] for t in kinds(docs, "KafkaTopic")}
    if values(profile)["kafka"]["mode"] != "strimzi":
        assert not topics
        return
    assert topics == code_topics() | {events.dlq_topic(t) for t in code_topics()}
    (kafka,) = kinds(docs, "Kafka")
    for topic in kinds(docs, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]


def consumed_topics(service: str) -> set[str]:
    """The topics the service's app subscribes to: `consuming(bus, [events.TOPIC_...], ...)` (the kit's
    consumer for the life of the app) or `bus.consumer([events.TOPIC_...], ...)` in app.py."""
    source = open(importlib.util.find_spec(f"worldloom.{service}.app").origin).read()
    calls = re.findall(r"(?:\.consumer\(|\bconsuming\(\s*\w+,)\s*\[([^\]]*)\]", source)
    assert calls, f"no consuming(bus, [...]) or bus.consumer([...]) call in worldloom.{service}.app"
    return {getattr(events, name) for call in calls for name in re.findall(r"events\.(TOPIC_[A-Z_]+)", call)}


def test_keda_scales_each_consumer_on_its_own_group_and_topics(render, monkeypatch):
    docs = render("gpu")
    pods = service_pods(docs)
    consumers = {s for s in pods if "consumer_group" in settings_class(s).model_fields}
    scaled = {component(o): o for o in kinds(docs, "ScaledObject")}
    assert set(scaled) == consumers == {"curate", "tokenize"}
    for service, obj in scaled.items():
        settings = load_rendered(service, pods[service]["containers"][0], monkeypatch)
        assert settings.consumer_group == settings_class(service).model_fields["consumer_group"].default
        triggers = obj["spec"]["triggers"]
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {settings.consumer_group}
        assert {t["metadata"]["topic"] for t in triggers} == consumed_topics(service)
        assert {t["metadata"]["bootstrapServers"] for t in triggers} == {settings.bus.bootstrap_servers}
        assert obj["spec"]["scaleTargetRef"]["name"] == f"wl-worldloom-{service}"
        assert "replicas" not in next(d for d in kinds(docs, "Deployment") if component(d) == service)["spec"]


def test_the_consumer_blocks_in_values_name_the_code_topics():
    for service, block in values()["services"].items():
        if "consumer" in block:
            assert set(block["consumer"]["topics"]) == consumed_topics(service), service
            assert block["consumer"]["group"] == settings_class(service).model_fields["consumer_group"].default


# ---------------------------------------------------------------------------------- KubeRay, KServe


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_ray_cluster_runs_the_pinned_ray_and_the_job_services_point_at_it(render, monkeypatch, profile):
    import ray

    docs = render(profile)
    (cluster,) = kinds(docs, "RayCluster")
    assert cluster["spec"]["rayVersion"] == ray.__version__
    head_service = f"{cluster['metadata']['name']}-head-svc"  # KubeRay's name for the head's Service
    pods = service_pods(docs)
    gpu_groups = any(GPU_KEY in str(g["template"]) for g in cluster["spec"]["workerGroupSpecs"])
    for service in ("tokenize", "train", "posttrain"):
        settings = load_rendered(service, pods[service]["containers"][0], monkeypatch)
        assert settings.training.ray_address == f"ray://{head_service}:10001"
        assert settings.training.allow_gpu is gpu_groups
    for job in kinds(docs, "RayJob"):
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
        assert job["spec"]["entrypoint"]



@pytest.mark.parametrize("profile", ["cpu", "gpu", "external"])
def test_inference_service_runs_the_model_server_with_its_settings(render, monkeypatch, profile):
    docs = render(profile)
    (isvc,) = kinds(docs, "InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container" and container["command"][-1] == "worldloom.generate"
    settings = load_rendered("generate", container, monkeypatch)
    assert settings.model_ids == values(profile)["services"]["generate"]["settings"]["model_ids"]
    assert settings.device == ("cuda" if GPU_KEY in container["resources"]["limits"] else "cpu")
    assert [p["containerPort"] for p in container["ports"]] == [settings.http.port]
    kserve = values(profile)["services"]["generate"]["kserve"]
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode == kserve["deploymentMode"]
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (kserve["minReplicas"], kserve["maxReplicas"])
    assert predictor["scaleMetric"] in (("cpu", "memory") if mode == "Standard" else ("concurrency", "rps"))


def test_the_rayjobs_the_services_launch_are_valid_and_under_the_charts_network_policies(render, monkeypatch,
                                                                                      kubeconform, k8s_schemas):
    """The launcher builds RayJobs at run time from the settings the chart renders; such an object is valid
    against the offline KubeRay schema and its pods are selected by the default deny and the rayjob policy."""
    import yaml

    from worldloom.core.jobs import WorkerSpec
    from worldloom.core.jobs.rayjob import RayJobLauncher
    from worldloom.models.training.driver import ENTRYPOINT
    from worldloom.testkit.chart import kubeconform_run

    docs = render("rayjob")
    policies = kinds(docs, "NetworkPolicy")
    for service in ("tokenize", "train", "posttrain"):
        settings = load_rendered(service, service_pods(docs)[service]["containers"][0], monkeypatch)
        assert settings.training.launcher == "rayjob" and settings.training.ray_address is None
        launcher = RayJobLauncher(settings.training.rayjob, settings.store, ENTRYPOINT)
        for gpu in (False, True):
            obj = launcher.manifest(WorkerSpec(job_id=f"{service}-0123456789ab", loop="worldloom.x:loop", config={},
                                               plan_key="p/plan.json", workers=2, use_gpu=gpu))
            result = kubeconform_run(kubeconform, k8s_schemas, yaml.safe_dump(obj))
            assert result.returncode == 0 and "Valid: 1" in result.stdout, result.stdout
            cluster = obj["spec"]["rayClusterSpec"]
            pods = [cluster["headGroupSpec"]["template"], obj["spec"]["submitterPodTemplate"],
                    *(g["template"] for g in cluster["workerGroupSpecs"])]
            for pod in pods:
                labels = pod["metadata"]["labels"]
                selected = {p["metadata"]["name"] for p in policies
                            if all(labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())}
                assert selected == {"wl-worldloom-default-deny", "wl-worldloom-rayjob"}, (labels, selected)
            assert obj["metadata"]["namespace"] == settings.training.rayjob.namespace
