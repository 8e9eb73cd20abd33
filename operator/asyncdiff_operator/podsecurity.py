"""The worker pod's security: the Pod Security Standard ``restricted`` by default, writable folders only where the
worker writes, and the ``spec.pod`` overrides that may weaken it only when the operator allows them.

Why one module: every pod the operator creates must be admitted by a namespace that enforces ``restricted`` (the
standard platform teams apply to workload namespaces), and a compromised worker (it runs model code on user inputs)
should hold as little as possible. So each pod runs as the worker image's numeric uid 10001 with
``runAsNonRoot``, no privilege escalation, every capability dropped, the runtime's default seccomp profile, a
read-only root filesystem and no service account token (workers never call the API server; rendezvous goes through
the headless Service). The worker writes only to ``/tmp`` and to the cache volume (models, Hugging Face, torch,
Triton and CUDA caches); both are emptyDirs and the environment points every library there. Kubeflow Trainer and
KubeRay leave this to the user's pod template; here it is the default, and a job may change it only through the
typed fields below.

Overrides. ``spec.pod.securityContext`` (pod level), ``spec.pod.containerSecurityContext``, ``hostNetwork``,
``hostPID``, ``hostIPC`` and ``spec.pod.volumes`` can express everything ``restricted`` forbids (privileged,
added capabilities, root, host namespaces, hostPath and other node volume types, no seccomp). ``refusals`` lists
each such setting by field; the operator fails the job with those messages (reason ``PodSecurityRefused``, never
retried) unless its setting ``ASYNCDIFF_ALLOW_PRIVILEGED_PODS`` (chart value ``security.allowPrivilegedPods``, off by
default) is on. Harmless overrides (another non-root uid, fsGroup, supplemental groups, a writable root filesystem,
a Localhost seccomp profile, adding NET_BIND_SERVICE) are always allowed: ``restricted`` allows them too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from asyncdiff_operator.api import PodOverride

WORKER_UID: Final = 10001
"""The worker image's numeric user and group (Dockerfile ``USER 10001:10001``)."""
TMP_DIR: Final = "/tmp"
TMP_VOLUME: Final = "tmp"
CACHE_DIR: Final = "/var/cache/asyncdiff"
"""The worker image's cache VOLUME; the operator mounts an emptyDir here (children.MODEL_CACHE_VOLUME)."""
ALLOWED_CAPABILITIES: Final = frozenset({"NET_BIND_SERVICE"})
"""The only capability ``restricted`` lets a container add."""
RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
"""Volume sources ``restricted`` admits; every other one (hostPath, nfs, ...) reaches outside the pod."""
ALLOW_SETTING: Final = "ASYNCDIFF_ALLOW_PRIVILEGED_PODS"

WRITABLE_ENV: Final = (
    ("HOME", TMP_DIR),
    ("TMPDIR", TMP_DIR),
    ("MPLCONFIGDIR", f"{TMP_DIR}/matplotlib"),
    ("XDG_CACHE_HOME", f"{CACHE_DIR}/xdg"),
    ("ASYNCDIFF_MODEL_CACHE", f"{CACHE_DIR}/models"),
    ("HF_HOME", f"{CACHE_DIR}/huggingface"),
    ("TORCH_HOME", f"{CACHE_DIR}/torch"),
    ("TRITON_CACHE_DIR", f"{CACHE_DIR}/triton"),
    ("CUDA_CACHE_PATH", f"{CACHE_DIR}/nv"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
)
"""Where the worker and its libraries write, all inside the two emptyDirs (the root filesystem is read-only)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class SeccompProfile(_Model):
    """A seccomp profile (core/v1 SeccompProfile)."""

    type: Literal["RuntimeDefault", "Localhost", "Unconfined"] = Field(description="Profile kind.")
    localhost_profile: str | None = Field(default=None, max_length=4096, description="Profile file (Localhost).")


class Capabilities(_Model):
    """Linux capabilities to add or drop."""

    add: list[str] | None = Field(default=None, max_length=64, description="Capabilities to add.")
    drop: list[str] | None = Field(default=None, max_length=64, description="Capabilities to drop (default ALL).")


class PodSecurityContext(_Model):
    """Pod-level security settings of the worker pod; each set field replaces the operator's default."""

    run_as_user: int | None = Field(default=None, ge=0, description="User id (default 10001, the image's user).")
    run_as_group: int | None = Field(default=None, ge=0, description="Group id (default 10001).")
    run_as_non_root: bool | None = Field(default=None, description="Refuse to start as root (default true).")
    fs_group: int | None = Field(default=None, ge=0, description="Group owning the pod's volumes (default 10001).")
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = Field(
        default=None, description="When to change volume ownership to fsGroup."
    )
    supplemental_groups: list[int] | None = Field(default=None, max_length=32, description="Extra group ids.")
    seccomp_profile: SeccompProfile | None = Field(default=None, description="Default RuntimeDefault.")


class ContainerSecurityContext(_Model):
    """Security settings of the worker container; each set field replaces the operator's default."""

    privileged: bool | None = Field(default=None, description="Privileged container (default false).")
    allow_privilege_escalation: bool | None = Field(default=None, description="Default false.")
    capabilities: Capabilities | None = Field(default=None, description="Default: drop ALL, add none.")
    read_only_root_filesystem: bool | None = Field(default=None, description="Default true.")
    run_as_user: int | None = Field(default=None, ge=0, description="User id of the container.")
    run_as_group: int | None = Field(default=None, ge=0, description="Group id of the container.")
    run_as_non_root: bool | None = Field(default=None, description="Refuse to start as root.")
    seccomp_profile: SeccompProfile | None = Field(default=None, description="Seccomp profile of the container.")


def _dump(model: BaseModel | None) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) if model is not None else {}


