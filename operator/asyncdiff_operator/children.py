"""Pure functions rendering the children of an AsyncDiffJob: the job-spec ConfigMap, the batch/v1 Job, and (for
multi-node jobs) the headless Service.

Why pure: rendering is where most operator bugs hide (labels, owner references, GPU limits, reserved env), and pure
functions are unit-tested without a cluster. Names are deterministic (``<cr>-attempt-<n>``) so an operator restart
re-creating a child gets 409 instead of a duplicate. The child Job has backoffLimit 0: the operator owns retries,
because only it can tell a user error (never retried) from an infrastructure failure; a podFailurePolicy makes the
Job controller replace a pod lost to eviction or preemption (``DisruptionTarget``) without failing the Job.

Multi-node (``runPolicy.numNodes > 1``) follows Kubeflow Trainer's torch plugin: an Indexed Job
(completions = parallelism = numNodes), a headless Service with ``publishNotReadyAddresses`` (rank 0 must resolve
before it is Ready), pods with ``subdomain`` = the Service, and torchrun's own ``PET_*`` environment: PET_NNODES,
PET_NPROC_PER_NODE, PET_NODE_RANK (the completion index, by the downward API), PET_MASTER_ADDR (pod 0's stable
name ``<job>-0.<svc>.<ns>.svc.cluster.local``) and PET_MASTER_PORT. ``asyncdiff_worker.launch`` sees PET_NNODES and
leaves the rendezvous to torchrun, which reads PET_* as the defaults of its flags.

Operator-wide defaults (``settings.OperatorSettings``, from the chart's values) apply only where the job sets
nothing: the worker image is ``spec.pod.image``, else ASYNCDIFF_WORKER_IMAGE, else ``DEFAULT_IMAGE``; the operator's
pull policy applies when the job names no image of its own (a job's own image keeps Kubernetes' default policy, as
the operator's policy was chosen for the operator's image); each worker default (resources, nodeSelector,
tolerations, serviceAccountName) is replaced as a whole by the job's field of the same name; the model cache emptyDir
is mounted unless the job mounts something there itself; S3 endpoint, region and forcePathStyle fill the
``spec.output`` fields the job left unset (in the ConfigMap the worker reads); the operator's credentials Secret is
mounted exactly as ``spec.pod.s3CredentialsSecret``, which wins when set.

Security (``podsecurity.py``): every pod meets the Pod Security Standard ``restricted``, has a read-only root
filesystem with emptyDirs at ``/tmp`` and the cache, no service account token, and cpu/memory requests.
"""

from __future__ import annotations

import re
from typing import Any, Final

import yaml
from asyncdiff_worker.keys import MANIFEST_NAME
from asyncdiff_worker.spec import JobSpec

from asyncdiff_operator import podsecurity
from asyncdiff_operator.api import DEFAULT_IMAGE, GROUP, KIND, VERSION, AsyncDiffJobSpec
from asyncdiff_operator.layout import effective_spec, running_layout
from asyncdiff_operator.settings import OperatorSettings, S3Defaults
from asyncdiff_operator.shard_job import shard_env, shard_job_fields

SPEC_DIR: Final = "/etc/asyncdiff"
SPEC_FILE: Final = "job.yaml"
CONTAINER: Final = "worker"
LABEL_JOB: Final = f"{GROUP}/job"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
KUEUE_LABELS: Final = ("kueue.x-k8s.io/queue-name", "kueue.x-k8s.io/priority-class")
COMPLETION_INDEX: Final = "batch.kubernetes.io/job-completion-index"
MASTER_PORT: Final = 29500
S3_SECRET_DIR: Final = "/var/run/secrets/asyncdiff/s3"
MODEL_CACHE_DIR: Final = "/var/cache/asyncdiff"
"""The worker image's model cache VOLUME (Dockerfile); an emptyDir of ``worker.modelCacheSizeLimit`` goes here."""
MODEL_CACHE_VOLUME: Final = "model-cache"
DEFAULT_REQUESTS: Final = {"cpu": "1", "memory": "4Gi"}
"""Requests a worker gets for cpu or memory when neither the job nor the operator's defaults set them (never
BestEffort: such a pod is the first evicted under node pressure)."""
_NO_SETTINGS: Final = OperatorSettings()


