"""S3 backend: streaming multipart puts with the MinIO SDK; conditional writes (``If-None-Match`` /
``If-Match``) with boto3, because the MinIO SDK cannot send them (headers passed as metadata become
``X-Amz-Meta-*`` and the write silently overwrites). Works with MinIO, SeaweedFS or AWS S3."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, BinaryIO, cast
from urllib.parse import urlparse

import urllib3.exceptions
from minio import Minio
from minio.error import S3Error, ServerError

from worldloom.core.settings import StoreSettings
from worldloom.core.store.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreUnavailable,
    validate_key,
)

_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound"}


#: S3 error codes that mean "the server is in trouble", not "the request is wrong"
_SERVER_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}


@contextmanager
def _reachable(what: str) -> Iterator[None]:
    """Turns "the store did not answer" (after the clients' own retries) into StoreUnavailable, so services
    answer 503 and consumers retry the batch later instead of dead-lettering good events."""
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    try:
        yield
    except (urllib3.exceptions.HTTPError, ConnectionError, EndpointConnectionError, ConnectionClosedError,
            ReadTimeoutError, ServerError) as exc:
        raise StoreUnavailable(f"the object store did not answer ({what}: {type(exc).__name__})") from exc
    except S3Error as exc:
        if exc.code in _SERVER_CODES:
            raise StoreUnavailable(f"the object store failed ({what}: {exc.code})") from exc
        raise
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if status >= 500:
            raise StoreUnavailable(f"the object store failed ({what}: HTTP {status})") from exc
        raise


class _Source:
    """The caller's stream, remembering its own read failure: a client that vanishes mid-upload raises
    ConnectionResetError from ``read``, which must reach the caller as that, not as "the store is down"."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._fileobj = fileobj
        self.failure: BaseException | None = None

    def read(self, n: int = -1) -> bytes:
        try:
            return self._fileobj.read(n)
        except Exception as exc:
            self.failure = exc
            raise


class S3Store(ObjectStore):
    def __init__(self, settings: StoreSettings, create_bucket: bool = True) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key.get_secret_value() if settings.access_key else None,
            secret_key=settings.secret_key.get_secret_value() if settings.secret_key else None,
            secure=settings.secure,
            region=settings.region,
        )
        with _reachable("bucket"):
            if create_bucket and not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:  # another replica created it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    def put_file(
        self, key: str, fileobj: BinaryIO, length: int = -1, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        source = _Source(fileobj)
        try:
            with _reachable("put"):
                result = self.client.put_object(
                    self.bucket, validate_key(key), cast(BinaryIO, source), length,
                    content_type=content_type, part_size=self.settings.part_size,
                )
        except StoreUnavailable:
            if source.failure is not None:  # the caller's stream failed (a client gone), not the store
                raise source.failure from None
            raise
        size = length if length >= 0 else self.stat(key).size
        return ObjectInfo(key, size, result.etag)

    def _get(self, key: str) -> Any:
        """The object's response (ObjectNotFound when it is missing, StoreUnavailable when S3 is)."""
        try:
            with _reachable("get"):
                return self.client.get_object(self.bucket, validate_key(key))
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(key) from None
            raise

    def open(self, key: str) -> BinaryIO:
        return cast(BinaryIO, _Response(self._get(key)))

    def stat(self, key: str) -> ObjectInfo:
        try:
            with _reachable("stat"):
                st = self.client.stat_object(self.bucket, validate_key(key))
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(key) from None
            raise
        return ObjectInfo(key, st.size or 0, st.etag, st.last_modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with _reachable("list"):
            for obj in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
                if obj.object_name and not obj.is_dir:
                    yield ObjectInfo(obj.object_name, obj.size or 0, obj.etag, obj.last_modified)

    def delete(self, key: str) -> None:
        with _reachable("delete"):
            self.client.remove_object(self.bucket, validate_key(key))

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        return self.client.presigned_get_object(self.bucket, validate_key(key), timedelta(seconds=expires_s))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    def key_from_uri(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or parsed.netloc != self.bucket:
            raise InvalidKey(f"URI is not in this store (s3://{self.bucket}/...): {uri!r}")
        return validate_key(parsed.path.lstrip("/"))

    # ------------------------------------------------------------------------------ conditional writes

    @functools.cached_property
    def _boto(self) -> Any:
        import boto3
        from botocore.config import Config

        s = self.settings
        return boto3.client(
            "s3", endpoint_url=f"{'https' if s.secure else 'http'}://{s.endpoint}",
            aws_access_key_id=s.access_key.get_secret_value() if s.access_key else None,
            aws_secret_access_key=s.secret_key.get_secret_value() if s.secret_key else None,
            region_name=s.region or "us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        resp = self._get(key)
        try:
            return resp.read(), (resp.headers.get("ETag") or "").strip('"')
        finally:
            resp.close()
            resp.release_conn()

    def put_bytes_if(self, key: str, data: bytes, etag: str | None,
                     content_type: str = "application/octet-stream") -> str | None:
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": f'"{etag.strip(chr(34))}"'}
        try:
            with _reachable("conditional put"):
                resp = self._boto.put_object(Bucket=self.bucket, Key=validate_key(key), Body=data,
                                             ContentType=content_type, **condition)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (409, 412):
                return None  # another writer won (or, for If-Match, the object is gone)
            raise
        return str(resp.get("ETag", "")).strip('"')

    def healthy(self) -> bool:
        try:
            return self.client.bucket_exists(self.bucket)
        except Exception:
            return False


class _Response:
    """Adapts urllib3's response to a closable binary stream that also releases the connection."""

    def __init__(self, resp: Any) -> None:  # urllib3's HTTPResponse (its class moved between versions)
        self._resp = resp

    def read(self, n: int = -1) -> bytes:
        return self._resp.read() if n is None or n < 0 else self._resp.read(n)

    def close(self) -> None:
        self._resp.close()
        self._resp.release_conn()

    def __enter__(self) -> "_Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
