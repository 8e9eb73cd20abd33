"""The dev cluster's minimal Deployment controller: Pods per replica, Recreate on template change, status, GC.

Why here: the chart's Deployment is how the operator runs in the local ``helm install`` test; this pins the
controller's behaviour on its own, with a sleeping Python process as the container.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_devcluster.testing import RunningDevCluster, running_dev_cluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevCluster]:
    with running_dev_cluster(tmp_path_factory.mktemp("deploy-cluster"), restart_backoff=0.1) as running:
        yield running


def deployment(replicas: int, marker: str) -> dict[str, Any]:
    labels = {"app": "sleeper"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "python:3.11-slim",
                            "command": [sys.executable, "-c", "import time; time.sleep(120)"],
                            "env": [{"name": "MARKER", "value": marker}],
                        }
                    ]
                },
            },
        },
    }


def test_replicas_recreate_scale_and_delete(cluster: RunningDevCluster, tmp_path: Path) -> None:
    from kubernetes import client

    api_client = cluster.api_client()
    apps: Any = client.AppsV1Api(api_client)
    core: Any = client.CoreV1Api(api_client)

    def running_pods() -> list[Any]:
        pods = core.list_namespaced_pod("default", label_selector="app=sleeper").items
        return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]

    apps.create_namespaced_deployment("default", deployment(2, "one"))
    first = wait_for(lambda: len(running_pods()) == 2 and running_pods(), timeout=20, message="2 running pods")
    owner = first[0].metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("Deployment", "sleeper", True)
    status = wait_for(
        lambda: (s := apps.read_namespaced_deployment("sleeper", "default").status).ready_replicas == 2 and s,
        message="readyReplicas 2",
    )
    assert status.available_replicas == 2 and status.observed_generation == 1
    assert any(c.type == "Available" and c.status == "True" for c in status.conditions)

    apps.patch_namespaced_deployment("sleeper", "default", deployment(2, "two"))
    old_names = {p.metadata.name for p in first}

    def replaced() -> bool:
        pods = running_pods()
        return len(pods) == 2 and not old_names & {p.metadata.name for p in pods}

    wait_for(replaced, timeout=30, message="pods recreated from the new template")
    hashes = {p.metadata.labels["pod-template-hash"] for p in running_pods()}
    assert len(hashes) == 1 and hashes != {p.metadata.labels["pod-template-hash"] for p in first}

    apps.patch_namespaced_deployment_scale("sleeper", "default", {"spec": {"replicas": 1}})
    wait_for(lambda: len(running_pods()) == 1, timeout=20, message="scaled to 1")

    apps.delete_namespaced_deployment("sleeper", "default")
    wait_for(
        lambda: not core.list_namespaced_pod("default", label_selector="app=sleeper").items,
        timeout=30,
        message="pods garbage-collected with the Deployment",
    )
    api_client.close()
