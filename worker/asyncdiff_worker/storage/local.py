"""The ``file://`` backend: local folders and mounted volumes, with the same semantics as S3.

Why the same semantics: ``asyncdiff run`` to a local folder and a cluster job to S3 must behave alike: atomic writes
(a reader never sees half a file; a retried job overwrites), SHA-256 of every output, listing under a prefix.
File metadata (job uid, seed, ...) lives only in the result manifest. Files get the mode a plain ``open`` would give
(0666 less the umask, so 0644 usually: readable by the group and by a web server or a colleague), not the 0600 of
the temporary file they are written through.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from asyncdiff_worker.errors import StorageRejected
from asyncdiff_worker.spec.uris import Location
from asyncdiff_worker.storage.types import ObjectInfo, ObjectTooLarge, PutResult, StorageNotFound


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` sets it, which races with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


class FileBackend:
    """Reads and writes local paths."""

    def put(self, loc: Location, data: bytes, *, content_type: str, metadata: Mapping[str, str]) -> PutResult:
        del content_type, metadata  # kept in the manifest for files
        start = time.perf_counter()
        path = loc.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                os.fchmod(fd, 0o666 & ~_umask())
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageRejected(f"{loc.uri}: cannot write: {exc.strerror or exc}") from exc
        return PutResult(loc.uri, hashlib.sha256(data).hexdigest(), len(data), time.perf_counter() - start)

    def get(self, loc: Location, *, max_bytes: int | None = None) -> bytes:
        path = loc.path
        if not path.is_file():
            raise StorageNotFound(loc.uri, "file")
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise ObjectTooLarge(loc.uri, size, max_bytes)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StorageRejected(f"{loc.uri}: cannot read: {exc.strerror or exc}") from exc

    def download(self, loc: Location, dest: Path) -> int:
        """Copy a file to ``dest`` (atomically, like ``put``); returns its size."""
        data = self.get(loc)
        self.put(Location("file", "", str(dest.resolve())), data, content_type="", metadata={})
        return len(data)

    def list(self, loc: Location) -> list[ObjectInfo]:
        root = loc.path
        if not root.is_dir():
            return []
        out = []
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                rel = path.relative_to(root).as_posix()
                out.append(ObjectInfo(f"file://{path}", rel, path.stat().st_size))
        return out

    def delete(self, loc: Location) -> None:
        try:
            loc.path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageRejected(f"{loc.uri}: cannot delete: {exc.strerror or exc}") from exc

    def check_writable(self, loc: Location) -> None:
        path = loc.path
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".asyncdiff-probe-"):
                pass
        except OSError as exc:
            raise StorageRejected(f"{loc.uri}: not writable: {exc.strerror or exc}") from exc
