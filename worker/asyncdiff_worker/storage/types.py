"""Value types and settings shared by the storage backends.

Why separate: the backends, the model cache and the tests all speak in these small types, and none of them needs
boto3 to do so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class StorageNotFound(Exception):
    """A bucket, key or path does not exist. Callers map it to a user error that names what was missing
    (the model, an input image, the prompts file)."""

    def __init__(self, uri: str, what: str = "object") -> None:
        self.uri = uri
        self.what = what
        super().__init__(f"{uri}: {what} does not exist")


class ObjectTooLarge(Exception):
    """An object is larger than the caller allows (input files are capped)."""

    def __init__(self, uri: str, size: int, limit: int) -> None:
        self.uri = uri
        self.size = size
        self.limit = limit
        super().__init__(f"{uri}: {size} bytes is more than the limit {limit} bytes")


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3 (from ``spec.output``); credentials are never here: boto3 reads them from the environment,
    or ``ASYNCDIFF_S3_SECRET_DIR`` names a mounted Secret folder."""

    endpoint_url: str | None = None
    region: str | None = None
    force_path_style: bool = False


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class TransferSettings:
    """Retries and multipart sizes. Environment overrides exist for operators and tests."""

    attempts: int = 5
    """Attempts per request (1 = no retry)."""
    backoff_seconds: float = 0.5
    """First backoff; doubles per attempt, with full jitter."""
    max_backoff_seconds: float = 8.0
    multipart_threshold: int = 16 * 1024 * 1024
    part_size: int = 8 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 60.0

    @classmethod
    def from_env(cls) -> TransferSettings:
        d = cls()
        return cls(
            attempts=max(1, _env_int("ASYNCDIFF_S3_ATTEMPTS", d.attempts)),
            backoff_seconds=max(0.0, _env_float("ASYNCDIFF_S3_BACKOFF_SECONDS", d.backoff_seconds)),
            max_backoff_seconds=max(0.0, _env_float("ASYNCDIFF_S3_MAX_BACKOFF_SECONDS", d.max_backoff_seconds)),
            multipart_threshold=max(
                5 * 1024 * 1024, _env_int("ASYNCDIFF_S3_MULTIPART_THRESHOLD", d.multipart_threshold)
            ),
            part_size=max(5 * 1024 * 1024, _env_int("ASYNCDIFF_S3_PART_SIZE", d.part_size)),
            connect_timeout=_env_float("ASYNCDIFF_S3_CONNECT_TIMEOUT", d.connect_timeout),
            read_timeout=_env_float("ASYNCDIFF_S3_READ_TIMEOUT", d.read_timeout),
        )


@dataclass(frozen=True)
class PutResult:
    """What one write stored."""

    uri: str
    sha256: str
    """Hex SHA-256 of the content."""
    bytes: int
    seconds: float
    parts: int = 1
    """1 for a single PUT, else the multipart part count."""


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object or file."""

    uri: str
    key: str
    """Key (S3) or path relative to the listed prefix (files)."""
    size: int
    etag: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
