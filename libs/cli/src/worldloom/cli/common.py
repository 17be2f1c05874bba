"""What every command that talks to a service shares: the URL/token options and error reporting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn, Optional

import httpx
import typer
from rich.console import Console

from worldloom.cli.client import ApiFailure, WorldloomClient

console = Console(stderr=True)

ApiOpt = Annotated[Optional[str], typer.Option("--api", envvar="WORLDLOOM_API_URL", help="service base URL")]
TokenOpt = Annotated[Optional[str], typer.Option("--token", envvar="WORLDLOOM_API_TOKEN", help="bearer token")]


def fail(exc: ApiFailure) -> NoReturn:
    """The service's error code and reason for the user, exit status 2."""
    console.print(f"[red]{exc}")
    raise typer.Exit(2) from None


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
def connected(api: str | None, token: str | None) -> Iterator[WorldloomClient]:
    """A client for one command: service errors reported as by :func:`api_errors`, closed afterwards."""
    client = WorldloomClient(api, token)
    try:
        with api_errors(client.api):
            yield client
    finally:
        client.close()
