"""One reconcile of a single-node (sharded) AsyncDiffJob: observe cheaply, decide purely, act idempotently.

Why its own module: ``handlers.reconcile`` routes single-node jobs here and keeps multi-node jobs on the original
path (one group whose pods are node ranks). The order is the same as there: actions first (delete a stalled pod,
patch the child Job's parallelism, create a child), then the status patch that records them, so a crash in between
is repaired by the next tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from asyncdiff_operator import kube, metrics
from asyncdiff_operator.api import AsyncDiffJobSpec
from asyncdiff_operator.children import child_name, manifest_uri
from asyncdiff_operator.layout import resolve, running_layout
from asyncdiff_operator.shard_job import queued_by_kueue
from asyncdiff_operator.shard_kube import observe_sharded
from asyncdiff_operator.shard_status import ShardDecision, ShardObservation, decide_sharded, layout_status
from asyncdiff_operator.status import now_iso

_INDEX: list[Mapping[Any, Any]] = []


def use_index(index: Mapping[Any, Any]) -> None:
    """Remember kopf's live index of child Jobs (``handlers.child_jobs``; the same object on every call)."""
    if not _INDEX or _INDEX[0] is not index:
        _INDEX[:] = [index]


def cached_job(namespace: str, name: str) -> Mapping[str, Any] | None:
    """The indexed snapshot of a child Job, or None when the index has not seen it (yet)."""
    if not _INDEX:
        return None
    store = _INDEX[0].get((namespace, name))
    for snapshot in store or ():
        return dict(snapshot)
    return None


def patch_parallelism(namespace: str, job: str, parallelism: int) -> None:
    """Scale a running child Job: the Job controller starts or stops pods; finished shards stay finished."""
    kube.batch().patch_namespaced_job(
        job, namespace, {"spec": {"parallelism": parallelism}}, _request_timeout=kube.TIMEOUT
    )


def delete_pod(namespace: str, pod: str) -> None:
    """Delete one stalled pod (its Job replaces it); 404 is fine."""
    try:
        kube.core().delete_namespaced_pod(pod, namespace, _request_timeout=kube.TIMEOUT)
    except ApiException as exc:
        if exc.status != 404:
            raise


def reconcile_sharded(
    body: kopf.Body,
    spec: AsyncDiffJobSpec,
    status: dict[str, Any],
    generation: int,
    *,
    create_attempt: Callable[..., bool],
    stall_seconds: float,
    progress_interval: float,
    pending_timeout: float,
    logger: kopf.Logger,
) -> dict[str, Any]:
    """Observe, decide and act; returns the status patch (empty: nothing changed)."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], str(meta.get("uid"))
    policy = spec.run_policy
    planned = (status.get("layout") or {}).get("plannedReplicas")
    running = running_layout(status)
    layout = resolve(spec, int(planned) if isinstance(planned, int) and status.get("attempts") else None, running)
    attempts = int(status.get("attempts") or 0)
    now = time.time()
    observe = attempts > 0 and not policy.suspend and status.get("phase") != "Suspended"
    obs = (
        observe_sharded(
            namespace,
            name,
            uid,
            attempts,
            status,
            layout.plan.num_shards,
            cached=cached_job(namespace, child_name(name, attempts)),
            progress_interval=progress_interval,
            now=now,
        )
        if observe
        else ShardObservation()
    )
    decision: ShardDecision = decide_sharded(
        status,
        obs,
        policy,
        layout,
        generation,
        now=now,
        stall_seconds=stall_seconds,
        queued_by_kueue=queued_by_kueue(dict(body)),
        pending_timeout=pending_timeout,
    )
    if decision.delete_pod:
        delete_pod(namespace, decision.delete_pod)
    if decision.patch_parallelism is not None and attempts:
        patch_parallelism(namespace, child_name(name, attempts), decision.patch_parallelism)
        logger.info(f"child Job parallelism -> {decision.patch_parallelism}")
    if decision.delete_attempt is not None and kube.delete_children(namespace, name, decision.delete_attempt):
        logger.info(f"deleted the Job of attempt {decision.delete_attempt}")
    if decision.create_attempt is not None:  # a new child is planned with the replicas of now
        decision.status["layout"] = layout_status(resolve(spec, running=running))
        decision.status["child"] = child_name(name, decision.create_attempt)
        if not create_attempt(dict(body), spec, decision.create_attempt, suspend=bool(decision.suspend_child)):
            decision.events = []  # an earlier reconcile created this Job and posted its events
    elif (  # runPolicy.suspend changed: the same Job (status.decide)
        decision.suspend_child is not None
        and attempts
        and not kube.set_suspend(namespace, child_name(name, attempts), decision.suspend_child)
    ):
        decision.events = []  # already so: an earlier reconcile did it and posted the event
    for etype, reason, message in decision.events:
        kopf.event(body, type=etype, reason=reason, message=message)
    for _ in range(decision.retried_times if decision.retried else 0):
        metrics.retried(str(decision.retried))
    if decision.status.get("phase") == "Succeeded" and "manifest" not in decision.status:
        output = status.get("output") or {}
        decision.status["manifest"] = manifest_uri(name, str(output.get("uri") or spec.output.uri))
    if decision.status:  # the handler's default (one group's devices) must not overwrite the total
        decision.status.setdefault(
            "devices", decision.status.get("layout", {}).get("devicesTotal", layout.devices_total)
        )
    if decision.status and decision.status.get("phase") in ("Succeeded", "Failed"):
        decision.status.setdefault("completionTime", now_iso(now))
    return decision.status
