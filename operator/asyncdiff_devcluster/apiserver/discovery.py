"""Legacy API discovery (/api, /apis, /api/v1, /apis/<group>/<version>) and /version.

Why: kopf resolves resources and their ``/status`` subresource from these lists, and kubectl builds its
REST mapping (kinds, short names, categories) from them; a CRD must show up here the moment it is
created or kopf logs "Unresolved resources cannot be served" forever. kmock also answered ``groupVersion:
"/v1"`` for the core group, which broke kubectl's mapping of Pods.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .resources import ResourceRegistry, ResourceType

SERVER_VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0+asyncdiff-devcluster",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_SUB_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "log": ["get"],
    "eviction": ["create"],
    "binding": ["create"],
    "finalize": ["update"],
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: ResourceRegistry) -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in sorted(registry.groups().items()) if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: ResourceRegistry, group: str) -> dict[str, Any] | None:
    versions = registry.groups().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def _hash(rt: ResourceType) -> str:
    return hashlib.sha256(f"{rt.group}/{rt.storage_version or rt.version}/{rt.kind}".encode()).hexdigest()[:11]


def resource_list(registry: ResourceRegistry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for rt in types:
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
            "storageVersionHash": _hash(rt),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in sorted(rt.subresources):
            sub_entry: dict[str, Any] = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": _SUB_VERBS.get(sub, ["get"]),
            }
            if sub == "eviction":
                sub_entry.update({"group": "policy", "version": "v1", "kind": "Eviction"})
            if sub == "scale":
                sub_entry.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            resources.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
