"""kopf handlers of AsyncDiffJob: create the first attempt at once, then reconcile by level on a short timer.

Why a timer and not only events: the state that matters (the child's pod, its exit code, its log) lives in other
objects; reading it every interval makes the operator level-based, so a restart or a missed watch event loses
nothing. Each tick is idempotent: children have deterministic names and a 409 means "already there".
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import kopf
from pydantic import ValidationError

from asyncdiff_operator import kube, reasons
from asyncdiff_operator.api import GROUP, PLURAL, VERSION, AsyncDiffJobSpec, parse_spec
from asyncdiff_operator.children import child_name, render_configmap, render_job
from asyncdiff_operator.status import Decision, Observation, decide, now_iso, set_condition

INTERVAL = float(os.environ.get("ASYNCDIFF_RECONCILE_INTERVAL", "1.0"))


def _create_attempt(body: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int) -> None:
    namespace = body["metadata"]["namespace"]
    kube.create_if_absent("ConfigMap", namespace, render_configmap(body, spec, attempt))
    kube.create_if_absent("Job", namespace, render_job(body, spec, attempt))


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


def _expired(status: dict[str, Any], ttl: int | None) -> bool:
    done = status.get("completionTime")
    if ttl is None or not done:
        return False
    finished = datetime.datetime.strptime(done, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return datetime.datetime.now(datetime.UTC) >= finished + datetime.timedelta(seconds=ttl)


def reconcile(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    """One level-based pass over one AsyncDiffJob."""
    status: dict[str, Any] = dict(body.get("status") or {})
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    raw = dict(body)
    if status.get("phase") in reasons.TERMINAL_PHASES:
        ttl = (body.get("spec") or {}).get("runPolicy", {}).get("ttlSecondsAfterFinished")
        if _expired(status, ttl):
            logger.info("TTL after finished expired: deleting")
            kopf.info(body, reason="Deleted", message="ttlSecondsAfterFinished expired")
            from kubernetes import client

            client.CustomObjectsApi(kube.api_client()).delete_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"]
            )
        return
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except ValidationError as exc:
        patch.status.update(_invalid(status, exc, generation))
        return
    attempts = int(status.get("attempts") or 0)
    obs = kube.observe(meta["namespace"], meta["name"], attempts) if attempts else Observation()
    decision: Decision = decide(status, obs, spec.run_policy.backoff_limit, generation)
    if decision.create_attempt is not None:
        _create_attempt(raw, spec, decision.create_attempt)
        decision.status["child"] = child_name(meta["name"], decision.create_attempt)
        kopf.info(body, reason="AttemptCreated", message=f"attempt {decision.create_attempt}")
    if decision.status:
        decision.status.setdefault("devices", spec.devices)
        decision.status["observedGeneration"] = generation
        new_phase = decision.status.get("phase")
        if new_phase and new_phase != status.get("phase"):
            logger.info(f"phase {status.get('phase')} -> {new_phase}")
            kopf.info(body, reason=str(new_phase), message=f"phase {new_phase}")
        patch.status.update(decision.status)


@kopf.on.create(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
def on_create(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    reconcile(body, patch, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL)  # type: ignore[arg-type]
def on_timer(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    reconcile(body, patch, logger)
