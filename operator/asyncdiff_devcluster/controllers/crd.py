"""CustomResourceDefinition lifecycle: serve CRs as soon as a CRD exists, clean them up when it goes.

Why: kopf and kubectl discover custom resources from the API; registration therefore happens
synchronously inside the CRD write (so the 201 of the CRD already implies discovery), while removal
follows Kubernetes: the CRD holds ``customresourcecleanup.apiextensions.k8s.io`` until every CR is gone
(including CRs held by an operator's finalizer), then stops being served.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from typing import Any

from ..apiserver.api import Api
from ..apiserver.resources import ResourceType
from ..apiserver.store import StorageKey
from ..errors import ApiError
from .base import Controller

CRDS: StorageKey = ("apiextensions.k8s.io", "customresourcedefinitions")
CLEANUP = "customresourcecleanup.apiextensions.k8s.io"


def resource_types(crd: dict[str, Any]) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), "")
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = frozenset((version.get("subresources") or spec.get("subresources") or {}).keys())
        out.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subresources,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                crd_name=crd["metadata"]["name"],
                storage_version=storage,
            )
        )
    return out


def install_crd_hook(api: Api) -> None:
    def hook(crd: dict[str, Any], deleted: bool) -> None:
        name = crd["metadata"]["name"]
        api.resources.unregister_crd(name)
        if not deleted:
            for rt in resource_types(crd):
                api.resources.register(rt)

    api.crd_hooks.append(hook)


class CrdController(Controller):
    name = "crd-cleanup"
    watches = (CRDS,)

    def on_event(self, event_type: str, key: StorageKey, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if event_type != "DELETED" and obj["metadata"].get("deletionTimestamp"):
            self.enqueue(obj["metadata"]["name"])

    def reconcile(self, item: Hashable) -> float | None:
        assert isinstance(item, str)
        crd = self.api.store.get(CRDS, "", item)
        if crd is None or not crd["metadata"].get("deletionTimestamp"):
            return None
        spec = crd["spec"]
        key = (spec["group"], spec["names"]["plural"])
        rt = self.api.resources.for_storage(key)
        remaining = self.api.store.items(key)
        if rt is not None:
            for obj in remaining:
                meta = obj["metadata"]
                if not meta.get("deletionTimestamp"):
                    try:
                        self.api.delete(
                            rt, meta.get("namespace", ""), meta["name"], {"propagationPolicy": "Background"}
                        )
                    except ApiError as exc:
                        if exc.code != 404:
                            raise
        if self.api.store.items(key):
            return 0.1
        fresh = copy.deepcopy(crd)
        fresh["metadata"]["finalizers"] = [f for f in fresh["metadata"].get("finalizers") or [] if f != CLEANUP]
        self.api.update(
            self.api.rt("apiextensions.k8s.io/v1", "customresourcedefinitions"),
            "",
            item,
            fresh,
            require_rv=False,
        )
        return None
