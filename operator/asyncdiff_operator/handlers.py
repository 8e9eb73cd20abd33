"""kopf handlers of AsyncDiffJob: create the first attempt at once, then reconcile by level on a short timer.

Why a timer and not only events: the state that matters (the child Job, its pods, their exit codes and logs, the
clock for deadlines and stalls) lives outside the CR; reading it every interval makes the operator level-based, so a
restart or a missed watch event loses nothing. Each tick is idempotent: children have deterministic names, a 409
means "already there", and the status patch holds absolute values computed from the stored status. Children are
deleted *before* the status patch that records why, so a crash in between is repaired by the next tick.

Settings from the environment (``settings.py``, parsed once when this module is imported, so a bad value stops the
operator at start-up): ``ASYNCDIFF_RECONCILE_INTERVAL`` (seconds, default 1), ``ASYNCDIFF_STALL_SECONDS`` (progress
stall window, default 600), and the operator-wide job defaults that ``children.py`` applies (worker image, pull
policy and pod defaults, S3 endpoint settings and credentials Secret).
"""

from __future__ import annotations

import time
from typing import Any

import kopf
from pydantic import ValidationError

from asyncdiff_operator import kube, metrics, netpol, podsecurity, reasons, settings
from asyncdiff_operator.api import GROUP, PLURAL, VERSION, AsyncDiffJobSpec, parse_spec
from asyncdiff_operator.children import (
    child_name,
    owner_reference,
    render_configmap,
    render_job,
    render_service,
    worker_job_spec,
)
from asyncdiff_operator.status import (
    Decision,
    Observation,
    decide,
    now_iso,
    parse_iso,
    set_condition,
)

SETTINGS = settings.from_env()
INTERVAL = SETTINGS.reconcile_interval


def _create_attempt(body: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int) -> None:
    namespace = body["metadata"]["namespace"]
    if spec.run_policy.num_nodes > 1:
        kube.create_if_absent("Service", namespace, render_service(body))
    if SETTINGS.network_policy is not None:
        endpoint = worker_job_spec(spec, SETTINGS.s3).output.endpoint_url
        policy = netpol.render_network_policy(body, SETTINGS.network_policy, endpoint, owner_reference(body))
        kube.create_if_absent("NetworkPolicy", namespace, policy)
    kube.create_if_absent("ConfigMap", namespace, render_configmap(body, spec, attempt, SETTINGS))
    if kube.create_if_absent("Job", namespace, render_job(body, spec, attempt, SETTINGS)) and attempt == 1:
        created = parse_iso(body["metadata"].get("creationTimestamp"))
        if created is not None:
            metrics.child_created(time.time() - created)


def _invalid(status: dict[str, Any], exc: ValidationError, generation: int) -> dict[str, Any]:
    message = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    conds = set_condition(
        list(status.get("conditions") or []), reasons.COND_FAILED, True, reasons.INVALID_SPEC, message, generation
    )
    return {
        "phase": reasons.FAILED,
        "conditions": conds,
        "completionTime": now_iso(),
        "lastFailure": {"reason": reasons.INVALID_SPEC, "message": message[:2048]},
    }


def _pod_security_refused(status: dict[str, Any], found: list[str], generation: int) -> dict[str, Any]:
    """spec.pod asks for a pod outside the restricted standard and the operator does not allow it: a user error."""
    message = podsecurity.refusal_message(found)
    reason = reasons.POD_SECURITY_REFUSED
    conds = set_condition(list(status.get("conditions") or []), reasons.COND_FAILED, True, reason, message, generation)
    return {
        "phase": reasons.FAILED,
        "conditions": conds,
        "completionTime": now_iso(),
        "lastFailure": {"reason": reason, "message": message[:2048]},
    }


def _expired(status: dict[str, Any], ttl: int | None) -> bool:
    done = parse_iso(status.get("completionTime"))
    return ttl is not None and done is not None and time.time() >= done + ttl


