"""kopf handlers of AsyncDiffJob: create the first attempt at once, then reconcile by level on a short timer.

Why a timer and not only events: the state that matters (the child Job, its pods, their exit codes and logs, the
clock for deadlines and stalls) lives outside the CR; reading it every interval makes the operator level-based, so a
restart or a missed watch event loses nothing. Each tick is idempotent: children have deterministic names, a 409
means "already there", and the status patch holds absolute values computed from the stored status. Children are
deleted *before* the status patch that records why, so a crash in between is repaired by the next tick. Every pass
runs under ``guarded``: an error is a ``Reconciled=False`` condition and a Warning Event (``reconcile_errors``) and
the next tick retries, instead of kopf pausing the job for 60 s with nothing but a log line.

Settings from the environment (``settings.py``, parsed once when this module is imported, so a bad value stops the
operator at start-up): ``ASYNCDIFF_RECONCILE_INTERVAL`` (seconds, default 1), ``ASYNCDIFF_STALL_SECONDS`` (progress
stall window, default 600), ``ASYNCDIFF_PENDING_TIMEOUT_SECONDS`` (how long a pod may stay Pending, default 600),
and the operator-wide job defaults that ``children.py`` applies (worker image, pull
policy and pod defaults, S3 endpoint settings and credentials Secret).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError

from asyncdiff_operator import kube, metrics, netpol, podsecurity, reasons, reconcile_errors, settings
from asyncdiff_operator.api import GROUP, PLURAL, VERSION, AsyncDiffJobSpec, parse_spec
from asyncdiff_operator.children import (
    LABEL_JOB,
    child_name,
    manifest_uri,
    name_problem,
    output_location,
    owner_reference,
    render_configmap,
    render_job,
    render_service,
    worker_job_spec,
)
from asyncdiff_operator.layout import planned, running_layout
from asyncdiff_operator.shard_kube import forget as forget_sampling
from asyncdiff_operator.shard_kube import job_snapshot
from asyncdiff_operator.shard_reconcile import reconcile_sharded, use_index
from asyncdiff_operator.status import (
    Decision,
    Observation,
    decide,
    now_iso,
    parse_iso,
    set_condition,
)

SETTINGS = settings.from_env()
LOG = logging.getLogger("asyncdiff_operator")
INTERVAL = SETTINGS.reconcile_interval


def _create_attempt(body: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int, suspend: bool = False) -> bool:
    """Create the attempt's children; True when this call created its Job (False: an earlier reconcile did)."""
    namespace = body["metadata"]["namespace"]
    if spec.run_policy.num_nodes > 1:
        kube.create_if_absent("Service", namespace, render_service(body))
    if SETTINGS.network_policy is not None:
        endpoint = worker_job_spec(spec, SETTINGS.s3).output.endpoint_url
        policy = netpol.render_network_policy(body, SETTINGS.network_policy, endpoint, owner_reference(body))
        kube.create_if_absent("NetworkPolicy", namespace, policy)
    kube.create_if_absent("ConfigMap", namespace, render_configmap(body, spec, attempt, SETTINGS))
    if not kube.create_if_absent("Job", namespace, render_job(body, spec, attempt, SETTINGS, suspend=suspend)):
        return False
    created = parse_iso(body["metadata"].get("creationTimestamp"))
    if attempt == 1 and created is not None:
        metrics.child_created(time.time() - created)
    return True


def _invalid(status: dict[str, Any], exc: ValidationError | str, generation: int) -> dict[str, Any]:
    if isinstance(exc, str):
        message = exc
    else:
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
        decision.status["child"] = child_name(name, decision.create_attempt)
        suspended = bool(decision.suspend_child)
        if not _create_attempt(dict(body), spec, decision.create_attempt, suspend=suspended):
            # The Job exists: an earlier reconcile (the create handler and the first timer tick may both read the
            # CR before either status patch lands) made this same decision and posted its events.
            return
    elif decision.suspend_child is not None:
        attempt = int(body.get("status", {}).get("attempts") or 0)
        if not kube.set_suspend(namespace, child_name(name, attempt), decision.suspend_child):
            return  # already so: an earlier reconcile did it and posted the event (or the Job is gone: re-created)
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
    bad_name = name_problem(meta["name"], spec.run_policy.num_nodes)
    if bad_name is not None:  # a CRD older than the CEL rule on metadata.name let it in; fail instead of a 422 loop
        patch.status.update(_invalid(status, bad_name, generation))
        kopf.event(body, type="Warning", reason=reasons.INVALID_SPEC, message=bad_name)
        return
    refused = [] if SETTINGS.allow_privileged_pods else podsecurity.refusals(spec.pod)
    if refused:
        patch.status.update(_pod_security_refused(status, refused, generation))
        kopf.event(
            body, type="Warning", reason=reasons.POD_SECURITY_REFUSED, message=patch.status["lastFailure"]["message"]
        )
        return
    policy = spec.run_policy
    window = float(policy.stall_timeout_seconds or SETTINGS.stall_seconds)
    if policy.num_nodes == 1:  # shards of an Indexed Job (shard_reconcile.py)
        try:
            planned(spec, running_layout(status))
        except ValueError as exc:  # the planner cannot cut spec.parallelism.devices into a layout: say why, once
            patch.status.update(_invalid(status, str(exc), generation))
            kopf.event(body, type="Warning", reason=reasons.INVALID_SPEC, message=str(exc)[:1024])
            return
        changes = reconcile_sharded(
            body,
            spec,
            status,
            generation,
            create_attempt=_create_attempt,
            stall_seconds=window,
            progress_interval=SETTINGS.progress_interval,
            pending_timeout=SETTINGS.pending_timeout,
            logger=logger,
        )
        if changes.get("child") or "output" not in status:
            changes["output"] = output_location(spec, SETTINGS)
        _write_status(body, patch, logger, status, changes, generation, spec.devices_per_group)
        return
    attempts = int(status.get("attempts") or 0)
    observe = attempts > 0 and not policy.suspend and phase != reasons.SUSPENDED
    obs = kube.observe(meta["namespace"], meta["name"], attempts, policy.num_nodes) if observe else Observation()
    decision = decide(status, obs, policy, generation, stall_seconds=window, pending_timeout=SETTINGS.pending_timeout)
    _apply(body, spec, decision, logger)
    if decision.create_attempt is not None or "output" not in status:
        decision.status["output"] = output_location(spec, SETTINGS)
    if decision.status.get("phase") == reasons.SUCCEEDED and not decision.status.get("manifest"):
        # Succeeded without a pod to read (the Job is Complete, its pods are gone): the manifest's fixed place.
        output = decision.status.get("output") or status.get("output") or {}
        decision.status["manifest"] = manifest_uri(meta["name"], str(output.get("uri") or spec.output.uri))
    _write_status(body, patch, logger, status, decision.status, generation, spec.devices_per_group)


