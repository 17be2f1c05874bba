"""Service settings from environment variables: one prefix per service, validated at start-up.

Nested blocks use `__`, e.g. WORLDLOOM_INGEST_BUS__KIND=kafka, WORLDLOOM_INGEST_STORE__BUCKET=raw.
The defaults are the embedded mode: in-process bus, a local directory store and a Milvus Lite file.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BusSettings(_Block):
    kind: Literal["inprocess", "kafka"] = "inprocess"
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "worldloom"
    partitions: int = Field(3, ge=1, description="partitions for topics created on demand")
    replication_factor: int = Field(1, ge=1)
    max_attempts: int = Field(3, ge=1, description="handler attempts before a message goes to the DLQ")
    retry_backoff_s: float = Field(0.2, ge=0, description="first pause between handler attempts (doubles)")
    poll_timeout_s: float = Field(0.5, gt=0)
    max_poll_records: int = Field(
        500, ge=1, description="records per fetch: what one failed batch or a crash mid-batch may redeliver"
    )
    max_poll_interval_ms: int = Field(
        300_000, ge=1000,
        description="(Kafka) the broker drops a member that does not poll for this long; the consumer thread polls "
                    "(partitions paused) while handlers run, so only a hung process reaches it",
    )
    session_timeout_ms: int = Field(
        45_000, ge=1000,
        description="(Kafka) a member that stops heartbeating (a crashed process) keeps its partitions this long "
                    "before the group hands them to the others; heartbeats come from a background thread every "
                    "third of it (at most 3 s), so a busy handler never reaches it",
    )
    batch_retry_backoff_s: float = Field(
        1.0, ge=0, description="after a batch fails (dead-letter write, commit, broker) the consumer rewinds to "
                               "the first unfinished message and waits this long before retrying (doubles)",
    )
    batch_retry_backoff_max_s: float = Field(
        30.0, ge=0, description="cap of that doubling, so an outage is retried steadily but never spins hot"
    )


class StoreSettings(_Block):
    kind: Literal["local", "s3"] = "local"
    root: Path = Path(".worldloom/store")
    endpoint: str = "127.0.0.1:9000"
    bucket: str = Field("worldloom", min_length=3, max_length=63)
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    secure: bool = False
    region: str | None = None
    part_size: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024)


class VectorSettings(_Block):
    uri: str = ".worldloom/vectors.db"
    token: SecretStr | None = None


class HttpSettings(_Block):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_tokens: SecretStr | None = Field(None, description="comma-separated bearer tokens")
    auth_required: bool = True
    max_body_bytes: int = Field(1024 * 1024, ge=1, description="limit for non-upload requests")

    def tokens(self) -> list[str]:
        raw = self.api_tokens.get_secret_value() if self.api_tokens else ""
        return [t.strip() for t in raw.split(",") if t.strip()]


class SecretKeyRef(_Block):
    """A key of a Kubernetes Secret (the pod reads the value; the spec names only the Secret)."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class RayJobSettings(_Block):
    """What a training job needs to become its own KubeRay ``RayJob`` (``launcher: rayjob``):
    ``WORLDLOOM_<SERVICE>_TRAINING__RAYJOB__<FIELD>``; dicts and lists as JSON. The chart renders them."""

    namespace: str | None = Field(None, description="where RayJobs are created; empty: the pod's own namespace")
    kubeconfig: Path | None = Field(None, description="a kubeconfig file (outside a cluster); empty: the pod's "
                                    "service-account token")
    image: str = Field("", description="image of the Ray head and CPU workers (the service's own image)")
    gpu_image: str = Field("", description="image of GPU workers (the CUDA variant); empty: `image`")
    ray_version: str = Field("", description="spec.rayClusterSpec.rayVersion (the ray in the image)")
    service_account: str | None = Field(None, description="service account of the Ray pods (no token is mounted)")
    image_pull_secrets: list[str] = []
    labels: dict[str, str] = Field(default_factory=dict, description="labels on the RayJob and its pods "
                                   "(the chart's NetworkPolicies select them)")
    node_selector: dict[str, str] = Field(default_factory=dict, description="the CPU pool (head, CPU workers)")
    tolerations: list[dict[str, Any]] = []
    gpu_node_selector: dict[str, str] = Field(default_factory=dict, description="the GPU pool (GPU workers)")
    gpu_tolerations: list[dict[str, Any]] = []
    gpu_runtime_class: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    head_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}})
    worker_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
        description="per worker; a GPU job adds one `gpu_resource` per worker")
    pod_security_context: dict[str, Any] = Field(default_factory=lambda: {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"}})
    security_context: dict[str, Any] = Field(default_factory=lambda: {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}})
    env: dict[str, str] = Field(default_factory=dict, description="extra plain variables for the Ray containers")
    store_access_key: SecretKeyRef | None = Field(None, description="the Secret key holding the store's access "
                                                  "key (credentials never go into the RayJob spec)")
    store_secret_key: SecretKeyRef | None = None
    ttl_seconds_after_finished: int = Field(3600, ge=0, description="KubeRay deletes the job's Ray cluster after")
    active_deadline_seconds: int | None = Field(None, ge=1)
    poll_interval_s: float = Field(10.0, gt=0, description="how often the status is re-read besides the watch")


class TrainingResources(_Block):
    """Where training jobs run and how much one may ask for; one block for every service that trains
    (tokenize, train; next posttrain, rlsim): ``WORLDLOOM_<SERVICE>_TRAINING__<FIELD>``."""

    launcher: Literal["local", "rayjob"] = Field("local", description="local: this process drives Ray Train (a "
                                                 "private local Ray, or the cluster at ray_address); rayjob: each "
                                                 "job becomes its own KubeRay RayJob sized to the job")
    rayjob: RayJobSettings = RayJobSettings()
    ray_address: str | None = Field(None, description="existing Ray cluster (e.g. a KubeRay head, "
                                    "ray://head:10001); empty: a private, loopback-only Ray in this process")
    in_process: bool = Field(False, description="train in this process without Ray (debugging, demos)")
    max_workers: int = Field(8, ge=1, description="upper bound on Ray workers a job may ask for")
    allow_gpu: bool = Field(True, description="jobs may ask for GPU workers")
    max_steps: int = Field(1_000_000, ge=1, description="upper bound on a job's training steps")
    max_clips: int = Field(100_000, ge=1, description="upper bound on the clips a job may select")


class ServiceSettings(BaseSettings):
    """Base for every service's settings; subclasses set env_prefix (WORLDLOOM_<SERVICE>_)."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="forbid")

    bus: BusSettings = BusSettings()
    store: StoreSettings = StoreSettings()
    vectors: VectorSettings = VectorSettings()
    http: HttpSettings = HttpSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ClaimingSettings(ServiceSettings):
    """Settings of a service whose replicas divide work through claims in the shared store
    (worldloom.core.claims): the lease bounds how long a worker killed mid-task holds its item up."""

    claim_lease_s: float = Field(
        300.0, ge=1, description="lease of a claim on a work item (a video, a clip, a backfill), renewed while "
                                 "the work runs: a worker that dies mid-task holds the item up for at most this long")


class SettingsError(RuntimeError):
    """Raised at start-up with every invalid variable named, so ops see all problems at once."""


S = TypeVar("S", bound=BaseSettings)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings block a field holds (unwrapping ``X | None``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return origin is dict or any(_is_mapping(a) for a in typing.get_args(annotation) if a is not type(None))


def unknown_variables(cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> list[str]:
    """Variables with the class's prefix that name no setting (``WORLDLOOM_GENERATE_DEVISE``): pydantic
    ignores them, so a typo would silently leave the default in force."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    delimiter = str(cls.model_config.get("env_nested_delimiter") or "__")
    unknown = []
    for name in (environ if environ is not None else os.environ):
        if not prefix or not name.upper().startswith(prefix):
            continue
        model: type[BaseModel] | None = cls
        for part in name[len(prefix):].lower().split(delimiter):
            field = model.model_fields.get(part) if model is not None else None
            if field is None:
                unknown.append(name)
                break
            if _is_mapping(field.annotation):
                break  # a mapping's keys are free
            model = _model_in(field.annotation)
    return sorted(unknown)


#: names other Worldloom programs read that share a service's prefix, and where they moved
_MOVED = {"URL": "WORLDLOOM_CLI_{SERVICE}_URL (a CLI variable)", "TOKEN": "WORLDLOOM_CLI_{SERVICE}_TOKEN (a CLI variable)"}


def load_settings(cls: type[S], **overrides: Any) -> S:
    prefix = str(cls.model_config.get("env_prefix", ""))
    unknown = unknown_variables(cls)
    if unknown:
        service = prefix.removeprefix("WORLDLOOM_").rstrip("_")
        lines = []
        for name in unknown:
            moved = _MOVED.get(name[len(prefix):].upper())
            hint = f"; did you mean {moved.format(SERVICE=service)}?" if moved else ""
            lines.append(f"  {name}: not a setting of {cls.__name__}{hint}")
        raise SettingsError("unknown settings variables (a typo keeps the default in force, so start-up stops):\n"
                            + "\n".join(lines))
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        lines = []
        for err in exc.errors():
            var = prefix + "__".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {var}: {err['msg']}")
        raise SettingsError(f"invalid settings for {cls.__name__}:\n" + "\n".join(lines)) from None
    http = getattr(settings, "http", None)
    if isinstance(http, HttpSettings) and http.auth_required and not http.tokens():
        prefix = cls.model_config.get("env_prefix", "")
        raise SettingsError(
            f"{prefix}HTTP__API_TOKENS is empty: set one or more bearer tokens "
            f"(or {prefix}HTTP__AUTH_REQUIRED=false for a private, local-only run)"
        )
    return settings
