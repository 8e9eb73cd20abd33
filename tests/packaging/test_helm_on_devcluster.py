"""The closest to ``helm install`` that runs here: the chart rendered by the real Helm library, applied with kubectl
to the local control plane, the operator started by the local kubelet from the chart's Deployment, and a tiny
AsyncDiffJob reaching Succeeded.

Why: this proves the Deployment's command, flags and environment start a working operator, that the RBAC objects
and the templated CRD are accepted by kubectl, and that the operator installed this way runs jobs end to end. What
it cannot prove (see asyncdiff_devcluster/README.md): images, securityContext, probes and RBAC are not enforced by
the local cluster; tests/kind/run.sh covers those on Docker hosts.

Namespace-scoped install (``operator.watchNamespaces: [jobs]``), so the ``--namespace`` flag and the per-namespace
Role are exercised. kopf's liveness endpoint is checked over HTTP, on a free port chosen here, and the metrics
endpoint the chart's Service points at (container port 9090, mapped to a free host port by the local kubelet).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_devcluster.kubelet.networking import free_port
from asyncdiff_devcluster.testing import running_dev_cluster, wait_for

from tests.packaging.helm_chart import RELEASE, RELEASE_NAMESPACE, render, render_files

KUBECTL = str(Path(sys.executable).parent / "kubectl")
JOBS_NAMESPACE = "jobs"
pytestmark = pytest.mark.slow


def tiny_job(model: Path, out: Path) -> dict[str, Any]:
    return {
        "apiVersion": "asyncdiff.io/v1alpha1",
        "kind": "AsyncDiffJob",
        "metadata": {"name": "first-job", "namespace": JOBS_NAMESPACE},
        "spec": {
            "model": {"family": "sd15", "source": model.as_uri(), "dtype": "float32"},
            "parallelism": {"modelN": 2, "stride": 1, "warmUp": 1},
            "generation": {"prompts": ["a red cube"], "steps": 3, "height": 32, "width": 32},
            "output": {"uri": out.as_uri()},
            "runPolicy": {"backoffLimit": 1},
        },
    }


def test_chart_installs_and_runs_a_job(tmp_path: Path) -> None:
    from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline

    kubelet_path = Path(sys.executable).parent  # the local kubelet puts this first on PATH
    assert shutil.which("asyncdiff-operator", path=str(kubelet_path)), (
        f"asyncdiff-operator is not in {kubelet_path}: install the project (make install)"
    )
    model = build_tiny_pipeline("sd15", tmp_path / "tiny-sd15")
    out = tmp_path / "results"
    out.mkdir()
    liveness = free_port()
    values = {
        "operator": {"watchNamespaces": [JOBS_NAMESPACE], "livenessPort": liveness, "reconcileInterval": 0.5},
    }
    objects = render(values)  # the CRD is one of them: it is templated
    manifest = tmp_path / "release.yaml"
    manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    notes = next(text for path, text in render_files(values).items() if path.endswith("NOTES.txt"))
    assert f"namespace: {JOBS_NAMESPACE}" in notes

    with running_dev_cluster(tmp_path / "cluster", gpus=4, job_backoff_base=0.0, restart_backoff=0.1) as cluster:
        env = cluster.env(KUBECACHEDIR=str(tmp_path / "kcache"))

        def kubectl(*args: str, stdin: str | None = None, timeout: float = 60) -> str:
            result = subprocess.run(
                [KUBECTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
            )
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}"
            return result.stdout

        def operator_log() -> str:
            pods = json.loads(kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-o", "json"))["items"]
            return "\n".join(
                subprocess.run(
                    [KUBECTL, "logs", "-n", RELEASE_NAMESPACE, p["metadata"]["name"], "--tail=60"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout
                for p in pods
            )

        namespaces = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
            for n in (RELEASE_NAMESPACE, JOBS_NAMESPACE)
        ]
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(namespaces))
        t0 = time.monotonic()
        kubectl("apply", "-f", str(manifest))
        deployment = f"deployment/{RELEASE}-asyncdiff-operator"

        def alive() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2) as rsp:
                    return bool(rsp.status == 200)
            except OSError:
                return False

        try:
            wait_for(alive, timeout=60, interval=0.2, message="kopf's liveness endpoint of the operator pod")
        except AssertionError:
            pytest.fail(f"the operator did not come up; its log:\n{operator_log()}")
        started = time.monotonic() - t0
        status = json.loads(kubectl("get", deployment, "-n", RELEASE_NAMESPACE, "-o", "json"))["status"]
        assert status.get("availableReplicas") == 1, status
        pod = json.loads(kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-o", "json"))["items"][0]
        container = pod["spec"]["containers"][0]
        assert container["command"] == ["asyncdiff-operator"]
        assert f"--namespace={JOBS_NAMESPACE}" in container["args"]
        # the metrics port the chart declares (9090, ASYNCDIFF_METRICS_PORT) is served; the local kubelet maps it
        ports = json.loads(pod["metadata"]["annotations"]["devcluster.asyncdiff.io/ports"])
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['9090']}/metrics", timeout=5) as rsp:
            assert rsp.status == 200 and b"# TYPE" in rsp.read()

        t1 = time.monotonic()
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump(tiny_job(model, out)))
        waited = subprocess.run(
            [
                KUBECTL,
                "wait",
                "--for=jsonpath={.status.phase}=Succeeded",
                "adj/first-job",
                "-n",
                JOBS_NAMESPACE,
                "--timeout=150s",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=160,
        )
        job = json.loads(kubectl("get", "adj/first-job", "-n", JOBS_NAMESPACE, "-o", "json"))
        assert waited.returncode == 0, f"{waited.stderr}\nstatus: {job.get('status')}\noperator:\n{operator_log()}"
        succeeded = time.monotonic() - t1
        print(f"\nchart applied -> operator alive: {started:.1f} s; job applied -> Succeeded: {succeeded:.1f} s")
        outputs = job["status"]["outputs"]
        assert outputs and all(Path(u.removeprefix("file://")).exists() for u in outputs)
        assert os.listdir(out)
