"""A minimal Deployment controller: one Pod per replica from the template, owned directly by the Deployment.

Why: an operator installed by a Helm chart runs from a Deployment; without this controller the chart's
Deployment is stored but never runs, so "install the chart and submit a job" cannot be tested locally.

What it does, deliberately small:
- Pods are owned by the Deployment itself (no ReplicaSet layer); each carries the ``pod-template-hash``
  label of the template it was made from, as on a real cluster.
- A template change replaces Pods as the ``Recreate`` strategy does: old Pods are deleted first and new
  ones are created once they are gone. ``RollingUpdate`` is treated the same way (no surge).
- Finished Pods (``Succeeded``/``Failed``, e.g. after a node restart) are deleted and replaced.
- Status: ``observedGeneration``, ``replicas``, ``updatedReplicas``, ``readyReplicas``,
  ``availableReplicas`` and the ``Available``/``Progressing`` conditions.

Not done: ReplicaSets and revision history, rollback, ``maxSurge``/``maxUnavailable``, ``minReadySeconds``,
``paused``, ``progressDeadlineSeconds``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Hashable
from typing import Any

from ..apiserver.api import now_rfc3339
from ..apiserver.store import StorageKey
from .base import Controller
from .scheduler import is_ready, is_terminal

DEPLOYMENTS: StorageKey = ("apps", "deployments")
PODS: StorageKey = ("", "pods")
HASH_LABEL = "pod-template-hash"


def template_hash(deployment: dict[str, Any]) -> str:
    """A short stable hash of the pod template (what ``pod-template-hash`` holds)."""
    template = (deployment.get("spec") or {}).get("template") or {}
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _condition(ctype: str, value: bool, reason: str, message: str, old: list[dict[str, Any]]) -> dict[str, Any]:
    status = "True" if value else "False"
    previous = next((c for c in old if c.get("type") == ctype), None)
    changed = previous is None or previous.get("status") != status
    stamp = now_rfc3339()
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": stamp if changed else previous.get("lastUpdateTime", stamp),  # type: ignore[union-attr]
        "lastTransitionTime": stamp if changed else previous.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
    }


class DeploymentController(Controller):
    name = "deployment"
    watches = (DEPLOYMENTS, PODS)

    def on_event(self, event_type: str, key: StorageKey, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        if key == DEPLOYMENTS:
            if event_type != "DELETED":
                self.enqueue((ns, meta["name"]))
            return
        for ref in meta.get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "Deployment":
                self.enqueue((ns, ref.get("name", "")))

    def _pods(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        uid = deployment["metadata"].get("uid", "")
        return [
            obj
            for key, obj in self.api.store.dependents(uid)
            if key == PODS
            and any(r.get("uid") == uid and r.get("controller") for r in obj["metadata"].get("ownerReferences") or [])
        ]

    def reconcile(self, item: Hashable) -> float | None:
        assert isinstance(item, tuple)
        namespace, name = item
        deployment = self.api.store.get(DEPLOYMENTS, namespace, name)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return None
        spec = deployment.get("spec") or {}
        want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        current_hash = template_hash(deployment)
        pods = self._pods(deployment)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        for pod in live:
            labels = pod["metadata"].get("labels") or {}
            if is_terminal(pod) or labels.get(HASH_LABEL) != current_hash:
                self.delete_pod(pod)
        current = [
            p
            for p in live
            if not is_terminal(p) and (p["metadata"].get("labels") or {}).get(HASH_LABEL) == current_hash
        ]
        for pod in current[want:]:
            self.delete_pod(pod)
        current = current[:want]
        old_left = any(
            (p["metadata"].get("labels") or {}).get(HASH_LABEL) != current_hash for p in pods
        )  # Recreate: wait until every old Pod is gone
        if not old_left:
            for _ in range(want - len(current)):
                current.append(self._create_pod(deployment, current_hash))
        self._write_status(deployment, want, current, len(self._pods(deployment)))
        return None

    def _create_pod(self, deployment: dict[str, Any], pod_hash: str) -> dict[str, Any]:
        meta = deployment["metadata"]
        template = copy.deepcopy((deployment.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        pod_meta: dict[str, Any] = {
            "generateName": f"{meta['name']}-{pod_hash}-",
            "namespace": meta.get("namespace"),
            "labels": {**(tmeta.get("labels") or {}), HASH_LABEL: pod_hash},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        pod = self.api.create(
            self.api.rt("v1", "pods"), meta.get("namespace", ""), {"metadata": pod_meta, "spec": template.get("spec")}
        ).obj
        self.api.record_event(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta},
            "SuccessfulCreate",
            f"Created pod: {pod['metadata']['name']}",
            component="deployment-controller",
        )
        return dict(pod)

    def _write_status(self, deployment: dict[str, Any], want: int, current: list[dict[str, Any]], total: int) -> None:
        ready = sum(1 for p in current if is_ready(p))
        old = list((deployment.get("status") or {}).get("conditions") or [])
        available = ready >= want
        status: dict[str, Any] = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": len(current),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, want - ready),
            "conditions": [
                _condition(
                    "Available",
                    available,
                    "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if available
                    else "Deployment does not have minimum availability.",
                    old,
                ),
                _condition("Progressing", True, "NewReplicaSetAvailable", "Pods are up to date.", old),
            ],
        }
        for key in ("readyReplicas", "availableReplicas", "unavailableReplicas"):
            if not status[key]:
                status.pop(key)
        if status == (deployment.get("status") or {}):
            return
        fresh = copy.deepcopy(deployment)
        fresh["status"] = status
        meta = deployment["metadata"]
        self.api.update(
            self.api.rt("apps/v1", "deployments"), meta.get("namespace", ""), meta["name"], fresh, subresource="status"
        )
