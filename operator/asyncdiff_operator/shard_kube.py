"""The cheap observation of a sharded job: O(1) API calls per job per interval, whatever its pods or log volume.

Why: the operator reconciles every live job every ``ASYNCDIFF_RECONCILE_INTERVAL`` (1 s); reading every pod's log
on every reconcile (what a single-group job did) costs calls and bytes that grow with pods x log volume x jobs. Here:

- every reconcile: the child Job from the operator's own index of child Jobs (``handlers.child_jobs``, fed by one
  watch of all child Jobs: no call per job; a GET only when the index has not seen a new Job yet). Its status says
  which shards completed (``completedIndexes``, exact outputs via the shard plan), which failed, how many pods are
  active and how many failures were counted;
- once per ``progress_interval`` (``ASYNCDIFF_PROGRESS_INTERVAL``, default 10 s) and only while pods are active:
  one LIST of the pods of *one* shard (label ``batch.kubernetes.io/job-completion-index``: a few pods at most, its
  retries) and one bounded log tail (``LOG_TAIL_LINES`` lines, ``LOG_LIMIT_BYTES`` bytes) of its running pod. The
  shards sampled rotate over the ones the Job controller runs (it starts the lowest pending indexes first, so the
  candidates are the ``parallelism`` lowest indexes neither completed nor failed);
- only when the Job's failure count grew or the Job failed: one LIST of the failed pods, for the exit code and
  termination message of the newest (amortised per failure, not per interval).

Workers need no API credentials: everything is read by the operator. The sampling schedule lives in this process
(``_SAMPLES``); after an operator restart the first reconcile of each job samples at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from asyncdiff_operator import kube
from asyncdiff_operator.children import COMPLETION_INDEX, CONTAINER, LABEL_ATTEMPT, LABEL_JOB, child_name
from asyncdiff_operator.shard_status import ShardObservation, parse_indexes

LOG_TAIL_LINES = 50
LOG_LIMIT_BYTES = 64 * 1024
DEFAULT_PROGRESS_INTERVAL = 10.0


@dataclass
class _Sampling:
    last: float = 0.0
    cursor: int = 0


_SAMPLES: dict[str, _Sampling] = {}


def forget(uid: str) -> None:
    _SAMPLES.pop(uid, None)


def candidates(num_shards: int, parallelism: int, completed: set[int], failed: set[int]) -> list[int]:
    """The shards the Job controller is most likely running: the ``parallelism`` lowest pending indexes."""
    out: list[int] = []
    for i in range(num_shards):
        if i in completed or i in failed:
            continue
        out.append(i)
        if len(out) >= max(parallelism, 1):
            break
    return out


def _newest(pods: list[Any]) -> Any | None:
    return max(pods, key=kube._created) if pods else None


def _log_event(namespace: str, pod: str) -> dict[str, Any] | None:
    return kube.last_event(namespace, pod, tail_lines=LOG_TAIL_LINES, limit_bytes=LOG_LIMIT_BYTES)


def _newest_failure(namespace: str, selector: str) -> tuple[int, str] | None:
    pods = (
        kube.core()
        .list_namespaced_pod(
            namespace, label_selector=selector, field_selector="status.phase=Failed", _request_timeout=kube.TIMEOUT
        )
        .items
    )
    ended = [(p, kube._terminated(p)) for p in pods]
    ended = [(p, t) for p, t in ended if t[0] not in (None, 0)]
    if not ended:
        return None
    _, (code, message) = max(ended, key=lambda pt: kube._created(pt[0]))
    assert code is not None
    return code, message


def _finished_at(pod: Any) -> float:
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        term = cs.state.terminated if cs.state else None
        if cs.name == CONTAINER and term is not None and term.finished_at is not None:
            return float(term.finished_at.timestamp())
    return kube._created(pod)[0]


def _final_event(namespace: str, selector: str) -> dict[str, Any] | None:
    """The ``done`` line of the pod that finished last (it wrote the manifest), read once when the Job completed."""
    pods = (
        kube.core()
        .list_namespaced_pod(
            namespace, label_selector=selector, field_selector="status.phase=Succeeded", _request_timeout=kube.TIMEOUT
        )
        .items
    )
    for pod in sorted(pods, key=_finished_at, reverse=True)[:2]:
        event = _log_event(namespace, pod.metadata.name)
        if event is not None and event.get("asyncdiff") == "done":
            return event
    return None


def job_snapshot(spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of a child Job a reconcile needs (what the ``child_jobs`` index keeps per Job)."""
    spec = spec or {}
    return {
        "suspend": bool(spec.get("suspend")),
        "parallelism": spec.get("parallelism"),
        "status": dict(status or {}),
    }


