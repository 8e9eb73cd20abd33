"""Every per-family example script runs under torchrun on a tiny local model and saves its output on rank 0.

The two original cases use the real-layout tiny models (stride 2 and time shift for the video one); the others use
the minimal layout, N=2 S=1, to keep the suite's cost down while still running each script's own inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


_MINIMAL = ["--layout", "minimal", "--model-n", "2", "--stride", "1", "--warm-up", "1"]
CASES = [
    ("sd15.py", 2, ["--model-n", "2", "--stride", "1", "--warm-up", "1"], ".png"),
    ("animatediff.py", 3, ["--model-n", "2", "--stride", "2", "--warm-up", "1", "--time-shift"], ".gif"),
    ("sd21.py", 2, _MINIMAL, ".png"),
    ("sdxl.py", 2, _MINIMAL, ".png"),
    ("sdxl_inpaint.py", 2, _MINIMAL, ".png"),
    ("sdxl_controlnet.py", 2, _MINIMAL, ".png"),
    ("sd3.py", 2, _MINIMAL, ".png"),
    ("sd_upscaler.py", 2, _MINIMAL, ".png"),
    ("svd.py", 2, _MINIMAL, ".gif"),
]


def test_every_example_script_has_a_case() -> None:
    scripts = {p.name for p in (REPO / "examples").glob("*.py") if not p.name.startswith("_")}
    assert scripts == {script for script, *_ in CASES}


@pytest.mark.slow
@pytest.mark.parametrize(("script", "nproc", "extra", "suffix"), CASES, ids=[c[0] for c in CASES])
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
