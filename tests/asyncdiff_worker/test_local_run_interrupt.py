"""Ctrl-C in ``asyncdiff run``: the workers stop, the command ends with one line and exit code 24, no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker.exit_codes import ExitCode
from asyncdiff_worker.local_run import INTERRUPTED_LINE

pytestmark = pytest.mark.slow


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line(tiny_model_dir: Any, tmp_path: Path, write_job: Any) -> None:
    spec = {
        "model": {"family": "sd15", "source": str(tiny_model_dir("sd15")), "dtype": "float32"},
        "generation": {"prompts": ["a"] * 20, "steps": 200, "height": 32, "width": 32},
        "output": {"uri": f"file://{tmp_path / 'out'}"},
    }
    job = write_job(tmp_path / "jobs", spec, "interrupted")
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncdiff_cli.main", "run", str(job), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ASYNCDIFF_PROGRESS_INTERVAL": "0"},
        # a terminal's foreground process has SIGINT at its default; a suite started in the background (`make test &`
        # from a script) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: the run went on to
        # exit 0 in exactly that setting (two suites run side by side)
        preexec_fn=_sigint_default,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait for the proving event: the workers are denoising
            if json.loads(line).get("asyncdiff") == "progress":
                break
        else:
            pytest.fail(f"no progress line; stderr:\n{proc.stderr.read() if proc.stderr else ''}")
        proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground process
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err and "SignalException" not in err, err
    assert err.strip().splitlines()[-1] == INTERRUPTED_LINE, err
    assert sum("asyncdiff run:" in line for line in err.splitlines()) == 1, err
    deadline = time.monotonic() + 60  # safety net: the workers are already stopped when run returns
    while _processes_mentioning(str(job.resolve())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_mentioning(str(job.resolve())), "worker processes outlived asyncdiff run"
