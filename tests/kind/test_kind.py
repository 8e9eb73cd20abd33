"""Runs tests/kind/run.sh (kind + Docker + Helm end to end) where Docker, kind, kubectl and helm are available.

Why a wrapper: ``make test`` on a Docker host (and .github/workflows/kind.yml) runs the kind suite like any other
test; everywhere else it is skipped with the reason, never reported as passed. The script itself is the source of
truth: it builds the images, installs MinIO and the chart, runs a tiny CPU job and checks its objects in MinIO.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.kind, pytest.mark.slow]


def missing_prerequisite() -> str | None:
    """Why the kind suite cannot run here, or None when it can."""
    for tool in ("docker", "kind", "kubectl", "helm"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (the kind suite needs docker, kind, kubectl and helm)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if info.returncode != 0:
        return f"the Docker daemon does not answer: {(info.stderr or info.stdout).strip()[:200]}"
    return None


@pytest.mark.timeout(3600)  # image builds and a cold kind cluster take longer than the suite's 600 s default
def test_kind_end_to_end() -> None:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(f"kind suite not run: {reason}")
    result = subprocess.run(["bash", str(HERE / "run.sh")], env=dict(os.environ), timeout=3600)
    assert result.returncode == 0, "tests/kind/run.sh failed; diagnostics are in $ARTIFACTS (default out/kind)"
