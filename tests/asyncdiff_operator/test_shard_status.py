"""Unit tests of the sharded child Job (rendering, layout) and of the pure sharded status decisions."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from asyncdiff_operator import reasons
from asyncdiff_operator.api import parse_spec
from asyncdiff_operator.children import render_configmap, render_job
from asyncdiff_operator.layout import resolve, running_layout
from asyncdiff_operator.shard_job import failure_policy
from asyncdiff_operator.shard_kube import candidates
from asyncdiff_operator.shard_status import (
    ShardObservation,
    decide_sharded,
    layout_status,
    parse_indexes,
    stalled,
)
from asyncdiff_worker.exit_codes import USER_ERROR_CODES
from pydantic import ValidationError

PROMPTS = [f"prompt {i}" for i in range(10)]


def cr(**parallelism: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "b", "namespace": "ns", "uid": "u-9", "labels": {}},
        "spec": {
            "model": {"family": "sd15", "source": "s3://b/m"},
            "parallelism": {"modelN": 2, "stride": 1, **parallelism},
            "generation": {"prompts": PROMPTS, "steps": 20, "shardSize": 3},
            "output": {"uri": "s3://b/out"},
            "runPolicy": {"backoffLimit": 2},
        },
    }


def test_replicas_and_shards_render_an_indexed_job_retried_per_index() -> None:
    body = cr(replicas=2)
    spec = parse_spec(body["spec"])
    job = render_job(body, spec, 1)["spec"]
    # 10 outputs in shards of 3: 4 shards (3, 3, 3, 1), 2 groups at a time
    assert job["completionMode"] == "Indexed" and job["completions"] == 4 and job["parallelism"] == 2
    assert job["backoffLimitPerIndex"] == 2 and "backoffLimit" not in job and "maxFailedIndexes" not in job
    assert "suspend" not in job
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and set(rules[0]["onExitCodes"]["values"]) == set(USER_ERROR_CODES)
    assert rules[1] == {
        "action": "Ignore",
        "onExitCodes": {"containerName": "worker", "operator": "In", "values": [24, 143]},
    }
    assert rules[2]["action"] == "Ignore" and rules[2]["onPodConditions"][0]["type"] == "DisruptionTarget"
    (c,) = job["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    index_ref = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    retry_ref = "metadata.annotations['batch.kubernetes.io/job-index-failure-count']"
    assert env["ASYNCDIFF_SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == index_ref
    assert env["ASYNCDIFF_INDEX_RETRY"]["valueFrom"]["fieldRef"]["fieldPath"] == retry_ref
    assert "--nproc=2" in c["command"] and c["resources"]["limits"]["nvidia.com/gpu"] == "2"  # one group per pod
    assert not [e for e in c["env"] if e["name"].startswith("PET_")]


def test_model_n_1_groups_and_kueue_suspend() -> None:
    body = cr(modelN=1, replicas=3)
    body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpus"}
    spec = parse_spec(body["spec"])
    job = render_job(body, spec, 1)
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert "--nproc=1" in c["command"] and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job["spec"]["parallelism"] == 3 and job["spec"]["completions"] == 4
    assert "replicas: 3" in render_configmap(body, spec, 1)["data"]["job.yaml"]


def test_layout_clamps_replicas_to_shards_and_keeps_the_planned_shards() -> None:
    spec = parse_spec(cr(replicas=6)["spec"])
    layout = resolve(spec)
    assert layout.plan.num_shards == 4 and layout.groups == 4 and "clamped" in layout.note
    assert layout.devices_per_group == 2 and layout.devices_total == 8 and layout.summary == "4x2"
    status = layout_status(layout)
    assert status["devicesTotal"] == 8 and status["plannedReplicas"] == 6 and status["shards"] == 4
    # default shard size: whole waves of the replicas, so the plan depends on them; a running child keeps its plan
    body = cr(replicas=2)
    del body["spec"]["generation"]["shardSize"]
    body["spec"]["generation"]["prompts"] = [f"p{i}" for i in range(200)]
    two = resolve(parse_spec(body["spec"]))
    body["spec"]["parallelism"]["replicas"] = 5
    five = parse_spec(body["spec"])
    kept = resolve(five, planned_replicas=2)
    assert kept.plan == two.plan and kept.groups == min(5, two.plan.num_shards)


def test_the_planner_chooses_the_layout_the_child_runs() -> None:
    body = cr()
    body["spec"]["parallelism"] = {"devices": 4, "goal": "throughput"}
    spec = parse_spec(body["spec"])
    layout = resolve(spec)
    # throughput on 4 devices for a model that fits one: 4 plain pipelines (modelN 1), the reason says why
    assert (layout.model_n, layout.replicas, layout.devices_per_group) == (1, 4, 1) and layout.reason
    assert layout_status(layout)["reason"] == layout.reason
    job = render_job(body, spec, 1)["spec"]
    (c,) = job["template"]["spec"]["containers"]
    assert job["parallelism"] == 4 and "--nproc=1" in c["command"]
    worker = yaml.safe_load(render_configmap(body, spec, 1)["data"]["job.yaml"])["spec"]["parallelism"]
    assert (worker["modelN"], worker["replicas"]) == (1, 4)  # the worker gets the planned layout, never plans
    body["spec"]["parallelism"] = {"devices": 3, "goal": "latency", "modelN": 2}
    with pytest.raises(ValueError, match="devices"):
        resolve(parse_spec(body["spec"]))


def test_scaling_a_planned_job_keeps_its_layout_and_follows_the_replicas() -> None:
    body = cr()
    body["spec"]["parallelism"] = {"devices": 4, "goal": "latency", "quality": "any"}
    chosen = resolve(parse_spec(body["spec"]))
    assert chosen.model_n > 1 and chosen.reason  # the planner split the denoiser for latency
    status = {"attempts": 1, "layout": layout_status(chosen)}
    body["status"] = status
    assert (chosen.model_n, chosen.stride, chosen.replicas) == (3, 2, 1)
    body["spec"]["parallelism"]["replicas"] = 2  # kubectl patch: scale up a running job
    spec = parse_spec(body["spec"])
    fresh = resolve(spec)  # planned afresh, 2 replicas of 4 devices would be another layout: a new one mid-run
    assert (fresh.model_n, fresh.stride) != (3, 2)
    scaled = resolve(spec, running=running_layout(status))
    assert (scaled.model_n, scaled.stride, scaled.cfg_parallel) == (chosen.model_n, chosen.stride, chosen.cfg_parallel)
    assert scaled.replicas == 2 and scaled.reason == chosen.reason
    job = render_job(body, spec, 1)["spec"]  # a re-created child keeps the layout too
    assert job["parallelism"] == min(2, job["completions"])
    worker = yaml.safe_load(render_configmap(body, spec, 1)["data"]["job.yaml"])["spec"]["parallelism"]
    assert (worker["modelN"], worker["replicas"]) == (chosen.model_n, 2) and "devices" not in worker
    assert running_layout({"attempts": 0, "layout": status["layout"]}) is None  # no child yet: plan afresh


def test_multi_node_with_replicas_is_rejected() -> None:
    body = cr(replicas=2)
    body["spec"]["runPolicy"] = {"numNodes": 2, "gpusPerNode": 1}
    with pytest.raises(ValidationError, match="replicas"):
        parse_spec(body["spec"])


def test_failure_policy_order_fail_job_first() -> None:
    actions = [r["action"] for r in failure_policy()["rules"]]
    assert actions == ["FailJob", "Ignore", "Ignore"]


def test_sampling_candidates_are_the_lowest_pending_shards() -> None:
    assert candidates(10, 3, {0, 1}, {3}) == [2, 4, 5]
    assert candidates(3, 5, {0, 1, 2}, set()) == []
    assert parse_indexes("0-2,5, 7-8") == {0, 1, 2, 5, 7, 8}


# ------------------------------------------------------------------ decisions

SPEC = parse_spec(cr(replicas=2)["spec"])
LAYOUT = resolve(SPEC)
POLICY = SPEC.run_policy
RUNNING: dict[str, Any] = {
    "phase": "Running",
    "attempts": 1,
    "startTime": "2026-01-01T00:00:00Z",
    "layout": layout_status(LAYOUT),
    "devices": 4,
}
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def run(status: dict[str, Any], obs: ShardObservation, now: float = T0 + 60, **kw: Any) -> Any:
    return decide_sharded(status, obs, POLICY, LAYOUT, 1, now=now, stall_seconds=600, **kw)


def test_new_job_creates_attempt_1_and_records_the_layout() -> None:
    d = run({}, ShardObservation())
    assert d.create_attempt == 1 and d.status["phase"] == reasons.PENDING and d.status["startTime"]
    assert d.status["layout"]["groups"] == 2 and d.status["devices"] == 4
    queued = run({}, ShardObservation(), queued_by_kueue=True)
    assert queued.create_attempt == 1 and "startTime" not in queued.status  # counted from admission


def test_resuming_a_kueue_job_leaves_admission_to_kueue() -> None:
    suspended = {**RUNNING, "phase": reasons.SUSPENDED}
    plain = run(suspended, ShardObservation(job_found=True))
    assert plain.suspend_child is False and plain.status["phase"] == reasons.PENDING  # like a batch/v1 Job
    queued = run(suspended, ShardObservation(job_found=True), queued_by_kueue=True)
    assert queued.suspend_child is None  # never unsuspended by us: that would bypass the queue's quota
    assert queued.status["phase"] == reasons.QUEUED
    assert queued.status["startTime"] is None  # a merge-patch null: the deadline clock restarts at admission
    running = {c["type"]: c for c in queued.status["conditions"]}["Running"]
    assert running["status"] == "False" and "Kueue" in running["message"]


def test_progress_sums_completed_shards_and_the_sampled_one() -> None:
    obs = ShardObservation(
        completed=frozenset({0, 1}),
        active=2,
        parallelism=2,
        sample_index=2,
        sample_pod="p",
        sample_phase="Running",
        event={"outputsDone": 2, "step": 5, "steps": 20, "ts": T0 + 59, "lastProgressTs": T0 + 59},
    )
    d = run(RUNNING, obs)
    p = d.status["progress"]
    assert p["outputsDone"] == 8 and p["outputsTotal"] == 10 and p["summary"] == "8/10"
    assert d.status["shards"] == {"total": 4, "completed": 2, "failed": 0, "active": 2, "completedIndexes": "0-1"}
    assert d.patch_parallelism is None and not d.delete_pod
    # nothing new: no status patch at all (a patch per tick per job would not scale)
    again = run({**RUNNING, **d.status}, ShardObservation(completed=frozenset({0, 1}), active=2, parallelism=2))
    assert again.status == {}


def test_job_complete_succeeds_and_failed_job_reasons() -> None:
    d = run(RUNNING, ShardObservation(complete=True, completed=frozenset(range(4))))
    assert d.status["phase"] == reasons.SUCCEEDED and d.status["progress"]["outputsDone"] == 10
    user = run(
        RUNNING,
        ShardObservation(
            failed_reason="PodFailurePolicy", failed_pods=1, failure=(11, "ModelNotFound (exit 11): no model")
        ),
    )
    assert user.status["phase"] == reasons.FAILED and user.status["lastFailure"]["reason"] == "ModelNotFound"
    assert user.status["lastFailure"]["exitCode"] == 11
    spent = run(
        RUNNING,
        ShardObservation(failed_reason="FailedIndexes", failed_indexes=frozenset({3}), failed_pods=3, failure=(1, "x")),
    )
    assert spent.status["lastFailure"]["reason"] == "Crashed" and spent.status["lastFailure"]["exitCode"] == 1
    assert (spent.retried, spent.retried_times) == ("Crashed", 2)  # 3 failures, none seen before: 2 were retried
    assert "shard(s) 3" in spent.status["lastFailure"]["message"]
    failed = {c["type"]: c for c in spent.status["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == reasons.BACKOFF_LIMIT_EXCEEDED


def test_a_counted_pod_failure_is_reported_once_and_retried_by_the_job() -> None:
    obs = ShardObservation(active=2, parallelism=2, failed_pods=1, failure=(1, "crash"))
    d = run(RUNNING, obs)
    assert d.status["failedPods"] == 1 and d.status["lastFailure"]["reason"] == "Crashed"
    assert d.retried == "Crashed" and d.create_attempt is None and d.delete_attempt is None
    again = run({**RUNNING, **d.status}, obs)
    assert again.retried is None and "lastFailure" not in again.status


def test_queued_until_admitted_then_the_deadline_counts_from_admission() -> None:
    pending = {"phase": "Pending", "attempts": 1, "layout": layout_status(LAYOUT), "devices": 4}
    d = run(pending, ShardObservation(suspended=True, parallelism=2))
    assert d.status["phase"] == reasons.QUEUED and "startTime" not in d.status
    queued = {**pending, **d.status}
    assert run(queued, ShardObservation(suspended=True, parallelism=2)).status == {}
    admitted = run(queued, ShardObservation(active=2, ready=2, parallelism=2), now=T0 + 5000)
    assert admitted.status["startTime"] == "2026-01-01T01:23:20Z" and admitted.status["phase"] == reasons.RUNNING
    taken_back = run(RUNNING, ShardObservation(suspended=True, parallelism=2))  # Kueue preempted the admitted Job
    assert taken_back.status["phase"] == reasons.QUEUED and taken_back.status["startTime"] is None


def test_deadline_exceeded_deletes_the_child() -> None:
    spec = parse_spec({**cr(replicas=2)["spec"], "runPolicy": {"activeDeadlineSeconds": 30}})
    d = decide_sharded(
        RUNNING, ShardObservation(active=2, parallelism=2), spec.run_policy, LAYOUT, 1, now=T0 + 31, stall_seconds=600
    )
    assert d.status["phase"] == reasons.FAILED and d.delete_attempt == 1
    assert d.status["lastFailure"]["reason"] == reasons.DEADLINE_EXCEEDED


def test_replicas_change_patches_the_child_parallelism() -> None:
    d = run(RUNNING, ShardObservation(active=1, parallelism=1))
    assert d.patch_parallelism == 2 and any(e[1] == reasons.SCALED for e in d.events)


def test_a_stalled_shard_pod_is_deleted_then_counted_against_backoff_limit() -> None:
    obs = ShardObservation(
        active=2,
        parallelism=2,
        sample_index=1,
        sample_pod="b-attempt-1-1-x",
        sample_phase="Running",
        event={"ts": T0 + 1000, "lastProgressTs": T0},
    )
    assert stalled(obs, T0 + 1001, 600) is not None
    d = run(RUNNING, obs, now=T0 + 1001)
    assert d.delete_pod == "b-attempt-1-1-x" and d.status["stalls"] == 1 and d.retried == reasons.STALLED
    worn = {**RUNNING, "stalls": POLICY.backoff_limit}
    final = run(worn, obs, now=T0 + 1001)
    assert final.status["phase"] == reasons.FAILED and final.delete_attempt == 1


def test_a_missing_child_is_recreated_and_terminal_is_absorbing() -> None:
    assert run(RUNNING, ShardObservation(job_found=False)).create_attempt == 1
    assert run({**RUNNING, "phase": "Succeeded"}, ShardObservation(job_found=False)).create_attempt is None


def test_the_kueue_example_renders_a_suspended_indexed_job() -> None:
    from pathlib import Path

    example = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples/jobs/batch-kueue.yaml").read_text())
    example["metadata"].update(namespace="ml", uid="u-k")
    spec = parse_spec(example["spec"])
    job = render_job(example, spec, 1)
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job["spec"]["completions"] == 40 and job["spec"]["parallelism"] == 4  # 1000 outputs / shardSize 25


def test_a_job_whose_first_pod_cannot_start_says_why_then_times_out() -> None:
    pending = {"phase": "Pending", "attempts": 1, "startTime": "2026-01-01T00:00:00Z", "layout": layout_status(LAYOUT)}
    obs = ShardObservation(
        active=2,
        parallelism=2,
        sample_index=0,
        sample_pod="b-attempt-1-0-x",
        sample_phase="Pending",
        pending_reason="Unschedulable",
        pending_message="pod b-attempt-1-0-x: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        pending_since=T0,
    )
    waiting = run(pending, obs, now=T0 + 30, pending_timeout=600)
    running = {c["type"]: c for c in waiting.status["conditions"]}["Running"]
    assert running["reason"] == "Unschedulable" and "Insufficient" in running["message"]
    assert [e[1] for e in waiting.events] == ["Unschedulable"]
    assert waiting.status.get("phase", reasons.PENDING) == reasons.PENDING
    late = run(pending, obs, now=T0 + 700, pending_timeout=600)
    assert late.status["phase"] == reasons.FAILED and late.status["lastFailure"]["reason"] == "Unschedulable"
    assert late.delete_attempt == 1
    # once a group ran, a replica waiting for room is normal: no timeout
    assert run({**pending, "phase": "Running"}, obs, now=T0 + 700, pending_timeout=600).status.get("phase") is None


def test_pending_pods_are_active_but_not_running() -> None:
    """The Job counts Pending pods as active; the phase is Running only once a pod is Ready (status.ready)."""
    pending = {"phase": "Pending", "attempts": 1, "startTime": "2026-01-01T00:00:00Z", "layout": layout_status(LAYOUT)}
    assert "phase" not in run(pending, ShardObservation(active=2, parallelism=2)).status
    assert run(pending, ShardObservation(active=2, ready=1, parallelism=2)).status["phase"] == reasons.RUNNING
