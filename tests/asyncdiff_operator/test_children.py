"""Unit tests of the pure rendering and status logic, and of the checked-in CRD being in sync with the models."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from asyncdiff_operator import crd, reasons
from asyncdiff_operator.api import RunPolicy, parse_spec
from asyncdiff_operator.children import render_configmap, render_job, render_service
from pydantic import ValidationError

CR: dict[str, Any] = {
    "metadata": {
        "name": "j",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"kueue.x-k8s.io/queue-name": "q", "other": "x"},
    },
    "spec": {
        "model": {"family": "sd15", "source": "s3://b/m"},
        "parallelism": {"modelN": 3, "stride": 2},
        "generation": {"prompts": ["a cat"]},
        "output": {"uri": "s3://b/out"},
        "runPolicy": {"backoffLimit": 1},
        "pod": {"image": "img:1", "env": [{"name": "FOO", "value": "bar"}], "nodeSelector": {"gpu": "h100"}},
    },
}


def with_spec(**changes: Any) -> dict[str, Any]:
    return {**CR, "spec": {**CR["spec"], **changes}}


def test_checked_in_crd_matches_the_models() -> None:
    assert crd.CRD_FILE.read_text() == crd.render(), "run: python -m asyncdiff_operator.crd"


def test_crd_schema_is_structural() -> None:
    text = crd.render()
    for bad in ("$ref", "anyOf", "title:", "const:"):
        assert bad not in text
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "runPolicy" in schema["properties"]["spec"]["properties"]
    pod = schema["properties"]["spec"]["properties"]["pod"]["properties"]
    assert pod["affinity"]["x-kubernetes-preserve-unknown-fields"] is True
    assert pod["volumes"]["items"]["x-kubernetes-preserve-unknown-fields"] is True
    status = schema["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status and "phase" in status["properties"]


def test_job_rendering() -> None:
    spec = parse_spec(CR["spec"])
    job = render_job(CR, spec, 2)
    assert job["metadata"]["name"] == "j-attempt-2"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["metadata"]["labels"] == {
        "asyncdiff.io/job": "j",
        "asyncdiff.io/attempt": "2",
        "kueue.x-k8s.io/queue-name": "q",
    }
    # one prompt: one shard of an Indexed Job, retried per index; the Kueue label makes it start suspended
    assert job["spec"]["completionMode"] == "Indexed" and "backoffLimit" not in job["spec"]
    assert job["spec"]["completions"] == 1 and job["spec"]["parallelism"] == 1
    assert job["spec"]["backoffLimitPerIndex"] == 1 and job["spec"]["suspend"] is True
    rule = job["spec"]["podFailurePolicy"]["rules"][-1]
    assert rule["action"] == "Ignore" and rule["onPodConditions"][0]["type"] == "DisruptionTarget"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["nodeSelector"] == {"gpu": "h100"}
    (c,) = pod["containers"]
    assert c["image"] == "img:1"
    assert "--nproc=4" in c["command"] and "--spec=/etc/asyncdiff/job.yaml" in c["command"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert {"name": "FOO", "value": "bar"} in c["env"]
    assert not [e for e in c["env"] if e["name"].startswith("PET_")]
    assert pod["volumes"][0]["configMap"]["name"] == "j-attempt-2"


def test_multi_node_rendering() -> None:
    cr = with_spec(parallelism={"modelN": 2, "stride": 1}, runPolicy={"numNodes": 2})
    spec = parse_spec(cr["spec"])
    assert spec.procs_per_node == 1 and spec.gpus_per_node == 1
    job = render_job(cr, spec, 1)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == "j-nodes"
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["PET_NNODES"]["value"] == "2" and env["PET_NPROC_PER_NODE"]["value"] == "1"
    assert env["PET_MASTER_ADDR"]["value"] == "j-attempt-1-0.j-nodes.ns.svc.cluster.local"
    assert env["PET_MASTER_PORT"]["value"] == "29500"
    rank = env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert rank == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert "--nproc=1" in c["command"] and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    svc = render_service(cr)
    assert svc["metadata"]["name"] == "j-nodes" and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"asyncdiff.io/job": "j"}
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_pod_override_rendering() -> None:
    pod_override = {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        "imagePullSecrets": [{"name": "regcred"}],
        "priorityClassName": "high",
        "labels": {"team": "a", "asyncdiff.io/job": "spoofed"},
        "annotations": {"note": "x"},
        "s3CredentialsSecret": "s3-creds",
        "env": [{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s", "key": "id"}}}],
    }
    cr = with_spec(pod=pod_override, runPolicy={"gpusPerNode": 0})
    job = render_job(cr, parse_spec(cr["spec"]), 1)
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"]["asyncdiff.io/job"] == "j"  # ours win
    assert template["metadata"]["annotations"] == {"note": "x"}
    pod = template["spec"]
    assert pod["affinity"] == pod_override["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["priorityClassName"] == "high"
    names = [v["name"] for v in pod["volumes"]]
    assert names == ["job-spec", "s3-credentials", "model-cache", "tmp", "models"]
    assert pod["volumes"][1]["secret"] == {"secretName": "s3-creds"}
    (c,) = pod["containers"]
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    assert mounts == ["/etc/asyncdiff", "/var/run/secrets/asyncdiff/s3", "/var/cache/asyncdiff", "/tmp", "/models"]
    env = {e["name"]: e for e in c["env"]}
    assert env["ASYNCDIFF_S3_SECRET_DIR"]["value"] == "/var/run/secrets/asyncdiff/s3"
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})  # gpusPerNode 0: a CPU pod


def test_configmap_holds_only_the_worker_spec() -> None:
    cm = render_configmap(CR, parse_spec(CR["spec"]), 1)
    job = yaml.safe_load(cm["data"]["job.yaml"])
    assert job["kind"] == "AsyncDiffJob" and job["metadata"]["name"] == "j"
    assert "runPolicy" not in job["spec"] and "pod" not in job["spec"]
    assert job["spec"]["generation"]["prompts"] == ["a cat"]


@pytest.mark.parametrize("name", ["MASTER_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "PET_NNODES"])
def test_reserved_env_is_rejected(name: str) -> None:
    spec = {**CR["spec"], "pod": {"env": [{"name": name, "value": "1"}]}}
    with pytest.raises(ValidationError, match="reserved"):
        parse_spec(spec)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"pod": {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]}}, "literal value"),
        ({"pod": {"volumes": [{"name": "job-spec", "emptyDir": {}}]}}, "reserved"),
        ({"runPolicy": {"numNodes": 3}}, "does not divide"),
        ({"runPolicy": {"gpusPerNode": 3}}, "must equal"),
    ],
)
def test_bad_specs_are_rejected(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        parse_spec({**CR["spec"], **change})


def test_status_schema_accepts_what_the_operator_writes() -> None:
    """Every key the status logic writes is declared in the typed status schema (or it would be pruned)."""
    from asyncdiff_operator.status import Observation, decide

    props = crd.status_schema()["properties"]
    policy = RunPolicy(backoffLimit=1)
    first = decide({}, Observation(), policy, 1)
    failed = decide({"attempts": 1, "phase": "Running"}, Observation("Failed", 21, "peer"), policy, 1)
    for decision in (first, failed):
        assert set(decision.status) <= set(props), set(decision.status) - set(props)
    assert reasons.FAILED in props["phase"]["enum"]


def test_the_longest_allowed_name_gives_children_that_fit() -> None:
    from asyncdiff_operator.children import MAX_NAME_LENGTH, child_name, name_problem, service_name

    name = "n" * MAX_NAME_LENGTH
    assert name_problem(name, 16) is None
    assert len(f"{child_name(name, 9999)}-15") == 63 and len(service_name(name)) <= 63
    assert "at most 47" in str(name_problem(name + "n", 1))
    assert name_problem("my.job", 1) is None and "DNS label" in str(name_problem("my.job", 2))
    assert "DNS label" in str(name_problem("1job", 2))


def test_the_crd_leaves_unset_what_the_operator_defaults() -> None:
    """An API server default for spec.output.forcePathStyle would look like the user's choice and hide the chart's
    s3.forcePathStyle (the operator applies its default only to fields the job leaves unset)."""
    from asyncdiff_operator.crd import spec_schema

    output = spec_schema()["properties"]["output"]["properties"]
    assert output["forcePathStyle"]["type"] == "boolean" and "default" not in output["forcePathStyle"]
