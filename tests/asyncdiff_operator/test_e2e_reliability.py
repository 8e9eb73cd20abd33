"""What real clusters do every day, end to end on the local control plane with the real operator (issue 13): a failed
child Job whose pod is gone, a child the API server refuses, a pod that cannot be scheduled or mounted, and outputs
written with the operator's S3 defaults (the chart's endpoint) that ``asyncdiff fetch`` must find.

Why its own operator: it runs with the chart's kind of defaults (ASYNCDIFF_S3_ENDPOINT of an embedded S3 server,
path-style addressing, a default credentials Secret) and a short pending timeout, so a stuck pod fails in seconds.
The failing jobs use workers that never start torch (a hang or a missing Python), so each costs seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_worker.launch import free_port

from .conftest import CRD, E2E, OperatorProcess, job_manifest

pytestmark = pytest.mark.slow

PENDING_TIMEOUT = 15
SECRET = "s3-credentials"


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    from asyncdiff_worker.embedded_s3 import start_embedded_s3

    server = start_embedded_s3()
    server.client().create_bucket(Bucket="results")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, s3: Any) -> Iterator[E2E]:
    from asyncdiff_devcluster.testing import running_dev_cluster
    from asyncdiff_worker.embedded_s3 import TEST_CREDENTIALS

    root = tmp_path_factory.mktemp("e2e-rel")
    with running_dev_cluster(root / "cluster", gpus=4, job_backoff_base=0.0, restart_backoff=0.1) as cluster:
        env = cluster.env(
            KUBECACHEDIR=str(root / "kcache"),
            ASYNCDIFF_RECONCILE_INTERVAL="0.5",
            ASYNCDIFF_METRICS_PORT=str(free_port()),
            ASYNCDIFF_S3_ENDPOINT=s3.endpoint_url,
            ASYNCDIFF_S3_FORCE_PATH_STYLE="true",
            ASYNCDIFF_S3_CREDENTIALS_SECRET=SECRET,
            ASYNCDIFF_PENDING_TIMEOUT_SECONDS=str(PENDING_TIMEOUT),
        )
        operator = OperatorProcess(env, root / "operator.log")
        harness = E2E(cluster, env, operator, root)
        harness.kubectl("apply", "-f", str(CRD))
        harness.core.create_namespaced_secret("default", {"metadata": {"name": SECRET}, "stringData": TEST_CREDENTIALS})
        operator.start()
        try:
            yield harness
        finally:
            operator.stop()
            print(operator.log_tail(3000))


@pytest.fixture(scope="module")
def hang_dir() -> Iterator[Path]:
    """Outside /tmp: worker pods have an emptyDir at /tmp, and PYTHONPATH=/tmp/... would point into it."""
    folder = Path(tempfile.mkdtemp(prefix="asyncdiff-hang-", dir="/var/tmp"))
    (folder / "sitecustomize.py").write_text("import time\ntime.sleep(3600)\n")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def apply(e2e: E2E, name: str, env: list[dict[str, str]] | None = None, **spec: Any) -> None:
    pod = {"env": env or [{"name": "PYTHONHOME", "value": "/nonexistent"}], **spec.pop("pod", {})}
    job = job_manifest(name, "/nonexistent-model", e2e.root / "out", pod=pod, **spec)
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job))


def condition(e2e: E2E, name: str, ctype: str) -> dict[str, Any]:
    return {c["type"]: c for c in e2e.status(name).get("conditions") or []}.get(ctype) or {}


def events(e2e: E2E, name: str, kind: str = "AsyncDiffJob") -> list[Any]:
    selector = f"involvedObject.name={name},involvedObject.kind={kind}"
    items: list[Any] = e2e.core.list_namespaced_event("default", field_selector=selector).items
    return items


def test_outputs_are_fetched_from_where_the_operator_s_s3_defaults_sent_them(
    e2e: E2E, s3: Any, tiny_model: Path, tmp_path: Path
) -> None:
    """spec.output names only s3://results/...; the endpoint, path style and Secret are the operator's defaults.
    status.output records them (never credentials) and ``asyncdiff fetch`` downloads from there."""
    from asyncdiff_worker.embedded_s3 import TEST_CREDENTIALS

    job = job_manifest("s3-defaults", tiny_model.as_uri(), tmp_path)
    job["spec"]["output"] = {"uri": "s3://results/cluster"}
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job))
    status = e2e.wait_phase("s3-defaults", "Succeeded", 150)
    assert status["output"] == {"uri": "s3://results/cluster", "endpointUrl": s3.endpoint_url, "forcePathStyle": True}
    assert "testing" not in json.dumps(status)  # the test credentials' value
    result = subprocess.run(
        [sys.executable, "-m", "asyncdiff_cli.main", "fetch", "s3-defaults", str(tmp_path / "dl")],
        env={**e2e.env, **TEST_CREDENTIALS},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "dl" / "manifest.json").exists() and list((tmp_path / "dl").glob("*.png"))


def test_a_failed_child_job_whose_pod_is_gone_is_noticed_and_retried(e2e: E2E, hang_dir: Path) -> None:
    """The pod is force-deleted while no operator runs; the Job controller fails the Job and the pod object is gone
    by the time the operator looks. The Job's own status decides: an infrastructure failure, retried; and exactly
    one JobCreated event per attempt."""
    # multi-node: its child Job has backoffLimit 0 and the operator retries attempts (a single-node job's shards are
    # retried inside its Indexed Job instead: tests/asyncdiff_operator/test_e2e_batch.py)
    run_policy = {"backoffLimit": 1, "numNodes": 2, "gpusPerNode": 1}
    apply(e2e, "lost-pod", [{"name": "PYTHONPATH", "value": str(hang_dir)}], runPolicy=run_policy)
    e2e.wait_phase("lost-pod", "Running", 30)
    pod = e2e.pods("lost-pod")[0]
    e2e.operator.stop()
    try:
        e2e.core.delete_namespaced_pod(pod.metadata.name, "default", grace_period_seconds=0)

        def failed_without_pods() -> bool:
            job = e2e.batch.read_namespaced_job_status("lost-pod-attempt-1", "default")
            failed = any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or [])
            return failed and not e2e.pods("lost-pod")

        e2e.wait(failed_without_pods, 30, "the child Job Failed and its pod gone")
        assert e2e.status("lost-pod")["phase"] == "Running"  # nobody looked yet
    finally:
        e2e.operator.start()
    e2e.wait(lambda: e2e.status("lost-pod").get("attempts") == 2, 30, "a second attempt")
    status = e2e.status("lost-pod")
    assert status["failedAttempts"] == 1 and status["lastFailure"]["reason"] == "ChildJobFailed", status
    assert "BackoffLimitExceeded" in status["lastFailure"]["message"]
    e2e.wait_phase("lost-pod", "Running", 30)
    assert condition(e2e, "lost-pod", "Running")["message"] == "attempt 2 running"
    created = [e for e in events(e2e, "lost-pod") if e.reason == "JobCreated"]
    assert sorted(e.message for e in created) == ["attempt 1 created", "attempt 2 created"]
    assert all((e.count or 1) == 1 for e in created)
    e2e.kubectl("delete", "adj/lost-pod", "--timeout=30s", timeout=40)


def test_a_child_the_api_server_refuses_fails_the_job_with_its_message(e2e: E2E) -> None:
    """A label value the CRD cannot check (over 63 characters) makes the API server refuse the Job (422): the job
    fails at once with reason ChildRejected, in a condition and a Warning Event, instead of retrying silently."""
    apply(e2e, "refused", pod={"labels": {"team": "x" * 64}})
    status = e2e.wait_phase("refused", "Failed", 30)
    failed = condition(e2e, "refused", "Failed")
    assert failed["reason"] == "ChildRejected" and "must be no more than 63 characters" in failed["message"]
    assert status["lastFailure"]["reason"] == "ChildRejected"
    assert any(e.reason == "ChildRejected" and e.type == "Warning" for e in events(e2e, "refused"))
    describe = e2e.kubectl("describe", "adj/refused")
    assert "ChildRejected" in describe


def test_a_transient_api_error_is_surfaced_and_retried_on_the_next_tick(e2e: E2E, hang_dir: Path) -> None:
    """An admission policy refuses the child Job with 403 Forbidden, as an exhausted ResourceQuota does: a transient
    error, not the job's fault. The operator keeps retrying on every reconcile tick (kopf's default would pause the
    job for 60 s after each error), shows the error in condition Reconciled=False with the count of failed
    reconciles and in one Warning Event, and goes on the moment the policy is removed."""
    import re

    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "no-transient-jobs"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {"apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs"], "operations": ["CREATE"]}
                ]
            },
            "validations": [
                {
                    "expression": "!object.metadata.name.startsWith('transient-')",
                    "message": "exceeded quota: jobs",
                    "reason": "Forbidden",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "no-transient-jobs"},
        "spec": {"policyName": "no-transient-jobs", "validationActions": ["Deny"]},
    }
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([policy, binding]))
    try:
        apply(e2e, "transient", [{"name": "PYTHONPATH", "value": str(hang_dir)}])

        def failed_reconciles() -> int:
            cond = condition(e2e, "transient", "Reconciled")
            found = re.search(r"\((\d+) reconciles in a row failed", str(cond.get("message")))
            return int(found.group(1)) if cond.get("reason") == "ApiError" and found else 0

        # three failed reconciles in a row: the job is retried on each tick, not paused after the first error
        e2e.wait(lambda: failed_reconciles() >= 3, 45, "three failed reconciles in a row")
        message = condition(e2e, "transient", "Reconciled")["message"]
        assert "API server answered 403" in message and "exceeded quota: jobs" in message, message
        warnings = [e for e in events(e2e, "transient") if e.reason == "ApiError" and e.type == "Warning"]
        assert warnings and "exceeded quota: jobs" in warnings[0].message
        assert e2e.status("transient").get("attempts", 0) == 0  # nothing counted against the job
    finally:
        e2e.kubectl("delete", "validatingadmissionpolicybinding/no-transient-jobs", "--ignore-not-found")
        e2e.kubectl("delete", "validatingadmissionpolicy/no-transient-jobs", "--ignore-not-found")
    e2e.wait_phase("transient", "Running", 60)
    assert condition(e2e, "transient", "Reconciled")["status"] == "True"
    assert e2e.status("transient")["attempts"] == 1
    e2e.kubectl("delete", "adj/transient", "--timeout=30s", timeout=40)


def test_a_missing_credentials_secret_is_surfaced_then_fails_the_job(e2e: E2E) -> None:
    apply(e2e, "no-secret", pod={"s3CredentialsSecret": "no-such-secret"})
    e2e.wait(lambda: condition(e2e, "no-secret", "Running").get("reason") == "FailedMount", 30, "FailedMount")
    message = condition(e2e, "no-secret", "Running")["message"]
    assert 'MountVolume.SetUp failed for volume "s3-credentials" : secret "no-such-secret" not found' in message
    assert e2e.status("no-secret")["phase"] == "Pending"
    describe = e2e.kubectl("describe", "adj/no-secret")
    assert "FailedMount" in describe and "no-such-secret" in describe
    status = e2e.wait_phase("no-secret", "Failed", PENDING_TIMEOUT + 30)
    assert status["lastFailure"]["reason"] == "FailedMount" and status["attempts"] == 1, status
    e2e.wait(lambda: not e2e.pods("no-secret"), 30, "the stuck pod deleted (its GPUs released)")


def test_an_unschedulable_pod_is_surfaced_then_fails_the_job(e2e: E2E) -> None:
    """modelN 4 + stride 2 needs 5 GPUs in one pod; the node has 4."""
    apply(e2e, "too-big", parallelism={"modelN": 4, "stride": 2, "warmUp": 1})
    unschedulable = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    e2e.wait(lambda: condition(e2e, "too-big", "Running").get("reason") == "Unschedulable", 30, "Unschedulable")
    assert condition(e2e, "too-big", "Running")["message"].endswith(unschedulable)
    (pod,) = e2e.pods("too-big")
    assert "FailedScheduling" in e2e.kubectl("describe", "pod", pod.metadata.name)
    assert any(e.reason == "Unschedulable" for e in events(e2e, "too-big"))
    status = e2e.wait_phase("too-big", "Failed", PENDING_TIMEOUT + 30)
    assert status["lastFailure"]["reason"] == "Unschedulable" and unschedulable in status["lastFailure"]["message"]


def test_created_suspended_then_resumed_and_a_child_suspended_by_a_queue(e2e: E2E, hang_dir: Path) -> None:
    """A job created suspended gets its Job created suspended (what Kueue expects to admit); resuming unsuspends
    that same Job. A child Job suspended by someone else (a queue) leaves the job Pending with reason
    ChildSuspended, and the operator does not fight it."""
    env = [{"name": "PYTHONPATH", "value": str(hang_dir)}]
    apply(e2e, "queued", env, runPolicy={"suspend": True})
    status = e2e.wait_phase("queued", "Suspended", 30)
    assert status["attempts"] == 1
    e2e.wait(lambda: e2e.jobs("queued"), 30, "the child Job")
    child = e2e.batch.read_namespaced_job("queued-attempt-1", "default")
    assert child.spec.suspend is True and not e2e.pods("queued")
    e2e.kubectl("patch", "adj/queued", "--type=merge", "-p", '{"spec":{"runPolicy":{"suspend":false}}}')
    e2e.wait_phase("queued", "Running", 30)
    assert e2e.jobs("queued") == ["queued-attempt-1"] and e2e.status("queued")["attempts"] == 1
    e2e.batch.patch_namespaced_job("queued-attempt-1", "default", {"spec": {"suspend": True}})  # a queue preempts
    e2e.wait(lambda: condition(e2e, "queued", "Running").get("reason") == "ChildSuspended", 30, "ChildSuspended")
    assert e2e.status("queued")["phase"] == "Queued"  # a single-node (sharded) job waiting for its queue
    e2e.wait(lambda: not e2e.pods("queued"), 30, "pods of the suspended child deleted")
    assert e2e.batch.read_namespaced_job("queued-attempt-1", "default").spec.suspend is True  # not overridden
    e2e.batch.patch_namespaced_job("queued-attempt-1", "default", {"spec": {"suspend": False}})  # admitted again
    e2e.wait_phase("queued", "Running", 30)
    assert not e2e.status("queued").get("failedAttempts")
    e2e.kubectl("delete", "adj/queued", "--timeout=30s", timeout=40)
