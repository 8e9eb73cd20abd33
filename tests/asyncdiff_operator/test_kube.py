"""``asyncdiff_operator.kube`` on the object shapes a real API server returns: a Job without ``status``, a failed Job
whose pods are gone (deleted, evicted and removed, garbage-collected), Failed conditions with the reasons the
batch/v1 Job controller writes, pods with ``DisruptionTarget``. The objects are deserialized from JSON with the
kubernetes client, exactly as ``read_namespaced_job`` / ``list_namespaced_pod`` build them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asyncdiff_operator import kube, reasons
from asyncdiff_operator.api import RunPolicy
from asyncdiff_operator.status import decide, now_iso
from kubernetes import client


def model(data: dict[str, Any], kind: str) -> Any:
    """A client model from JSON, as the kubernetes client builds it from an API response."""
    return client.ApiClient().deserialize(json.dumps(data), kind, "application/json")


POLICY = "PodFailurePolicy"


def job_json(name: str = "j-attempt-1", **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "ns"}}
    if status:
        body["status"] = status
    return body


def failed_condition(reason: str, message: str) -> dict[str, Any]:
    return {"type": "Failed", "status": "True", "reason": reason, "message": message}


class FakeCore:
    def __init__(self, pods: list[dict[str, Any]], events: list[dict[str, Any]] | None = None) -> None:
        self.pods = pods
        self.events = events or []

    def list_namespaced_event(self, namespace: str, field_selector: str = "", **_: Any) -> Any:
        uid = field_selector.removeprefix("involvedObject.uid=")
        items = [e for e in self.events if e["involvedObject"].get("uid") == uid]
        return model({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": items}, "CoreV1EventList")

    def list_namespaced_pod(self, namespace: str, **_: Any) -> Any:
        return model({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": self.pods}, "V1PodList")

    def read_namespaced_pod_log(self, *_: Any, **__: Any) -> str:
        return ""


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the fake API returns: ``job`` (JSON or None for 404) and ``pods``."""
    state: dict[str, Any] = {"job": job_json(), "pods": [], "events": []}
    monkeypatch.setattr(kube, "read_job", lambda ns, name: state["job"] and model(state["job"], "V1Job"))
    monkeypatch.setattr(kube, "core", lambda: FakeCore(state["pods"], state["events"]))
    monkeypatch.setattr(kube, "_events_read", {})
    return state


def test_a_job_without_status_is_read(cluster: dict[str, Any]) -> None:
    cluster["job"] = job_json()  # no status at all: the Job controller has not synced it yet
    assert model(cluster["job"], "V1Job").status is None
    state = kube.job_state(model(cluster["job"], "V1Job"))
    assert not state.failed and not state.complete and state.failed_pods == 0
    obs = kube.observe("ns", "j", 1)
    assert obs.job_found and obs.pod_phase is None and not obs.job_failed
    cluster["job"] = job_json(active=1)  # a status with no conditions
    assert kube.observe("ns", "j", 1).pod_phase is None


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        ("DeadlineExceeded", "Job was active longer than specified deadline"),
    ],
)
def test_a_failed_job_whose_pods_are_gone_is_an_infrastructure_failure(
    cluster: dict[str, Any], reason: str, message: str
) -> None:
    cluster["job"] = job_json(failed=1, conditions=[failed_condition(reason, message)])
    obs = kube.observe("ns", "j", 1)
    assert obs.job_failed and obs.pod_phase == "Failed" and obs.exit_code is None and not obs.disrupted
    assert reason in obs.message and "no pod is left" in obs.message
    retry = decide({"attempts": 1, "phase": "Running", "startTime": now_iso()}, obs, RunPolicy(backoffLimit=1), 1)
    assert retry.create_attempt == 2 and retry.status["failedAttempts"] == 1
    assert retry.status["lastFailure"]["reason"] == reasons.CHILD_JOB_FAILED and retry.retried
    final = decide({"attempts": 2, "failedAttempts": 1, "phase": "Running"}, obs, RunPolicy(backoffLimit=1), 1)
    assert final.status["phase"] == reasons.FAILED and final.create_attempt is None


def test_the_job_says_a_disruption_failed_it() -> None:
    message = "Pod ns/j-attempt-1-x has condition DisruptionTarget matching FailJob rule at index 0"
    state = kube.job_state(model(job_json(failed=1, conditions=[failed_condition(POLICY, message)]), "V1Job"))
    assert state.failed and state.disrupted and state.exit_code is None
    obs = kube._without_pods(state)
    d = decide({"attempts": 1, "phase": "Running"}, obs, RunPolicy(backoffLimit=0), 1)
    assert d.create_attempt == 2 and "failedAttempts" not in d.status and d.retried == reasons.DISRUPTED


def test_a_pod_failure_policy_exit_code_keeps_a_user_error_a_user_error() -> None:
    message = "Container worker for pod ns/j-attempt-1-x failed with exit code 11 matching FailJob rule at index 0"
    state = kube.job_state(model(job_json(failed=1, conditions=[failed_condition(POLICY, message)]), "V1Job"))
    assert state.exit_code == 11 and not state.disrupted
    d = decide({"attempts": 1, "phase": "Running"}, kube._without_pods(state), RunPolicy(backoffLimit=3), 1)
    assert d.status["phase"] == reasons.FAILED and d.status["lastFailure"]["reason"] == "ModelNotFound"


