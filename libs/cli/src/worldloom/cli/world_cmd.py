"""`worldloom predict` and `worldloom model eval`: world-model predictions from the generate service.

Both talk to the generate model server (KServe): ``predict`` to its video route
``POST /v1/models/<id>:video``, ``model eval`` to the Open Inference Protocol v2 route
``POST /v2/models/<id>/infer`` (JSON). The server's base URL comes from ``--api``, else
``WORLDLOOM_CLI_GENERATE_URL``, else the gateway (see :mod:`worldloom.cli.config`).

Both also take a robot-episode folder (``videos/<split>/<id>/rgb.mp4`` + ``annotation/<split>/<id>.json``
with ``action``, BridgeData V2 / Cosmos layout, read by :func:`worldloom.cli.episodes_cmd.read_episodes`):
then the episode's own actions go with its context, one row per video-frame transition
(``actions[i]`` leads from frame i to frame i + 1), which the server pools per latent frame.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.cli.common import GenerateApiOpt, TokenOpt, api_errors, console, open_client, video_files
from worldloom.cli.episodes_cmd import RobotEpisode, read_episodes
from worldloom.cli.ingest_cmd import short_path

model_app = typer.Typer(help="Train world models (train service) and evaluate them (generate service).", no_args_is_help=True)

#: largest side of decoded frames (the generate server refuses bigger context frames)
MAX_SIDE = 1024
#: answers that concern the model, the server or the credentials rather than one video: stop at once
_FATAL_STATUS = (401, 403, 404, 503)


# ----------------------------------------------------------------------------------------- helpers


def read_video(path: Path, frames: int | None) -> np.ndarray:
    """The first ``frames`` frames (all when None) as uint8 ``[T, H, W, 3]``, longest side <= MAX_SIDE.
    Raises :class:`~worldloom.video.errors.VideoRejected` for files that cannot be decoded."""
    from worldloom.video.decode import read_frames

    arr, _ = read_frames(path, end_frame=frames, max_side=MAX_SIDE)
    return arr


def frame_metrics(pred: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of uint8 ``[T, H, W, 3]`` frames against the real ones."""
    from worldloom.models.tokenizer.data import frames_to_tensor
    from worldloom.models.tokenizer.metrics import psnr, ssim

    p, r = frames_to_tensor(pred)[None], frames_to_tensor(real)[None]
    return float(psnr(p, r)[0]), float(ssim(p, r)[0])


def load_actions(path: Path) -> list[Any]:
    """Action rows from a .npy (no pickles) or .json file: ``[N, D]`` floats or ``[N]`` ids."""
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}", param_hint="--actions")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".json":
            doc = json.loads(path.read_text())
            if not isinstance(doc, list):
                raise ValueError("the JSON file must hold a list of action rows")
            arr = np.asarray(doc)
        else:
            raise ValueError("use a .npy or .json file")
        return action_array(arr).tolist()
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--actions") from None


def action_array(rows: Any) -> np.ndarray:
    """Action rows as float32 ``[N, D]`` (continuous) or int64 ``[N]`` (discrete ids); ValueError otherwise."""
    try:
        arr = np.asarray(rows)
    except ValueError:
        arr = np.asarray([], dtype=object)  # ragged rows
    if arr.dtype.kind not in "iuf" or arr.ndim not in (1, 2) or arr.size == 0:
        raise ValueError(f"actions must be a non-empty [N, D] float or [N] integer array; got shape "
                         f"{list(arr.shape)} {arr.dtype}")
    if arr.dtype.kind == "f" or arr.ndim == 2:
        return arr.astype(np.float32).reshape(arr.shape[0], -1)
    return arr.astype(np.int64)


def episode_folder(path: Path) -> bool:
    """A robot-episode folder (``annotation/<split>/<id>.json`` beside ``videos/``) rather than videos."""
    return path.is_dir() and (path / "annotation").is_dir()


def _parse_resolution(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.lower().split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value, value]
    h, w = (int(p) for p in parts)
    return h, w


