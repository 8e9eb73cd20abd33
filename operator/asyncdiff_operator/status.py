"""Pure status logic: from what the child pod shows to the CR's next status and the operator's next action.

Why pure: the failure policy (user errors fail at once, others retry up to backoffLimit, terminal phases absorbing)
is the operator's most important behaviour, and a pure function of (status, observation) is unit-tested without a
cluster and is the same on every reconcile (level-based: running it twice changes nothing).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from asyncdiff_worker.exit_codes import USER_ERROR_CODES, reason_for

from asyncdiff_operator import reasons


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Observation:
    """What the operator saw of the current attempt's pod."""

    pod_phase: str | None = None  # None: no pod yet
    exit_code: int | None = None  # set once the container terminated
    message: str = ""
    event: dict[str, Any] | None = None  # the last progress line


@dataclass
class Decision:
    status: dict[str, Any] = field(default_factory=dict)
    create_attempt: int | None = None


def set_condition(
    conditions: list[dict[str, Any]], ctype: str, status: bool, reason: str, message: str, generation: int
) -> list[dict[str, Any]]:
    """metav1.Condition upsert; lastTransitionTime only moves when status changes."""
    value = "True" if status else "False"
    out = [dict(c) for c in conditions if c.get("type") != ctype]
    old = next((c for c in conditions if c.get("type") == ctype), None)
    changed = old is None or old.get("status") != value
    out.append(
        {
            "type": ctype,
            "status": value,
            "reason": reason,
            "message": message[:1024],
            "observedGeneration": generation,
            "lastTransitionTime": now_iso() if changed or old is None else old.get("lastTransitionTime", now_iso()),
        }
    )
    return out


def progress_of(event: dict[str, Any] | None) -> dict[str, Any] | None:
    if not event:
        return None
    done, total = int(event.get("outputsDone") or 0), int(event.get("outputsTotal") or 0)
    step, steps = int(event.get("step") or 0), int(event.get("steps") or 0)
    return {
        "outputsDone": done,
        "outputsTotal": total,
        "step": step,
        "steps": steps,
        "summary": f"{done}/{total}",
        "lastProgressTs": event.get("lastProgressTs"),
    }


def decide(status: dict[str, Any], obs: Observation, backoff_limit: int, generation: int) -> Decision:
    """Next status (a patch of ``status``) and whether to create the next attempt."""
    phase = status.get("phase")
    if phase in reasons.TERMINAL_PHASES:
        return Decision()
    attempts = int(status.get("attempts") or 0)
    conds = list(status.get("conditions") or [])
    if attempts == 0:
        conds = set_condition(conds, reasons.COND_CREATED, True, reasons.JOB_CREATED, "attempt 1 created", generation)
        return Decision({"phase": reasons.PENDING, "attempts": 1, "conditions": conds}, create_attempt=1)
    out: dict[str, Any] = {}
    progress = progress_of(obs.event)
    if progress is not None:
        out["progress"] = progress
    if obs.exit_code is None:
        if obs.pod_phase == "Running":
            out["phase"] = reasons.RUNNING
            if not status.get("startTime"):
                out["startTime"] = now_iso()
            if phase != reasons.RUNNING:
                conds = set_condition(conds, reasons.COND_RUNNING, True, reasons.POD_RUNNING, "", generation)
                out["conditions"] = conds
        return Decision(out)
    code = obs.exit_code
    if code == 0:
        event = obs.event or {}
        out.update(phase=reasons.SUCCEEDED, completionTime=now_iso())
        if event.get("asyncdiff") == "done":
            out["outputs"] = list(event.get("outputs") or [])[:50]
            out["manifest"] = event.get("manifest")
        conds = set_condition(conds, reasons.COND_RUNNING, False, reasons.JOB_SUCCEEDED, "", generation)
        out["conditions"] = set_condition(conds, reasons.COND_SUCCEEDED, True, reasons.JOB_SUCCEEDED, "", generation)
        return Decision(out)
    reason = reason_for(code)
    message = obs.message.strip() or f"worker exited with code {code}"
    out["lastFailure"] = {"reason": reason, "message": message[:2048], "exitCode": code, "attempt": attempts}
    if code not in USER_ERROR_CODES and attempts < backoff_limit + 1:
        out.update(phase=reasons.PENDING, attempts=attempts + 1)
        out["conditions"] = set_condition(
            conds, reasons.COND_RUNNING, False, reasons.RETRYING, f"attempt {attempts}: {message}", generation
        )
        return Decision(out, create_attempt=attempts + 1)
    final = reason if code in USER_ERROR_CODES else reasons.BACKOFF_LIMIT_EXCEEDED
    out.update(phase=reasons.FAILED, completionTime=now_iso())
    conds = set_condition(conds, reasons.COND_RUNNING, False, final, message, generation)
    out["conditions"] = set_condition(conds, reasons.COND_FAILED, True, final, message, generation)
    return Decision(out)
