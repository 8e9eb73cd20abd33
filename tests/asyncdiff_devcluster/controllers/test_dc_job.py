"""The batch/v1 Job controller with real processes: Indexed completion, retries, kills, failure rules."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_devcluster.testing import wait_for
from kubernetes import client

PY = sys.executable


@pytest.fixture
def batch(k8s: Any) -> client.BatchV1Api:
    return client.BatchV1Api(k8s)


@pytest.fixture
def core(k8s: Any) -> client.CoreV1Api:
    return client.CoreV1Api(k8s)


def job(
    name: str, script: str, *, restart: str = "Never", volumes: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "python:3.11", "command": [PY, "-c", script]}
    pod_spec: dict[str, Any] = {
        "restartPolicy": restart,
        "containers": [container],
        "terminationGracePeriodSeconds": 2,
    }
    if volumes:
        pod_spec["volumes"] = [{"name": n, "hostPath": {"path": p}} for n, p in volumes.items()]
        container["volumeMounts"] = [{"name": n, "mountPath": f"/{n}"} for n in volumes]
    return {"metadata": {"name": name}, "spec": {"template": {"spec": pod_spec}, **spec}}


def condition(batch: client.BatchV1Api, namespace: str, name: str, ctype: str) -> Any:
    status = batch.read_namespaced_job_status(name, namespace).status
    for cond in status.conditions or []:
        if cond.type == ctype and cond.status == "True":
            return cond
    return None


def job_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[Any]:
    return core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}").items


def test_indexed_job_with_two_pods_completes(batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str) -> None:
    script = "import os; print('index', os.environ['JOB_COMPLETION_INDEX'], 'host', os.environ['HOSTNAME'])"
    created = batch.create_namespaced_job(
        namespace, job("idx", script, completions=2, parallelism=2, completionMode="Indexed")
    )
    assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": created.metadata.uid}
    done = wait_for(lambda: condition(batch, namespace, "idx", "Complete"), 20, message="job complete")
    assert done.reason == "CompletionsReached"
    status = batch.read_namespaced_job_status("idx", namespace).status
    assert status.succeeded == 2 and status.completed_indexes == "0-1" and status.completion_time
    pods = job_pods(core, namespace, "idx")
    assert sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods) == [
        "0",
        "1",
    ]
    for pod in pods:
        index = pod.metadata.annotations["batch.kubernetes.io/job-completion-index"]
        assert pod.spec.hostname == f"idx-{index}" and pod.status.phase == "Succeeded"
        assert pod.metadata.finalizers is None  # the job-tracking finalizer was released
        log = core.read_namespaced_pod_log(pod.metadata.name, namespace)
        assert log == f"index {index} host idx-{index}\n"


def test_failed_pod_is_retried_until_success(
    batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str, host_dir: Path
) -> None:
    script = (
        "import os, sys\n"
        "marker = '/state/attempted'\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').write('1'); print('first attempt fails'); sys.exit(3)\n"
        "print('second attempt works')\n"
    )
    batch.create_namespaced_job(namespace, job("retry", script, backoffLimit=2, volumes={"state": str(host_dir)}))
    wait_for(lambda: condition(batch, namespace, "retry", "Complete"), 20, message="retried job complete")
    status = batch.read_namespaced_job_status("retry", namespace).status
    assert (status.failed, status.succeeded) == (1, 1)
    phases = sorted(p.status.phase for p in job_pods(core, namespace, "retry"))
    assert phases == ["Failed", "Succeeded"]
    failed = next(p for p in job_pods(core, namespace, "retry") if p.status.phase == "Failed")
    assert failed.status.container_statuses[0].state.terminated.exit_code == 3


def test_backoff_limit_exceeded_fails_the_job(batch: client.BatchV1Api, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job("doomed", "raise SystemExit(1)", backoffLimit=1))
    failed = wait_for(lambda: condition(batch, namespace, "doomed", "Failed"), 20, message="job failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert batch.read_namespaced_job_status("doomed", namespace).status.failed == 2


def test_pod_killed_mid_run_is_replaced(
    batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str, host_dir: Path
) -> None:
    script = (
        "import os, signal, time\n"
        "if os.path.exists('/state/second'):\n"
        "    print('replacement done'); raise SystemExit(0)\n"
        "def stop(*_):\n"
        "    open('/state/term', 'w').close(); raise SystemExit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "open('/state/second', 'w').close(); print('running', flush=True); time.sleep(3600)\n"
    )
    batch.create_namespaced_job(namespace, job("killed", script, backoffLimit=3, volumes={"state": str(host_dir)}))
    pod = wait_for(
        lambda: next((p for p in job_pods(core, namespace, "killed") if p.status.phase == "Running"), None),
        15,
    )
    wait_for(lambda: "running" in core.read_namespaced_pod_log(pod.metadata.name, namespace), 10)
    core.delete_namespaced_pod(pod.metadata.name, namespace)
    wait_for(lambda: condition(batch, namespace, "killed", "Complete"), 20, message="job complete after kill")
    status = batch.read_namespaced_job_status("killed", namespace).status
    assert (status.failed, status.succeeded) == (1, 1)
    wait_for(lambda: all(p.metadata.name != pod.metadata.name for p in job_pods(core, namespace, "killed")), 10)
    assert (host_dir / "term").exists()  # the deletion's SIGTERM stopped it (not the end of its sleep)


def test_pod_failure_policy_fail_job_and_ignore(
    batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}
    batch.create_namespaced_job(namespace, job("rule", "raise SystemExit(42)", backoffLimit=5, podFailurePolicy=policy))
    failed = wait_for(lambda: condition(batch, namespace, "rule", "Failed"), 20)
    assert failed.reason == "PodFailurePolicy" and "exit code 42" in failed.message
    ignore = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    batch.create_namespaced_job(
        namespace, job("evicted", "import time; time.sleep(60)", backoffLimit=0, podFailurePolicy=ignore)
    )
    pod = wait_for(
        lambda: next((p for p in job_pods(core, namespace, "evicted") if p.status.phase == "Running"), None),
        15,
    )
    core.create_namespaced_pod_eviction(
        pod.metadata.name, namespace, {"metadata": {"name": pod.metadata.name, "namespace": namespace}}
    )
    wait_for(
        lambda: any(
            p.metadata.name != pod.metadata.name and p.status.phase == "Running"
            for p in job_pods(core, namespace, "evicted")
        ),
        15,
        message="replacement pod after eviction",
    )
    status = batch.read_namespaced_job_status("evicted", namespace).status
    assert not status.failed and condition(batch, namespace, "evicted", "Failed") is None


def test_active_deadline_suspend_and_ttl(batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job("slow", "import time; time.sleep(60)", activeDeadlineSeconds=1))
    failed = wait_for(lambda: condition(batch, namespace, "slow", "Failed"), 15)
    assert failed.reason == "DeadlineExceeded"
    batch.create_namespaced_job(namespace, job("later", "print('ok')", suspend=True, ttlSecondsAfterFinished=0))
    # the Suspended condition is written by the same sync that decides not to create pods: it proves none come
    wait_for(lambda: condition(batch, namespace, "later", "Suspended"), 10)
    assert job_pods(core, namespace, "later") == []
    batch.patch_namespaced_job("later", namespace, {"spec": {"suspend": False}})

    def gone() -> bool:
        try:
            batch.read_namespaced_job("later", namespace)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, 20, message="TTL deleted the finished job")


def test_job_validation(batch: client.BatchV1Api, namespace: str) -> None:
    with pytest.raises(client.ApiException) as exc:
        batch.create_namespaced_job(namespace, job("bad", "pass", restart="Always"))
    assert exc.value.status == 422 and "spec.template.spec.restartPolicy" in exc.value.body


def test_a_job_whose_name_does_not_fit_its_pod_label_is_invalid(batch: client.BatchV1Api, namespace: str) -> None:
    """Like kube-apiserver: the Job name becomes the pods' ``batch.kubernetes.io/job-name`` label value (<= 63)."""
    with pytest.raises(client.ApiException) as exc:
        batch.create_namespaced_job(namespace, job("j" * 64, "pass"))
    assert exc.value.status == 422
    assert "spec.template.labels" in exc.value.body and "must be no more than 63 characters" in exc.value.body
    batch.create_namespaced_job(namespace, job("j" * 63, "pass"))


