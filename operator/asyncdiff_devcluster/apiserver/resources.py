"""The resource types the emulated API serves: built-ins plus the ones CRDs register at run time.

Why: discovery, the URL router, tables and OpenAPI all need one answer to "which resources exist, are
they namespaced, which subresources do they have". A CRD becoming discoverable the moment it is created
(kmock's biggest gap for kopf) is just ``ResourceRegistry.register`` here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    verbs: tuple[str, ...] = ALL_VERBS
    # CRD-only parts: the version's openAPIV3Schema, printer columns, and the version objects are stored at.
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    crd_name: str | None = None
    storage_version: str = ""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_key(self) -> tuple[str, str]:
        """All versions of one group/resource share one storage bucket, as in etcd."""
        return (self.group, self.plural)

    @property
    def stored_api_version(self) -> str:
        version = self.storage_version or self.version
        return f"{self.group}/{version}" if self.group else version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def is_custom(self) -> bool:
        return self.crd_name is not None

    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _rt(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    *,
    short: tuple[str, ...] = (),
    cats: tuple[str, ...] = (),
    subs: tuple[str, ...] = (),
    verbs: tuple[str, ...] = ALL_VERBS,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=short,
        categories=cats,
        subresources=frozenset(subs),
        verbs=verbs,
    )


BUILTINS: tuple[ResourceType, ...] = (
    _rt("", "v1", "pods", "Pod", short=("po",), cats=("all",), subs=("status", "log", "eviction", "binding")),
    _rt("", "v1", "services", "Service", short=("svc",), cats=("all",), subs=("status",)),
    _rt("", "v1", "endpoints", "Endpoints", short=("ep",)),
    _rt("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    _rt("", "v1", "secrets", "Secret"),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _rt("", "v1", "events", "Event", short=("ev",)),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",), subs=("status",)),
    _rt("", "v1", "persistentvolumes", "PersistentVolume", False, short=("pv",), subs=("status",)),
    _rt("", "v1", "namespaces", "Namespace", False, short=("ns",), subs=("status", "finalize")),
    _rt("", "v1", "nodes", "Node", False, short=("no",), subs=("status",)),
    _rt("", "v1", "resourcequotas", "ResourceQuota", short=("quota",), subs=("status",)),
    _rt("", "v1", "limitranges", "LimitRange", short=("limits",)),
    _rt("batch", "v1", "jobs", "Job", cats=("all",), subs=("status",)),
    _rt("batch", "v1", "cronjobs", "CronJob", short=("cj",), cats=("all",), subs=("status",)),
    _rt("apps", "v1", "deployments", "Deployment", short=("deploy",), cats=("all",), subs=("status", "scale")),
    _rt("apps", "v1", "statefulsets", "StatefulSet", short=("sts",), cats=("all",), subs=("status", "scale")),
    _rt("apps", "v1", "replicasets", "ReplicaSet", short=("rs",), cats=("all",), subs=("status", "scale")),
    _rt("apps", "v1", "daemonsets", "DaemonSet", short=("ds",), cats=("all",), subs=("status",)),
    _rt(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short=("crd", "crds"),
        subs=("status",),
    ),
    _rt("coordination.k8s.io", "v1", "leases", "Lease"),
    _rt("events.k8s.io", "v1", "events", "Event", short=("ev",)),
    _rt("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    _rt(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        False,
        subs=("status",),
    ),
    _rt(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        False,
    ),
    _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=("netpol",)),  # stored, not enforced
    _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",), subs=("status",)),
    _rt("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, short=("pc",)),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _rt(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        verbs=("create",),
    ),
)

_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version ordering: GA > beta > alpha, higher numbers first, other strings last."""
    m = _VERSION_RE.match(version)
    if not m:
        return (3, 0, 0, version)
    major = int(m.group(1))
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor, version)


class ResourceRegistry:
    """A mutable index of served resource types by (group, version, plural)."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self.generation = 0  # bumped on every change, so discovery/openapi caches can be invalidated
        for rt in BUILTINS:
            self.register(rt)

    def register(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt
        self.generation += 1

    def unregister_crd(self, crd_name: str) -> None:
        for key, rt in list(self._types.items()):
            if rt.crd_name == crd_name:
                del self._types[key]
        self.generation += 1

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def for_storage(self, storage_key: tuple[str, str]) -> ResourceType | None:
        """The storage-version type of a group/resource (any served one when none is marked)."""
        candidates = [rt for rt in self._types.values() if rt.storage_key == storage_key]
        for rt in candidates:
            if not rt.storage_version or rt.storage_version == rt.version:
                return rt
        return candidates[0] if candidates else None

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first."""
        out: dict[str, set[str]] = {}
        for rt in self._types.values():
            out.setdefault(rt.group, set()).add(rt.version)
        return {g: sorted(vs, key=version_priority) for g, vs in out.items()}

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return sorted(
            (rt for rt in self._types.values() if rt.group == group and rt.version == version),
            key=lambda rt: rt.plural,
        )

    def has_namespaced_plural(self, group: str, version: str, plural: str) -> bool:
        rt = self.get(group, version, plural)
        return rt is not None and rt.namespaced
