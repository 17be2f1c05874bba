import pytest
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ServiceSettings, SettingsError, load_settings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_DEMO_", env_nested_delimiter="__", extra="forbid")


def test_nested_env_vars_are_read(monkeypatch):
    monkeypatch.setenv("WORLDLOOM_DEMO_BUS__KIND", "kafka")
    monkeypatch.setenv("WORLDLOOM_DEMO_BUS__BOOTSTRAP_SERVERS", "127.0.0.1:1234")
    monkeypatch.setenv("WORLDLOOM_DEMO_HTTP__API_TOKENS", "a, b")
    s = load_settings(DemoSettings)
    assert s.bus.kind == "kafka" and s.bus.bootstrap_servers == "127.0.0.1:1234"
    assert s.http.tokens() == ["a", "b"]


def test_invalid_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("WORLDLOOM_DEMO_BUS__KIND", "rabbitmq")
    monkeypatch.setenv("WORLDLOOM_DEMO_HTTP__API_TOKENS", "t")
    with pytest.raises(SettingsError, match="WORLDLOOM_DEMO_BUS__KIND"):
        load_settings(DemoSettings)


def test_missing_token_is_a_startup_error(monkeypatch):
    with pytest.raises(SettingsError, match="WORLDLOOM_DEMO_HTTP__API_TOKENS"):
        load_settings(DemoSettings)
    monkeypatch.setenv("WORLDLOOM_DEMO_HTTP__AUTH_REQUIRED", "false")
    assert load_settings(DemoSettings).http.auth_required is False


def test_unknown_variables_stop_start_up_with_their_names(monkeypatch):
    monkeypatch.setenv("WORLDLOOM_DEMO_HTTP__API_TOKENS", "t")
    monkeypatch.setenv("WORLDLOOM_DEMO_DEVISE", "cuda")  # top level: pydantic alone ignores it
    monkeypatch.setenv("WORLDLOOM_DEMO_BUS__KINDE", "kafka")
    monkeypatch.setenv("WORLDLOOM_DEMO_URL", "http://x")
    with pytest.raises(SettingsError) as info:
        load_settings(DemoSettings)
    text = str(info.value)
    assert "WORLDLOOM_DEMO_DEVISE" in text and "WORLDLOOM_DEMO_BUS__KINDE" in text
    assert "WORLDLOOM_CLI_DEMO_URL" in text  # the CLI's variables have their own prefix
    for name in ("WORLDLOOM_DEMO_DEVISE", "WORLDLOOM_DEMO_BUS__KINDE", "WORLDLOOM_DEMO_URL"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("WORLDLOOM_DEMOTE_X", "1")  # another prefix altogether
    assert load_settings(DemoSettings).http.tokens() == ["t"]


def test_every_service_settings_class_accepts_its_own_fields():
    """Each real service's settings, walked field by field, are all recognised (no false alarms)."""
    import importlib

    from worldloom.core.settings import unknown_variables

    for service, cls_name in (("ingest", "IngestSettings"), ("curate", "CurateSettings"), ("search", "SearchSettings"),
                              ("tokenize", "TokenizeSettings"), ("train", "TrainSettings"),
                              ("generate", "GenerateSettings")):
        cls = getattr(importlib.import_module(f"worldloom.{service}.settings"), cls_name)
        prefix = cls.model_config["env_prefix"]
        names = []
        for field, info in cls.model_fields.items():
            sub = getattr(info.annotation, "model_fields", None)
            names += [f"{prefix}{field}__{s}".upper() for s in sub] if sub else [f"{prefix}{field}".upper()]
        assert unknown_variables(cls, dict.fromkeys(names, "x")) == [], service