def _finished(body: kopf.Body, status: dict[str, Any], logger: kopf.Logger) -> None:
    """A terminal job: nothing is created again; only the TTL is watched."""
    meta = body["metadata"]
    ttl = ((body.get("spec") or {}).get("runPolicy") or {}).get("ttlSecondsAfterFinished")
    if _expired(status, ttl):
        logger.info(f"ttlSecondsAfterFinished ({ttl} s) expired: deleting the job (children by garbage collection)")
        kopf.event(body, type="Normal", reason=reasons.TTL_EXPIRED, message=f"deleted {ttl} s after finishing")
        kube.delete_cr(meta["namespace"], meta["name"])


def _apply(body: kopf.Body, spec: AsyncDiffJobSpec, decision: Decision, logger: kopf.Logger) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if decision.delete_attempt is not None and kube.delete_children(namespace, name, decision.delete_attempt):
        logger.info(f"deleted the Job of attempt {decision.delete_attempt}")
    if decision.create_attempt is not None:
        _create_attempt(dict(body), spec, decision.create_attempt)
        decision.status["child"] = child_name(name, decision.create_attempt)
    for etype, reason, message in decision.events:
        kopf.event(body, type=etype, reason=reason, message=message)
    if decision.retried:
        metrics.retried(decision.retried)


def reconcile(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    """One level-based pass over one AsyncDiffJob."""
    status: dict[str, Any] = dict(body.get("status") or {})
    meta = body["metadata"]
    uid = str(meta.get("uid"))
    generation = int(meta.get("generation") or 1)
    phase = status.get("phase")
    metrics.track(uid, phase)
    if phase in reasons.TERMINAL_PHASES:
        _finished(body, status, logger)
        return
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except ValidationError as exc:
        patch.status.update(_invalid(status, exc, generation))
        kopf.event(body, type="Warning", reason=reasons.INVALID_SPEC, message=patch.status["lastFailure"]["message"])
        return
    refused = [] if SETTINGS.allow_privileged_pods else podsecurity.refusals(spec.pod)
    if refused:
        patch.status.update(_pod_security_refused(status, refused, generation))
        kopf.event(
            body, type="Warning", reason=reasons.POD_SECURITY_REFUSED, message=patch.status["lastFailure"]["message"]
        )
        return
    policy = spec.run_policy
    attempts = int(status.get("attempts") or 0)
    observe = attempts > 0 and not policy.suspend and phase != reasons.SUSPENDED
    obs = kube.observe(meta["namespace"], meta["name"], attempts, policy.num_nodes) if observe else Observation()
    window = float(policy.stall_timeout_seconds or SETTINGS.stall_seconds)
    decision = decide(status, obs, policy, generation, stall_seconds=window)
    _apply(body, spec, decision, logger)
    if not decision.status:
        return
    decision.status.setdefault("devices", spec.devices)
    decision.status["observedGeneration"] = generation
    new_phase = decision.status.get("phase")
    if new_phase and new_phase != phase:
        logger.info(f"phase {phase} -> {new_phase}")
        metrics.transition(str(new_phase))
        metrics.track(uid, str(new_phase))
        if new_phase in reasons.TERMINAL_PHASES:
            created = parse_iso(meta.get("creationTimestamp"))
            metrics.finished(str(new_phase), time.time() - created if created else 0.0)
    patch.status.update(decision.status)


@kopf.on.create(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
def on_create(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    reconcile(body, patch, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL)  # type: ignore[arg-type]
def on_timer(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    reconcile(body, patch, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)  # type: ignore[arg-type]
def on_delete(body: kopf.Body, **_: Any) -> None:
    """Children go by garbage collection (owner references); outputs in storage are kept."""
    metrics.forget(str(body["metadata"].get("uid")))


@kopf.on.probe(id="jobs")  # type: ignore[arg-type]
def probe_jobs(**_: Any) -> int:
    """The liveness answer includes how many jobs this process tracks."""
    return len(metrics._phases)
