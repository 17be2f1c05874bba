"""`worldloom posttrain`: post-training jobs on the posttrain service, followed with a progress bar; and the
before / after / scratch table `worldloom model show` prints for a post-trained model.

The posttrain service's base URL comes from ``--api``, else ``WORLDLOOM_CLI_POSTTRAIN_URL``, else the
gateway (see :mod:`worldloom.cli.config`).
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from worldloom.cli.common import PosttrainApiOpt, TokenOpt, connected, console
from worldloom.cli.tokenizer_cmd import dataset_ref, follow_or_detach

#: ``val_model_h1_psnr_vs_decoded`` -> (horizon, figure) for the rows of the comparison
_EVAL = re.compile(r"^val_(model|copy_last)_h(\d+)_(.+)$")
COLUMNS = (("before (base)", "base_"), ("after", ""), ("scratch", "scratch_"))


class Mode(str, Enum):
    unsupervised = "unsupervised"
    supervised = "supervised"
    action = "action"
    reward = "reward"


class Method(str, Enum):
    full = "full"
    lora = "lora"
    heads = "heads"


def _row_order(name: str) -> tuple[int, str, str]:
    match = _EVAL.match(name)
    assert match is not None
    kind, horizon, figure = match.groups()
    return int(horizon), figure, kind


def comparison_table(record: dict[str, Any]) -> Table | None:
    """Held-out figures of a post-trained model next to its base's (before) and, when it was trained, the
    scratch baseline's: loss, then model and copy-last PSNR/SSIM per horizon; None for other records."""
    lineage = record.get("lineage") or {}
    if not lineage.get("posttrain"):
        return None
    m = {k: float(v) for k, v in (record.get("metrics") or {}).items()}
    columns = [(title, p) for title, p in COLUMNS if p == "" or any(k.startswith(f"{p}val_") for k in m)]
    pt = lineage["posttrain"]
    table = Table(title=f"{record['model_id']}: {pt.get('mode')} / {pt.get('method')} post-training of "
                        f"{lineage.get('parent_model')} on {', '.join(lineage.get('datasets') or [])}",
                  title_justify="left", min_width=60)
    table.add_column("held-out metric")
    for title, _ in columns:
        table.add_column(title, justify="right")
    names = ["val_loss"] + sorted((k for k in m if _EVAL.match(k)), key=_row_order)
    for name in dict.fromkeys(names):
        cells = [f"{m[p + name]:.4f}" if p + name in m else "-" for _, p in columns]
        if any(c != "-" for c in cells):
            table.add_row(name.removeprefix("val_"), *cells)
    for key in ("steps_to_loss_target", "steps_to_loss_posttrained", "steps_to_loss_scratch", "steps_to_loss_ratio"):
        if key in m:
            table.add_row(key, *([f"{m[key]:.4g}"] + [""] * (len(columns) - 1)))
    return table


def posttrain(
    base: Annotated[str, typer.Option("--base", help="the registered model to post-train")],
    mode: Annotated[Mode, typer.Option(help="unsupervised | supervised | action | reward")],
    method: Annotated[Method, typer.Option(help="full | lora | heads")] = Method.lora,
    search: Annotated[Optional[str], typer.Option("--search", help="train on the clips this text search finds")] = None,
    search_clip: Annotated[Optional[str], typer.Option("--search-clip", help="or on the clips like this clip id")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="with --search / --search-clip: clips to take")] = 100,
    search_source: Annotated[Optional[list[str]], typer.Option(
        "--search-source", help="with --search / --search-clip: only clips of this source")] = None,
    save_as: Annotated[Optional[str], typer.Option("--save-as", help="dataset name for the search's hits")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="or a saved dataset: NAME[@VERSION]")] = None,
    clips_source: Annotated[Optional[str], typer.Option(
        "--clips-source", help='or the tokenized curated clips of this source ("*": every source)')] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank")] = 8,
    alpha: Annotated[int, typer.Option(help="LoRA alpha (update scaled by alpha / rank)")] = 16,
    target_module: Annotated[Optional[list[str]], typer.Option(
        "--target-module", help="LoRA target Linear layers (default: the family's trunk)")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="LoRA: store a merged plain model")] = False,
    resize_actions: Annotated[bool, typer.Option("--resize-actions", help="rebuild the action encoder for the "
                                                                          "episodes' action width")] = False,
    scratch: Annotated[bool, typer.Option("--scratch", help="also train the same-size model from scratch")] = False,
    steps: Annotated[Optional[int], typer.Option(help="budget in training steps")] = None,
    minutes: Annotated[Optional[float], typer.Option(help="or in minutes per phase (steps then cap it)")] = None,
    batch: Annotated[int, typer.Option(help="windows per step")] = 8,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 1e-4,
    horizons: Annotated[str, typer.Option(help="evaluation horizons (latent frames), comma-separated")] = "1,2,4",
    workers: Annotated[int, typer.Option(help="Ray Train workers (data parallel)")] = 1,
    gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker")] = False,
    name: Annotated[str, typer.Option(help="a name for the registry")] = "posttrained",
    seed: Annotated[int, typer.Option(help="seed of new weights and the data order")] = 0,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="start the job and return")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the final record as JSON")] = False,
    api: PosttrainApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Post-train a registered world model and follow the job with a progress bar; prints the before /
    after (/ scratch) table. Exit 1 if the job fails or is cancelled, 2 if the service refuses it."""
    from worldloom.cli.world_cmd import parse_horizons
    from worldloom.cli.world_train_cmd import record_table

    sources = [s for s in (search, search_clip, dataset, clips_source) if s is not None]
    if len(sources) != 1:
        raise typer.BadParameter("give one of --search TEXT, --search-clip ID, --dataset NAME[@V] or --clips-source")
    body: dict[str, Any] = {"name": name, "base_model": base, "mode": mode.value, "method": method.value,
                            "baselines": ["scratch"] if scratch else [], "batch": batch, "lr": lr,
                            "eval_horizons": parse_horizons(horizons), "workers": workers, "use_gpu": gpu,
                            "seed": seed}
    if steps is not None:
        body["steps"] = steps
    if minutes is not None:
        body["minutes"] = minutes
    if method is Method.lora:
        body["lora"] = {"rank": rank, "alpha": alpha, "target_modules": target_module or None}
        body["merge"] = merge
    if resize_actions:
        body["resize_actions"] = True
    if search is not None or search_clip is not None:
        query: dict[str, Any] = {"text": search} if search is not None else {"clip_id": search_clip}
        body["search"] = {**query, "top_k": top_k, "filters": {"sources": search_source or []}, "save_as": save_as}
    elif dataset is not None:
        body["dataset"] = dataset_ref(dataset)
    else:
        body["clips"] = {"source": None if clips_source in ("*", "") else clips_source}
    with connected("posttrain", api, token) as client:
        record = client.posttrain(body)
        mid = record["model_id"]
        lineage = record.get("lineage") or {}
        console.print(f"started [bold]{mid}[/] ({mode.value} / {method.value} on {base}) with "
                      f"{', '.join(lineage.get('datasets') or [])}: {lineage.get('train_clips', 0)} clips, "
                      f"{lineage.get('val_clips', 0)} held out")
        if not no_wait:
            record = follow_or_detach(client, mid, record, "model", fetch=client.world_job)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
    elif no_wait:
        typer.echo(mid)
    else:
        console.print(record_table(record))
        if (table := comparison_table(record)) is not None:
            console.print(table)
    if not no_wait and record["state"] != "succeeded":
        raise typer.Exit(1)
