"""Tokenizer checkpoints: safetensors + JSON round trip, and refusal of anything that is not safetensors."""

import contextlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from worldloom.models.tokenizer.checkpoint import (
    CheckpointError,
    load_checkpoint,
    optimizer_path,
    read_safetensors,
    save_checkpoint,
    sidecar_path,
)
from worldloom.models.tokenizer.model import CausalVideoTokenizer, Kind
from worldloom.models.tokenizer.train import train_step

MARKER = "pickle_ran.txt"


class _Exploit:
    """Unpickling this writes a marker file: proof that a loader executed pickle code."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


@contextlib.contextmanager
def _no_unpickling():
    """Any unpickling attempt inside the block fails loudly (patched only around loads: torch itself
    unpickles during lazy imports, e.g. the first optimizer)."""

    def boom(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("load", "loads", "Unpickler"):
            mp.setattr(pickle, name, boom)
        mp.setattr(torch, "load", boom)
        yield


def _trained(kind: Kind = "discrete") -> tuple[CausalVideoTokenizer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = CausalVideoTokenizer.from_preset("tiny", kind, attention=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_step(model, torch.rand(1, 3, 5, 16, 16) * 2 - 1, opt)
    return model, opt


def test_round_trip_weights_config_step_and_optimizer(tmp_path: Path):
    model, opt = _trained()
    path = save_checkpoint(tmp_path / "run" / "tok.safetensors", model, optimizer=opt, step=123,
                           extra={"loss": [0.5, 0.4]})
    assert path.is_file() and sidecar_path(path).is_file() and optimizer_path(path).is_file()
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["step"] == 123 and meta["config"]["kind"] == "discrete" and meta["optimizer"]["class"] == "AdamW"

    with _no_unpickling():
        plain, state = load_checkpoint(path)
    assert plain.config == model.config and not state.optimizer_restored
    loaded = CausalVideoTokenizer(model.config)
    opt2 = torch.optim.AdamW(loaded.parameters(), lr=0.5)
    with _no_unpickling():
        same, state = load_checkpoint(path, model=loaded, optimizer=opt2)
    assert same is loaded
    assert loaded.config == model.config
    assert state.step == 123 and state.extra == {"loss": [0.5, 0.4]} and state.optimizer_restored
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.eval().encode(video)[1], loaded.eval().encode(video)[1])
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-3 and tuple(s2["param_groups"][0]["betas"]) == (0.9, 0.999)
    for pid, slots in s1["state"].items():
        for key, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2["state"][pid][key])), (pid, key)
    # training continues from the restored state
    train_step(loaded, video, opt2)


def test_loads_from_file_metadata_without_sidecar(tmp_path: Path):
    model, _ = _trained("continuous")
    path = save_checkpoint(tmp_path / "tok.safetensors", model)
    sidecar_path(path).unlink()
    loaded, state = load_checkpoint(path)
    assert loaded.config == model.config and state.step == 0 and not state.optimizer_restored


def test_refuses_pickles_garbage_and_truncated_files(tmp_path: Path):
    model, _ = _trained("continuous")
    good = save_checkpoint(tmp_path / "good.safetensors", model)
    data = good.read_bytes()
    marker = tmp_path / MARKER

    cases: dict[str, bytes] = {}
    for proto in (0, 2, 5):
        cases[f"pickle{proto}"] = pickle.dumps({"w": _Exploit(marker)}, protocol=proto)
    buf = io.BytesIO()  # what torch.save writes: a zip with a pickle inside
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(_Exploit(marker)))
    cases["torch_save_zip"] = buf.getvalue()
    cases["garbage"] = bytes(range(256)) * 40
    cases["empty"] = b""
    cases["short"] = b"\x01\x02\x03"
    cases["truncated_data"] = data[: len(data) // 2]
    cases["truncated_header"] = data[:100]
    cases["header_not_json"] = (20).to_bytes(8, "little") + b"x" * 20 + b"\0" * 64

    expect = {"pickle": "pickle", "torch_save_zip": "zip", "truncated_data": "truncated"}
    for name, payload in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(payload)
        (tmp_path / f"{name}.json").write_text((tmp_path / "good.json").read_text())
        for loader in (read_safetensors, load_checkpoint):
            with _no_unpickling(), pytest.raises(CheckpointError) as info:
                loader(bad)
            msg = str(info.value)
            assert bad.name in msg
            assert expect.get(name.rstrip("0123456789"), "safetensors") in msg, (name, msg)
    assert not marker.exists()


def test_refuses_mismatched_sidecar_and_bad_paths(tmp_path: Path):
    a, _ = _trained("continuous")
    b = CausalVideoTokenizer(a.config)
    pa = save_checkpoint(tmp_path / "a.safetensors", a)
    pb = save_checkpoint(tmp_path / "b.safetensors", b)
    pa.write_bytes(pb.read_bytes())  # weights swapped under a's sidecar
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(pa)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_checkpoint(tmp_path / "x.pt", a)
    other = CausalVideoTokenizer.from_preset("tiny", "discrete", attention=False)
    with pytest.raises(CheckpointError, match="differs"):
        load_checkpoint(pb, model=other)
    with pytest.raises(ValueError, match="optimizer"):
        load_checkpoint(pb, optimizer=torch.optim.SGD(other.parameters(), lr=0.1))
