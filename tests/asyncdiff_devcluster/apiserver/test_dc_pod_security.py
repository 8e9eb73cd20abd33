"""Pod Security Admission on the local control plane, checked against Kubernetes' own wording and behaviour.

Why: the operator's e2e suite runs in a namespace that enforces ``restricted``; these tests make sure that the
enforcement it passes is the real one: the checks of ``k8s.io/pod-security-admission`` with their messages and
order (expected strings below are copied from kube-apiserver answers quoted in the Kubernetes docs and issues), the
label parsing (an unknown level is refused on the namespace; enforce fails closed), warn as a ``Warning`` header
that kubectl prints, and pods created by the Job controller refused with a ``FailedCreate`` event.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_devcluster.apiserver import podsecurity as psa

RESTRICTED = psa.LevelVersion("restricted")
BASELINE = psa.LevelVersion("baseline")

BARE = {"containers": [{"name": "c", "image": "busybox"}]}
GOOD = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "c",
            "image": "busybox",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
    "volumes": [{"name": "t", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}}],
}


def test_a_bare_pod_gets_the_four_restricted_reasons_in_kubernetes_wording() -> None:
    expected = (
        'allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), '
        'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or '
        '"Localhost")'
    )
    assert psa.detail(psa.evaluate(RESTRICTED, {}, BARE)) == expected
    assert psa.evaluate(BASELINE, {}, BARE) == []
    assert psa.evaluate(psa.LevelVersion("privileged"), {}, {"hostPID": True, **BARE}) == []
    assert psa.evaluate(RESTRICTED, {}, GOOD) == []


def test_everything_forbidden_at_once_in_kubernetes_order() -> None:
    """The order and wording of a real ``restricted:latest`` answer for such a pod."""
    spec = {
        "hostNetwork": True,
        "hostPID": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [{"name": "container-00", "image": "x", "securityContext": {"privileged": True, "runAsUser": 0}}],
    }
    expected = (
        "host namespaces (hostNetwork=true, hostPID=true), "
        'privileged (container "container-00" must not set securityContext.privileged=true), '
        'allowPrivilegeEscalation != false (container "container-00" must set '
        "securityContext.allowPrivilegeEscalation=false), "
        'unrestricted capabilities (container "container-00" must set securityContext.capabilities.drop=["ALL"]), '
        'restricted volume types (volume "host" uses restricted volume type "hostPath"), '
        'runAsNonRoot != true (pod or container "container-00" must set securityContext.runAsNonRoot=true), '
        'runAsUser=0 (container "container-00" must not set runAsUser=0), '
        'seccompProfile (pod or container "container-00" must set securityContext.seccompProfile.type to '
        '"RuntimeDefault" or "Localhost")'
    )
    assert psa.detail(psa.evaluate(RESTRICTED, {}, spec)) == expected
    baseline = psa.detail(psa.evaluate(BASELINE, {}, spec))
    assert baseline == (
        'host namespaces (hostNetwork=true, hostPID=true), hostPath volumes (volume "host"), '
        'privileged (container "container-00" must not set securityContext.privileged=true)'
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}, "non-default"),
        ({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}, "hostPort"),
        ({"containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]}, "procMount"),
        ({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}, "forbidden sysctls"),
        ({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}, "seLinuxOptions"),
        ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, "seccompProfile"),
        ({"securityContext": {"windowsOptions": {"hostProcess": True}}}, "hostProcess"),
        ({"volumes": [{"name": "g", "gitRepo": {"repository": "r"}}]}, "restricted volume types"),
        ({"hostIPC": True}, "host namespaces"),
    ],
)
def test_each_baseline_check(change: dict[str, Any], reason: str) -> None:
    spec = {"containers": [{"name": "c"}], **change}
    reasons = [r for r, _ in psa.evaluate(BASELINE, {}, spec)]
    assert len(reasons) == 1 and reasons[0].startswith(reason), reasons


def test_restricted_allows_what_the_standard_allows() -> None:
    spec = json.loads(json.dumps(GOOD))
    container = spec["containers"][0]
    container["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    spec["securityContext"]["seccompProfile"] = {"type": "Localhost", "localhostProfile": "p.json"}
    spec["volumes"].append({"name": "pvc", "persistentVolumeClaim": {"claimName": "x"}})
    assert psa.evaluate(RESTRICTED, {}, spec) == []
    container["securityContext"]["capabilities"]["add"] = ["NET_RAW", "SYS_ADMIN"]
    (found,) = psa.evaluate(RESTRICTED, {}, spec)
    assert found == (
        "unrestricted capabilities",
        'container "c" must not include "NET_RAW", "SYS_ADMIN" in securityContext.capabilities.add',
    )


def test_versions_select_the_checks_of_their_time() -> None:
    spec = {**GOOD, "containers": [{**GOOD["containers"][0], "securityContext": {"allowPrivilegeEscalation": False}}]}
    assert psa.evaluate(psa.LevelVersion("restricted", 21), {}, spec) == []  # capabilities came in 1.22
    assert [r for r, _ in psa.evaluate(psa.LevelVersion("restricted", 22), {}, spec)] == ["unrestricted capabilities"]


def test_labels_parse_like_kubernetes() -> None:
    policy, errors = psa.policy_for({})
    assert policy == psa.Policy(psa.DEFAULT, psa.DEFAULT, psa.DEFAULT) and not errors
    policy, errors = psa.policy_for(
        {
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/enforce-version": "v1.29",
            "pod-security.kubernetes.io/warn": "restricted",
        }
    )
    assert str(policy.enforce) == "baseline:v1.29" and str(policy.warn) == "restricted:latest" and not errors
    policy, errors = psa.policy_for(
        {"pod-security.kubernetes.io/enforce": "strict", "pod-security.kubernetes.io/warn": "strict"}
    )
    assert policy.enforce.level == "restricted" and policy.warn.level == "privileged"  # closed / open
    assert [e.detail for e in errors] == ["must be one of privileged, baseline, restricted"] * 2
    _, errors = psa.policy_for({"pod-security.kubernetes.io/audit-version": "1.29"})
    assert errors[0].detail == 'must be "latest" or "v1.x"'


def test_raising_enforce_warns_about_existing_pods() -> None:
    pods = [{"metadata": {"name": n}, "spec": BARE} for n in ("b", "a", "c")]
    warnings = psa.namespace_warnings("ns", psa.DEFAULT, RESTRICTED, pods)
    assert (
        warnings[0] == 'existing pods in namespace "ns" violate the new PodSecurity enforce level "restricted:latest"'
    )
    assert warnings[1] == "a (and 2 other pods): allowPrivilegeEscalation != false, unrestricted capabilities, " + (
        "runAsNonRoot != true, seccompProfile"
    )
    assert psa.namespace_warnings("ns", RESTRICTED, BASELINE, pods) == []  # relaxing checks nothing


# --------------------------------------------------------------------------------------------- through the API


def _pod(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _label(kubectl: Callable[..., Any], namespace: str, *labels: str) -> Any:
    return kubectl("label", "--overwrite", "namespace", namespace, *labels, check=False)


def test_enforce_refuses_and_warn_admits_with_a_header(kubectl: Callable[..., Any], namespace: str) -> None:
    pod = {**BARE, "containers": [{**BARE["containers"][0], "command": ["sleep", "60"]}]}
    result = _label(kubectl, namespace, "pod-security.kubernetes.io/warn=restricted")
    assert result.returncode == 0, result.stderr
    made = kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(_pod("warned", pod)))
    assert (
        'Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
        '(container "c" must set securityContext.allowPrivilegeEscalation=false)'
    ) in made.stderr
    result = _label(kubectl, namespace, "pod-security.kubernetes.io/enforce=restricted")
    assert result.returncode == 0, result.stderr
    assert f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level' in result.stderr
    assert "warned: allowPrivilegeEscalation != false" in result.stderr
    refused = kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(_pod("bare", pod)), check=False)
    assert refused.returncode != 0
    assert (
        'pods "bare" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
        '(container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities'
    ) in refused.stderr
    good = {**GOOD, "containers": [{**GOOD["containers"][0], "command": ["sleep", "60"]}]}
    kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(_pod("good", good)))
    kubectl("delete", "pod", "-n", namespace, "good", "warned", "--wait=false")


def test_an_unknown_level_label_is_refused(kubectl: Callable[..., Any], namespace: str) -> None:
    result = _label(kubectl, namespace, "pod-security.kubernetes.io/enforce=strict")
    assert result.returncode != 0
    assert (
        f'Namespace "{namespace}" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: '
        'Invalid value: "strict": must be one of privileged, baseline, restricted'
    ) in result.stderr
    made = kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": f"{namespace}-v", "labels": {"pod-security.kubernetes.io/warn-version": "1.30"}},
            }
        ),
        check=False,
    )
    assert made.returncode != 0
    assert (
        'metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: "1.30": must be "latest" or "v1.x"'
    ) in made.stderr, made.stderr


def test_the_job_controller_gets_failed_create(kubectl: Callable[..., Any], namespace: str, k8s: Any) -> None:
    """Pods of a Job go through the same admission: refused, the Job records FailedCreate and has no pod; the Job
    itself is admitted (only warn and audit apply to workload objects)."""
    from kubernetes import client

    assert _label(kubectl, namespace, "pod-security.kubernetes.io/enforce=restricted").returncode == 0
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bare"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    **BARE,
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "x", "command": ["true"]}],
                }
            },
        },
    }
    made = kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(job))
    assert "Warning" not in made.stderr
    core = client.CoreV1Api(k8s)
    deadline = time.monotonic() + 30
    while True:
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=bare").items
        failed = [e for e in events if e.reason == "FailedCreate"]
        if failed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert failed, [e.reason for e in events]
    assert failed[0].type == "Warning" and failed[0].source.component == "job-controller"
    assert (
        failed[0].message.startswith('Error creating: pods "bare-')
        and 'is forbidden: violates PodSecurity "restricted:latest"' in failed[0].message
    )
    assert not core.list_namespaced_pod(namespace).items
    kubectl("delete", "job", "-n", namespace, "bare")


def test_the_kind_scripts_helper_pods_pass_restricted(kubectl: Callable[..., Any], namespace: str) -> None:
    """tests/kind/run.sh runs helper pods with ``kubectl run --overrides`` in its restricted jobs namespace; the same
    kubectl call here must be admitted (that script only runs where Docker is)."""
    script = Path(__file__).resolve().parents[2] / "kind" / "run.sh"
    shell = f'source <(sed -n "/^restricted_overrides()/,/^}}/p" {script}); restricted_overrides helper'
    overrides = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True).stdout
    assert _label(kubectl, namespace, "pod-security.kubernetes.io/enforce=restricted").returncode == 0
    args = ("run", "helper", "-n", namespace, "--image=busybox", "--restart=Never", "--env=A=b")
    made = kubectl(*args, "--override-type=strategic", f"--overrides={overrides}", "--command", "--", "true")
    assert "created" in made.stdout, made.stderr
    refused = kubectl("run", "bare", *args[2:], "--command", "--", "true", check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr
