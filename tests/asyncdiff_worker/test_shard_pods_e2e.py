"""The operator's process contract, end to end without the operator: one container command per shard index
(``python -m asyncdiff_worker.launch`` with ``ASYNCDIFF_SHARD_INDEX``), as an Indexed Job's pods run it, to S3
(moto). Shards finish out of order and one is a retry; the manifest appears only with the last shard, lists every
output once with the attempt, index retry and pod that rendered it; a new attempt after an output was lost renders
that output only, and a shard with nothing left to render does not even load the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker.completion import ShardMarker
from asyncdiff_worker.embedded_s3 import EmbeddedS3
from asyncdiff_worker.launch import main as launch_main
from asyncdiff_worker.manifest import ResultManifest

pytestmark = pytest.mark.slow


def _pod(monkeypatch: pytest.MonkeyPatch, job: Path, shard: int, attempt: int, retry: int | None = None) -> int:
    monkeypatch.setenv("ASYNCDIFF_JOB_UID", "uid-pods")
    monkeypatch.setenv("ASYNCDIFF_SHARD_INDEX", str(shard))
    monkeypatch.setenv("ASYNCDIFF_ATTEMPT", str(attempt))
    monkeypatch.setenv("ASYNCDIFF_POD_NAME", f"pods-a{attempt}-{shard}")
    if retry is None:
        monkeypatch.delenv("ASYNCDIFF_INDEX_RETRY", raising=False)
    else:
        monkeypatch.setenv("ASYNCDIFF_INDEX_RETRY", str(retry))
    return launch_main(["--spec", str(job)])


def test_one_pod_per_shard_then_a_new_attempt_resumes(
    tiny_model_dir: Any,
    s3_server: EmbeddedS3,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_job: Any,
    s3_output: Any,
) -> None:
    spec = {
        "model": {"family": "sd15", "source": str(tiny_model_dir("sd15")), "dtype": "float32"},
        "parallelism": {"modelN": 1},
        "generation": {
            "prompts": ["a red cube", "a blue sphere"],
            "steps": 2,
            "height": 32,
            "width": 32,
            "shardSize": 1,
        },
        "output": s3_output(s3_server.endpoint_url, bucket),
    }
    job = write_job(tmp_path, spec, "pods")

    def manifest() -> ResultManifest | None:
        found = s3.list_objects_v2(Bucket=bucket, Prefix="results/pods/manifest.json").get("KeyCount", 0)
        if not found:
            return None
        body = s3.get_object(Bucket=bucket, Key="results/pods/manifest.json")["Body"].read()
        return ResultManifest.model_validate(json.loads(body))

    def markers() -> list[ShardMarker]:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="results/pods/_shards/").get("Contents", [])]
        bodies = [s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in sorted(keys)]
        return [ShardMarker.model_validate(json.loads(b)) for b in bodies]

    # attempt 1: shard 1 first, then shard 0 on its second pod (index retry 1); the manifest only after both
    assert _pod(monkeypatch, job, 1, attempt=1) == 0
    assert manifest() is None and [m.shard for m in markers()] == [1]
    assert _pod(monkeypatch, job, 0, attempt=1, retry=1) == 0
    first = manifest()
    assert first is not None and first.rendered == 2 and [r.index for r in first.outputs] == [0, 1]
    assert [(r.attempt, r.index_retry, r.rendered_by) for r in first.outputs] == [
        (1, 1, "pods-a1-0"),
        (1, 0, "pods-a1-1"),
    ]
    assert first.job.run_id == "uid-pods/1"
    head = s3.head_object(Bucket=bucket, Key="results/pods/outputs/00000-p0000.png")["Metadata"]
    assert head["pixel-hash"] == first.outputs[0].pixel_hash and head["attempt"] == "1"

    # output 0 is lost; attempt 2 runs both shards again: shard 0 renders it, shard 1 reuses its output
    s3.delete_object(Bucket=bucket, Key="results/pods/outputs/00000-p0000.png")
    assert _pod(monkeypatch, job, 0, attempt=2) == 0
    assert manifest() is None  # attempt 1's manifest is gone: attempt 2 has not finished
    assert _pod(monkeypatch, job, 1, attempt=2) == 0
    second = manifest()
    assert second is not None and second.rendered == 1 and second.job.run_id == "uid-pods/2"
    assert [(r.index, r.attempt, r.rendered_by) for r in second.outputs] == [(0, 2, "pods-a2-0"), (1, 1, "pods-a1-1")]
    assert second.outputs[1] == first.outputs[1] and second.outputs[0].sha256 == first.outputs[0].sha256
    now = {m.shard: m for m in markers()}  # attempt 1's markers were pruned when attempt 2's manifest was written
    assert sorted(now) == [0, 1] and {m.run_id for m in now.values()} == {"uid-pods/2"}
    assert now[0].runtime is not None and now[1].runtime is None  # shard 1 had nothing to render: no model loaded
