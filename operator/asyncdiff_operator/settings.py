"""The operator's settings from its environment, parsed once at start-up into one typed object.

Why one place: the Helm chart passes the operator-wide job defaults (worker image and pull policy, worker pod
defaults, S3 endpoint settings and credentials Secret) and the tuning knobs as environment variables of the operator
container. Parsing them here, once, means a bad value (``ASYNCDIFF_WORKER_DEFAULTS`` that is not JSON, a pull policy
that Kubernetes would refuse) stops the operator at start-up with a message naming the variable, instead of
failing every job later; and the renderer (``children.py``) gets plain typed values, so its precedence rules (the
job's own setting, then the operator's, then the built-in default) are unit-tested without an environment.

An unset or empty variable means "no operator-wide default" (the chart passes every variable, empty when its value
is empty). With none of them set, rendering is exactly what it was before these settings existed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from asyncdiff_operator.api import Quantity, Resources, Toleration
from asyncdiff_operator.status import DEFAULT_PENDING_TIMEOUT, DEFAULT_STALL_SECONDS

DEFAULT_RECONCILE_INTERVAL: Final = 1.0
DEFAULT_PROGRESS_INTERVAL: Final = 10.0
"""Seconds between two log-tail samples of one running shard of a job (``shard_kube.py``)."""
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off", ""})


class SettingsError(ValueError):
    """A setting in the environment is invalid; the message names the variable."""


class WorkerDefaults(BaseModel):
    """The chart's ``worker`` values (``ASYNCDIFF_WORKER_DEFAULTS``): defaults of every job's worker pod.

    A job's own ``spec.pod`` field replaces the default of the same field as a whole (no deep merge: merging
    resources or node selectors key by key could build a pod the user never asked for, e.g. requests above limits).
    """

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    resources: Resources | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    service_account_name: str | None = Field(default=None, min_length=1, max_length=253)
    model_cache_size_limit: Quantity | None = Field(
        default=None, description="sizeLimit of the emptyDir mounted at the worker image's model cache VOLUME."
    )
    tmp_size_limit: Quantity | None = Field(
        default=None, description="sizeLimit of the emptyDir mounted at /tmp (the root filesystem is read-only)."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """The chart's defaults are empty (``{}``, ``[]``, ``""``): no default."""
        return None if value in ("", {}, []) else value

    @field_validator("tolerations", mode="before")
    @classmethod
    def _empty_effect(cls, value: Any) -> Any:
        """An empty ``effect`` (allowed by the chart's schema) matches every effect, as an absent one does."""
        if isinstance(value, list):
            return [{k: v for k, v in t.items() if not (k == "effect" and v == "")} for t in value]
        return value


class S3Defaults(BaseModel):
    """S3 settings that fill the ``spec.output`` fields a job left unset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = Field(default=None, max_length=1024, pattern=r"^https?://[^\s/]+(/.*)?$")
    region: str | None = Field(default=None, max_length=64, pattern=r"^[a-z0-9-]+$")
    force_path_style: bool = False
    credentials_secret: str | None = Field(default=None, max_length=253)


KUBE_DNS: Final = (
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    },
)


class NetworkPolicySettings(BaseModel):
    """The chart's ``networkPolicy`` values (``ASYNCDIFF_NETWORK_POLICY``): a NetworkPolicy per job (``netpol.py``)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    enabled: bool = True
    s3_peers: list[dict[str, Any]] = Field(
        default_factory=list, description="NetworkPolicyPeers of the S3 endpoint; empty: any address on its port."
    )
    s3_port: int | None = Field(default=None, ge=1, le=65535, description="Default: the job's endpoint's port.")
    dns_peers: list[dict[str, Any]] = Field(default_factory=lambda: [dict(p) for p in KUBE_DNS])

    @field_validator("s3_port", mode="before")
    @classmethod
    def _zero_is_unset(cls, value: Any) -> Any:
        return None if value in (0, "", None) else value


