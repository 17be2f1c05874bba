"""Chooses the object-store backend from settings."""

from __future__ import annotations

from worldloom.core.settings import StoreSettings
from worldloom.core.store.base import ObjectStore


def make_store(settings: StoreSettings) -> ObjectStore:
    if settings.kind == "s3":
        from worldloom.core.store.s3 import S3Store

        return S3Store(settings)
    from worldloom.core.store.local import LocalStore

    return LocalStore(settings.root)
