"""The kopf handlers' wrapper (``handlers.guarded``) with the Kubernetes I/O faked: errors become a condition and an
Event and are retried on the next tick (not after kopf's 60 s), a child refused as invalid fails the job, and a
stale body read by two reconciles posts one JobCreated event."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest
from asyncdiff_operator import handlers, kube, reasons, shard_reconcile
from asyncdiff_operator.reconcile_errors import REPEAT_EVENT_EVERY, ChildRejected
from asyncdiff_operator.shard_status import ShardObservation
from asyncdiff_operator.status import Observation
from kubernetes.client.exceptions import ApiException

LOG = logging.getLogger("test-handlers")


def cr(status: dict[str, Any] | None = None, name: str = "job") -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "asyncdiff.io/v1alpha1",
        "kind": "AsyncDiffJob",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "model": {"family": "sd15", "source": "/m"},
            "generation": {"prompts": ["a"], "steps": 2},
            "output": {"uri": "file:///tmp/out"},
        },
    }
    if status is not None:
        body["status"] = status
    return body


class FakeCluster:
    def __init__(self) -> None:
        self.children: set[tuple[str, str]] = set()
        self.events: list[tuple[str, str, str]] = []
        self.fail_with: BaseException | None = None

    def create_if_absent(self, kind: str, namespace: str, body: dict[str, Any]) -> bool:
        if self.fail_with is not None:
            raise self.fail_with
        key = (kind, body["metadata"]["name"])
        if key in self.children:
            return False
        self.children.add(key)
        return True

    def event(self, obj: Any, *, type: str, reason: str, message: str = "") -> None:
        self.events.append((type, reason, message))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    cluster = FakeCluster()
    monkeypatch.setattr(kube, "create_if_absent", cluster.create_if_absent)
    monkeypatch.setattr(kube, "observe", lambda *a, **k: Observation())
    monkeypatch.setattr(shard_reconcile, "observe_sharded", lambda *a, **k: ShardObservation())
    monkeypatch.setattr(kube, "delete_children", lambda *a, **k: False)
    monkeypatch.setattr(kopf, "event", cluster.event)
    handlers._errors.clear()
    return cluster


def run(body: dict[str, Any]) -> dict[str, Any]:
    patch = kopf.Patch()
    handlers.guarded(kopf.Body(body), patch, LOG)
    return dict(patch.get("status") or {})


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def test_the_create_handler_and_the_first_tick_post_one_job_created_event(fake: FakeCluster) -> None:
    first = run(cr())
    second = run(cr())  # the timer's first tick read the CR before the create handler's status patch landed
    assert first["attempts"] == second["attempts"] == 1
    assert [e[1] for e in fake.events] == [reasons.JOB_CREATED]


def test_a_transient_error_is_a_condition_and_an_event_and_the_next_tick_retries(fake: FakeCluster) -> None:
    from prometheus_client import REGISTRY

    def errors_counted() -> float:
        return REGISTRY.get_sample_value("asyncdiff_reconcile_errors_total", {"reason": reasons.API_ERROR}) or 0.0

    before = errors_counted()
    fake.fail_with = ApiException(status=503, reason="Service Unavailable")
    status = run(cr())
    assert errors_counted() == before + 1
    cond = conditions(status)[reasons.COND_RECONCILED]
    assert cond["status"] == "False" and cond["reason"] == reasons.API_ERROR and "503" in cond["message"]
    assert fake.events == [("Warning", reasons.API_ERROR, "API server answered 503: Service Unavailable")]
    for _ in range(REPEAT_EVENT_EVERY - 1):  # the same error again and again: counted, one Event per 30 failures
        status = run(cr(status))
    assert f"{REPEAT_EVENT_EVERY} reconciles in a row failed" in conditions(status)[reasons.COND_RECONCILED]["message"]
    assert len(fake.events) == 2
    fake.fail_with = None
    status = run(cr(status))
    assert status["attempts"] == 1 and conditions(status)[reasons.COND_RECONCILED]["status"] == "True"
    assert fake.events[-1][1] == reasons.JOB_CREATED


def test_kopf_retries_a_raising_handler_within_seconds() -> None:
    timers = kopf.get_default_registry()._spawning.get_all_handlers()
    (timer,) = [h for h in timers if h.id == "on_timer"]
    assert timer.backoff is not None and timer.backoff <= 5


def test_a_child_the_api_server_refuses_fails_the_job_with_the_reason(fake: FakeCluster) -> None:
    message = 'Job.batch "x" is invalid: spec.template.spec.volumes[2].name: Required value'
    fake.fail_with = ChildRejected("Job", "x", message)
    status = run(cr())
    assert status["phase"] == reasons.FAILED and status["lastFailure"]["reason"] == reasons.CHILD_REJECTED
    failed = conditions(status)[reasons.COND_FAILED]
    assert failed["reason"] == reasons.CHILD_REJECTED and message in failed["message"]
    assert fake.events[-1][:2] == ("Warning", reasons.CHILD_REJECTED)


def test_kube_turns_a_422_into_child_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        def create_namespaced_job(self, *_: Any, **__: Any) -> None:
            raise ApiException(status=422, reason="Unprocessable Entity")

    monkeypatch.setattr(kube, "batch", Refusing)
    with pytest.raises(ChildRejected, match="Job j-attempt-1"):
        kube.create_if_absent("Job", "ns", {"metadata": {"name": "j-attempt-1"}})


def test_a_name_too_long_for_the_children_fails_at_once_without_creating_anything(fake: FakeCluster) -> None:
    """A CRD installed before the CEL rule on metadata.name lets such a CR in: fail it, do not loop on 422."""
    status = run(cr(name="x" * 48))
    assert status["phase"] == reasons.FAILED and status["lastFailure"]["reason"] == reasons.INVALID_SPEC
    assert "at most 47" in status["lastFailure"]["message"] and not fake.children


def test_the_resolved_output_location_is_recorded_without_credentials(
    fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's S3 defaults fill what spec.output leaves unset; status.output says where the worker writes."""
    from asyncdiff_operator.settings import OperatorSettings, S3Defaults

    defaults = S3Defaults(
        endpoint_url="http://minio.storage:9000", region="eu-west-1", force_path_style=True, credentials_secret="s3"
    )
    monkeypatch.setattr(handlers, "SETTINGS", OperatorSettings(s3=defaults))
    body = cr()
    body["spec"]["output"] = {"uri": "s3://bucket/out"}
    status = run(body)
    assert status["output"] == {
        "uri": "s3://bucket/out",
        "endpointUrl": "http://minio.storage:9000",
        "region": "eu-west-1",
        "forcePathStyle": True,
    }
    body["spec"]["output"]["endpointUrl"] = "http://own:9000"  # the job's own setting wins
    assert run(cr(name="own") | {"spec": body["spec"]})["output"]["endpointUrl"] == "http://own:9000"


