"""The AsyncDiffJob custom resource's spec: the worker's job spec plus the operator's run policy and pod override.

Why one pydantic model: the CRD schema (``crd.py``), the operator's validation of a CR and the child rendering all
read the same model, and the job part is the worker's own ``JobSpec`` (never copied), so the worker and the operator
cannot disagree on the job format. Reserved env names (torchrun's rendezvous variables) are rejected here because
the operator sets them itself; S3 credentials may only come from Secrets (``pod.s3CredentialsSecret`` or an env
``valueFrom.secretKeyRef``), never as literal env values, because the spec is readable by anyone who can read jobs.

GPUs and nodes: a job needs ``devices_per_group = (modelN + stride - 1) x (2 if cfgParallel)`` processes.
``runPolicy.numNodes`` pods each run ``devices_per_group / numNodes`` of them (numNodes must divide it).
``runPolicy.gpusPerNode`` defaults to that same number; set it to 0 for CPU-only pods (gloo); any other value must
satisfy ``gpusPerNode x numNodes == devices_per_group``.
The CRD checks the same rules with CEL (``crd.py``), so a wrong CR is refused at ``kubectl apply``.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from asyncdiff_worker.spec import JobSpec
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator
from pydantic.alias_generators import to_camel

from asyncdiff_operator.podsecurity import ContainerSecurityContext, PodSecurityContext

GROUP: Final = "asyncdiff.io"
VERSION: Final = "v1alpha1"
KIND: Final = "AsyncDiffJob"
PLURAL: Final = "asyncdiffjobs"
SINGULAR: Final = "asyncdiffjob"
SHORT_NAME: Final = "adj"

RESERVED_ENV: Final = frozenset({"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"})
RESERVED_ENV_PREFIX: Final = "PET_"
SECRET_ONLY_ENV: Final = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
"""Credentials: accepted only as ``valueFrom.secretKeyRef``, never as a literal ``value``."""
RESERVED_VOLUMES: Final = frozenset({"job-spec", "s3-credentials"})

Quantity = int | str
"""A Kubernetes quantity (``1``, ``500m``, ``16Gi``); x-kubernetes-int-or-string in the CRD."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, protected_namespaces=(), frozen=True
    )


class RunPolicy(_Model):
    """How the operator runs, retries and cleans up the job."""

    backoff_limit: int = Field(
        default=3, ge=0, le=100, description="Retries of infrastructure failures; user errors are never retried."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job (reason DeadlineExceeded) once it has run this long."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the AsyncDiffJob this long after it finished (outputs are kept)."
    )
    suspend: bool = Field(default=False, description="Do not start (or stop) the job's pods while true.")
    stall_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="Fail the attempt (reason Stalled, retried) when the worker shows no progress this long; "
        "default: the operator's ASYNCDIFF_STALL_SECONDS (600).",
    )
    num_nodes: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Pods (nodes); more than 1 runs an Indexed Job plus a headless Service. Must divide the devices.",
    )
    gpus_per_node: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="GPUs per pod; default devices / numNodes; 0 runs CPU-only pods (gloo). "
        "Otherwise gpusPerNode x numNodes must equal the devices ((modelN + stride - 1) x (2 if cfgParallel)).",
    )


class SecretKeySelector(_Model):
    """A key of a Secret or ConfigMap."""

    name: str = Field(min_length=1, max_length=253, description="Object name.")
    key: str = Field(min_length=1, max_length=253, description="Key in the object.")
    optional: bool | None = Field(default=None, description="Whether the object or key may be missing.")


class EnvVarSource(_Model):
    """Where an env value comes from (credentials: only by Secret reference)."""

    secret_key_ref: SecretKeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: SecretKeySelector | None = Field(default=None, description="A key of a ConfigMap.")


