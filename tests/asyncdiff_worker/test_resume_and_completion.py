"""Resume and completion without torch: an output stored for the same pixel hash is reused and a different hash is
not (files and S3), shard markers of one run assemble exactly one manifest no matter how many shards finish or in
which order, markers of another run never count, and the local shard queue hands every shard to exactly one group."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker.calls import OutputItem
from asyncdiff_worker.completion import (
    ShardMarker,
    ShardTimings,
    assemble_manifest,
    clear_foreign_manifest,
    finish_if_complete,
    prune_other_runs,
    run_key,
    write_marker,
)
from asyncdiff_worker.embedded_s3 import EmbeddedS3
from asyncdiff_worker.keys import JobIdentity, JobLayout, WorkerSlot
from asyncdiff_worker.manifest import read_manifest
from asyncdiff_worker.resume import Rendering, output_metadata, record_from_metadata, reusable
from asyncdiff_worker.shard_source import claim_order, shards_for
from asyncdiff_worker.shards import ShardPlan, output_hash, plan_shards
from asyncdiff_worker.spec import JobSpec, validate_job
from asyncdiff_worker.storage import ObjectInfo, Storage
from asyncdiff_worker.storage.types import S3Settings

IDENTITY = JobIdentity(name="batch", uid="uid-1", attempt=2)


def spec_for(uri: str, outputs: int = 6, shard_size: int = 2) -> JobSpec:
    job = validate_job(
        {
            "model": {"family": "sd15", "source": "/models/x"},
            "generation": {"prompts": [f"p{i}" for i in range(outputs)], "steps": 4, "shardSize": shard_size},
            "output": {"uri": uri},
        }
    )
    assert not isinstance(job, list), job
    return job.spec


def item(index: int) -> OutputItem:
    return OutputItem(index, index, 0, 100 + index, f"p{index}", None)


def rendering(shard: int, attempt: int = 1, who: str = "pod-a") -> Rendering:
    return Rendering(shard, attempt, 0, who, "2026-01-01T00:00:00.000Z", 1.5, 32, 32, None)


def store(storage: Storage, layout: JobLayout, it: OutputItem, job_hash: str, shard: int, **kw: Any) -> Any:
    meta = output_metadata(
        job_name="batch",
        job_uid="uid-1",
        item=it,
        pixel_hash=output_hash(job_hash, it.prompt, it.negative, it.seed),
        rendering=rendering(shard, **kw),
    )
    loc = layout.output(it.index, it.prompt_index, "png")
    put = storage.put(loc, f"image {it.index}".encode(), content_type="image/png", metadata=meta)
    info = ObjectInfo(put.uri, loc.key, put.bytes, "", meta)
    record = record_from_metadata(info, it, fmt="png", content_type="image/png", sha256=put.sha256)
    assert record is not None
    return record


@pytest.fixture(params=["file", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Storage, str]:
    if request.param == "file":
        return Storage(), f"file://{tmp_path}/out"
    server: EmbeddedS3 = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("bucket")
    return Storage(S3Settings(server.endpoint_url, None, True)), f"s3://{bucket}/results"


def test_same_hash_is_reused_a_different_one_is_not(target: tuple[Storage, str]) -> None:
    storage, uri = target
    layout = JobLayout.for_job(uri, IDENTITY)
    it = item(3)
    stored = store(storage, layout, it, "hash-a", shard=1, attempt=1)
    loc = layout.output(3, 3, "png")
    same = reusable(storage, loc, it, output_hash("hash-a", "p3", None, 103), fmt="png", content_type="image/png")
    assert same == stored and same is not None
    assert (same.attempt, same.rendered_by, same.shard, same.bytes) == (1, "pod-a", 1, len(b"image 3"))
    other = output_hash("hash-b", "p3", None, 103)
    assert reusable(storage, loc, it, other, fmt="png", content_type="image/png") is None
    missing = layout.output(4, 4, "png")
    assert reusable(storage, missing, item(4), "x", fmt="png", content_type="image/png") is None
    # an object without our metadata (written by something else) is never reused
    storage.put(loc, b"foreign", content_type="image/png", metadata={})
    assert reusable(storage, loc, it, same.pixel_hash, fmt="png", content_type="image/png") is None


def test_file_metadata_sidecar_is_hidden_and_goes_with_the_file(tmp_path: Path) -> None:
    storage = Storage()
    loc = Storage.locate(f"file://{tmp_path}/a/x.png")
    storage.put(loc, b"1", content_type="image/png", metadata={"Pixel-Hash": "h"})
    info = storage.head(loc)
    assert info is not None and info.metadata["pixel-hash"] == "h" and info.size == 1
    assert [o.key for o in storage.list(f"file://{tmp_path}/a")] == ["x.png"]
    storage.delete(loc)
    assert storage.head(loc) is None and list((tmp_path / "a").iterdir()) == []


def marker_for(
    storage: Storage, layout: JobLayout, spec: JobSpec, plan: ShardPlan, key: str, shard: int, run_id: str
) -> ShardMarker:
    records = [store(storage, layout, item(i), "hash-a", shard) for i in plan.outputs_of(shard)]
    return ShardMarker(
        run_id=run_id,
        run_key=key,
        pixel_hash="hash-a",
        shard=shard,
        num_shards=plan.num_shards,
        attempt=2,
        index_retry=0,
        rendered_by="pod-a",
        rendered=len(records),
        outputs=records,
        timings=ShardTimings(
            started_at=f"2026-01-01T00:00:0{shard}.000Z", finished_at=f"2026-01-01T00:00:1{shard}.000Z"
        ),
    )


def test_manifest_exactly_once_when_the_last_marker_lands(target: tuple[Storage, str]) -> None:
    storage, uri = target
    spec = spec_for(uri)
    plan = plan_shards(spec)
    assert plan.num_shards == 3
    layout = JobLayout.for_job(uri, IDENTITY)
    key = run_key("run-1", "hash-a", plan)
    stale = layout.output(9, 9, "jpeg")  # an earlier spec's output: removed before the manifest is written
    storage.put(stale, b"old", content_type="image/jpeg")
    markers = [marker_for(storage, layout, spec, plan, key, s, "run-1") for s in (2, 0, 1)]
    for marker in markers[:2]:
        write_marker(storage, layout, marker)
        assert finish_if_complete(storage, layout, spec, IDENTITY, plan, key) is None
        assert storage.head(layout.manifest) is None
    write_marker(storage, layout, markers[2])
    first = finish_if_complete(storage, layout, spec, IDENTITY, plan, key)
    assert first is not None
    written = storage.get(layout.manifest)
    second = finish_if_complete(storage, layout, spec, IDENTITY, plan, key)  # a racing finisher: same bytes
    assert second is not None and storage.get(layout.manifest) == written
    manifest = read_manifest(storage, layout.manifest)
    assert [r.index for r in manifest.outputs] == list(range(6))
    assert manifest.rendered == 6 and manifest.job.run_id == "run-1" and manifest.shards == plan.to_dict()
    assert manifest.timings.started_at.endswith("00:00:00.000Z") and manifest.timings.total_seconds == 12.0
    assert storage.head(stale) is None


def test_markers_of_another_run_never_count(target: tuple[Storage, str]) -> None:
    storage, uri = target
    spec = spec_for(uri, outputs=4)
    plan = plan_shards(spec)
    layout = JobLayout.for_job(uri, IDENTITY)
    old, new = run_key("run-old", "hash-a", plan), run_key("run-new", "hash-a", plan)
    assert old != new != run_key("run-new", "hash-b", plan)
    for shard in range(plan.num_shards):
        write_marker(storage, layout, marker_for(storage, layout, spec, plan, old, shard, "run-old"))
    assert finish_if_complete(storage, layout, spec, IDENTITY, plan, old) is not None
    # a new run has one shard done: the old run's complete set must not make it look finished
    write_marker(storage, layout, marker_for(storage, layout, spec, plan, new, 0, "run-new"))
    assert finish_if_complete(storage, layout, spec, IDENTITY, plan, new) is None
    clear_foreign_manifest(storage, layout, "run-old")  # the manifest's own run keeps it
    assert storage.head(layout.manifest) is not None
    clear_foreign_manifest(storage, layout, "run-new")
    assert storage.head(layout.manifest) is None
    write_marker(storage, layout, marker_for(storage, layout, spec, plan, new, 1, "run-new"))
    assert finish_if_complete(storage, layout, spec, IDENTITY, plan, new) is not None
    prune_other_runs(storage, layout, new)
    left = {o.uri.rsplit("/", 2)[1] for o in storage.list(layout.shards)}
    assert left == {new}


def test_assembly_refuses_an_output_listed_twice(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}"
    spec = spec_for(uri, outputs=2, shard_size=1)
    plan = plan_shards(spec)
    storage, layout = Storage(), JobLayout.for_job(uri, IDENTITY)
    a = marker_for(storage, layout, spec, plan, "k", 0, "r")
    with pytest.raises(ValueError, match="twice"):
        assemble_manifest([a, a.model_copy(update={"shard": 1})], spec, IDENTITY, plan)


def test_slot_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    slot = WorkerSlot.from_env(IDENTITY)
    assert (slot.shard_index, slot.index_retry, slot.run_id, slot.queue) == (None, 0, "uid-1/2", None)
    monkeypatch.setenv("ASYNCDIFF_SHARD_INDEX", "4")
    monkeypatch.setenv("ASYNCDIFF_INDEX_RETRY", "2")
    monkeypatch.setenv("ASYNCDIFF_POD_NAME", "job-4-abcde")
    monkeypatch.setenv("ASYNCDIFF_SHARD_QUEUE", str(tmp_path))  # ignored: the operator assigned a shard
    slot = WorkerSlot.from_env(IDENTITY)
    assert (slot.shard_index, slot.index_retry, slot.rendered_by, slot.queue) == (4, 2, "job-4-abcde", None)
    assert list(shards_for(slot, 5)) == [4]
    with pytest.raises(ValueError, match=r"ASYNCDIFF_SHARD_INDEX: 4 is outside the job's 3 shard"):
        list(shards_for(slot, 3))
    monkeypatch.setenv("ASYNCDIFF_SHARD_INDEX", "-1")
    with pytest.raises(ValueError, match=r"\$ASYNCDIFF_SHARD_INDEX: -1 is less than 0"):
        WorkerSlot.from_env(IDENTITY)


def test_queue_hands_every_shard_to_exactly_one_group(tmp_path: Path) -> None:
    slots = [WorkerSlot(None, 0, "run", f"group-{g}", tmp_path / "queue", g, 3) for g in range(3)]
    taken: list[list[int]] = [[] for _ in slots]
    barrier = threading.Barrier(len(slots))

    def take(g: int) -> None:
        barrier.wait()
        taken[g].extend(shards_for(slots[g], 40))

    threads = [threading.Thread(target=take, args=(g,)) for g in range(len(slots))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(i for got in taken for i in got) == list(range(40))
    # (claims are instant here, so one thread may take everything; a real group claims its next shard only after
    # rendering one, so after the start barrier each group begins with its own share)
    assert claim_order(7, 1, 3) == [1, 4, 0, 2, 3, 5, 6]
    assert claim_order(3, None, 1) == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "queue").glob("group-*.ready")) == [f"group-{g}.ready" for g in range(3)]
    owners = {p.name: p.read_text().strip() for p in (tmp_path / "queue").iterdir()}
    assert all(owners[f"{i:05d}.claim"] == f"group-{g}" for g, got in enumerate(taken) for i in got)
