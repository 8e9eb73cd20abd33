"""A real kopf operator process (``kopf run --standalone``) reconciling a CR on the dev cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_devcluster.testing import RunningDevCluster, wait_for
from kubernetes import client

ASSETS = Path(__file__).resolve().parent / "assets"
G, V, P = "devcluster.asyncdiff.io", "v1alpha1", "widgets"


def _kopf() -> str:
    candidate = Path(sys.executable).parent / "kopf"
    found = str(candidate) if candidate.exists() else shutil.which("kopf")
    if found is None:
        pytest.skip("kopf is not installed")
    return found


@pytest.fixture(scope="module")
def operator_ns(dev_cluster: RunningDevCluster, k8s: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Install the Widget CRD, start the operator for a fresh namespace, stop it afterwards."""
    ext = client.ApiextensionsV1Api(k8s)
    try:
        ext.create_custom_resource_definition(yaml.safe_load((ASSETS / "widget_crd.yaml").read_text()))
    except client.ApiException as exc:
        assert exc.status == 409
    namespace = f"op-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": namespace}})
    log_path = tmp_path_factory.mktemp("kopf") / "operator.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                _kopf(),
                "run",
                "--standalone",
                "--namespace",
                namespace,
                "--verbose",
                str(ASSETS / "widget_operator.py"),
            ],
            env=dev_cluster.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: "Starting the watch-stream for widgets" in log_path.read_text() or proc.poll() is not None,
                20,
            )
            assert proc.poll() is None, log_path.read_text()
            yield namespace
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    text = log_path.read_text()
    assert "Traceback" not in text and "[ERROR" not in text, text[-4000:]
    core.delete_namespace(namespace)


def test_operator_reconciles_and_writes_status(k8s: Any, operator_ns: str) -> None:
    api = client.CustomObjectsApi(k8s)
    body = {"apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": {"name": "alpha"}, "spec": {"size": 4}}
    started = time.monotonic()
    api.create_namespaced_custom_object(G, V, operator_ns, P, body)
    ready = wait_for(
        lambda: api.get_namespaced_custom_object(G, V, operator_ns, P, "alpha").get("status", {}).get("phase"),
        15,
    )
    print(f"kopf create->status written: {time.monotonic() - started:.3f}s")
    assert ready == "Ready"
    obj = api.get_namespaced_custom_object(G, V, operator_ns, P, "alpha")
    assert obj["metadata"]["finalizers"] == ["devcluster.asyncdiff.io/finalizer"]
    assert obj["status"]["conditions"][0]["type"] == "Ready" and obj["status"]["observedSize"] == 4
    child = client.CoreV1Api(k8s).read_namespaced_config_map("alpha-config", operator_ns)
    assert child.metadata.owner_references[0].uid == obj["metadata"]["uid"]
    api.patch_namespaced_custom_object(G, V, operator_ns, P, "alpha", {"spec": {"size": 6}})
    wait_for(
        lambda: api.get_namespaced_custom_object(G, V, operator_ns, P, "alpha")["status"].get("observedSize") == 6,
        10,
    )


def test_operator_finalizer_and_garbage_collection_on_delete(k8s: Any, operator_ns: str) -> None:
    api = client.CustomObjectsApi(k8s)
    core = client.CoreV1Api(k8s)
    body = {"apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": {"name": "beta"}, "spec": {"size": 1}}
    api.create_namespaced_custom_object(G, V, operator_ns, P, body)
    wait_for(
        lambda: api.get_namespaced_custom_object(G, V, operator_ns, P, "beta").get("status", {}).get("phase"),
        15,
    )
    api.delete_namespaced_custom_object(G, V, operator_ns, P, "beta")

    def gone() -> bool:
        try:
            api.get_namespaced_custom_object(G, V, operator_ns, P, "beta")
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, 15, message="operator released its finalizer")
    wait_for(
        lambda: "beta-config" not in {c.metadata.name for c in core.list_namespaced_config_map(operator_ns).items},
        5,
    )
