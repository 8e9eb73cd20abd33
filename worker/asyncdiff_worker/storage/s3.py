"""The S3 backend: boto3 with our retries, multipart for large objects, SHA-256 checksums and object metadata.

Why these choices: uploads must survive transient S3 failures (retries with backoff) yet fail within a bounded
time with a retryable exit code; large outputs need multipart; consumers need to verify what they download (a
SHA-256 as an S3 checksum where the server supports it and always in the object metadata and the manifest); the
metadata (job uid, prompt index, seed) ties each object to its job. Only this module imports boto3.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.exceptions as bexc
from botocore.config import Config

from asyncdiff_worker.errors import StorageRejected, StorageUnavailable
from asyncdiff_worker.spec.uris import Location
from asyncdiff_worker.storage.credentials import secret_dir_credentials
from asyncdiff_worker.storage.retry import RetriesExhausted, call_with_retries
from asyncdiff_worker.storage.types import (
    ObjectInfo,
    ObjectTooLarge,
    PutResult,
    S3Settings,
    StorageNotFound,
    TransferSettings,
)

T = TypeVar("T")

_NOT_FOUND = {"NoSuchBucket", "NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
    "401",
}
_RETRY_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    "502",
    "504",
    "BadDigest",
}
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    bexc.EndpointConnectionError,
    bexc.ConnectionClosedError,
    bexc.ReadTimeoutError,
    bexc.ConnectTimeoutError,
    bexc.ConnectionError,
    bexc.HTTPClientError,
    bexc.ResponseStreamingError,
    ConnectionError,
    TimeoutError,
)


def _code(exc: bexc.ClientError) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _status(exc: bexc.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_retryable(exc: BaseException) -> bool:
    """Connection problems, throttling and server errors are retried; everything else is final."""
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if isinstance(exc, bexc.ClientError):
        return _code(exc) in _RETRY_CODES or _status(exc) >= 500
    return False


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3Backend:
    """Reads and writes ``s3://`` locations. Raises ``StorageNotFound`` (missing key or bucket on read),
    ``StorageRejected`` (credentials, permissions, missing bucket on write) or ``StorageUnavailable``."""

    def __init__(self, settings: S3Settings, transfer: TransferSettings) -> None:
        self.settings = settings
        self.transfer = transfer
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            config = Config(
                signature_version="s3v4",
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=self.transfer.connect_timeout,
                read_timeout=self.transfer.read_timeout,
                s3={"addressing_style": "path" if self.settings.force_path_style else "auto"},
            )
            session = boto3.session.Session()
            self._client = session.client(
                "s3",
                endpoint_url=self.settings.endpoint_url,
                region_name=self.settings.region or "us-east-1",
                config=config,
                **secret_dir_credentials(),
            )
        return self._client

    # -- error mapping ------------------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T], loc: Location, *, writing: bool = False) -> T:
        try:
            return call_with_retries(
                fn,
                what=what,
                attempts=self.transfer.attempts,
                is_retryable=is_retryable,
                base=self.transfer.backoff_seconds,
                cap=self.transfer.max_backoff_seconds,
            )
        except RetriesExhausted as exc:
            endpoint = self.settings.endpoint_url or "AWS S3"
            raise StorageUnavailable(
                f"{loc.uri}: {what} failed after {exc.attempts} attempts ({endpoint}): "
                f"{type(exc.last).__name__}: {_short(exc.last)}"
            ) from exc
        except (bexc.NoCredentialsError, bexc.PartialCredentialsError) as exc:
            raise StorageRejected(
                f"{loc.uri}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or mount a Secret "
                "and set ASYNCDIFF_S3_SECRET_DIR"
            ) from exc
        except bexc.ClientError as exc:
            code = _code(exc)
            if code in _NOT_FOUND:
                if code == "NoSuchBucket" or (writing and code in ("404", "NotFound")):
                    if writing:
                        raise StorageRejected(f"s3://{loc.bucket}: bucket does not exist") from exc
                    raise StorageNotFound(f"s3://{loc.bucket}", "bucket") from exc
                raise StorageNotFound(loc.uri, "object") from exc
            if code in _DENIED:
                hint = {
                    "InvalidAccessKeyId": "the access key id is not known to the server",
                    "SignatureDoesNotMatch": "the secret access key is wrong",
                }.get(code, "check the credentials and the bucket policy")
                raise StorageRejected(f"{loc.uri}: access denied ({code}): {hint}") from exc
            raise StorageRejected(f"{loc.uri}: {what} rejected ({code}): {_short(exc)}") from exc
        except bexc.ParamValidationError as exc:
            raise StorageRejected(f"{loc.uri}: {what}: {_short(exc)}") from exc

    # -- operations ---------------------------------------------------------------------------------------------

    def put(self, loc: Location, data: bytes, *, content_type: str, metadata: Mapping[str, str]) -> PutResult:
        start = time.perf_counter()
        digest = hashlib.sha256(data).digest()
        meta = {**{k.lower(): str(v) for k, v in metadata.items()}, "sha256": digest.hex()}
        if len(data) < self.transfer.multipart_threshold:
            self._call(
                "upload",
                lambda: self.client.put_object(
                    Bucket=loc.bucket,
                    Key=loc.key,
                    Body=data,
                    ContentType=content_type,
                    Metadata=meta,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=_b64(digest),
                ),
                loc,
                writing=True,
            )
            parts = 1
        else:
            parts = self._put_multipart(loc, data, content_type, meta)
        return PutResult(loc.uri, digest.hex(), len(data), time.perf_counter() - start, parts)

    def _put_multipart(self, loc: Location, data: bytes, content_type: str, meta: Mapping[str, str]) -> int:
        created = self._call(
            "start multipart upload",
            lambda: self.client.create_multipart_upload(
                Bucket=loc.bucket,
                Key=loc.key,
                ContentType=content_type,
                Metadata=dict(meta),
                ChecksumAlgorithm="SHA256",
            ),
            loc,
            writing=True,
        )
        upload_id = created["UploadId"]
        size = self.transfer.part_size
        parts: list[dict[str, Any]] = []
        try:
            for number, offset in enumerate(range(0, len(data), size), start=1):
                chunk = data[offset : offset + size]
                checksum = _b64(hashlib.sha256(chunk).digest())

                def upload(number: int = number, chunk: bytes = chunk, checksum: str = checksum) -> Any:
                    return self.client.upload_part(
                        Bucket=loc.bucket,
                        Key=loc.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                    )

                resp = self._call(f"upload part {number}", upload, loc, writing=True)
                parts.append({"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum})
            self._call(
                "complete multipart upload",
                lambda: self.client.complete_multipart_upload(
                    Bucket=loc.bucket, Key=loc.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
                loc,
                writing=True,
            )
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: the server may be the thing that failed
                self.client.abort_multipart_upload(Bucket=loc.bucket, Key=loc.key, UploadId=upload_id)
            raise
        return len(parts)

    def get(self, loc: Location, *, max_bytes: int | None = None) -> bytes:
        def fetch() -> bytes:
            resp = self.client.get_object(Bucket=loc.bucket, Key=loc.key)
            length = int(resp.get("ContentLength", 0))
            if max_bytes is not None and length > max_bytes:
                resp["Body"].close()
                raise ObjectTooLarge(loc.uri, length, max_bytes)
            body: bytes = resp["Body"].read()
            return body

        return self._call("download", fetch, loc)

    def download(self, loc: Location, dest: Path) -> int:
        def fetch() -> int:
            resp = self.client.get_object(Bucket=loc.bucket, Key=loc.key)
            tmp = dest.with_name(dest.name + ".part")
            with tmp.open("wb") as fh:
                shutil.copyfileobj(resp["Body"], fh, length=1024 * 1024)
            tmp.replace(dest)
            return dest.stat().st_size

        return self._call("download", fetch, loc)

    def head(self, loc: Location) -> ObjectInfo:
        resp = self._call("head", lambda: self.client.head_object(Bucket=loc.bucket, Key=loc.key), loc)
        return ObjectInfo(
            loc.uri,
            loc.key,
            int(resp.get("ContentLength", 0)),
            str(resp.get("ETag", "")).strip('"'),
            dict(resp.get("Metadata", {})),
        )

    def list(self, loc: Location) -> list[ObjectInfo]:
        prefix = loc.key.rstrip("/") + "/" if loc.key else ""

        def fetch() -> list[ObjectInfo]:
            out: list[ObjectInfo] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=loc.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    out.append(
                        ObjectInfo(
                            f"s3://{loc.bucket}/{key}", key, int(obj["Size"]), str(obj.get("ETag", "")).strip('"')
                        )
                    )
            return out

        return self._call("list", fetch, loc)

    def delete(self, loc: Location) -> None:
        self._call("delete", lambda: self.client.delete_object(Bucket=loc.bucket, Key=loc.key), loc, writing=True)

    def check_writable(self, loc: Location) -> None:
        """Fail fast when the bucket is missing or the credentials are wrong (a cheap list of the prefix)."""
        self._call(
            "check bucket",
            lambda: self.client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.key, MaxKeys=1),
            loc,
            writing=True,
        )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
