"""``asyncdiff run`` with replicas: two local groups (torchrun each, modelN 1, gloo) share the shards of one job,
every output is rendered exactly once, both groups really ran at the same time (their recorded intervals overlap,
which the start barrier guarantees, not a timing bound), and a rerun renders only what is missing."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker.completion import ShardMarker
from asyncdiff_worker.local_run import run_job

pytestmark = pytest.mark.slow


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_two_replicas_share_the_shards_and_a_rerun_renders_only_what_is_missing(
    tiny_model_dir: Any, tmp_path: Path, write_job: Any
) -> None:
    out = tmp_path / "out"
    spec = {
        "model": {"family": "sd15", "source": str(tiny_model_dir("sd15")), "dtype": "float32"},
        "parallelism": {"modelN": 1, "replicas": 2},
        "generation": {
            "prompts": ["a red cube", "a blue sphere", "a green cone", "a grey torus"],
            "steps": 2,
            "height": 32,
            "width": 32,
            "shardSize": 1,
        },
        "output": {"uri": f"file://{out}"},
    }
    job_path = write_job(tmp_path, spec, "replicas")
    code, manifest, result = run_job(job_path, quiet=True)
    assert code == 0, result
    assert manifest is not None
    assert [r.index for r in manifest.outputs] == [0, 1, 2, 3]  # every output exactly once
    assert manifest.rendered == 4 and manifest.shards is not None and manifest.shards["numShards"] == 4
    assert all(Path(r.uri.removeprefix("file://")).is_file() for r in manifest.outputs)

    paths = sorted(p for p in (out / "replicas" / "_shards").rglob("*.json") if not p.name.startswith("."))
    markers = [ShardMarker.model_validate(json.loads(p.read_text())) for p in paths]
    assert sorted(m.shard for m in markers) == [0, 1, 2, 3]
    groups: dict[str, list[ShardMarker]] = {}
    for marker in markers:
        groups.setdefault(marker.rendered_by, []).append(marker)
    assert sorted(name.rsplit("/", 1)[-1] for name in groups) == ["group-0", "group-1"], groups.keys()
    intervals = [
        (min(_t(m.timings.started_at) for m in ms), max(_t(m.timings.finished_at) for m in ms))
        for ms in groups.values()
    ]
    (a0, a1), (b0, b1) = intervals
    assert a0 <= b1 and b0 <= a1, intervals  # the two groups ran at the same time
    assert {r.rendered_by for r in manifest.outputs} == set(groups)

    # lose one output: the next run renders that one only, reusing the other three with their original records
    lost = manifest.outputs[2]
    Path(lost.uri.removeprefix("file://")).unlink()
    code2, manifest2, _ = run_job(job_path, quiet=True)
    assert code2 == 0 and manifest2 is not None
    assert [r.index for r in manifest2.outputs] == [0, 1, 2, 3] and manifest2.rendered == 1
    kept = [r for r in manifest2.outputs if r.index != 2]
    assert [r.model_dump() for r in kept] == [r.model_dump() for r in manifest.outputs if r.index != 2]
    assert manifest2.outputs[2].rendered_at > lost.rendered_at
    assert manifest2.outputs[2].sha256 == lost.sha256  # the same pixels again (same seed, same layout)
    assert manifest2.job.run_id != manifest.job.run_id
