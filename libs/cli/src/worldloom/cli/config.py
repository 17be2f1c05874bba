"""Where the CLI finds each service: one URL variable per service, or one gateway in front of them all.

    WORLDLOOM_CLI_INGEST_URL=http://127.0.0.1:8001     ingest (ingest, videos), search, tokenize
    WORLDLOOM_CLI_SEARCH_URL=...                        (tokenizer ...), train (model train|show|cancel),
    WORLDLOOM_CLI_TOKENIZE_URL=...                      generate (predict, model eval)
    WORLDLOOM_CLI_TRAIN_URL=...
    WORLDLOOM_CLI_GENERATE_URL=...                      posttrain (posttrain)
    WORLDLOOM_CLI_POSTTRAIN_URL=...                     rlsim (rl run|show|cancel|policies|eval)
    WORLDLOOM_CLI_RLSIM_URL=...
    WORLDLOOM_CLI_GATEWAY_URL=https://worldloom.example  one ingress: <gateway>/<service> for every service
    WORLDLOOM_CLI_TOKEN=...                             bearer token; WORLDLOOM_CLI_<SERVICE>_TOKEN for one service

A service's URL is ``--api``, else ``WORLDLOOM_CLI_<SERVICE>_URL``, else ``<gateway>/<service>``, else a
deprecated variable (``WORLDLOOM_API_URL``, ``WORLDLOOM_TRAIN_URL``, ``WORLDLOOM_GENERATE_URL``: honoured
with a warning for one release), else http://127.0.0.1:8000. The token likewise: ``--token``, the
service's token, ``WORLDLOOM_CLI_TOKEN``, a deprecated one (``WORLDLOOM_API_TOKEN``, ``WORLDLOOM_TRAIN_TOKEN``,
``WORLDLOOM_GENERATE_TOKEN``), none.

Why the ``WORLDLOOM_CLI_`` prefix: each service owns ``WORLDLOOM_<SERVICE>_*`` (its settings prefix). A CLI
name like ``WORLDLOOM_TRAIN_URL`` would be read by the train service as soon as it gained a ``url`` field,
and in a ``.env`` file the train service reads it is refused today (``extra="forbid"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, get_args

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Service = Literal["ingest", "search", "tokenize", "train", "generate", "posttrain", "rlsim"]
SERVICES: tuple[Service, ...] = get_args(Service)
PREFIX = "WORLDLOOM_CLI_"
DEFAULT_URL = "http://127.0.0.1:8000"

#: names from before per-service variables, read (with a warning) until the next release
DEPRECATED_URLS: dict[Service, tuple[str, ...]] = {
    "train": ("WORLDLOOM_TRAIN_URL", "WORLDLOOM_API_URL"),
    "generate": ("WORLDLOOM_GENERATE_URL", "WORLDLOOM_API_URL"),
    "posttrain": (),  # newer than the per-service variables: no old names
    "rlsim": (),
}
DEPRECATED_TOKENS: dict[Service, tuple[str, ...]] = {
    "train": ("WORLDLOOM_TRAIN_TOKEN", "WORLDLOOM_API_TOKEN"),
    "generate": ("WORLDLOOM_GENERATE_TOKEN", "WORLDLOOM_API_TOKEN"),
    "posttrain": (),
    "rlsim": (),
}
_LEGACY_URL, _LEGACY_TOKEN = ("WORLDLOOM_API_URL",), ("WORLDLOOM_API_TOKEN",)


class ConfigError(ValueError):
    """An invalid ``WORLDLOOM_CLI_*`` variable, named."""


class CliSettings(BaseSettings):
    """The CLI's variables (``WORLDLOOM_CLI_*``); unset ones are None."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid")

    gateway_url: str | None = None
    ingest_url: str | None = None
    search_url: str | None = None
    tokenize_url: str | None = None
    train_url: str | None = None
    generate_url: str | None = None
    posttrain_url: str | None = None
    rlsim_url: str | None = None
    token: SecretStr | None = None
    ingest_token: SecretStr | None = None
    search_token: SecretStr | None = None
    tokenize_token: SecretStr | None = None
    train_token: SecretStr | None = None
    generate_token: SecretStr | None = None
    posttrain_token: SecretStr | None = None
    rlsim_token: SecretStr | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("gateway_url", "ingest_url", "search_url", "tokenize_url", "train_url", "generate_url",
                     "posttrain_url", "rlsim_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)


def http_url(value: str) -> str:
    """``value`` without trailing slashes, if it is an http(s) URL with a host."""
    url = value.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
    return url


@dataclass(frozen=True)
class Endpoint:
    """A service's base URL and bearer token, with where they came from (for error messages)."""

    service: Service
    url: str
    token: str | None
    source: str  # "--api", a variable name, or "default"
    deprecated: list[str] = field(default_factory=list)  # deprecation notices for the user


def settings() -> CliSettings:
    try:
        return CliSettings()
    except ValidationError as exc:
        lines = [f"  {PREFIX}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid CLI settings:\n" + "\n".join(lines)) from None


def endpoint(service: Service, api: str | None = None, token: str | None = None) -> Endpoint:
    """Resolves ``service``'s URL and token from the options and the environment (see the module doc)."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    cfg = settings()
    notes: list[str] = []
    own = f"{PREFIX}{service.upper()}_URL"
    if api is not None:
        try:
            url, source = http_url(api), "--api"
        except ValueError as exc:
            raise ConfigError(f"--api: {exc}") from None
    elif getattr(cfg, f"{service}_url"):
        url, source = getattr(cfg, f"{service}_url"), own
    elif cfg.gateway_url:
        url, source = f"{cfg.gateway_url}/{service}", f"{PREFIX}GATEWAY_URL"
    elif name := _first_set(DEPRECATED_URLS.get(service, _LEGACY_URL)):
        try:
            url, source = http_url(os.environ[name]), name
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        notes.append(f"{name} is deprecated and goes in the next release: set {own} (or {PREFIX}GATEWAY_URL)")
    else:
        url, source = DEFAULT_URL, "default"
    if token is None:
        secret = getattr(cfg, f"{service}_token") or cfg.token
        if secret is not None:
            token = secret.get_secret_value()
        elif name := _first_set(DEPRECATED_TOKENS.get(service, _LEGACY_TOKEN)):
            token = os.environ[name]
            notes.append(f"{name} is deprecated and goes in the next release: set {PREFIX}TOKEN "
                         f"(or {PREFIX}{service.upper()}_TOKEN)")
    return Endpoint(service, url, token, source, notes)


def _first_set(names: tuple[str, ...]) -> str | None:
    return next((n for n in names if os.environ.get(n, "").strip()), None)
