"""Parsing of the URIs a job names: ``s3://bucket/prefix``, ``file:///dir`` and plain (mounted volume) paths.

Why here, pure and tiny: the spec validator, the storage layer and the preflight checks must agree on what a URI
means, and the operator (no boto3) must be able to check a URI's shape too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

# S3 bucket naming rules (the subset that matters for a clear message).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Location:
    """A parsed location: either an S3 bucket and key (prefix), or a local filesystem path."""

    scheme: Literal["s3", "file"]
    bucket: str
    """S3 bucket; empty for local paths."""
    key: str
    """S3 key or prefix without a leading slash; for local paths the absolute path."""

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def path(self) -> Path:
        """The local path (only for ``file`` locations)."""
        if self.is_s3:
            raise ValueError(f"{self.uri} is not a local path")
        return Path(self.key)

    @property
    def uri(self) -> str:
        if self.is_s3:
            return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"
        return f"file://{self.key}"

    def child(self, *parts: str) -> Location:
        """This location joined with relative path parts (``/``-separated)."""
        extra = "/".join(p.strip("/") for p in parts if p.strip("/"))
        if not extra:
            return self
        base = self.key.rstrip("/")
        joined = f"{base}/{extra}" if base else extra
        return Location(self.scheme, self.bucket, joined)


def parse_location(value: str, *, base_dir: Path | None = None) -> Location:
    """Parse ``s3://bucket/prefix``, ``file:///abs/path`` or a plain path (relative paths against ``base_dir``,
    default the current directory). Raises ``ValueError`` with a one-line reason."""
    text = value.strip()
    if not text:
        raise ValueError("is empty")
    if text.startswith("s3://"):
        rest = text[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ValueError(
                f"{text}: {bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)"
            )
        return Location("s3", bucket, key.strip("/"))
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme != "file":
            raise ValueError(f"{text}: scheme {parsed.scheme!r} is not supported: use s3://, file:// or a path")
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{text}: file URIs must be file:///absolute/path (no host)")
        text = unquote(parsed.path)
        if not text.startswith("/"):
            raise ValueError(f"{value}: file URIs must be file:///absolute/path")
    path = Path(text)
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return Location("file", "", str(path.resolve()))


def is_valid_location(value: str) -> bool:
    try:
        parse_location(value)
    except ValueError:
        return False
    return True
