"""The chart's security values reach the operator, and the NetworkPolicy the operator then makes is valid Kubernetes.

Why here: the chart only passes ``security`` and ``networkPolicy`` to the operator (the policy is per job, so the
operator renders it); this test closes the loop: rendered chart -> the operator's settings parser -> the per-job
NetworkPolicy, validated with the same strict Kubernetes 1.33 schemas as every chart object.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_operator import netpol
from asyncdiff_operator.settings import from_env

from tests.packaging.helm_chart import KUBE_VERSION, VALUE_SETS, one, render

KUBECTL = str(Path(sys.executable).parent / "kubectl")
CR: dict[str, Any] = {"metadata": {"name": "job-a", "namespace": "ml", "uid": "u-1"}}
BASE_SPEC: dict[str, Any] = {
    "model": {"family": "sd15", "source": "s3://b/m"},
    "parallelism": {"modelN": 2, "stride": 1},
    "generation": {"prompts": ["a cat"]},
    "output": {"uri": "s3://b/out"},
}
OWNER = {"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob", "name": "job-a", "uid": "u-1"}


def _operator_env(values: dict[str, Any]) -> dict[str, str]:
    container = one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_defaults_are_off_and_workers_get_requests() -> None:
    settings = from_env(_operator_env(VALUE_SETS["default"]))
    assert settings.allow_privileged_pods is False and settings.network_policy is None
    assert settings.worker.resources is not None
    assert settings.worker.resources.requests == {"cpu": "1", "memory": "4Gi"}
    assert settings.worker.tmp_size_limit == "8Gi"


def test_security_values_reach_the_operator_and_render_a_valid_policy() -> None:
    import kubernetes_validate

    settings = from_env(_operator_env(VALUE_SETS["security"]))
    assert settings.allow_privileged_pods is True
    policy_settings = settings.network_policy
    assert policy_settings is not None and policy_settings.s3_port is None
    policy = netpol.render_network_policy(CR, policy_settings, settings.s3.endpoint_url, OWNER)
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    spec = policy["spec"]
    same_job = {"podSelector": {"matchLabels": {"asyncdiff.io/job": "job-a"}}}
    assert spec["podSelector"] == same_job["podSelector"] and spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"from": [same_job]}]  # only pods of the same job, on any port
    own, dns, s3 = spec["egress"]
    assert own == {"to": [same_job]}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert s3["ports"] == [{"protocol": "TCP", "port": 9000}]  # from s3.endpoint
    assert s3["to"] == VALUE_SETS["security"]["networkPolicy"]["s3Peers"]
    assert policy["metadata"]["ownerReferences"] == [OWNER]


@pytest.mark.parametrize(
    ("endpoint", "configured", "port"),
    [(None, None, 443), ("https://s3.example.com", None, 443), ("http://minio:80", None, 80), ("http://m", 9000, 9000)],
)
def test_s3_port(endpoint: str | None, configured: int | None, port: int) -> None:
    assert netpol.s3_port(endpoint, configured) == port


def test_no_peers_means_any_address_on_the_port() -> None:
    settings = from_env({"ASYNCDIFF_NETWORK_POLICY": '{"enabled": true, "s3Port": 8443}'})
    assert settings.network_policy is not None
    policy = netpol.render_network_policy(CR, settings.network_policy, None, OWNER)
    assert policy["spec"]["egress"][2] == {"ports": [{"protocol": "TCP", "port": 8443}]}
    assert from_env({"ASYNCDIFF_NETWORK_POLICY": '{"enabled": false}'}).network_policy is None


def _policy() -> dict[str, Any]:
    return one(render(VALUE_SETS["admission-policy"]), "ValidatingAdmissionPolicy")


def _denied(pod: dict[str, Any] | None) -> list[str]:
    """Messages of the policy's validations that fail for an AsyncDiffJob with this spec.pod (cel-python)."""
    import celpy
    from celpy.adapter import json_to_cel

    spec: dict[str, Any] = {"model": {"family": "sd15", "source": "s3://b/m"}}
    if pod is not None:
        spec["pod"] = pod
    obj = json_to_cel({"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob", "spec": spec})
    env = celpy.Environment()
    denied = []
    for validation in _policy()["spec"]["validations"]:
        result = env.program(env.compile(validation["expression"])).evaluate({"object": obj})
        assert type(result).__name__ == "BoolType", (validation["expression"], result)
        if not result:
            denied.append(validation["message"])
    return denied


