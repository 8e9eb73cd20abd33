"""The user CLI (``asyncdiff submit/status/fetch``) without torch, against a local control plane with no operator,
and the full demo (``make demo``'s module) end to end. Every error is checked as a user sees it: a subprocess run
of the ``asyncdiff`` command, one line on stderr, no traceback, a non-zero exit code."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_operator import usercli
from asyncdiff_worker.launch import free_port
from asyncdiff_worker.storage import Storage

from .conftest import CRD, E2E, REPO, OperatorProcess, job_manifest


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``asyncdiff ARGS`` as a user runs it (the console script's module), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "asyncdiff_cli.main", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The run failed with ``code`` and exactly one stderr line holding every needle, and no traceback."""
    err = result.stderr.strip()
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def no_cluster_env(tmp_path: Path) -> dict[str, str]:
    """No KUBECONFIG, no ~/.kube/config, not in a pod."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path / "home")
    return env


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


def test_no_kubeconfig_is_one_line(tmp_path: Path) -> None:
    for command in (["status", "x"], ["fetch", "x", str(tmp_path / "dl")], ["submit", str(tmp_path / "job.yaml")]):
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(job_manifest("x", "/m", tmp_path)))
        one_line_error(cli(*command, env=no_cluster_env(tmp_path)), 2, "no cluster configured", "KUBECONFIG")
    one_line_error(cli("status", "x", "--kubeconfig", str(tmp_path / "nope")), 2, "--kubeconfig", "no such file")


def test_unreachable_api_server_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    result = cli("status", "x", "--kubeconfig", str(tmp_path / "kubeconfig"))
    one_line_error(result, 2, "cannot reach the API server", f"127.0.0.1:{port}")


def test_missing_job_is_one_line(plain: E2E, tmp_path: Path) -> None:
    kubeconfig = ["--kubeconfig", str(plain.cluster.kubeconfig)]
    for command in (["status", "nope"], ["fetch", "nope", str(tmp_path / "dl")]):
        result = cli(*command, *kubeconfig, env=plain.env)
        one_line_error(result, 2, 'AsyncDiffJob "nope" not found in namespace "default"')
    assert not (tmp_path / "dl").exists()


def test_submit_without_an_operator_says_so(plain: E2E, tmp_path: Path) -> None:
    """No operator runs on this control plane: nothing ever writes the job's status, so the outcome cannot depend
    on timing; the pick-up timeout is the only wait."""
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_manifest("no-operator", "/m", tmp_path)))
    result = cli("submit", str(job), "--kubeconfig", str(plain.cluster.kubeconfig), "--pickup-timeout", "2")
    err = one_line_error(result, 4, "no operator has picked up no-operator after 2 s", "asyncdiff-operator")
    assert "created" in result.stdout, (result.stdout, err)
    assert plain.get("no-operator")["metadata"]["name"] == "no-operator"  # the job stays


def test_submit_of_a_missing_or_bad_file_is_one_line(plain: E2E, tmp_path: Path) -> None:
    kubeconfig = ["--kubeconfig", str(plain.cluster.kubeconfig)]
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_manifest("elsewhere", "/m", tmp_path)))
    one_line_error(cli("submit", str(job), "-n", "nowhere", *kubeconfig), 2, 'namespace "nowhere" not found')
    one_line_error(cli("submit", str(tmp_path / "nope.yaml"), *kubeconfig), 2, "nope.yaml: cannot read")
    (tmp_path / "bad.yaml").write_text("a: [")
    one_line_error(cli("submit", str(tmp_path / "bad.yaml"), *kubeconfig), 2, "bad.yaml: not valid YAML")


def test_submit_without_the_crd_is_one_line(tmp_path: Path) -> None:
    from asyncdiff_devcluster.testing import running_dev_cluster

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_manifest("no-crd", "/m", tmp_path)))
    with running_dev_cluster(tmp_path / "cluster") as cluster:
        kubeconfig = ["--kubeconfig", str(cluster.kubeconfig)]
        env = cluster.env(KUBECACHEDIR=str(tmp_path / "kcache"))
        one_line_error(cli("submit", str(job), *kubeconfig, env=env), 2, "CRD is not installed", "kubectl apply -f")
        one_line_error(cli("status", "no-crd", *kubeconfig, env=env), 2, "CRD is not installed")


def _succeeded(plain: E2E, name: str, output: dict[str, Any], manifest_uri: str) -> None:
    """A job as the operator leaves it after success (no operator runs here: the test writes the status)."""
    body = job_manifest(name, "/m", Path("/tmp"))
    body["spec"]["output"] = output
    plain.custom.create_namespaced_custom_object("asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", body)
    plain.custom.patch_namespaced_custom_object_status(
        "asyncdiff.io",
        "v1alpha1",
        "default",
        "asyncdiffjobs",
        name,
        {"status": {"phase": "Succeeded", "attempts": 1, "manifest": manifest_uri}},
    )


def test_fetch_of_file_outputs(plain: E2E, tmp_path: Path) -> None:
    """``asyncdiff fetch`` outside the demo: file:// outputs (the README's local flow) are copied with the manifest."""
    root = tmp_path / "results" / "file-job"
    storage = Storage()
    records = []
    for i in range(2):
        uri = f"file://{root}/outputs/{i:05d}-p0000.png"
        storage.put(uri, f"png{i}".encode(), content_type="image/png")
        records.append({"index": i, "uri": uri})
    storage.put(f"file://{root}/manifest.json", json.dumps({"outputs": records}).encode(), content_type="x")
    _succeeded(plain, "file-job", {"uri": f"file://{tmp_path / 'results'}"}, f"file://{root}/manifest.json")
    dest = tmp_path / "dl"
    result = cli("fetch", "file-job", str(dest), "--kubeconfig", str(plain.cluster.kubeconfig))
    assert result.returncode == 0, result.stderr
    assert "2 outputs and manifest.json in" in result.stdout
    assert (dest / "00000-p0000.png").read_bytes() == b"png0" and (dest / "00001-p0000.png").read_bytes() == b"png1"
    assert json.loads((dest / "manifest.json").read_text())["outputs"] == records


def test_fetch_without_s3_credentials_is_one_line(plain: E2E, tmp_path: Path) -> None:
    output = {"uri": "s3://outputs/jobs", "endpointUrl": f"http://127.0.0.1:{free_port()}", "forcePathStyle": True}
    _succeeded(plain, "s3-job", output, "s3://outputs/jobs/s3-job/manifest.json")
    env = no_cluster_env(tmp_path)
    env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "ASYNCDIFF_S3_SECRET"))}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    result = cli("fetch", "s3-job", str(tmp_path / "dl"), "--kubeconfig", str(plain.cluster.kubeconfig), env=env)
    one_line_error(result, 1, "cannot read the outputs", "no S3 credentials", "AWS_ACCESS_KEY_ID")


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
