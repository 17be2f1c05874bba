"""A thin layer over pymilvus.MilvusClient: one collection = vectors + typed scalar fields to filter on.

The URI is a file path for Milvus Lite (embedded) or http://host:port for a Milvus server
(`milvus-lite server` locally, Milvus on Kubernetes in production).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pymilvus import DataType, MilvusClient

from worldloom.core.settings import VectorSettings

ScalarType = Literal["str", "int", "float", "bool", "json"]
_DTYPES = {
    "str": DataType.VARCHAR,
    "int": DataType.INT64,
    "float": DataType.DOUBLE,
    "bool": DataType.BOOL,
    "json": DataType.JSON,
}


#: gRPC keepalive the servers permit. pymilvus pings every 10 s, idle or not; a server with gRPC's default
#: policy (Milvus Lite, as a file or `milvus-lite server`) allows no pings while no call is open and one per
#: 5 minutes during a call, so after a minute idle it answers GOAWAY "too_many_pings" (logged to stderr
#: by gRPC's C core) and the client reconnects. Pinging only during calls, at most every 5 minutes, keeps
#: within that policy; Milvus on Kubernetes permits it too.
GRPC_OPTIONS: Mapping[str, int] = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": 0}


@dataclass(frozen=True)
class CollectionSpec:
    """Schema of one collection; `id` is a string primary key (content hashes, clip ids)."""

    name: str
    dim: int
    scalars: Mapping[str, ScalarType] = field(default_factory=dict)
    metric: Literal["COSINE", "IP", "L2"] = "COSINE"
    # HNSW: high recall at low latency on Milvus and Milvus Lite alike (AUTOINDEX on Lite gave ~0.9 recall@10)
    index_type: Literal["HNSW", "FLAT", "IVF_FLAT", "AUTOINDEX"] = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    max_id_length: int = 128
    max_str_length: int = 2048


class CollectionMismatch(RuntimeError):
    """An existing collection differs from the schema this code writes and reads (another dimension,
    fields, types, string lengths or metric): refused at start-up, not at the first upsert or search."""


def schema_differences(spec: CollectionSpec, described: Mapping[str, Any], metric: str | None) -> list[str]:
    """How an existing collection (``describe_collection``, the vector index's metric) differs from ``spec``."""
    fields = {f["name"]: f for f in described.get("fields", [])}
    wanted = {"id": (DataType.VARCHAR, {"max_length": spec.max_id_length}),
              "vector": (DataType.FLOAT_VECTOR, {"dim": spec.dim})}
    for name, kind in spec.scalars.items():
        wanted[name] = (_DTYPES[kind], {"max_length": spec.max_str_length} if kind == "str" else {})
    problems = [f"field {name!r} is missing" for name in wanted if name not in fields]
    problems += [f"field {name!r} is not in the schema" for name in fields if name not in wanted]
    for name, (dtype, params) in wanted.items():
        if name not in fields:
            continue
        have = fields[name]
        if have.get("type") != dtype:
            problems.append(f"field {name!r} is {getattr(have.get('type'), 'name', have.get('type'))}, "
                            f"not {dtype.name}")
        for param, value in params.items():
            if int((have.get("params") or {}).get(param, -1)) != value:
                problems.append(f"field {name!r} has {param} {(have.get('params') or {}).get(param)}, not {value}")
    if metric is not None and metric != spec.metric:
        problems.append(f"the vector index's metric is {metric}, not {spec.metric}")
    return problems


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    fields: dict[str, Any]


class VectorIndex:
    def __init__(self, uri: str, token: str | None = None) -> None:
        if "://" not in uri:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.uri = uri
        # Every URI, a .db file included (pymilvus serves it from an in-process Milvus Lite gRPC server on
        # loopback): dedicated, because pymilvus otherwise shares one channel per address, whatever options
        # it was made with.
        self.client = MilvusClient(uri=uri, token=token or "", grpc_options=dict(GRPC_OPTIONS), dedicated=True)
        self._lock = threading.Lock()  # Milvus Lite's local client is not safe for concurrent calls
        self._loaded: set[str] = set()

    def _load(self, collection: str) -> None:
        """Collections must be loaded before reads; a new process finds them released."""
        if collection not in self._loaded:
            self.client.load_collection(collection)
            self._loaded.add(collection)

    @classmethod
    def from_settings(cls, settings: VectorSettings) -> VectorIndex:
        return cls(settings.uri, settings.token.get_secret_value() if settings.token else None)

    def ensure_collection(self, spec: CollectionSpec) -> None:
        """Creates the collection, or checks that the existing one has exactly this schema
        (CollectionMismatch naming each difference otherwise)."""
        with self._lock:
            if self.client.has_collection(spec.name):
                problems = schema_differences(spec, self.client.describe_collection(spec.name),
                                              self._metric(spec.name))
                if problems:
                    raise CollectionMismatch(
                        f"the existing Milvus collection {spec.name!r} ({self.uri}) does not match the schema this "
                        f"service uses: {'; '.join(problems)}. Drop or migrate it, or point the service at another "
                        "Milvus")
                self._load(spec.name)
                return
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=spec.max_id_length)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dim)
            for name, kind in spec.scalars.items():
                extra = {"max_length": spec.max_str_length} if kind == "str" else {}
                schema.add_field(name, _DTYPES[kind], **extra)
            index = self.client.prepare_index_params()
            params = {"M": spec.hnsw_m, "efConstruction": spec.hnsw_ef_construction} if spec.index_type == "HNSW" else {}
            index.add_index(field_name="vector", index_type=spec.index_type, metric_type=spec.metric, params=params)
            self.client.create_collection(spec.name, schema=schema, index_params=index)
            self._load(spec.name)

    def _metric(self, collection: str) -> str | None:
        for name in self.client.list_indexes(collection, field_name="vector") or []:
            metric = self.client.describe_index(collection, name).get("metric_type")
            if metric:
                return str(metric)
        return None

    def upsert(self, collection: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Inserts or replaces rows by id and flushes, so a search right after sees them."""
        if not rows:
            return 0
        with self._lock:
            res = self.client.upsert(collection, [dict(r) for r in rows])
            self.client.flush(collection)
        return int(res.get("upsert_count", len(rows)))

    def search(
        self,
        collection: str,
        vectors: Sequence[Sequence[float]],
        limit: int = 10,
        filter: str = "",
        output_fields: Sequence[str] = (),
        ef: int | None = None,
    ) -> list[list[Hit]]:
        """Top `limit` per query vector; `ef` (HNSW search breadth, >= limit) trades latency for recall."""
        params = {"params": {"ef": max(ef or 256, limit)}}
        with self._lock:
            self._load(collection)
            results = self.client.search(
                collection, data=[list(map(float, v)) for v in vectors], limit=limit,
                filter=filter, output_fields=list(output_fields), anns_field="vector", search_params=params,
            )
        return [
            [Hit(str(h["id"]), float(h["distance"]), dict(h.get("entity", {}))) for h in hits]
            for hits in results
        ]

    def get(self, collection: str, ids: Sequence[str], output_fields: Sequence[str] = ()) -> list[dict[str, Any]]:
        with self._lock:
            self._load(collection)
            return list(self.client.get(collection, ids=list(ids), output_fields=list(output_fields) or None))

    def delete(self, collection: str, ids: Sequence[str] = (), filter: str = "") -> int:
        with self._lock:
            if ids:
                res = self.client.delete(collection, ids=list(ids))
            else:
                res = self.client.delete(collection, filter=filter)
            self.client.flush(collection)
        return int(res.get("delete_count", 0)) if isinstance(res, dict) else len(res)

    def count(self, collection: str) -> int:
        with self._lock:
            self._load(collection)
            res = self.client.query(collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def drop(self, collection: str) -> None:
        with self._lock:
            self.client.drop_collection(collection)
            self._loaded.discard(collection)

    def healthy(self) -> bool:
        try:
            with self._lock:
                self.client.list_collections()
            return True
        except Exception:
            return False

    def close(self) -> None:
        self.client.close()
