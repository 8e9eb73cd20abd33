"""End to end on the local control plane: kubectl apply -> the real operator -> Job -> torchrun workers -> outputs.

Why one success and one failure job in one cluster: each torchrun start costs ~10 s on 2 cores; the two jobs run
side by side, so the test also covers two jobs at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from asyncdiff_devcluster.testing import running_dev_cluster

REPO = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.executable).parent / "kubectl")
pytestmark = pytest.mark.slow


def job_manifest(name: str, source: str, out: Path) -> dict[str, object]:
    return {
        "apiVersion": "asyncdiff.io/v1alpha1",
        "kind": "AsyncDiffJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": {"family": "sd15", "source": source, "dtype": "float32"},
            "parallelism": {"modelN": 2, "stride": 1, "warmUp": 1},
            "generation": {"prompts": ["a red cube"], "steps": 3, "height": 32, "width": 32},
            "output": {"uri": out.as_uri()},
            "runPolicy": {"backoffLimit": 2},
        },
    }


def test_tiny_job_succeeds_and_bad_model_fails_fast(tmp_path: Path) -> None:
    from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline

    model = tmp_path / "tiny-sd15"
    build_tiny_pipeline("sd15", model)
    out = tmp_path / "results"
    out.mkdir()
    with running_dev_cluster(tmp_path / "cluster", gpus=4, job_backoff_base=0.0, restart_backoff=0.1) as cluster:
        env = cluster.env(KUBECACHEDIR=str(tmp_path / "kcache"), ASYNCDIFF_RECONCILE_INTERVAL="0.5")

        def kubectl(*args: str, stdin: str | None = None, timeout: float = 60) -> str:
            result = subprocess.run(
                [KUBECTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
            )
            assert result.returncode == 0, f"kubectl {args}: {result.stdout}{result.stderr}"
            return result.stdout

        kubectl("apply", "-f", str(REPO / "crds" / "asyncdiff.io_asyncdiffjobs.yaml"))
        log = (tmp_path / "operator.log").open("w")
        operator = subprocess.Popen(
            [sys.executable, "-m", "asyncdiff_operator.main"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            time.sleep(2.0)  # let kopf start its watches
            good = job_manifest("tiny-ok", model.as_uri(), out)
            bad = job_manifest("tiny-bad", (tmp_path / "missing").as_uri(), out)
            t0 = time.monotonic()
            kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([good, bad]))
            batch = __import__("kubernetes").client.BatchV1Api(cluster.api_client())
            while time.monotonic() - t0 < 20:
                if any(j.metadata.name == "tiny-ok-attempt-1" for j in batch.list_namespaced_job("default").items):
                    break
                time.sleep(0.02)
            latency = time.monotonic() - t0
            kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "adj/tiny-ok", "--timeout=80s", timeout=90)
            to_succeeded = time.monotonic() - t0
            kubectl("wait", "--for=jsonpath={.status.phase}=Failed", "adj/tiny-bad", "--timeout=30s", timeout=40)
            print(f"\nCR create -> child Job: {latency:.2f} s; CR create -> Succeeded: {to_succeeded:.1f} s")

            ok = json.loads(kubectl("get", "adj/tiny-ok", "-o", "json"))["status"]
            assert ok["attempts"] == 1 and ok["devices"] == 2
            assert ok["outputs"] and all(Path(u.removeprefix("file://")).exists() for u in ok["outputs"])
            assert ok["progress"]["summary"] == "1/1"
            assert {c["type"]: c["status"] for c in ok["conditions"]}["Succeeded"] == "True"
            assert list((out / "tiny-ok").rglob("*.png"))

            badst = json.loads(kubectl("get", "adj/tiny-bad", "-o", "json"))["status"]
            assert badst["attempts"] == 1, badst  # a user error is never retried
            assert badst["lastFailure"]["reason"] == "ModelNotFound", badst
            assert badst["lastFailure"]["exitCode"] == 11
            jobs = {j.metadata.name for j in batch.list_namespaced_job("default").items}
            assert "tiny-bad-attempt-2" not in jobs
            table = kubectl("get", "adj")
            assert "Succeeded" in table and "Failed" in table
        finally:
            operator.terminate()
            try:
                operator.wait(15)
            except subprocess.TimeoutExpired:
                operator.kill()
            log.close()
            print((tmp_path / "operator.log").read_text()[-3000:])
