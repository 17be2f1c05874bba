"""`worldloom model train | show | cancel`: world-model training jobs on the train service.

The train service's base URL comes from ``--api``, else ``WORLDLOOM_CLI_TRAIN_URL``, else the gateway
(see :mod:`worldloom.cli.config`).
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from worldloom.cli.common import TokenOpt, TrainApiOpt, connected, console
from worldloom.cli.tokenizer_cmd import dataset_ref, follow_or_detach, latest
from worldloom.cli.world_cmd import model_app


class Family(str, Enum):
    ar = "ar"
    diffusion = "diffusion"


def record_table(record: dict[str, Any]) -> Table:
    """Metrics of a job: held-out PSNR/SSIM by horizon next to copy-last, validation loss, throughput."""
    table = Table(title=f"{record['model_id']} ({record['family']}, {record.get('size', '?')}): {record['state']}, "
                        f"{record.get('percent', 0):.0f}%", title_justify="left", min_width=44)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted((record.get("metrics") or {}).items()):
        table.add_row(name, f"{float(value):.4f}")
    for name, value in (record.get("throughput") or {}).items():
        table.add_row(name, f"{value:.0f}")
    if (v := latest(record, "loss")) is not None:
        table.add_row("last train loss", f"{v:.4f}")
    lineage = record.get("lineage") or {}
    table.add_row("tokenizer", str(lineage.get("tokenizer_id")))
    table.add_row("data", f"{', '.join(lineage.get('datasets') or [])} ({lineage.get('train_clips', 0)} train, "
                          f"{lineage.get('val_clips', 0)} held out)")
    if lineage.get("parent_model"):
        table.add_row("parent model", lineage["parent_model"])
    if record.get("error"):
        table.add_row("error", f"[red]{record['error']}")
    return table


@model_app.command("train")
def train(
    family: Annotated[Family, typer.Option(help="ar (discrete tokens) or diffusion (continuous latents)")],
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="the tokenizer the clips were tokenized with")],
    clips_source: Annotated[Optional[str], typer.Option(
        "--clips-source", help='train on the tokenized curated clips of this source ("*": every source)')] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="or on a dataset manifest: NAME[@VERSION]")] = None,
    name: Annotated[str, typer.Option(help="a name for the registry")] = "world-model",
    size: Annotated[str, typer.Option(help="tiny | small | base | large")] = "tiny",
    window: Annotated[int, typer.Option(help="latent frames per training window")] = 6,
    context_frames: Annotated[int, typer.Option("--context-frames", help="latent frames given as context")] = 2,
    horizons: Annotated[str, typer.Option(help="evaluation horizons (latent frames), comma-separated")] = "1,2,4",
    actions: Annotated[bool, typer.Option("--actions", help="condition on recorded actions (simulator data)")] = False,
    text: Annotated[bool, typer.Option("--text", help="condition on the clips' captions (MiniLM)")] = False,
    steps: Annotated[int, typer.Option(help="training steps")] = 1000,
    batch: Annotated[int, typer.Option(help="windows per step")] = 8,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 3e-4,
    workers: Annotated[int, typer.Option(help="Ray Train workers (data parallel)")] = 1,
    gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker")] = False,
    seed: Annotated[int, typer.Option(help="seed of the weights and the data order")] = 0,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="start the job and return")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the final record as JSON")] = False,
    api: TrainApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Pretrain a world model and follow the job with a progress bar (post-training: `worldloom posttrain`).

    Exit 1 if the job fails or is cancelled, 2 if the service refuses the request."""
    from worldloom.cli.world_cmd import parse_horizons

    if (clips_source is None) == (dataset is None):
        raise typer.BadParameter("give --clips-source SOURCE (\"*\" for every source) or --dataset NAME[@V]")
    body: dict[str, Any] = {
        "name": name, "family": family.value, "size": size, "tokenizer_id": tokenizer, "actions": actions, "text": text,
        "window": window, "context_frames": context_frames, "eval_horizons": parse_horizons(horizons), "steps": steps,
        "batch": batch, "lr": lr, "workers": workers, "use_gpu": gpu, "seed": seed}
    if dataset is not None:
        body["dataset"] = dataset_ref(dataset)
    else:
        body["clips"] = {"source": None if clips_source in ("*", "") else clips_source}
    with connected("train", api, token) as client:
        record = client.train_world_model(body)
        mid = record["model_id"]
        lineage = record.get("lineage") or {}
        console.print(f"started [bold]{mid}[/] ({family.value}, {size}) on {lineage.get('train_clips', 0)} clips, "
                      f"{lineage.get('val_clips', 0)} held out")
        if not no_wait:
            record = follow_or_detach(client, mid, record, "model", fetch=client.world_job)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
    elif no_wait:
        typer.echo(mid)
    else:
        console.print(record_table(record))
    if not no_wait and record["state"] != "succeeded":
        raise typer.Exit(1)


@model_app.command("show")
def show(model_id: Annotated[str, typer.Argument(help="world-model id")],
         as_json: Annotated[bool, typer.Option("--json")] = False, api: TrainApiOpt = None,
         token: TokenOpt = None) -> None:
    """State, percent done, metrics and lineage of a training job / registered model; for a post-trained
    one also its held-out figures before (the base), after and against the scratch baseline."""
    from worldloom.cli.posttrain_cmd import comparison_table

    with connected("train", api, token) as client:
        record = client.world_job(model_id)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
    else:
        console.print(record_table(record))
        if (table := comparison_table(record)) is not None:
            console.print(table)


@model_app.command("cancel")
def cancel(model_id: Annotated[str, typer.Argument(help="world-model id")], api: TrainApiOpt = None,
           token: TokenOpt = None) -> None:
    """Cancel a queued or running training job."""
    with connected("train", api, token) as client:
        record = client.cancel_world_job(model_id)
    console.print(f"{model_id}: {record['state']}")