def test_failure_target_counts_before_failed_and_complete_without_pods_succeeds(cluster: dict[str, Any]) -> None:
    target = {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "limit"}
    cluster["job"] = job_json(failed=1, conditions=[target])
    assert kube.observe("ns", "j", 1).job_failed
    cluster["job"] = job_json(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    obs = kube.observe("ns", "j", 1)
    assert obs.exit_code == 0 and obs.job_complete
    cluster["job"] = job_json(conditions=[{"type": "Failed", "status": "False"}])
    assert not kube.observe("ns", "j", 1).job_failed


def pod_json(name: str, phase: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "worker", "image": "w"}]},
        "status": {"phase": phase, **status},
    }


def test_a_failed_job_with_a_pod_that_shows_nothing_is_still_noticed(cluster: dict[str, Any]) -> None:
    """The Job failed (its pod was deleted and replaced by nothing) while another pod of it is still terminating."""
    cluster["job"] = job_json(failed=1, conditions=[failed_condition("BackoffLimitExceeded", "limit")])
    cluster["pods"] = [pod_json("p0", "Running")]
    obs = kube.observe("ns", "j", 1)
    assert obs.job_failed and obs.exit_code is None and obs.active == 1
    d = decide({"attempts": 1, "phase": "Running"}, obs, RunPolicy(backoffLimit=1), 1)
    assert d.create_attempt == 2 and d.delete_attempt == 1


def test_a_pod_without_status_or_metadata_fields(cluster: dict[str, Any]) -> None:
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p0"}, "spec": {"containers": []}}
    cluster["pods"] = [bare]
    obs = kube.observe("ns", "j", 1)
    assert obs.pod_phase == "Pending" and obs.exit_code is None
    evicted = pod_json("p1", "Failed", reason="Evicted", conditions=[{"type": "DisruptionTarget", "status": "True"}])
    assert kube._disrupted(model(evicted, "V1Pod"))


def test_pods_deleted_by_a_suspension_are_not_read_after_resume(cluster: dict[str, Any]) -> None:
    """Resuming resets the Job's startTime; a pod created before it was deleted by the suspension (it may still be
    terminating, exit 143) and says nothing about the resumed attempt."""
    old = pod_json("old", "Failed")
    old["status"]["containerStatuses"] = [
        {"name": "worker", "image": "w", "imageID": "", "ready": False, "restartCount": 0,
         "state": {"terminated": {"exitCode": 143, "reason": "Error"}}}
    ]  # fmt: skip
    cluster["pods"] = [old]
    cluster["job"] = job_json(startTime="2026-01-01T00:00:00Z", active=1)  # the pod is not older than startTime
    assert kube.observe("ns", "j", 1).exit_code == 143
    cluster["job"] = job_json(startTime="2026-01-01T00:05:00Z")  # resumed five minutes later
    obs = kube.observe("ns", "j", 1)
    assert obs.exit_code is None and obs.pod_phase is None
    suspended = {"type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "Job suspended"}
    cluster["job"] = job_json(conditions=[suspended])
    assert kube.observe("ns", "j", 1).job_suspended


UNSCHEDULABLE = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def waiting(reason: str, message: str = "") -> list[dict[str, Any]]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return [
        {"name": "worker", "image": "w", "imageID": "", "ready": False, "restartCount": 0, "state": {"waiting": state}}
    ]


def test_the_pending_pod_says_why(cluster: dict[str, Any]) -> None:
    """The three shapes a stuck pod has on a real cluster: PodScheduled False Unschedulable; a container waiting in
    ImagePullBackOff; ContainerCreating with nothing but FailedMount Warning events."""
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": UNSCHEDULABLE}
    cluster["pods"] = [pod_json("p0", "Pending", conditions=[scheduled])]
    obs = kube.observe("ns", "j", 1)
    assert (obs.pod_phase, obs.pending_reason) == ("Pending", "Unschedulable")
    assert obs.pending_message == f"pod p0: {UNSCHEDULABLE}" and obs.pending_since is not None
    pulling = 'Back-off pulling image "registry.example/worker:9"'
    cluster["pods"] = [pod_json("p0", "Pending", containerStatuses=waiting("ImagePullBackOff", pulling))]
    obs = kube.observe("ns", "j", 1)
    assert obs.pending_reason == "ImagePullBackOff" and pulling in obs.pending_message
    creating = pod_json("p0", "Pending", containerStatuses=waiting("ContainerCreating"))
    creating["metadata"]["uid"] = "uid-p0"
    cluster["pods"] = [creating]
    assert kube.observe("ns", "j", 1).pending_reason == ""  # nothing said yet: no reason made up
    mount = 'MountVolume.SetUp failed for volume "s3-credentials" : secret "s3" not found'
    cluster["events"] = [
        {
            "metadata": {"name": "e1", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "p0", "uid": "uid-p0"},
            "reason": reason,
            "message": message,
            "type": etype,
            "lastTimestamp": stamp,
        }
        for reason, message, etype, stamp in [
            ("Scheduled", "Successfully assigned ns/p0 to node", "Normal", "2026-01-01T00:00:09Z"),
            ("FailedMount", mount, "Warning", "2026-01-01T00:00:05Z"),
        ]
    ]
    assert kube.observe("ns", "j", 1).pending_reason == ""  # events are read at most every EVENTS_EVERY seconds
    kube._events_read.clear()
    obs = kube.observe("ns", "j", 1)
    assert obs.pending_reason == "FailedMount" and obs.pending_message == f"pod p0: {mount}"
