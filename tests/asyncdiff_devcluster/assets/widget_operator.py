"""A tiny real kopf operator used by the dev-cluster tests: it reconciles Widgets.

On create it adopts a ConfigMap child and writes ``status.phase`` and a ``Ready`` condition; on delete
(a non-optional handler, so kopf adds its finalizer) it records nothing and lets GC remove the child.
"""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.watching.server_timeout = 30
    settings.persistence.finalizer = "devcluster.asyncdiff.io/finalizer"


@kopf.on.create("devcluster.asyncdiff.io", "v1alpha1", "widgets")
def create_fn(spec: dict[str, Any], name: str, namespace: str, body: Any, patch: kopf.Patch, **_: Any) -> None:
    kubernetes.config.load_kube_config()
    child: dict[str, Any] = {"metadata": {"name": f"{name}-config"}, "data": {"size": str(spec["size"])}}
    kopf.adopt(child, owner=body)
    kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, child)
    patch.status["phase"] = "Ready"
    patch.status["conditions"] = [{"type": "Ready", "status": "True", "reason": "Reconciled"}]
    patch.status["observedSize"] = spec["size"]


@kopf.on.update("devcluster.asyncdiff.io", "v1alpha1", "widgets", field="spec.size")
def resize_fn(new: Any, patch: kopf.Patch, **_: Any) -> None:
    patch.status["observedSize"] = new


@kopf.on.delete("devcluster.asyncdiff.io", "v1alpha1", "widgets")
def delete_fn(name: str, logger: Any, **_: Any) -> None:
    logger.info(f"widget {name} deleted")