def parse_horizons(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise typer.BadParameter(f"--horizons takes positive integers like 1,4,8; got {text!r}")
    return values


def v2_request(context: np.ndarray, parameters: dict[str, Any], actions: np.ndarray | None = None) -> dict[str, Any]:
    """Open Inference Protocol v2 JSON body: uint8 context frames (+ action rows) + scalar parameters."""
    inputs = [{"name": "context_frames", "datatype": "UINT8", "shape": list(context.shape),
               "data": context.reshape(-1).tolist()}]
    if actions is not None:
        inputs.append({"name": "actions", "datatype": "FP32" if actions.dtype.kind == "f" else "INT64",
                       "shape": list(actions.shape), "data": actions.reshape(-1).tolist()})
    return {"inputs": inputs, "parameters": parameters}


def v2_frames(response: dict[str, Any]) -> np.ndarray:
    for out in response.get("outputs") or []:
        if out.get("name") == "frames":
            return np.asarray(out["data"], dtype=np.uint8).reshape(out["shape"])
    raise ApiFailure(502, "bad_response", "the v2 response has no 'frames' output")


# -------------------------------------------------------------------------------------------- predict


def predict(
    model: Annotated[str, typer.Option("--model", "-m", help="world-model id served by the generate server")],
    context: Annotated[Path, typer.Option(
        "--context", "-c", help="context video, or a robot-episode folder (with --episode: its video and actions); "
                                "the first frames start the prediction")],
    frames: Annotated[int, typer.Option("--frames", "-n", min=1, help="video frames to predict")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output file: .mp4 or .gif")],
    actions: Annotated[Optional[Path], typer.Option(
        help=".npy or .json action rows: one per latent transition, or one per video-frame transition "
             "(pooled by the server); with an episode folder, instead of the episode's own")] = None,
    episode: Annotated[Optional[str], typer.Option(
        help="with an episode folder as --context: the episode id (default: the first one of --split)")] = None,
    split: Annotated[Optional[str], typer.Option(help="with an episode folder as --context: its split, e.g. val")] = None,
    context_frames: Annotated[int, typer.Option(
        "--context-frames", min=1, help="context frames to send (the first ones); the server keeps the latest "
                                        "1 + k*tc that fit the model's window")] = 5,
    seed: Annotated[Optional[int], typer.Option(help="sampling seed (default: the server picks one and says which)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="diffusion models: sampling steps")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="autoregressive models: sampling temperature")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="autoregressive models: top-k sampling")] = None,
    cfg_scale: Annotated[Optional[float], typer.Option("--cfg-scale", help="diffusion models: guidance scale")] = None,
    text: Annotated[Optional[str], typer.Option(help="text prompt (models trained with text)")] = None,
    fps: Annotated[Optional[float], typer.Option(help="frame rate of the output (default: the server's)")] = None,
    api: GenerateApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Predict the frames that follow a context video and save them as an MP4 or GIF."""
    from worldloom.video.errors import VideoRejected

    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("mp4", "gif"):
        raise typer.BadParameter(f"the output must end in .mp4 or .gif, got {out.name!r}", param_hint="--out")
    ep = pick_episode(context, split, episode) if episode_folder(context) else None
    if ep is None:
        if episode is not None or split is not None:
            raise typer.BadParameter(f"{context} is not an episode folder (no annotation/ in it): --episode and "
                                     "--split need one", param_hint="--context")
        if not context.is_file():
            raise typer.BadParameter(f"no such file: {context}", param_hint="--context")
    video_path = ep.video if ep is not None else context
    action_rows = load_actions(actions) if actions is not None else None
    try:
        ctx = read_video(video_path, context_frames)
    except VideoRejected as exc:
        console.print(f"[red]cannot read the context video {video_path}: {exc.code}: {exc.reason}")
        raise typer.Exit(1) from None
    if ctx.shape[0] == 0:
        console.print(f"[red]the context video {video_path} has no frames")
        raise typer.Exit(1)
    if ep is not None and action_rows is None:
        action_rows = _episode_rows(ep, ctx.shape[0], frames, model, seed, api, token)
    body: dict[str, Any] = {
        "context_frames": {"shape": list(ctx.shape), "b64": base64.b64encode(ctx.tobytes()).decode()},
        "num_frames": frames, "format": fmt,
    }
    optional = {"actions": action_rows, "seed": seed, "steps": steps, "temperature": temperature, "top_k": top_k,
                "cfg_scale": cfg_scale, "text": text, "fps": fps}
    body.update({k: v for k, v in optional.items() if v is not None})
    client = open_client("generate", api, token)
    try:
        with api_errors(client.api), console.status(f"predicting {frames} frames with {model}"):
            data, headers = client.generate_video(model, body)
    finally:
        client.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    used_seed, n = headers.get("x-seed", "?"), headers.get("x-frames", str(frames))
    used_ctx = headers.get("x-context-frames-used", "?")
    source = f" of episode {ep.label}" + (f" ({ep.texts[0]})" if ep.texts else "") if ep is not None else ""
    typer.echo(f"wrote {out}: {n} frames, seed {used_seed}, {used_ctx} of {ctx.shape[0]} context frames{source} used"
               + (f", {len(action_rows)} action rows" if action_rows is not None else ""))
    if seed is None:
        console.print(f"reproduce with --seed {used_seed}")


def pick_episode(folder: Path, split: str | None, episode: str | None) -> RobotEpisode:
    """The episode ``episode`` (or the first one) of ``folder``'s ``split`` (or any split)."""
    found, refused = read_episodes(folder, split)
    if episode is not None:
        found = [e for e in found if episode in (e.episode, e.label, e.video.parent.name)]
    if not found:
        which = f"episode {episode!r}" if episode is not None else "an episode"
        reasons = "; ".join(f"{short_path(r.path)}: {r.detail}" for r in refused[:3])
        raise typer.BadParameter(f"{folder} has no usable {which}" + (f" in split {split!r}" if split else "")
                                 + (f" ({reasons})" if reasons else ""), param_hint="--context")
    return found[0]


def _episode_rows(ep: RobotEpisode, sent: int, frames: int, model: str, seed: int | None, api: str | None,
                  token: str | None) -> list[Any]:
    """The episode's rows for this request: one per video-frame transition of the sent context and the
    predicted latent frames (``sent + ceil(frames / tc) * tc - 1``; tc asked from the server)."""
    try:
        rows = action_array(ep.actions)
    except ValueError as exc:
        console.print(f"[red]episode {ep.label}: {exc}")
        raise typer.Exit(1) from None
    client = open_client("generate", api, token)
    try:
        with api_errors(client.api), console.status(f"asking {model} for its temporal compression"):
            tc = probe_model(client, model, 0 if seed is None else seed).tc
    finally:
        client.close()
    need = sent + -(-frames // tc) * tc - 1
    if rows.shape[0] < need:
        console.print(f"[red]episode {ep.label} has {rows.shape[0]} action rows; {sent} context frames + "
                      f"{-(-frames // tc) * tc} predicted (tc={tc}) need {need}: predict fewer --frames")
        raise typer.Exit(1)
    return rows[:need].tolist()


# ----------------------------------------------------------------------------------------------- eval


@dataclass
class ModelInfo:
    model_id: str
    family: str
    resolution: tuple[int, int]
    tc: int  # video frames per latent frame (the tokenizer's temporal compression)


def probe_model(client: WorldloomClient, model_id: str, seed: int) -> ModelInfo:
    """Resolution, family and temporal compression ``tc`` of a served model, from a one-frame prediction.

    The v2 metadata says nothing about the model, so: a 9-frame grey context (``1 + 8``: two latent
    frames for any ``tc`` up to 8) gives ``context_frames_used = 1 + (context_latent_frames - 1) * tc``.
    When that cannot tell (a one-latent window, or a server allowing fewer context frames),
    ``predicted_latent_frames = ceil(num_frames / tc)`` does: ``num_frames = t + 1`` needs two latent
    frames exactly when ``tc <= t``.
    """
    def ask(context_len: int, num_frames: int) -> dict[str, Any]:
        ctx = np.full((context_len, 16, 16, 3), 127, np.uint8)
        return client.infer(model_id, v2_request(ctx, {"num_frames": num_frames, "seed": seed}))["parameters"]

    tc = None
    try:
        params = ask(9, 1)
        used, lc = int(params["context_frames_used"]), int(params["context_latent_frames"])
        if lc > 1:
            tc = (used - 1) // (lc - 1)
    except ApiFailure as exc:
        if exc.status != 400:
            raise
    if tc is None:  # the loop below sets params
        for t in (1, 2, 4, 8, 16, 32):
            params = ask(1, t + 1)
            if int(params["predicted_latent_frames"]) >= 2:
                tc = t
                break
        else:
            raise ApiFailure(502, "bad_response", f"cannot tell the temporal compression of {model_id}")
    return ModelInfo(model_id, str(params.get("family", "?")), _parse_resolution(params["resolution"]), tc)


@dataclass
class VideoEval:
    path: str
    error: str | None = None
    context_frames_used: int | None = None
    #: horizon -> {"frames": [first, last] (1-based video frame numbers), "model": {psnr, ssim}, "copy_last": {...}}
    horizons: dict[int, dict[str, Any]] = field(default_factory=dict)
    episode: str | None = None  # "<split>/<id>" for a robot episode
    actions_sent: int | None = None  # action rows sent with the context (episodes)


@dataclass
class EvalItem:
    """One video to score: a plain file, or an episode of a folder (with its actions unless left out)."""

    path: Path
    episode: RobotEpisode | None = None
    send_actions: bool = True


def eval_items(paths: list[Path], split: str | None, send_actions: bool) -> tuple[list[EvalItem], list[VideoEval]]:
    """Episode folders expand into their episodes (of ``split`` when given), other paths into videos; the
    folder's unusable episodes come back as failed rows."""
    items: list[EvalItem] = []
    failed: list[VideoEval] = []
    plain = [p for p in paths if not episode_folder(p)]
    for folder in (p for p in paths if episode_folder(p)):
        found, refused = read_episodes(folder, split)
        if not found and not refused:
            raise typer.BadParameter(f"{folder} has no episodes" + (f" in split {split!r}" if split else "")
                                     + " (annotation/<split>/<id>.json)")
        items += [EvalItem(e.video, e, send_actions) for e in found]
        failed += [VideoEval(str(r.path), error=f"rejected: {r.detail}") for r in refused]
    if plain:
        items += [EvalItem(f) for f in video_files(plain)]
    return items, failed


def evaluate_video(client: WorldloomClient, info: ModelInfo, path: Path | EvalItem, context_frames: int,
                   horizons: list[int], seed: int) -> VideoEval:
    """Scores one video (an :class:`EvalItem` for an episode: its actions go with the context, one row per
    video-frame transition: ``context_frames + max(h) * tc - 1`` rows)."""
    from worldloom.models.frames import fit_frames
    from worldloom.video.errors import VideoRejected

    item = path if isinstance(path, EvalItem) else EvalItem(path)
    path, ep = item.path, item.episode

    def failed(error: str) -> VideoEval:
        return VideoEval(str(path), error=error, episode=ep.label if ep else None)

    tc, need = info.tc, max(horizons) * info.tc
    actions = None
    if ep is not None and item.send_actions:
        try:
            rows = action_array(ep.actions)
        except ValueError as exc:
            return failed(f"bad_actions: {exc}")
        if rows.shape[0] < context_frames + need - 1:
            return failed(f"too_few_actions: {rows.shape[0]} rows; horizon {max(horizons)} needs one per frame "
                          f"transition: {context_frames} + {need} - 1 = {context_frames + need - 1}")
        actions = rows[: context_frames + need - 1]
    try:
        video = read_video(path, context_frames + need)
    except VideoRejected as exc:
        return failed(f"{exc.code}: {exc.reason}")
    if video.shape[0] < context_frames + need:
        return failed(f"too_short: {video.shape[0]} frames; horizon {max(horizons)} needs "
                      f"{context_frames} context + {max(horizons)} x {tc} = {context_frames + need}")
    video = fit_frames(video, info.resolution)  # as the server fits the context
    ctx, real = video[:context_frames], video[context_frames:]
    try:
        res = client.infer(info.model_id, v2_request(ctx, {"num_frames": need, "seed": seed}, actions))
    except ApiFailure as exc:
        if exc.status in _FATAL_STATUS:
            raise
        if exc.status == 400 and exc.message.startswith("num_frames="):  # the same for every video
            raise ApiFailure(exc.status, exc.code, f"{exc.message}; horizon {max(horizons)} needs {need} frames "
                                                   f"(tc={tc}): use smaller --horizons") from None
        return failed(f"{exc.code}: {exc.message}")
    pred = v2_frames(res)
    if pred.shape != real.shape:
        return failed(f"bad_response: predicted frames {list(pred.shape)}, expected {list(real.shape)}")
    copy_last = np.repeat(ctx[-1:], tc, axis=0)
    result = VideoEval(str(path), context_frames_used=int(res.get("parameters", {}).get("context_frames_used", 0)),
                       episode=ep.label if ep else None, actions_sent=None if actions is None else len(actions))
    for h in horizons:
        block = slice((h - 1) * tc, h * tc)
        p_model = frame_metrics(pred[block], real[block])
        p_copy = frame_metrics(copy_last, real[block])
        result.horizons[h] = {"frames": [context_frames + (h - 1) * tc + 1, context_frames + h * tc],
                              "model": {"psnr": p_model[0], "ssim": p_model[1]},
                              "copy_last": {"psnr": p_copy[0], "ssim": p_copy[1]}}
    return result


def eval_means(rows: list[VideoEval], horizons: list[int]) -> dict[str, Any]:
    ok = [r for r in rows if r.error is None]
    means: dict[str, Any] = {"videos": len(ok), "horizons": {}}
    for h in horizons:
        entry = {}
        for method in ("model", "copy_last"):
            entry[method] = ({m: sum(r.horizons[h][method][m] for r in ok) / len(ok) for m in ("psnr", "ssim")}
                             if ok else None)
        means["horizons"][h] = entry
    return means


def eval_table(info: ModelInfo, rows: list[VideoEval], horizons: list[int], context_frames: int, seed: int) -> Table:
    rh, rw = info.resolution
    table = Table(title=f"world model {info.model_id} ({info.family}, {rh}x{rw}, tc={info.tc}): {context_frames} "
                        f"context frames, seed {seed}", title_justify="left",
                  caption=f"PSNR dB / SSIM; horizon h = video frames {context_frames}+(h-1)*{info.tc}+1 .. "
                          f"{context_frames}+h*{info.tc} (the h-th latent frame after the context)",
                  caption_justify="left")
    table.add_column("video", overflow="fold")
    table.add_column("method", overflow="fold", max_width=48)
    for h in horizons:
        a, b = context_frames + (h - 1) * info.tc + 1, context_frames + h * info.tc
        table.add_column(f"h={h} (frames {a}-{b})", justify="right")
    blank = ["-"] * len(horizons)

    def cells(values: dict[int, dict[str, Any]], method: str, bold: bool = False) -> list[str]:
        out = []
        for h in horizons:
            v = values[h][method]
            text = "-" if v is None else f"{v['psnr']:.2f} / {v['ssim']:.3f}"
            out.append(f"[bold]{text}" if bold and v is not None else text)
        return out

    for r in rows:
        name = r.episode or short_path(Path(r.path))
        if r.error is not None:
            table.add_row(name, f"[red]failed: {r.error}", *blank)
            continue
        table.add_row(name, "model", *cells(r.horizons, "model"))
        table.add_row("", "copy-last", *cells(r.horizons, "copy_last"))
    mean = eval_means(rows, horizons)
    table.add_section()
    label = f"[bold]mean of {mean['videos']} video(s)" + (f", {len(rows) - mean['videos']} failed" if
                                                         len(rows) > mean["videos"] else "")
    table.add_row(label, "model", *cells(mean["horizons"], "model", bold=True))
    table.add_row("", "copy-last", *cells(mean["horizons"], "copy_last", bold=True))
    return table


@model_app.command("eval")
def eval_(
    paths: Annotated[list[Path], typer.Argument(
        help="video files or folders (searched recursively), or robot-episode folders (annotation/<split>/<id>.json "
             "+ videos/<split>/<id>/rgb.mp4: each episode scored with its own actions)")],
    model: Annotated[str, typer.Option("--model", "-m", help="world-model id served by the generate server")],
    context_frames: Annotated[int, typer.Option("--context-frames", min=1,
                                                help="C: the video's first C frames are the context")] = 5,
    horizons: Annotated[str, typer.Option(help="comma-separated horizons h (see above)")] = "1,4,8",
    seed: Annotated[int, typer.Option(help="sampling seed of every prediction")] = 0,
    split: Annotated[Optional[str], typer.Option(help="episode folders: only this split (e.g. val)")] = None,
    send_actions: Annotated[bool, typer.Option(
        "--actions/--no-actions", help="episode folders: send each episode's actions (--no-actions: context "
                                       "only, for models without actions or to see what the actions add)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    api: GenerateApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Prediction quality of a world model on local videos or robot episodes, next to the copy-last-frame baseline.

    For each video the first C frames are the context; the model predicts what follows (one v2
    request per video, enough frames for the largest horizon). Horizon h is the h-th block of tc
    frames after the context, tc = the model tokenizer's temporal compression (video frames per
    latent frame): video frames C+(h-1)*tc+1 .. C+h*tc (1-based). For C=5, tc=4: h=1 is frames
    6-9, h=4 is frames 18-21. Real frames are centre-cropped and resized to the model's resolution
    the same way the server fits the context. PSNR (dB) and SSIM of the model's frames and of the
    last context frame repeated (copy-last) against the real frames, per video and their mean.
    An episode folder's episodes send their actions with the context: rows 1 .. C + max(h)*tc - 1
    (one per video-frame transition; the server pools them per latent frame).
    Exit 1 if any video failed (the reason is shown), 2 for a server or model problem.
    """
    hs = parse_horizons(horizons)
    files, refused = eval_items(paths, split, send_actions)
    client = open_client("generate", api, token)
    rows: list[VideoEval] = []
    try:
        with api_errors(client.api):
            with console.status(f"asking {model} for its resolution and temporal compression"):
                info = probe_model(client, model, seed)
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task("evaluating", total=len(files))
                for f in files:
                    name = f.episode.label if f.episode else f.path.name
                    progress.update(task, description=f"{name[:32]:<32}")
                    rows.append(evaluate_video(client, info, f, context_frames, hs, seed))
                    progress.advance(task)
    finally:
        client.close()
    rows += refused
    if as_json:
        doc = {"model_id": info.model_id, "family": info.family, "resolution": list(info.resolution),
               "t_compression": info.tc, "context_frames": context_frames, "horizons": hs, "seed": seed,
               "videos": [{"path": r.path, "episode": r.episode, "error": r.error,
                           "context_frames_used": r.context_frames_used, "actions_sent": r.actions_sent,
                           "horizons": {str(h): v for h, v in r.horizons.items()}} for r in rows],
               "mean": {**(m := eval_means(rows, hs)), "horizons": {str(h): v for h, v in m["horizons"].items()}},
               "failed": sum(r.error is not None for r in rows)}
        typer.echo(json.dumps(doc, indent=2))
    else:
        Console().print(eval_table(info, rows, hs, context_frames, seed))
        for r in rows:
            if r.error:
                console.print(f"[red]{r.path}: {r.error}")
    if any(r.error for r in rows):
        raise typer.Exit(1)
