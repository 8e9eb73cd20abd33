"""Pure status logic of a sharded job: one Indexed Job whose indexes are shards, retried per index by Kubernetes.

Why a second decision function next to ``status.decide``: a single-node job is one Indexed Job (completions = shards,
parallelism = groups) whose failure handling belongs to the Job controller, not to the operator: the podFailurePolicy
fails the whole Job on a user error (``FailJob``), never counts a disruption or an interrupted pod (``Ignore``), and
counts every other failure against its own shard's ``backoffLimitPerIndex`` (a failed shard is retried alone while
the others keep going). So this function mostly *reads* the child Job's status and translates it:

- Job ``Complete`` -> Succeeded (the worker's last finisher wrote the manifest, its commit marker, before exiting 0).
- Job ``Failed``: reason ``PodFailurePolicy`` -> the worker's user-error reason (never retried); ``FailedIndexes`` /
  ``MaxFailedIndexesExceeded`` -> BackoffLimitExceeded (a shard used up its retries); ``DeadlineExceeded``.
- The child Job suspended while the CR is not: Kueue has not admitted it yet -> phase Queued; the deadline clock
  (``status.startTime``) starts at admission, not at creation. Resuming a Kueue job (``runPolicy.suspend`` back to
  false) never unsuspends its Job: that would bypass the queue's quota; the job waits Queued for Kueue to admit it.
- New pod failures (``status.failed`` of the Job grew) -> ``lastFailure`` and a Retrying event, once each.
- A stalled running shard (its sampled progress line stale) -> that pod is deleted (the Job controller replaces it;
  the shard resumes from its stored outputs) and counted in ``status.stalls`` against backoffLimit.
- ``spec.parallelism.replicas`` changed -> the child Job's ``parallelism`` is patched (finished shards stay finished,
  running pods keep running when scaling up).

Lifecycle (a new job, suspend and resume, a terminal phase) is ``status.decide``'s, shared with multi-node jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from asyncdiff_worker.exit_codes import USER_ERROR_CODES, reason_for

from asyncdiff_operator import reasons
from asyncdiff_operator.api import RunPolicy
from asyncdiff_operator.layout import Layout
from asyncdiff_operator.shard_progress import next_progress
from asyncdiff_operator.status import (
    DEFAULT_PENDING_TIMEOUT,
    Decision,
    Observation,
    _Ctx,
    _pending,
    decide,
    now_iso,
    parse_iso,
    set_condition,
)


@dataclass(frozen=True)
class ShardObservation:
    """What the operator read this tick: the child Job's status, plus at most one sampled pod."""

    job_found: bool = True
    suspended: bool = False  # the child Job's spec.suspend
    started: bool = False  # the child Job has a startTime (admitted and running)
    complete: bool = False
    failed_reason: str | None = None  # reason of the Job's Failed (or FailureTarget) condition
    failed_message: str = ""
    completed: frozenset[int] = frozenset()
    failed_indexes: frozenset[int] = frozenset()
    active: int = 0  # pods not finished (Pending ones included)
    ready: int = 0  # pods Ready (running): the Job's status.ready
    failed_pods: int = 0  # the Job's status.failed (counted failures; ignored ones are not in it)
    parallelism: int | None = None  # the child Job's spec.parallelism
    sample_index: int | None = None  # the shard whose pod was sampled this tick
    sample_pod: str | None = None
    sample_phase: str | None = None
    event: dict[str, Any] | None = None  # the sampled pod's last progress line
    running_since: float | None = None  # when the sampled pod's container started
    failure: tuple[int, str] | None = None  # (exit code, message) of the newest failed pod, when one was read
    pending_reason: str = ""  # the sampled pod is Pending: why (Unschedulable, FailedMount, ...; kube.pending_info)
    pending_message: str = ""
    pending_since: float | None = None  # the sampled Pending pod's creation (Unix time)


@dataclass
class ShardDecision(Decision):
    patch_parallelism: int | None = None
    delete_pod: str | None = None
    retried_times: int = 1  # pod failures retried by the Job controller since the last reconcile (metrics)
    extra_events: list[tuple[str, str, str]] = field(default_factory=list)


def _as_shard_decision(d: Decision) -> ShardDecision:
    return ShardDecision(**{f.name: getattr(d, f.name) for f in fields(d)})


