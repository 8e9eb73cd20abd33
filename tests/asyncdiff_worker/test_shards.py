"""Shard plans and the pixel hash: the operator and the worker cut a job the same way, and only pixel-relevant
fields change the hash that decides whether a stored output is reused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from asyncdiff_worker.shards import amortising_shard_size, output_hash, pixel_hash, plan_shards
from asyncdiff_worker.spec import JobSpec, validate_job

BASE: dict[str, Any] = {
    "model": {"family": "sd15", "source": "/models/tiny-sd15"},
    "generation": {"prompts": [f"p{i}" for i in range(10)], "steps": 20},
    "output": {"uri": "file:///tmp/out"},
}


def spec_of(**changes: Any) -> JobSpec:
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    job = validate_job(data)
    assert not isinstance(job, list), job
    return job.spec


def covered(spec: JobSpec) -> list[int]:
    plan = plan_shards(spec)
    return [i for shard in range(plan.num_shards) for i in plan.outputs_of(shard)]


@pytest.mark.parametrize("replicas", [1, 2, 3, 7, 10])
@pytest.mark.parametrize("images", [1, 3])
def test_every_output_in_exactly_one_shard(replicas: int, images: int) -> None:
    spec = spec_of(parallelism__replicas=replicas, generation__imagesPerPrompt=images)
    assert covered(spec) == list(range(10 * images))
    plan = plan_shards(spec)
    assert plan.replicas == min(replicas, plan.num_shards)
    assert all(len(plan.outputs_of(i)) > 0 for i in range(plan.num_shards))


def test_explicit_shard_size() -> None:
    plan = plan_shards(spec_of(generation__shardSize=4))
    assert (plan.shard_size, plan.num_shards) == (4, 3)
    assert [list(plan.outputs_of(i)) for i in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan.shard_of(9) == 2
    with pytest.raises(ValueError, match="outside"):
        plan.outputs_of(3)


def test_default_size_amortises_loading_and_feeds_every_replica() -> None:
    prompts = [f"p{i}" for i in range(1000)]
    spec = spec_of(generation__prompts=prompts, parallelism__replicas=4)
    least = amortising_shard_size(spec)
    assert least == 45  # sd15: loading ~100 steps; 9 x 100 / 20 steps per output
    plan = plan_shards(spec)
    assert plan.shard_size >= least
    assert plan.num_shards % 4 == 0  # whole waves of the replicas
    assert covered(spec) == list(range(1000))
    few = plan_shards(spec_of(parallelism__replicas=4))  # 10 outputs: one shard per replica, loading or not
    assert (few.num_shards, few.replicas) == (4, 4)


def test_more_replicas_than_outputs_are_clamped() -> None:
    plan = plan_shards(spec_of(generation__prompts=["a", "b"], parallelism__replicas=5))
    assert (plan.num_shards, plan.replicas, plan.requested_replicas, plan.clamped) == (2, 2, 5, True)
    assert "clamped from 5 to 2" in plan.reason


def test_prompts_file_without_count_is_one_shard() -> None:
    data = copy.deepcopy(BASE)
    data["generation"] = {"promptsFrom": "file:///tmp/prompts.jsonl", "steps": 20}
    job = validate_job(data)
    assert not isinstance(job, list)
    plan = plan_shards(job.spec)
    assert (plan.total_outputs, plan.num_shards) == (None, 1)
    assert plan.outputs_of(0, total_outputs=37) == range(37)
    data["generation"].update(promptCount=30, shardSize=8)
    job = validate_job(data)
    assert not isinstance(job, list)
    assert plan_shards(job.spec).num_shards == 4


def test_pixel_hash_ignores_layout_of_the_work_but_not_of_the_pixels() -> None:
    base = pixel_hash(spec_of())
    same = [
        spec_of(parallelism__replicas=4),
        spec_of(generation__shardSize=3),
        spec_of(generation__prompts=["other"]),
        spec_of(output__uri="file:///elsewhere"),
    ]
    assert all(pixel_hash(s) == base for s in same)
    different = [
        spec_of(generation__steps=21),
        spec_of(generation__guidanceScale=5.0),
        spec_of(parallelism__warmUp=2),
        spec_of(parallelism__modelN=3),
        spec_of(model__dtype="float16"),
        spec_of(output__format="jpeg"),
        spec_of(output__quality=50),
    ]
    hashes = {pixel_hash(s) for s in different}
    assert base not in hashes and len(hashes) == len(different)
    assert pixel_hash(spec_of(), extra="images") != base


def test_output_hash_folds_in_prompt_and_seed() -> None:
    job = pixel_hash(spec_of())
    one = output_hash(job, "a cat", None, 3)
    assert one == output_hash(job, "a cat", None, 3)
    assert len({one, output_hash(job, "a dog", None, 3), output_hash(job, "a cat", "blur", 3)}) == 3
    assert output_hash(job, "a cat", None, 4) != one


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"parallelism__replicas": 0}, "spec.parallelism.replicas: 0 is less than the minimum 1"),
        ({"parallelism__replicas": -2}, "spec.parallelism.replicas: -2 is less than the minimum 1"),
        ({"generation__shardSize": 0}, "spec.generation.shardSize: 0 is less than the minimum 1"),
        ({"generation__promptCount": 3}, "spec.generation.promptCount: counts the prompts of promptsFrom"),
    ],
)
def test_bad_batch_fields(changes: dict[str, Any], message: str) -> None:
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        section, field = path.split("__")
        data.setdefault(section, {})[field] = value
    errors = validate_job(data)
    assert isinstance(errors, list) and any(e.startswith(message) for e in errors), errors


def test_sharded_prompts_file_needs_its_count() -> None:
    data = copy.deepcopy(BASE)
    data["generation"] = {"promptsFrom": "file:///tmp/prompts.jsonl", "steps": 20}
    data["parallelism"] = {"replicas": 2}
    errors = validate_job(data)
    assert isinstance(errors, list)
    assert any(e.startswith("spec.generation.promptCount: is required with promptsFrom") for e in errors), errors
