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
