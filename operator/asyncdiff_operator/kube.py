"""Thin Kubernetes I/O for the operator: clients, idempotent creates, the current attempt's pod and its last progress.

Why separate: handlers stay about policy; everything that talks to the API server (and its 404/409 semantics) is
here. The worker never talks to the API; its progress is read from the pod log (its JSON stdout lines).
"""

from __future__ import annotations

import functools
from typing import Any

from asyncdiff_worker.progress import parse_event
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from asyncdiff_operator.children import CONTAINER, LABEL_ATTEMPT, LABEL_JOB
from asyncdiff_operator.status import Observation

LOG_TAIL_LINES = 200


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


def create_if_absent(kind: str, namespace: str, body: dict[str, Any]) -> bool:
    """Create a ConfigMap or Job; False when it already exists (409: an earlier reconcile or operator made it)."""
    try:
        if kind == "ConfigMap":
            core().create_namespaced_config_map(namespace, body)
        else:
            batch().create_namespaced_job(namespace, body)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


def last_event(namespace: str, pod: str) -> dict[str, Any] | None:
    """The last progress line in the pod's log tail, or None."""
    try:
        text = core().read_namespaced_pod_log(pod, namespace, container=CONTAINER, tail_lines=LOG_TAIL_LINES)
    except ApiException:
        return None
    for line in reversed(str(text).splitlines()):
        event = parse_event(line)
        if event is not None:
            return dict(event)
    return None


def observe(namespace: str, cr_name: str, attempt: int) -> Observation:
    """The state of the attempt's pod: phase, exit code, termination message and last progress."""
    selector = f"{LABEL_JOB}={cr_name},{LABEL_ATTEMPT}={attempt}"
    pods: list[Any] = core().list_namespaced_pod(namespace, label_selector=selector).items
    if not pods:
        return Observation()
    pod = sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0)[-1]
    phase = pod.status.phase if pod.status else None
    exit_code: int | None = None
    message = ""
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        if cs.name == CONTAINER and cs.state and cs.state.terminated:
            exit_code = int(cs.state.terminated.exit_code)
            message = cs.state.terminated.message or cs.state.terminated.reason or ""
    if exit_code is None and phase == "Failed":
        exit_code, message = 137, (pod.status.message or pod.status.reason or "pod failed")
    event = last_event(namespace, pod.metadata.name) if phase in ("Running", "Succeeded", "Failed") else None
    return Observation(pod_phase=phase, exit_code=exit_code, message=message, event=event)


def delete_job(namespace: str, name: str) -> None:
    try:
        batch().delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise
