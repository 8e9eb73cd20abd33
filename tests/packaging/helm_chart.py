"""Render the asyncdiff-operator chart with the real Helm library (PyPI ``helm-python-sdk``) for the packaging tests.

Why a helper module: the render, lint, validation and local-install tests all need "the chart's objects for these
values" and the same value sets; this keeps each test file about its own checks.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "asyncdiff-operator"
RELEASE = "adiff"
RELEASE_NAMESPACE = "asyncdiff-system"
KUBE_VERSION = "1.33.0"

# Named value sets: defaults plus every switch that changes which objects are rendered.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaces": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "metrics-off": {"metrics": {"enabled": False}},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "peering-clusterwide": {"operator": {"peering": True}},
    "peering-namespaces": {"operator": {"peering": True, "watchNamespaces": ["team-a"]}},
    "no-crds-no-rbac": {"crds": {"install": False}, "rbac": {"create": False}, "serviceAccount": {"create": False}},
    "admission-policy": {"security": {"admissionPolicy": True}, "operator": {"watchNamespaces": ["ml"]}},
    "security": {
        "security": {"allowPrivilegedPods": True, "admissionPolicy": True},
        "s3": {"endpoint": "http://minio.storage.svc:9000"},
        "networkPolicy": {
            "enabled": True,
            "s3Peers": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
            ],
        },
        "worker": {"tmpSizeLimit": "1Gi"},
    },
    "full": {
        "image": {
            "operator": {"repository": "registry.example/adiff-op", "tag": "1.2.3", "pullPolicy": "Always"},
            "worker": {"repository": "registry.example/adiff-worker", "tag": "1.2.3-cu124", "pullPolicy": "Always"},
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {"watchNamespaces": ["ml"], "livenessPort": 18080, "extraEnv": [{"name": "X", "value": "1"}]},
        "s3": {
            "endpoint": "http://minio.storage.svc:9000",
            "region": "us-east-1",
            "forcePathStyle": True,
            "credentialsSecret": "asyncdiff-s3",
        },
        "worker": {
            "resources": {"limits": {"cpu": "8", "memory": "64Gi"}},
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"a": "b"},
        "metrics": {"port": 19090, "service": {"port": 8443}},
    },
}


@functools.cache
def _chart() -> Any:
    import helm_python

    return helm_python.Chart.load(str(CHART))


def render_files(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as ``helm template`` would print them (NOTES.txt included)."""
    rendered: dict[str, str] = _chart().render(values or {}, name=RELEASE, namespace=RELEASE_NAMESPACE)
    return rendered


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders for these values (NOTES.txt excluded)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_files(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]
