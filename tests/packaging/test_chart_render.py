"""The chart renders and lints with the real Helm library, and every object is valid Kubernetes (strict schemas).

Why strict validation of each value set: a template that is only wrong for one switch (namespaces, peering,
ServiceMonitor) renders fine by default; kubernetes-validate catches a misspelled field that the API server would
reject or, worse, silently drop.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from tests.packaging.helm_chart import CHART, KUBE_VERSION, RELEASE_NAMESPACE, VALUE_SETS, by_kind, one, render

# Custom resources kubernetes-validate has no schema for; checked otherwise below.
CUSTOM_KINDS = {"ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}


def _validate(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict(name: str) -> None:
    import helm_python

    result = helm_python.lint(str(CHART), VALUE_SETS[name], strict=True, kube_version=f"v{KUBE_VERSION}")
    assert not result["errors"], result
    # severity 1 is INFO ("icon is recommended"); 2 WARNING and 3 ERROR fail
    assert all(m["severity"] < 2 for m in result["messages"]), result["messages"]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_is_valid(name: str) -> None:
    objects = render(VALUE_SETS[name])
    assert objects
    crds = {o["spec"]["names"]["kind"]: o for o in by_kind(objects, "CustomResourceDefinition")}
    for obj in objects:
        if obj["kind"] not in CUSTOM_KINDS:
            _validate(obj)
        elif obj["kind"] in crds:  # a custom resource whose CRD the chart ships: its schema applies
            schema = crds[obj["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            jsonschema.Draft4Validator(schema).validate(obj)
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    return dict(pod["containers"][0])


def test_deployment_defaults() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["namespace"] == RELEASE_NAMESPACE
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    container = _container(objects)
    assert container["command"] == ["asyncdiff-operator"]
    assert container["args"] == ["--liveness=http://0.0.0.0:8080/healthz"]  # cluster-wide, standalone
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ASYNCDIFF_WORKER_IMAGE"] == "ghcr.io/asyncdiff/asyncdiff-worker:0.1.0"
    assert env["ASYNCDIFF_METRICS_PORT"] == "9090"
    assert env["ASYNCDIFF_STALL_SECONDS"] == "600" and env["ASYNCDIFF_LOG_FORMAT"] == "json"
    assert env["ASYNCDIFF_PENDING_TIMEOUT_SECONDS"] == "600"
    assert container["image"] == "ghcr.io/asyncdiff/asyncdiff-operator:0.1.0"
    labels = deployment["metadata"]["labels"]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version"):
        assert key in labels
    service = one(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert not by_kind(objects, "ServiceMonitor")
    assert {o["kind"] for o in objects} == {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    }


def test_full_values_reach_the_deployment() -> None:
    objects = render(VALUE_SETS["full"])
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    container = _container(objects)
    assert container["image"] == "registry.example/adiff-op:1.2.3" and container["imagePullPolicy"] == "Always"
    assert container["args"] == ["--liveness=http://0.0.0.0:18080/healthz", "--namespace=ml"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ASYNCDIFF_WORKER_IMAGE"] == "registry.example/adiff-worker:1.2.3-cu124"
    assert env["ASYNCDIFF_S3_ENDPOINT"] == "http://minio.storage.svc:9000"
    assert env["ASYNCDIFF_S3_CREDENTIALS_SECRET"] == "asyncdiff-s3"
    assert env["ASYNCDIFF_S3_FORCE_PATH_STYLE"] == "true"
    assert env["X"] == "1"
    assert '"nvidia.com/gpu.product":"H100"' in env["ASYNCDIFF_WORKER_DEFAULTS"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"liveness": 18080, "metrics": 19090}
    assert one(objects, "Service")["spec"]["ports"][0]["port"] == 8443


def test_namespaces_get_roles_and_flags() -> None:
    objects = render(VALUE_SETS["namespaces"])
    assert _container(objects)["args"][1:] == ["--namespace=team-a", "--namespace=team-b"]
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "adiff-asyncdiff-operator", "namespace": RELEASE_NAMESPACE}
        ]
    # only kopf's read-only scanning is cluster-scoped
    (cluster_role,) = by_kind(objects, "ClusterRole")
    assert cluster_role["metadata"]["name"].endswith("-scanning")
    assert all(set(rule["verbs"]) <= {"list", "watch"} for rule in cluster_role["rules"])


def test_metrics_switches() -> None:
    off = render(VALUE_SETS["metrics-off"])
    assert not by_kind(off, "Service") and not by_kind(off, "ServiceMonitor")
    assert [p["name"] for p in _container(off)["ports"]] == ["liveness"]
    assert "ASYNCDIFF_METRICS_PORT" not in {e["name"] for e in _container(off)["env"]}
    on = render(VALUE_SETS["service-monitor"])
    monitor = one(on, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = one(on, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_peering_objects() -> None:
    clusterwide = render(VALUE_SETS["peering-clusterwide"])
    assert "--peering" in _container(clusterwide)["args"]
    assert [o["metadata"]["name"] for o in by_kind(clusterwide, "ClusterKopfPeering")] == ["default"]
    crds = {o["metadata"]["name"] for o in by_kind(clusterwide, "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    namespaced = render(VALUE_SETS["peering-namespaces"])
    assert [o["metadata"]["namespace"] for o in by_kind(namespaced, "KopfPeering")] == ["team-a"]


def test_without_crds_rbac_and_service_account() -> None:
    objects = render(VALUE_SETS["no-crds-no-rbac"])
    kinds = {o["kind"] for o in objects}
    assert kinds == {"Deployment", "Service"}
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"
