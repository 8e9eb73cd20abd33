"""RBAC covers exactly what the operator calls: no call without a rule, no rule without a call.

Why: operator/asyncdiff_operator/rbac.py is the one list of rules; the chart's RBAC is generated from it. This test
derives the needs independently, by scanning the operator's source (tests/packaging/k8s_calls.py) plus kopf's own
framework needs per mode (peering objects when ``--peering``; CRD and namespace scanning unless main.py disables
it), and compares sets of (apiGroup, resource, verb) in both directions, for all four modes. Then it checks that
the rendered chart grants exactly rbac.py's rules, in the right kind of object.
"""

from __future__ import annotations

import ast
from typing import Any

import pytest
import yaml
from asyncdiff_operator import rbac

from tests.packaging import k8s_calls
from tests.packaging.helm_chart import REPO, VALUE_SETS, by_kind, render

PACKAGE_DIR = REPO / "operator" / "asyncdiff_operator"
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions", "clusterkopfpeerings"}
MODES = [(True, False), (True, True), (False, False), (False, True)]  # (clusterwide, peering)
Triple = tuple[str, str, str]


def _status_plurals() -> set[str]:
    crd = yaml.safe_load((REPO / "crds" / "asyncdiff.io_asyncdiffjobs.yaml").read_text())
    has_status = any("status" in (v.get("subresources") or {}) for v in crd["spec"]["versions"])
    return {crd["spec"]["names"]["plural"]} if has_status else set()


@pytest.fixture(scope="module")
def scanned() -> list[k8s_calls.Found]:
    return list(k8s_calls.scan(PACKAGE_DIR, "asyncdiff_operator", _status_plurals()))


