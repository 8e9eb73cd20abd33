"""Prometheus metrics of the operator: jobs by phase, phase transitions, retries and reconcile errors by reason, job
durations.

Why our own: kopf exports no metrics, and a platform team's first questions (how many jobs run or wait, how often
attempts are retried and why, how long jobs take) need numbers that a dashboard can scrape. The registry is the
process-wide default one, served by ``serve(port)`` (``asyncdiff-operator --metrics-port``). Phases are tracked
per object uid in memory; after a restart the gauge is rebuilt on the first reconcile of each job.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed")

JOBS = Gauge("asyncdiff_jobs", "AsyncDiffJobs known to this operator, by phase.", ["phase"])
TRANSITIONS = Counter("asyncdiff_job_phase_transitions_total", "Phase transitions written, by new phase.", ["phase"])
RETRIES = Counter("asyncdiff_job_retries_total", "New attempts after a failure or disruption, by reason.", ["reason"])
DURATION = Histogram(
    "asyncdiff_job_duration_seconds",
    "Creation to completion of finished jobs, by final phase.",
    ["phase"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400),
)
RECONCILE_ERRORS = Counter(
    "asyncdiff_reconcile_errors_total", "Reconciles that raised (retried on the next tick), by reason.", ["reason"]
)
CHILD_CREATE = Histogram(
    "asyncdiff_child_create_seconds",
    "CR creation to its first child Job created.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)

_lock = threading.Lock()
_phases: dict[str, str] = {}


def _refresh() -> None:
    for phase in PHASES:
        JOBS.labels(phase=phase).set(sum(1 for p in _phases.values() if p == phase))


def track(uid: str, phase: str | None) -> None:
    """Record a job's current phase (None: not decided yet)."""
    with _lock:
        if phase is None or _phases.get(uid) == phase:
            return
        _phases[uid] = phase
        _refresh()


def forget(uid: str) -> None:
    with _lock:
        if _phases.pop(uid, None) is not None:
            _refresh()


def transition(phase: str) -> None:
    TRANSITIONS.labels(phase=phase).inc()


def retried(reason: str) -> None:
    RETRIES.labels(reason=reason).inc()


def reconcile_error(reason: str) -> None:
    RECONCILE_ERRORS.labels(reason=reason).inc()


def finished(phase: str, seconds: float) -> None:
    DURATION.labels(phase=phase).observe(max(seconds, 0.0))


def child_created(seconds: float) -> None:
    CHILD_CREATE.observe(max(seconds, 0.0))


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics on ``addr:port`` from a daemon thread."""
    start_http_server(port, addr=addr)
