"""The per-family example scripts run under torchrun on a tiny local model and save their output on rank 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "nproc", "extra", "suffix"),
    [
        ("sd15.py", 2, ["--model-n", "2", "--stride", "1", "--warm-up", "1"], ".png"),
        ("animatediff.py", 3, ["--model-n", "2", "--stride", "2", "--warm-up", "1", "--time-shift"], ".gif"),
    ],
)
def test_example_runs_under_torchrun(tmp_path: Path, script: str, nproc: int, extra: list[str], suffix: str) -> None:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
        str(REPO / "examples" / script), "--tiny", "--steps", "3", "--runs", "1", "--out", str(tmp_path), *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = list(tmp_path.rglob(f"*{suffix}"))
    assert saved, f"no {suffix} saved; output:\n{proc.stdout[-2000:]}"
    assert "latency" in proc.stdout.lower() or "s per" in proc.stdout.lower()
    assert "component 0" in proc.stdout  # the printed split plan