def test_suspend_like_kubernetes(batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str) -> None:
    """KEP-2232: suspending deletes the pods without counting them as failed (even with backoffLimit 0 and a
    podFailurePolicy), sets Suspended=True; resuming sets Suspended=False reason JobResumed, resets startTime (the
    activeDeadlineSeconds clock restarts) and creates new pods; time suspended does not count."""
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    spec = {"backoffLimit": 0, "podFailurePolicy": policy, "activeDeadlineSeconds": 4}
    batch.create_namespaced_job(namespace, job("sus", "import time; time.sleep(60)", **spec))
    first = wait_for(
        lambda: next((p for p in job_pods(core, namespace, "sus") if p.status.phase == "Running"), None), 15
    )
    started = batch.read_namespaced_job_status("sus", namespace).status.start_time
    batch.patch_namespaced_job("sus", namespace, {"spec": {"suspend": True}})
    suspended = wait_for(lambda: condition(batch, namespace, "sus", "Suspended"), 15, message="Suspended")
    assert suspended.reason == "JobSuspended"
    wait_for(lambda: not job_pods(core, namespace, "sus"), 20, message="pods of a suspended Job deleted")
    status = batch.read_namespaced_job_status("sus", namespace).status
    assert not status.failed and not status.active and condition(batch, namespace, "sus", "Failed") is None
    # Suspended for longer than activeDeadlineSeconds: it must not count.
    wait_for(lambda: time.time() - started.timestamp() > 5, 10)
    resumed_at = time.time()
    batch.patch_namespaced_job("sus", namespace, {"spec": {"suspend": False}})
    wait_for(
        lambda: any(p.metadata.name != first.metadata.name for p in job_pods(core, namespace, "sus")),
        15,
        message="a new pod after resume",
    )
    status = batch.read_namespaced_job_status("sus", namespace).status
    cond = next(c for c in status.conditions if c.type == "Suspended")
    assert cond.status == "False" and cond.reason == "JobResumed"
    assert status.start_time.timestamp() >= int(resumed_at) and not status.failed
    failed = wait_for(lambda: condition(batch, namespace, "sus", "Failed"), 20, message="deadline after resume")
    assert failed.reason == "DeadlineExceeded"
    assert failed.last_transition_time.timestamp() - int(resumed_at) >= 3  # the deadline counted from the resume
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=sus").items
    assert {"Suspended", "Resumed"} <= {e.reason for e in events}


