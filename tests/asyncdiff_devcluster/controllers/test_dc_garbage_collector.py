"""ownerReference garbage collection and namespace deletion through the kubernetes client."""

from __future__ import annotations

from typing import Any

import pytest
from asyncdiff_devcluster.testing import wait_for
from kubernetes import client


def _owner_ref(owner: Any, block: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": block,
    }


def _exists(core: client.CoreV1Api, namespace: str, name: str, kind: str = "secret") -> bool:
    try:
        if kind == "secret":
            core.read_namespaced_secret(name, namespace)
        else:
            core.read_namespaced_config_map(name, namespace)
        return True
    except client.ApiException as exc:
        assert exc.status == 404
        return False


@pytest.fixture
def core(k8s: Any) -> client.CoreV1Api:
    return client.CoreV1Api(k8s)


def test_background_deletion_removes_dependents(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "child", "ownerReferences": [_owner_ref(owner)]}})
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "grandchild-owner-is-child", "ownerReferences": [_owner_ref(owner)]}}
    )
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(lambda: not _exists(core, namespace, "child"), 5, message="child gone")
    wait_for(lambda: not _exists(core, namespace, "grandchild-owner-is-child", "cm"), 5)


def test_foreground_deletion_waits_for_blocking_dependents(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {
                "name": "held",
                "finalizers": ["example.com/hold"],
                "ownerReferences": [_owner_ref(owner, block=True)],
            }
        },
    )
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Foreground")
    wait_for(lambda: core.read_namespaced_secret("held", namespace).metadata.deletion_timestamp, 5)
    still = core.read_namespaced_config_map("owner", namespace)
    assert still.metadata.deletion_timestamp and "foregroundDeletion" in still.metadata.finalizers
    core.patch_namespaced_secret("held", namespace, {"metadata": {"finalizers": None}})
    wait_for(lambda: not _exists(core, namespace, "owner", "cm"), 5, message="owner gone after its dependent")


def test_orphan_deletion_keeps_dependents_without_the_reference(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "kept", "ownerReferences": [_owner_ref(owner)]}})
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Orphan")
    wait_for(lambda: not _exists(core, namespace, "owner", "cm"), 5)
    assert core.read_namespaced_secret("kept", namespace).metadata.owner_references is None


def test_dangling_owner_reference_is_collected(core: client.CoreV1Api, namespace: str) -> None:
    ghost = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "ghost",
        "uid": "00000000-0000-0000-0000-000000000000",
    }
    core.create_namespaced_secret(namespace, {"metadata": {"name": "orphan", "ownerReferences": [ghost]}})
    wait_for(lambda: not _exists(core, namespace, "orphan"), 5)


def test_namespace_deletion_empties_it_first(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "doomed"}})
    wait_for(lambda: core.list_namespaced_service_account("doomed").items, 5, message="default SA")
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespace("doomed")
    assert core.read_namespace("doomed").status.phase == "Terminating"
    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_config_map("doomed", {"metadata": {"name": "late"}})
    assert exc.value.status == 403
    wait_for(lambda: core.read_namespaced_config_map("held", "doomed").metadata.deletion_timestamp, 5)
    core.patch_namespaced_config_map("held", "doomed", {"metadata": {"finalizers": None}})
    wait_for(lambda: "doomed" not in {n.metadata.name for n in core.list_namespace().items}, 5)
