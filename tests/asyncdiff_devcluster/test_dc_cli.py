"""``asyncdiff dev-cluster up --detach / status / down`` through the real ``asyncdiff`` dispatcher."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from asyncdiff_devcluster.testing import PACKAGE_ROOT


def _asyncdiff(*args: str, home: Path, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH", "")]))
    env["ASYNCDIFF_DEVCLUSTER_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "asyncdiff_cli.main", "dev-cluster", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_detach_kubectl_down(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = _asyncdiff("up", "--detach", "--gpus", "1", home=home)
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = Path(up.stdout.strip())
        assert kubeconfig == home / "kubeconfig" and kubeconfig.exists()
        assert (home / "pid").exists() and (home / "state.json").exists()
        status = _asyncdiff("status", home=home)
        assert status.returncode == 0 and "running on http://127.0.0.1:" in status.stdout
        again = _asyncdiff("up", "--detach", home=home)
        assert again.returncode == 0 and again.stdout.strip() == str(kubeconfig)
        kubectl = Path(sys.executable).parent / "kubectl"
        binary = str(kubectl) if kubectl.exists() else shutil.which("kubectl")
        if binary is None:
            pytest.skip("kubectl not installed")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(tmp_path / "cache")}
        pods = subprocess.run([binary, "get", "pods"], env=env, capture_output=True, text=True, timeout=30)
        assert pods.returncode == 0 and "No resources found in default namespace." in pods.stderr
        gpus = subprocess.run(
            [binary, "get", "node", "-o", "jsonpath={.items[0].status.allocatable.nvidia\\.com/gpu}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert gpus.stdout == "1"
    finally:
        down = _asyncdiff("down", home=home)
    assert down.returncode == 0 and "stopped" in down.stderr
    assert not (home / "pid").exists()
    assert _asyncdiff("status", home=home).returncode == 3
