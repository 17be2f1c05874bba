"""Regenerates the Python protobuf modules from proto/ (run: python -m worldloom.core.protogen).

Generated modules are committed so that services need no protoc at run time; a test regenerates them
into a temp dir and fails when the committed copies are stale.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[5] / "proto"
OUT_DIR = Path(__file__).resolve().parent / "pb"
PROTO_FILES = ["worldloom/v1/events.proto"]


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc (grpcio-tools) and flattens worldloom/v1/x_pb2.py into out_dir/x_pb2.py."""
    import grpc_tools
    from grpc_tools import protoc  # dev dependency only

    include = Path(grpc_tools.__file__).parent / "_proto"
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={tmp}", f"--pyi_out={tmp}"]
        if protoc.main(args + [str(PROTO_ROOT / f) for f in PROTO_FILES]) != 0:
            raise RuntimeError("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in PROTO_FILES:
            stem = Path(f).with_suffix("")
            for suffix in ("_pb2.py", "_pb2.pyi"):
                src = Path(tmp) / f"{stem}{suffix}"
                dst = out_dir / src.name
                shutil.copyfile(src, dst)
                written.append(dst)
    return written


if __name__ == "__main__":
    for path in generate(OUT_DIR):
        print(f"wrote {path}", file=sys.stderr)
