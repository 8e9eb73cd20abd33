"""Job identity and the deterministic layout of a job's objects.

Why deterministic: a retried attempt of the same job must write to exactly the same keys, so it overwrites instead
of duplicating, and the manifest (the commit marker) sits at a fixed place that the operator and ``asyncdiff
fetch`` can find. Layout under ``<output uri>/<job name>/``: ``outputs/<index>-p<prompt>.<ext>`` and
``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from asyncdiff_worker.spec.models import AsyncDiffJob
from asyncdiff_worker.spec.uris import Location, parse_location

MANIFEST_NAME = "manifest.json"
OUTPUTS_DIR = "outputs"

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

    def output(self, index: int, prompt_index: int, fmt: str) -> Location:
        return self.outputs.child(f"{index:05d}-p{prompt_index:04d}.{EXTENSIONS[fmt]}")
