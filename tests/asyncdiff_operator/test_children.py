"""Unit tests of the pure rendering and status logic, and of the checked-in CRD being in sync with the models."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from asyncdiff_operator import crd, reasons
from asyncdiff_operator.api import parse_spec
from asyncdiff_operator.children import render_configmap, render_job
from asyncdiff_operator.status import Observation, decide
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


def test_checked_in_crd_matches_the_models() -> None:
    assert crd.CRD_FILE.read_text() == crd.render(), "run: python -m asyncdiff_operator.crd"


def test_crd_schema_is_structural() -> None:
    text = crd.render()
    for bad in ("$ref", "anyOf", "title:", "const:"):
        assert bad not in text
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "runPolicy" in schema["properties"]["spec"]["properties"]


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
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["nodeSelector"] == {"gpu": "h100"}
    (c,) = pod["containers"]
    assert c["image"] == "img:1"
    assert "--nproc=4" in c["command"] and "--spec=/etc/asyncdiff/job.yaml" in c["command"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert {"name": "FOO", "value": "bar"} in c["env"]
    assert pod["volumes"][0]["configMap"]["name"] == "j-attempt-2"


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


def test_failure_policy() -> None:
    first = decide({}, Observation(), backoff_limit=1, generation=1)
    assert first.create_attempt == 1 and first.status["phase"] == reasons.PENDING
    user = decide({"attempts": 1, "phase": "Running"}, Observation("Failed", 11, "ModelNotFound"), 1, 1)
    assert user.create_attempt is None and user.status["phase"] == reasons.FAILED
    assert user.status["lastFailure"]["reason"] == "ModelNotFound"
    infra = decide({"attempts": 1, "phase": "Running"}, Observation("Failed", 21, "peer"), 1, 1)
    assert infra.create_attempt == 2
    out = decide({"attempts": 2, "phase": "Running"}, Observation("Failed", 21, "peer"), 1, 1)
    assert out.create_attempt is None and out.status["phase"] == reasons.FAILED
    done = decide(
        {"attempts": 1}, Observation("Succeeded", 0, "", {"asyncdiff": "done", "outputs": ["s3://b/o.png"]}), 1, 1
    )
    assert done.status["phase"] == reasons.SUCCEEDED and done.status["outputs"] == ["s3://b/o.png"]
    assert decide({"phase": "Failed", "attempts": 1}, Observation("Failed", 21), 5, 1).status == {}
