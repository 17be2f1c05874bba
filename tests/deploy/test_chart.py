"""The Helm chart, checked offline with the real tools: `helm lint --strict`, `helm template` for every
values profile, every rendered manifest validated by kubeconform -strict against the Kubernetes 1.35
and operator CRD schemas, and the rendered output held to the rules (probes, resources, security,
GPU pools, NetworkPolicies, routes, monitoring, refusals)."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml

from worldloom.testkit.chart import (
    CHART,
    PROFILES,
    RELEASE,
    code_dependencies,
    component,
    kinds,
    kubeconform_run,
    pod_templates,
    profile_args,
    service_pods,
    values,
)

FULLNAME = f"{RELEASE}-worldloom"
GPU = "nvidia.com/gpu"
JOB_SERVICES = ("tokenize", "train", "posttrain")  # the services that launch training jobs


def enabled_services(profile: str | None) -> list[str]:
    return sorted(name for name, block in values(profile)["services"].items() if block.get("enabled"))


# ------------------------------------------------------------------------------------------- the tools


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_helm_lint_strict(helm, profile):
    result = subprocess.run([str(helm), "lint", "--strict", str(CHART), *profile_args(profile)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_every_manifest_is_valid_against_the_offline_schemas(template, kubeconform, k8s_schemas, profile):
    rendered = template(profile)
    assert rendered.returncode == 0, rendered.stderr
    result = kubeconform_run(kubeconform, k8s_schemas, rendered.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout


def test_kubeconform_refuses_a_wrong_api_version_and_an_unknown_field(render, kubeconform, k8s_schemas):
    """The validation is strict and complete: no kind slips through as 'skipped'."""
    docs = render("cpu")
    topic = copy.deepcopy(kinds(docs, "KafkaTopic")[0])
    topic["apiVersion"] = "kafka.strimzi.io/v1beta3"
    result = kubeconform_run(kubeconform, k8s_schemas, yaml.safe_dump(topic))
    assert result.returncode != 0 and "could not find schema for KafkaTopic" in result.stdout, result.stdout
    isvc = copy.deepcopy(kinds(docs, "InferenceService")[0])
    isvc["spec"]["predictor"]["maxReplicaz"] = 3
    result = kubeconform_run(kubeconform, k8s_schemas, yaml.safe_dump(isvc))
    assert result.returncode != 0 and "maxReplicaz" in result.stdout, result.stdout


def test_the_k8s_examples_left_outside_the_chart_are_valid(kubeconform, k8s_schemas, render):
    files = sorted((CHART.parents[1] / "k8s").rglob("*.yaml"))
    assert files, "k8s/ keeps the priority classes the gpu profile names"
    result = kubeconform_run(kubeconform, k8s_schemas, "\n---\n".join(f.read_text() for f in files))
    assert result.returncode == 0, result.stdout + result.stderr
    classes = {d["metadata"]["name"] for f in files for d in yaml.safe_load_all(f.read_text())
               if d and d["kind"] == "PriorityClass"}
    used = {p.get("priorityClassName") for _, _, p in pod_templates(render("gpu"))} - {None}
    assert used and used <= classes, (used, classes)


# ------------------------------------------------------------------------------------ every workload


@pytest.mark.parametrize("profile", PROFILES)
def test_every_pod_is_locked_down_and_sized(render, profile):
    docs = render(profile)
    ray = {d["metadata"]["name"]: d for d in kinds(docs, "RayCluster")}
    for name, _, pod in pod_templates(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        is_ray_head = name.startswith("RayCluster/") and name.endswith("/head")
        autoscaled = is_ray_head and next(iter(ray.values()))["spec"]["enableInTreeAutoscaling"]
        launches_rayjobs = name in {f"Deployment/{FULLNAME}-{s}" for s in JOB_SERVICES} and \
            values(profile)["training"]["launcher"] == "rayjob"
        # only the Ray head (its autoscaler) and the job services launching RayJobs talk to the API
        # server; nothing else gets a token
        assert pod["automountServiceAccountToken"] is bool(autoscaled or launches_rayjobs), name
        mounts_tmp = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert "ALL" in sc["capabilities"]["drop"], name
            for side in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][side]), (name, c["resources"])
            if not name.startswith("Pod/"):  # the helm test pods write nothing
                tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in mounts_tmp, (name, "an emptyDir on /tmp")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_service_has_probes_a_service_account_and_a_service(render, profile):
    docs = render(profile)
    pods = service_pods(docs)
    assert sorted(pods) == enabled_services(profile)
    services = {component(s): s for s in kinds(docs, "Service")}
    accounts = {a["metadata"]["name"]: a for a in kinds(docs, "ServiceAccount")}
    for name, pod in pods.items():
        (c,) = pod["containers"]
        (port,) = c["ports"]
        kserve = c["name"] == "kserve-container"
        live, ready = ("/v2/health/live", "/v2/health/ready") if kserve else ("/healthz", "/readyz")
        for probe, path in (("startupProbe", live), ("livenessProbe", live), ("readinessProbe", ready)):
            get = c[probe]["httpGet"]
            assert get["path"] == path and get["port"] in (port["name"], port["containerPort"]), (name, probe)
        assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 120, name
        assert c["command"] == ["python", "-m", f"worldloom.{name}"], name
        account = accounts[pod["serviceAccountName"]]
        assert account["automountServiceAccountToken"] is False, name
        assert services[name]["spec"]["ports"][0]["port"] == port["containerPort"], name


def test_values_have_a_block_only_for_services_that_exist():
    """A block for a service with no code (rlsim before it lands) would render a parameter
    nothing applies; each block's module must be importable from its own service folder."""
    import importlib.util

    for name, block in values()["services"].items():
        assert (CHART.parents[1] / "services" / name / "pyproject.toml").is_file(), name
        assert block["module"] == f"worldloom.{name}" and importlib.util.find_spec(block["module"]), name


