"""ValidatingAdmissionPolicies on the local control plane, with kubectl: Deny with Kubernetes' message, Warn as a
printed warning, selectors and match rules limiting what a binding applies to.

Why: charts ship such policies (the asyncdiff-operator chart refuses privileged job overrides with one); the local
control plane must refuse what a real cluster refuses. The expected message shape is the one kube-apiserver answers
(``... is invalid: : ValidatingAdmissionPolicy '<p>' with binding '<b>' denied request: failed expression: ...``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def _policy(name: str, expression: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [{"expression": expression, **extra}],
        },
    }


def _binding(name: str, policy: str, actions: list[str], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": policy,
            "validationActions": actions,
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }


def _cm(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})


@pytest.fixture
def policies(kubectl: Callable[..., Any], namespace: str) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for kind, name in made:
        kubectl("delete", kind, name, "--ignore-not-found")


def test_deny_warn_and_selectors(kubectl: Callable[..., Any], namespace: str, policies: list[Any]) -> None:
    deny = _policy(f"{namespace}-name", "object.metadata.name.endsWith('k8s')")
    warn = _policy(
        f"{namespace}-data", "!has(object.data) || size(object.data) < 2", message="at most one key", reason="Forbidden"
    )
    for obj in (
        deny,
        warn,
        _binding(f"{namespace}-deny", deny["metadata"]["name"], ["Deny"], namespace),
        _binding(f"{namespace}-warn", warn["metadata"]["name"], ["Warn"], namespace),
    ):
        kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        policies.append((obj["kind"], obj["metadata"]["name"]))
    refused = kubectl("apply", "-n", namespace, "-f", "-", stdin=_cm("my-config"), check=False)
    assert refused.returncode != 0
    assert (
        f"The configmaps \"my-config\" is invalid: : ValidatingAdmissionPolicy '{namespace}-name' with binding "
        f"'{namespace}-deny' denied request: failed expression: object.metadata.name.endsWith('k8s')"
    ) in refused.stderr, refused.stderr
    kubectl("apply", "-n", namespace, "-f", "-", stdin=_cm("my-config-k8s"))
    two = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two-k8s"}, "data": {"a": "1", "b": "2"}}
    )
    warned = kubectl("apply", "-n", namespace, "-f", "-", stdin=two)
    assert (
        f"Warning: Validation failed for ValidatingAdmissionPolicy '{namespace}-data' with binding '{namespace}-warn': "
        "at most one key"
    ) in warned.stderr, warned.stderr
    # the bindings select only this namespace
    other = kubectl("apply", "-n", "default", "-f", "-", stdin=_cm(f"{namespace}-free"))
    assert "Warning" not in other.stderr
    kubectl("delete", "configmap", "-n", "default", f"{namespace}-free")


def test_forbidden_reason_and_evaluation_errors(
    kubectl: Callable[..., Any], namespace: str, policies: list[Any]
) -> None:
    policy = _policy(f"{namespace}-broken", "object.data.missing == 'x'", message="needs missing=x", reason="Forbidden")
    for obj in (policy, _binding(f"{namespace}-b", policy["metadata"]["name"], ["Deny"], namespace)):
        kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        policies.append((obj["kind"], obj["metadata"]["name"]))
    refused = kubectl("apply", "-n", namespace, "-f", "-", stdin=_cm("c"), check=False)
    assert refused.returncode != 0 and 'configmaps "c" is forbidden: ValidatingAdmissionPolicy' in refused.stderr
    assert "denied request:" in refused.stderr
