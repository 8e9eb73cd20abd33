"""The real kubernetes client against the dev cluster's API server: verbs, codes, selectors, watch."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_devcluster.testing import RunningDevCluster, wait_for
from kubernetes import client, watch

ASSETS = Path(__file__).resolve().parents[1] / "assets"
G, V, P = "devcluster.asyncdiff.io", "v1alpha1", "widgets"


@pytest.fixture(scope="module")
def widgets(k8s: Any) -> Any:
    ext = client.ApiextensionsV1Api(k8s)
    crd = yaml.safe_load((ASSETS / "widget_crd.yaml").read_text())
    try:
        ext.create_custom_resource_definition(crd)
    except client.ApiException as exc:
        assert exc.status == 409
    return client.CustomObjectsApi(k8s)


def widget(name: str, size: int = 3, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size, **spec},
    }


def test_create_answers_201_with_server_metadata_and_defaults(widgets: Any, namespace: str) -> None:
    obj = widgets.create_namespaced_custom_object(G, V, namespace, P, widget("w1"))
    meta = obj["metadata"]
    assert meta["uid"] and meta["resourceVersion"].isdigit() and meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z") and meta["namespace"] == namespace
    assert obj["spec"]["color"] == "green"  # schema default applied
    core = client.CoreV1Api(widgets.api_client)
    _, code, _ = core.create_namespaced_config_map_with_http_info(namespace, {"metadata": {"name": "c"}})
    assert code == 201


def test_get_list_404_409(widgets: Any, namespace: str) -> None:
    widgets.create_namespaced_custom_object(
        G, V, namespace, P, widget("a", labels_unused=None) if False else widget("a")
    )
    with pytest.raises(client.ApiException) as exc:
        widgets.create_namespaced_custom_object(G, V, namespace, P, widget("a"))
    assert exc.value.status == 409
    with pytest.raises(client.ApiException) as exc:
        widgets.get_namespaced_custom_object(G, V, namespace, P, "missing")
    assert exc.value.status == 404
    listed = widgets.list_namespaced_custom_object(G, V, namespace, P)
    assert listed["kind"] == "WidgetList" and listed["apiVersion"] == f"{G}/{V}"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    with pytest.raises(client.ApiException) as exc:
        client.CoreV1Api(widgets.api_client).create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert exc.value.status == 404


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"size": 50}, "spec.size: Invalid value: 50: spec.size in body should be less than or equal to 10"),
        ({"color": "red"}, "spec.size: Required value"),
        (
            {"size": 2, "color": "pink"},
            'spec.color: Unsupported value: "pink": supported values: "red", "green", "blue"',
        ),
        ({"size": "big"}, "spec.size in body must be of type integer"),
        ({"size": 1, "tags": ["a", "b", "c", "d"]}, "spec.tags: Too many: 4: must have at most 3 items"),
    ],
)
def test_schema_violations_answer_422(widgets: Any, namespace: str, spec: dict[str, Any], message: str) -> None:
    body = {"apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(client.ApiException) as exc:
        widgets.create_namespaced_custom_object(G, V, namespace, P, body)
    assert exc.value.status == 422
    status = json.loads(exc.value.body)
    assert status["reason"] == "Invalid" and message in status["message"]
    assert status["message"].startswith('Widget.devcluster.asyncdiff.io "bad" is invalid: ')


def test_unknown_fields_pruned_or_rejected_when_strict(widgets: Any, namespace: str) -> None:
    obj = widgets.create_namespaced_custom_object(G, V, namespace, P, widget("p", bogus=1, extra={"free": {"x": 1}}))
    assert "bogus" not in obj["spec"] and obj["spec"]["extra"] == {"free": {"x": 1}}
    with pytest.raises(client.ApiException) as exc:
        widgets.create_namespaced_custom_object(G, V, namespace, P, widget("q", bogus=1), field_validation="Strict")
    assert exc.value.status == 400 and 'unknown field "spec.bogus"' in json.loads(exc.value.body)["message"]


def test_replace_requires_fresh_resource_version(widgets: Any, namespace: str) -> None:
    obj = widgets.create_namespaced_custom_object(G, V, namespace, P, widget("r"))
    stale = dict(obj)
    obj["spec"]["size"] = 4
    updated = widgets.replace_namespaced_custom_object(G, V, namespace, P, "r", obj)
    assert updated["metadata"]["generation"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(stale["metadata"]["resourceVersion"])
    stale["spec"] = {"size": 5}
    with pytest.raises(client.ApiException) as exc:
        widgets.replace_namespaced_custom_object(G, V, namespace, P, "r", stale)
    assert exc.value.status == 409 and "the object has been modified" in exc.value.body
    no_rv = widget("r", 6)
    with pytest.raises(client.ApiException) as exc:
        widgets.replace_namespaced_custom_object(G, V, namespace, P, "r", no_rv)
    assert exc.value.status == 422
    # a no-op update does not bump the resourceVersion
    same = widgets.replace_namespaced_custom_object(G, V, namespace, P, "r", updated)
    assert same["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]


def test_patch_flavours(widgets: Any, k8s: Any, namespace: str) -> None:
    widgets.create_namespaced_custom_object(G, V, namespace, P, widget("m"))
    merged = widgets.patch_namespaced_custom_object(G, V, namespace, P, "m", {"spec": {"size": 7, "color": None}})
    assert merged["spec"]["size"] == 7 and merged["spec"]["color"] == "green"  # removed, then defaulted again
    rv = merged["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/spec/size", "value": 8},
    ]
    json_patch = "application/json-patch+json"
    patched = widgets.patch_namespaced_custom_object(G, V, namespace, P, "m", ops, _content_type=json_patch)
    assert patched["spec"]["size"] == 8
    with pytest.raises(client.ApiException) as exc:  # kopf relies on a failed `test` being a 422
        widgets.patch_namespaced_custom_object(G, V, namespace, P, "m", ops, _content_type=json_patch)
    assert exc.value.status == 422
    with pytest.raises(client.ApiException) as exc:
        widgets.patch_namespaced_custom_object(
            G,
            V,
            namespace,
            P,
            "m",
            {"spec": {"size": 2}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert exc.value.status == 415
    core = client.CoreV1Api(k8s)
    pod = {
        "metadata": {"name": "p", "labels": {"a": "1"}},
        "spec": {
            "nodeName": "nowhere",
            "containers": [
                {"name": "c1", "image": "img:1", "command": ["true"], "env": [{"name": "X", "value": "1"}]},
                {"name": "c2", "image": "img:1", "command": ["true"]},
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    smp = {"metadata": {"labels": {"b": "2"}}, "spec": {"containers": [{"name": "c2", "image": "img:2"}]}}
    smp_type = "application/strategic-merge-patch+json"
    result = core.patch_namespaced_pod("p", namespace, smp, _content_type=smp_type)
    assert [c.image for c in result.spec.containers] == ["img:1", "img:2"]
    assert result.spec.containers[0].env[0].name == "X"
    assert result.metadata.labels == {"a": "1", "b": "2"}
    with pytest.raises(client.ApiException) as exc:
        core.patch_namespaced_pod("p", namespace, {"spec": {"restartPolicy": "Never"}}, _content_type=smp_type)
    assert exc.value.status == 422


def test_status_subresource_is_isolated(widgets: Any, namespace: str) -> None:
    obj = widgets.create_namespaced_custom_object(G, V, namespace, P, {**widget("s"), "status": {"phase": "Fake"}})
    assert "status" not in obj
    st = widgets.patch_namespaced_custom_object_status(
        G, V, namespace, P, "s", {"status": {"phase": "Up"}, "spec": {"size": 9}}
    )
    assert st["status"] == {"phase": "Up"} and st["spec"]["size"] == 3 and st["metadata"]["generation"] == 1
    main = widgets.patch_namespaced_custom_object(
        G, V, namespace, P, "s", {"status": {"phase": "Down"}, "spec": {"size": 2}}
    )
    assert main["status"] == {"phase": "Up"} and main["spec"]["size"] == 2 and main["metadata"]["generation"] == 2


def test_label_and_field_selectors(widgets: Any, k8s: Any, namespace: str) -> None:
    for name, app in (("x1", "y"), ("x2", "y"), ("x3", "z")):
        body = widget(name)
        body["metadata"]["labels"] = {"app": app}
        widgets.create_namespaced_custom_object(G, V, namespace, P, body)

    def names(**kw: Any) -> list[str]:
        return [i["metadata"]["name"] for i in widgets.list_namespaced_custom_object(G, V, namespace, P, **kw)["items"]]

    assert names(label_selector="app=y") == ["x1", "x2"]
    assert names(label_selector="app!=y") == ["x3"]
    assert names(label_selector="app in (z,q)") == ["x3"]
    assert names(label_selector="!app") == []
    assert names(field_selector="metadata.name=x2") == ["x2"]
    assert names(label_selector="app=y", field_selector="metadata.name!=x1") == ["x2"]
    core = client.CoreV1Api(k8s)
    assert core.list_namespace(field_selector=f"metadata.name={namespace}").items[0].metadata.name == namespace


def test_watch_resumes_from_resource_version_and_expires(
    widgets: Any, dev_cluster: RunningDevCluster, namespace: str
) -> None:
    first = widgets.create_namespaced_custom_object(G, V, namespace, P, widget("w-a"))
    widgets.create_namespaced_custom_object(G, V, namespace, P, widget("w-b"))
    widgets.patch_namespaced_custom_object(G, V, namespace, P, "w-a", {"spec": {"size": 5}})
    w = watch.Watch()
    seen = []
    for event in w.stream(
        widgets.list_namespaced_custom_object,
        G,
        V,
        namespace,
        P,
        resource_version=first["metadata"]["resourceVersion"],
        timeout_seconds=1,
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if len(seen) == 2:
            w.stop()
    assert seen == [("ADDED", "w-b"), ("MODIFIED", "w-a")]
    dev_cluster.call(lambda c: c.store.compact())
    with pytest.raises(client.ApiException) as exc:
        for _ in watch.Watch().stream(
            widgets.list_namespaced_custom_object,
            G,
            V,
            namespace,
            P,
            resource_version=first["metadata"]["resourceVersion"],
            timeout_seconds=1,
        ):
            pass
    assert exc.value.status == 410


def test_watch_follows_label_selector_transitions(k8s: Any, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    listed = core.list_namespaced_config_map(namespace, label_selector="keep=yes")
    events: list[tuple[str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(
            core.list_namespaced_config_map,
            namespace,
            label_selector="keep=yes",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=5,
        ):
            events.append((event["type"], event["object"].metadata.name))
            if len(events) == 3:
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    # no wait for the watch to connect: it starts from the listed resourceVersion, so it sees these changes anyway
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm", "labels": {"keep": "yes"}}})
    core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "v"}})
    core.patch_namespaced_config_map("cm", namespace, {"metadata": {"labels": {"keep": "no"}}})
    thread.join(6)
    assert events == [("ADDED", "cm"), ("MODIFIED", "cm"), ("DELETED", "cm")]


def test_finalizers_hold_deletion_until_removed(widgets: Any, namespace: str) -> None:
    body = widget("f")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    widgets.create_namespaced_custom_object(G, V, namespace, P, body)
    deleted = widgets.delete_namespaced_custom_object(G, V, namespace, P, "f")
    assert deleted["metadata"]["deletionTimestamp"]
    still = widgets.get_namespaced_custom_object(G, V, namespace, P, "f")
    assert still["metadata"]["finalizers"] == ["example.com/hold"]
    with pytest.raises(client.ApiException) as exc:
        widgets.patch_namespaced_custom_object(
            G, V, namespace, P, "f", {"metadata": {"finalizers": ["example.com/hold", "b"]}}
        )
    assert exc.value.status == 422
    widgets.patch_namespaced_custom_object(G, V, namespace, P, "f", {"metadata": {"finalizers": None}})
    with pytest.raises(client.ApiException) as exc:
        widgets.get_namespaced_custom_object(G, V, namespace, P, "f")
    assert exc.value.status == 404


def test_generate_name_and_delete_collection(k8s: Any, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    made = [
        core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "gen-", "labels": {"g": "1"}}})
        for _ in range(3)
    ]
    assert len({m.metadata.name for m in made}) == 3 and all(m.metadata.name.startswith("gen-") for m in made)
    core.delete_collection_namespaced_config_map(namespace, label_selector="g=1")
    assert core.list_namespaced_config_map(namespace, label_selector="g=1").items == []


def test_crd_registration_and_removal_are_visible_in_discovery(k8s: Any) -> None:
    ext = client.ApiextensionsV1Api(k8s)
    crd = yaml.safe_load((ASSETS / "widget_crd.yaml").read_text())
    crd["metadata"]["name"] = "gadgets.other.asyncdiff.io"
    crd["spec"]["group"] = "other.asyncdiff.io"
    crd["spec"]["names"] = {"plural": "gadgets", "kind": "Gadget"}
    created = ext.create_custom_resource_definition(crd)
    assert {c.type: c.status for c in created.status.conditions}["Established"] == "True"
    resources = client.CustomObjectsApi(k8s).get_api_resources("other.asyncdiff.io", "v1alpha1")
    assert {r.name for r in resources.resources} == {"gadgets", "gadgets/status"}
    groups = {g.name for g in client.ApisApi(k8s).get_api_versions().groups}
    assert "other.asyncdiff.io" in groups
    ext.delete_custom_resource_definition("gadgets.other.asyncdiff.io")
    wait_for(lambda: "other.asyncdiff.io" not in {g.name for g in client.ApisApi(k8s).get_api_versions().groups})
    with pytest.raises(client.ApiException) as exc:
        client.CustomObjectsApi(k8s).list_cluster_custom_object("other.asyncdiff.io", "v1alpha1", "gadgets")
    assert exc.value.status == 404
