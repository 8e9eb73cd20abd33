"""The AsyncDiffJob custom resource's spec: the worker's job spec plus the operator's run policy and pod override.

Why one pydantic model: the CRD schema (``crd.py``), the operator's validation of a CR and the child rendering all
read the same model, and the job part is the worker's own ``JobSpec`` (never copied), so the worker and the operator
cannot disagree on the job format. Reserved env names (torchrun's rendezvous variables) are rejected here because
the operator sets them itself.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from asyncdiff_worker.spec import JobSpec
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

GROUP: Final = "asyncdiff.io"
VERSION: Final = "v1alpha1"
KIND: Final = "AsyncDiffJob"
PLURAL: Final = "asyncdiffjobs"
SINGULAR: Final = "asyncdiffjob"
SHORT_NAME: Final = "adj"

RESERVED_ENV: Final = frozenset({"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"})
RESERVED_ENV_PREFIX: Final = "PET_"

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
    num_nodes: Literal[1] = Field(default=1, description="Nodes; only 1 is supported in this version.")
    gpus_per_node: int | None = Field(
        default=None, ge=0, le=64, description="GPUs per node; default modelN + stride - 1 (the job's devices)."
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


class EnvVar(_Model):
    """One environment variable of the worker container."""

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


class AsyncDiffJobSpec(JobSpec):  # type: ignore[misc]  # JobSpec is Any when mypy checks this package alone
    """The ``spec`` of an AsyncDiffJob: the worker's job spec plus runPolicy and pod."""

    run_policy: RunPolicy = Field(default_factory=lambda: RunPolicy(), description="Retries, deadline, TTL, GPUs.")
    pod: PodOverride = Field(default_factory=lambda: PodOverride(), description="Worker pod settings.")

    def job_spec(self) -> JobSpec:
        """The worker's part only (what goes into the child ConfigMap)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"run_policy", "pod"})
        return JobSpec.model_validate(data)

    @property
    def gpus_per_node(self) -> int:
        """GPUs the pod asks for."""
        value = self.run_policy.gpus_per_node
        return self.devices if value is None else value


def parse_spec(spec: dict[str, Any]) -> AsyncDiffJobSpec:
    """Validate a CR's ``spec`` (raises pydantic.ValidationError)."""
    parsed: AsyncDiffJobSpec = AsyncDiffJobSpec.model_validate(spec)
    return parsed


DEFAULT_IMAGE: Final = "ghcr.io/asyncdiff/asyncdiff-worker:0.1.0"
