"""Start the torchrun processes of one job and exit with the root cause's exit code.

Why a launcher around torchrun: torchrun exits 1 whenever a rank fails, which would erase the difference between
"bad spec" (do not retry) and "a rank died" (retry). Here each rank records its failure in a private folder
(``$ASYNCDIFF_EXIT_DIR``); when torchrun ends, the earliest failure that is not a consequence of another rank's
(PeerFailed, Interrupted) is the job's exit code and termination message. The launcher also validates the spec
and runs the cheap preflight checks first, so user errors cost no torchrun start.

Container command: ``python -m asyncdiff_worker.launch --spec /etc/asyncdiff/job.yaml``. Multi-node settings come
from torchrun's own ``PET_*`` environment (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import asyncdiff_worker
from asyncdiff_worker.errors import SpecError, WorkerError, classify
from asyncdiff_worker.exit_codes import (
    EXIT_DIR_ENV,
    ExitCode,
    Failure,
    read_exit_records,
    root_cause,
    write_termination_log,
)
from asyncdiff_worker.keys import JobLayout, job_identity
from asyncdiff_worker.planner import resolve_layout
from asyncdiff_worker.preflight import preflight
from asyncdiff_worker.progress import parse_event
from asyncdiff_worker.spec import AsyncDiffJob, JobSpec, load_job_file
from asyncdiff_worker.storage import Storage


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def source_root() -> Path:
    """The folder holding the ``asyncdiff_worker`` package (for the children's PYTHONPATH)."""
    return Path(asyncdiff_worker.__file__).resolve().parent.parent


def torchrun_command(spec_path: Path, nproc: int, *, master_port: int | None, job_name: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if master_port is not None:
        cmd += ["--master_addr=127.0.0.1", f"--master_port={master_port}"]
    cmd += ["-m", "asyncdiff_worker.entrypoint", "--spec", str(spec_path)]
    if job_name:
        cmd += ["--job-name", job_name]
    return cmd


def child_env(exit_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    root = str(source_root())
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    env[EXIT_DIR_ENV] = str(exit_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    if extra:
        env.update(extra)
    return env


@dataclass
class LaunchResult:
    """How a torchrun run ended."""

    code: int
    failure: Failure | None
    torchrun_code: int
    seconds: float
    first_step_seconds: float | None = None
    """Launch to the first denoising step reported by rank 0."""
    last_done: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    """SIGINT or SIGTERM reached the launcher (Ctrl-C, eviction); the workers were stopped."""


def run_torchrun(
    spec_path: Path,
    nproc: int,
    *,
    job_name: str | None = None,
    master_port: int | None = None,
    on_line: Callable[[str, dict[str, Any] | None], None] | None = None,
    env: dict[str, str] | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    stop: threading.Event | None = None,
) -> LaunchResult:
    """Run torchrun to completion. With ``on_line`` the children's stdout is read line by line (and passed on to
    ``on_line`` with its parsed progress event, if any) and their stderr is passed through by a thread, except
    after an interrupt (Ctrl-C: the user asked to stop, the torch tracebacks that follow are noise); without
    ``on_line`` both go straight to this process's (a pod's log keeps everything). ``on_start`` gets the torchrun
    process (its own process group) as soon as it exists, so a caller running several groups from threads can stop
    them all; ``stop`` is that caller's interrupt flag (only the main thread receives signals), set before it stops
    them."""
    start = time.monotonic()
    result = LaunchResult(0, None, 0, 0.0)
    with tempfile.TemporaryDirectory(prefix="asyncdiff-exit-") as tmp:
        exit_dir = Path(tmp)
        cmd = torchrun_command(spec_path, nproc, master_port=master_port, job_name=job_name)
        proc = subprocess.Popen(
            cmd,
            env=child_env(exit_dir, env),
            stdout=subprocess.PIPE if on_line else None,
            stderr=subprocess.PIPE if on_line else None,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        if on_start is not None:
            on_start(proc)
        interrupted = stop if stop is not None else threading.Event()
        relay = None
        if on_line is not None and proc.stderr is not None:
            relay = threading.Thread(target=_relay_stderr, args=(proc.stderr, interrupted), daemon=True)
            relay.start()

        def forward(signum: int, _frame: FrameType | None) -> None:
            interrupted.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, forward)
        try:
            if on_line is not None and proc.stdout is not None:
                for line in proc.stdout:
                    event = parse_event(line)
                    if event is not None:
                        result.events.append(event)
                        if event.get("asyncdiff") == "progress" and result.first_step_seconds is None:
                            result.first_step_seconds = time.monotonic() - start
                        if event.get("asyncdiff") == "done":
                            result.last_done = event
                    if event is not None or not interrupted.is_set():
                        on_line(line.rstrip("\n"), event)
            try:
                rc = proc.wait()
            except KeyboardInterrupt:
                forward(signal.SIGINT, None)
                rc = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if relay is not None:
                relay.join(timeout=5)
        # torchrun's children may still be finishing their exit records
        failures = read_exit_records(exit_dir)
        result.torchrun_code = rc
        result.seconds = time.monotonic() - start
        if interrupted.is_set():
            result.interrupted = True
            result.failure = Failure(int(ExitCode.INTERRUPTED), "interrupted by a signal", None, time.time())
        elif rc == 0 and not failures:
            result.code = 0
            return result
        else:
            result.failure = root_cause(failures) or Failure(
                int(ExitCode.PEER_FAILED),
                f"a worker process died without reporting a reason (torchrun exit {rc}): killed by the kernel "
                "(out of host memory?) or by a signal",
                None,
                time.time(),
            )
        result.code = result.failure.code
        return result


def _relay_stderr(stream: IO[str], interrupted: threading.Event) -> None:
    for line in stream:
        if not interrupted.is_set():
            sys.stderr.write(line)
            sys.stderr.flush()


def validate(spec_path: Path, *, spec_model: type[JobSpec] = JobSpec) -> AsyncDiffJob:
    job = load_job_file(spec_path, spec_model=spec_model)
    if isinstance(job, list):
        raise SpecError(job)
    return job


def check_before_launch(job: AsyncDiffJob, spec_path: Path, job_name: str | None) -> None:
    """The preflight checks, in the parent: output store, format support, prompts, input images, model source."""
    spec = job.spec
    identity = job_identity(job, spec_path, job_name)
    storage = Storage.for_output(spec.output)
    preflight(spec, storage, JobLayout.for_job(spec.output.uri, identity))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m asyncdiff_worker.launch",
        description="Run an AsyncDiffJob's torchrun processes on this node; exit with the root cause's code.",
    )
    parser.add_argument("--spec", default=os.environ.get("ASYNCDIFF_SPEC"), help="job YAML (or $ASYNCDIFF_SPEC)")
    parser.add_argument("--nproc", type=int, default=None, help="processes on this node (default modelN+stride-1)")
    parser.add_argument("--job-name", default=None)
    parser.add_argument("--no-preflight", action="store_true", help="skip the checks before starting torchrun")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else int(ExitCode.INVALID_SPEC)
    try:
        if not args.spec:
            raise SpecError(["job: no spec file: pass --spec or set ASYNCDIFF_SPEC"])
        spec_path = Path(args.spec)
        job = validate(spec_path)
        if not args.no_preflight:
            check_before_launch(job, spec_path, args.job_name)
    except WorkerError as exc:
        failure = classify(exc, ts=time.time())
        for message in exc.messages if isinstance(exc, SpecError) else [failure.line()]:
            print(f"asyncdiff: {message}", file=sys.stderr)
        write_termination_log(failure, overwrite=True)
        return failure.code
    multi_node = any(k in os.environ for k in ("PET_NNODES", "PET_MASTER_ADDR", "MASTER_ADDR"))
    per_group = resolve_layout(job.spec)[0].devices_per_group  # validated above, so the plan exists
    nproc = args.nproc or int(os.environ.get("PET_NPROC_PER_NODE", "0") or 0) or per_group
    result = run_torchrun(
        spec_path,
        nproc,
        job_name=args.job_name,
        master_port=None if multi_node else free_port(),
    )
    if result.failure is not None:
        print(f"asyncdiff: {result.failure.line()}", file=sys.stderr)
        write_termination_log(result.failure, overwrite=True)
    return result.code


if __name__ == "__main__":
    raise SystemExit(main())
