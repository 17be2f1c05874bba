"""Search latency p50/p99 through the HTTP API at 10k and 100k clips, and recall@10 vs exact search.

Fills a Milvus collection (a `milvus-lite server` process, as several processes share it) with synthetic clip rows (clustered unit vectors, like real caption
embeddings, plus the real scalar fields), starts the real search service as its own process on it,
sends real text queries over HTTP (each is embedded by MiniLM inside the service), and in the same
run computes the exact top-10 by brute force over the same vectors for recall@10.
Usage: python bench/bench_search.py [--sizes 10000 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from worldloom.core.catalog import TEXT_COLLECTION, clip_collections
from worldloom.core.vectors import VectorIndex
from worldloom.models.text_embedder import DIM, shared_text_embedder
from worldloom.testkit.milvus import MilvusServer
from worldloom.testkit.ports import free_port
from worldloom.video import visual_embed

WORDS = ("robot arm pot sink cloth spoon drawer cup towel kitchen table dragon snow mountain forest night "
         "bright dark fast slow camera pan zoom red blue green person walking car street").split()


def synthetic_rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    centers = rng.normal(size=(256, DIM)).astype(np.float32)
    vecs = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [{
        "id": f"{i:032x}", "vector": vecs[i].tolist(), "clip_id": f"{i:032x}", "kind": "caption",
        "video_id": f"{i // 8:064x}", "source": ("bridge", "sintel", "sim")[i % 3], "caption": f"synthetic clip {i}",
        "tags": [WORDS[i % len(WORDS)]], "duration_s": float(2 + i % 9), "start_s": 0.0, "end_s": float(2 + i % 9),
        "width": 640, "height": 480, "fps": 24.0, "motion": float(i % 7), "sharpness": 100.0, "brightness": 120.0,
        "config_hash": "bench", "phash": "",
    } for i in range(n)]
    return vecs, rows


def fill(db: str, n: int, rng: np.random.Generator) -> np.ndarray:
    index = VectorIndex(db)
    for spec in clip_collections(visual_embed.DIM, DIM):
        index.ensure_collection(spec)
    vecs, rows = synthetic_rows(n, rng)
    for i in range(0, n, 5000):
        index.upsert(TEXT_COLLECTION, rows[i : i + 5000])
    for _ in range(600):  # measure the built index, not brute force over still-growing segments
        info = index.client.describe_index(TEXT_COLLECTION, "vector")
        if info.get("pending_index_rows", 0) == 0 and info.get("indexed_rows", 0) >= n:
            break
        time.sleep(0.5)
    index.close()
    return vecs


def start_service(db: str, store: str, token: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "WORLDLOOM_SEARCH_HTTP__PORT": str(port), "WORLDLOOM_SEARCH_HTTP__API_TOKENS": token,
           "WORLDLOOM_SEARCH_VECTORS__URI": db, "WORLDLOOM_SEARCH_STORE__ROOT": store,
           "WORLDLOOM_SEARCH_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("worldloom-search"))], env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("search service did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    embedder = shared_text_embedder()
    queries = [" ".join(rng.choice(WORDS, size=4)) for _ in range(args.queries)]
    qvecs = embedder.encode(queries)
    print(f"{'clips':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'index p50':>10} {'recall@10':>10}"
          "  (HTTP round trip incl. MiniLM query embedding; index = Milvus search inside the service)")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp, MilvusServer() as milvus:
            db = milvus.uri
            t = time.perf_counter()
            vecs = fill(db, n, rng)
            fill_s = time.perf_counter() - t
            proc, url = start_service(db, str(Path(tmp) / "store"), "bench")
            try:
                client = httpx.Client(base_url=url, headers={"Authorization": "Bearer bench"}, timeout=30)
                for q in queries[:10]:  # warm-up: model, index load, connections
                    client.post("/v1/search", json={"text": q, "top_k": 10})
                lat, recalls, index_ms = [], [], []
                for q, qv in zip(queries, qvecs, strict=True):
                    start = time.perf_counter()
                    r = client.post("/v1/search", json={"text": q, "top_k": 10})
                    lat.append((time.perf_counter() - start) * 1000)
                    got = {h["clip_id"] for h in r.json()["hits"]}
                    index_ms.append(r.json()["took_ms"])
                    exact = {f"{i:032x}" for i in np.argsort(-(vecs @ qv))[:10]}
                    recalls.append(len(got & exact) / 10)
                client.close()
            finally:
                proc.terminate()
                proc.wait(10)
            lat.sort()
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            print(f"{n:>8} {statistics.median(lat):>8.1f} {p99:>8.1f} {statistics.mean(lat):>8.1f} "
                  f"{statistics.median(index_ms):>10.1f} {statistics.mean(recalls):>10.3f}  (filled in {fill_s:.0f}s)",
                  flush=True)


if __name__ == "__main__":
    main()
