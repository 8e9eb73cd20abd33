"""Job identity and the deterministic layout of a job's objects.

Why deterministic: a retried attempt of the same job must write to exactly the same keys, so it overwrites instead
of duplicating, and the manifest (the commit marker) sits at a fixed place that the operator and ``asyncdiff
fetch`` can find. Layout under ``<output uri>/<job name>/``: ``outputs/<index>-p<prompt>.<ext>``,
``_shards/<run key>/<shard>.json`` (one marker per finished shard of one run) and ``manifest.json``.

Who renders: ``WorkerSlot`` reads the process contract the operator (or ``asyncdiff run``) sets:
``ASYNCDIFF_SHARD_INDEX`` (the Indexed Job's completion index: render that shard only; absent: every shard, one
after another, or the shards claimed from ``ASYNCDIFF_SHARD_QUEUE``), ``ASYNCDIFF_INDEX_RETRY`` (the pod's
``batch.kubernetes.io/job-index-failure-count``), ``ASYNCDIFF_RUN_ID`` (default ``<uid>/<attempt>``: shard markers
of one run only count together) and ``ASYNCDIFF_POD_NAME`` / ``HOSTNAME`` plus ``ASYNCDIFF_GROUP`` of
``ASYNCDIFF_GROUPS`` (who rendered; the local groups of ``asyncdiff run``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncdiff_worker.spec.models import AsyncDiffJob
from asyncdiff_worker.spec.uris import Location, parse_location

MANIFEST_NAME = "manifest.json"
OUTPUTS_DIR = "outputs"
SHARDS_DIR = "_shards"

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif", "mp4": "mp4"}


@dataclass(frozen=True)
class JobIdentity:
    """Who the job is: name (the key prefix), uid (recorded in object metadata), attempt number."""

    name: str
    uid: str
    namespace: str | None = None
    attempt: int = 1


def _safe_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    return name[:200] or "job"


def job_identity(job: AsyncDiffJob, spec_path: Path | None = None, name: str | None = None) -> JobIdentity:
    """Name: ``name`` argument, ``$ASYNCDIFF_JOB_NAME``, ``metadata.name``, the spec file's stem, or ``job``.
    Uid: ``$ASYNCDIFF_JOB_UID``, ``metadata.uid``, or ``local-`` + a hash of the spec (stable across reruns).
    Attempt: ``$ASYNCDIFF_ATTEMPT`` (set by the operator), default 1."""
    chosen = name or os.environ.get("ASYNCDIFF_JOB_NAME") or job.metadata.name
    if not chosen:
        chosen = _safe_name(spec_path.stem) if spec_path is not None else "job"
    canonical = json.dumps(job.spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    uid = (
        os.environ.get("ASYNCDIFF_JOB_UID")
        or job.metadata.uid
        or ("local-" + hashlib.sha256(f"{chosen}\n{canonical}".encode()).hexdigest()[:16])
    )
    try:
        attempt = max(1, int(os.environ.get("ASYNCDIFF_ATTEMPT", "1")))
    except ValueError:
        attempt = 1
    return JobIdentity(name=chosen, uid=uid, namespace=job.metadata.namespace, attempt=attempt)


def _env_int(name: str, default: int | None, low: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"${name}: {raw!r} is not an integer") from exc
    if value < low:
        raise ValueError(f"${name}: {value} is less than {low}")
    return value


@dataclass(frozen=True)
class WorkerSlot:
    """Which shards this process group renders, and how its outputs are attributed."""

    shard_index: int | None
    """The one shard to render (operator); None: every shard, or those claimed from ``queue``."""
    index_retry: int
    """How often this shard index failed before (the pod's job-index-failure-count annotation)."""
    run_id: str
    rendered_by: str
    """Pod name (or host name), with ``/group-<n>`` for a local replica."""
    queue: Path | None = None
    """A local folder of shard claims shared by the groups of ``asyncdiff run`` (``ASYNCDIFF_SHARD_QUEUE``)."""
    group: int | None = None
    """This local group's number (``ASYNCDIFF_GROUP``) of ``groups`` (``ASYNCDIFF_GROUPS``)."""
    groups: int = 1

    @classmethod
    def from_env(cls, identity: JobIdentity) -> WorkerSlot:
        """Read the process contract from the environment; raises ``ValueError`` naming a bad variable."""
        shard = _env_int("ASYNCDIFF_SHARD_INDEX", None, 0)
        retry = _env_int("ASYNCDIFF_INDEX_RETRY", 0, 0) or 0
        run_id = os.environ.get("ASYNCDIFF_RUN_ID") or f"{identity.uid}/{identity.attempt}"
        who = os.environ.get("ASYNCDIFF_POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname() or "local"
        group = _env_int("ASYNCDIFF_GROUP", None, 0)
        groups = _env_int("ASYNCDIFF_GROUPS", 1, 1) or 1
        if group is not None:
            who = f"{who}/group-{group}"
        queue = os.environ.get("ASYNCDIFF_SHARD_QUEUE")
        return cls(shard, retry, run_id, who, Path(queue) if queue and shard is None else None, group, groups)


@dataclass(frozen=True)
class JobLayout:
    """Where each object of one job goes."""

    root: Location

    @classmethod
    def for_job(cls, output_uri: str, identity: JobIdentity) -> JobLayout:
        return cls(parse_location(output_uri).child(identity.name))

    @property
    def manifest(self) -> Location:
        return self.root.child(MANIFEST_NAME)

    @property
    def outputs(self) -> Location:
        return self.root.child(OUTPUTS_DIR)

    @property
    def shards(self) -> Location:
        return self.root.child(SHARDS_DIR)

    def shard_markers(self, run_key: str) -> Location:
        """The folder of one run's shard markers."""
        return self.shards.child(run_key)

    def shard_marker(self, run_key: str, index: int) -> Location:
        return self.shard_markers(run_key).child(f"{index:05d}.json")

    def output(self, index: int, prompt_index: int, fmt: str) -> Location:
        return self.outputs.child(f"{index:05d}-p{prompt_index:04d}.{EXTENSIONS[fmt]}")
