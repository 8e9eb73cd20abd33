"""Unit tests of the failure policy (``asyncdiff_operator.status.decide``): retries, user errors, suspend and resume,
deadline, disruptions, stalls, absorbing terminal phases."""

from __future__ import annotations

from asyncdiff_operator import reasons
from asyncdiff_operator.api import RunPolicy
from asyncdiff_operator.status import Observation, decide, now_iso

P1 = RunPolicy(backoffLimit=1)


def running(attempts: int = 1, **extra: object) -> dict[str, object]:
    return {"attempts": attempts, "phase": "Running", "startTime": now_iso(), **extra}


def test_user_errors_fail_at_once_and_infrastructure_errors_retry() -> None:
    first = decide({}, Observation(), P1, 1)
    assert first.create_attempt == 1 and first.status["phase"] == reasons.PENDING and first.status["startTime"]
    user = decide(running(), Observation("Failed", 11, "ModelNotFound"), P1, 1)
    assert user.create_attempt is None and user.status["phase"] == reasons.FAILED
    assert user.status["lastFailure"]["reason"] == "ModelNotFound" and user.status["lastFailure"]["exitCode"] == 11
    infra = decide(running(), Observation("Failed", 21, "peer"), P1, 1)
    assert infra.create_attempt == 2 and infra.status["failedAttempts"] == 1 and infra.retried == "PeerFailed"
    out = decide(running(2, failedAttempts=1), Observation("Failed", 21, "peer"), P1, 1)
    assert out.create_attempt is None and out.status["phase"] == reasons.FAILED
    failed = {c["type"]: c for c in out.status["conditions"]}[reasons.COND_FAILED]
    assert failed["reason"] == reasons.BACKOFF_LIMIT_EXCEEDED


def test_success_and_absorbing_terminal_phases() -> None:
    event = {"asyncdiff": "done", "outputs": ["s3://b/o.png"], "manifest": "s3://b/m.json", "ts": 1.0}
    done = decide(running(), Observation("Succeeded", 0, "", event), P1, 1)
    assert done.status["phase"] == reasons.SUCCEEDED and done.status["outputs"] == ["s3://b/o.png"]
    assert done.status["manifest"] == "s3://b/m.json" and done.delete_attempt is None
    assert (
        decide({"phase": "Failed", "attempts": 1}, Observation("Failed", 21), RunPolicy(backoffLimit=5), 1).status == {}
    )
    assert decide({"phase": "Succeeded", "attempts": 1}, Observation(job_found=False), P1, 1).create_attempt is None


def test_suspend_and_resume_the_same_job_like_kubernetes() -> None:
    """Suspending sets the child Job's spec.suspend (nothing deleted, no new attempt); resuming sets it back on the
    same Job and restarts the deadline clock; a job created suspended gets its Job created suspended."""
    suspended = RunPolicy(suspend=True)
    s = decide(running(), Observation(), suspended, 2)
    assert s.status["phase"] == reasons.SUSPENDED and s.suspend_child is True
    assert s.delete_attempt is None and s.create_attempt is None and "attempts" not in s.status
    assert decide({"attempts": 1, "phase": "Suspended"}, Observation(), suspended, 2).status == {}
    r = decide({"attempts": 1, "phase": "Suspended", "startTime": now_iso(1.0)}, Observation(), P1, 3, now=5000.0)
    assert r.suspend_child is False and r.create_attempt is None and r.status["phase"] == reasons.PENDING
    assert r.status["startTime"] == now_iso(5000.0) and "attempts" not in r.status
    conds = {c["type"]: c for c in r.status["conditions"]}
    assert (
        conds[reasons.COND_SUSPENDED]["status"] == "False" and conds[reasons.COND_SUSPENDED]["reason"] == "JobResumed"
    )
    assert conds[reasons.COND_RUNNING]["status"] == "False"
    created_suspended = decide({}, Observation(), suspended, 1)
    assert created_suspended.status["phase"] == reasons.SUSPENDED and created_suspended.create_attempt == 1
    assert created_suspended.suspend_child is True and created_suspended.status["attempts"] == 1


def test_time_suspended_does_not_count_against_the_deadline() -> None:
    policy = RunPolicy(activeDeadlineSeconds=10)
    resumed = decide(
        {"attempts": 1, "phase": "Suspended", "startTime": now_iso(1000.0)}, Observation(), policy, 1, now=2000.0
    )
    later = {"attempts": 1, "phase": "Pending", "startTime": resumed.status["startTime"]}
    assert decide(later, Observation("Running", active=1), policy, 1, now=2005.0).status.get("phase") == "Running"
    assert decide(later, Observation("Running", active=1), policy, 1, now=2011.0).status["phase"] == reasons.FAILED


def test_a_child_job_suspended_by_a_queue_waits_with_a_reason() -> None:
    d = decide(running(), Observation(job_suspended=True), RunPolicy(activeDeadlineSeconds=1), 1, now=10**10)
    assert d.status["phase"] == reasons.PENDING and d.create_attempt is None
    assert {c["type"]: c for c in d.status["conditions"]}["Running"]["reason"] == reasons.CHILD_SUSPENDED


def test_deadline_fails_and_deletes_children() -> None:
    policy = RunPolicy(activeDeadlineSeconds=10)
    status = running(startTime=now_iso(1000.0))
    d = decide(status, Observation("Running", active=1), policy, 1, now=1011.0)
    assert d.status["phase"] == reasons.FAILED and d.delete_attempt == 1
    assert d.status["lastFailure"]["reason"] == reasons.DEADLINE_EXCEEDED
    assert decide(status, Observation("Running", active=1), policy, 1, now=1005.0).status.get("phase") is None