def test_a_complete_job_without_pods_succeeds_with_its_manifest(
    fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a single-node job: its sharded child Job is Complete, and no pod is left to read the "done" line from
    done = ShardObservation(complete=True, completed=frozenset({0}))
    monkeypatch.setattr(shard_reconcile, "observe_sharded", lambda *a, **k: done)
    status = run(cr({"phase": "Running", "attempts": 1, "output": {"uri": "s3://b/p/"}}))
    assert status["phase"] == reasons.SUCCEEDED and status["manifest"] == "s3://b/p/job/manifest.json"


@pytest.mark.parametrize(
    ("parallelism", "message"),
    [
        ({"devices": 7, "modelN": 2}, "spec.parallelism.devices: 7 device(s) cannot be divided"),
        ({"devices": 8, "modelN": 2, "replicas": 3}, "spec.parallelism.devices: 8 does not match the explicit layout"),
    ],
)
def test_devices_the_planner_cannot_cut_fail_the_job_naming_the_field(
    fake: FakeCluster, parallelism: dict[str, Any], message: str
) -> None:
    """The planner's arithmetic is not CEL: such a job passes the API server and fails at its first reconcile, with
    the planner's message in the Failed condition, lastFailure and an Event, before any child exists."""
    body = cr()
    body["spec"]["parallelism"] = parallelism
    status = run(body)
    assert status["phase"] == reasons.FAILED and status["lastFailure"]["reason"] == reasons.INVALID_SPEC
    assert status["lastFailure"]["message"].startswith(message), status["lastFailure"]
    assert conditions(status)[reasons.COND_FAILED]["reason"] == reasons.INVALID_SPEC
    assert fake.events[-1][:2] == ("Warning", reasons.INVALID_SPEC) and not fake.children
