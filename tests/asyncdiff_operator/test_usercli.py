"""The user CLI (``asyncdiff submit/status/fetch``) without torch, against a local control plane with no operator,
and the full demo (``make demo``'s module) end to end."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from asyncdiff_operator import usercli

from .conftest import CRD, E2E, REPO, OperatorProcess, job_manifest


def test_the_cli_does_not_import_torch() -> None:
    code = "import sys, asyncdiff_cli.main as m, asyncdiff_operator.usercli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_status_line_and_bar() -> None:
    obj = {
        "metadata": {"name": "j"},
        "status": {
            "phase": "Running",
            "attempts": 2,
            "progress": {"outputsDone": 1, "outputsTotal": 2, "step": 1, "steps": 2},
            "lastFailure": {"reason": "PeerFailed", "message": "rank 1 died"},
        },
    }
    line = usercli.status_line(obj)
    assert line.startswith("j: Running  attempt 2  [")
    assert "1/2 outputs, step 1/2" in line and "last failure PeerFailed: rank 1 died" in line


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    from asyncdiff_devcluster.testing import running_dev_cluster

    root = tmp_path_factory.mktemp("cli")
    with running_dev_cluster(root / "cluster") as cluster:
        env = cluster.env(KUBECACHEDIR=str(root / "kcache"))
        harness = E2E(cluster, env, OperatorProcess(env, root / "none.log"), root)
        harness.kubectl("apply", "-f", str(CRD))
        yield harness


def test_submit_no_follow_status_and_errors(plain: E2E, tmp_path: Path) -> None:
    kubeconfig = ["--kubeconfig", str(plain.cluster.kubeconfig)]
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_manifest("cli-job", "/m", tmp_path)))
    out = io.StringIO()
    assert usercli.main(["submit", str(job), "--no-follow", *kubeconfig], out) == 0
    assert "asyncdiffjob.asyncdiff.io/cli-job created" in out.getvalue()
    out = io.StringIO()
    assert usercli.main(["status", "cli-job", *kubeconfig], out) == 0
    assert out.getvalue().startswith("cli-job: Pending  attempt 0")
    bad = tmp_path / "bad.yaml"
    manifest = job_manifest("cli-bad", "/m", tmp_path)
    manifest["spec"]["parallelism"]["modelN"] = 9
    bad.write_text(yaml.safe_dump(manifest))
    result = subprocess.run(
        [sys.executable, "-m", "asyncdiff_cli.main", "submit", str(bad), *kubeconfig],
        capture_output=True,
        text=True,
        env=plain.env,
    )
    assert result.returncode == 2 and "spec.parallelism.modelN" in result.stderr, result.stderr
    out = io.StringIO()
    assert usercli.main(["fetch", "cli-job", str(tmp_path / "dl"), *kubeconfig], out) == 1


@pytest.mark.slow
def test_demo_runs_the_full_chain(tmp_path: Path) -> None:
    """``make demo``: control plane, operator, kubectl apply, workers, embedded S3 with a Secret, asyncdiff fetch."""
    result = subprocess.run(
        [sys.executable, "-m", "asyncdiff_devcluster.demo", "--workdir", str(tmp_path), "--timeout", "150"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "tiny-sd-cluster: Succeeded" in result.stdout
    assert "2 outputs and manifest.json in" in result.stdout
    assert len(list((tmp_path / "cluster-outputs").glob("*.png"))) == 2


def test_fetch_reads_from_the_location_recorded_in_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 endpoint may come from the operator's defaults (the chart), not spec.output: fetch uses status.output.
    spec.output alone names no endpoint (AWS, unreachable here); status.output names the embedded S3 server."""
    import json

    from asyncdiff_worker.embedded_s3 import TEST_CREDENTIALS, start_embedded_s3

    for key, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    s3 = start_embedded_s3()
    try:
        client = s3.client()
        client.create_bucket(Bucket="results")
        client.put_object(Bucket="results", Key="p/j/outputs/0-p0.png", Body=b"png")
        manifest = {"outputs": [{"uri": "s3://results/p/j/outputs/0-p0.png"}]}
        client.put_object(Bucket="results", Key="p/j/manifest.json", Body=json.dumps(manifest).encode())
        obj = {
            "metadata": {"name": "j"},
            "spec": {"output": {"uri": "s3://results/p", "format": "png"}},
            "status": {
                "phase": "Succeeded",
                "manifest": "s3://results/p/j/manifest.json",
                "output": {"uri": "s3://results/p", "endpointUrl": s3.endpoint_url, "forcePathStyle": True},
            },
        }

        class Api:
            def get_namespaced_custom_object(self, *_: object) -> dict[str, object]:
                return obj

        monkeypatch.setattr(usercli, "_api", lambda kubeconfig: Api())
        out = io.StringIO()
        assert usercli.main(["fetch", "j", str(tmp_path / "dl"), "-n", "default"], out) == 0, out.getvalue()
        assert (tmp_path / "dl" / "0-p0.png").read_bytes() == b"png"
    finally:
        s3.stop()
