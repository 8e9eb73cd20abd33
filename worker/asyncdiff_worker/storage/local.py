"""The ``file://`` backend: local folders and mounted volumes, with the same semantics as S3.

Why the same semantics: ``asyncdiff run`` to a local folder and a cluster job to S3 must behave alike: atomic writes
(a reader never sees half a file; a retried job overwrites), SHA-256 of every output, listing under a prefix, and
object metadata (job uid, seed, pixel hash: what resume reads with ``head``). A file's metadata lives in a hidden
sidecar ``.<name>.meta.json`` beside it, removed before the file is replaced and written after it, so a crash in
between leaves a file without metadata (never reused), not a new file with old metadata. Listings skip hidden names.
Files get the mode a plain ``open`` would give (0666 less the umask, so 0644 usually: readable by the group and by a
web server or a colleague), not the 0600 of the temporary file they are written through.
"""

from __future__ import annotations

import hashlib
import json
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
        del content_type  # files have no content type; the manifest records it
        start = time.perf_counter()
        path = loc.path
        digest = hashlib.sha256(data).hexdigest()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _sidecar(path).unlink(missing_ok=True)
            self._write(path, data)
            if metadata:
                meta = {**{k.lower(): str(v) for k, v in metadata.items()}, "sha256": digest}
                self._write(_sidecar(path), json.dumps(meta, sort_keys=True).encode())
        except OSError as exc:
            raise StorageRejected(f"{loc.uri}: cannot write: {exc.strerror or exc}") from exc
        return PutResult(loc.uri, digest, len(data), time.perf_counter() - start)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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
            if path.is_file() and not path.name.startswith("."):
                rel = path.relative_to(root).as_posix()
                out.append(ObjectInfo(f"file://{path}", rel, path.stat().st_size))
        return out

    def head(self, loc: Location) -> ObjectInfo | None:
        """The file's size and metadata (empty when it has no sidecar), or None when there is no such file."""
        path = loc.path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageRejected(f"{loc.uri}: cannot read: {exc.strerror or exc}") from exc
        metadata: dict[str, str] = {}
        try:
            loaded = json.loads(_sidecar(path).read_bytes())
            if isinstance(loaded, dict):
                metadata = {str(k): str(v) for k, v in loaded.items()}
        except (OSError, ValueError):
            pass
        return ObjectInfo(loc.uri, path.name, size, "", metadata)

    def delete(self, loc: Location) -> None:
        try:
            _sidecar(loc.path).unlink(missing_ok=True)
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


def _sidecar(path: Path) -> Path:
    """Where a file's metadata lives: a hidden JSON file beside it."""
    return path.with_name(f".{path.name}.meta.json")
