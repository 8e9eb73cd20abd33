"""Pure functions rendering the children of an AsyncDiffJob: the ConfigMap holding the job spec and the batch/v1 Job.

Why pure: rendering is where most operator bugs hide (labels, owner references, GPU limits, reserved env), and pure
functions are unit-tested without a cluster. Names are deterministic (``<cr>-attempt-<n>``) so an operator restart
re-creating a child gets 409 instead of a duplicate. The child Job has backoffLimit 0: the operator owns retries,
because only it can tell a user error (never retried) from an infrastructure failure.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from asyncdiff_operator.api import DEFAULT_IMAGE, GROUP, KIND, VERSION, AsyncDiffJobSpec

SPEC_DIR: Final = "/etc/asyncdiff"
SPEC_FILE: Final = "job.yaml"
CONTAINER: Final = "worker"
LABEL_JOB: Final = f"{GROUP}/job"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
KUEUE_LABELS: Final = ("kueue.x-k8s.io/queue-name", "kueue.x-k8s.io/priority-class")


def child_name(cr_name: str, attempt: int) -> str:
    """Name of the ConfigMap and Job of one attempt."""
    return f"{cr_name}-attempt-{attempt}"


def owner_reference(cr: dict[str, Any]) -> dict[str, Any]:
    """A controller owner reference to the CR (children are garbage-collected with it)."""
    meta = cr["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(cr: dict[str, Any], attempt: int) -> dict[str, str]:
    """Labels of every child: ours plus the Kueue labels copied from the CR."""
    cr_labels = cr["metadata"].get("labels") or {}
    labels = {LABEL_JOB: cr["metadata"]["name"], LABEL_ATTEMPT: str(attempt)}
    labels.update({k: cr_labels[k] for k in KUEUE_LABELS if k in cr_labels})
    return labels


def render_configmap(cr: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int) -> dict[str, Any]:
    """The ConfigMap with the worker's job manifest (prompts travel here, never on a command line)."""
    meta = cr["metadata"]
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "spec": spec.job_spec().model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": child_name(meta["name"], attempt),
            "namespace": meta.get("namespace"),
            "labels": child_labels(cr, attempt),
            "ownerReferences": [owner_reference(cr)],
        },
        "data": {SPEC_FILE: yaml.safe_dump(manifest, sort_keys=False)},
    }


def _env(cr: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int) -> list[dict[str, Any]]:
    meta = cr["metadata"]
    env: list[dict[str, Any]] = [
        {"name": "ASYNCDIFF_JOB_NAME", "value": meta["name"]},
        {"name": "ASYNCDIFF_JOB_UID", "value": str(meta.get("uid", ""))},
        {"name": "ASYNCDIFF_ATTEMPT", "value": str(attempt)},
        {"name": "ASYNCDIFF_PROGRESS", "value": "json"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    for var in spec.pod.env or []:
        env.append(var.model_dump(mode="json", by_alias=True, exclude_none=True))
    return env


def _resources(spec: AsyncDiffJobSpec) -> dict[str, Any]:
    given = spec.pod.resources
    limits: dict[str, Any] = dict(given.limits or {}) if given else {}
    requests: dict[str, Any] = dict(given.requests or {}) if given else {}
    gpus = spec.gpus_per_node
    if gpus > 0:
        limits["nvidia.com/gpu"] = str(gpus)
        requests.pop("nvidia.com/gpu", None)
    limits = {k: str(v) for k, v in limits.items()}
    requests = {k: str(v) for k, v in requests.items()}
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def worker_command(spec: AsyncDiffJobSpec) -> list[str]:
    """The container command. ``asyncdiff_worker.launch`` wraps torchrun (``--nproc`` = the job's devices) and exits
    with the root cause's documented code; bare torchrun would turn every failure into exit code 1."""
    return [
        "python",
        "-m",
        "asyncdiff_worker.launch",
        f"--nproc={spec.devices}",
        f"--spec={SPEC_DIR}/{SPEC_FILE}",
    ]


def render_job(cr: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int) -> dict[str, Any]:
    """The batch/v1 Job of one attempt: one pod, restartPolicy Never, backoffLimit 0."""
    meta = cr["metadata"]
    name = child_name(meta["name"], attempt)
    labels = child_labels(cr, attempt)
    pod = spec.pod
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": CONTAINER,
                "image": pod.image or DEFAULT_IMAGE,
                "command": worker_command(spec),
                "env": _env(cr, spec, attempt),
                "resources": _resources(spec),
                "volumeMounts": [{"name": "job-spec", "mountPath": SPEC_DIR, "readOnly": True}],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [{"name": "job-spec", "configMap": {"name": name}}],
    }
    if pod.service_account_name:
        pod_spec["serviceAccountName"] = pod.service_account_name
    if pod.node_selector:
        pod_spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        pod_spec["tolerations"] = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in pod.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": labels,
            "ownerReferences": [owner_reference(cr)],
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