def test_lowering_parallelism_stops_the_newest_pods_and_an_ignored_exit_is_not_counted(
    batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    """Elastic Indexed Jobs: parallelism 2 -> 1 deletes the most recently started pod (kube-controller-manager's
    ActivePods ranking); its SIGTERM exit (24 here) matches an Ignore rule, so it is not counted, and with a
    podFailurePolicy its index is replaced only once the pod has failed (podReplacementPolicy Failed)."""
    script = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(24))\n"
        "print('ready', flush=True)\n"
        "time.sleep(10 + 2 * int(os.environ['JOB_COMPLETION_INDEX']))\n"
        "time.sleep(4 if os.environ['JOB_COMPLETION_INDEX'] == '0' else 0)\n"
    )
    policy = {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [24]}}]}
    spec = dict(completions=3, parallelism=2, completionMode="Indexed", backoffLimitPerIndex=0, podFailurePolicy=policy)
    batch.create_namespaced_job(namespace, job("elastic", script, **spec))

    def ready() -> bool:  # both pods run and have their SIGTERM handler (a loaded machine starts Python slowly)
        running = [p for p in job_pods(core, namespace, "elastic") if p.status.phase == "Running"]
        return len(running) == 2 and all(
            "ready" in core.read_namespaced_pod_log(p.metadata.name, namespace) for p in running
        )

    wait_for(ready, 60, message="two pods running with their SIGTERM handler installed")
    batch.patch_namespaced_job("elastic", namespace, {"spec": {"parallelism": 1}})
    done = wait_for(lambda: condition(batch, namespace, "elastic", "Complete"), 180, message="job complete")
    assert done is not None
    status = batch.read_namespaced_job_status("elastic", namespace).status
    assert status.completed_indexes == "0-2" and not status.failed, status
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=elastic").items
    created = sum(e.count or 1 for e in events if e.reason == "SuccessfulCreate")
    assert created == 4, "the pod stopped by the scale-down ran its index again"
