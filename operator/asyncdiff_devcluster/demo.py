"""``python -m asyncdiff_devcluster.demo`` (``make demo``): the whole operator chain on this machine, no Docker.

Why: a fresh checkout should show what platform teams install, end to end, in one command: the local control plane
(the only emulated part), the real operator process, real ``kubectl apply`` of an example manifest, real torchrun
workers started by the process kubelet, outputs in an S3 server (moto, on 127.0.0.1) written with credentials from a
Kubernetes Secret, then ``asyncdiff fetch`` of the outputs listed in the result manifest. Everything is stopped at
the end; the outputs stay in ./.demo/cluster-outputs/.

Steps: build the tiny SD 1.5 model in ./.demo/tiny-sd15 (reused), start moto, start the control plane, apply the
CRD, create the Secret and the bucket, start the operator, apply ``examples/jobs/tiny-sd-cluster.yaml`` (model path
and endpoint filled in), follow it to Succeeded, fetch and print the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "jobs" / "tiny-sd-cluster.yaml"
CRD = REPO / "crds" / "asyncdiff.io_asyncdiffjobs.yaml"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
SECRET = "s3-credentials"


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def build_model(folder: Path) -> Path:
    model = folder / "tiny-sd15"
    if not (model / "model_index.json").exists():
        from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline

        say(f"building a tiny SD 1.5 pipeline in {model}")
        with contextlib.redirect_stderr(io.StringIO()):
            build_tiny_pipeline("sd15", model)
    return model


def manifest(model: Path, endpoint_url: str) -> dict[str, Any]:
    job: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    job["spec"]["model"]["source"] = str(model.resolve())
    job["spec"]["output"]["endpointUrl"] = endpoint_url
    return job


@contextlib.contextmanager
def operator_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "asyncdiff_operator.main"], env=env, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(workdir: Path, timeout: float) -> int:
    from asyncdiff_worker.embedded_s3 import TEST_CREDENTIALS, start_embedded_s3
    from kubernetes import client

    from asyncdiff_devcluster.testing import running_dev_cluster

    workdir.mkdir(parents=True, exist_ok=True)
    model = build_model(workdir)
    s3 = start_embedded_s3()
    say(f"embedded S3 (moto) at {s3.endpoint_url}")
    job = manifest(model, s3.endpoint_url)
    bucket = job["spec"]["output"]["uri"].removeprefix("s3://").split("/", 1)[0]
    s3.client().create_bucket(Bucket=bucket)
    try:
        with running_dev_cluster(workdir / "cluster", gpus=4, job_backoff_base=0.0, restart_backoff=0.1) as cluster:
            say(f"local control plane at {cluster.url}; KUBECONFIG={cluster.kubeconfig}")
            env = cluster.env(KUBECACHEDIR=str(workdir / "kcache"), ASYNCDIFF_RECONCILE_INTERVAL="0.5")

            def kubectl(*args: str, stdin: str | None = None) -> None:
                done = subprocess.run([KUBECTL, *args], env=env, input=stdin, capture_output=True, text=True)
                print(done.stdout.rstrip() or done.stderr.rstrip(), flush=True)
                if done.returncode:
                    raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr}")

            kubectl("apply", "-f", str(CRD))
            core = client.CoreV1Api(cluster.api_client())
            secret: Any = {"metadata": {"name": SECRET}, "stringData": TEST_CREDENTIALS}
            core.create_namespaced_secret("default", secret)
            say(f"Secret {SECRET} created (the worker reads S3 credentials only from it)")
            with operator_process(env, workdir / "operator.log"):
                time.sleep(1.5)
                say(f"kubectl apply -f {EXAMPLE.relative_to(REPO)} (model and endpoint filled in)")
                kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job))
                return _follow_and_fetch(cluster, env, job["metadata"]["name"], workdir, timeout)
    finally:
        s3.stop()


def _follow_and_fetch(cluster: Any, env: dict[str, str], name: str, workdir: Path, timeout: float) -> int:
    from asyncdiff_operator import usercli  # the user CLI, as `asyncdiff submit/fetch` would run it
    from asyncdiff_worker.embedded_s3 import TEST_CREDENTIALS

    kubeconfig = ["--kubeconfig", str(cluster.kubeconfig)]
    api = usercli._api(str(cluster.kubeconfig))
    started = time.monotonic()
    code = usercli.follow(api, "default", name, timeout=timeout, out=sys.stdout)
    say(f"{name} finished in {time.monotonic() - started:.1f} s (exit {code})")
    if code != 0:
        say(f"operator log: {workdir / 'operator.log'}")
        return code
    for key, value in TEST_CREDENTIALS.items():  # the CLI reads S3 as the user, with the user's credentials
        os.environ.setdefault(key, value)
    dest = workdir / "cluster-outputs"
    say(f"asyncdiff fetch {name} {dest}")
    return usercli.main(["fetch", name, str(dest), *kubeconfig])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asyncdiff_devcluster.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".demo"))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run(args.workdir.resolve(), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
