"""`worldloom rl run | show | cancel | policies | eval`: agents trained inside a world model (the rlsim service).

The rlsim service's base URL comes from ``--api``, else ``WORLDLOOM_CLI_RLSIM_URL``, else the gateway
(see :mod:`worldloom.cli.config`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worldloom.cli.client import WorldloomClient
from worldloom.cli.common import RlsimApiOpt, TokenOpt, connected, console
from worldloom.cli.tokenizer_cmd import latest

rl_app = typer.Typer(
    help="Agents that learn inside a world model on a budget of real environment steps.", no_args_is_help=True
)

TERMINAL = ("succeeded", "failed", "cancelled")


def _ret(record: dict[str, Any], curve: str) -> str:
    value = latest(record, curve)
    return "-" if value is None else f"{value:.1f}"


def follow(client: WorldloomClient, record: dict[str, Any], poll_s: float = 1.0) -> dict[str, Any]:
    """Polls an experiment until it ends: a bar over real steps with the latest real and imagined returns."""
    eid = record["experiment_id"]
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("real steps {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(eid, total=record.get("total_steps") or 1, stats="")
        while True:
            stats = (
                f"return {_ret(record, 'real_return')}  imagined {_ret(record, 'imagined_return')}  "
                f"iteration {(record.get('notes') or {}).get('iteration', 0)}  {record['state']}"
            )
            progress.update(task, completed=record.get("step", 0), total=record.get("total_steps") or 1, stats=stats)
            if record["state"] in TERMINAL:
                return record
            time.sleep(poll_s)
            record = client.experiment(eid)


def experiment_table(record: dict[str, Any]) -> Table:
    table = Table(
        title=f"{record['experiment_id']} ({record['env_id']}, {record['resolution']}px): {record['state']}, "
        f"{record.get('percent', 0):.0f}%",
        title_justify="left",
        min_width=44,
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted((record.get("metrics") or {}).items()):
        value = float(value)
        table.add_row(name, f"{value:.0f}" if value.is_integer() else f"{value:.3f}")
    for curve in ("real_return", "imagined_return", "world_model_loss", "imagined_steps_per_s"):
        if (v := latest(record, curve)) is not None:
            table.add_row(f"last {curve}", f"{v:.3f}")
    lineage = record.get("lineage") or {}
    table.add_row("policy", str(lineage.get("policy_id") or "-"))
    table.add_row("world model from", str(lineage.get("base_world_model") or "new"))
    if record.get("error"):
        table.add_row("error", f"[red]{record['error']}")
    return table


@rl_app.command("run")
def run(
    env: Annotated[str, typer.Option("--env", help="Gymnasium id (the server's allow-list)")],
    steps: Annotated[int, typer.Option(help="budget of real environment steps")],
    resolution: Annotated[int, typer.Option(help="observation pixels per side")] = 64,
    model: Annotated[Optional[str], typer.Option("--model", help="start from this registered world model")] = None,
    family: Annotated[str, typer.Option(help="a new world model's family: ar | diffusion")] = "ar",
    size: Annotated[str, typer.Option(help="a new world model's size preset")] = "tiny",
    tokenizer: Annotated[
        Optional[str],
        typer.Option(
            "--tokenizer", help="a trained tokenizer for a new world model (default: the experiment trains one)"
        ),
    ] = None,
    tokenizer_steps: Annotated[int, typer.Option("--tokenizer-steps", help="when the experiment trains it")] = 300,
    warmup: Annotated[int, typer.Option(help="random-policy real steps before the first update")] = 2000,
    per_iteration: Annotated[int, typer.Option("--per-iteration", help="real steps collected per iteration")] = 1000,
    eval_episodes: Annotated[int, typer.Option("--eval-episodes", help="real evaluation episodes per iteration")] = 5,
    wm_updates: Annotated[int, typer.Option("--wm-updates", help="world-model steps per iteration")] = 100,
    agent_updates: Annotated[int, typer.Option("--agent-updates", help="imagination updates per iteration")] = 50,
    seed: Annotated[int, typer.Option(help="seed of the episodes, weights and imagination")] = 0,
    gpu: Annotated[bool, typer.Option("--gpu", help="train on a GPU")] = False,
    extra: Annotated[
        Optional[str],
        typer.Option("--request", help='JSON merged into the request (e.g. \'{"agent": {"horizon": 32}}\')'),
    ] = None,
    name: Annotated[str, typer.Option(help="a name for the registry")] = "experiment",
    poll: Annotated[float, typer.Option(help="seconds between progress polls")] = 1.0,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="start the experiment and return")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the final record as JSON")] = False,
    api: RlsimApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run an experiment and follow it with a progress bar (real steps, return).

    Exit 1 if it fails or is cancelled, 2 if the service refuses the request."""
    world: dict[str, Any] = {"updates": wm_updates}
    if model is not None:
        world["model_id"] = model
    else:
        world |= {"family": family, "size": size}
        world |= {"tokenizer_id": tokenizer} if tokenizer else {"tokenizer": {"steps": tokenizer_steps}}
    body: dict[str, Any] = {
        "name": name,
        "env_id": env,
        "steps": steps,
        "resolution": resolution,
        "warmup_steps": warmup,
        "steps_per_iteration": per_iteration,
        "eval_episodes": eval_episodes,
        "seed": seed,
        "use_gpu": gpu,
        "world_model": world,
        "agent": {"updates": agent_updates},
    }
    if extra:
        try:
            patch = json.loads(extra)
        except ValueError as exc:
            raise typer.BadParameter(f"--request is not JSON: {exc}") from None
        for key, value in patch.items():
            body[key] = {**body[key], **value} if isinstance(value, dict) and isinstance(body.get(key), dict) else value
    with connected("rlsim", api, token) as client:
        record = client.start_experiment(body)
        eid = record["experiment_id"]
        console.print(f"started [bold]{eid}[/] on {env} ({resolution}x{resolution} pixels, {steps} real steps)")
        if not no_wait:
            try:
                record = follow(client, record, poll)
            except KeyboardInterrupt:
                console.print(
                    f"\n[yellow]stopped waiting; {eid} keeps running on the service.[/]\n"
                    f"  progress: worldloom rl show {eid}\n  cancel:   worldloom rl cancel {eid}"
                )
                raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(record, indent=2))
    elif no_wait:
        typer.echo(eid)
    else:
        console.print(experiment_table(record))
        typer.echo((record.get("lineage") or {}).get("policy_id") or eid)
    if not no_wait and record["state"] != "succeeded":
        raise typer.Exit(1)


