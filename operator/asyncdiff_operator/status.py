"""Pure status logic: from what the child Job and pods show to the CR's next status and the operator's next actions.

Why pure: the failure policy is the operator's most important behaviour, and a pure function of (status, spec's
run policy, observation, clock) is unit-tested without a cluster and gives the same answer on every reconcile
(level-based: running it twice changes nothing, and children have deterministic names).

The policy, in order:
- Terminal phases (Succeeded, Failed) are absorbing: nothing is created again.
- ``suspend``: like batch/v1 Job suspension, on the same child Job: its ``spec.suspend`` is set (the Job controller
  deletes the pods, releasing the GPUs, without counting them as failures) and the phase is Suspended; resuming
  sets it back on the same Job (no new attempt) and restarts the deadline clock (``startTime``), as the Job
  controller does. A job created suspended gets its first Job created suspended. The child's ``spec.suspend`` is
  only written when the CR's suspend changes, so a queue (Kueue) that suspends the child is not overridden; while
  the child Job says Suspended the attempt waits (Pending, reason ChildSuspended).
- Success of every pod wins over a deadline that expired in the same tick.
- ``activeDeadlineSeconds`` (from ``startTime``): Failed, reason DeadlineExceeded, children deleted.
- Disruptions (eviction, preemption: pod reason Evicted/Preempted or a ``DisruptionTarget`` condition) never
  count: the Job controller replaces the pod (podFailurePolicy Ignore), or a new attempt is made if the Job failed.
- Stall: a running attempt whose progress stalls (``ts - lastProgressTs`` of the last progress line, or no line at
  all, for longer than the window) is failed with reason Stalled, its Job deleted, and retried like an
  infrastructure failure.
- A Pending pod's own reason (scheduling failure, mount failure, image pull failure, from its conditions, container
  states or Warning events) is the Running condition's reason, with an Event when it changes; an attempt with a pod
  Pending longer than the pending timeout fails with that reason (PendingTimeout when the pod gave none); a pod held
  by a scheduling gate (a queue) is never timed out.
- Worker user errors (exit 10-19) fail at once; other failures are retried while ``failedAttempts <=
  backoffLimit``.
- A child Job that vanished while the CR is active is re-created under the same attempt name.
- The child Job's own status is authoritative when no pod is left to inspect (a pod deleted, evicted and removed,
  or garbage-collected): a Failed Job is a failed attempt (a disruption when the Job says a ``DisruptionTarget``
  failed it, else an infrastructure failure, reason ChildJobFailed, retried under the policy); a Complete one
  succeeded (outputs: the result manifest at its fixed place, ``status.manifest``).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any

from asyncdiff_worker.exit_codes import USER_ERROR_CODES, reason_for

from asyncdiff_operator import reasons
from asyncdiff_operator.api import RunPolicy

DEFAULT_STALL_SECONDS = 600.0
DEFAULT_PENDING_TIMEOUT = 600.0
QUEUED_REASONS = frozenset({"SchedulingGated"})
"""Pending reasons that mean "waiting in a queue" (a scheduling gate held by e.g. Kueue): shown, never timed out."""


def now_iso(ts: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(time.time() if ts is None else ts, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Observation:
    """What the operator saw of the current attempt (all its pods folded into one view)."""

    pod_phase: str | None = None  # None: no pod yet; else the attempt's phase (Pending/Running/Succeeded/Failed)
    exit_code: int | None = None  # set once the attempt ended (0 only when every pod succeeded)
    message: str = ""
    event: dict[str, Any] | None = None  # the last progress line of rank 0's pod
    job_found: bool = True  # False: the child Job does not exist
    job_failed: bool = False  # the child Job has its Failed condition
    job_reason: str = ""  # the reason of the child Job's Failed condition (BackoffLimitExceeded, ...)
    job_complete: bool = False  # the child Job is Complete but no pod is left (outputs unknown)
    job_suspended: bool = False  # the child Job has its Suspended condition (by us or a queue such as Kueue)
    disrupted: bool = False  # a pod was evicted or preempted (DisruptionTarget)
    running_since: float | None = None  # when rank 0's container started (Unix time)
    active: int = 0  # pods not yet finished
    pending_reason: str = ""  # why a pod of the attempt is Pending: Unschedulable, FailedMount, ImagePullBackOff...
    pending_message: str = ""  # the pod's own message for it (condition, container state or Warning event)
    pending_since: float | None = None  # creation time of the attempt's oldest Pending pod (Unix time)


@dataclass
class Decision:
    status: dict[str, Any] = field(default_factory=dict)
    create_attempt: int | None = None
    delete_attempt: int | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type Normal/Warning, reason, message)
    retried: str | None = None  # the reason of a retry, for metrics
    suspend_child: bool | None = None  # set the current attempt's Job spec.suspend to this (None: leave it)


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
    out: dict[str, Any] = {"outputsDone": done, "outputsTotal": total, "step": step, "steps": steps}
    out["summary"] = f"{done}/{total}"
    if isinstance(event.get("lastProgressTs"), int | float):
        out["lastProgressTs"] = float(event["lastProgressTs"])
    return out


def stall_of(obs: Observation, now: float, window: float) -> str | None:
    """Why a running attempt counts as stalled, or None."""
    if obs.pod_phase != "Running" or obs.exit_code is not None:
        return None
    event = obs.event
    if event is None:
        if obs.running_since is not None and now - obs.running_since > window:
            return f"no progress line for {now - obs.running_since:.0f} s after the worker started"
        return None
    ts = float(event.get("ts") or 0.0)
    last = float(event.get("lastProgressTs") or ts)
    if ts - last > window:
        return f"no progress for {ts - last:.0f} s (heartbeats continue: a hung collective?)"
    if now - ts > window:
        return f"no log line for {now - ts:.0f} s"
    return None


class _Ctx:
    """The pieces every branch of ``decide`` needs."""

    def __init__(self, status: dict[str, Any], generation: int, now: float) -> None:
        self.status = status
        self.generation = generation
        self.now = now
        self.attempts = int(status.get("attempts") or 0)
        self.failed = int(status.get("failedAttempts") or 0)
        self.conds = list(status.get("conditions") or [])

    def cond(self, ctype: str, value: bool, reason: str, message: str = "") -> None:
        self.conds = set_condition(self.conds, ctype, value, reason, message, self.generation)


def _new_attempt(ctx: _Ctx, out: dict[str, Any], why: str) -> Decision:
    """A new attempt: Pending, and every condition about the previous attempt's pods replaced (Running is False
    until this attempt's pods run). Its events are posted only by the reconcile that really creates the Job."""
    attempt = ctx.attempts + 1
    out.update(phase=reasons.PENDING, attempts=attempt)
    ctx.cond(reasons.COND_CREATED, True, reasons.JOB_CREATED, f"attempt {attempt} created ({why})")
    ctx.cond(reasons.COND_RUNNING, False, reasons.POD_PENDING, f"attempt {attempt}: waiting for its pods")
    out["conditions"] = ctx.conds
    return Decision(out, create_attempt=attempt, events=[("Normal", reasons.JOB_CREATED, f"attempt {attempt} created")])