# ---------------------------------------------------------------------------------------- GPU pools


def test_gpu_profile_puts_the_gpu_services_on_the_gpu_pool(render):
    docs = render("gpu")
    v = values("gpu")
    pods = service_pods(docs)
    gpu_services = {n for n, pod in pods.items() if GPU in pod["containers"][0]["resources"]["limits"]}
    expected = {n for n in enabled_services("gpu")
                if v["services"][n].get("gpu", {}).get("capable")
                and v["services"][n]["gpu"].get("enabled", v["gpu"]["enabled"])}
    assert gpu_services == expected == {"tokenize", "generate"}
    for name, pod in pods.items():
        (c,) = pod["containers"]
        taint_tolerated = any(t["key"] == GPU and t["effect"] == "NoSchedule" for t in pod.get("tolerations", []))
        if name in gpu_services:
            assert c["resources"]["requests"][GPU] == c["resources"]["limits"][GPU] == "1", name
            assert taint_tolerated and pod["nodeSelector"] == {"worldloom.io/pool": "gpu"}, name
            assert pod["runtimeClassName"] == "nvidia" and c["image"].endswith("-cuda"), name
        else:
            assert GPU not in c["resources"]["requests"] and not taint_tolerated, name
            assert pod["nodeSelector"] == {"worldloom.io/pool": "cpu"} and "runtimeClassName" not in pod, name
    (cluster,) = kinds(docs, "RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["nodeSelector"] == {"worldloom.io/pool": "cpu"} and head["containers"][0]["resources"]["limits"]
    assert GPU not in head["containers"][0]["resources"]["limits"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    gpu_pod = groups["gpu"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"][GPU] == "1" and gpu_pod["runtimeClassName"] == "nvidia"
    assert any(t["key"] == GPU for t in gpu_pod["tolerations"]) and gpu_pod["nodeSelector"]["worldloom.io/pool"] == "gpu"
    assert GPU not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert (groups["gpu"]["minReplicas"], groups["gpu"]["maxReplicas"]) == (0, 8)


@pytest.mark.parametrize("profile", ["cpu", "external"])
def test_cpu_only_profiles_request_no_gpu(template, profile):
    rendered = template(profile)
    assert rendered.returncode == 0 and GPU not in rendered.stdout


# --------------------------------------------------------------------------------- NetworkPolicies


def _selects(policy: dict, labels: dict) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


@pytest.mark.parametrize("profile", PROFILES)
def test_no_pod_runs_without_its_network_policy(render, profile):
    docs = render(profile)
    policies = kinds(docs, "NetworkPolicy")
    (deny,) = [p for p in policies if p["metadata"]["name"].endswith("-default-deny")]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    own = [p for p in policies if p is not deny]
    for name, labels, _ in pod_templates(docs):
        assert _selects(deny, labels), name
        mine = [p for p in own if _selects(p, labels)]
        assert mine, f"{name} has no NetworkPolicy of its own"
        assert all(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in mine), name


@pytest.mark.parametrize("profile", PROFILES)
def test_network_policies_open_only_the_dependencies_the_code_uses(render, profile):
    """A service's pod says what it talks to (worldloom.io/uses-*), its policy opens exactly that, and
    both agree with its code: make_bus -> Kafka, make_store -> S3, VectorIndex -> Milvus, job_launcher -> Ray."""
    docs = render(profile)
    v = values(profile)
    ports = {"bus": 9092, "store": 9000, "vectors": 19530, "ray": 10001}
    in_cluster = {"bus": v["kafka"]["mode"] == "strimzi", "store": v["objectStore"]["mode"] == "minio",
                  "vectors": v["vectors"]["mode"] == "milvus", "ray": v["ray"]["enabled"]}
    policies = {component(p): p for p in kinds(docs, "NetworkPolicy")}
    for name, labels, _ in pod_templates(docs):
        if not name.startswith(("Deployment/", "InferenceService/")):
            continue
        service = labels["app.kubernetes.io/component"]
        uses = {k.removeprefix("worldloom.io/uses-") for k in labels if k.startswith("worldloom.io/uses-")}
        assert uses == code_dependencies(service), service
        egress = policies[service]["spec"]["egress"]
        opened = {p["port"] for rule in egress for p in rule.get("ports", [])} - {53}
        rayjobs = "ray" in uses and v["training"]["launcher"] == "rayjob"  # the API server, not the Ray head
        expected = {ports[u] for u in uses if in_cluster[u] and (u != "ray" or (v["ray"]["enabled"] and not rayjobs))}
        assert opened == expected | ({443, 6443} if rayjobs else set()), (service, opened, expected)
        api_server = [r for r in egress if r["to"] == v["networkPolicy"]["apiServer"] and
                      {p["port"] for p in r["ports"]} == {443, 6443}]
        assert len(api_server) == rayjobs, service
        external = [r for r in egress if any("ipBlock" in peer for peer in r["to"]) and r not in api_server]
        needs_external = any(not in_cluster[u] for u in uses if u != "ray") or \
            bool(v["services"][service].get("settings", {}).get("vlm_url"))
        assert bool(external) == needs_external, service
        ingress_ports = {p["port"] for rule in policies[service]["spec"]["ingress"] for p in rule["ports"]}
        assert ingress_ports == {service_pods(docs)[service]["containers"][0]["ports"][0]["containerPort"]}


def test_network_policies_off_renders_none(render):
    docs = render("gpu", "--set", "networkPolicy.enabled=false")
    assert not kinds(docs, "NetworkPolicy")
    assert all("networkPolicyPeers" not in str(k) for k in kinds(docs, "Kafka"))


# ----------------------------------------------------------------------- one entry point, monitoring


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_the_ingress_routes_every_service_and_v2_to_the_model_server(render, profile):
    docs = render(profile)
    services = {s["metadata"]["name"]: s for s in kinds(docs, "Service")}
    routes = {}
    for ingress in kinds(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, backend
                assert backend["port"]["number"] in [p["port"] for p in services[backend["name"]]["spec"]["ports"]]
                routes[path["path"]] = backend["name"]
    expected = {f"/{n}(/|$)(.*)": f"{FULLNAME}-{n}" for n in enabled_services(profile)}
    expected["/v2"] = f"{FULLNAME}-generate"
    assert routes == expected
    tls = [i["spec"].get("tls") for i in kinds(docs, "Ingress")]
    assert all(tls) == values(profile)["ingress"]["tls"]["enabled"]


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_every_service_has_a_service_monitor_that_selects_its_service(render, profile):
    docs = render(profile)
    services = {component(s): s for s in kinds(docs, "Service")}
    monitors = {component(m): m for m in kinds(docs, "ServiceMonitor")}
    assert sorted(monitors) == enabled_services(profile)
    for name, monitor in monitors.items():
        selector = monitor["spec"]["selector"]["matchLabels"]
        service = services[name]
        assert all(service["metadata"]["labels"].get(k) == v for k, v in selector.items()), name
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
        assert "http" in [p["name"] for p in service["spec"]["ports"]]
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_alerts_and_dashboard_read_metrics_the_code_exports(render, profile):
    """Every worldloom_* series an alert or a dashboard panel reads is one the services register."""
    import importlib
    import json
    import re

    from prometheus_client import REGISTRY

    for module in ("worldloom.core.bus.base", "worldloom.core.service.middleware", "worldloom.core.jobs",
                   "worldloom.ingest.service", "worldloom.curate.service", "worldloom.search.service"):
        importlib.import_module(module)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {m.name + suffix for m in REGISTRY.collect() for suffix in suffixes.get(m.type, ("",))}
    docs = render(profile)
    (rule,) = kinds(docs, "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"WorldloomConsumerLag", "WorldloomDeadLetters", "WorldloomHttp5xx", "WorldloomJobFailures"} <= set(alerts)
    assert ("WorldloomGpuIdle" in alerts) == values(profile)["gpu"]["enabled"]
    (board,) = [c for c in kinds(docs, "ConfigMap") if component(c) == "dashboard"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(board["data"]["worldloom.json"])["panels"]
    exprs = list(alerts.values()) + [t["expr"] for p in panels for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(worldloom_[a-z_]+)", e)}
    assert used and used <= exported, used - exported
    groups = re.search(r'consumergroup=~"([^"]+)"', alerts["WorldloomConsumerLag"]).group(1).split("|")
    blocks = values(profile)["services"]
    assert sorted(groups) == sorted(blocks[n]["consumer"]["group"] for n in enabled_services(profile)
                                    if "consumer" in blocks[n])


@pytest.mark.parametrize("profile", PROFILES)
def test_helm_test_hooks_ask_every_service_for_readiness(render, profile):
    docs = render(profile)
    pods = {component(p) for p in kinds(docs, "Pod")}
    assert pods == {"test"}
    asked = {}
    for pod in kinds(docs, "Pod"):
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        script = pod["spec"]["containers"][0]["command"][-1]
        url = script.split('url = "', 1)[1].split('"', 1)[0]
        asked[url.split("//")[1].split(":")[0]] = url
    for name, pod in service_pods(docs).items():
        c = pod["containers"][0]
        path = c["readinessProbe"]["httpGet"]["path"]
        assert asked[f"{FULLNAME}-{name}"] == f"http://{FULLNAME}-{name}:{c['ports'][0]['containerPort']}{path}"


# --------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("args", "reason"), [
    (["--set", "services.generate.enabled=true"], "model_ids"),
    (["--set", "services.generate.enabled=true", "--set", "services.generate.settings.model_ids={m}",
      "--set", "services.generate.kserve.minReplicas=0"], "needs kserve.deploymentMode Knative"),
    (["--set", "services.ingest.settings.http.api_tokens=t"], "is a credential"),
    (["--set", "services.ingest.settings.store.secret_key=t"], "is a credential"),
    (["--set", "gpu.enabled=true", "--set", "services.ingest.gpu.enabled=true"], "cannot use a GPU"),
    (["--set-json", 'ray.workerGroups=[{"name": "g", "gpu": true, "minReplicas": 0, "maxReplicas": 1, '
      '"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]'],
     "gpu.enabled is false"),
    (["--set", "kafka.mode=external"], "kafka.external.bootstrapServers is required"),
    (["--set", "objectStore.mode=external", "--set", "objectStore.external.endpoint=s3.example:443"],
     "objectStore.existingSecret is required"),
    (["--set", "keda.enabled=true", "--set", "services.curate.autoscaling.enabled=true"], "enable one"),
    (["--set", "services.ingest.replicaz=2"], "additional properties 'replicaz' not allowed"),
    (["--set", "kafka.mode=kraft"], "at '/kafka/mode'"),
    (["--set", "services.search.uses={bus,milvus}"], "at '/services/search/uses/1'"),
    (["--set", "ingress.enabled=true", "--set", "ingress.tls.enabled=true"], "ingress.tls.secretName is required"),
])
def test_a_wrong_value_fails_at_install(template, args, reason):
    result = template(None, *args)
    assert result.returncode != 0 and reason in result.stderr, result.stderr
