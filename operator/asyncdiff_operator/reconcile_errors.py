"""What a failed reconcile tells the user: a Kubernetes Event on the AsyncDiffJob and the ``Reconciled`` condition.

Why: an exception in a handler used to reach only the operator's log, and kopf then paused that job for its default
60 s; the user saw a job ``Pending`` or ``Running`` with no reason. Every reconcile now runs under ``guarded``
(``handlers.py``): an error becomes condition ``Reconciled=False`` with a CamelCase reason and the message (with
how many reconciles in a row failed), a Warning Event when the error is new (and again every ``REPEAT_EVENT_EVERY``
failures, so a stuck job keeps showing up in ``kubectl describe``), and the next timer tick simply tries again. The
first successful reconcile after errors sets ``Reconciled=True``.

One error is permanent: the API server refusing a child as invalid (422). The rendered children are a pure function
of the spec, so retrying cannot help; the job fails with reason ChildRejected and the server's message.
"""

from __future__ import annotations

import json
from typing import Any, Final

from kubernetes.client.exceptions import ApiException

from asyncdiff_operator import reasons
from asyncdiff_operator.status import now_iso, set_condition

REPEAT_EVENT_EVERY: Final = 30
"""Repeat the Warning Event of an error that persists every this many failed reconciles."""


class ChildRejected(Exception):
    """The API server refused to create a child as invalid (HTTP 422)."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(f"the API server refused {kind} {name}: {message}")
        self.kind, self.name, self.message = kind, name, message


def api_message(exc: ApiException) -> str:
    """The Status message of an API error (the body's ``message``), else its HTTP reason."""
    try:
        message = json.loads(exc.body or "").get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return str(message or exc.reason or exc)


def describe(exc: BaseException) -> tuple[str, str]:
    """(reason, message) of a reconcile error."""
    if isinstance(exc, ChildRejected):
        return reasons.CHILD_REJECTED, str(exc)
    if isinstance(exc, ApiException):
        return reasons.API_ERROR, f"API server answered {exc.status}: {api_message(exc)}"
    return reasons.RECONCILE_ERROR, f"{type(exc).__name__}: {exc}"


def error_status(status: dict[str, Any], reason: str, message: str, failures: int, generation: int) -> dict[str, Any]:
    """The status patch for the ``failures``-th reconcile in a row that raised."""
    text = f"{message} ({failures} reconciles in a row failed; retrying)" if failures > 1 else f"{message} (retrying)"
    conds = list(status.get("conditions") or [])
    return {"conditions": set_condition(conds, reasons.COND_RECONCILED, False, reason, text, generation)}


def rejected_status(status: dict[str, Any], exc: ChildRejected, generation: int) -> dict[str, Any]:
    """A child refused as invalid fails the job (retrying renders the same child again)."""
    message = str(exc)[:2048]
    conds = list(status.get("conditions") or [])
    conds = set_condition(conds, reasons.COND_RECONCILED, False, reasons.CHILD_REJECTED, message, generation)
    conds = set_condition(conds, reasons.COND_RUNNING, False, reasons.CHILD_REJECTED, message, generation)
    conds = set_condition(conds, reasons.COND_FAILED, True, reasons.CHILD_REJECTED, message, generation)
    return {
        "phase": reasons.FAILED,
        "conditions": conds,
        "completionTime": now_iso(),
        "lastFailure": {"reason": reasons.CHILD_REJECTED, "message": message},
    }


def recovered_status(status: dict[str, Any], generation: int) -> dict[str, Any] | None:
    """After errors, the first reconcile that worked sets ``Reconciled=True``; None when nothing to change."""
    current = next((c for c in status.get("conditions") or [] if c.get("type") == reasons.COND_RECONCILED), None)
    if current is None or current.get("status") == "True":
        return None
    conds = set_condition(
        list(status.get("conditions") or []),
        reasons.COND_RECONCILED,
        True,
        reasons.RECONCILED,
        "the last reconcile succeeded",
        generation,
    )
    return {"conditions": conds}


def should_post(failures: int, previous_message: str | None, message: str) -> bool:
    """Post an Event for a new error, and every REPEAT_EVENT_EVERY failures of the same one."""
    return previous_message != message or failures % REPEAT_EVENT_EVERY == 0