def _finish_failed(ctx: _Ctx, out: dict[str, Any], reason: str, message: str, obs: Observation) -> Decision:
    out.update(phase=reasons.FAILED, completionTime=now_iso(ctx.now))
    ctx.cond(reasons.COND_RUNNING, False, reason, message)
    ctx.cond(reasons.COND_FAILED, True, reason, message)
    out["conditions"] = ctx.conds
    delete = ctx.attempts if obs.active or reason in (reasons.DEADLINE_EXCEEDED, reasons.STALLED) else None
    return Decision(out, delete_attempt=delete, events=[("Warning", reason, message)])


def _failure(ctx: _Ctx, out: dict[str, Any], obs: Observation, policy: RunPolicy, reason: str, msg: str) -> Decision:
    """One failed attempt: retry it (an infrastructure failure under the limit) or fail the job."""
    code = obs.exit_code
    record: dict[str, Any] = {"reason": reason, "message": msg[:2048], "attempt": ctx.attempts}
    if code is not None:
        record["exitCode"] = code
    out["lastFailure"] = record
    user_error = code is not None and code in USER_ERROR_CODES
    failed = ctx.failed + 1
    out["failedAttempts"] = failed
    if not user_error and failed <= policy.backoff_limit:
        decision = _new_attempt(ctx, out, f"retry after {reason}")
        decision.delete_attempt = ctx.attempts if obs.active or reason == reasons.STALLED else None
        decision.events.append(("Warning", reasons.RETRYING, f"attempt {ctx.attempts} failed ({reason}): {msg}"))
        decision.retried = reason
        return decision
    final = reason if user_error else reasons.BACKOFF_LIMIT_EXCEEDED
    return _finish_failed(ctx, out, final, f"{reason}: {msg}" if final != reason else msg, obs)


