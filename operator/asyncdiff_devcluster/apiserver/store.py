"""In-memory object storage with one global resourceVersion, an event history and watchers.

Why: clients rely on etcd-like guarantees that kmock lacked: every write gets a new, monotonically
increasing ``resourceVersion``; a watch can resume from any version still in the history and gets
``410 Gone`` (an ERROR event, as from kube-apiserver) when it is too old; watch events follow selector
transitions (an object that stops matching a label selector is sent as DELETED). Everything runs on one
asyncio loop, so each write is atomic without locks.

Objects are stored as plain JSON dicts and never mutated after being stored: writers build a new dict.
Watch events therefore share the stored dict; readers must copy before changing anything.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import gone

StorageKey = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace or "", name)
Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class StoreEvent:
    type: str  # ADDED, MODIFIED, DELETED
    key: StorageKey
    obj: dict[str, Any]
    old: dict[str, Any] | None
    rv: int


class Watcher:
    """One open watch: a queue of (type, object) filtered by storage key, namespace and predicate."""

    def __init__(
        self,
        store: Store,
        keys: frozenset[StorageKey] | None,
        namespace: str | None,
        predicate: Predicate | None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.namespace = namespace
        self.predicate = predicate
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], StoreEvent] | None] = asyncio.Queue()
        self.closed = False

    def _in_scope(self, event: StoreEvent) -> bool:
        if self.keys is not None and event.key not in self.keys:
            return False
        if self.namespace is not None:
            return bool(event.obj.get("metadata", {}).get("namespace", "") == self.namespace)
        return True

    def translate(self, event: StoreEvent) -> str | None:
        """The event type this watcher should see, following selector transitions, or None."""
        if not self._in_scope(event):
            return None
        if self.predicate is None:
            return event.type
        now = self.predicate(event.obj)
        if event.type == "ADDED":
            return "ADDED" if now else None
        if event.type == "DELETED":
            before = self.predicate(event.old) if event.old is not None else now
            return "DELETED" if (now or before) else None
        before = self.predicate(event.old) if event.old is not None else now
        if now and before:
            return "MODIFIED"
        if now:
            return "ADDED"
        if before:
            return "DELETED"
        return None

    def offer(self, event: StoreEvent) -> None:
        if self.closed:
            return
        kind = self.translate(event)
        if kind is not None:
            self.queue.put_nowait((kind, event.obj, event))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.store._watchers.discard(self)
            self.queue.put_nowait(None)


class Store:
    def __init__(self, history_size: int = 20000) -> None:
        self.rv = 1
        self._objects: dict[StorageKey, dict[ObjKey, dict[str, Any]]] = {}
        self._history: collections.deque[StoreEvent] = collections.deque()
        self._history_size = history_size
        self.compacted_rv = 1  # the history holds every event with rv > compacted_rv
        self._watchers: set[Watcher] = set()
        self._uids: dict[str, tuple[StorageKey, ObjKey]] = {}
        self._dependents: dict[str, set[tuple[StorageKey, ObjKey]]] = {}

    # ------------------------------------------------------------------ reads

    def get(self, key: StorageKey, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(key, {}).get((namespace, name))

    def items(self, key: StorageKey, namespace: str | None = None) -> list[dict[str, Any]]:
        bucket = self._objects.get(key, {})
        keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
        return [bucket[k] for k in keys]

    def keys(self) -> list[StorageKey]:
        return list(self._objects)

    def by_uid(self, uid: str) -> tuple[StorageKey, dict[str, Any]] | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        obj = self._objects.get(where[0], {}).get(where[1])
        return (where[0], obj) if obj is not None else None

    def dependents(self, owner_uid: str) -> list[tuple[StorageKey, dict[str, Any]]]:
        out = []
        for key, objkey in sorted(self._dependents.get(owner_uid, set())):
            obj = self._objects.get(key, {}).get(objkey)
            if obj is not None:
                out.append((key, obj))
        return out

    def all_objects(self) -> Iterable[tuple[StorageKey, dict[str, Any]]]:
        for key, bucket in self._objects.items():
            for obj in bucket.values():
                yield key, obj

    # ------------------------------------------------------------------ writes

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, key: StorageKey, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` (a fresh dict) with a new resourceVersion and emit ADDED or MODIFIED."""
        meta = obj["metadata"]
        objkey = (meta.get("namespace", ""), meta["name"])
        bucket = self._objects.setdefault(key, {})
        old = bucket.get(objkey)
        rv = self.next_rv()
        meta["resourceVersion"] = str(rv)
        bucket[objkey] = obj
        self._index(key, objkey, old, obj)
        self._emit(StoreEvent("MODIFIED" if old is not None else "ADDED", key, obj, old, rv))
        return obj

    def remove(self, key: StorageKey, namespace: str, name: str) -> dict[str, Any] | None:
        bucket = self._objects.get(key, {})
        old = bucket.pop((namespace, name), None)
        if old is None:
            return None
        rv = self.next_rv()
        final = dict(old)
        final["metadata"] = {**old["metadata"], "resourceVersion": str(rv)}
        self._index(key, (namespace, name), old, None)
        self._emit(StoreEvent("DELETED", key, final, old, rv))
        return final

    def _index(self, key: StorageKey, objkey: ObjKey, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if old is not None:
            self._uids.pop(old["metadata"].get("uid", ""), None)
            for ref in old["metadata"].get("ownerReferences") or []:
                deps = self._dependents.get(ref.get("uid", ""))
                if deps is not None:
                    deps.discard((key, objkey))
                    if not deps:
                        del self._dependents[ref.get("uid", "")]
        if new is not None:
            uid = new["metadata"].get("uid")
            if uid:
                self._uids[uid] = (key, objkey)
            for ref in new["metadata"].get("ownerReferences") or []:
                self._dependents.setdefault(ref.get("uid", ""), set()).add((key, objkey))

    def _emit(self, event: StoreEvent) -> None:
        self._history.append(event)
        while len(self._history) > self._history_size:
            self.compacted_rv = self._history.popleft().rv
        for watcher in list(self._watchers):
            watcher.offer(event)

    def compact(self) -> None:
        """Forget all history (as etcd compaction does): older resourceVersions now answer 410."""
        self._history.clear()
        self.compacted_rv = self.rv

    # ------------------------------------------------------------------ watches

    def watch(
        self,
        keys: Iterable[StorageKey] | None,
        namespace: str | None = None,
        predicate: Predicate | None = None,
        since: int | None = None,
    ) -> tuple[Watcher, list[tuple[str, dict[str, Any]]]]:
        """Open a watcher. With ``since``, also return the history events after that version.

        Raises a 410 ApiError when ``since`` is older than the history holds.
        """
        watcher = Watcher(self, frozenset(keys) if keys is not None else None, namespace, predicate)
        replay: list[tuple[str, dict[str, Any]]] = []
        if since is not None:
            if since < self.compacted_rv:
                raise gone(f"too old resource version: {since} ({self.compacted_rv})")
            for event in self._history:
                if event.rv > since:
                    kind = watcher.translate(event)
                    if kind is not None:
                        replay.append((kind, event.obj))
        self._watchers.add(watcher)
        return watcher, replay

    def close_all_watchers(self) -> None:
        for watcher in list(self._watchers):
            watcher.close()

    # ------------------------------------------------------------------ snapshots

    def dump(self) -> dict[str, Any]:
        return {
            "resourceVersion": self.rv,
            "objects": [{"group": k[0], "plural": k[1], "object": o} for k, o in self.all_objects()],
        }

    def load(self, data: Mapping[str, Any]) -> None:
        for entry in data.get("objects", []):
            key = (entry["group"], entry["plural"])
            obj = entry["object"]
            meta = obj["metadata"]
            objkey = (meta.get("namespace", ""), meta["name"])
            self._objects.setdefault(key, {})[objkey] = obj
            self._index(key, objkey, None, obj)
        self.rv = max(self.rv, int(data.get("resourceVersion", 1)))
        self.compacted_rv = self.rv
