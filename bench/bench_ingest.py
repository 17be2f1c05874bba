"""Ingest throughput through HTTP -> S3 -> Kafka, against a raw `minio` put of the same bytes.

Starts a real S3 server (SeaweedFS) and Kafka broker on 127.0.0.1, runs the ingest API under uvicorn,
uploads unique real-encoded videos with httpx, and in the same run puts the same files with the
minio SDK. Prints MB/s, videos/s and the ratio (aim: >= 0.7). Usage: python bench/bench_ingest.py [--videos N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from worldloom.core.settings import StoreSettings
from worldloom.core.store.s3 import S3Store
from worldloom.testkit.kafka import KafkaServer
from worldloom.testkit.ports import free_port
from worldloom.testkit.s3 import S3Server
from worldloom.video import synthetic


def make_videos(folder: Path, n: int, size: str, first_seed: int) -> list[Path]:
    """Unique noise videos (distinct content ids, incompressible so MB/s means something)."""
    w, h, frames = {"small": (320, 240, 24), "large": (640, 480, 72)}[size]
    return [synthetic.write_video(folder / f"v{size}{i}.mp4", width=w, height=h, frames=frames,
                                  pattern="noise", seed=first_seed + i) for i in range(n)]


def upload_all(client: httpx.Client, files: list[Path], workers: int) -> float:
    def one(f: Path) -> None:
        with open(f, "rb") as fh:
            r = client.post("/v1/videos", files={"file": (f.name, fh, "video/mp4")})
        if r.status_code != 201:
            raise RuntimeError(f"upload failed: {r.status_code} {r.text}")

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - start


def raw_put_all(store: S3Store, files: list[Path], prefix: str, workers: int) -> float:
    def one(f: Path) -> None:
        with open(f, "rb") as fh:
            store.client.put_object(store.bucket, f"{prefix}/{f.name}", fh, f.stat().st_size,
                                    content_type="video/mp4", part_size=store.settings.part_size)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - start


@contextmanager
def ingest_process(s3: S3Server, kafka: KafkaServer, token: str):
    """The real service as its own process (`worldloom-ingest`), configured only through env vars."""
    port = free_port()
    env = {
        **os.environ, "WORLDLOOM_INGEST_HTTP__PORT": str(port), "WORLDLOOM_INGEST_HTTP__API_TOKENS": token,
        "WORLDLOOM_INGEST_LOG_LEVEL": "WARNING",
        "WORLDLOOM_INGEST_BUS__KIND": "kafka", "WORLDLOOM_INGEST_BUS__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "WORLDLOOM_INGEST_STORE__KIND": "s3", "WORLDLOOM_INGEST_STORE__ENDPOINT": s3.endpoint,
        "WORLDLOOM_INGEST_STORE__ACCESS_KEY": s3.access_key, "WORLDLOOM_INGEST_STORE__SECRET_KEY": s3.secret_key,
        "WORLDLOOM_INGEST_STORE__BUCKET": "bench",
    }
    proc = subprocess.Popen([str(Path(sys.executable).with_name("worldloom-ingest"))], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("ingest service did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--videos", type=int, default=12, help="videos per round and size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="parallel uploads / puts")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, S3Server() as s3, KafkaServer() as kafka:
        token = "bench"
        store = S3Store(StoreSettings(kind="s3", endpoint=s3.endpoint, bucket="bench",
                                      access_key=s3.access_key, secret_key=s3.secret_key))
        print(f"{'size':<6} {'conc':>4} {'MB/video':>8} {'ingest MB/s':>12} {'raw put MB/s':>13} {'videos/s':>9} {'ratio':>6}")
        with ingest_process(s3, kafka, token) as url:
            client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
            warm = make_videos(Path(tmp), 1, "small", 10**6)
            upload_all(client, [warm[0]], 1)  # connection + topic creation off the clock
            seed = 0
            for size in ("small", "large"):
                for conc in args.concurrency:
                    folder = Path(tmp) / f"{size}{conc}"
                    ingest_t, raw_t, total_mb, count = [], [], 0.0, 0
                    for r in range(args.rounds):  # fresh unique files each round: no duplicates
                        (folder / str(r)).mkdir(parents=True)
                        files = make_videos(folder / str(r), args.videos, size, seed)
                        seed += args.videos
                        mb = sum(f.stat().st_size for f in files) / 1e6
                        raw_t.append(mb / raw_put_all(store, files, f"baseline/{size}{conc}-{r}", conc))
                        ingest_t.append(mb / upload_all(client, files, conc))
                        total_mb, count = total_mb + mb, count + len(files)
                    ingest, raw = statistics.median(ingest_t), statistics.median(raw_t)
                    per_video = total_mb / count
                    print(f"{size:<6} {conc:>4} {per_video:>8.2f} {ingest:>12.1f} {raw:>13.1f} "
                          f"{ingest / per_video:>9.1f} {ingest / raw:>6.2f}", flush=True)
            client.close()


if __name__ == "__main__":
    main()