def _write_status(
    body: kopf.Body,
    patch: kopf.Patch,
    logger: kopf.Logger,
    status: dict[str, Any],
    changes: dict[str, Any],
    generation: int,
    devices: int,
) -> None:
    """Patch the status with ``changes`` (nothing when empty), with metrics for a phase transition."""
    if not changes:
        return
    meta = body["metadata"]
    uid = str(meta.get("uid"))
    phase = status.get("phase")
    changes.setdefault("devices", devices)
    changes["observedGeneration"] = generation
    new_phase = changes.get("phase")
    if new_phase and new_phase != phase:
        logger.info(f"phase {phase} -> {new_phase}")
        metrics.transition(str(new_phase))
        metrics.track(uid, str(new_phase))
        if new_phase in reasons.TERMINAL_PHASES:
            created = parse_iso(meta.get("creationTimestamp"))
            metrics.finished(str(new_phase), time.time() - created if created else 0.0)
    patch.status.update(changes)


ERROR_BACKOFF = min(5.0, max(1.0, INTERVAL))
"""Seconds before kopf re-runs a handler that still raised (kopf's default is 60 s); ``guarded`` catches reconcile
errors itself, so this only covers failures outside it (e.g. the status patch)."""
_errors: dict[str, tuple[int, str]] = {}  # uid -> (reconciles in a row that failed, the last error's message)


def guarded(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    """``reconcile``, with every error made visible (``reconcile_errors``): a condition, an Event, and the next tick
    retries. A child refused as invalid fails the job."""
    meta = body["metadata"]
    uid = str(meta.get("uid"))
    status: dict[str, Any] = dict(body.get("status") or {})
    generation = int(meta.get("generation") or 1)
    try:
        reconcile(body, patch, logger)
    except Exception as exc:  # surfaced as a condition and an Event; the next tick retries
        reason, message = reconcile_errors.describe(exc)
        count, previous = _errors.get(uid, (0, None))
        count += 1
        _errors[uid] = (count, message)
        # Not kopf's object logger: at WARNING and above it posts every line as an Event (main.py), one per tick.
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        LOG.error(f"{where}: reconcile failed ({count} in a row): {reason}: {message}")
        metrics.reconcile_error(reason)
        if isinstance(exc, reconcile_errors.ChildRejected):
            patch.status.update(reconcile_errors.rejected_status(status, exc, generation))
            kopf.event(body, type="Warning", reason=reason, message=message[:1024])
            return
        patch.status.update(reconcile_errors.error_status(status, reason, message, count, generation))
        if reconcile_errors.should_post(count, previous, message):
            kopf.event(body, type="Warning", reason=reason, message=message[:1024])
        return
    if _errors.pop(uid, None) is not None or any(
        c.get("type") == reasons.COND_RECONCILED for c in status.get("conditions") or []
    ):
        recovered = reconcile_errors.recovered_status({**status, **dict(patch.status)}, generation)
        if recovered is not None:
            patch.status.update(recovered)


@kopf.on.create(GROUP, VERSION, PLURAL, backoff=ERROR_BACKOFF)  # type: ignore[arg-type]
def on_create(
    body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, child_jobs: kopf.Index[Any, Any], **_: Any
) -> None:
    use_index(child_jobs)
    guarded(body, patch, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, backoff=ERROR_BACKOFF)  # type: ignore[arg-type]
def on_timer(
    body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, child_jobs: kopf.Index[Any, Any], **_: Any
) -> None:
    use_index(child_jobs)
    guarded(body, patch, logger)


@kopf.index("batch", "v1", "jobs", labels={LABEL_JOB: kopf.PRESENT})  # type: ignore[arg-type]
def child_jobs(
    namespace: str | None, name: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str | None, str | None], dict[str, Any]]:
    """Our child Jobs' spec and status, kept current by one watch: sharded jobs read them here instead of one GET
    per job per tick (``shard_kube.py``)."""
    return {(namespace, name): job_snapshot(dict(spec), dict(status))}


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)  # type: ignore[arg-type]
def on_delete(body: kopf.Body, **_: Any) -> None:
    """Children go by garbage collection (owner references); outputs in storage are kept."""
    metrics.forget(str(body["metadata"].get("uid")))
    forget_sampling(str(body["metadata"].get("uid")))
    _errors.pop(str(body["metadata"].get("uid")), None)


@kopf.on.probe(id="jobs")  # type: ignore[arg-type]
def probe_jobs(**_: Any) -> int:
    """The liveness answer includes how many jobs this process tracks."""
    return len(metrics._phases)