def test_admission_policy_is_rendered_when_asked_and_valid() -> None:
    import kubernetes_validate

    objects = render(VALUE_SETS["admission-policy"])
    policy, binding = _policy(), one(objects, "ValidatingAdmissionPolicyBinding")
    for obj in (policy, binding):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]
    assert selector["values"] == ["ml"]
    rule = policy["spec"]["matchConstraints"]["resourceRules"][0]
    assert rule["resources"] == ["asyncdiffjobs"] and rule["operations"] == ["CREATE", "UPDATE"]
    # "auto" renders nothing where the API is not known to be served (offline render), allowPrivilegedPods neither
    assert not [o for o in render() if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert not [o for o in render(VALUE_SETS["security"]) if o["kind"].startswith("ValidatingAdmissionPolicy")]


def test_admission_policy_refuses_what_the_operator_refuses() -> None:
    """Every override case of the operator's unit tests: the policy denies exactly the refused ones, naming the
    same field; the safe ones pass."""
    from asyncdiff_operator import podsecurity
    from asyncdiff_operator.api import parse_spec

    from tests.asyncdiff_operator.test_podsecurity import SAFE_OVERRIDES, UNSAFE_OVERRIDES

    assert _denied(None) == [] and _denied({}) == []
    for pod, field in UNSAFE_OVERRIDES:
        denied = _denied(pod)
        assert len(denied) == 1, (pod, denied)
        refused = podsecurity.refusals(parse_spec({**BASE_SPEC, "pod": pod}).pod)
        head = field.split(" ")[0].split(":")[0].split("[")[0]
        assert head in denied[0] or head.rsplit(".", 1)[0] in denied[0], (head, denied)
        assert refused and head.split(".")[-1] in refused[0]
    for pod in SAFE_OVERRIDES:
        assert _denied(pod) == [], pod


def test_admission_policy_refuses_at_apply_on_the_local_control_plane(tmp_path: Path) -> None:
    """The rendered policy, applied to the local control plane (which enforces ValidatingAdmissionPolicies): a job
    asking for hostNetwork is refused by kubectl apply, naming the field; a plain job is accepted."""
    from asyncdiff_devcluster.testing import running_dev_cluster

    values = {"security": {"admissionPolicy": True}, "operator": {"watchNamespaces": ["default"]}}
    objects = render(values)
    wanted = ("CustomResourceDefinition", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    manifests = [o for o in objects if o["kind"] in wanted]
    assert len(manifests) == 3
    job = {
        "apiVersion": "asyncdiff.io/v1alpha1",
        "kind": "AsyncDiffJob",
        "metadata": {"name": "net", "namespace": "default"},
    }
    with running_dev_cluster(tmp_path / "cluster", gpus=0) as cluster:
        env = cluster.env(KUBECACHEDIR=str(tmp_path / "kcache"))

        def kubectl(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([KUBECTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)

        made = kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))
        assert made.returncode == 0, made.stderr
        bad = {**job, "spec": {**BASE_SPEC, "pod": {"hostNetwork": True}}}
        refused = kubectl("apply", "-f", "-", stdin=json.dumps(bad))
        assert refused.returncode != 0
        assert "ValidatingAdmissionPolicy 'adiff-asyncdiff-operator-pod-security'" in refused.stderr, refused.stderr
        assert "denied request: spec.pod.hostNetwork is refused" in refused.stderr
        good = kubectl("apply", "-f", "-", stdin=json.dumps({**job, "spec": BASE_SPEC}))
        assert good.returncode == 0, good.stderr
