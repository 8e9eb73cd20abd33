"""A relative state dir is made absolute: pod processes run in their own folders, so the volume paths handed to them
(configMap files, termination logs) must not be relative (`make demo` once failed this way)."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncdiff_devcluster.cluster import DevCluster, DevClusterConfig


def test_relative_state_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cluster = DevCluster(DevClusterConfig(state_dir=Path("relative-state")))
    assert cluster.state_dir.is_absolute()
    assert cluster.state_dir == tmp_path / "relative-state"
    assert cluster.kubeconfig.is_absolute()