def layout_status(layout: Layout) -> dict[str, Any]:
    """``status.layout``: what runs, for people and the printer columns."""
    out: dict[str, Any] = {
        "modelN": layout.model_n,
        "stride": layout.stride,
        "cfgParallel": layout.cfg_parallel,
        "replicas": layout.replicas,
        "groups": layout.groups,
        "devicesPerGroup": layout.devices_per_group,
        "devicesTotal": layout.devices_total,
        "shards": layout.plan.num_shards,
        "shardSize": layout.plan.shard_size,
        "plannedReplicas": layout.plan.requested_replicas,
        "summary": layout.summary,
    }
    if layout.reason:
        out["reason"] = layout.reason[:1024]
    if layout.note:
        out["note"] = layout.note[:1024]
    return out


def stalled(obs: ShardObservation, now: float, window: float) -> str | None:
    """Why the sampled running pod counts as stalled, or None."""
    if obs.sample_phase != "Running" or obs.sample_pod is None:
        return None
    event = obs.event
    if event is None:
        if obs.running_since is not None and now - obs.running_since > window:
            return f"shard {obs.sample_index}: no progress line for {now - obs.running_since:.0f} s after it started"
        return None
    ts = float(event.get("ts") or 0.0)
    last = float(event.get("lastProgressTs") or ts)
    if ts - last > window:
        return f"shard {obs.sample_index}: no progress for {ts - last:.0f} s (heartbeats continue: a hung collective?)"
    if now - ts > window:
        return f"shard {obs.sample_index}: no log line for {now - ts:.0f} s"
    return None


def _terminal(
    ctx_status: dict[str, Any], out: dict[str, Any], phase: str, reason: str, message: str, generation: int, now: float
) -> ShardDecision:
    conds = list(ctx_status.get("conditions") or [])
    conds = set_condition(conds, reasons.COND_RUNNING, False, reason, message, generation)
    conds = set_condition(conds, phase, True, reason, message, generation)
    out.update(phase=phase, completionTime=now_iso(now), conditions=conds)
    etype = "Normal" if phase == reasons.SUCCEEDED else "Warning"
    return ShardDecision(out, events=[(etype, reason, message or phase)])


def _failure_of(obs: ShardObservation) -> tuple[str, str, int | None]:
    """(final reason, message, exit code) of a failed child Job."""
    code, msg = obs.failure if obs.failure is not None else (None, "")
    why = obs.failed_reason or ""
    if why == "PodFailurePolicy":
        reason = reason_for(code) if code is not None and code in USER_ERROR_CODES else reasons.CHILD_JOB_FAILED
        return reason, (msg.strip() or obs.failed_message), code
    if why == "DeadlineExceeded":
        return reasons.DEADLINE_EXCEEDED, obs.failed_message, code
    shards = ",".join(str(i) for i in sorted(obs.failed_indexes)) or "?"
    detail = f"shard(s) {shards} failed more than backoffLimit times"
    if msg:
        detail += f"; last: {msg.strip()}"
    return reasons.BACKOFF_LIMIT_EXCEEDED, detail, code