class OperatorSettings(BaseModel):
    """Everything the operator reads from its environment (see ``from_env`` for the variable names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reconcile_interval: float = Field(default=DEFAULT_RECONCILE_INTERVAL, gt=0)
    stall_seconds: float = Field(default=DEFAULT_STALL_SECONDS, gt=0)
    progress_interval: float = Field(default=DEFAULT_PROGRESS_INTERVAL, gt=0)
    pending_timeout: float = Field(default=DEFAULT_PENDING_TIMEOUT, gt=0)
    worker_image: str | None = Field(default=None, max_length=1024)
    worker_image_pull_policy: PullPolicy | None = None
    worker: WorkerDefaults = Field(default_factory=WorkerDefaults)
    s3: S3Defaults = Field(default_factory=S3Defaults)
    allow_privileged_pods: bool = False
    network_policy: NetworkPolicySettings | None = None
    """A NetworkPolicy per job when set (``ASYNCDIFF_NETWORK_POLICY``, chart value ``networkPolicy``)."""
    """Let ``spec.pod`` take worker pods outside the restricted Pod Security Standard (``podsecurity.refusals``)."""


def _str(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = _str(env, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r}: not a number") from None
    if not value > 0:  # also rejects nan
        raise SettingsError(f"{name}={text!r}: must be a positive number of seconds")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    text = env.get(name, "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"{name}={text!r}: expected true or false")


def _validated(name: str, build: Any) -> Any:
    try:
        return build()
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"{name}: {errors}") from None


def _worker_defaults(env: Mapping[str, str]) -> WorkerDefaults:
    name = "ASYNCDIFF_WORKER_DEFAULTS"
    text = _str(env, name)
    if text is None:
        return WorkerDefaults()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not valid JSON: {exc}") from None
    if data is None:
        return WorkerDefaults()
    if not isinstance(data, dict):
        raise SettingsError(f"{name} must be a JSON object (the chart's `worker` values), not {type(data).__name__}")
    defaults: WorkerDefaults = _validated(name, lambda: WorkerDefaults.model_validate(data))
    return defaults


def _network_policy(env: Mapping[str, str]) -> NetworkPolicySettings | None:
    name = "ASYNCDIFF_NETWORK_POLICY"
    text = _str(env, name)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{name} must be a JSON object (the chart's `networkPolicy` values)")
    found: NetworkPolicySettings = _validated(name, lambda: NetworkPolicySettings.model_validate(data))
    return found if found.enabled else None


def from_env(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Parse the operator's settings from ``env`` (default ``os.environ``); raises SettingsError on a bad value.

    ASYNCDIFF_RECONCILE_INTERVAL, ASYNCDIFF_STALL_SECONDS, ASYNCDIFF_PROGRESS_INTERVAL,
    ASYNCDIFF_PENDING_TIMEOUT_SECONDS (seconds),
    ASYNCDIFF_WORKER_IMAGE,
    ASYNCDIFF_WORKER_IMAGE_PULL_POLICY, ASYNCDIFF_WORKER_DEFAULTS (JSON), ASYNCDIFF_S3_ENDPOINT, ASYNCDIFF_S3_REGION,
    ASYNCDIFF_S3_FORCE_PATH_STYLE (true/false), ASYNCDIFF_S3_CREDENTIALS_SECRET, ASYNCDIFF_ALLOW_PRIVILEGED_PODS
    (true/false), ASYNCDIFF_NETWORK_POLICY (JSON).
    """
    env = os.environ if env is None else env
    reconcile_interval = _float(env, "ASYNCDIFF_RECONCILE_INTERVAL", DEFAULT_RECONCILE_INTERVAL)
    stall_seconds = _float(env, "ASYNCDIFF_STALL_SECONDS", DEFAULT_STALL_SECONDS)
    progress_interval = _float(env, "ASYNCDIFF_PROGRESS_INTERVAL", DEFAULT_PROGRESS_INTERVAL)
    pending_timeout = _float(env, "ASYNCDIFF_PENDING_TIMEOUT_SECONDS", DEFAULT_PENDING_TIMEOUT)
    image = _str(env, "ASYNCDIFF_WORKER_IMAGE")
    policy = _str(env, "ASYNCDIFF_WORKER_IMAGE_PULL_POLICY")
    if policy is not None and policy not in ("Always", "IfNotPresent", "Never"):
        raise SettingsError(f"ASYNCDIFF_WORKER_IMAGE_PULL_POLICY={policy!r}: expected Always, IfNotPresent or Never")
    worker = _worker_defaults(env)
    endpoint = _str(env, "ASYNCDIFF_S3_ENDPOINT")
    region = _str(env, "ASYNCDIFF_S3_REGION")
    secret = _str(env, "ASYNCDIFF_S3_CREDENTIALS_SECRET")
    _validated("ASYNCDIFF_S3_ENDPOINT", lambda: S3Defaults(endpoint_url=endpoint))
    _validated("ASYNCDIFF_S3_REGION", lambda: S3Defaults(region=region))
    _validated("ASYNCDIFF_S3_CREDENTIALS_SECRET", lambda: S3Defaults(credentials_secret=secret))
    s3 = S3Defaults(
        endpoint_url=endpoint,
        region=region,
        force_path_style=_bool(env, "ASYNCDIFF_S3_FORCE_PATH_STYLE"),
        credentials_secret=secret,
    )
    return OperatorSettings(
        reconcile_interval=reconcile_interval,
        stall_seconds=stall_seconds,
        progress_interval=progress_interval,
        pending_timeout=pending_timeout,
        worker_image=image,
        worker_image_pull_policy=policy,  # type: ignore[arg-type]  # checked against PullPolicy above
        worker=worker,
        s3=s3,
        allow_privileged_pods=_bool(env, "ASYNCDIFF_ALLOW_PRIVILEGED_PODS"),
        network_policy=_network_policy(env),
    )
