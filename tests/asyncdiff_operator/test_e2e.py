"""End to end on the local control plane: kubectl apply -> the real operator -> Job -> torchrun workers -> outputs.

Why these jobs: each torchrun start costs several seconds on 2 cores, so every test runs real tiny jobs (2 steps,
32x32) that each cover several behaviours: two jobs at once (one succeeds, one fails fast on a bad model), a
multi-node Indexed Job whose operator is killed and restarted mid-run, and suspend then resume.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from .conftest import E2E, job_manifest

pytestmark = pytest.mark.slow


def test_tiny_job_succeeds_and_bad_model_fails_fast(e2e: E2E, tiny_model: Path) -> None:
    out = e2e.root / "results"
    out.mkdir()
    good = job_manifest("tiny-ok", tiny_model.as_uri(), out)
    bad = job_manifest("tiny-bad", (e2e.root / "missing").as_uri(), out)
    t0 = time.monotonic()
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([good, bad]))
    e2e.wait(lambda: e2e.jobs("tiny-ok"), 20, "child Job of tiny-ok")
    latency = time.monotonic() - t0
    e2e.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "adj/tiny-ok", "--timeout=90s", timeout=100)
    to_succeeded = time.monotonic() - t0
    e2e.kubectl("wait", "--for=jsonpath={.status.phase}=Failed", "adj/tiny-bad", "--timeout=30s", timeout=40)
    print(f"\nCR create -> child Job: {latency:.2f} s; CR create -> Succeeded: {to_succeeded:.1f} s")

    ok = e2e.status("tiny-ok")
    assert ok["attempts"] == 1 and ok["devices"] == 2 and ok["child"] == "tiny-ok-attempt-1"
    assert ok["outputs"] and all(Path(u.removeprefix("file://")).exists() for u in ok["outputs"])
    assert ok["manifest"].endswith("manifest.json") and ok["startTime"] and ok["completionTime"]
    assert ok["progress"]["summary"] == "1/1"
    assert {c["type"]: c["status"] for c in ok["conditions"]}["Succeeded"] == "True"
    assert list((out / "tiny-ok").rglob("*.png"))

    bad_status = e2e.status("tiny-bad")
    assert bad_status["attempts"] == 1, bad_status  # a user error is never retried
    assert bad_status["lastFailure"]["reason"] == "ModelNotFound", bad_status
    assert bad_status["lastFailure"]["exitCode"] == 11
    assert e2e.jobs("tiny-bad") == ["tiny-bad-attempt-1"]
    table = e2e.kubectl("get", "adj")
    assert "Succeeded" in table and "Failed" in table
    events = e2e.kubectl("get", "events", "--field-selector", "involvedObject.name=tiny-ok")
    assert "JobSucceeded" in events and "JobCreated" in events


def test_multi_node_job_survives_an_operator_restart(e2e: E2E, tiny_model: Path) -> None:
    """numNodes 2 x gpusPerNode 1 (devices 2): an Indexed Job of two pods rendezvousing through the headless
    Service; the operator is SIGKILLed while it runs and a new one takes over without duplicating anything."""
    out = e2e.root / "results-mn"
    job = job_manifest("tiny-mn", tiny_model.as_uri(), out, runPolicy={"numNodes": 2, "gpusPerNode": 1})
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job))
    e2e.wait(lambda: len(e2e.pods("tiny-mn")) == 2, 30, "two pods")
    e2e.wait_phase("tiny-mn", "Running", 60)
    e2e.operator.restart()
    status = e2e.wait_phase("tiny-mn", "Succeeded", 120)
    assert status["attempts"] == 1 and status["outputs"], status
    assert e2e.jobs("tiny-mn") == ["tiny-mn-attempt-1"]
    services = e2e.core.list_namespaced_service("default", label_selector="asyncdiff.io/job=tiny-mn").items
    assert [s.metadata.name for s in services] == ["tiny-mn-nodes"]
    indexes = sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in e2e.pods("tiny-mn"))
    assert indexes == ["0", "1"]
    assert all(p.status.phase == "Succeeded" for p in e2e.pods("tiny-mn"))


def test_suspend_releases_the_pods_and_resume_finishes_on_the_same_job(e2e: E2E, tiny_model: Path) -> None:
    """Suspend like Kubernetes: the child Job is kept with spec.suspend true (its controller deletes the pods, GPUs
    released, no failure counted); resuming sets it back on the same Job, which finishes as attempt 1."""
    out = e2e.root / "results-sr"
    job = job_manifest("tiny-sr", tiny_model.as_uri(), out)
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job))
    e2e.wait_phase("tiny-sr", "Running", 60)
    e2e.kubectl("patch", "adj/tiny-sr", "--type=merge", "-p", '{"spec":{"runPolicy":{"suspend":true}}}')
    status = e2e.wait_phase("tiny-sr", "Suspended", 20)
    assert {c["type"]: c["status"] for c in status["conditions"]}["Suspended"] == "True"
    e2e.wait(lambda: not e2e.pods("tiny-sr"), 30, "pods of a suspended job deleted")
    child = e2e.batch.read_namespaced_job("tiny-sr-attempt-1", "default")
    assert child.spec.suspend is True
    assert any(c.type == "Suspended" and c.status == "True" for c in child.status.conditions or [])
    e2e.kubectl("patch", "adj/tiny-sr", "--type=merge", "-p", '{"spec":{"runPolicy":{"suspend":false}}}')
    status = e2e.wait_phase("tiny-sr", "Succeeded", 120)
    assert status["attempts"] == 1 and not status.get("failedAttempts"), status
    assert e2e.jobs("tiny-sr") == ["tiny-sr-attempt-1"]
    assert e2e.batch.read_namespaced_job("tiny-sr-attempt-1", "default").spec.suspend is False
    events = e2e.kubectl("get", "events", "--field-selector", "involvedObject.name=tiny-sr")
    assert "JobSuspended" in events and "JobResumed" in events
