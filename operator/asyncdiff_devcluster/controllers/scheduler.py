"""A one-node scheduler: binds Pods to the dev node when their extended resources fit.

Why: ``nvidia.com/gpu`` requests must behave as on a real cluster: satisfied from the node's fake GPU
count, and a Pod asking for more than is free stays ``Pending`` with ``PodScheduled=False,
reason=Unschedulable`` and kube-scheduler's message (``0/1 nodes are available: 1 Insufficient nvidia.com/gpu.``),
plus a Warning ``FailedScheduling`` Event from ``default-scheduler`` (what ``kubectl describe pod`` shows and
an operator surfaces as "waiting for GPUs"). Node selectors are checked
against the node's labels; affinity, taints and CPU/memory requests are not.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from typing import Any

from ..apiserver.api import now_rfc3339
from ..apiserver.store import StorageKey
from .base import Controller

PODS: StorageKey = ("", "pods")
NODES: StorageKey = ("", "nodes")
GPU = "nvidia.com/gpu"
SCHEDULER = "default-scheduler"


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def pod_gpus(pod: dict[str, Any]) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        total += max(
            _quantity((res.get("limits") or {}).get(GPU, 0)),
            _quantity((res.get("requests") or {}).get(GPU, 0)),
        )
    return total


def is_terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True (what Deployments count and Endpoints publish)."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def set_condition(status: dict[str, Any], ctype: str, value: str, reason: str = "", message: str = "") -> bool:
    """Set a pod/job condition; returns True when something changed."""
    conditions = status.setdefault("conditions", [])
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") == value and cond.get("reason", "") == reason and cond.get("message", "") == message:
                return False
            if cond.get("status") != value:
                cond["lastTransitionTime"] = now_rfc3339()
            cond.update({"status": value})
            if reason:
                cond["reason"] = reason
            else:
                cond.pop("reason", None)
            if message:
                cond["message"] = message
            else:
                cond.pop("message", None)
            return True
    cond = {"type": ctype, "status": value, "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    conditions.append(cond)
    return True


class Scheduler(Controller):
    name = "scheduler"
    watches = (PODS, NODES)

    def __init__(self, api: Any, node_name: str) -> None:
        super().__init__(api)
        self.node_name = node_name

    def on_event(self, event_type: str, key: StorageKey, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if key == NODES:
            self._requeue_pending()
            return
        meta = obj["metadata"]
        if event_type == "DELETED" or is_terminal(obj):
            self._requeue_pending()
            return
        if not (obj.get("spec") or {}).get("nodeName"):
            self.enqueue((meta.get("namespace", ""), meta["name"]))

    def _requeue_pending(self) -> None:
        for pod in self.api.store.items(PODS):
            if not (pod.get("spec") or {}).get("nodeName"):
                self.enqueue((pod["metadata"].get("namespace", ""), pod["metadata"]["name"]))

    def _free_gpus(self, node: dict[str, Any]) -> int:
        capacity = _quantity(((node.get("status") or {}).get("allocatable") or {}).get(GPU, 0))
        used = sum(
            pod_gpus(p)
            for p in self.api.store.items(PODS)
            if (p.get("spec") or {}).get("nodeName") == self.node_name and not is_terminal(p)
        )
        return capacity - used

    def reconcile(self, item: Hashable) -> float | None:
        assert isinstance(item, tuple)
        namespace, name = item
        pod = self.api.store.get(PODS, namespace, name)
        if pod is None or (pod.get("spec") or {}).get("nodeName") or is_terminal(pod):
            return None
        rt = self.api.rt("v1", "pods")
        fresh = copy.deepcopy(pod)
        status = fresh.setdefault("status", {})
        if pod["metadata"].get("deletionTimestamp"):
            # never scheduled and being deleted: mark it failed so owners can account for it
            status["phase"] = "Failed"
            status.setdefault("reason", "Terminated")
            self.api.update(rt, namespace, name, fresh, subresource="status")
            return None
        node = self.api.store.get(NODES, "", self.node_name)
        reason, message = "", ""
        if node is None:
            reason, message = "Unschedulable", "no nodes available to schedule pods"
        elif (pod.get("spec") or {}).get("schedulingGates"):
            reason, message = "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates"
        else:
            labels = node["metadata"].get("labels") or {}
            selector = (pod.get("spec") or {}).get("nodeSelector") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                reason = "Unschedulable"
                message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
            elif pod_gpus(pod) > self._free_gpus(node):
                reason = "Unschedulable"
                message = f"0/1 nodes are available: 1 Insufficient {GPU}."
        if reason:
            if set_condition(status, "PodScheduled", "False", reason, message):
                self.api.update(rt, namespace, name, fresh, subresource="status")
                if reason == "Unschedulable":  # kube-scheduler's event for every failed attempt (aggregated)
                    ref = {"apiVersion": "v1", "kind": "Pod", "metadata": pod["metadata"]}
                    self.api.record_event(ref, "FailedScheduling", message, type_="Warning", component=SCHEDULER)
            return None
        if set_condition(status, "PodScheduled", "True"):
            self.api.update(rt, namespace, name, fresh, subresource="status")
        bound = copy.deepcopy(self.api.store.get(PODS, namespace, name))
        assert bound is not None
        bound["spec"]["nodeName"] = self.node_name
        self.api.update(rt, namespace, name, bound)
        return None
