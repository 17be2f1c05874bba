"""`worldloom demo`: the command the CLI finds through this package's ``worldloom.cli`` entry point.

The demo drives the services through the CLI's client and progress bars, so this package depends on
the CLI; the CLI imports nothing from here (it loads the entry point), which keeps the dependency
one-way. Importing this module is cheap: the pipeline is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from worldloom.cli.common import console


def demo(
    data: Annotated[Path, typer.Option(help="folder of real videos (the repo's ../shared/data)")] = Path("../shared/data"),
    out: Annotated[Path, typer.Option(help="output folder (store, report)")] = Path("out/demo"),
    tokenizer_steps: Annotated[Optional[int], typer.Option(
        "--tokenizer-steps", envvar="WORLDLOOM_DEMO_TOKENIZER_STEPS", min=0,
        help="training steps of the demo tokenizer (default 150, a few minutes on 2 cores); 0 skips that stage")] = None,
    world_models: Annotated[bool, typer.Option(
        "--world-models/--no-world-models", envvar="WORLDLOOM_DEMO_WORLD_MODELS",
        help="also record simulator episodes and pretrain a tiny autoregressive and diffusion world model on them (about 8 minutes on 2 cores)")] = True,
) -> None:
    """Run the pipeline in embedded mode: in-process bus, local directory store, Milvus Lite."""
    from worldloom.demo.pipeline import run_demo

    if not data.is_dir():
        raise typer.BadParameter(f"data folder not found: {data}")
    report = run_demo(data, out, console, tokenizer_steps, world_models)
    world = report.get("world_models") or {}
    if (report.get("tokenizer") or {}).get("error") or world.get("error") or \
            any(m.get("error") for m in (world.get("models") or {}).values()):
        raise typer.Exit(1)
