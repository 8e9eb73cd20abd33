"""The per-job NetworkPolicy (optional): a job's worker pods talk only to each other, DNS and the S3 endpoint.

Why per job and made by the operator: "only pods of the same job" needs a selector on this job's label value, which
a chart-wide policy cannot express (NetworkPolicy has no "same label value" peer), and jobs run in namespaces the
chart does not know in cluster-wide mode. So, when the operator's setting ``ASYNCDIFF_NETWORK_POLICY`` is set
(chart value ``networkPolicy.enabled``), each job gets ``<job>-workers``, owned by the AsyncDiffJob (garbage-collected
with it) and shared by its attempts:

- ingress: only from pods labelled ``asyncdiff.io/job=<job>``, on every port (the torchrun rendezvous port and the
  gloo/NCCL ports, which are chosen at run time);
- egress: to the same pods, to DNS (the configured peers, UDP and TCP 53), and to the S3 endpoint on its port (the
  configured peers, else any address: S3 endpoints are usually outside the cluster and have no stable IPs).

The S3 port is the configured one, else the port of the job's own resolved endpoint (``spec.output.endpointUrl`` or
the operator's default), else 443. Models read from another endpoint need that port in ``networkPolicy.s3Port``.
Enforcement is the CNI's job; the local control plane stores NetworkPolicies without enforcing them.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from asyncdiff_operator.settings import NetworkPolicySettings

LABEL_JOB: Final = "asyncdiff.io/job"


def policy_name(cr_name: str) -> str:
    return f"{cr_name}-workers"


def s3_port(endpoint_url: str | None, configured: int | None) -> int:
    """The S3 endpoint's port: the configured one, else the URL's (80/443 by scheme), else 443 (AWS S3)."""
    if configured:
        return configured
    if not endpoint_url:
        return 443
    parts = urlsplit(endpoint_url)
    return parts.port or (80 if parts.scheme == "http" else 443)


def render_network_policy(
    cr: dict[str, Any],
    settings: NetworkPolicySettings,
    endpoint_url: str | None,
    owner: dict[str, Any],
) -> dict[str, Any]:
    """The NetworkPolicy of one job's worker pods (``endpoint_url``: the job's resolved S3 endpoint, if any)."""
    meta = cr["metadata"]
    same_job = {"podSelector": {"matchLabels": {LABEL_JOB: meta["name"]}}}
    s3: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": s3_port(endpoint_url, settings.s3_port)}]}
    if settings.s3_peers:
        s3["to"] = [dict(p) for p in settings.s3_peers]
    dns = {
        "to": [dict(p) for p in settings.dns_peers],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": policy_name(meta["name"]),
            "namespace": meta.get("namespace"),
            "labels": {LABEL_JOB: meta["name"]},
            "ownerReferences": [owner],
        },
        "spec": {
            "podSelector": {"matchLabels": {LABEL_JOB: meta["name"]}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [same_job]}],
            "egress": [{"to": [same_job]}, dns, s3],
        },
    }