def pod_security_context(pod: PodOverride) -> dict[str, Any]:
    """The pod's ``securityContext``: restricted defaults, then the job's own fields."""
    own = _dump(pod.security_context)
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "fsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
        **own,
    }
    if context["runAsUser"] == 0 and "runAsNonRoot" not in own:
        del context["runAsNonRoot"]  # the kubelet would refuse to start a root container under runAsNonRoot
    return context


def container_security_context(pod: PodOverride) -> dict[str, Any]:
    """The worker container's ``securityContext``: restricted defaults, then the job's own fields."""
    own = _dump(pod.container_security_context)
    capabilities = own.pop("capabilities", {})
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": capabilities.get("drop", ["ALL"])},
        **own,
    }
    if capabilities.get("add"):
        context["capabilities"]["add"] = capabilities["add"]
    if context["privileged"] and "allowPrivilegeEscalation" not in own:
        del context["allowPrivilegeEscalation"]  # Kubernetes refuses privileged with allowPrivilegeEscalation false
    if own.get("runAsUser") == 0 and "runAsNonRoot" not in own:
        context["runAsNonRoot"] = False
    return context


def _own_volume(pod: PodOverride, name: str, path: str) -> bool:
    names = {v.get("name") for v in pod.volumes or []}
    paths = {m.mount_path.rstrip("/") for m in pod.volume_mounts or []}
    return name in names or path in paths


def tmp_volume(pod: PodOverride, size_limit: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The writable ``/tmp`` emptyDir (volumes, mounts), unless the job mounts something there itself."""
    if _own_volume(pod, TMP_VOLUME, TMP_DIR):
        return [], []
    empty_dir: dict[str, Any] = {"sizeLimit": size_limit} if size_limit else {}
    return [{"name": TMP_VOLUME, "emptyDir": empty_dir}], [{"name": TMP_VOLUME, "mountPath": TMP_DIR}]


def writable_env(pod: PodOverride) -> list[dict[str, Any]]:
    """HOME, TMPDIR and the library cache variables, except those the job sets itself (the job's value wins)."""
    own = {var.name for var in pod.env or []}
    return [{"name": name, "value": value} for name, value in WRITABLE_ENV if name not in own]


def _volume_type(volume: dict[str, Any]) -> str:
    return next((key for key in volume if key != "name"), "unknown")


def refusals(pod: PodOverride) -> list[str]:
    """Each ``spec.pod`` setting that would take the worker pod outside ``restricted``, named by field."""
    out: list[str] = []
    base = "spec.pod"
    for attr, field in (("host_network", "hostNetwork"), ("host_pid", "hostPID"), ("host_ipc", "hostIPC")):
        if getattr(pod, attr):
            out.append(f"{base}.{field}: true shares a namespace of the node with the worker")
    for i, volume in enumerate(pod.volumes or []):
        kind = _volume_type(volume)
        if kind not in RESTRICTED_VOLUME_TYPES:
            out.append(
                f"{base}.volumes[{i}].{kind} (volume {volume.get('name')!r}): a {kind} volume reaches outside the pod; "
                "use a persistentVolumeClaim, csi or ephemeral volume"
            )
    for where, context in (
        ("securityContext", pod.security_context),
        ("containerSecurityContext", pod.container_security_context),
    ):
        if context is None:
            continue
        path = f"{base}.{where}"
        if context.run_as_user == 0:
            out.append(f"{path}.runAsUser: 0 runs the worker as root")
        if context.run_as_non_root is False:
            out.append(f"{path}.runAsNonRoot: false lets the worker run as root")
        if context.seccomp_profile is not None and context.seccomp_profile.type == "Unconfined":
            out.append(f"{path}.seccompProfile.type: Unconfined disables seccomp")
    container = pod.container_security_context
    if container is not None:
        path = f"{base}.containerSecurityContext"
        if container.privileged:
            out.append(f"{path}.privileged: true gives the worker the node's devices and every capability")
        if container.allow_privilege_escalation:
            out.append(f"{path}.allowPrivilegeEscalation: true lets worker processes gain privileges")
        capabilities = container.capabilities or Capabilities()
        added = [c for c in capabilities.add or [] if c not in ALLOWED_CAPABILITIES]
        if added:
            out.append(f"{path}.capabilities.add: {added} adds capabilities (only NET_BIND_SERVICE is allowed)")
        dropped = capabilities.drop
        if dropped is not None and "ALL" not in dropped:
            out.append(f"{path}.capabilities.drop: {dropped} must include ALL")
    return out


def refusal_message(found: list[str]) -> str:
    """One status message: every refused field, then how to allow them."""
    return (
        "; ".join(found) + f". The operator refuses privileged worker pods unless {ALLOW_SETTING} is true "
        "(chart value security.allowPrivilegedPods); the namespace's Pod Security level still applies."
    )
