"""Bad AsyncDiffJobs are refused at apply time, by the CRD's schema and CEL rules, with a 422 naming the field.

Why on the local control plane: it enforces the checked-in CRD the way the API server does (schema, then CEL, with
``oldSelf`` on updates), so this tests the CRD users install, not the operator's own pydantic checks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_operator.api import parse_spec
from kubernetes.client.exceptions import ApiException

from .conftest import CRD, E2E, OperatorProcess, job_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """A control plane with the CRD and no operator (nothing reconciles; status is written by the test)."""
    from asyncdiff_devcluster.testing import running_dev_cluster

    root = tmp_path_factory.mktemp("crd")
    with running_dev_cluster(root / "cluster") as cluster:
        env = cluster.env(KUBECACHEDIR=str(root / "kcache"))
        harness = E2E(cluster, env, OperatorProcess(env, root / "none.log"), root)
        harness.kubectl("apply", "-f", str(CRD))
        yield harness


def base(name: str = "bad") -> dict[str, Any]:
    return job_manifest(name, "/models/tiny", Path("/tmp/out"))


def set_path(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    node = out["spec"]
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out


_DELETE = object()

BAD: list[tuple[str, Any, str]] = [
    # schema
    ("parallelism.modelN", 5, "spec.parallelism.modelN"),
    ("parallelism.stride", 3, "spec.parallelism.stride"),
    ("model.family", "sd99", "spec.model.family"),
    ("model", _DELETE, "spec.model"),
    ("output", _DELETE, "spec.output"),
    ("generation.steps", 0, "spec.generation.steps"),
    ("generation.height", "big", "spec.generation.height"),
    ("output.endpointUrl", "ftp://minio", "spec.output.endpointUrl"),
    ("runPolicy.backoffLimit", -1, "spec.runPolicy.backoffLimit"),
    ("runPolicy.activeDeadlineSeconds", 0, "spec.runPolicy.activeDeadlineSeconds"),
    ("runPolicy.numNodes", 0, "spec.runPolicy.numNodes"),
    ("runPolicy.gpusPerNode", 65, "spec.runPolicy.gpusPerNode"),
    ("parallelism.replicas", 0, "spec.parallelism.replicas"),
    ("parallelism.replicas", -2, "spec.parallelism.replicas"),
    ("generation.shardSize", 0, "spec.generation.shardSize"),
    ("pod.env", [{"name": "1BAD", "value": "x"}], "spec.pod.env[0].name"),
    ("pod.tolerations", [{"operator": "Maybe"}], "spec.pod.tolerations[0].operator"),
    ("pod.volumeMounts", [{"name": "v", "mountPath": "data"}], "spec.pod.volumeMounts[0].mountPath"),
    # CEL
    ("runPolicy", {"numNodes": 3}, "spec.runPolicy.numNodes"),
    ("runPolicy", {"gpusPerNode": 3}, "spec.runPolicy.gpusPerNode"),
    ("runPolicy", {"numNodes": 2, "gpusPerNode": 2}, "spec.runPolicy.gpusPerNode"),
    ("parallelism", {"modelN": 1, "stride": 2}, "spec.parallelism.stride"),
    ("parallelism", {"goal": "throughput"}, "spec.parallelism.goal"),
    ("pod.env", [{"name": "MASTER_ADDR", "value": "x"}], "spec.pod.env[0].name"),
    ("pod.env", [{"name": "PET_NNODES", "value": "2"}], "spec.pod.env[0].name"),
    ("pod.env", [{"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"}], "spec.pod.env[0].value"),
]


def create(api: E2E, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = api.custom.create_namespaced_custom_object(
        "asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", body
    )
    return created


@pytest.mark.parametrize(("path", "value", "field"), BAD, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD])
def test_bad_cr_is_rejected_naming_the_field(api: E2E, path: str, value: Any, field: str) -> None:
    with pytest.raises(ApiException) as info:
        create(api, set_path(base(), path, value))
    assert info.value.status == 422, info.value.body
    status = json.loads(info.value.body)
    causes = [c.get("field") for c in status["details"]["causes"]]
    assert field in causes, status
    assert field in status["message"]


def test_multi_node_job_is_one_group(api: E2E) -> None:
    body = set_path(set_path(base("multi-replicas"), "runPolicy", {"numNodes": 2}), "parallelism.replicas", 2)
    with pytest.raises(ApiException) as info:
        create(api, body)
    assert info.value.status == 422, info.value.body
    assert "spec.parallelism.replicas" in json.loads(info.value.body)["message"]
    with pytest.raises(ValueError, match="replicas 2 needs numNodes 1"):
        parse_spec(body["spec"])
    create(api, set_path(body, "parallelism.replicas", 1))


@pytest.mark.parametrize(
    ("run_policy", "field", "message"),
    [
        ({"numNodes": 2}, "spec.parallelism.devices", "the planner needs runPolicy.numNodes 1"),
        ({"gpusPerNode": 2}, "spec.runPolicy.gpusPerNode", "leave it out"),
    ],
)
def test_planner_jobs_are_one_pod_per_group(api: E2E, run_policy: dict[str, Any], field: str, message: str) -> None:
    planned = set_path(base("planned"), "parallelism", {"devices": 4, "goal": "throughput"})
    body = set_path(planned, "runPolicy", run_policy)
    with pytest.raises(ApiException) as info:
        create(api, body)
    assert info.value.status == 422, info.value.body
    assert field in [c.get("field") for c in json.loads(info.value.body)["details"]["causes"]]
    with pytest.raises(ValueError, match=message):
        parse_spec(body["spec"])
    cpu_only = set_path(planned, "runPolicy", {"gpusPerNode": 0})
    cpu_only["metadata"]["name"] = f"planned-cpu-{'nodes' if 'numNodes' in run_policy else 'gpus'}"
    create(api, cpu_only)  # CPU-only pods (gpusPerNode 0) are fine with the planner


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"parallelism.cfgParallel": True, "generation.guidanceScale": 1}, "spec.parallelism.cfgParallel"),
        ({"parallelism.cfgParallel": True, "runPolicy": {"gpusPerNode": 2}}, "spec.runPolicy.gpusPerNode"),
    ],
)
def test_cfg_parallel_rules(api: E2E, changes: dict[str, Any], field: str) -> None:
    body = base("cfg-bad")
    for path, value in changes.items():
        body = set_path(body, path, value)
    with pytest.raises(ApiException) as info:
        create(api, body)
    assert info.value.status == 422, info.value.body
    assert field in [c.get("field") for c in json.loads(info.value.body)["details"]["causes"]]
    good = set_path(set_path(base("cfg-good"), "parallelism.cfgParallel", True), "runPolicy", {"gpusPerNode": 4})
    create(api, good)
    api.custom.delete_namespaced_custom_object("asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", "cfg-good")


def test_kubectl_apply_shows_the_message(api: E2E) -> None:
    bad = set_path(base("cel-bad"), "runPolicy", {"numNodes": 2, "gpusPerNode": 2})
    out = api.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert "spec.runPolicy.gpusPerNode" in out and "must equal the job's devices" in out, out
    bad = set_path(base("env-bad"), "pod.env", [{"name": "RANK", "value": "0"}])
    out = api.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert "spec.pod.env[0].name" in out and "is reserved" in out, out
    good = set_path(base("cel-good"), "runPolicy", {"numNodes": 2, "gpusPerNode": 1})
    api.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(good))


def test_spec_is_immutable_once_started_except_suspend(api: E2E) -> None:
    create(api, base("started"))
    patch = api.custom.patch_namespaced_custom_object
    patch("asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", "started", {"spec": {"generation": {"steps": 3}}})
    api.custom.patch_namespaced_custom_object_status(
        "asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", "started", {"status": {"attempts": 1}}
    )
    for change in ({"generation": {"steps": 4}}, {"runPolicy": {"backoffLimit": 5}}, {"pod": {"image": "x:1"}}):
        with pytest.raises(ApiException) as info:
            patch("asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", "started", {"spec": change})
        assert info.value.status == 422 and "spec is immutable once the job has started" in info.value.body
    patch("asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", "started", {"spec": {"runPolicy": {"suspend": True}}})
    assert api.get("started")["spec"]["runPolicy"]["suspend"] is True
    # elastic: replicas may change while the job runs (the child Job's parallelism follows); modelN may not
    patch("asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", "started", {"spec": {"parallelism": {"replicas": 3}}})
    assert api.get("started")["spec"]["parallelism"]["replicas"] == 3
    for change in ({"parallelism": {"modelN": 3}}, {"parallelism": {"stride": 2}}, {"generation": {"prompts": ["b"]}}):
        with pytest.raises(ApiException) as info:
            patch("asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", "started", {"spec": change})
        assert info.value.status == 422 and "spec is immutable once the job has started" in info.value.body


def test_a_name_too_long_for_the_children_is_refused_at_apply_time(api: E2E) -> None:
    """The operator names children ``<name>-attempt-<n>``; Kubernetes refuses names over 63 characters, so the CRD
    refuses a CR name whose children could not exist (instead of a job that loops on 422 forever)."""
    from asyncdiff_operator.children import MAX_NAME_LENGTH

    longest = "a" * MAX_NAME_LENGTH
    create(api, base(longest))
    too_long = base("a" * (MAX_NAME_LENGTH + 1))
    out = api.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(too_long), check=False)
    assert f"metadata.name may be at most {MAX_NAME_LENGTH} characters" in out, out
    dotted = set_path(base("multi.node"), "runPolicy", {"numNodes": 2, "gpusPerNode": 1})
    with pytest.raises(ApiException) as info:
        create(api, dotted)
    assert info.value.status == 422 and "must be a DNS label" in info.value.body
    create(api, set_path(base("single.node"), "runPolicy", {"numNodes": 1}))  # a dot is fine for one pod
