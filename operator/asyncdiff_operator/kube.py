"""Thin Kubernetes I/O for the operator: clients, idempotent creates, the current attempt's pod and its last progress.

Why separate: handlers stay about policy; everything that talks to the API server (and its 404/409 semantics) is
here. The worker never talks to the API; its progress is read from the pod log (its JSON stdout lines). Every call
has a client-side timeout (``TIMEOUT``): a hung connection must fail the reconcile (kopf retries it), not block it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from asyncdiff_worker.exit_codes import USER_ERROR_CODES
from asyncdiff_worker.progress import parse_event
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from asyncdiff_operator.children import COMPLETION_INDEX, CONTAINER, LABEL_ATTEMPT, LABEL_JOB, child_name
from asyncdiff_operator.status import Observation

LOG_TAIL_LINES = 200
TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds for every API call."""


@functools.cache
def api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def core() -> Any:
    return client.CoreV1Api(api_client())


def batch() -> Any:
    return client.BatchV1Api(api_client())


def networking() -> Any:
    return client.NetworkingV1Api(api_client())


def create_if_absent(kind: str, namespace: str, body: dict[str, Any]) -> bool:
    """Create a ConfigMap, Job, (headless) Service or NetworkPolicy; False when it already exists (409: an earlier
    reconcile or operator made it)."""
    try:
        if kind == "ConfigMap":
            core().create_namespaced_config_map(namespace, body, _request_timeout=TIMEOUT)
        elif kind == "Service":
            core().create_namespaced_service(namespace, body, _request_timeout=TIMEOUT)
        elif kind == "NetworkPolicy":
            networking().create_namespaced_network_policy(namespace, body, _request_timeout=TIMEOUT)
        else:
            batch().create_namespaced_job(namespace, body, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


def last_event(namespace: str, pod: str) -> dict[str, Any] | None:
    """The last progress line in the pod's log tail, or None."""
    try:
        text = core().read_namespaced_pod_log(
            pod, namespace, container=CONTAINER, tail_lines=LOG_TAIL_LINES, _request_timeout=TIMEOUT
        )
    except ApiException:
        return None
    for line in reversed(str(text).splitlines()):
        event = parse_event(line)
        if event is not None:
            return dict(event)
    return None


DISRUPTION_REASONS = frozenset({"Evicted", "Preempted", "DeletionByTaintManager", "TerminationByKubelet"})


def _disrupted(pod: Any) -> bool:
    status = pod.status
    if status is None:
        return False
    if status.reason in DISRUPTION_REASONS:
        return True
    return any(c.type == "DisruptionTarget" and c.status == "True" for c in status.conditions or [])


def _index(pod: Any) -> int:
    annotations = pod.metadata.annotations or {}
    try:
        return int(annotations.get(COMPLETION_INDEX, "0"))
    except ValueError:
        return 0


def _terminated(pod: Any) -> tuple[int | None, str]:
    """The worker container's exit code and termination message, once it ended."""
    status = pod.status
    for cs in (status.container_statuses or []) if status else []:
        if cs.name == CONTAINER and cs.state and cs.state.terminated:
            term = cs.state.terminated
            return int(term.exit_code), term.message or term.reason or ""
    if status is not None and status.phase == "Failed":
        return 137, status.message or status.reason or "pod failed"
    return None, ""


def _started(pod: Any) -> float | None:
    status = pod.status
    for cs in (status.container_statuses or []) if status else []:
        if cs.name == CONTAINER and cs.state and cs.state.running and cs.state.running.started_at:
            return float(cs.state.running.started_at.timestamp())
    return None


def _created(pod: Any) -> tuple[float, str]:
    stamp = pod.metadata.creation_timestamp
    return (stamp.timestamp() if stamp else 0.0, pod.metadata.name or "")


def read_job(namespace: str, name: str) -> Any | None:
    try:
        return batch().read_namespaced_job(name, namespace, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def observe(namespace: str, cr_name: str, attempt: int, num_nodes: int = 1) -> Observation:
    """The attempt as one view: the newest pod per completion index, folded (any failure fails the attempt, all
    must succeed to succeed); progress from rank 0's pod (index 0)."""
    job = read_job(namespace, child_name(cr_name, attempt))
    if job is None:
        return Observation(job_found=False)
    job_failed = any(c.type == "Failed" and c.status == "True" for c in (job.status.conditions or []) if job.status)
    selector = f"{LABEL_JOB}={cr_name},{LABEL_ATTEMPT}={attempt}"
    pods: list[Any] = core().list_namespaced_pod(namespace, label_selector=selector, _request_timeout=TIMEOUT).items
    newest: dict[int, Any] = {}
    disrupted = [p for p in pods if _disrupted(p)]
    for pod in sorted(pods, key=_created):
        newest[_index(pod)] = pod
    if not newest:
        return Observation(job_failed=job_failed, disrupted=bool(disrupted))
    ended = {i: _terminated(p) for i, p in newest.items()}
    active = sum(1 for code, _ in ended.values() if code is None)
    rank0 = newest.get(0)
    phase = rank0.status.phase if rank0 is not None and rank0.status else None
    event = last_event(namespace, rank0.metadata.name) if rank0 is not None and phase != "Pending" else None
    base = Observation(
        event=event, job_failed=job_failed, active=active, running_since=_started(rank0) if rank0 else None
    )
    failures = [(i, code, msg) for i, (code, msg) in ended.items() if code not in (None, 0)]
    if failures:
        failures.sort(key=lambda f: (f[1] not in USER_ERROR_CODES, f[0]))
        index, code, message = failures[0]
        lost = _disrupted(newest[index])
        if num_nodes > 1:
            message = f"pod {index}: {message}"
        return dataclasses.replace(base, pod_phase="Failed", exit_code=code, message=message, disrupted=lost)
    if len(newest) >= num_nodes and all(code == 0 for code, _ in ended.values()):
        return dataclasses.replace(base, pod_phase="Succeeded", exit_code=0)
    running = any(p.status is not None and p.status.phase == "Running" for p in newest.values())
    return dataclasses.replace(base, pod_phase="Running" if running else "Pending", disrupted=bool(disrupted))


def delete_children(namespace: str, cr_name: str, attempt: int) -> bool:
    """Delete an attempt's Job and its pods at once (Background: the Job goes now, its pods right after), and its
    ConfigMap. False when the Job was already gone."""
    gone = False
    try:
        batch().delete_namespaced_job(
            child_name(cr_name, attempt), namespace, propagation_policy="Background", _request_timeout=TIMEOUT
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
        gone = True
    try:
        core().delete_namespaced_config_map(child_name(cr_name, attempt), namespace, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status != 404:
            raise
    return not gone


def delete_cr(namespace: str, name: str) -> None:
    """Delete an AsyncDiffJob (TTL after finished); 404 is fine."""
    from asyncdiff_operator.api import GROUP, PLURAL, VERSION

    try:
        client.CustomObjectsApi(api_client()).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
