"""The batch/v1 Job controller: Pods from the template, completion tracking, retries and failure rules.

Why: the operator may create Indexed Jobs for multi-node runs; without this, a Job never produces a Pod
and the operator's status sync has nothing to read. Implemented, following kube-controller-manager:

* NonIndexed and Indexed completion modes; ``completions`` and ``parallelism``; for Indexed Jobs each Pod
  gets the ``batch.kubernetes.io/job-completion-index`` annotation and label, ``JOB_COMPLETION_INDEX`` and
  hostname ``<job>-<index>`` (so ``<job>-<index>.<subdomain>`` names work);
* Pods carry the ``batch.kubernetes.io/job-tracking`` finalizer until counted, so a Pod deleted while
  running counts as failed (unless a ``podFailurePolicy`` is set, then only once it is Failed);
* ``backoffLimit`` (container restarts count for ``restartPolicy: OnFailure``), ``backoffLimitPerIndex``
  with ``maxFailedIndexes``, an exponential delay before replacements (``backoff_base``, default 1 s,
  versus 10 s in Kubernetes), ``activeDeadlineSeconds``, ``suspend``, ``podReplacementPolicy``;
* a lowered ``parallelism`` deletes the excess active pods, least advanced first (pending, then the most recently
  started), as kube-controller-manager's ActivePods ranking does;
* ``podFailurePolicy`` rules ``FailJob``/``Ignore``/``Count``/``FailIndex`` on exit codes and on Pod
  conditions (e.g. ``DisruptionTarget`` set by the eviction API);
* status counters, ``completedIndexes``/``failedIndexes``, ``startTime``/``completionTime`` and the
  ``Suspended``, ``FailureTarget``/``Failed``, ``SuccessCriteriaMet``/``Complete`` conditions;
* suspension as in Kubernetes (KEP-2232): ``spec.suspend`` deletes the active pods (their tracking finalizer
  removed first, so they never count as failed), sets ``Suspended=True`` (event ``Suspended``), stops the
  ``activeDeadlineSeconds`` clock; resuming sets ``Suspended=False`` reason ``JobResumed`` (event ``Resumed``) and
  resets ``startTime`` to now; a Job created suspended gets no ``startTime`` until resumed;
* ``ttlSecondsAfterFinished`` (the TTL-after-finished controller), with background propagation.

Not implemented: ``successPolicy``, ``managedBy`` hand-off, pod ``ready``-based ``status.ready`` nuances.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Hashable
from typing import Any

from ..apiserver.api import now_rfc3339, parse_time
from ..apiserver.store import StorageKey
from ..errors import ApiError
from .base import Controller
from .scheduler import is_terminal, set_condition

JOBS: StorageKey = ("batch", "jobs")
PODS: StorageKey = ("", "pods")
TRACKING = "batch.kubernetes.io/job-tracking"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
INDEX_FAILURES = "batch.kubernetes.io/job-index-failure-count"


def compress_indexes(indexes: set[int]) -> str:
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
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.update(range(int(a), int(b) + 1))
        else:
            out.add(int(part))
    return out


def _index(pod: dict[str, Any]) -> int | None:
    value = (pod["metadata"].get("annotations") or {}).get(INDEX_KEY)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _removal_rank(pod: dict[str, Any]) -> tuple[int, float]:
    """Which active pod a scale-down deletes first: not running before running, then the newest."""
    status = pod.get("status") or {}
    running = status.get("phase") == "Running"
    started = parse_time(status.get("startTime")) or parse_time(pod["metadata"].get("creationTimestamp")) or 0.0
    return (1 if running else 0, -started)


def _cond_true(status: dict[str, Any], ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True" for c in status.get("conditions") or [])


def _exit_codes(pod: dict[str, Any]) -> list[tuple[str, int]]:
    out = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or {}
        if "exitCode" in term:
            out.append((cs.get("name", ""), int(term["exitCode"])))
    return out


def match_failure_rule(job: dict[str, Any], pod: dict[str, Any]) -> tuple[str, str] | None:
    """The podFailurePolicy action matching a failed pod, with a message; None when no rule matches."""
    policy = (job.get("spec") or {}).get("podFailurePolicy") or {}
    for i, rule in enumerate(policy.get("rules") or []):
        on_codes = rule.get("onExitCodes")
        if on_codes:
            values = set(on_codes.get("values") or [])
            container = on_codes.get("containerName")
            for name, code in _exit_codes(pod):
                if container and name != container:
                    continue
                if code == 0:
                    continue
                hit = code in values if on_codes.get("operator") == "In" else code not in values
                if hit:
                    pod_ref = f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"
                    return rule["action"], (
                        f"Container {name} for pod {pod_ref} "
                        f"failed with exit code {code} matching {rule['action']} rule at index {i}"
                    )
        for pattern in rule.get("onPodConditions") or []:
            for cond in (pod.get("status") or {}).get("conditions") or []:
                if cond.get("type") == pattern.get("type") and cond.get("status") == pattern.get("status", "True"):
                    return rule["action"], (
                        f"Pod {pod['metadata'].get('namespace')}/{pod['metadata']['name']} has condition "
                        f"{cond.get('type')} matching {rule['action']} rule at index {i}"
                    )
    return None


class JobController(Controller):
    name = "job"
    watches = (JOBS, PODS)

    def __init__(self, api: Any, *, backoff_base: float = 1.0, backoff_max: float = 60.0) -> None:
        super().__init__(api)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._last_failure: dict[str, float] = {}
        self._index_failures: dict[tuple[str, int], int] = {}
        self._failed_create: dict[str, str] = {}
        """Last FailedCreate message per Job uid: one event per distinct error (client-go aggregates repeats)."""

    # ------------------------------------------------------------------ events

    def on_event(self, event_type: str, key: StorageKey, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        if key == JOBS:
            if event_type != "DELETED":
                self.enqueue(("job", ns, meta["name"]))
            return
        owner = next(
            (r for r in meta.get("ownerReferences") or [] if r.get("controller") and r.get("kind") == "Job"),
            None,
        )
        if owner is None:
            return
        job = self.api.store.get(JOBS, ns, owner.get("name", ""))
        if job is not None and job["metadata"].get("uid") == owner.get("uid"):
            self.enqueue(("job", ns, owner["name"]))
        elif event_type != "DELETED" and TRACKING in (meta.get("finalizers") or []):
            self.enqueue(("orphan", ns, meta["name"]))

    # ------------------------------------------------------------------ reconcile

    def reconcile(self, item: Hashable) -> float | None:
        assert isinstance(item, tuple)
        if item[0] == "orphan":
            pod = self.api.store.get(PODS, item[1], item[2])
            if pod is not None:
                self._drop_tracking(pod)
            return None
        return self._sync(item[1], item[2])

    def _drop_tracking(self, pod: dict[str, Any]) -> None:
        if TRACKING not in (pod["metadata"].get("finalizers") or []):
            return
        fresh = copy.deepcopy(pod)
        fresh["metadata"]["finalizers"] = [f for f in fresh["metadata"]["finalizers"] if f != TRACKING]
        self.api.update(self.api.rt("v1", "pods"), pod["metadata"].get("namespace", ""), pod["metadata"]["name"], fresh)

    def _pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"].get("uid", "")
        out = []
        for key, obj in self.api.store.dependents(uid):
            if key != PODS:
                continue
            if any(r.get("uid") == uid and r.get("controller") for r in obj["metadata"].get("ownerReferences") or []):
                out.append(obj)
        return out

    def _is_failed(self, job: dict[str, Any], pod: dict[str, Any]) -> bool:
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Failed":
            return True
        if (job.get("spec") or {}).get("podFailurePolicy"):
            return False
        return bool(pod["metadata"].get("deletionTimestamp")) and phase != "Succeeded"

    def _sync(self, namespace: str, name: str) -> float | None:
        job = self.api.store.get(JOBS, namespace, name)
        if job is None:
            return None
        spec = job.get("spec") or {}
        status = copy.deepcopy(job.get("status") or {})
        uid = job["metadata"]["uid"]
        pods = self._pods(job)
        now = time.time()
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1) or 0)
        finished = _cond_true(status, "Complete") or _cond_true(status, "Failed")
        completed = parse_indexes(status.get("completedIndexes"))
        failed_indexes = parse_indexes(status.get("failedIndexes"))
        per_index_limit = spec.get("backoffLimitPerIndex")
        fail_reason: tuple[str, str] | None = None

        # 1. account newly finished pods (those still holding the tracking finalizer)
        to_release: list[dict[str, Any]] = []
        for pod in pods:
            tracked = TRACKING in (pod["metadata"].get("finalizers") or [])
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Succeeded":
                if tracked:
                    to_release.append(pod)
                    idx = _index(pod)
                    if indexed and idx is not None:
                        completed.add(idx)
                    else:
                        status["succeeded"] = int(status.get("succeeded", 0)) + 1
            elif self._is_failed(job, pod):
                if not tracked:
                    continue
                to_release.append(pod)
                if finished:
                    continue
                rule = match_failure_rule(job, pod)
                action = rule[0] if rule else "Count"
                idx = _index(pod)
                if action == "Ignore":
                    continue
                status["failed"] = int(status.get("failed", 0)) + 1
                self._last_failure[uid] = now
                if action == "FailJob" and rule is not None:
                    fail_reason = ("PodFailurePolicy", rule[1])
                elif indexed and idx is not None and per_index_limit is not None:
                    count = int((pod["metadata"].get("annotations") or {}).get(INDEX_FAILURES, "0")) + 1
                    self._index_failures[(uid, idx)] = max(self._index_failures.get((uid, idx), 0), count)
                    if action == "FailIndex" or count > int(per_index_limit):
                        failed_indexes.add(idx)
        if indexed:
            status["succeeded"] = len(completed)
            if completed:
                status["completedIndexes"] = compress_indexes(completed)
            if failed_indexes:
                status["failedIndexes"] = compress_indexes(failed_indexes)

        active = [p for p in pods if not is_terminal(p) and not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in pods if not is_terminal(p) and p["metadata"].get("deletionTimestamp")]
        succeeded = int(status.get("succeeded", 0))
        failed = int(status.get("failed", 0))
        requeue: float | None = None

        # 2. decide the outcome (a Job being resumed restarts its activeDeadlineSeconds clock first: the docs'
        # "stopped and reset when the Job is resumed"; startTime is reset to now)
        if not finished and not spec.get("suspend") and _cond_true(status, "Suspended"):
            status["startTime"] = now_rfc3339()
        if not finished and not _cond_true(status, "FailureTarget") and not _cond_true(status, "SuccessCriteriaMet"):
            restarts = 0
            if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") == "OnFailure":
                restarts = sum(
                    int(cs.get("restartCount", 0))
                    for p in active
                    for cs in (p.get("status") or {}).get("containerStatuses") or []
                )
            start = parse_time(status.get("startTime"))
            deadline = spec.get("activeDeadlineSeconds")
            if fail_reason is None and per_index_limit is None and failed + restarts > int(spec.get("backoffLimit", 6)):
                fail_reason = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            if fail_reason is None and indexed and per_index_limit is not None:
                max_failed = spec.get("maxFailedIndexes")
                if max_failed is not None and len(failed_indexes) > int(max_failed):
                    fail_reason = (
                        "MaxFailedIndexesExceeded",
                        "Job has exceeded the specified maximal number of failed indexes",
                    )
                elif completions is not None and failed_indexes and len(completed | failed_indexes) >= int(completions):
                    fail_reason = ("FailedIndexes", "Job has failed indexes")
            if fail_reason is None and deadline is not None and start is not None and not spec.get("suspend"):
                if now - start >= int(deadline):
                    fail_reason = ("DeadlineExceeded", "Job was active longer than specified deadline")
                else:
                    requeue = start + int(deadline) - now + 0.01
            if fail_reason is not None:
                set_condition(status, "FailureTarget", "True", fail_reason[0], fail_reason[1])
                self.api.record_event(
                    self._ref(job),
                    fail_reason[0],
                    fail_reason[1],
                    type_="Warning",
                    component="job-controller",
                )
            else:
                done = False
                if indexed:
                    done = completions is not None and len(completed) >= int(completions)
                elif completions is not None:
                    done = succeeded >= int(completions)
                else:
                    done = succeeded > 0 and not active
                if done:
                    set_condition(
                        status,
                        "SuccessCriteriaMet",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    )

        failing = _cond_true(status, "FailureTarget")
        succeeding = _cond_true(status, "SuccessCriteriaMet")
        if failing or succeeding or finished:
            for pod in active:
                self.delete_pod(pod)
            if not finished and not active and not terminating:
                if failing:
                    target = next(c for c in status["conditions"] if c.get("type") == "FailureTarget")
                    set_condition(status, "Failed", "True", target.get("reason", ""), target.get("message", ""))
                else:
                    set_condition(
                        status,
                        "Complete",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    )
                    status["completionTime"] = now_rfc3339()
                    self.api.record_event(self._ref(job), "Completed", "Job completed", component="job-controller")
                finished = True
            active, creating = [], False
        elif spec.get("suspend"):
            for pod in active:
                # kube-controller-manager's deleteJobPods: the tracking finalizer goes first, so a pod deleted
                # because the Job is suspended is never counted as failed.
                self._drop_tracking(pod)
                self.delete_pod(pod)
            active = []
            if set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended"):
                self.api.record_event(self._ref(job), "Suspended", "Job suspended", component="job-controller")
            creating = False
        else:
            if _cond_true(status, "Suspended"):
                set_condition(status, "Suspended", "False", "JobResumed", "Job resumed")
                self.api.record_event(self._ref(job), "Resumed", "Job resumed", component="job-controller")
            status.setdefault("startTime", now_rfc3339())
            creating = True

        # 3. scale down (parallelism lowered while running): delete the excess active pods, least advanced first
        # (kube-controller-manager's ActivePods ranking: pending before running, then the most recently started)
        if creating and len(active) > parallelism:
            ranked = sorted(active, key=_removal_rank)
            for pod in ranked[: len(active) - parallelism]:
                self.delete_pod(pod)
            active = ranked[len(active) - parallelism :]
        # 4. create missing pods
        if creating:
            delay = self._backoff_left(uid, failed, now)
            if delay > 0:
                requeue = delay if requeue is None else min(requeue, delay)
            else:
                # the default is Failed when a podFailurePolicy is set (the only value allowed then), else
                # TerminatingOrFailed: a pod stopping is not replaced before it has failed
                default_policy = "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
                replace_terminating = spec.get("podReplacementPolicy", default_policy) != "Failed"
                busy = len(active) + (0 if replace_terminating else len(terminating))
                if indexed:
                    taken = {_index(p) for p in active} | (
                        set() if replace_terminating else {_index(p) for p in terminating}
                    )
                    todo = [
                        i
                        for i in range(int(completions or 0))
                        if i not in completed and i not in failed_indexes and i not in taken
                    ]
                    for idx in todo[: max(0, parallelism - busy)]:
                        active.append(self._create_pod(job, idx))
                else:
                    want = parallelism if completions is None else min(parallelism, int(completions) - succeeded)
                    if completions is None and succeeded > 0:
                        want = 0
                    for _ in range(max(0, want - busy)):
                        active.append(self._create_pod(job, None))

        # 5. write status, then release counted pods
        status["active"] = len(active)
        status["terminating"] = len(terminating)
        status["ready"] = sum(
            1
            for p in active
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        )
        for key in ("succeeded", "failed"):
            if not status.get(key):
                status.pop(key, None)
        if status != (job.get("status") or {}):
            fresh = copy.deepcopy(job)
            fresh["status"] = status
            self.api.update(self.api.rt("batch/v1", "jobs"), namespace, name, fresh, subresource="status")
        for pod in to_release:
            self._drop_tracking(pod)
        if finished:
            return self._ttl(job, status, now)
        return requeue

    # ------------------------------------------------------------------ helpers

    def _ref(self, job: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job["metadata"]}

    def _backoff_left(self, uid: str, failed: int, now: float) -> float:
        last = self._last_failure.get(uid)
        if last is None or failed <= 0 or self.backoff_base <= 0:
            return 0.0
        delay = min(self.backoff_base * (2.0 ** (failed - 1)), self.backoff_max)
        return max(0.0, last + delay - now)

    def _ttl(self, job: dict[str, Any], status: dict[str, Any], now: float) -> float | None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        finish = parse_time(status.get("completionTime"))
        if finish is None:
            finish = max(
                (
                    parse_time(c.get("lastTransitionTime")) or now
                    for c in status.get("conditions") or []
                    if c.get("type") == "Failed"
                ),
                default=now,
            )
        left = finish + int(ttl) - now
        if left > 0:
            return left + 0.01
        meta = job["metadata"]
        try:
            self.api.delete(
                self.api.rt("batch/v1", "jobs"),
                meta.get("namespace", ""),
                meta["name"],
                {"propagationPolicy": "Background"},
            )
        except ApiError as exc:
            if exc.code != 404:
                raise
        return None

    def _create_pod(self, job: dict[str, Any], index: int | None) -> dict[str, Any]:
        meta = job["metadata"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        pod_meta: dict[str, Any] = {
            "generateName": f"{meta['name']}-{index}-" if index is not None else f"{meta['name']}-",
            "namespace": meta.get("namespace"),
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "finalizers": [TRACKING],
        }
        spec = template.get("spec") or {}
        if index is not None:
            pod_meta["annotations"][INDEX_KEY] = str(index)
            pod_meta["labels"][INDEX_KEY] = str(index)
            failures = self._index_failures.get((meta["uid"], index))
            if failures:
                pod_meta["annotations"][INDEX_FAILURES] = str(failures)
            spec.setdefault("hostname", f"{meta['name']}-{index}")
            for c in spec.get("containers") or []:
                env = c.setdefault("env", [])
                if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                    env.append(
                        {
                            "name": "JOB_COMPLETION_INDEX",
                            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}},
                        }
                    )
        if not pod_meta["annotations"]:
            del pod_meta["annotations"]
        try:
            pod = self.api.create(
                self.api.rt("v1", "pods"), meta.get("namespace", ""), {"metadata": pod_meta, "spec": spec}
            ).obj
        except ApiError as exc:  # e.g. refused by Pod Security Admission: Kubernetes' job-controller event, then retry
            message = f"Error creating: {exc.message}"
            if exc.code != 409 and self._failed_create.get(meta["uid"]) != message:
                self._failed_create[meta["uid"]] = message
                self.api.record_event(
                    self._ref(job), "FailedCreate", message, type_="Warning", component="job-controller"
                )
            raise
        self.api.record_event(
            self._ref(job),
            "SuccessfulCreate",
            f"Created pod: {pod['metadata']['name']}",
            component="job-controller",
        )
        return pod
