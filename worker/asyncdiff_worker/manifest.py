"""The result manifest: the JSON record of a finished job, written last as its commit marker.

Why last and why this content: a job succeeded if and only if ``<output uri>/<job>/manifest.json`` exists, so the
operator, ``asyncdiff fetch`` and users never see a half-finished result as done (a new run deletes a stale manifest
of another run before it starts writing). With shards, whichever process finds every shard marker of its run written
assembles the manifest from those markers (``completion.py``), so several finishers write the same content; every
output is listed exactly once with the attempt and pod that rendered it. It lists every output with its checksum and
seed (to verify and reproduce it), the exact configuration, the software versions, AsyncDiff's split plan and the
timings.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from asyncdiff_worker import __version__
from asyncdiff_worker.spec.models import API_VERSION, JobSpec
from asyncdiff_worker.spec.uris import Location
from asyncdiff_worker.storage import PutResult, Storage

RESULT_KIND: Final = "AsyncDiffResult"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, protected_namespaces=())


class OutputRecord(_Model):
    """One stored output."""

    index: int = Field(description="Output index: promptIndex * imagesPerPrompt + imageIndex.")
    uri: str
    sha256: str = Field(description="Hex SHA-256 of the stored bytes.")
    bytes: int
    seconds: float = Field(description="Generation time of this output (pipeline call), seconds.")
    upload_seconds: float = 0.0
    prompt_index: int
    image_index: int
    seed: int
    prompt: str
    content_type: str
    format: str
    width: int
    height: int
    frames: int | None = None
    shard: int = Field(default=0, description="The shard this output belongs to.")
    attempt: int = Field(default=1, description="The job attempt that rendered it (not the one that reused it).")
    index_retry: int = Field(default=0, description="The shard's index retry (failures of its pods before) then.")
    rendered_by: str = Field(default="", description="The pod (or host/group) that rendered it.")
    rendered_at: str = Field(default="", description="When its pipeline call started (ISO 8601 UTC).")
    pixel_hash: str = Field(default="", description="What a rerun compares to reuse it (asyncdiff_worker.shards).")


class JobInfo(_Model):
    name: str
    uid: str
    namespace: str | None = None
    attempt: int = 1
    run_id: str = Field(default="", description="The run whose shard markers this manifest was assembled from.")


class Timings(_Model):
    """Wall-clock timings of the attempt, seconds unless named *At (ISO 8601 UTC)."""

    started_at: str
    finished_at: str
    startup_seconds: float = Field(description="Process start to the first denoising step (rank 0).")
    model_seconds: float = Field(description="Model download (if any) and loading.")
    generate_seconds: float = Field(description="All pipeline calls.")
    upload_wait_seconds: float = Field(description="Time spent waiting for uploads after the last output.")
    total_seconds: float = Field(description="Process start to manifest written.")
    seconds_per_output: float


class Runtime(_Model):
    world_size: int
    device: str
    backend: str | None = None


class ResultManifest(_Model):
    """``manifest.json``: the commit marker and record of one job."""

    api_version: Literal["asyncdiff.io/v1alpha1"] = API_VERSION
    kind: Literal["AsyncDiffResult"] = RESULT_KIND
    job: JobInfo
    status: Literal["Succeeded"] = "Succeeded"
    outputs: list[OutputRecord]
    configuration: JobSpec
    versions: dict[str, str]
    plan: dict[str, Any] | None = Field(default=None, description="AsyncDiff's split plan (plan.to_dict()).")
    plan_description: str | None = None
    stats: dict[str, Any] | None = Field(default=None, description="AsyncDiff's communication statistics.")
    runtime: Runtime
    timings: Timings
    shards: dict[str, Any] | None = Field(default=None, description="The shard plan (asyncdiff_worker.shards).")
    rendered: int | None = Field(default=None, description="Outputs rendered by this run (the rest were reused).")

    def to_json(self) -> bytes:
        return (self.model_dump_json(by_alias=True, indent=2) + "\n").encode()


def software_versions() -> dict[str, str]:
    """Versions of the packages that determine the outputs."""
    out = {"asyncdiff_worker": __version__, "python": platform.python_version()}
    for dist in ("torch", "diffusers", "transformers", "accelerate", "safetensors", "pillow", "boto3", "av"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    out["platform"] = sys.platform
    return out


def write_manifest(storage: Storage, location: Location, manifest: ResultManifest) -> PutResult:
    """Write the manifest (call this after every output is stored)."""
    return storage.put(
        location,
        manifest.to_json(),
        content_type="application/json",
        metadata={"job-uid": manifest.job.uid, "kind": RESULT_KIND},
    )


def read_manifest(storage: Storage, location: Location | str) -> ResultManifest:
    return ResultManifest.model_validate(json.loads(storage.get(location)))
