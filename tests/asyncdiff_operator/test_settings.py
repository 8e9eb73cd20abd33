"""Unit tests of the operator's settings (parsed from its environment) and of how rendering applies them.

Why: the chart passes the operator-wide job defaults as environment variables; these tests pin the parsing (what the
chart's values look like in the environment, and clear errors naming the variable for bad values) and the precedence
in the rendered children: the job's own setting, then the operator's, then the built-in default.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from asyncdiff_operator.api import DEFAULT_IMAGE, parse_spec
from asyncdiff_operator.children import MODEL_CACHE_DIR, S3_SECRET_DIR, render_configmap, render_job
from asyncdiff_operator.settings import OperatorSettings, SettingsError, from_env

CHART_WORKER_VALUES = {
    "resources": {},
    "nodeSelector": {},
    "tolerations": [],
    "serviceAccountName": "",
    "modelCacheSizeLimit": "50Gi",
}
"""The chart's default `worker` values, as ``toJson`` passes them."""

CHART_DEFAULT_ENV = {
    "ASYNCDIFF_WORKER_IMAGE": "ghcr.io/asyncdiff/asyncdiff-worker:0.1.0",
    "ASYNCDIFF_WORKER_IMAGE_PULL_POLICY": "IfNotPresent",
    "ASYNCDIFF_WORKER_DEFAULTS": json.dumps(CHART_WORKER_VALUES),
    "ASYNCDIFF_S3_ENDPOINT": "",
    "ASYNCDIFF_S3_REGION": "",
    "ASYNCDIFF_S3_FORCE_PATH_STYLE": "false",
    "ASYNCDIFF_S3_CREDENTIALS_SECRET": "",
    "ASYNCDIFF_RECONCILE_INTERVAL": "1.0",
    "ASYNCDIFF_STALL_SECONDS": "600",
    "ASYNCDIFF_PENDING_TIMEOUT_SECONDS": "600",
}
"""What the chart's deployment.yaml sets with its default values."""

FULL_ENV = {
    "ASYNCDIFF_WORKER_IMAGE": "registry.local/worker:2",
    "ASYNCDIFF_WORKER_IMAGE_PULL_POLICY": "Always",
    "ASYNCDIFF_WORKER_DEFAULTS": json.dumps(
        {
            "resources": {"requests": {"cpu": "4", "memory": "32Gi"}, "limits": {"memory": "64Gi"}},
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": ""}],
            "serviceAccountName": "worker-sa",
            "modelCacheSizeLimit": "20Gi",
        }
    ),
    "ASYNCDIFF_S3_ENDPOINT": "http://minio.storage:9000",
    "ASYNCDIFF_S3_REGION": "eu-west-1",
    "ASYNCDIFF_S3_FORCE_PATH_STYLE": "true",
    "ASYNCDIFF_S3_CREDENTIALS_SECRET": "s3-default",
}

CR: dict[str, Any] = {
    "metadata": {"name": "j", "namespace": "ns", "uid": "u-1"},
    "spec": {
        "model": {"family": "sd15", "source": "s3://b/m"},
        "parallelism": {"modelN": 2, "stride": 1},
        "generation": {"prompts": ["a cat"]},
        "output": {"uri": "s3://b/out"},
    },
}


