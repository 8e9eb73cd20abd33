"""Namespace lifecycle: a ``default`` ServiceAccount in each namespace, and emptying deleted namespaces.

Why: ``kubectl delete namespace`` (and test teardown) must remove everything in it, honouring the
finalizers of what it holds (kopf's included), before the Namespace itself disappears; while it
terminates, new content is refused by the API (403), as in Kubernetes.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from typing import Any

from ..apiserver.store import StorageKey
from ..errors import ApiError
from .base import Controller

NAMESPACES: StorageKey = ("", "namespaces")


class NamespaceController(Controller):
    name = "namespace"
    watches = (NAMESPACES,)

    def on_event(self, event_type: str, key: StorageKey, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if event_type != "DELETED":
            self.enqueue(obj["metadata"]["name"])

    def reconcile(self, item: Hashable) -> float | None:
        assert isinstance(item, str)
        ns = self.api.store.get(NAMESPACES, "", item)
        if ns is None:
            return None
        if not ns["metadata"].get("deletionTimestamp"):
            sa_rt = self.api.rt("v1", "serviceaccounts")
            if self.api.store.get(sa_rt.storage_key, item, "default") is None:
                try:
                    self.api.create(sa_rt, item, {"metadata": {"name": "default"}})
                except ApiError as exc:
                    if exc.code != 409:
                        raise
            return None
        remaining = 0
        for rt in self.api.resources.all():
            if not rt.namespaced or rt.storage_key == NAMESPACES:
                continue
            if self.api.resources.for_storage(rt.storage_key) is not rt:
                continue
            for obj in self.api.store.items(rt.storage_key, item):
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    try:
                        self.api.delete(rt, item, obj["metadata"]["name"], {"propagationPolicy": "Background"})
                    except ApiError as exc:
                        if exc.code != 404:
                            raise
        if remaining:
            return 0.1
        fresh = copy.deepcopy(ns)
        fresh.setdefault("spec", {})["finalizers"] = []
        self.api.update(self.api.rt("v1", "namespaces"), "", item, fresh, require_rv=False)
        return None
