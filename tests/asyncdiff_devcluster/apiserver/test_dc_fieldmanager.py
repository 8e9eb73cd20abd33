"""Server-side apply with field ownership: removal of dropped fields, conflicts and ``force``, ownership taken by
updates, the ``fieldsV1`` encoding; and the same through the server with ``kubectl apply --server-side``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from asyncdiff_devcluster.apiserver import fieldmanager, patch
from asyncdiff_devcluster.errors import ApiError


def deployment(env: dict[str, str], replicas: int | None = 1, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": {
            "spec": {
                "containers": [
                    {"name": "op", "image": "img:1", "env": [{"name": k, "value": v} for k, v in env.items()]}
                ]
            }
        }
    }
    if replicas is not None:
        spec["replicas"] = replicas
    meta: dict[str, Any] = {"name": "web"}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def smp(live: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    return dict(patch.strategic_merge_patch(live, {k: v for k, v in cfg.items() if k not in ("apiVersion", "kind")}))


def apply(live: dict[str, Any], cfg: dict[str, Any], manager: str = "helm", force: bool = False) -> dict[str, Any]:
    return fieldmanager.apply(live, cfg, manager, custom=False, force=force, merge=smp, plural="deployments")


def env_of(obj: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in obj["spec"]["template"]["spec"]["containers"][0].get("env", [])}


def test_field_set_uses_the_fields_v1_element_encoding() -> None:
    obj = deployment({"A": "1"}, labels={"app": "x"})
    obj["metadata"]["finalizers"] = ["f1"]
    paths = fieldmanager.field_set(obj, custom=False)
    container = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"op"}')
    assert (*container, ".") in paths
    assert (*container, "f:env", 'k:{"name":"A"}', "f:value") in paths
    assert ("f:metadata", "f:labels", "f:app") in paths
    assert ("f:metadata", "f:finalizers", 'v:"f1"') in paths
    assert ("f:metadata", "f:name") not in paths and ("f:spec", "f:replicas") in paths
    tree = fieldmanager.to_fields_v1(paths)
    assert fieldmanager.from_fields_v1(json.loads(json.dumps(tree))) == paths
    # a CR's lists are atomic: one leaf
    cr = {"spec": {"prompts": ["a", "b"]}}
    assert fieldmanager.field_set(cr, custom=True) == {("f:spec", "f:prompts")}


def test_a_field_dropped_from_the_applied_config_is_removed() -> None:
    first = apply({}, deployment({"A": "1", "METRICS": "9090"}, labels={"app": "x", "tier": "op"}))
    assert first["metadata"]["managedFields"][0]["operation"] == "Apply"
    second = apply(first, deployment({"A": "2"}, labels={"app": "x"}))
    assert env_of(second) == {"A": "2"}
    assert second["metadata"]["labels"] == {"app": "x"}
    entry = second["metadata"]["managedFields"][0]
    assert 'k:{"name":"METRICS"}' not in json.dumps(entry["fieldsV1"])
    # rolled back: the field comes back
    third = apply(second, deployment({"A": "1", "METRICS": "9090"}))
    assert env_of(third) == {"A": "1", "METRICS": "9090"}


def test_fields_owned_by_another_manager_stay_and_conflict() -> None:
    live = apply({}, deployment({"A": "1"}, replicas=1))
    # kubectl scale / an HPA changes replicas with an update: it now owns the field
    scaled = smp(live, {"spec": {"replicas": 3}})
    fieldmanager.record_update(live, scaled, "kubectl-scale", custom=False)
    owners = {e["manager"]: e for e in scaled["metadata"]["managedFields"]}
    assert "f:replicas" in json.dumps(owners["kubectl-scale"]["fieldsV1"])
    assert "f:replicas" not in json.dumps(owners["helm"]["fieldsV1"])
    # the applier leaves replicas out: not its field any more, so it stays
    kept = apply(scaled, deployment({"A": "1"}, replicas=None))
    assert kept["spec"]["replicas"] == 3
    # the applier sets another value: 409 naming the manager and the field, unless forced
    with pytest.raises(ApiError) as err:
        apply(scaled, deployment({"A": "1"}, replicas=5))
    assert err.value.code == 409 and 'conflict with "kubectl-scale"' in err.value.message
    assert ".spec.replicas" in err.value.message
    forced = apply(scaled, deployment({"A": "1"}, replicas=5), force=True)
    assert forced["spec"]["replicas"] == 5
    owners = {e["manager"]: e for e in forced["metadata"]["managedFields"]}
    assert "kubectl-scale" not in owners  # its only field was taken
    # the same value is shared ownership, not a conflict
    same = apply(scaled, deployment({"A": "1"}, replicas=3))
    assert same["spec"]["replicas"] == 3


def test_two_appliers_keep_each_others_fields() -> None:
    live = apply({}, deployment({"A": "1"}))
    other = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"team": "ml"}}}
    both = apply(live, other, manager="gitops")
    assert both["metadata"]["labels"] == {"team": "ml"} and env_of(both) == {"A": "1"}
    again = apply(both, deployment({"A": "1"}))
    assert again["metadata"]["labels"] == {"team": "ml"}


def test_kubectl_server_side_apply_through_the_server(kubectl: Callable[..., Any], namespace: str) -> None:
    def cm(data: dict[str, str]) -> str:
        return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})

    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", stdin=cm({"a": "1", "b": "2"}))
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", stdin=cm({"a": "1"}))
    got = json.loads(kubectl("get", "cm", "c", "-n", namespace, "-o", "json", "--show-managed-fields").stdout)
    assert got["data"] == {"a": "1"}
    assert got["metadata"]["managedFields"][0]["manager"] == "kubectl"
    kubectl("patch", "cm", "c", "-n", namespace, "--type=merge", "-p", '{"data":{"a":"9"}}')
    clash = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", stdin=cm({"a": "1"}), check=False)
    assert clash.returncode != 0 and "conflict" in clash.stderr.lower() and "kubectl-patch" in clash.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-", stdin=cm({"a": "1"}))
    got = json.loads(kubectl("get", "cm", "c", "-n", namespace, "-o", "json").stdout)
    assert got["data"] == {"a": "1"}