def _main_disables_scanning() -> bool:
    tree = ast.parse((PACKAGE_DIR / "main.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(ast.unparse(t).endswith("scanning.disabled") for t in node.targets):
            return isinstance(node.value, ast.Constant) and node.value.value is True
    return False


def _blocks_owner_deletion() -> bool:
    """Whether the children's owner references set blockOwnerDeletion (then, under the
    OwnerReferencesPermissionEnforcement admission plugin, creating them needs ``update`` on the owner's
    ``/finalizers``)."""
    from asyncdiff_operator.children import owner_reference

    return bool(owner_reference({"metadata": {"name": "n", "uid": "u"}}).get("blockOwnerDeletion"))


def required(scanned: list[k8s_calls.Found], *, clusterwide: bool, peering: bool) -> set[Triple]:
    """What the operator needs in this mode: its scanned calls plus kopf's framework needs."""
    needs = {f.triple for f in scanned}
    if _blocks_owner_deletion():  # the owner of every child is the AsyncDiffJob (the CRD's group and plural)
        needs |= {("asyncdiff.io", f"{plural}/finalizers", "update") for plural in _status_plurals()}
    if peering:
        plural = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
        needs |= {("kopf.dev", plural, verb) for verb in ("list", "watch", "patch")}
    if not _main_disables_scanning():
        needs |= {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
        if not clusterwide:
            needs |= {("", "namespaces", v) for v in ("list", "watch")}
    return needs


def granted(*, clusterwide: bool, peering: bool) -> set[Triple]:
    rules = rbac.namespaced_rules(clusterwide=clusterwide, peering=peering)
    rules += rbac.cluster_rules(clusterwide=clusterwide, peering=peering)
    return set().union(*(r.triples() for r in rules))


def test_scan_finds_the_known_calls(scanned: list[k8s_calls.Found]) -> None:
    triples = {f.triple for f in scanned}
    # a floor, so that a broken scan cannot pass by finding nothing
    assert {("batch", "jobs", "create"), ("", "pods/log", "get"), ("", "pods", "list")} <= triples
    assert ("asyncdiff.io", "asyncdiffjobs", "watch") in triples
    modules = set(k8s_calls.operator_modules(PACKAGE_DIR, "asyncdiff_operator"))
    assert {"main", "handlers", "kube"} <= modules and "rbac" not in modules


@pytest.mark.parametrize(("clusterwide", "peering"), MODES)
def test_rules_cover_every_call_and_nothing_else(
    scanned: list[k8s_calls.Found], clusterwide: bool, peering: bool
) -> None:
    need = required(scanned, clusterwide=clusterwide, peering=peering)
    have = granted(clusterwide=clusterwide, peering=peering)
    missing = sorted(need - have)
    where = {t: sorted({f.where for f in scanned if f.triple == t}) for t in missing}
    assert not missing, f"calls without a rule in operator/asyncdiff_operator/rbac.py: {where}"
    assert not sorted(have - need), f"rules that serve no call: {sorted(have - need)}"


def test_finalizers_update_is_granted_for_owner_references() -> None:
    assert _blocks_owner_deletion()
    for clusterwide, peering in MODES:
        assert ("asyncdiff.io", "asyncdiffjobs/finalizers", "update") in granted(
            clusterwide=clusterwide, peering=peering
        )


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_the_operator_can_never_read_secrets(values: str) -> None:
    """No rule (in rbac.py or in any rendered chart) lets the operator read, list or watch Secrets: it never needs
    their contents (workers mount them by name)."""
    for clusterwide, peering in MODES:
        rules = rbac.namespaced_rules(clusterwide=clusterwide, peering=peering)
        rules += rbac.cluster_rules(clusterwide=clusterwide, peering=peering)
        assert not [r for r in rules if r.resource in ("secrets", "*")], rules
    objects = render(VALUE_SETS[values])
    for role in by_kind(objects, "Role") + by_kind(objects, "ClusterRole"):
        for rule in role["rules"]:
            resources = set(rule["resources"])
            assert not resources & {"secrets", "*"} or not set(rule["verbs"]) & {"get", "list", "watch", "*"}, rule
            assert "*" not in rule["apiGroups"] and "*" not in rule["verbs"], rule


def test_rule_scopes() -> None:
    for clusterwide, peering in MODES:
        for rule in rbac.namespaced_rules(clusterwide=clusterwide, peering=peering):
            assert rule.resource.split("/")[0] not in CLUSTER_SCOPED, rule
        for rule in rbac.cluster_rules(clusterwide=clusterwide, peering=peering):
            assert rule.resource.split("/")[0] in CLUSTER_SCOPED, rule
    assert rbac.KOPF_SCANNING is not _main_disables_scanning(), "set rbac.KOPF_SCANNING to match main.py"


def test_chart_rules_template_is_generated() -> None:
    path = REPO / rbac.CHART_RULES_FILE
    assert path.read_text() == rbac.chart_template(), "stale; run: python -m asyncdiff_operator.rbac --write"


def _rule_triples(role: dict[str, Any]) -> set[Triple]:
    out: set[Triple] = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out |= {(group, resource, verb) for verb in rule["verbs"]}
    return out


@pytest.mark.parametrize(
    ("values", "clusterwide", "peering"),
    [
        ("default", True, False),
        ("peering-clusterwide", True, True),
        ("namespaces", False, False),
        ("peering-namespaces", False, True),
    ],
)
def test_chart_grants_exactly_the_rules(values: str, clusterwide: bool, peering: bool) -> None:
    objects = render(VALUE_SETS[values])
    cluster_roles = by_kind(objects, "ClusterRole")
    roles = by_kind(objects, "Role")
    namespaced = set().union(*(r.triples() for r in rbac.namespaced_rules(clusterwide=clusterwide, peering=peering)))
    cluster = set().union(*(r.triples() for r in rbac.cluster_rules(clusterwide=clusterwide, peering=peering)))
    if clusterwide:
        assert not roles
        assert [_rule_triples(r) for r in cluster_roles] == [namespaced | cluster]
    else:
        watched = VALUE_SETS[values]["operator"]["watchNamespaces"]
        assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
        assert all(_rule_triples(r) == namespaced for r in roles)
        assert [_rule_triples(r) for r in cluster_roles] == ([cluster] if cluster else [])
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
        for b in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding")
    }
    made = {(r["kind"], r["metadata"]["name"], r["metadata"].get("namespace")) for r in roles + cluster_roles}
    assert bound == made
