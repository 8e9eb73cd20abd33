"""Thin Kubernetes I/O for the operator: clients, idempotent creates, the current attempt's pod and its last progress.

Why separate: handlers stay about policy; everything that talks to the API server (and its 404/409 semantics) is
here. The worker never talks to the API; its progress is read from the pod log (its JSON stdout lines). Every call
has a client-side timeout (``TIMEOUT``): a hung connection must fail the reconcile (the next tick retries it), not
block it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from typing import Any

from asyncdiff_worker.exit_codes import USER_ERROR_CODES
from asyncdiff_worker.progress import parse_event
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from asyncdiff_operator.children import COMPLETION_INDEX, CONTAINER, LABEL_ATTEMPT, LABEL_JOB, child_name
from asyncdiff_operator.reconcile_errors import ChildRejected, api_message
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
    reconcile or operator made it). A child refused as invalid (422) raises ``ChildRejected``."""
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
        if exc.status == 422:
            name = str((body.get("metadata") or {}).get("name"))
            raise ChildRejected(kind, name, api_message(exc)) from exc
        raise
    return True


def last_event(
    namespace: str, pod: str, tail_lines: int = LOG_TAIL_LINES, limit_bytes: int | None = None
) -> dict[str, Any] | None:
    """The last progress line in the pod's log tail (``tail_lines`` lines, at most ``limit_bytes``), or None."""
    bounds: dict[str, Any] = {"tail_lines": tail_lines}
    if limit_bytes is not None:
        bounds["limit_bytes"] = limit_bytes
    try:
        text = core().read_namespaced_pod_log(pod, namespace, container=CONTAINER, _request_timeout=TIMEOUT, **bounds)
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
    annotations = (pod.metadata.annotations if pod.metadata is not None else None) or {}
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


WAITING_PROBLEMS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Container waiting reasons that say why a pod cannot start (ContainerCreating alone says nothing: then the pod's
Warning events do, e.g. FailedMount)."""


def _pending_reason(pod: Any) -> tuple[str, str]:
    """Why a Pending pod waits, from the pod object alone: an unschedulable PodScheduled condition or a container
    waiting reason; ("", "") when the pod does not say (then its events may)."""
    status = pod.status
    if status is None:
        return "", ""
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason:
            return str(cond.reason), str(cond.message or "")
    for cs in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason in WAITING_PROBLEMS:
            return str(waiting.reason), str(waiting.message or "")
    return "", ""


EVENTS_EVERY = 5.0
"""Seconds between two reads of one Pending pod's events (a list call per pod per tick would not scale)."""
_events_read: dict[str, tuple[float, tuple[str, str]]] = {}  # pod uid -> (when read, what it said)


def _warning_event(namespace: str, pod: Any) -> tuple[str, str]:
    """The newest Warning Event about a pod (FailedMount, FailedCreatePodSandBox, ...), or ("", ""); read at most
    every EVENTS_EVERY seconds per pod."""
    uid = pod.metadata.uid if pod.metadata is not None else None
    if not uid:
        return "", ""
    now = time.monotonic()
    cached = _events_read.get(uid)
    if cached is not None and now - cached[0] < EVENTS_EVERY:
        return cached[1]
    if len(_events_read) > 10_000:  # pods come and go; forget the oldest reads
        for old in sorted(_events_read, key=lambda k: _events_read[k][0])[:5_000]:
            del _events_read[old]
    found = _newest_warning(namespace, uid)
    _events_read[uid] = (now, found)
    return found


def _newest_warning(namespace: str, uid: str) -> tuple[str, str]:
    try:
        items = (
            core()
            .list_namespaced_event(namespace, field_selector=f"involvedObject.uid={uid}", _request_timeout=TIMEOUT)
            .items
        )
    except ApiException:
        return "", ""
    warnings = [e for e in items or [] if e.type == "Warning" and e.reason]

    def when(event: Any) -> float:
        stamp = (
            event.last_timestamp or event.event_time or (event.metadata.creation_timestamp if event.metadata else None)
        )
        return float(stamp.timestamp()) if stamp is not None else 0.0

    if not warnings:
        return "", ""
    newest = max(warnings, key=when)
    return str(newest.reason), str(newest.message or "")


def pending_info(namespace: str, pods: list[Any]) -> tuple[str, str, float | None]:
    """(reason, message, since) of the oldest Pending pod among ``pods`` (since: its creation, Unix time)."""
    pending = [p for p in pods if p.status is not None and p.status.phase == "Pending" and _terminated(p)[0] is None]
    if not pending:
        return "", "", None
    oldest = min(pending, key=_created)
    reason, message = _pending_reason(oldest)
    if not reason:
        reason, message = _warning_event(namespace, oldest)
    name = oldest.metadata.name if oldest.metadata is not None else "?"
    return reason, (f"pod {name}: {message}" if reason else ""), _created(oldest)[0] or None


def _started(pod: Any) -> float | None:
    status = pod.status
    for cs in (status.container_statuses or []) if status else []:
        if cs.name == CONTAINER and cs.state and cs.state.running and cs.state.running.started_at:
            return float(cs.state.running.started_at.timestamp())
    return None


def _created(pod: Any) -> tuple[float, str]:
    meta = pod.metadata
    stamp = meta.creation_timestamp if meta is not None else None
    return (stamp.timestamp() if stamp else 0.0, (meta.name if meta is not None else None) or "")