MAX_ATTEMPT_DIGITS: Final = 4
"""Attempts up to 9999 fit in the child names (retries are bounded by backoffLimit <= 100)."""
MAX_INDEX_SUFFIX: Final = len("-15")
"""Indexed pods get the hostname ``<job>-<index>`` (numNodes <= 16), which must be a DNS label too."""
MAX_NAME_LENGTH: Final = 63 - len("-attempt-") - MAX_ATTEMPT_DIGITS - MAX_INDEX_SUFFIX
"""47: the longest AsyncDiffJob name whose children fit Kubernetes' 63-character limits: the Job name (its pods
carry it as the ``batch.kubernetes.io/job-name`` label value), the Indexed pods' hostnames, the headless Service
(``<name>-nodes``), and our ``asyncdiff.io/job`` label value. The CRD refuses longer names at apply time (CEL)."""
DNS_LABEL: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""Multi-node jobs: the Service name and the pods' hostnames are DNS labels, so the job name may have no dots and
must start with a letter."""


def name_problem(cr_name: str, num_nodes: int) -> str | None:
    """Why a CR name cannot name its children, or None (the CRD's CEL rules say the same at apply time)."""
    if len(cr_name) > MAX_NAME_LENGTH:
        return (
            f"metadata.name {cr_name!r} is {len(cr_name)} characters long; at most {MAX_NAME_LENGTH} are allowed, "
            f"because child names (<name>-attempt-<n>) must fit in 63"
        )
    if num_nodes > 1 and not re.match(DNS_LABEL, cr_name):
        return (
            f"metadata.name {cr_name!r} must be a DNS label (lowercase letters, digits and '-', starting with a "
            "letter) when runPolicy.numNodes > 1: it names the headless Service and the pods' hostnames"
        )
    return None


def service_name(cr_name: str) -> str:
    """The headless Service of a multi-node job (one per CR, shared by its attempts)."""
    return f"{cr_name}-nodes"


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


def worker_job_spec(spec: AsyncDiffJobSpec, s3: S3Defaults) -> JobSpec:
    """The worker's part of the spec, with the operator's S3 settings in the ``output`` fields the job left unset.

    A planned spec (``layout.effective_spec``) goes without the planner's inputs (devices, goal, quality): the layout
    is written in, and a worker that planned again could disagree with a running job scaled since (``layout._kept``).
    """
    data = spec.job_spec().model_dump(mode="json", by_alias=True, exclude_none=True)
    for planner_input in ("devices", "goal", "quality"):
        data["parallelism"].pop(planner_input, None)
    output = data["output"]
    if s3.endpoint_url and spec.output.endpoint_url is None:
        output["endpointUrl"] = s3.endpoint_url
    if s3.region and spec.output.region is None:
        output["region"] = s3.region
    if s3.force_path_style and "force_path_style" not in spec.output.model_fields_set:
        output["forcePathStyle"] = True
    return JobSpec.model_validate(data)


def output_location(spec: AsyncDiffJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    """Where the worker writes, as resolved with the operator's S3 defaults (recorded in ``status.output`` so that
    ``asyncdiff fetch`` reads from the same place): uri, endpointUrl, region, forcePathStyle. Never credentials."""
    output = worker_job_spec(spec, settings.s3).output
    location: dict[str, Any] = {"uri": output.uri, "forcePathStyle": bool(output.force_path_style)}
    if output.endpoint_url:
        location["endpointUrl"] = output.endpoint_url
    if output.region:
        location["region"] = output.region
    return location


def manifest_uri(cr_name: str, output_uri: str) -> str:
    """The result manifest's fixed place (``asyncdiff_worker.keys``: ``<output uri>/<job name>/manifest.json``)."""
    return f"{output_uri.rstrip('/')}/{cr_name}/{MANIFEST_NAME}"


def s3_credentials_secret(spec: AsyncDiffJobSpec, settings: OperatorSettings) -> str | None:
    """The job's own credentials Secret, else the operator's."""
    secret: str | None = spec.pod.s3_credentials_secret or settings.s3.credentials_secret
    return secret


def render_configmap(
    cr: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int, settings: OperatorSettings = _NO_SETTINGS
) -> dict[str, Any]:
    """The ConfigMap with the worker's job manifest (prompts travel here, never on a command line)."""
    meta = cr["metadata"]
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "spec": worker_job_spec(effective_spec(spec, running_layout(cr.get("status") or {})), settings.s3).model_dump(
            mode="json", by_alias=True, exclude_none=True
        ),
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


def multi_node_env(cr: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int) -> list[dict[str, Any]]:
    """torchrun's PET_* variables for one pod of an Indexed Job (Kubeflow Trainer's contract)."""
    meta = cr["metadata"]
    master = f"{child_name(meta['name'], attempt)}-0.{service_name(meta['name'])}.{meta.get('namespace')}"
    return [
        {"name": "PET_NNODES", "value": str(spec.run_policy.num_nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(spec.procs_per_node)},
        {
            "name": "PET_NODE_RANK",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
        },
        {"name": "PET_MASTER_ADDR", "value": f"{master}.svc.cluster.local"},
        {"name": "PET_MASTER_PORT", "value": str(MASTER_PORT)},
    ]


def _env(cr: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int, secret: str | None) -> list[dict[str, Any]]:
    meta = cr["metadata"]
    env: list[dict[str, Any]] = [
        {"name": "ASYNCDIFF_JOB_NAME", "value": meta["name"]},
        {"name": "ASYNCDIFF_JOB_UID", "value": str(meta.get("uid", ""))},
        {"name": "ASYNCDIFF_ATTEMPT", "value": str(attempt)},
        {"name": "ASYNCDIFF_PROGRESS", "value": "json"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if spec.run_policy.num_nodes > 1:
        env.extend(multi_node_env(cr, spec, attempt))
    else:
        env.extend(shard_env())
    if secret:
        env.append({"name": "ASYNCDIFF_S3_SECRET_DIR", "value": S3_SECRET_DIR})
    env.extend(podsecurity.writable_env(spec.pod))
    for var in spec.pod.env or []:
        env.append(var.model_dump(mode="json", by_alias=True, exclude_none=True))
    return env


def _resources(spec: AsyncDiffJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    given = spec.pod.resources or settings.worker.resources
    limits: dict[str, Any] = dict(given.limits or {}) if given else {}
    requests: dict[str, Any] = dict(given.requests or {}) if given else {}
    gpus = spec.gpus_per_node
    if gpus > 0:
        limits["nvidia.com/gpu"] = str(gpus)
        requests.pop("nvidia.com/gpu", None)
    limits = {k: str(v) for k, v in limits.items()}
    requests = {k: str(v) for k, v in requests.items()}
    for name, amount in DEFAULT_REQUESTS.items():
        if name not in requests and name not in limits:  # a limit alone already implies an equal request
            requests[name] = amount
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def worker_command(spec: AsyncDiffJobSpec) -> list[str]:
    """The container command. ``asyncdiff_worker.launch`` wraps torchrun (``--nproc`` = the processes of this pod)
    and exits with the root cause's documented code; bare torchrun would turn every failure into exit code 1."""
    return [
        "python",
        "-m",
        "asyncdiff_worker.launch",
        f"--nproc={spec.procs_per_node}",
        f"--spec={SPEC_DIR}/{SPEC_FILE}",
    ]


def _dump(items: list[Any]) -> list[dict[str, Any]]:
    return [i.model_dump(mode="json", by_alias=True, exclude_none=True) for i in items]


def _own_model_cache(spec: AsyncDiffJobSpec) -> bool:
    """Whether the job brings its own volume named like ours or its own mount at the model cache."""
    pod = spec.pod
    names = {v.get("name") for v in pod.volumes or []}
    paths = {m.mount_path.rstrip("/") for m in pod.volume_mounts or []}
    return MODEL_CACHE_VOLUME in names or MODEL_CACHE_DIR in paths


def _volumes(
    spec: AsyncDiffJobSpec, name: str, secret: str | None, settings: OperatorSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pod volumes and the worker's mounts: the job spec, the S3 credentials Secret, the model cache, then the
    user's."""
    pod = spec.pod
    volumes: list[dict[str, Any]] = [{"name": "job-spec", "configMap": {"name": name}}]
    mounts: list[dict[str, Any]] = [{"name": "job-spec", "mountPath": SPEC_DIR, "readOnly": True}]
    if secret:
        volumes.append({"name": "s3-credentials", "secret": {"secretName": secret}})
        mounts.append({"name": "s3-credentials", "mountPath": S3_SECRET_DIR, "readOnly": True})
    cache_limit = settings.worker.model_cache_size_limit
    if not _own_model_cache(spec):  # always: the root filesystem is read-only
        volumes.append({"name": MODEL_CACHE_VOLUME, "emptyDir": {"sizeLimit": str(cache_limit)} if cache_limit else {}})
        mounts.append({"name": MODEL_CACHE_VOLUME, "mountPath": MODEL_CACHE_DIR})
    tmp_limit = settings.worker.tmp_size_limit
    tmp_volumes, tmp_mounts = podsecurity.tmp_volume(spec.pod, str(tmp_limit) if tmp_limit else None)
    volumes.extend(tmp_volumes)
    mounts.extend(tmp_mounts)
    volumes.extend(dict(v) for v in pod.volumes or [])
    mounts.extend(_dump(pod.volume_mounts or []))
    return volumes, mounts


def _pod_spec(cr: dict[str, Any], spec: AsyncDiffJobSpec, attempt: int, settings: OperatorSettings) -> dict[str, Any]:
    meta = cr["metadata"]
    pod = spec.pod
    defaults = settings.worker
    secret = s3_credentials_secret(spec, settings)
    volumes, mounts = _volumes(spec, child_name(meta["name"], attempt), secret, settings)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": pod.image or settings.worker_image or DEFAULT_IMAGE,
        "command": worker_command(spec),
        "env": _env(cr, spec, attempt, secret),
        "resources": _resources(spec, settings),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": podsecurity.container_security_context(pod),
    }
    if pod.image is None and settings.worker_image_pull_policy:
        container["imagePullPolicy"] = settings.worker_image_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,  # workers never call the API server
        "securityContext": podsecurity.pod_security_context(pod),
    }
    if spec.run_policy.num_nodes > 1:
        pod_spec["subdomain"] = service_name(meta["name"])
        pod_spec["containers"][0]["ports"] = [{"name": "rendezvous", "containerPort": MASTER_PORT}]
    node_selector = pod.node_selector or defaults.node_selector
    tolerations = pod.tolerations or defaults.tolerations
    optional: dict[str, Any] = {
        "serviceAccountName": pod.service_account_name or defaults.service_account_name,
        "nodeSelector": dict(node_selector) if node_selector else None,
        "tolerations": _dump(tolerations) if tolerations else None,
        "affinity": dict(pod.affinity) if pod.affinity else None,
        "imagePullSecrets": _dump(pod.image_pull_secrets) if pod.image_pull_secrets else None,
        "priorityClassName": pod.priority_class_name,
        "hostNetwork": pod.host_network,
        "hostPID": pod.host_pid,
        "hostIPC": pod.host_ipc,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    return pod_spec


DISRUPTION_POLICY: Final = {
    "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
}
"""Evicted or preempted pods are replaced by the Job controller and never fail the attempt."""


def render_job(
    cr: dict[str, Any],
    spec: AsyncDiffJobSpec,
    attempt: int,
    settings: OperatorSettings = _NO_SETTINGS,
    suspend: bool = False,
) -> dict[str, Any]:
    """The batch/v1 Job of one attempt: numNodes pods (Indexed when more than one), restartPolicy Never,
    backoffLimit 0, disruptions ignored; operator-wide defaults from ``settings`` where the job sets nothing;
    created suspended (``spec.suspend``) for a job created with ``runPolicy.suspend``."""
    meta = cr["metadata"]
    spec = effective_spec(spec, running_layout(cr.get("status") or {}))
    name = child_name(meta["name"], attempt)
    labels = child_labels(cr, attempt)
    pod_labels = {**(spec.pod.labels or {}), **labels}
    template_meta: dict[str, Any] = {"labels": pod_labels}
    if spec.pod.annotations:
        template_meta["annotations"] = dict(spec.pod.annotations)
    nodes = spec.run_policy.num_nodes
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "completions": nodes,
        "parallelism": nodes,
        "podFailurePolicy": DISRUPTION_POLICY,
        "template": {"metadata": template_meta, "spec": _pod_spec(cr, spec, attempt, settings)},
    }
    if nodes > 1:
        job_spec["completionMode"] = "Indexed"
    else:  # shards: an Indexed Job retried per index by the Job controller (shard_job.py)
        del job_spec["backoffLimit"]
        job_spec.update(shard_job_fields(cr, spec))
    if suspend:
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": labels,
            "ownerReferences": [owner_reference(cr)],
        },
        "spec": job_spec,
    }


def render_service(cr: dict[str, Any]) -> dict[str, Any]:
    """The headless Service giving multi-node pods stable names; not-ready addresses are published so rank 0
    resolves while the others wait for it at the rendezvous."""
    meta = cr["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(meta["name"]),
            "namespace": meta.get("namespace"),
            "labels": {LABEL_JOB: meta["name"]},
            "ownerReferences": [owner_reference(cr)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_JOB: meta["name"]},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }
