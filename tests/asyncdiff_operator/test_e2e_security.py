"""Security end to end on the local control plane, in the e2e namespace that enforces Pod Security ``restricted``.

Why end to end: the guarantees are about everything a job leaves behind and about what a real admission chain
accepts, which no unit test sees. Three checks:

- enforcement is live in the jobs' namespace (a bare pod is refused), and the operator's pods pass it (a job runs);
- ``spec.pod`` overrides that leave ``restricted`` (privileged, hostPath, hostNetwork, added capabilities, root) are
  refused at once with reason ``PodSecurityRefused`` naming the field, and no child is created;
- a job writing to S3 with credentials from a Secret whose values are fresh random strings: after it succeeded,
  neither value (nor its base64) appears in the CR, any Event, ConfigMap, Job or Pod object, the pods' logs, the
  operator's log, or any S3 object (bodies, metadata, the result manifest).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import E2E, RESTRICTED_LABELS, job_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    from asyncdiff_worker.embedded_s3 import start_embedded_s3

    server = start_embedded_s3()
    try:
        yield server
    finally:
        server.stop()


def test_the_jobs_namespace_enforces_restricted(e2e: E2E) -> None:
    labels = e2e.core.read_namespace("default").metadata.labels
    for label in RESTRICTED_LABELS:
        key, value = label.split("=")
        assert labels[key] == value
    refused = e2e.kubectl(
        "run", "bare", "--image=busybox", "--restart=Never", "--command", "--", "sleep", "1", check=False
    )
    assert 'pods "bare" is forbidden: violates PodSecurity "restricted:latest"' in refused, refused


@pytest.mark.parametrize(
    ("name", "pod", "field"),
    [
        ("priv", {"containerSecurityContext": {"privileged": True}}, "spec.pod.containerSecurityContext.privileged"),
        ("hostpath", {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "spec.pod.volumes[0].hostPath"),
        ("hostnet", {"hostNetwork": True}, "spec.pod.hostNetwork"),
        ("caps", {"containerSecurityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "capabilities.add"),
        ("root", {"securityContext": {"runAsUser": 0}}, "spec.pod.securityContext.runAsUser"),
    ],
)
def test_privileged_overrides_are_refused_naming_the_field(
    e2e: E2E, name: str, pod: dict[str, Any], field: str
) -> None:
    job = job_manifest(f"refused-{name}", "/nonexistent-model", e2e.root / "out", pod=pod)
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job))
    status = e2e.wait_phase(f"refused-{name}", "Failed", 30)
    failure = status["lastFailure"]
    assert failure["reason"] == "PodSecurityRefused" and field in failure["message"], failure
    assert "ASYNCDIFF_ALLOW_PRIVILEGED_PODS" in failure["message"]
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "PodSecurityRefused"
    assert not e2e.jobs(f"refused-{name}") and not status.get("attempts")
    events = e2e.kubectl("get", "events", "--field-selector", f"involvedObject.name=refused-{name}")
    assert "PodSecurityRefused" in events


def _texts(e2e: E2E, name: str) -> dict[str, str]:
    """Everything the job produced in the cluster and the operator's log, as text, by where it came from."""
    out = {
        "cr": e2e.kubectl("get", "adj", name, "-o", "json"),
        "events": e2e.kubectl("get", "events", "-A", "-o", "json"),
        "configmaps": e2e.kubectl("get", "configmaps", "-A", "-o", "json"),
        "jobs": e2e.kubectl("get", "jobs", "-A", "-o", "json"),
        "pods": e2e.kubectl("get", "pods", "-A", "-o", "json"),
        "operator log": e2e.operator.log_path.read_text(errors="replace"),
    }
    for pod in e2e.pods(name):
        out[f"log of {pod.metadata.name}"] = e2e.kubectl("logs", pod.metadata.name)
    return out


def test_secrets_never_leak(e2e: E2E, tiny_model: Path, s3: Any) -> None:
    key_id = f"AKIA{secrets.token_hex(8).upper()}"
    secret_key = secrets.token_urlsafe(30)
    needles = [key_id, secret_key] + [base64.b64encode(v.encode()).decode() for v in (key_id, secret_key)]
    e2e.core.create_namespaced_secret(
        "default",
        {
            "metadata": {"name": "leak-test-s3"},
            "stringData": {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret_key},
        },
    )
    s3.client().create_bucket(Bucket="leak")
    output = {"uri": "s3://leak/out", "endpointUrl": s3.endpoint_url, "forcePathStyle": True}
    job = job_manifest(
        "leak", tiny_model.as_uri(), e2e.root, output=output, pod={"s3CredentialsSecret": "leak-test-s3"}
    )
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job))
    status = e2e.wait_phase("leak", "Succeeded", 180)
    assert status["outputs"] and status["manifest"].startswith("s3://leak/"), status

    found = _texts(e2e, "leak")
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="leak").get("Contents", [])]
    assert any(k.endswith("manifest.json") for k in keys) and any(k.endswith(".png") for k in keys), keys
    for key in keys:
        head = client.head_object(Bucket="leak", Key=key)
        found[f"s3 metadata of {key}"] = json.dumps({"meta": head.get("Metadata"), "type": head.get("ContentType")})
        found[f"s3 object {key}"] = client.get_object(Bucket="leak", Key=key)["Body"].read().decode("latin-1")
    # the search can find things: the Secret object itself holds the values
    stored = e2e.core.read_namespaced_secret("leak-test-s3", "default").data["AWS_ACCESS_KEY_ID"]
    assert key_id == base64.b64decode(stored).decode() and stored in needles
    assert len(found) > 8 and all(found.values())
    control = e2e.kubectl("get", "secret", "leak-test-s3", "-o", "json")  # the search finds a value where it is
    assert any(n in control for n in needles)
    leaks = [(where, n[:6]) for where, text in found.items() for n in needles if n in text]
    assert not leaks, f"credentials found in: {leaks}"
    # the workers got the credentials only by mounting the Secret (by name), never as values in their spec
    (pod,) = e2e.pods("leak")
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes["s3-credentials"].secret.secret_name == "leak-test-s3"
    assert pod.spec.automount_service_account_token is False


def test_network_policy_per_job_when_enabled(e2e: E2E) -> None:
    """With ASYNCDIFF_NETWORK_POLICY (chart networkPolicy.enabled) the operator creates the job's NetworkPolicy,
    owned by the job and collected with it. (Last in this module: it restarts the operator with the setting.)"""
    e2e.operator.env["ASYNCDIFF_NETWORK_POLICY"] = json.dumps({"enabled": True, "s3Port": 9000})
    e2e.operator.restart()
    job = job_manifest("netpol", "/nonexistent-model", e2e.root / "out", runPolicy={"backoffLimit": 0})
    e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job))
    e2e.wait(lambda: e2e.jobs("netpol"), 30, "the child Job of netpol")
    policy = json.loads(e2e.kubectl("get", "networkpolicy", "netpol-workers", "-o", "json"))
    owner = policy["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "AsyncDiffJob" and owner["uid"] == e2e.get("netpol")["metadata"]["uid"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"asyncdiff.io/job": "netpol"}}}]}]
    assert policy["spec"]["egress"][2]["ports"] == [{"protocol": "TCP", "port": 9000}]
    e2e.kubectl("delete", "adj/netpol", "--timeout=30s", timeout=40)
    e2e.wait(
        lambda: "NotFound" in e2e.kubectl("get", "networkpolicy", "netpol-workers", check=False), 30, "policy collected"
    )
