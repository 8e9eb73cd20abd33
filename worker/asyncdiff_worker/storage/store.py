"""One object that reads and writes any job URI (``s3://`` or ``file://`` or a path), choosing the backend.

Why a facade: the worker code names locations by URI only; whether that is S3 or a mounted volume is decided here,
and boto3 is imported only when an ``s3://`` URI is actually used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from asyncdiff_worker.spec.models import OutputSpec
from asyncdiff_worker.spec.uris import Location, parse_location
from asyncdiff_worker.storage.local import FileBackend
from asyncdiff_worker.storage.types import ObjectInfo, PutResult, S3Settings, StorageNotFound, TransferSettings

if TYPE_CHECKING:
    from asyncdiff_worker.storage.s3 import S3Backend


class Storage:
    """Dispatches by scheme to the file or S3 backend; see those for the errors raised."""

    def __init__(self, s3: S3Settings | None = None, transfer: TransferSettings | None = None) -> None:
        self.s3_settings = s3 or S3Settings()
        self.transfer = transfer or TransferSettings.from_env()
        self._file = FileBackend()
        self._s3: S3Backend | None = None

    @classmethod
    def for_output(cls, output: OutputSpec, transfer: TransferSettings | None = None) -> Storage:
        """Storage configured from ``spec.output`` (its S3 settings serve every s3:// URI of the job)."""
        return cls(S3Settings(output.endpoint_url, output.region, output.force_path_style), transfer)

    @property
    def s3(self) -> S3Backend:
        if self._s3 is None:
            from asyncdiff_worker.storage.s3 import S3Backend

            self._s3 = S3Backend(self.s3_settings, self.transfer)
        return self._s3

    @staticmethod
    def locate(uri: str | Location) -> Location:
        return uri if isinstance(uri, Location) else parse_location(uri)

    def put(
        self, uri: str | Location, data: bytes, *, content_type: str, metadata: Mapping[str, str] | None = None
    ) -> PutResult:
        loc = self.locate(uri)
        backend = self.s3 if loc.is_s3 else self._file
        return backend.put(loc, data, content_type=content_type, metadata=metadata or {})

    def get(self, uri: str | Location, *, max_bytes: int | None = None) -> bytes:
        loc = self.locate(uri)
        return self.s3.get(loc, max_bytes=max_bytes) if loc.is_s3 else self._file.get(loc, max_bytes=max_bytes)

    def download(self, uri: str | Location, dest: Path) -> int:
        """Copy one object (S3) or file to a local file; returns its size."""
        loc = self.locate(uri)
        return self.s3.download(loc, dest) if loc.is_s3 else self._file.download(loc, dest)

    def list(self, uri: str | Location) -> list[ObjectInfo]:
        """Everything under a prefix (S3) or folder (files), recursively."""
        loc = self.locate(uri)
        return self.s3.list(loc) if loc.is_s3 else self._file.list(loc)

    def head(self, uri: str | Location) -> ObjectInfo | None:
        """Size and metadata of one object or file; None when it does not exist."""
        loc = self.locate(uri)
        if not loc.is_s3:
            return self._file.head(loc)
        try:
            return self.s3.head(loc)
        except StorageNotFound:
            return None

    def delete(self, uri: str | Location) -> None:
        loc = self.locate(uri)
        if loc.is_s3:
            self.s3.delete(loc)
        else:
            self._file.delete(loc)

    def check_writable(self, uri: str | Location) -> None:
        loc = self.locate(uri)
        if loc.is_s3:
            self.s3.check_writable(loc)
        else:
            self._file.check_writable(loc)