def _cr(pod: dict[str, Any] | None = None, output: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = dict(CR["spec"])
    if pod is not None:
        spec["pod"] = pod
    if output is not None:
        spec["output"] = {**spec["output"], **output}
    return {**CR, "spec": spec}


def _pod(cr: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    pod: dict[str, Any] = render_job(cr, parse_spec(cr["spec"]), 1, settings)["spec"]["template"]["spec"]
    return pod


def _output(cr: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    cm = render_configmap(cr, parse_spec(cr["spec"]), 1, settings)
    output: dict[str, Any] = yaml.safe_load(cm["data"]["job.yaml"])["spec"]["output"]
    return output


# --- parsing ---------------------------------------------------------------------------------------------------------


def test_empty_environment_is_the_built_in_defaults() -> None:
    settings = from_env({})
    assert settings == OperatorSettings()
    assert settings.reconcile_interval == 1.0 and settings.stall_seconds == 600.0
    assert (
        settings.pending_timeout == 600.0
        and from_env({"ASYNCDIFF_PENDING_TIMEOUT_SECONDS": "30"}).pending_timeout == 30
    )
    assert settings.worker_image is None and settings.worker_image_pull_policy is None
    assert settings.s3.endpoint_url is None and settings.s3.force_path_style is False


def test_chart_default_values_parse() -> None:
    settings = from_env(CHART_DEFAULT_ENV)
    assert settings.worker_image == "ghcr.io/asyncdiff/asyncdiff-worker:0.1.0"
    assert settings.worker_image_pull_policy == "IfNotPresent"
    worker = settings.worker
    assert worker.resources is None and worker.node_selector is None and worker.tolerations is None
    assert worker.service_account_name is None and worker.model_cache_size_limit == "50Gi"
    assert settings.s3.endpoint_url is None and settings.s3.region is None
    assert settings.s3.credentials_secret is None and settings.s3.force_path_style is False


def test_full_values_parse() -> None:
    settings = from_env(FULL_ENV)
    worker = settings.worker
    assert worker.resources is not None and worker.resources.requests == {"cpu": "4", "memory": "32Gi"}
    assert worker.node_selector == {"pool": "gpu"} and worker.service_account_name == "worker-sa"
    assert worker.tolerations is not None and worker.tolerations[0].effect is None  # "" matches every effect
    assert settings.s3.endpoint_url == "http://minio.storage:9000" and settings.s3.region == "eu-west-1"
    assert settings.s3.force_path_style is True and settings.s3.credentials_secret == "s3-default"


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("True", True), ("1", True), ("false", False)])
def test_force_path_style_spellings(text: str, expected: bool) -> None:
    assert from_env({"ASYNCDIFF_S3_FORCE_PATH_STYLE": text}).s3.force_path_style is expected


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"ASYNCDIFF_WORKER_DEFAULTS": "{resources: 1"}, "ASYNCDIFF_WORKER_DEFAULTS is not valid JSON"),
        ({"ASYNCDIFF_WORKER_DEFAULTS": "[1]"}, "ASYNCDIFF_WORKER_DEFAULTS must be a JSON object"),
        ({"ASYNCDIFF_WORKER_DEFAULTS": '{"nodeSelectr": {"a": "b"}}'}, "ASYNCDIFF_WORKER_DEFAULTS: nodeSelectr"),
        ({"ASYNCDIFF_WORKER_DEFAULTS": '{"tolerations": [{"effect": "Sometimes"}]}'}, "ASYNCDIFF_WORKER_DEFAULTS"),
        ({"ASYNCDIFF_WORKER_IMAGE_PULL_POLICY": "Sometimes"}, "ASYNCDIFF_WORKER_IMAGE_PULL_POLICY"),
        ({"ASYNCDIFF_S3_FORCE_PATH_STYLE": "maybe"}, "ASYNCDIFF_S3_FORCE_PATH_STYLE"),
        ({"ASYNCDIFF_S3_ENDPOINT": "minio:9000"}, "ASYNCDIFF_S3_ENDPOINT"),
        ({"ASYNCDIFF_S3_REGION": "EU West"}, "ASYNCDIFF_S3_REGION"),
        ({"ASYNCDIFF_RECONCILE_INTERVAL": "fast"}, "ASYNCDIFF_RECONCILE_INTERVAL='fast': not a number"),
        ({"ASYNCDIFF_STALL_SECONDS": "-1"}, "ASYNCDIFF_STALL_SECONDS"),
        ({"ASYNCDIFF_PENDING_TIMEOUT_SECONDS": "0"}, "ASYNCDIFF_PENDING_TIMEOUT_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        from_env(env)


# --- precedence in rendering -----------------------------------------------------------------------------------------


def test_no_settings_render_as_before() -> None:
    pod = _pod(CR, OperatorSettings())
    (c,) = pod["containers"]
    assert c["image"] == DEFAULT_IMAGE and "imagePullPolicy" not in c
    assert [v["name"] for v in pod["volumes"]] == ["job-spec", "model-cache", "tmp"]  # emptyDirs without sizeLimit
    assert all(v["emptyDir"] == {} for v in pod["volumes"][1:])
    assert not {"nodeSelector", "tolerations", "serviceAccountName"} & pod.keys()
    assert _output(CR, OperatorSettings()) == {"uri": "s3://b/out", "quality": 90, "forcePathStyle": False}


def test_image_precedence() -> None:
    settings = from_env(FULL_ENV)
    (c,) = _pod(CR, settings)["containers"]
    assert c["image"] == "registry.local/worker:2" and c["imagePullPolicy"] == "Always"
    (c,) = _pod(_cr(pod={"image": "mine:1"}), settings)["containers"]
    assert c["image"] == "mine:1" and "imagePullPolicy" not in c  # the job's image keeps Kubernetes' default
    (c,) = _pod(CR, from_env({"ASYNCDIFF_WORKER_IMAGE_PULL_POLICY": "Never"}))["containers"]
    assert c["image"] == DEFAULT_IMAGE and c["imagePullPolicy"] == "Never"


def test_worker_defaults_apply_where_the_job_sets_nothing() -> None:
    settings = from_env(FULL_ENV)
    pod = _pod(CR, settings)
    (c,) = pod["containers"]
    assert c["resources"]["requests"] == {"cpu": "4", "memory": "32Gi"}
    assert c["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "2"}
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["serviceAccountName"] == "worker-sa"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    cache = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert cache == {"name": "model-cache", "emptyDir": {"sizeLimit": "20Gi"}}
    assert {"name": "model-cache", "mountPath": MODEL_CACHE_DIR} in c["volumeMounts"]


def test_job_fields_replace_worker_defaults_whole() -> None:
    own = {
        "resources": {"limits": {"memory": "8Gi"}},
        "nodeSelector": {"zone": "a"},
        "tolerations": [{"key": "spot", "operator": "Exists"}],
        "serviceAccountName": "mine",
        "volumes": [{"name": "cache", "emptyDir": {}}],
        "volumeMounts": [{"name": "cache", "mountPath": MODEL_CACHE_DIR + "/"}],
    }
    pod = _pod(_cr(pod=own), from_env(FULL_ENV))
    (c,) = pod["containers"]
    # no default requests merged in: only the built-in cpu floor (the memory limit implies an equal request)
    assert c["resources"] == {"limits": {"memory": "8Gi", "nvidia.com/gpu": "2"}, "requests": {"cpu": "1"}}
    assert pod["nodeSelector"] == {"zone": "a"} and pod["serviceAccountName"] == "mine"
    assert pod["tolerations"] == [{"key": "spot", "operator": "Exists"}]
    assert "model-cache" not in [v["name"] for v in pod["volumes"]]  # the job mounts its own cache there


def test_s3_settings_fill_unset_output_fields() -> None:
    settings = from_env(FULL_ENV)
    assert _output(CR, settings) == {
        "uri": "s3://b/out",
        "quality": 90,
        "endpointUrl": "http://minio.storage:9000",
        "region": "eu-west-1",
        "forcePathStyle": True,
    }
    own = {"endpointUrl": "https://s3.example.com", "region": "us-east-2", "forcePathStyle": False}
    assert _output(_cr(output=own), settings) == {"uri": "s3://b/out", "quality": 90, **own}


def test_s3_credentials_secret_precedence() -> None:
    settings = from_env(FULL_ENV)
    for cr, expected in ((CR, "s3-default"), (_cr(pod={"s3CredentialsSecret": "mine"}), "mine")):
        pod = _pod(cr, settings)
        secret = next(v for v in pod["volumes"] if v["name"] == "s3-credentials")
        assert secret == {"name": "s3-credentials", "secret": {"secretName": expected}}
        (c,) = pod["containers"]
        assert {"name": "s3-credentials", "mountPath": S3_SECRET_DIR, "readOnly": True} in c["volumeMounts"]
        assert {"name": "ASYNCDIFF_S3_SECRET_DIR", "value": S3_SECRET_DIR} in c["env"]
    pod = _pod(_cr(pod={"s3CredentialsSecret": "mine"}), OperatorSettings())
    assert [v["name"] for v in pod["volumes"]] == ["job-spec", "s3-credentials", "model-cache", "tmp"]
