"""Make the operator and dev-cluster packages importable from the source tree when the project is not installed, and
provide the end-to-end fixtures: one local control plane plus one real operator process per test module.

Why per module: starting the control plane, applying the CRD and starting kopf costs a few seconds on 2 cores; the
e2e tests share them and use distinct job names. The jobs' namespace enforces the ``restricted`` Pod Security
Standard (``RESTRICTED_LABELS``). Worker pods mount emptyDirs at ``/tmp`` and the cache, and the process kubelet maps
mount paths in env values to the pod's folders (as a container would see them), so a host path handed to a worker
through env must lie outside ``/tmp``. ``OperatorProcess.restart`` kills the operator (SIGKILL, no clean
shutdown) and starts a new one, for the restart tests.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker.launch import free_port

_spec = importlib.util.find_spec("asyncdiff_devcluster")
if _spec is None or _spec.origin in (None, "namespace"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

REPO = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.executable).parent / "kubectl")
CRD = REPO / "crds" / "asyncdiff.io_asyncdiffjobs.yaml"
E2E_NAMESPACE = "default"
RESTRICTED_LABELS = (
    "pod-security.kubernetes.io/enforce=restricted",
    "pod-security.kubernetes.io/enforce-version=latest",
    "pod-security.kubernetes.io/warn=restricted",
)
"""The e2e jobs run where platform teams run workloads: a namespace enforcing the restricted Pod Security Standard
(the local control plane enforces it as Kubernetes does), so every worker pod the operator makes must pass it."""


def _alive(url: str) -> bool:
    """kopf's liveness endpoint answers 200 (the operator runs its event loop and has started its handlers)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as rsp:
            return bool(rsp.status == 200)
    except OSError:
        return False


class OperatorProcess:
    """The real ``asyncdiff-operator`` as a child process, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asyncdiff_operator.main", "--log-format", "plain"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        url = self.env.get("ASYNCDIFF_LIVENESS")
        if not url:
            time.sleep(1.5)  # no endpoint to ask: give kopf time to resolve the CRD and start its watches
            return
        deadline = time.monotonic() + 120  # a safety net only: the wait ends when kopf answers
        while not _alive(url):
            if self.proc.poll() is not None:
                raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the operator's liveness endpoint {url} never answered:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop(signal.SIGKILL)
        self.start()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]


class E2E:
    """What a test needs: kubectl, the clients, the operator, and small waiting helpers."""

    def __init__(self, cluster: Any, env: dict[str, str], operator: OperatorProcess, root: Path) -> None:
        from kubernetes import client

        self.cluster = cluster
        self.env = env
        self.operator = operator
        self.root = root
        api = cluster.api_client()
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60, check: bool = True) -> str:
        result = subprocess.run(
            [KUBECTL, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert result.returncode == 0, f"kubectl {args}: {result.stdout}{result.stderr}"
        return result.stdout + result.stderr

    def get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", name
        )
        return obj

    def gone(self, name: str) -> bool:
        """True when the AsyncDiffJob does not exist (404)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.get(name)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def wait(self, what: Callable[[], Any], timeout: float, message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s: {message}\n{self.operator.log_tail()}")
            time.sleep(0.1)

    def wait_phase(self, name: str, phase: str, timeout: float) -> dict[str, Any]:
        status: dict[str, Any] = self.wait(
            lambda: (s := self.status(name)).get("phase") == phase and s,
            timeout,
            f"{name} -> {phase}; last status {json.dumps(self.status(name))[:2000]}",
        )
        return status

    def jobs(self, name: str) -> list[str]:
        items = self.batch.list_namespaced_job("default", label_selector=f"asyncdiff.io/job={name}").items
        return sorted(j.metadata.name for j in items)

    def pods(self, name: str) -> list[Any]:
        items: list[Any] = self.core.list_namespaced_pod("default", label_selector=f"asyncdiff.io/job={name}").items
        return items


def job_manifest(name: str, source: str, out: Path, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"family": "sd15", "source": source, "dtype": "float32"},
        "parallelism": {"modelN": 2, "stride": 1, "warmUp": 1},
        "generation": {"prompts": ["a red cube"], "steps": 2, "height": 32, "width": 32},
        "output": {"uri": out.as_uri()},
        "runPolicy": {"backoffLimit": 2},
    }
    body.update(spec)
    return {
        "apiVersion": "asyncdiff.io/v1alpha1",
        "kind": "AsyncDiffJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline

    model = tmp_path_factory.mktemp("model") / "tiny-sd15"
    build_tiny_pipeline("sd15", model)
    return model


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    from asyncdiff_devcluster.testing import running_dev_cluster

    root = tmp_path_factory.mktemp("e2e")
    with running_dev_cluster(root / "cluster", gpus=4, job_backoff_base=0.0, restart_backoff=0.1) as cluster:
        env = cluster.env(
            KUBECACHEDIR=str(root / "kcache"),
            ASYNCDIFF_RECONCILE_INTERVAL="0.5",
            ASYNCDIFF_PROGRESS_INTERVAL="2",  # one log tail per running job every 2 s (default 10)
            ASYNCDIFF_METRICS_PORT=str(free_port()),
            ASYNCDIFF_LIVENESS=f"http://127.0.0.1:{free_port()}/healthz",
        )
        operator = OperatorProcess(env, root / "operator.log")
        harness = E2E(cluster, env, operator, root)
        harness.kubectl("label", "--overwrite", "namespace", E2E_NAMESPACE, *RESTRICTED_LABELS)
        harness.kubectl("apply", "-f", str(CRD))
        operator.start()
        try:
            yield harness
        finally:
            operator.stop()
            print(operator.log_tail(3000))
