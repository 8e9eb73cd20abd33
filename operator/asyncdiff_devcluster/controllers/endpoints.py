"""Endpoints for Services with selectors, with the Pod hostnames headless Services publish.

Why: an operator that waits for its rank-0 Pod to be reachable, or tooling that lists a headless
Service's members, reads Endpoints. Every Pod here has IP 127.0.0.1 (see ``kubelet.networking`` for how
names resolve); ``publishNotReadyAddresses`` is honoured.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from typing import Any

from ..apiserver.selectors import match_map_selector
from ..apiserver.store import StorageKey
from ..errors import ApiError
from .base import Controller
from .scheduler import is_ready

PODS: StorageKey = ("", "pods")
SERVICES: StorageKey = ("", "services")
ENDPOINTS: StorageKey = ("", "endpoints")


def _target_port(port: dict[str, Any], pods: list[dict[str, Any]]) -> Any:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for pod in pods:
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name") == target:
                    return p.get("containerPort")
    return None


class EndpointsController(Controller):
    name = "endpoints"
    watches = (SERVICES, PODS)

    def on_event(self, event_type: str, key: StorageKey, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        ns = obj["metadata"].get("namespace", "")
        if key == SERVICES:
            self.enqueue((ns, obj["metadata"]["name"]))
            return
        for svc in self.api.store.items(SERVICES, ns):
            selector = (svc.get("spec") or {}).get("selector")
            labels = obj["metadata"].get("labels") or {}
            old_labels = (old or {}).get("metadata", {}).get("labels") or {}
            if match_map_selector(selector, labels) or match_map_selector(selector, old_labels):
                self.enqueue((ns, svc["metadata"]["name"]))

    def reconcile(self, item: Hashable) -> float | None:
        assert isinstance(item, tuple)
        namespace, name = item
        rt = self.api.rt("v1", "endpoints")
        svc = self.api.store.get(SERVICES, namespace, name)
        existing = self.api.store.get(ENDPOINTS, namespace, name)
        if svc is None:
            if existing is not None:
                self.api.delete(rt, namespace, name)
            return None
        spec = svc.get("spec") or {}
        selector = spec.get("selector")
        if not selector:
            return None
        pods = [
            p
            for p in self.api.store.items(PODS, namespace)
            if match_map_selector(selector, p["metadata"].get("labels") or {})
            and (p.get("status") or {}).get("podIP")
            and not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        ready: list[dict[str, Any]] = []
        not_ready: list[dict[str, Any]] = []
        for pod in pods:
            pspec = pod.get("spec") or {}
            addr: dict[str, Any] = {
                "ip": pod["status"]["podIP"],
                "nodeName": pspec.get("nodeName"),
                "targetRef": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"].get("uid"),
                },
            }
            if pspec.get("hostname") and pspec.get("subdomain") == name:
                addr["hostname"] = pspec["hostname"]
            (ready if (is_ready(pod) or spec.get("publishNotReadyAddresses")) else not_ready).append(addr)
        ports = []
        for port in spec.get("ports") or []:
            entry = {"port": _target_port(port, pods), "protocol": port.get("protocol", "TCP")}
            if port.get("name"):
                entry["name"] = port["name"]
            if entry["port"] is not None:
                ports.append(entry)
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if ports and subset:
            subset["ports"] = ports
        body: dict[str, Any] = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(svc["metadata"].get("labels") or {}),
            },
            "subsets": [subset] if subset else [],
        }
        if existing is None:
            try:
                self.api.create(rt, namespace, body)
            except ApiError as exc:
                if exc.code != 409:
                    raise
            return None
        if existing.get("subsets") != body["subsets"]:
            fresh = copy.deepcopy(existing)
            fresh["subsets"] = body["subsets"]
            self.api.update(rt, namespace, name, fresh)
        return None