def _suspend(ctx: _Ctx, out: dict[str, Any]) -> Decision:
    """Suspend the attempt's Job (the Job controller deletes its pods); a new job's first Job is created suspended."""
    out["phase"] = reasons.SUSPENDED
    ctx.cond(reasons.COND_SUSPENDED, True, reasons.SUSPENDED_REASON, "spec.runPolicy.suspend is true")
    ctx.cond(reasons.COND_RUNNING, False, reasons.SUSPENDED_REASON, "suspended")
    out["conditions"] = ctx.conds
    if ctx.attempts == 0:
        out["attempts"] = 1
    decision = Decision(out, create_attempt=1 if ctx.attempts == 0 else None, suspend_child=True)
    decision.events.append(("Normal", reasons.SUSPENDED_REASON, f"attempt {max(ctx.attempts, 1)} suspended"))
    return decision


def _resume(ctx: _Ctx, out: dict[str, Any]) -> Decision:
    """Resume the same Job; the deadline counts from now, as the Job controller resets a resumed Job's startTime."""
    out.update(phase=reasons.PENDING, startTime=now_iso(ctx.now))
    ctx.cond(reasons.COND_SUSPENDED, False, reasons.RESUMED, "spec.runPolicy.suspend is false")
    ctx.cond(reasons.COND_RUNNING, False, reasons.POD_PENDING, f"attempt {ctx.attempts} resumed: waiting for pods")
    out["conditions"] = ctx.conds
    return Decision(out, suspend_child=False, events=[("Normal", reasons.RESUMED, f"attempt {ctx.attempts} resumed")])


def _pending(ctx: _Ctx, out: dict[str, Any], obs: Observation, timeout: float) -> Decision:
    """An attempt with a Pending pod: its reason in the Running condition (and an Event when the reason changes);
    failed with that reason once it has waited longer than ``timeout`` (retrying would wait the same way)."""
    waited = ctx.now - (obs.pending_since or ctx.now)
    reason, detail = obs.pending_reason, obs.pending_message
    if waited > timeout and reason not in QUEUED_REASONS:
        final = reason or reasons.PENDING_TIMEOUT
        message = f"attempt {ctx.attempts}: a pod was Pending for {waited:.0f} s (pending timeout {timeout:.0f} s)"
        if detail:
            message += f": {detail}"
        out["lastFailure"] = {"reason": final, "message": message[:2048], "attempt": ctx.attempts}
        return _finish_failed(ctx, out, final, message, obs)
    if not reason:
        return Decision(out)
    before = next((c for c in ctx.conds if c.get("type") == reasons.COND_RUNNING), None)
    ctx.cond(reasons.COND_RUNNING, False, reason, detail)
    after = next(c for c in ctx.conds if c.get("type") == reasons.COND_RUNNING)
    if before is None or (before.get("reason"), before.get("message")) != (after["reason"], after["message"]):
        out.update(phase=reasons.PENDING, conditions=ctx.conds)
    events = []
    if before is None or before.get("reason") != reason:
        events.append(("Warning", reason, f"attempt {ctx.attempts}: {detail}"[:1024]))
    return Decision(out, events=events)


