"""The real ``helm`` v4 CLI against the local control plane: lint, ``install --wait``, a job run by the operator that
the chart's Deployment started, ``upgrade``, ``rollback`` and ``uninstall`` (the CRD and the jobs are kept).

Why: this is the user's local path (charts/asyncdiff-operator/README.md). Helm stores its releases in Secrets sent
as protobuf bodies and applies the chart with server-side apply (``fieldManager=helm``), so this proves the local
control plane answers what client-go sends and that field ownership has the real effects: a value dropped on
``helm upgrade`` disappears from the live object, and ``helm rollback`` brings it back.

The binary comes from ``tools/install_helm.py`` (``make install`` puts it at ``.venv/bin/helm``); set
``ASYNCDIFF_HELM`` to use another helm v4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from asyncdiff_devcluster.kubelet.networking import free_port
from asyncdiff_devcluster.testing import running_dev_cluster, wait_for

from tests.packaging.helm_chart import CHART
from tests.packaging.test_helm_on_devcluster import JOBS_NAMESPACE, KUBECTL, tiny_job

RELEASE = "adiff-cli"
RELEASE_NS = "asyncdiff-system"


def helm_binary() -> str:
    path = os.environ.get("ASYNCDIFF_HELM") or str(Path(sys.executable).parent / "helm")
    if not Path(path).is_file():
        pytest.skip(f"no helm at {path}: run `make install` (tools/install_helm.py) or set ASYNCDIFF_HELM")
    version = subprocess.run([path, "version", "--short"], capture_output=True, text=True, timeout=30).stdout
    assert version.startswith("v4."), f"{path} is helm {version.strip()}, these tests need helm v4"
    return path


def _helm_env(tmp: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base or os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp / var.lower())
    return env


def test_helm_lint(tmp_path: Path) -> None:
    helm = helm_binary()
    env = _helm_env(tmp_path)
    ok = subprocess.run([helm, "lint", "--strict", str(CHART)], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in ok.stdout
    bad = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--set", "image.operator.pullPolicy=Sometimes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "pullPolicy" in bad.stdout + bad.stderr


@pytest.mark.slow
def test_helm_install_job_upgrade_rollback_uninstall(tmp_path: Path) -> None:
    from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline

    helm = helm_binary()
    model = build_tiny_pipeline("sd15", tmp_path / "tiny-sd15")
    out = tmp_path / "results"
    out.mkdir()
    liveness = free_port()
    with running_dev_cluster(tmp_path / "cluster", gpus=4, job_backoff_base=0.0, restart_backoff=0.1) as cluster:
        env = _helm_env(tmp_path, cluster.env(KUBECACHEDIR=str(tmp_path / "kcache")))

        def run(binary: str, *args: str, stdin: str | None = None, timeout: float = 180) -> str:
            result = subprocess.run(
                [binary, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
            )
            assert result.returncode == 0, f"{Path(binary).name} {' '.join(args)}:\n{result.stdout}{result.stderr}"
            return result.stdout

        def kubectl(*args: str, stdin: str | None = None) -> str:
            return run(KUBECTL, *args, stdin=stdin)

        def helm_cmd(*args: str) -> str:
            return run(helm, *args, "-n", RELEASE_NS)

        deployment = f"deployment/{RELEASE}-asyncdiff-operator"
        metrics_service = f"{RELEASE}-asyncdiff-operator-metrics"

        def env_names() -> list[str]:
            obj = json.loads(kubectl("get", deployment, "-n", RELEASE_NS, "-o", "json"))
            return [e["name"] for e in obj["spec"]["template"]["spec"]["containers"][0].get("env", [])]

        def services() -> list[str]:
            items = json.loads(kubectl("get", "services", "-n", RELEASE_NS, "-o", "json"))["items"]
            return [s["metadata"]["name"] for s in items]

        def alive() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2) as rsp:
                    return bool(rsp.status == 200)
            except OSError:
                return False

        def revision_deployed(n: int) -> Callable[[], bool]:
            def check() -> bool:
                rows = json.loads(helm_cmd("history", RELEASE, "-o", "json"))
                return any(r["revision"] == n and r["status"] == "deployed" for r in rows)

            return check

        kubectl("create", "namespace", JOBS_NAMESPACE)  # a protobuf body, like helm's release Secrets
        values = tmp_path / "values.yaml"
        values.write_text(
            yaml.safe_dump(
                {"operator": {"watchNamespaces": [JOBS_NAMESPACE], "livenessPort": liveness, "reconcileInterval": 0.5}}
            )
        )
        helm_cmd("install", RELEASE, str(CHART), "--create-namespace", "-f", str(values), "--wait", "--timeout", "150s")
        assert revision_deployed(1)()
        release_secrets = json.loads(kubectl("get", "secrets", "-n", RELEASE_NS, "-l", "owner=helm", "-o", "json"))
        assert [s["type"] for s in release_secrets["items"]] == ["helm.sh/release.v1"]
        live = json.loads(kubectl("get", deployment, "-n", RELEASE_NS, "-o", "json", "--show-managed-fields"))
        assert {e["manager"] for e in live["metadata"]["managedFields"] if e["operation"] == "Apply"} == {"helm"}
        assert "ASYNCDIFF_METRICS_PORT" in env_names() and metrics_service in services()
        wait_for(alive, timeout=90, interval=0.2, message="the operator started from the chart's Deployment")

        # a job, run by that operator
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump(tiny_job(model, out)))
        run(
            KUBECTL,
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "adj/first-job",
            "-n",
            JOBS_NAMESPACE,
            "--timeout=150s",
            timeout=170,
        )
        job = json.loads(kubectl("get", "adj/first-job", "-n", JOBS_NAMESPACE, "-o", "json"))
        assert job["status"]["outputs"] and all(
            Path(u.removeprefix("file://")).exists() for u in job["status"]["outputs"]
        )

        # upgrade: metrics off removes the Service and (server-side apply) the env var helm no longer sets
        helm_cmd("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "metrics.enabled=false", "--wait")
        assert revision_deployed(2)()
        assert "ASYNCDIFF_METRICS_PORT" not in env_names() and metrics_service not in services()

        # rollback to revision 1: both come back
        helm_cmd("rollback", RELEASE, "1", "--wait")
        assert revision_deployed(3)()
        assert "ASYNCDIFF_METRICS_PORT" in env_names() and metrics_service in services()
        wait_for(alive, timeout=90, interval=0.2, message="the operator after the rollback")

        # uninstall: the release's objects go, the CRD (helm.sh/resource-policy: keep) and the jobs stay
        uninstalled = helm_cmd("uninstall", RELEASE, "--wait")
        assert "asyncdiff" in uninstalled
        assert json.loads(helm_cmd("list", "-o", "json")) == []
        gone = subprocess.run(
            [KUBECTL, "get", deployment, "-n", RELEASE_NS], env=env, capture_output=True, text=True, timeout=30
        )
        assert gone.returncode != 0 and "NotFound" in gone.stderr
        kubectl("get", "crd", "asyncdiffjobs.asyncdiff.io")
        kept = json.loads(kubectl("get", "adj/first-job", "-n", JOBS_NAMESPACE, "-o", "json"))
        assert kept["status"]["phase"] == "Succeeded"
        assert not json.loads(kubectl("get", "secrets", "-n", RELEASE_NS, "-l", "owner=helm", "-o", "json"))["items"]