def _env_rules() -> list[JsonValue]:
    reserved = ", ".join(f"'{n}'" for n in sorted(RESERVED_ENV))
    secret_only = ", ".join(f"'{n}'" for n in sorted(SECRET_ONLY_ENV))
    return [
        {
            "rule": f"!(self.name in [{reserved}]) && !self.name.startsWith('{RESERVED_ENV_PREFIX}')",
            "fieldPath": ".name",
            "message": "is reserved: the operator sets MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK and "
            "PET_* itself",
        },
        {
            "rule": f"!(self.name in [{secret_only}]) || !has(self.value)",
            "fieldPath": ".value",
            "message": "S3 credentials may not be literal values: use valueFrom.secretKeyRef or "
            "pod.s3CredentialsSecret",
        },
    ]


class EnvVar(_Model):
    """One environment variable of the worker container."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _env_rules()})

    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Name.")
    value: str | None = Field(default=None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Value from a Secret or ConfigMap key.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIX):
            raise ValueError(
                f"{name} is reserved: the operator sets MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK "
                "and PET_* itself"
            )
        return name


class VolumeMount(_Model):
    """A mount of one of ``pod.volumes`` into the worker container."""

    name: str = Field(min_length=1, max_length=63, description="Volume name.")
    mount_path: str = Field(min_length=1, max_length=1024, pattern=r"^/", description="Absolute path in the container.")
    sub_path: str | None = Field(default=None, max_length=1024, description="Sub-path of the volume.")
    read_only: bool | None = Field(default=None, description="Mount read-only.")


class LocalObjectReference(_Model):
    """A reference to an object of the same namespace by name."""

    name: str = Field(min_length=1, max_length=253, description="Object name.")


class Resources(_Model):
    """Container resources; nvidia.com/gpu is set from gpusPerNode."""

    limits: dict[str, Quantity] | None = Field(default=None, description="Resource limits.")
    requests: dict[str, Quantity] | None = Field(default=None, description="Resource requests.")


class Toleration(_Model):
    """A pod toleration."""

    key: str | None = Field(default=None, max_length=317, description="Taint key.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect."
    )
    toleration_seconds: int | None = Field(default=None, description="For NoExecute: how long the pod stays.")


class PodOverride(_Model):
    """Settings of the worker pod."""

    image: str | None = Field(default=None, min_length=1, max_length=1024, description="Worker image.")
    resources: Resources | None = Field(default=None, description="Container resources (besides GPUs).")
    env: list[EnvVar] | None = Field(default=None, max_length=128, description="Extra environment variables.")
    service_account_name: str | None = Field(
        default=None, min_length=1, max_length=253, description="Service account of the pod."
    )
    node_selector: dict[str, str] | None = Field(default=None, description="Node selector.")
    tolerations: list[Toleration] | None = Field(default=None, max_length=64, description="Tolerations.")
    affinity: dict[str, Any] | None = Field(default=None, description="Pod affinity (core/v1 Affinity), as is.")
    volumes: list[dict[str, Any]] | None = Field(
        default=None, max_length=64, description="Extra pod volumes (core/v1 Volume), as is."
    )
    volume_mounts: list[VolumeMount] | None = Field(
        default=None, max_length=64, description="Mounts of pod.volumes into the worker container."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Secrets for pulling the worker image."
    )
    priority_class_name: str | None = Field(default=None, min_length=1, max_length=253, description="Pod priority.")
    labels: dict[str, str] | None = Field(default=None, description="Extra pod labels (the operator's own win).")
    annotations: dict[str, str] | None = Field(default=None, description="Extra pod annotations.")
    s3_credentials_secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="A Secret with keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and optionally AWS_SESSION_TOKEN), "
        "mounted read-only for the worker's S3 access.",
    )
    security_context: PodSecurityContext | None = Field(
        default=None, description="Pod security settings; the default meets the restricted Pod Security Standard."
    )
    container_security_context: ContainerSecurityContext | None = Field(
        default=None, description="Worker container security settings (default: restricted, read-only root)."
    )
    host_network: bool | None = Field(
        default=None, description="Use the node's network namespace (refused by default)."
    )
    host_pid: bool | None = Field(
        default=None, alias="hostPID", description="Use the node's PID namespace (refused by default)."
    )
    host_ipc: bool | None = Field(
        default=None, alias="hostIPC", description="Use the node's IPC namespace (refused by default)."
    )

    @field_validator("env")
    @classmethod
    def _credentials_by_reference(cls, env: list[EnvVar] | None) -> list[EnvVar] | None:
        for var in env or []:
            if var.name in SECRET_ONLY_ENV and var.value is not None:
                raise ValueError(
                    f"{var.name} may not have a literal value: use valueFrom.secretKeyRef or pod.s3CredentialsSecret"
                )
        return env

    @field_validator("volumes")
    @classmethod
    def _volume_names(cls, volumes: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for volume in volumes or []:
            name = volume.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError("every volume needs a name")
            if name in RESERVED_VOLUMES:
                raise ValueError(f"volume name {name} is reserved for the operator's own volumes")
        return volumes


class AsyncDiffJobSpec(JobSpec):  # type: ignore[misc]  # JobSpec is Any when mypy checks this package alone
    """The ``spec`` of an AsyncDiffJob: the worker's job spec plus runPolicy and pod."""

    run_policy: RunPolicy = Field(default_factory=lambda: RunPolicy(), description="Retries, deadline, TTL, GPUs.")
    pod: PodOverride = Field(default_factory=lambda: PodOverride(), description="Worker pod settings.")

    @model_validator(mode="after")
    def _devices_fit_nodes(self) -> AsyncDiffJobSpec:
        devices, nodes, gpus = self.devices_per_group, self.run_policy.num_nodes, self.run_policy.gpus_per_node
        formula = self.parallelism.devices_formula()
        if devices % nodes:
            raise ValueError(f"runPolicy.numNodes: {nodes} does not divide the job's devices ({formula})")
        if gpus and gpus * nodes != devices and self.parallelism.devices is None:
            raise ValueError(
                f"runPolicy.gpusPerNode: {gpus} x numNodes {nodes} must equal the job's devices ({formula})"
            )
        return self

    @model_validator(mode="after")
    def _multi_node_is_one_group(self) -> AsyncDiffJobSpec:
        if self.run_policy.num_nodes > 1 and self.parallelism.replicas > 1:
            raise ValueError(
                f"runPolicy.numNodes: {self.run_policy.num_nodes} nodes run one generation group; "
                f"parallelism.replicas {self.parallelism.replicas} needs numNodes 1 (each replica is one pod)"
            )
        if self.parallelism.devices is not None:
            if self.run_policy.num_nodes > 1:
                raise ValueError(
                    "parallelism.devices: the planner needs runPolicy.numNodes 1; give a multi-node job an explicit "
                    "modelN and stride instead"
                )
            if self.run_policy.gpus_per_node:
                raise ValueError(
                    "runPolicy.gpusPerNode: leave it out (or 0 for CPU-only pods) with parallelism.devices: each pod "
                    "gets the GPUs of one planned group"
                )
        return self

    def job_spec(self) -> JobSpec:
        """The worker's part only (what goes into the child ConfigMap)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"run_policy", "pod"})
        return JobSpec.model_validate(data)

    @property
    def procs_per_node(self) -> int:
        """Worker processes in each pod: devices_per_group / numNodes."""
        return int(self.devices_per_group) // self.run_policy.num_nodes

    @property
    def gpus_per_node(self) -> int:
        """GPUs each pod asks for (default: one per process)."""
        value = self.run_policy.gpus_per_node
        return self.procs_per_node if value is None else value


def parse_spec(spec: dict[str, Any]) -> AsyncDiffJobSpec:
    """Validate a CR's ``spec`` (raises pydantic.ValidationError)."""
    parsed: AsyncDiffJobSpec = AsyncDiffJobSpec.model_validate(spec)
    return parsed


DEFAULT_IMAGE: Final = "ghcr.io/asyncdiff/asyncdiff-worker:0.1.0"
