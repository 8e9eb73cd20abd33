"""The batch/v1 Job fields that make a single-node job's child an Indexed Job of shards.

Why the real primitives: Kubernetes' Indexed Job already does what a batch of shards needs, and does it in the Job
controller, next to the pods: ``completions`` = shards and ``parallelism`` = groups (replicas; mutable while the
Job runs, so scaling is a patch), one pod per shard at a time with the shard number as its completion index
(``ASYNCDIFF_SHARD_INDEX``), ``backoffLimitPerIndex`` so a failed shard is retried alone while the others go on (its
retry number reaches the worker through the downward API as ``ASYNCDIFF_INDEX_RETRY``, from the pod annotation
``batch.kubernetes.io/job-index-failure-count``; absent on a first try, i.e. empty), and a ``podFailurePolicy``:

1. ``FailJob`` on the worker's user-error exit codes (10-19, ``asyncdiff_worker.exit_codes``): a wrong spec or a
   missing model fails every shard the same way, so the whole job fails at once, with the reason;
2. ``Ignore`` on exit codes 24 (Interrupted) and 143: the worker got SIGTERM, i.e. its pod was stopped from outside
   (deleted, drained, scaled down, preempted): not the shard's fault, never counted; the shard resumes from its
   stored outputs (``STOPPED_CODES``);
3. ``Ignore`` on the ``DisruptionTarget`` pod condition (eviction, preemption, taint-based eviction: disruptions are
   never counted, whatever the exit code);
4. anything else (a crash, PeerFailed, StorageUnavailable, SIGKILL) is ``Count``: it uses one of that shard's retries.

``maxFailedIndexes`` is left unset: when one shard has used up its retries the others still finish, so their outputs
are stored and a re-applied job renders only what is missing (the Job then fails with ``FailedIndexes``).
``backoffLimit`` is left unset too (with ``backoffLimitPerIndex`` Kubernetes defaults it to the maximum).

Kueue: a job whose CR carries ``kueue.x-k8s.io/queue-name`` gets a child created with ``suspend: true`` (the label
is copied to it); Kueue's batch/v1 Job integration admits it by setting ``suspend: false``.
"""

from __future__ import annotations

from typing import Any, Final

from asyncdiff_worker.exit_codes import USER_ERROR_CODES, ExitCode

from asyncdiff_operator.api import AsyncDiffJobSpec
from asyncdiff_operator.layout import Layout, resolve, running_layout

STOPPED_CODES: Final = (int(ExitCode.INTERRUPTED), 143)
"""Exit codes of a worker stopped from outside: 24, the launcher's own answer to SIGTERM, and 143 (128 + SIGTERM),
a process that got SIGTERM before the launcher's handler was installed (during start-up and preflight). Kubernetes
sends SIGTERM only when a pod is deleted, evicted, preempted or drained; an OOM kill is SIGKILL (137): counted."""
COMPLETION_INDEX: Final = "batch.kubernetes.io/job-completion-index"
INDEX_FAILURE_COUNT: Final = "batch.kubernetes.io/job-index-failure-count"
KUEUE_QUEUE: Final = "kueue.x-k8s.io/queue-name"
CONTAINER: Final = "worker"


def failure_policy() -> dict[str, Any]:
    """The podFailurePolicy of a sharded Job (see the module docstring)."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": sorted(USER_ERROR_CODES)},
            },
            {
                "action": "Ignore",
                "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": list(STOPPED_CODES)},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def queued_by_kueue(cr: dict[str, Any]) -> bool:
    """Whether the CR asks for Kueue admission (its child is created suspended)."""
    return bool((cr.get("metadata", {}).get("labels") or {}).get(KUEUE_QUEUE))


def shard_env() -> list[dict[str, Any]]:
    """The worker's shard contract: which shard this pod renders and how many times it was retried before."""

    def annotation(key: str) -> dict[str, Any]:
        return {"fieldRef": {"fieldPath": f"metadata.annotations['{key}']"}}

    return [
        {"name": "ASYNCDIFF_SHARD_INDEX", "valueFrom": annotation(COMPLETION_INDEX)},
        {"name": "ASYNCDIFF_INDEX_RETRY", "valueFrom": annotation(INDEX_FAILURE_COUNT)},
        # who rendered an output (manifest records): the pod, as HOSTNAME is the index's stable <job>-<index>
        {"name": "ASYNCDIFF_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def shard_job_fields(cr: dict[str, Any], spec: AsyncDiffJobSpec, layout: Layout | None = None) -> dict[str, Any]:
    """``spec`` fields of the child Job for a single-node job."""
    layout = layout or resolve(spec, running=running_layout(cr.get("status") or {}))
    fields: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": layout.plan.num_shards,
        "parallelism": layout.groups,
        "backoffLimitPerIndex": spec.run_policy.backoff_limit,
        "podFailurePolicy": failure_policy(),
    }
    if queued_by_kueue(cr):
        fields["suspend"] = True
    return fields
