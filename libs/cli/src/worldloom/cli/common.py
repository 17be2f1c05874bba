"""What every command that talks to a service shares: the URL/token options, the client and error reporting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import httpx
import typer
from rich.console import Console

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.cli.config import PREFIX, ConfigError, Service, endpoint
from worldloom.cli.ingest_cmd import expand_paths

console = Console(stderr=True)


def _api(service: Service) -> typer.models.OptionInfo:
    return typer.Option("--api", help=f"{service} service base URL (default: ${PREFIX}{service.upper()}_URL, "
                                      f"else ${PREFIX}GATEWAY_URL/{service})")


IngestApiOpt = Annotated[Optional[str], _api("ingest")]
SearchApiOpt = Annotated[Optional[str], _api("search")]
TokenizeApiOpt = Annotated[Optional[str], _api("tokenize")]
TrainApiOpt = Annotated[Optional[str], _api("train")]
GenerateApiOpt = Annotated[Optional[str], _api("generate")]
PosttrainApiOpt = Annotated[Optional[str], _api("posttrain")]
RlsimApiOpt = Annotated[Optional[str], _api("rlsim")]
TokenOpt = Annotated[Optional[str], typer.Option(
    "--token", help=f"bearer token (default: ${PREFIX}<SERVICE>_TOKEN, else ${PREFIX}TOKEN)")]


def fail(exc: ApiFailure) -> NoReturn:
    """The service's error code and reason for the user, exit status 2."""
    console.print(f"[red]{exc}")
    raise typer.Exit(2) from None


def video_files(paths: list[Path]) -> list[Path]:
    """The video files under ``paths`` (:func:`~worldloom.cli.ingest_cmd.expand_paths`); a missing path is a
    usage error, no video at all exit status 1."""
    try:
        files = expand_paths(paths)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not files:
        console.print("[yellow]no video files found")
        raise typer.Exit(1)
    return files


def open_client(service: Service, api: str | None, token: str | None) -> WorldloomClient:
    """A client for ``service`` at the URL the options or ``WORLDLOOM_CLI_*`` give (see :mod:`.config`);
    deprecated variables still work and say so on stderr; a bad URL is exit status 2."""
    try:
        ep = endpoint(service, api, token)
    except ConfigError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from None
    for note in ep.deprecated:
        console.print(f"[yellow]{note}")
    return WorldloomClient(ep.url, ep.token)


@contextmanager
def api_errors(api: str) -> Iterator[None]:
    """Service errors and an unreachable service become one red line and exit status 2."""
    try:
        yield
    except ApiFailure as exc:
        fail(exc)
    except httpx.TransportError as exc:
        console.print(f"[red]cannot reach the service at {api}: {exc}")
        raise typer.Exit(2) from None


@contextmanager
def connected(service: Service, api: str | None, token: str | None) -> Iterator[WorldloomClient]:
    """A client for one command: service errors reported as by :func:`api_errors`, closed afterwards."""
    client = open_client(service, api, token)
    try:
        with api_errors(client.api):
            yield client
    finally:
        client.close()
