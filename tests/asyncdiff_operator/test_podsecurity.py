"""The worker pods' security, checked without a cluster: every rendered pod passes the local control plane's Pod
Security Admission at ``restricted`` (an independent copy of Kubernetes' checks), writes only to its emptyDirs, has no
API token and is never BestEffort; ``spec.pod`` overrides that leave ``restricted`` are refused by field unless the
operator allows them, and when allowed they render as Kubernetes accepts them.
"""

from __future__ import annotations

from typing import Any

import pytest
from asyncdiff_devcluster.apiserver import podsecurity as psa
from asyncdiff_devcluster.apiserver.admission import _qos
from asyncdiff_operator import podsecurity
from asyncdiff_operator.api import parse_spec
from asyncdiff_operator.children import render_job
from asyncdiff_operator.settings import OperatorSettings, from_env

BASE: dict[str, Any] = {
    "model": {"family": "sd15", "source": "s3://b/m"},
    "parallelism": {"modelN": 2, "stride": 1},
    "generation": {"prompts": ["a cat"]},
    "output": {"uri": "s3://b/out"},
}
RESTRICTED = psa.LevelVersion("restricted")
UNSAFE_OVERRIDES: list[tuple[dict[str, Any], str]] = [
    ({"containerSecurityContext": {"privileged": True}}, "spec.pod.containerSecurityContext.privileged"),
    ({"containerSecurityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "capabilities.add: ['SYS_ADMIN']"),
    ({"containerSecurityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
    ({"containerSecurityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "capabilities.drop"),
    ({"securityContext": {"runAsUser": 0}}, "spec.pod.securityContext.runAsUser: 0"),
    ({"containerSecurityContext": {"runAsUser": 0}}, "spec.pod.containerSecurityContext.runAsUser: 0"),
    ({"securityContext": {"runAsNonRoot": False}}, "spec.pod.securityContext.runAsNonRoot"),
    ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, "seccompProfile.type: Unconfined"),
    ({"hostNetwork": True}, "spec.pod.hostNetwork"),
    ({"hostPID": True}, "spec.pod.hostPID"),
    ({"hostIPC": True}, "spec.pod.hostIPC"),
    ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "spec.pod.volumes[0].hostPath (volume 'h')"),
    ({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]}, "spec.pod.volumes[0].nfs"),
]
"""spec.pod overrides that leave restricted, and the field the refusal names (also checked against the chart's
ValidatingAdmissionPolicy in tests/packaging/test_chart_security.py)."""
SAFE_OVERRIDES: list[dict[str, Any]] = [
    {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000, "supplementalGroups": [3000]}},
    {"containerSecurityContext": {"readOnlyRootFilesystem": False, "capabilities": {"add": ["NET_BIND_SERVICE"]}}},
    {"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}},
    {"hostNetwork": False, "volumes": [{"name": "c", "csi": {"driver": "d"}}, {"name": "e", "ephemeral": {}}]},
]


def _cr(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "j", "namespace": "ns", "uid": "u-1"}, "spec": {**BASE, **spec}}


def _pod(cr: dict[str, Any], settings: OperatorSettings | None = None) -> dict[str, Any]:
    job = render_job(cr, parse_spec(cr["spec"]), 1, settings or OperatorSettings())
    template: dict[str, Any] = job["spec"]["template"]
    return template


SHAPES = {
    "single-gpu": _cr(),
    "single-cpu": _cr(runPolicy={"gpusPerNode": 0}),
    "multi-node-gpu": _cr(runPolicy={"numNodes": 2}),
    "multi-node-cpu": _cr(runPolicy={"numNodes": 2, "gpusPerNode": 0}),
    "own-volumes-and-secret": _cr(
        pod={
            "s3CredentialsSecret": "s3",
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
            "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
            "resources": {"limits": {"memory": "8Gi"}},
        }
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("with_chart_settings", [False, True])
def test_every_worker_pod_meets_restricted(shape: str, with_chart_settings: bool) -> None:
    settings = (
        from_env({"ASYNCDIFF_S3_CREDENTIALS_SECRET": "s3", "ASYNCDIFF_WORKER_DEFAULTS": '{"tmpSizeLimit": "1Gi"}'})
        if with_chart_settings
        else None
    )
    template = _pod(SHAPES[shape], settings)
    spec = template["spec"]
    assert psa.evaluate(RESTRICTED, template["metadata"], spec) == []
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsUser"] == podsecurity.WORKER_UID
    assert not {"hostNetwork", "hostPID", "hostIPC"} & spec.keys()
    (c,) = spec["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["privileged"] is False
    assert _qos({"containers": [c]}) != "BestEffort"
    assert {"cpu", "memory"} <= (c["resources"].get("requests", {}).keys() | c["resources"].get("limits", {}).keys())
    # every path the worker and its libraries write to lies in a writable emptyDir of this pod
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    assert writable == {podsecurity.TMP_DIR, podsecurity.CACHE_DIR}
    assert {m["name"] for m in c["volumeMounts"] if m["mountPath"] in writable} <= empty_dirs
    env = {e["name"]: e.get("value") for e in c["env"]}
    for name, _ in podsecurity.WRITABLE_ENV:
        if name != "PYTHONDONTWRITEBYTECODE":
            assert any(env[name].startswith(w) for w in writable), (name, env[name])


def test_tmp_size_limit_and_own_tmp() -> None:
    settings = from_env({"ASYNCDIFF_WORKER_DEFAULTS": '{"tmpSizeLimit": "2Gi"}'})
    spec = _pod(_cr(), settings)["spec"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}} in spec["volumes"]
    own = {
        "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
    }
    spec = _pod(_cr(pod=own), settings)["spec"]
    assert "tmp" not in [v["name"] for v in spec["volumes"]]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["TMPDIR"] == "/tmp"
    spec = _pod(_cr(pod={"env": [{"name": "HOME", "value": "/models"}]}))["spec"]
    homes = [e for e in spec["containers"][0]["env"] if e["name"] == "HOME"]
    assert homes == [{"name": "HOME", "value": "/models"}]  # the job's own value, once


@pytest.mark.parametrize(("pod", "field"), UNSAFE_OVERRIDES)
def test_unsafe_overrides_are_refused_by_field(pod: dict[str, Any], field: str) -> None:
    spec = parse_spec(_cr(pod=pod)["spec"])
    (found,) = podsecurity.refusals(spec.pod)
    assert field in found, found
    message = podsecurity.refusal_message([found])
    assert "ASYNCDIFF_ALLOW_PRIVILEGED_PODS" in message and "security.allowPrivilegedPods" in message
    # allowed by the operator, the pod is what was asked for, in a shape Kubernetes accepts
    rendered = _pod(_cr(pod=pod))["spec"]
    assert psa.evaluate(RESTRICTED, {}, rendered) != []
    c = rendered["containers"][0]["securityContext"]
    assert not (c.get("privileged") and c.get("allowPrivilegeEscalation") is False)
    for ctx in (rendered["securityContext"], c):
        assert not (ctx.get("runAsUser") == 0 and ctx.get("runAsNonRoot") is True)


@pytest.mark.parametrize("pod", SAFE_OVERRIDES)
def test_safe_overrides_are_allowed_and_still_restricted(pod: dict[str, Any]) -> None:
    spec = parse_spec(_cr(pod=pod)["spec"])
    assert podsecurity.refusals(spec.pod) == []
    rendered = _pod(_cr(pod=pod))
    assert psa.evaluate(RESTRICTED, {}, rendered["spec"]) == []


def test_allow_setting_parses() -> None:
    assert from_env({}).allow_privileged_pods is False
    assert from_env({"ASYNCDIFF_ALLOW_PRIVILEGED_PODS": "true"}).allow_privileged_pods is True
