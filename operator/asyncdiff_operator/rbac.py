"""The RBAC rules the operator needs, in one place; the Helm chart's RBAC is generated from here.

Why one place: least privilege drifts when the rules live in YAML far from the code. Each rule names the calls it
serves; ``tests/packaging/test_rbac.py`` scans this package's source for every Kubernetes client call and kopf
handler and fails when a call is not covered or a rule serves no call. ``python -m asyncdiff_operator.rbac --write``
regenerates the chart's ``templates/_rbac_rules.tpl`` (the test fails when it is stale).

Secrets: no rule. The operator never reads a Secret: workers mount the S3 credentials Secret by name (the kubelet
reads it), so the operator's role cannot leak their contents (``tests/packaging/test_rbac.py`` asserts it).

Scopes. Rules on namespaced resources go into a Role per watched namespace (or one ClusterRole when cluster-wide).
Rules on cluster-scoped resources always need a ClusterRole: kopf's resource scanning (CRDs; namespaces when
namespace-scoped), and the ClusterKopfPeering when cluster-wide peering is on. kopf degrades with a warning when
scanning is forbidden; setting ``settings.scanning.disabled = True`` in ``main.py`` would remove those rules (then
set ``KOPF_SCANNING`` to False here).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from asyncdiff_operator.api import GROUP, PLURAL

KOPF_SCANNING: Final = True
"""kopf's runtime observation of CRDs (and namespaces when namespace-scoped) is on: main.py does not disable it.

Kept on deliberately: with ``settings.scanning.disabled`` kopf resolves the CRD once, from API discovery, at start-up;
if the CRD is not served yet (``crds.install=false`` with a GitOps tool applying it later, or a race with a CRD that
is not yet Established) kopf only logs "Unresolved resources cannot be served", stays live for the liveness probe,
and handles no job until it is restarted. Scanning notices the CRD when it appears, at the price of list/watch on
CRDs (and namespaces when namespace-scoped) in a ClusterRole; without that ClusterRole kopf degrades with a warning."""

CHART_RULES_FILE: Final = Path("charts/asyncdiff-operator/templates/_rbac_rules.tpl")


@dataclass(frozen=True)
class Rule:
    """One RBAC rule: verbs on one resource (``pods/log`` style for subresources) of one API group."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    why: str

    def triples(self) -> set[tuple[str, str, str]]:
        return {(self.api_group, self.resource, verb) for verb in self.verbs}


OPERATOR: Final = (
    Rule("", "configmaps", ("create", "delete"), "kube.create_if_absent, kube.delete_children: the job spec ConfigMap"),
    Rule(
        "batch",
        "jobs",
        ("create", "delete", "get", "list", "patch", "watch"),
        "kube.create_if_absent, read_job, delete_children: the Job; shard_reconcile.patch_parallelism: replicas; "
        "kube.set_suspend: suspend/resume; handlers.child_jobs: the kopf index (one watch) of child Jobs",
    ),
    Rule("", "services", ("create",), "kube.create_if_absent: the headless Service of a multi-node job"),
    Rule("networking.k8s.io", "networkpolicies", ("create",), "kube.create_if_absent: a job's NetworkPolicy"),
    Rule(
        "",
        "pods",
        ("delete", "list"),
        "kube.observe, shard_kube: the attempt's (one shard's) pods by label selector; "
        "shard_reconcile.delete_pod: a stalled shard's pod",
    ),
    Rule("", "pods/log", ("get",), "kube.last_event: progress lines from rank 0's log tail"),
    Rule("", "events", ("list",), "kube.pending_info: a Pending pod's Warning events (FailedMount, ...)"),
    Rule(GROUP, PLURAL, ("delete", "list", "patch", "watch"), "kopf handlers (watch, finalizer), kube.delete_cr (TTL)"),
    Rule(GROUP, f"{PLURAL}/status", ("patch",), "kopf writes the handlers' status patches through /status"),
    Rule(
        GROUP,
        f"{PLURAL}/finalizers",
        ("update",),
        "children.owner_reference sets blockOwnerDeletion: OwnerReferencesPermissionEnforcement (OpenShift) needs it",
    ),
    Rule("", "events", ("create",), "kopf.event transitions and kopf's own handler-failure events"),
)
PEERING_NAMESPACED: Final = (
    Rule("kopf.dev", "kopfpeerings", ("list", "patch", "watch"), "kopf peering (--peering, namespace-scoped)"),
)
PEERING_CLUSTER: Final = (
    Rule("kopf.dev", "clusterkopfpeerings", ("list", "patch", "watch"), "kopf peering (--peering, cluster-wide)"),
)
SCANNING_CRDS: Final = (
    Rule("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), "kopf: runtime CRD observation"),
)
SCANNING_NAMESPACES: Final = (
    Rule("", "namespaces", ("list", "watch"), "kopf: namespace observation when namespace-scoped"),
)


def namespaced_rules(*, clusterwide: bool, peering: bool) -> tuple[Rule, ...]:
    """Rules on namespaced resources: a Role per watched namespace, or the ClusterRole when cluster-wide."""
    return OPERATOR + (PEERING_NAMESPACED if peering and not clusterwide else ())


def cluster_rules(*, clusterwide: bool, peering: bool) -> tuple[Rule, ...]:
    """Rules on cluster-scoped resources (always a ClusterRole); empty when nothing cluster-scoped is called."""
    rules: tuple[Rule, ...] = ()
    if KOPF_SCANNING:
        rules += SCANNING_CRDS + (() if clusterwide else SCANNING_NAMESPACES)
    if peering and clusterwide:
        rules += PEERING_CLUSTER
    return rules


def _yaml_rules(rules: tuple[Rule, ...]) -> str:
    lines = []
    for rule in rules:
        verbs = ", ".join(f'"{v}"' for v in rule.verbs)
        lines += [
            f"# {rule.why}",
            f'- apiGroups: ["{rule.api_group}"]',
            f'  resources: ["{rule.resource}"]',
            f"  verbs: [{verbs}]",
        ]
    return "\n".join(lines)


def chart_template() -> str:
    """The chart's ``_rbac_rules.tpl``: one named template per rule group, composed by ``rbac.yaml``."""
    groups = {
        "operator": OPERATOR,
        "peering.namespaced": PEERING_NAMESPACED,
        "peering.cluster": PEERING_CLUSTER,
        "scanning.crds": SCANNING_CRDS if KOPF_SCANNING else (),
        "scanning.namespaces": SCANNING_NAMESPACES if KOPF_SCANNING else (),
    }
    parts = [
        "{{/* Generated by `python -m asyncdiff_operator.rbac --write` from operator/asyncdiff_operator/rbac.py;",
        "     do not edit. tests/packaging/test_rbac.py fails when this file is stale. */}}",
    ]
    for name, rules in groups.items():
        parts.append(f'{{{{- define "asyncdiff-operator.rules.{name}" }}}}')
        if rules:
            parts.append(_yaml_rules(rules))
        parts.append("{{- end }}")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print or write the chart's RBAC rules template.")
    parser.add_argument("--write", action="store_true", help=f"write {CHART_RULES_FILE} (from the repository root)")
    args = parser.parse_args(argv)
    text = chart_template()
    if args.write:
        CHART_RULES_FILE.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
