"""The post-training size table: counts add up and the adapter file is a small part of the model file."""

from __future__ import annotations

from pathlib import Path

import bench_posttrain_sizes as bench
import torch

from worldloom.models.posttrain import LoraOptions


def test_rows_tiny(tmp_path: Path) -> None:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = bench.rows("diffusion", "tiny", LoraOptions(rank=4, alpha=8), tmp_path)
    finally:
        torch.set_num_threads(n)
    by = {r[2]: r for r in rows}
    assert set(by) == {"full", "lora", "heads"}
    count = {m: int(r[3].replace(",", "")) for m, r in by.items()}
    assert count["lora"] < count["full"] and count["heads"] < count["full"]
    assert by["full"][4] == by["full"][3]  # full: everything trains
    share = float(by["lora"][6].split("(")[1].rstrip("%)"))
    assert 0 < share < 10
