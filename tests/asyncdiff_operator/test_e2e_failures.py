"""Failure paths end to end on the local control plane, with workers that crash or hang instead of real models.

Why fake failures: a crash is a Python that cannot start (``PYTHONHOME`` pointing nowhere: exit 1, retryable), and a
hang is a ``sitecustomize`` that sleeps (a worker that never prints: what a hung collective looks like to the
operator). Both cost no torch start, so the deadline, stall, crash and delete paths take seconds each.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import E2E, job_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hang_dir() -> Iterator[Path]:
    """Outside /tmp: worker pods have an emptyDir at /tmp, and PYTHONPATH=/tmp/... would point into it."""
    folder = Path(tempfile.mkdtemp(prefix="asyncdiff-hang-", dir="/var/tmp"))
    (folder / "sitecustomize.py").write_text("import time\ntime.sleep(3600)\n")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def apply(e2e: E2E, name: str, env: list[dict[str, str]], **run_policy: Any) -> None:
    job = job_manifest(name, "/nonexistent-model", e2e.root / "out", pod={"env": env}, runPolicy=run_policy)
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job))


def processes_of(pod_names: list[str]) -> list[str]:
    """Command lines of live processes that belong to these pods (their per-pod folder is in the command line)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(f"_{name}_" in cmdline for name in pod_names):
            found.append(cmdline)
    return found


def test_a_crash_is_retried_then_fails_after_backoff_limit(e2e: E2E) -> None:
    apply(e2e, "crash", [{"name": "PYTHONHOME", "value": "/nonexistent"}], backoffLimit=1)
    status = e2e.wait_phase("crash", "Failed", 60)
    # one Indexed Job: its one shard was retried by the Job controller (backoffLimitPerIndex 1), not a new attempt
    assert status["attempts"] == 1 and status["failedAttempts"] == 2, status
    assert status["lastFailure"]["reason"] == "Crashed" and status["lastFailure"]["exitCode"] == 1
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "BackoffLimitExceeded"
    assert e2e.jobs("crash") == ["crash-attempt-1"]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{e2e.env['ASYNCDIFF_METRICS_PORT']}/metrics").read().decode()
    assert 'asyncdiff_job_retries_total{reason="Crashed"} 1.0' in metrics
    assert 'asyncdiff_jobs{phase="Failed"}' in metrics and "asyncdiff_child_create_seconds_count" in metrics
    # kopf caches probe results for a while (its liveness endpoint may still show the answer from before this job)
    e2e.wait(
        lambda: json.loads(urllib.request.urlopen(e2e.env["ASYNCDIFF_LIVENESS"]).read())["jobs"] >= 1,
        120,
        "the liveness endpoint counts the tracked jobs",
    )
    events = e2e.kubectl("get", "events", "--field-selector", "involvedObject.name=crash")
    assert "Retrying" in events and "BackoffLimitExceeded" in events


def test_deadline_exceeded_fails_and_kills_the_pod(e2e: E2E, hang_dir: Path) -> None:
    apply(e2e, "deadline", [{"name": "PYTHONPATH", "value": str(hang_dir)}], activeDeadlineSeconds=3)
    e2e.wait_phase("deadline", "Running", 30)
    pods = [p.metadata.name for p in e2e.pods("deadline")]
    assert processes_of(pods)
    status = e2e.wait_phase("deadline", "Failed", 30)
    assert status["lastFailure"]["reason"] == "DeadlineExceeded", status
    e2e.wait(lambda: not e2e.jobs("deadline") and not e2e.pods("deadline"), 30, "children deleted")
    e2e.wait(lambda: not processes_of(pods), 30, "no process of a finished job")
    assert e2e.status("deadline")["attempts"] == 1  # terminal is absorbing


def test_a_stalled_worker_is_failed_and_retried(e2e: E2E, hang_dir: Path) -> None:
    env = [{"name": "PYTHONPATH", "value": str(hang_dir)}]
    apply(e2e, "stall", env, backoffLimit=1, stallTimeoutSeconds=2)
    status = e2e.wait_phase("stall", "Failed", 60)
    # the stalled pod is deleted and replaced within the same Job; the second stall exceeds backoffLimit 1. The fake
    # hang dies of SIGTERM (143: counted by the Job controller, so its shard may run out of retries first); a real
    # worker exits 24 (Interrupted), which the podFailurePolicy ignores, and only the operator counts the stall.
    assert status["attempts"] == 1 and status["lastFailure"]["reason"] in ("Stalled", "Crashed"), status
    assert status["stalls"] >= 1, status
    assert {c["type"]: c for c in status["conditions"]}["Failed"]["reason"] == "BackoffLimitExceeded"
    e2e.wait(lambda: not e2e.jobs("stall"), 30, "stalled attempts deleted")


def test_delete_mid_run_removes_children_and_processes(e2e: E2E, hang_dir: Path) -> None:
    """kopf holds a finalizer on jobs with timers; deleting a job while its timer runs must not leave it stuck."""
    apply(e2e, "doomed", [{"name": "PYTHONPATH", "value": str(hang_dir)}])
    e2e.wait_phase("doomed", "Running", 30)
    pods = [p.metadata.name for p in e2e.pods("doomed")]
    e2e.kubectl("delete", "adj/doomed", "--timeout=30s", timeout=40)
    assert e2e.gone("doomed")
    e2e.wait(lambda: not e2e.jobs("doomed") and not e2e.pods("doomed"), 30, "children garbage-collected")
    e2e.wait(lambda: not processes_of(pods), 30, "no orphan processes")
    cms = e2e.core.list_namespaced_config_map("default", label_selector="asyncdiff.io/job=doomed").items
    assert not cms


def test_an_evicted_pod_is_replaced_without_counting_a_failure(e2e: E2E, hang_dir: Path) -> None:
    """Eviction adds DisruptionTarget; the child Job's podFailurePolicy ignores it and makes a new pod in the same
    attempt, so backoffLimit 0 is not spent."""
    apply(e2e, "evicted", [{"name": "PYTHONPATH", "value": str(hang_dir)}], backoffLimit=0)
    e2e.wait_phase("evicted", "Running", 30)
    (first,) = [p.metadata.name for p in e2e.pods("evicted")]
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": first, "namespace": "default"}}
    e2e.core.create_namespaced_pod_eviction(first, "default", body)
    e2e.wait(
        lambda: [p for p in e2e.pods("evicted") if p.metadata.name != first and p.status.phase == "Running"],
        30,
        "a replacement pod",
    )
    status = e2e.status("evicted")
    assert status["phase"] == "Running" and status["attempts"] == 1 and not status.get("failedAttempts"), status
    e2e.kubectl("delete", "adj/evicted", "--timeout=30s", timeout=40)


def test_ttl_after_finished_deletes_the_job_and_its_children(e2e: E2E) -> None:
    apply(e2e, "ttl", [{"name": "PYTHONHOME", "value": "/nonexistent"}], backoffLimit=0, ttlSecondsAfterFinished=1)
    e2e.wait(lambda: e2e.gone("ttl"), 15, "TTL deletion of adj/ttl (kopf's finalizer removed)")
    e2e.wait(lambda: not e2e.jobs("ttl") and not e2e.pods("ttl"), 30, "children garbage-collected")
