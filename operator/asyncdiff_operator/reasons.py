"""Phases, condition types and CamelCase condition reasons: the only place these strings are spelled.

Why one module: ``kubectl wait``, the CLI, tests and dashboards match on these strings; keeping them together keeps
them consistent. Worker failure reasons (InvalidSpec, ModelNotFound, ...) come from ``asyncdiff_worker.exit_codes``.
"""

from __future__ import annotations

from typing import Final

PENDING: Final = "Pending"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
SUSPENDED: Final = "Suspended"
QUEUED: Final = "Queued"
TERMINAL_PHASES: Final = frozenset({SUCCEEDED, FAILED})

# condition types
COND_CREATED: Final = "Created"
COND_RUNNING: Final = "Running"
COND_SUCCEEDED: Final = "Succeeded"
COND_FAILED: Final = "Failed"
COND_SUSPENDED: Final = "Suspended"
COND_RECONCILED: Final = "Reconciled"  # False while reconciles fail (reasons below)

# reasons
JOB_CREATED: Final = "JobCreated"
POD_PENDING: Final = "PodPending"
POD_RUNNING: Final = "PodRunning"
RETRYING: Final = "Retrying"
JOB_SUCCEEDED: Final = "JobSucceeded"
BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
INVALID_SPEC: Final = "InvalidSpec"
POD_SECURITY_REFUSED: Final = "PodSecurityRefused"
CHILD_JOB_FAILED: Final = "ChildJobFailed"
SUSPENDED_REASON: Final = "JobSuspended"
RESUMED: Final = "JobResumed"
STALLED: Final = "Stalled"
DISRUPTED: Final = "Disrupted"
CHILD_MISSING: Final = "ChildJobMissing"
TTL_EXPIRED: Final = "TTLExpired"
QUEUED_REASON: Final = "WaitingForAdmission"
SCALED: Final = "Scaled"
RECONCILED: Final = "ReconcileSucceeded"
RECONCILE_ERROR: Final = "ReconcileError"
API_ERROR: Final = "ApiError"
CHILD_REJECTED: Final = "ChildRejected"
CHILD_SUSPENDED: Final = "ChildSuspended"
PENDING_TIMEOUT: Final = "PendingTimeout"
