"""Object store with two backends behind one interface: S3 (MinIO or any S3) and a local directory."""

from worldloom.core.store.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreUnavailable,
    validate_key,
)
from worldloom.core.store.factory import make_store

__all__ = ["InvalidKey", "ObjectInfo", "ObjectNotFound", "ObjectStore", "StoreUnavailable", "make_store",
           "validate_key"]