@rl_app.command("show")
def show(
    experiment_id: Annotated[str, typer.Argument(help="experiment id")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    api: RlsimApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """State, percent, real steps, curves' latest values and metrics of an experiment."""
    with connected("rlsim", api, token) as client:
        record = client.experiment(experiment_id)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
    else:
        console.print(experiment_table(record))


@rl_app.command("cancel")
def cancel(
    experiment_id: Annotated[str, typer.Argument(help="experiment id")], api: RlsimApiOpt = None, token: TokenOpt = None
) -> None:
    """Cancel a queued or running experiment."""
    with connected("rlsim", api, token) as client:
        record = client.cancel_experiment(experiment_id)
    console.print(f"{experiment_id}: {record['state']}")


@rl_app.command("policies")
def policies(
    as_json: Annotated[bool, typer.Option("--json")] = False, api: RlsimApiOpt = None, token: TokenOpt = None
) -> None:
    """The policy registry."""
    with connected("rlsim", api, token) as client:
        items = client.policies()
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(title="policies", title_justify="left")
    for col in ("policy", "env", "experiment", "real steps", "final return"):
        table.add_column(col)
    for p in items:
        table.add_row(
            p["policy_id"],
            p["env_id"],
            p["lineage"]["experiment_id"],
            str(p["lineage"]["real_steps"]),
            f"{p['metrics'].get('final_return', float('nan')):.1f}",
        )
    console.print(table)


@rl_app.command("eval")
def evaluate(
    policy_id: Annotated[str, typer.Argument(help="policy id (pol-...)")],
    episodes: Annotated[int, typer.Option(help="real episodes")] = 10,
    seed: Annotated[Optional[int], typer.Option(help="first seed (default: past every seed of the experiment)")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="sample actions instead of the most likely")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="save the first episode's MP4 here")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    api: RlsimApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run a policy in its real env on seeds it never trained on: returns, and the first episode as a video."""
    body: dict[str, Any] = {"episodes": episodes, "deterministic": not sample, "video": True}
    if seed is not None:
        body["seed"] = seed
    with connected("rlsim", api, token) as client:
        result = client.evaluate_policy(policy_id, body)
        if out is not None and result.get("video_url"):
            out.write_bytes(client.download(result["video_url"]))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(
        title=f"{policy_id} on {result['env_id']}: mean return {result['mean_return']:.1f} "
        f"(std {result['std_return']:.1f})",
        title_justify="left",
    )
    table.add_column("seed", justify="right")
    table.add_column("return", justify="right")
    table.add_column("steps", justify="right")
    for s, r, n in zip(result["seeds"], result["returns"], result["lengths"], strict=True):
        table.add_row(str(s), f"{r:.1f}", str(n))
    console.print(table)
    console.print(f"video: {out or result.get('video_uri')}")