def test_disruptions_do_not_count() -> None:
    evicted = Observation("Failed", 143, "evicted", disrupted=True, job_failed=False)
    assert decide(running(), evicted, P1, 1).create_attempt is None  # the Job controller replaces the pod
    given_up = Observation("Failed", 24, "preempted", disrupted=True, job_failed=True)
    d = decide(running(), given_up, RunPolicy(backoffLimit=0), 1)
    assert d.create_attempt == 2 and "failedAttempts" not in d.status and d.retried == reasons.DISRUPTED


def test_stall_fails_the_attempt_and_retries() -> None:
    hung = {"asyncdiff": "heartbeat", "ts": 1000.0, "lastProgressTs": 900.0}
    d = decide(running(), Observation("Running", event=hung, active=1), P1, 1, now=1001.0, stall_seconds=60)
    assert d.create_attempt == 2 and d.delete_attempt == 1
    assert d.status["lastFailure"]["reason"] == reasons.STALLED
    silent = Observation("Running", running_since=900.0, active=1)
    last = decide(running(2, failedAttempts=1), silent, P1, 1, now=1000.0, stall_seconds=60)
    assert last.status["phase"] == reasons.FAILED and last.delete_attempt == 2
    fine = {"asyncdiff": "progress", "ts": 999.0, "lastProgressTs": 998.0}
    ok = decide(running(), Observation("Running", event=fine, active=1), P1, 1, now=1000.0, stall_seconds=60)
    assert ok.create_attempt is None and ok.status["progress"]["step"] == 0


def test_a_missing_child_job_is_recreated_under_the_same_attempt() -> None:
    d = decide(running(3), Observation(job_found=False), P1, 1)
    assert d.create_attempt == 3 and "attempts" not in d.status


def test_after_a_retry_the_running_condition_describes_the_new_attempt() -> None:
    """No stale ``Running True`` of attempt 1 while attempt 2 is Pending; one JobCreated event per new attempt."""
    was_running = running(conditions=[{"type": "Running", "status": "True", "reason": "PodRunning"}])
    given_up = Observation("Failed", 143, "preempted", disrupted=True, job_failed=True)
    for obs in (given_up, Observation("Failed", 21, "peer")):
        d = decide(was_running, obs, P1, 1)
        conds = {c["type"]: c for c in d.status["conditions"]}
        assert d.status["phase"] == reasons.PENDING and d.create_attempt == 2
        assert conds["Running"]["status"] == "False" and "attempt 2" in conds["Running"]["message"]
        assert [e[1] for e in d.events].count(reasons.JOB_CREATED) == 1
    missing = decide(was_running, Observation(job_found=False), P1, 1)
    assert missing.status["phase"] == reasons.PENDING
    assert {c["type"]: c for c in missing.status["conditions"]}["Running"]["status"] == "False"
    first = decide({}, Observation(), P1, 1)
    assert [e[1] for e in first.events] == [reasons.JOB_CREATED]


def test_a_pending_pod_s_reason_is_surfaced_then_fails_the_job_after_the_timeout() -> None:
    msg = "pod p: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    stuck = Observation("Pending", pending_reason="Unschedulable", pending_message=msg, pending_since=1000.0, active=1)
    status = {"attempts": 1, "phase": "Pending", "startTime": now_iso(1000.0)}
    first = decide(status, stuck, P1, 1, now=1010.0, pending_timeout=60)
    running_cond = {c["type"]: c for c in first.status["conditions"]}["Running"]
    assert (running_cond["status"], running_cond["reason"], running_cond["message"]) == ("False", "Unschedulable", msg)
    assert first.events == [("Warning", "Unschedulable", f"attempt 1: {msg}")] and first.create_attempt is None
    again = decide({**status, **first.status}, stuck, P1, 1, now=1020.0, pending_timeout=60)
    assert again.events == [] and "conditions" not in again.status  # nothing new to say
    late = decide({**status, **first.status}, stuck, P1, 1, now=1061.0, pending_timeout=60)
    assert late.status["phase"] == reasons.FAILED and late.delete_attempt == 1 and late.create_attempt is None
    failed = {c["type"]: c for c in late.status["conditions"]}["Failed"]
    assert failed["reason"] == "Unschedulable" and msg in failed["message"] and "Pending for 61 s" in failed["message"]
    assert late.status["lastFailure"]["reason"] == "Unschedulable"
    silent = Observation("Pending", pending_since=1000.0, active=1)
    assert decide(status, silent, P1, 1, now=1010.0, pending_timeout=60).status == {}
    assert decide(status, silent, P1, 1, now=1061.0, pending_timeout=60).status["lastFailure"]["reason"] == (
        reasons.PENDING_TIMEOUT
    )


def test_a_pod_held_by_a_scheduling_gate_waits_without_a_timeout() -> None:
    gated = Observation("Pending", pending_reason="SchedulingGated", pending_message="pod p: gated", pending_since=0.0)
    d = decide({"attempts": 1, "phase": "Pending"}, gated, P1, 1, now=10**6, pending_timeout=60)
    assert d.status["phase"] == reasons.PENDING and d.delete_attempt is None
    assert {c["type"]: c for c in d.status["conditions"]}["Running"]["reason"] == "SchedulingGated"
