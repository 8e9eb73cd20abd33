"""Shard markers and the one result manifest assembled from them.

Why markers: shards finish in any order, in different pods, some more than once (a retried index, a new attempt).
Each finished shard writes ``_shards/<run key>/<shard>.json`` listing its output records; whichever process then
finds every marker of its run present assembles ``manifest.json`` from the markers alone. The assembly is a pure
function of the markers, so two finishers racing write the same content, and every output appears exactly once
(each belongs to one shard). The run key hashes the run id, the pixel hash and the shard plan: a marker of another
run, another spec or another cut of the outputs never counts, so a finisher cannot declare done while a shard of
its own run is still re-rendering. One LIST of the run's marker folder tells whether all are there, so shards that
finish early cost one request, not one per shard.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field

from asyncdiff_worker.keys import JobIdentity, JobLayout
from asyncdiff_worker.manifest import (
    JobInfo,
    OutputRecord,
    ResultManifest,
    Runtime,
    Timings,
    _Model,
    write_manifest,
)
from asyncdiff_worker.shards import ShardPlan
from asyncdiff_worker.spec.models import JobSpec
from asyncdiff_worker.storage import Storage, StorageNotFound

MARKER_KIND = "AsyncDiffShard"


class ShardTimings(_Model):
    started_at: str
    finished_at: str
    startup_seconds: float | None = Field(default=None, description="Process start to its first step, if any.")
    model_seconds: float = 0.0
    generate_seconds: float = 0.0
    upload_wait_seconds: float = 0.0


class ShardMarker(_Model):
    """``_shards/<run key>/<index>.json``: one finished shard of one run."""

    kind: str = MARKER_KIND
    run_id: str
    run_key: str
    pixel_hash: str
    shard: int
    num_shards: int
    attempt: int
    index_retry: int
    rendered_by: str
    rendered: int = Field(description="Outputs rendered for this marker; the rest were reused.")
    outputs: list[OutputRecord]
    timings: ShardTimings
    runtime: Runtime | None = None
    plan: dict[str, Any] | None = None
    plan_description: str | None = None
    stats: dict[str, Any] | None = None
    versions: dict[str, str] = Field(default_factory=dict)

    def to_json(self) -> bytes:
        return (self.model_dump_json(by_alias=True, indent=1) + "\n").encode()


def run_key(run_id: str, pixel_hash: str, plan: ShardPlan) -> str:
    """The folder name of one run's markers."""
    text = json.dumps([run_id, pixel_hash, plan.total_outputs, plan.shard_size, plan.num_shards])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def write_marker(storage: Storage, layout: JobLayout, marker: ShardMarker) -> None:
    storage.put(
        layout.shard_marker(marker.run_key, marker.shard),
        marker.to_json(),
        content_type="application/json",
        metadata={"kind": MARKER_KIND, "run-key": marker.run_key},
    )


def complete_markers(storage: Storage, layout: JobLayout, key: str, num_shards: int) -> list[ShardMarker] | None:
    """Every marker of run ``key``, in shard order, or None while one is missing."""
    folder = layout.shard_markers(key)
    names = {info.uri.rsplit("/", 1)[-1] for info in storage.list(folder)}
    wanted = [f"{i:05d}.json" for i in range(num_shards)]
    if not all(name in names for name in wanted):
        return None
    markers: list[ShardMarker] = []
    for index in range(num_shards):
        try:
            marker = ShardMarker.model_validate(json.loads(storage.get(layout.shard_marker(key, index))))
        except StorageNotFound:
            return None
        if marker.run_key != key or marker.shard != index:
            return None
        markers.append(marker)
    return markers


def assemble_manifest(
    markers: list[ShardMarker], spec: JobSpec, identity: JobIdentity, plan: ShardPlan
) -> ResultManifest:
    """The result manifest of a complete run: a pure function of its markers (see the module docstring)."""
    outputs = sorted((r for m in markers for r in m.outputs), key=lambda r: r.index)
    seen = [r.index for r in outputs]
    if len(set(seen)) != len(seen):
        raise ValueError("shard markers list an output twice")
    first = markers[0]
    loaded = next((m for m in markers if m.runtime is not None), None)
    rendered = sum(m.rendered for m in markers)
    started = min(m.timings.started_at for m in markers)
    finished = max(m.timings.finished_at for m in markers)
    startups = [m.timings.startup_seconds for m in markers if m.timings.startup_seconds is not None]
    generate = sum(m.timings.generate_seconds for m in markers)
    runtime = loaded.runtime if loaded is not None and loaded.runtime is not None else Runtime(world_size=0, device="")
    return ResultManifest(
        job=JobInfo(
            name=identity.name,
            uid=identity.uid,
            namespace=identity.namespace,
            attempt=max(m.attempt for m in markers),
            run_id=first.run_id,
        ),
        outputs=outputs,
        configuration=spec,
        versions=(loaded or first).versions,
        plan=loaded.plan if loaded is not None else None,
        plan_description=loaded.plan_description if loaded is not None else None,
        stats=loaded.stats if loaded is not None else None,
        runtime=runtime,
        timings=Timings(
            started_at=started,
            finished_at=finished,
            startup_seconds=min(startups) if startups else 0.0,
            model_seconds=round(sum(m.timings.model_seconds for m in markers), 3),
            generate_seconds=round(generate, 3),
            upload_wait_seconds=round(sum(m.timings.upload_wait_seconds for m in markers), 3),
            total_seconds=round(_seconds_between(started, finished), 3),
            seconds_per_output=round(generate / max(1, rendered), 4),
        ),
        shards=plan.to_dict(),
        rendered=rendered,
    )


def _seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()


def remove_stale_outputs(storage: Storage, layout: JobLayout, keep: set[str]) -> int:
    """Delete objects under ``outputs/`` that the manifest does not list (an earlier spec's, another format);
    returns how many."""
    removed = 0
    for obj in storage.list(layout.outputs):
        if obj.uri not in keep:
            storage.delete(obj.uri)
            removed += 1
    return removed


def finish_if_complete(
    storage: Storage, layout: JobLayout, spec: JobSpec, identity: JobIdentity, plan: ShardPlan, key: str
) -> ResultManifest | None:
    """Write the manifest when every shard marker of run ``key`` exists; returns it, or None while shards remain.
    Stale outputs are removed before the manifest (the commit marker) is written."""
    markers = complete_markers(storage, layout, key, plan.num_shards)
    if markers is None:
        return None
    manifest = assemble_manifest(markers, spec, identity, plan)
    remove_stale_outputs(storage, layout, {r.uri for r in manifest.outputs})
    write_manifest(storage, layout.manifest, manifest)
    return manifest


def clear_foreign_manifest(storage: Storage, layout: JobLayout, run_id: str) -> None:
    """Delete a manifest written by another run (a new run must not look done before it is); keep this run's."""
    try:
        data = json.loads(storage.get(layout.manifest))
        if isinstance(data, dict) and data.get("job", {}).get("runId") == run_id:
            return
    except StorageNotFound:
        return
    except ValueError:
        pass
    storage.delete(layout.manifest)


def prune_other_runs(storage: Storage, layout: JobLayout, key: str) -> None:
    """Delete the shard markers of other runs once this run's manifest is written (they can never count again)."""
    for obj in storage.list(layout.shards):
        parts = obj.uri.rsplit("/", 2)
        if len(parts) == 3 and parts[1] != key:
            storage.delete(obj.uri)
