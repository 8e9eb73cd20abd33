"""ownerReference garbage collection: background, foreground and orphan propagation.

Why: the operator relies on ``kopf.adopt`` so that deleting an AsyncDiffJob removes its Job, Service
and Pods; kmock kept children forever. This follows kube-controller-manager's rules:

* an object whose owners are all gone is deleted (background propagation);
* an owner deleted with ``propagationPolicy: Foreground`` carries the ``foregroundDeletion`` finalizer
  until every dependent with ``blockOwnerDeletion: true`` is gone; its dependents are deleted too;
* an owner deleted with ``Orphan`` (the legacy default for batch/v1 Jobs) carries the ``orphan``
  finalizer until its dependents no longer reference it;
* dangling references are removed from objects that still have a live owner.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from typing import Any

from ..apiserver.store import StorageKey
from .base import Controller

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


class GarbageCollector(Controller):
    name = "garbage-collector"
    watches = None

    def on_event(self, event_type: str, key: StorageKey, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        uid = meta.get("uid", "")
        if event_type == "DELETED":
            self.enqueue(("dependents", uid))
            for ref in meta.get("ownerReferences") or []:
                self.enqueue(("owner", ref.get("uid", "")))
            return
        if meta.get("ownerReferences"):
            self.enqueue(("check", key, meta.get("namespace", ""), meta["name"]))
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            if FOREGROUND in finalizers or ORPHAN in finalizers:
                self.enqueue(("owner", uid))
            for ref in meta.get("ownerReferences") or []:
                self.enqueue(("owner", ref.get("uid", "")))

    def _rt(self, key: StorageKey) -> Any:
        return self.api.resources.for_storage(key)

    def reconcile(self, item: Hashable) -> float | None:
        assert isinstance(item, tuple)
        if item[0] == "dependents":
            for key, dep in self.api.store.dependents(item[1]):
                self.enqueue(("check", key, dep["metadata"].get("namespace", ""), dep["metadata"]["name"]))
            return None
        if item[0] == "check":
            return self._check(item[1], item[2], item[3])
        if item[0] == "owner":
            return self._owner(item[1])
        return None

    def _owner_state(self, uid: str) -> str:
        found = self.api.store.by_uid(uid)
        if found is None:
            return "absent"
        meta = found[1]["metadata"]
        if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
            return "waiting"
        return "solid"

    def _check(self, key: StorageKey, namespace: str, name: str) -> float | None:
        obj = self.api.store.get(key, namespace, name)
        rt = self._rt(key)
        if obj is None or rt is None:
            return None
        refs = obj["metadata"].get("ownerReferences") or []
        if not refs:
            return None
        states = {ref.get("uid", ""): self._owner_state(ref.get("uid", "")) for ref in refs}
        solid = [u for u, s in states.items() if s == "solid"]
        waiting = [u for u, s in states.items() if s == "waiting"]
        if solid:
            dangling = [u for u, s in states.items() if s == "absent"]
            if dangling:
                fresh = copy.deepcopy(obj)
                fresh["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") not in dangling]
                self.api.update(rt, namespace, name, fresh, require_rv=False)
            return None
        if obj["metadata"].get("deletionTimestamp"):
            return None
        has_deps = bool(self.api.store.dependents(obj["metadata"].get("uid", "")))
        policy = "Foreground" if (waiting and has_deps) else "Background"
        self.api.delete(rt, namespace, name, {"propagationPolicy": policy})
        return None

    def _owner(self, uid: str) -> float | None:
        found = self.api.store.by_uid(uid)
        if found is None:
            return None
        key, owner = found
        meta = owner["metadata"]
        if not meta.get("deletionTimestamp"):
            return None
        finalizers = list(meta.get("finalizers") or [])
        rt = self._rt(key)
        if rt is None:
            return None
        dependents = self.api.store.dependents(uid)
        if ORPHAN in finalizers:
            for dep_key, dep in dependents:
                dep_rt = self._rt(dep_key)
                if dep_rt is None:
                    continue
                fresh = copy.deepcopy(dep)
                fresh["metadata"]["ownerReferences"] = [
                    r for r in fresh["metadata"].get("ownerReferences") or [] if r.get("uid") != uid
                ]
                if not fresh["metadata"]["ownerReferences"]:
                    del fresh["metadata"]["ownerReferences"]
                self.api.update(
                    dep_rt,
                    dep["metadata"].get("namespace", ""),
                    dep["metadata"]["name"],
                    fresh,
                    require_rv=False,
                )
            self._drop_finalizer(rt, owner, ORPHAN)
            return None
        if FOREGROUND in finalizers:
            blocking = 0
            for dep_key, dep in dependents:
                dep_meta = dep["metadata"]
                ref: dict[str, Any] = next(
                    (r for r in dep_meta.get("ownerReferences") or [] if r.get("uid") == uid), {}
                )
                if ref.get("blockOwnerDeletion"):
                    blocking += 1
                if not dep_meta.get("deletionTimestamp"):
                    self.enqueue(("check", dep_key, dep_meta.get("namespace", ""), dep_meta["name"]))
            if blocking == 0:
                self._drop_finalizer(rt, owner, FOREGROUND)
                return None
            return 0.5  # safety net; dependents' deletions also requeue this owner
        return None

    def _drop_finalizer(self, rt: Any, owner: dict[str, Any], finalizer: str) -> None:
        fresh = copy.deepcopy(owner)
        fresh["metadata"]["finalizers"] = [f for f in fresh["metadata"].get("finalizers") or [] if f != finalizer]
        meta = fresh["metadata"]
        self.api.update(rt, meta.get("namespace", ""), meta["name"], fresh, require_rv=False)