def decide(
    status: dict[str, Any],
    obs: Observation,
    policy: RunPolicy,
    generation: int,
    *,
    now: float | None = None,
    stall_seconds: float = DEFAULT_STALL_SECONDS,
    pending_timeout: float = DEFAULT_PENDING_TIMEOUT,
) -> Decision:
    """Next status (a patch of ``status``) and the children to create or delete."""
    phase = status.get("phase")
    if phase in reasons.TERMINAL_PHASES:
        return Decision()
    ctx = _Ctx(status, generation, time.time() if now is None else now)
    out: dict[str, Any] = {}
    if policy.suspend:
        return Decision() if phase == reasons.SUSPENDED else _suspend(ctx, out)
    if ctx.attempts == 0:
        out["startTime"] = now_iso(ctx.now)
        if phase == reasons.SUSPENDED:  # suspended at creation by an operator that created no Job then
            ctx.cond(reasons.COND_SUSPENDED, False, reasons.RESUMED, "spec.runPolicy.suspend is false")
        return _new_attempt(ctx, out, "new job")
    if phase == reasons.SUSPENDED:
        return _resume(ctx, out)
    progress = progress_of(obs.event)
    if progress is not None and progress != status.get("progress"):
        out["progress"] = progress
    if obs.exit_code == 0:
        event = obs.event or {}
        out.update(phase=reasons.SUCCEEDED, completionTime=now_iso(ctx.now))
        if event.get("asyncdiff") == "done":
            out["outputs"] = [str(u) for u in (event.get("outputs") or [])][:50]
            if event.get("manifest"):
                out["manifest"] = str(event["manifest"])
        ctx.cond(reasons.COND_RUNNING, False, reasons.JOB_SUCCEEDED, "")
        ctx.cond(reasons.COND_SUCCEEDED, True, reasons.JOB_SUCCEEDED, "")
        out["conditions"] = ctx.conds
        return Decision(out, events=[("Normal", reasons.JOB_SUCCEEDED, f"attempt {ctx.attempts} succeeded")])
    if obs.job_suspended:  # not by us (we only suspend with the CR): a queue such as Kueue holds it; no deadline
        ctx.cond(reasons.COND_RUNNING, False, reasons.CHILD_SUSPENDED, f"attempt {ctx.attempts}: the Job is suspended")
        if phase != reasons.PENDING or ctx.conds != ctx.status.get("conditions"):
            out.update(phase=reasons.PENDING, conditions=ctx.conds)
        return Decision(out)
    start = parse_iso(status.get("startTime"))
    deadline = policy.active_deadline_seconds
    if deadline is not None and start is not None and ctx.now - start >= deadline:
        msg = f"the job ran longer than activeDeadlineSeconds ({deadline} s)"
        out["lastFailure"] = {"reason": reasons.DEADLINE_EXCEEDED, "message": msg, "attempt": ctx.attempts}
        return _finish_failed(ctx, out, reasons.DEADLINE_EXCEEDED, msg, obs)
    if not obs.job_found:
        out["phase"] = reasons.PENDING
        ctx.cond(reasons.COND_RUNNING, False, reasons.CHILD_MISSING, f"attempt {ctx.attempts}: Job re-created")
        out["conditions"] = ctx.conds
        decision = Decision(out, create_attempt=ctx.attempts)
        decision.events.append(("Warning", reasons.CHILD_MISSING, f"Job of attempt {ctx.attempts} re-created"))
        return decision
    if obs.disrupted:
        if obs.job_failed:  # the Job gave up despite its podFailurePolicy: a new attempt, not counted
            decision = _new_attempt(ctx, out, "disruption")
            decision.delete_attempt = ctx.attempts if obs.active else None
            decision.events.append(("Warning", reasons.DISRUPTED, f"attempt {ctx.attempts} disrupted: {obs.message}"))
            decision.retried = reasons.DISRUPTED
            return decision
        if obs.exit_code is not None:  # the Job controller replaces the pod
            return Decision(out) if out else Decision()
    if obs.exit_code is not None:
        code = obs.exit_code
        return _failure(ctx, out, obs, policy, reason_for(code), obs.message.strip() or f"worker exited {code}")
    if obs.job_failed:  # the Job says it failed but no pod shows why (deleted, evicted and removed, collected)
        message = obs.message or f"the child Job failed ({obs.job_reason or 'no reason given'})"
        return _failure(ctx, out, obs, policy, reasons.CHILD_JOB_FAILED, message)
    stalled = stall_of(obs, ctx.now, stall_seconds)
    if stalled is not None:
        return _failure(ctx, out, obs, policy, reasons.STALLED, stalled)
    if obs.pending_since is not None:  # a pod of the attempt is Pending (rank 0 may run while another waits)
        return _pending(ctx, out, obs, pending_timeout)
    if obs.pod_phase == "Running" and phase != reasons.RUNNING:
        out["phase"] = reasons.RUNNING
        ctx.cond(reasons.COND_RUNNING, True, reasons.POD_RUNNING, f"attempt {ctx.attempts} running")
        out["conditions"] = ctx.conds
        return Decision(out, events=[("Normal", reasons.POD_RUNNING, f"attempt {ctx.attempts} running")])
    return Decision(out)
