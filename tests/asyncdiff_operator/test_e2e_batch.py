"""Batch jobs end to end on the local control plane: replicas and shards as an Indexed Job, faults, resume, scaling,
Kueue admission and an operator restart, with moto as S3 and real kubectl, torchrun and tiny models.

Why these checks: the product promise is "every output exactly once, a lost pod costs at most what it was rendering,
and the groups really run at the same time". The result manifest (the worker's commit marker) lists every output
with the pod that rendered it, its shard's retry and when it started, so the tests count re-renders from it; pod
run intervals come from the pods' own container states.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import E2E, job_manifest

pytestmark = pytest.mark.slow

BUCKET = "batch"
SECRET = "s3-credentials"
INDEX = "batch.kubernetes.io/job-completion-index"


@pytest.fixture(scope="module")
def s3(e2e: E2E) -> Iterator[Any]:
    from asyncdiff_worker.embedded_s3 import TEST_CREDENTIALS, start_embedded_s3

    server = start_embedded_s3()
    server.client().create_bucket(Bucket=BUCKET)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "stringData": TEST_CREDENTIALS}
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(secret))
    try:
        yield server
    finally:
        server.stop()


def batch_job(
    name: str,
    model: Path,
    s3: Any,
    *,
    replicas: int,
    model_n: int,
    prompts: int,
    shard_size: int,
    steps: int = 2,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = job_manifest(
        name,
        model.as_uri(),
        Path("/unused"),
        parallelism={"modelN": model_n, "stride": 1, "warmUp": 1, "replicas": replicas},
        generation={
            "prompts": [f"a cube number {i}" for i in range(prompts)],
            "steps": steps,
            "height": 32,
            "width": 32,
            "shardSize": shard_size,
        },
        output={"uri": f"s3://{BUCKET}/runs", "endpointUrl": s3.endpoint_url, "forcePathStyle": True},
        runPolicy={"backoffLimit": 2, "gpusPerNode": 0},
        pod={"s3CredentialsSecret": SECRET},
    )
    if labels:
        body["metadata"]["labels"] = labels
    return body


def manifest(s3: Any, name: str) -> dict[str, Any]:
    obj = s3.client().get_object(Bucket=BUCKET, Key=f"runs/{name}/manifest.json")
    data: dict[str, Any] = json.loads(obj["Body"].read())
    return data


def stored(s3: Any, name: str) -> set[int]:
    """Indexes of the outputs stored so far (keys ``<index>-p<prompt>.<ext>``)."""
    listing = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"runs/{name}/outputs/")
    return {int(Path(o["Key"]).name.split("-", 1)[0]) for o in listing.get("Contents", [])}


def records(data: dict[str, Any]) -> dict[int, dict[str, Any]]:
    by_index: dict[int, dict[str, Any]] = {}
    for rec in data["outputs"]:
        assert rec["index"] not in by_index, f"output {rec['index']} listed twice"
        by_index[rec["index"]] = rec
    return by_index


def run_interval(pod: Any) -> tuple[float, float] | None:
    for cs in pod.status.container_statuses or []:
        term = cs.state.terminated if cs.state else None
        if term is not None and term.started_at and term.finished_at:
            return term.started_at.timestamp(), term.finished_at.timestamp()
    return None


def overlapping(pods: list[Any]) -> bool:
    """Two pods of different shards ran at the same time (from their containers' start and finish times)."""
    spans = [(p.metadata.annotations[INDEX], run_interval(p)) for p in pods]
    done = [(i, s) for i, s in spans if s is not None]
    return any(
        a[0] != b[0] and max(a[1][0], b[1][0]) < min(a[1][1], b[1][1])
        for k, a in enumerate(done)
        for b in done[k + 1 :]
    )


def worker_ranks(pod_name: str) -> list[int]:
    """PIDs of the torchrun worker processes of one pod (their spec path lies in the pod's folder)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"_{pod_name}_" in cmd and "asyncdiff_worker.entrypoint" in cmd and "torch.distributed.run" not in cmd:
            pids.append(int(pid))
    return pids


def running_pod(e2e: E2E, name: str, index: int) -> str | None:
    for pod in e2e.pods(name):
        annotations = pod.metadata.annotations or {}
        if (
            annotations.get(INDEX) == str(index)
            and pod.status.phase == "Running"
            and not pod.metadata.deletion_timestamp
        ):
            return str(pod.metadata.name)
    return None


def diagnose(e2e: E2E, name: str) -> str:
    """The child Job's status and each pod's phase and container state, for a failure message."""
    lines = []
    for job in e2e.batch.list_namespaced_job("default", label_selector=f"asyncdiff.io/job={name}").items:
        lines.append(f"job {job.metadata.name}: parallelism {job.spec.parallelism} status {job.status.to_dict()}")
    for pod in e2e.pods(name):
        states = [(cs.name, cs.state.to_dict()) for cs in pod.status.container_statuses or []]
        lines.append(
            f"pod {pod.metadata.name} {pod.status.phase} deleting={bool(pod.metadata.deletion_timestamp)} {states}"
        )
        try:
            lines.append(e2e.core.read_namespaced_pod_log(pod.metadata.name, "default", tail_lines=15))
        except Exception as exc:
            lines.append(f"(no log: {exc})")
    return "\n".join(lines)


def wait_succeeded(e2e: E2E, name: str, timeout: float) -> dict[str, Any]:
    try:
        return e2e.wait_phase(name, "Succeeded", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(e2e, name)}") from None


def apply(e2e: E2E, body: dict[str, Any]) -> None:
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))


def test_two_groups_of_model_n_2_run_at_once_survive_an_operator_restart_and_resume(
    e2e: E2E, tiny_model: Path, s3: Any
) -> None:
    name = "b-n2"
    body = batch_job(name, tiny_model, s3, replicas=2, model_n=2, prompts=4, shard_size=1)
    apply(e2e, body)
    e2e.wait(lambda: len([p for p in e2e.pods(name) if p.status.phase == "Running"]) == 2, 120, "two groups running")
    e2e.operator.restart()  # SIGKILL mid-run; the new operator takes over the same child Job
    status = wait_succeeded(e2e, name, 300)
    assert e2e.jobs(name) == [f"{name}-attempt-1"], "no duplicate children"
    assert status["attempts"] == 1 and status["progress"]["summary"] == "4/4", status
    assert status["layout"]["groups"] == 2 and status["layout"]["devicesPerGroup"] == 2, status
    assert status["devices"] == 4 and status["shards"]["completed"] == 4, status
    job = e2e.batch.read_namespaced_job(f"{name}-attempt-1", "default")
    assert job.spec.completion_mode == "Indexed" and job.spec.completions == 4 and job.spec.parallelism == 2
    first = records(manifest(s3, name))
    assert sorted(first) == [0, 1, 2, 3]
    assert overlapping(e2e.pods(name)), "the two groups did not run at the same time"
    table = e2e.kubectl("get", "adj", name)
    assert "4/4" in table and "2x2" in table and "ETA" in table

    # resume: the finished job deleted and applied again renders nothing (every output reused by pixel hash)
    e2e.kubectl("delete", f"adj/{name}", "--timeout=60s", timeout=70)
    e2e.wait(lambda: not e2e.jobs(name) and not e2e.pods(name), 60, "children of the deleted job gone")
    again_at = time.time()
    apply(e2e, body)
    status = wait_succeeded(e2e, name, 300)
    second = records(manifest(s3, name))
    assert sorted(second) == [0, 1, 2, 3]
    rerendered = [i for i, r in second.items() if r["renderedBy"] != first[i]["renderedBy"]]
    assert not rerendered, f"outputs rendered again after re-apply: {rerendered} (second run from {again_at})"


def test_two_groups_of_model_n_1_wait_for_kueue_admission(e2e: E2E, tiny_model: Path, s3: Any) -> None:
    name = "b-n1"
    body = batch_job(
        name, tiny_model, s3, replicas=2, model_n=1, prompts=4, shard_size=2, labels={"kueue.x-k8s.io/queue-name": "q"}
    )
    apply(e2e, body)
    status = e2e.wait_phase(name, "Queued", 60)
    assert "startTime" not in status, status
    child = e2e.batch.read_namespaced_job(f"{name}-attempt-1", "default")
    assert child.spec.suspend is True and child.metadata.labels["kueue.x-k8s.io/queue-name"] == "q"
    assert not e2e.pods(name)
    admitted = time.time()
    e2e.kubectl("patch", f"job/{name}-attempt-1", "--type=merge", "-p", '{"spec":{"suspend":false}}')  # as Kueue does
    status = wait_succeeded(e2e, name, 300)
    from asyncdiff_operator.status import parse_iso

    start = parse_iso(status["startTime"])
    assert start is not None and start >= int(admitted) - 1, "activeDeadlineSeconds counts from admission"
    assert status["layout"]["devicesPerGroup"] == 1 and status["devices"] == 2, status
    assert sorted(records(manifest(s3, name))) == [0, 1, 2, 3]
    assert overlapping(e2e.pods(name))


def test_a_deleted_pod_and_a_killed_rank_cost_only_their_current_outputs(e2e: E2E, tiny_model: Path, s3: Any) -> None:
    name = "b-fault"
    body = batch_job(name, tiny_model, s3, replicas=2, model_n=2, prompts=8, shard_size=4, steps=6)
    apply(e2e, body)
    # fault 1 (a disruption: never counted): delete shard 0's pod once it has stored an output
    e2e.wait(lambda: stored(s3, name) & {0, 1, 2, 3} and running_pod(e2e, name, 0), 300, "shard 0 rendering")
    victim = running_pod(e2e, name, 0)
    assert victim is not None
    before_delete = stored(s3, name)
    e2e.core.delete_namespaced_pod(victim, "default")
    # fault 2 (an infrastructure failure: counted, the shard retried alone): kill one rank of shard 1's pod
    e2e.wait(lambda: stored(s3, name) & {4, 5, 6, 7} and running_pod(e2e, name, 1), 300, "shard 1 rendering")
    pod1 = running_pod(e2e, name, 1)
    assert pod1 is not None
    ranks = e2e.wait(lambda: worker_ranks(pod1), 30, f"worker processes of {pod1}")
    before_kill = stored(s3, name)
    os.kill(ranks[0], signal.SIGKILL)
    status = wait_succeeded(e2e, name, 400)
    final = records(manifest(s3, name))
    assert sorted(final) == list(range(8)), "every output exactly once"
    survived = before_delete | before_kill
    rerendered = [i for i in survived if final[i]["renderedBy"] not in (victim, pod1)]
    assert not rerendered, f"outputs finished before a fault were rendered again: {rerendered}"
    assert status["failedPods"] == 1, status  # the kill counted; the deletion (exit 24, Interrupted) did not
    assert status["lastFailure"]["reason"] in ("PeerFailed", "Crashed", "Unexpected"), status
    assert e2e.jobs(name) == [f"{name}-attempt-1"] and status["attempts"] == 1
    retried = [r for r in final.values() if r["indexRetry"] > 0]
    assert all(r["shard"] == 1 for r in retried), "only the failed shard was retried"


def test_replicas_scale_1_2_1_while_running(e2e: E2E, tiny_model: Path, s3: Any) -> None:
    name = "b-scale"
    body = batch_job(name, tiny_model, s3, replicas=1, model_n=2, prompts=6, shard_size=1, steps=4)
    apply(e2e, body)
    e2e.wait_phase(name, "Running", 120)
    e2e.kubectl("patch", f"adj/{name}", "--type=merge", "-p", '{"spec":{"parallelism":{"replicas":2}}}')
    child = f"{name}-attempt-1"
    e2e.wait(lambda: e2e.batch.read_namespaced_job(child, "default").spec.parallelism == 2, 30, "parallelism 2")
    e2e.wait(lambda: len([p for p in e2e.pods(name) if p.status.phase == "Running"]) >= 2, 120, "two groups at once")
    e2e.kubectl("patch", f"adj/{name}", "--type=merge", "-p", '{"spec":{"parallelism":{"replicas":1}}}')
    e2e.wait(lambda: e2e.batch.read_namespaced_job(child, "default").spec.parallelism == 1, 30, "parallelism 1")
    status = wait_succeeded(e2e, name, 400)
    assert sorted(records(manifest(s3, name))) == list(range(6))
    assert status["layout"]["groups"] == 1 and e2e.jobs(name) == [child], status
    assert not status.get("failedPods"), status  # a group stopped by the scale-down is not a failure
    events = e2e.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}")
    assert "Scaled" in events
    refused = e2e.kubectl(
        "patch", f"adj/{name}", "--type=merge", "-p", '{"spec":{"parallelism":{"modelN":3}}}', check=False
    )
    assert "immutable" in refused