def _read_snapshot(namespace: str, name: str) -> dict[str, Any] | None:
    job = kube.read_job(namespace, name)
    if job is None:
        return None
    raw: dict[str, Any] = kube.api_client().sanitize_for_serialization(job)  # type: ignore[no-untyped-call]
    return job_snapshot(raw.get("spec"), raw.get("status"))


def _true(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype and c.get("status") == "True":
            return dict(c)
    return None


def observe_sharded(
    namespace: str,
    cr_name: str,
    uid: str,
    attempt: int,
    status: dict[str, Any],
    num_shards: int,
    *,
    cached: Mapping[str, Any] | None = None,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    now: float | None = None,
) -> ShardObservation:
    """One tick's view of a sharded job (see the module docstring for the calls it makes). ``cached``: the child
    Job's snapshot from the operator's watch-fed index (``handlers.child_jobs``); without it, one GET."""
    now = time.time() if now is None else now
    snap = dict(cached) if cached is not None else _read_snapshot(namespace, child_name(cr_name, attempt))
    if snap is None:
        return ShardObservation(job_found=False)
    jst: Mapping[str, Any] = snap.get("status") or {}
    completed = parse_indexes(jst.get("completedIndexes"))
    failed_idx = parse_indexes(jst.get("failedIndexes"))
    failed_cond = _true(jst, "Failed") or _true(jst, "FailureTarget")
    complete = _true(jst, "Complete") is not None
    active = int(jst.get("active") or 0)
    failed_pods = int(jst.get("failed") or 0)
    parallelism = int(snap["parallelism"]) if snap.get("parallelism") is not None else None
    selector = f"{LABEL_JOB}={cr_name},{LABEL_ATTEMPT}={attempt}"
    failure = None
    if failed_pods > int(status.get("failedPods") or 0) or failed_cond is not None:
        failure = _newest_failure(namespace, selector)
    obs = ShardObservation(
        suspended=bool(snap.get("suspend")),
        started=bool(jst.get("startTime")),
        complete=complete,
        failed_reason=str(failed_cond.get("reason") or "") if failed_cond is not None else None,
        failed_message=str(failed_cond.get("message") or "") if failed_cond is not None else "",
        completed=frozenset(completed),
        failed_indexes=frozenset(failed_idx),
        active=active,
        ready=int(jst.get("ready") or 0),
        failed_pods=failed_pods,
        parallelism=parallelism,
        failure=failure,
    )
    if complete:  # once: the last finisher's "done" line names the outputs and the manifest (the commit marker)
        return replace(obs, event=_final_event(namespace, selector))
    sampling = _SAMPLES.setdefault(uid, _Sampling())
    if complete or failed_cond is not None or active == 0 or now - sampling.last < progress_interval:
        return obs
    sampling.last = now
    todo = candidates(num_shards, parallelism or 1, completed, failed_idx)
    if not todo:
        return obs
    index = todo[sampling.cursor % len(todo)]
    sampling.cursor += 1
    pods = (
        kube.core()
        .list_namespaced_pod(
            namespace, label_selector=f"{selector},{COMPLETION_INDEX}={index}", _request_timeout=kube.TIMEOUT
        )
        .items
    )
    pod = _newest(pods)
    if pod is None:
        return obs
    phase = pod.status.phase if pod.status else None
    event = _log_event(namespace, pod.metadata.name) if phase == "Running" else None
    if phase == "Pending":  # why it waits (its conditions and container states; at most one events list)
        reason, message, since = kube.pending_info(namespace, [pod])
        obs = replace(obs, pending_reason=reason, pending_message=message, pending_since=since)
    return replace(
        obs,
        sample_index=index,
        sample_pod=pod.metadata.name,
        sample_phase=phase,
        event=event,
        running_since=kube._started(pod),
    )
