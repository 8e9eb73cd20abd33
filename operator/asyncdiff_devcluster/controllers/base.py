"""A tiny controller runtime: a watch on the store feeding a de-duplicating, delayable work queue.

Why: every controller needs the same loop (list, watch, enqueue keys, reconcile one key at a time,
requeue later); keeping it here keeps each controller module about its own logic. Reconcilers run on the
cluster's event loop and call ``Api`` synchronously, so each reconcile sees a consistent store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Iterable
from typing import Any

from ..apiserver.api import Api
from ..apiserver.store import StorageKey, StoreEvent
from ..errors import ApiError

log = logging.getLogger("asyncdiff_devcluster.controllers")


class Controller:
    """Subclasses set ``watches`` and implement ``on_event`` (enqueue keys) and ``reconcile``."""

    name = "controller"
    watches: tuple[StorageKey, ...] | None = ()  # None: every resource

    def __init__(self, api: Api) -> None:
        self.api = api
        self._pending: set[Hashable] = set()
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}

    def enqueue(self, item: Hashable, delay: float = 0.0) -> None:
        if delay > 0:
            existing = self._timers.get(item)
            loop = asyncio.get_running_loop()
            when = loop.time() + delay
            if existing is not None and existing.when() <= when:
                return
            if existing is not None:
                existing.cancel()
            self._timers[item] = loop.call_at(when, self._fire, item)
            return
        if item not in self._pending:
            self._pending.add(item)
            self._queue.put_nowait(item)

    def _fire(self, item: Hashable) -> None:
        self._timers.pop(item, None)
        self.enqueue(item)

    def on_event(self, event_type: str, key: StorageKey, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def delete_pod(self, pod: dict[str, Any]) -> None:
        """Delete a pod this controller owns; one already gone is fine."""
        meta = pod["metadata"]
        try:
            self.api.delete(self.api.rt("v1", "pods"), meta.get("namespace", ""), meta["name"])
        except ApiError as exc:
            if exc.code != 404:
                raise

    def reconcile(self, item: Hashable) -> float | None:
        """Handle one key; return a delay to requeue it after, or None."""
        raise NotImplementedError

    def initial(self) -> Iterable[tuple[StorageKey, dict[str, Any]]]:
        keys = self.watches if self.watches is not None else self.api.store.keys()
        for key in keys:
            for obj in self.api.store.items(key):
                yield key, obj

    async def run(self) -> None:
        store = self.api.store
        watcher, _ = store.watch(self.watches)
        for key, obj in list(self.initial()):
            self.on_event("ADDED", key, obj, None)
        worker = asyncio.create_task(self._work(), name=f"{self.name}-worker")
        try:
            while True:
                item = await watcher.queue.get()
                if item is None:
                    break
                kind, obj, event = item
                self._safe_event(kind, event, obj)
        finally:
            watcher.close()
            worker.cancel()
            for timer in self._timers.values():
                timer.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    def _safe_event(self, kind: str, event: StoreEvent, obj: dict[str, Any]) -> None:
        try:
            self.on_event(kind, event.key, obj, event.old)
        except Exception:
            log.exception("%s: event handler failed", self.name)

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            self._pending.discard(item)
            try:
                delay = self.reconcile(item)
            except ApiError as exc:
                delay = None
                if exc.code == 409:
                    delay = 0.02  # a concurrent write won; retry on the fresh object
                elif exc.code != 404:
                    log.warning("%s: reconcile %r failed: %s", self.name, item, exc.message)
                    delay = 0.5
            except Exception:
                log.exception("%s: reconcile %r crashed", self.name, item)
                delay = 1.0
            if delay is not None:
                self.enqueue(item, delay)
            await asyncio.sleep(0)
