"""Resolve a model source to a local folder; an ``s3://`` model is downloaded once per node into a cache.

Why a lock and a fingerprint: every rank on a node needs the same weights, but downloading them once per rank
multiplies traffic and disk. Ranks take an exclusive ``fcntl`` lock on a file next to the cache entry; the first
downloads into a temporary folder and renames it into place, the others find it complete. The completion marker
holds a fingerprint of the S3 listing (keys, sizes, ETags), so a changed model is downloaded again and a crash
mid-download leaves no half folder that looks complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from asyncdiff_worker.errors import ModelNotFound
from asyncdiff_worker.spec.uris import Location, parse_location
from asyncdiff_worker.storage.store import Storage
from asyncdiff_worker.storage.types import ObjectInfo, StorageNotFound

CACHE_ENV = "ASYNCDIFF_MODEL_CACHE"
MARKER = ".asyncdiff-complete.json"


def default_cache_dir() -> Path:
    """``$ASYNCDIFF_MODEL_CACHE``, else ``$XDG_CACHE_HOME/asyncdiff/models``, else ``~/.cache/asyncdiff/models``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "asyncdiff" / "models"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``path`` (created if missing), shared by all processes of a node."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _fingerprint(objects: list[ObjectInfo]) -> str:
    h = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):
        h.update(f"{obj.key}\0{obj.size}\0{obj.etag}\n".encode())
    return h.hexdigest()


def cache_entry(loc: Location, storage: Storage, cache_dir: Path) -> Path:
    """The cache folder for one S3 prefix on one endpoint."""
    ident = f"{storage.s3_settings.endpoint_url or 'aws'}|{loc.bucket}|{loc.key.rstrip('/')}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    tail = (loc.key.rstrip("/").rsplit("/", 1)[-1] or loc.bucket)[:48]
    return cache_dir / f"{tail}-{digest}"


def resolve_model(
    source: str,
    storage: Storage,
    *,
    cache_dir: Path | None = None,
    field: str = "spec.model.source",
    on_download: Callable[[int, int], None] | None = None,
) -> Path:
    """A local folder holding ``source``. Local paths are checked and returned as they are; ``s3://`` prefixes are
    downloaded (once per node, under a lock). Raises ``ModelNotFound`` when nothing is there."""
    loc = parse_location(source)
    if not loc.is_s3:
        if not loc.path.is_dir():
            what = "is a file, not a folder" if loc.path.exists() else "does not exist"
            raise ModelNotFound(f"{field}: {source}: {what}")
        return loc.path
    cache = cache_dir or default_cache_dir()
    entry = cache_entry(loc, storage, cache)
    with file_lock(entry.with_name(entry.name + ".lock")):
        try:
            objects = [o for o in storage.list(loc) if not o.key.endswith("/")]
        except StorageNotFound as exc:
            raise ModelNotFound(f"{field}: {source}: {exc.what} does not exist") from exc
        if not objects:
            raise ModelNotFound(f"{field}: {source}: no objects under this prefix")
        fingerprint = _fingerprint(objects)
        marker = entry / MARKER
        if marker.is_file():
            try:
                if json.loads(marker.read_text()).get("fingerprint") == fingerprint:
                    return entry
            except (OSError, ValueError):
                pass
        tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        prefix = loc.key.rstrip("/") + "/" if loc.key else ""
        total = sum(o.size for o in objects)
        done = 0
        start = time.perf_counter()
        for obj in objects:
            rel = obj.key[len(prefix) :]
            if not rel or ".." in Path(rel).parts:
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                done += storage.download(Location("s3", loc.bucket, obj.key), dest)
            except StorageNotFound as exc:
                raise ModelNotFound(f"{field}: {obj.uri}: disappeared while downloading") from exc
            if on_download is not None:
                on_download(done, total)
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "source": source,
                    "fingerprint": fingerprint,
                    "bytes": done,
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
        )
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
        return entry