def decide_sharded(
    status: dict[str, Any],
    obs: ShardObservation,
    policy: RunPolicy,
    layout: Layout,
    generation: int,
    *,
    now: float,
    stall_seconds: float,
    queued_by_kueue: bool = False,
    pending_timeout: float = DEFAULT_PENDING_TIMEOUT,
) -> ShardDecision:
    """The next status patch and actions of a sharded job."""
    phase = status.get("phase")
    if phase in reasons.TERMINAL_PHASES:
        return ShardDecision()
    attempts = int(status.get("attempts") or 0)
    if policy.suspend or phase == reasons.SUSPENDED or attempts == 0:
        d = _as_shard_decision(
            decide(status, Observation(job_found=obs.job_found, active=obs.active), policy, generation, now=now)
        )
        if queued_by_kueue and d.create_attempt is not None:
            d.status.pop("startTime", None)  # the deadline counts from admission
        if queued_by_kueue and d.suspend_child is False:
            # admission belongs to Kueue: a resumed job's Job stays suspended until Kueue admits it (never unsuspended
            # by us, which would bypass the queue's quota); startTime is a merge-patch null until that admission
            d.suspend_child = None
            d.status["phase"], d.status["startTime"] = reasons.QUEUED, None
            d.status["conditions"] = set_condition(
                list(d.status.get("conditions") or status.get("conditions") or []),
                reasons.COND_RUNNING,
                False,
                reasons.CHILD_SUSPENDED,
                f"attempt {attempts} resumed: the Job stays suspended until Kueue admits it",
                generation,
            )
        if d.status:
            d.status["layout"] = layout_status(layout)
            d.status["devices"] = layout.devices_total
        return d
    out: dict[str, Any] = {}
    conds = list(status.get("conditions") or [])
    if not obs.job_found:
        d = ShardDecision(out, create_attempt=attempts)
        d.events.append(("Warning", reasons.CHILD_MISSING, f"Job of attempt {attempts} re-created"))
        return d
    plan = layout.plan
    total = plan.total_outputs
    if total is None:  # promptsFrom without promptCount: one shard; the worker's own count says the total
        known = [int((status.get("progress") or {}).get("outputsTotal") or 0)]
        if obs.event is not None:
            known.append(int(obs.event.get("outputsTotal") or 0))
        total = max(known)

    def size_of(index: int) -> int:
        return len(plan.outputs_of(index)) if plan.total_outputs is not None else total

    step = None
    sample = None
    if obs.event is not None and obs.sample_index is not None:
        sample = (obs.sample_index, int(obs.event.get("outputsDone") or 0))
        step = (int(obs.event.get("step") or 0), int(obs.event.get("steps") or 0))
    previous = status.get("progress") or {}
    progress = dict(previous)
    if sample is not None or set(obs.completed) != set(_completed_of(status)) or not previous:
        progress = next_progress(
            previous,
            completed=set(obs.completed),
            size_of=size_of,
            total=total,
            sample=sample,
            now=now,
            step=step,
        )
    if obs.event is not None and isinstance(obs.event.get("lastProgressTs"), int | float):
        progress["lastProgressTs"] = float(obs.event["lastProgressTs"])
    if progress != previous:
        out["progress"] = progress
    shards: dict[str, Any] = {
        "total": plan.num_shards,
        "completed": len(obs.completed),
        "failed": len(obs.failed_indexes),
        "active": obs.active,
        "completedIndexes": _compress(obs.completed),
    }
    if shards != status.get("shards"):
        out["shards"] = shards
    if obs.complete:
        event = obs.event or {}
        if event.get("asyncdiff") == "done":
            out["outputs"] = [str(u) for u in (event.get("outputs") or [])][:50]
            if event.get("manifest"):
                out["manifest"] = str(event["manifest"])
        return _terminal(status, out, reasons.SUCCEEDED, reasons.JOB_SUCCEEDED, "", generation, now)
    if obs.failed_reason:
        reason, message, code = _failure_of(obs)
        # lastFailure is the last pod failure itself (Crashed, exit 1...); the Failed condition says why the job
        # gave up (BackoffLimitExceeded: a shard used up its retries)
        last = reason_for(code) if reason == reasons.BACKOFF_LIMIT_EXCEEDED and code is not None else reason
        record: dict[str, Any] = {"reason": last, "message": message[:2048], "attempt": attempts}
        if code is not None:
            record["exitCode"] = code
        out["lastFailure"] = record
        out["failedAttempts"] = obs.failed_pods + int(status.get("stalls") or 0)
        done = _terminal(status, out, reasons.FAILED, reason, message, generation, now)
        unseen = (obs.failed_pods - 1) - int(status.get("failedPods") or 0)  # all but the last were retried
        if unseen > 0 and code is not None:
            done.retried, done.retried_times = last, unseen
            done.events.insert(0, ("Warning", reasons.RETRYING, f"{unseen} pod failure(s) retried before this one"))
        return done
    if obs.suspended:  # created suspended for Kueue (or Kueue took it back): waiting for admission
        if phase != reasons.QUEUED:
            out["phase"] = reasons.QUEUED
            conds = set_condition(
                conds,
                reasons.COND_RUNNING,
                False,
                reasons.CHILD_SUSPENDED,
                f"attempt {attempts}: the Job is suspended: waiting for admission (Kueue)",
                generation,
            )
            out["conditions"] = conds
            if status.get("startTime"):  # Kueue took an admitted Job back: the clock restarts at re-admission
                out["startTime"] = None  # a merge-patch null removes it
            d = ShardDecision(out)
            d.events.append(("Normal", reasons.QUEUED_REASON, "child Job suspended: waiting for admission"))
            return d
        return ShardDecision(out)
    decision = ShardDecision(out)
    start = parse_iso(status.get("startTime"))
    if start is None:  # admitted now (Kueue unsuspended the child): the deadline clock starts here
        out["startTime"] = now_iso(now)
        start = now
    deadline = policy.active_deadline_seconds
    if deadline is not None and now - start >= deadline:
        msg = f"the job ran longer than activeDeadlineSeconds ({deadline} s)"
        out["lastFailure"] = {"reason": reasons.DEADLINE_EXCEEDED, "message": msg, "attempt": attempts}
        d = _terminal(status, out, reasons.FAILED, reasons.DEADLINE_EXCEEDED, msg, generation, now)
        d.delete_attempt = attempts
        return d
    stalls = int(status.get("stalls") or 0)
    seen_failures = int(status.get("failedPods") or 0)
    if obs.failed_pods > seen_failures:
        out["failedPods"] = obs.failed_pods
        code, msg = obs.failure if obs.failure is not None else (None, "")
        reason = reason_for(code) if code is not None else reasons.CHILD_JOB_FAILED
        record = {"reason": reason, "message": (msg.strip() or "a worker pod failed")[:2048], "attempt": attempts}
        if code is not None:
            record["exitCode"] = code
        out["lastFailure"] = record
        out["failedAttempts"] = obs.failed_pods + stalls
        decision.events.append(("Warning", reasons.RETRYING, f"a shard's pod failed ({reason}): retried alone"))
        decision.retried, decision.retried_times = reason, obs.failed_pods - seen_failures
    why = stalled(obs, now, stall_seconds)
    if why is not None:
        stalls += 1
        out["stalls"] = stalls
        out["failedAttempts"] = obs.failed_pods + stalls
        out["lastFailure"] = {"reason": reasons.STALLED, "message": why, "attempt": attempts}
        if stalls > policy.backoff_limit:
            d = _terminal(
                status,
                out,
                reasons.FAILED,
                reasons.BACKOFF_LIMIT_EXCEEDED,
                f"{reasons.STALLED}: {why}",
                generation,
                now,
            )
            d.delete_attempt = attempts
            return d
        decision.delete_pod = obs.sample_pod
        decision.events.append(("Warning", reasons.STALLED, f"{why}: pod {obs.sample_pod} deleted, shard resumes"))
        decision.retried = reasons.STALLED
    if obs.pending_since is not None and phase != reasons.RUNNING:  # no group ever ran: say why, time out
        waiting = _pending(
            _Ctx(status, generation, now),
            out,
            Observation(
                pending_reason=obs.pending_reason,
                pending_message=obs.pending_message,
                pending_since=obs.pending_since,
                active=max(obs.active, 1),
            ),
            pending_timeout,
        )
        merged = _as_shard_decision(waiting)
        merged.events = decision.events + merged.events
        merged.retried, merged.retried_times = decision.retried, decision.retried_times
        merged.delete_pod = decision.delete_pod
        return merged
    if obs.parallelism is not None and obs.parallelism != layout.groups:
        decision.patch_parallelism = layout.groups
        decision.events.append(
            ("Normal", reasons.SCALED, f"groups {obs.parallelism} -> {layout.groups} (replicas {layout.replicas})")
        )
    if (obs.ready > 0 or obs.sample_phase == "Running") and phase != reasons.RUNNING:  # a group runs, not waits
        out["phase"] = reasons.RUNNING
        conds = set_condition(
            conds, reasons.COND_RUNNING, True, reasons.POD_RUNNING, f"{obs.active} group(s) running", generation
        )
        out["conditions"] = conds
        decision.events.append(("Normal", reasons.POD_RUNNING, f"attempt {attempts} running"))
    for key, value in (("layout", layout_status(layout)), ("devices", layout.devices_total)):
        if status.get(key) != value:
            out[key] = value
    return decision


def _compress(indexes: frozenset[int] | set[int]) -> str:
    """``0-3,5``: the Job controller's own notation for index sets."""
    parts: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_indexes(text: str | None) -> set[int]:
    """The inverse of ``_compress`` (``completedIndexes`` of a Job)."""
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.update(range(int(a), int(b) + 1))
            else:
                out.add(int(part))
        except ValueError:
            continue
    return out


def _completed_of(status: dict[str, Any]) -> set[int]:
    return parse_indexes((status.get("shards") or {}).get("completedIndexes"))