def _before_start(pod: Any, job: Any) -> bool:
    """A pod created before the Job's current ``startTime``: deleted when the Job was suspended (the Job controller
    resets startTime on resume, and such pods may still be terminating). Second precision, as the API's."""
    start = job.status.start_time if job.status is not None else None
    created = pod.metadata.creation_timestamp if pod.metadata is not None else None
    if start is None or created is None:
        return False
    return bool(created.replace(microsecond=0) < start.replace(microsecond=0))


def set_suspend(namespace: str, name: str, suspend: bool) -> bool:
    """Set a child Job's ``spec.suspend``; True when it changed (False: already so, or the Job is gone)."""
    job = read_job(namespace, name)
    if job is None or bool(job.spec.suspend if job.spec is not None else False) == suspend:
        return False
    try:
        batch().patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}}, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def read_job(namespace: str, name: str) -> Any | None:
    try:
        return batch().read_namespaced_job(name, namespace, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


@dataclasses.dataclass(frozen=True)
class JobState:
    """What a child Job's own status says (authoritative when its pods are gone). Every field of a Job's status
    is optional on the wire: a Job the controller has not synced yet has no ``status`` at all."""

    failed: bool = False  # a Failed (or FailureTarget) condition is True
    complete: bool = False  # a Complete (or SuccessCriteriaMet) condition is True
    suspended: bool = False  # the Suspended condition is True
    reason: str = ""  # the failure condition's reason (BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy...)
    message: str = ""
    failed_pods: int = 0  # status.failed
    exit_code: int | None = None  # from a PodFailurePolicy message ("... failed with exit code 11 matching ...")
    disrupted: bool = False  # the Job says a pod condition DisruptionTarget failed it


_EXIT_CODE = re.compile(r"with exit code (\d+)")


def job_state(job: Any) -> JobState:
    """Fold a batch/v1 Job (kubernetes client model) into ``JobState``."""
    status = getattr(job, "status", None)
    if status is None:
        return JobState()
    conditions = [c for c in (status.conditions or []) if c is not None and c.status == "True"]
    by_type = {c.type: c for c in conditions}
    failure = by_type.get("Failed") or by_type.get("FailureTarget")
    reason = str(failure.reason or "") if failure is not None else ""
    message = str(failure.message or "") if failure is not None else ""
    code = None
    if failure is not None and reason == "PodFailurePolicy" and (match := _EXIT_CODE.search(message)):
        code = int(match.group(1))
    return JobState(
        failed=failure is not None,
        complete="Complete" in by_type or "SuccessCriteriaMet" in by_type,
        suspended="Suspended" in by_type,
        reason=reason,
        message=message,
        failed_pods=int(status.failed or 0),
        exit_code=code,
        disrupted=failure is not None and reason == "PodFailurePolicy" and "DisruptionTarget" in message,
    )


def _without_pods(state: JobState) -> Observation:
    """The attempt when no pod is left to inspect (deleted, evicted and removed, garbage-collected): the Job's own
    status decides."""
    if state.complete and not state.failed:
        return Observation(pod_phase="Succeeded", exit_code=0, job_complete=True)
    if state.failed:
        detail = f"{state.reason}: {state.message}" if state.reason else state.message or "failed"
        return Observation(
            pod_phase="Failed",
            exit_code=state.exit_code,
            message=f"the child Job failed ({detail}) and no pod is left to inspect",
            job_failed=True,
            job_reason=state.reason,
            disrupted=state.disrupted,
        )
    return Observation(job_suspended=state.suspended)


def observe(namespace: str, cr_name: str, attempt: int, num_nodes: int = 1) -> Observation:
    """The attempt as one view: the newest pod per completion index, folded (any failure fails the attempt, all
    must succeed to succeed); progress from rank 0's pod (index 0). With no pod left, the child Job's own status
    (its conditions and counters) decides."""
    job = read_job(namespace, child_name(cr_name, attempt))
    if job is None:
        return Observation(job_found=False)
    state = job_state(job)
    if state.suspended and not state.failed and not state.complete:
        return Observation(job_suspended=True)  # its pods are being deleted; none of them says anything
    job_failed = state.failed
    selector = f"{LABEL_JOB}={cr_name},{LABEL_ATTEMPT}={attempt}"
    pods: list[Any] = core().list_namespaced_pod(namespace, label_selector=selector, _request_timeout=TIMEOUT).items
    pods = [p for p in pods if not _before_start(p, job)]
    newest: dict[int, Any] = {}
    disrupted = [p for p in pods if _disrupted(p)]
    for pod in sorted(pods, key=_created):
        newest[_index(pod)] = pod
    if not newest:
        return _without_pods(state)
    ended = {i: _terminated(p) for i, p in newest.items()}
    active = sum(1 for code, _ in ended.values() if code is None)
    rank0 = newest.get(0)
    phase = rank0.status.phase if rank0 is not None and rank0.status else None
    event = last_event(namespace, rank0.metadata.name) if rank0 is not None and phase != "Pending" else None
    base = Observation(
        event=event,
        job_failed=job_failed,
        job_reason=state.reason,
        active=active,
        running_since=_started(rank0) if rank0 else None,
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
    reason, message, since = pending_info(namespace, list(newest.values()))
    return dataclasses.replace(
        base,
        pod_phase="Running" if running else "Pending",
        disrupted=bool(disrupted),
        pending_reason=reason,
        pending_message=message,
        pending_since=since,
    )


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
