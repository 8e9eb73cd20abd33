"""``asyncdiff run JOB.yaml [--nproc N]``: run an AsyncDiffJob manifest on this machine, without a cluster.

Why: the same YAML a user gives ``kubectl apply`` should run locally, for trying a job out and for the demo. It
validates the manifest (every wrong field at once), runs the preflight checks, starts torchrun with
modelN + stride - 1 processes (gloo on CPU, NCCL on local GPUs), shows progress (a bar on a terminal, one line per
output otherwise) and prints the output URIs from the result manifest. The exit code is the worker's.

Replicas: ``spec.parallelism.replicas`` groups (clamped to the shards) run at once, each its own torchrun, and take
shards from a claim folder they share, so a fast group does more of them; with local GPUs each group gets its own
slice of ``CUDA_VISIBLE_DEVICES`` when there are enough. Every invocation is a new run (``ASYNCDIFF_RUN_ID``):
outputs already stored for the same pixels are reused, not rendered again. If a group fails the others finish their
shards (so a rerun has less to do) and the first failure is the exit code.

The manifest is validated as the cluster validates it: strictly, camelCase names only, the CRD's cross-field rules,
and ``runPolicy``/``pod`` with the operator's spec model when the operator package is installed (it is plain
pydantic; the worker never imports kopf). Ctrl-C stops the workers and ends with one line and exit code 24
(Interrupted), without the children's tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from asyncdiff_worker.errors import SpecError, WorkerError, classify
from asyncdiff_worker.exit_codes import ExitCode, Failure
from asyncdiff_worker.keys import JobLayout, job_identity
from asyncdiff_worker.launch import LaunchResult, check_before_launch, free_port, run_torchrun, validate
from asyncdiff_worker.manifest import ResultManifest, read_manifest
from asyncdiff_worker.planner import resolve_layout
from asyncdiff_worker.progress import render_bar
from asyncdiff_worker.shards import plan_shards
from asyncdiff_worker.spec import JobSpec
from asyncdiff_worker.storage import Storage


class _Display:
    """Turns the workers' stdout into what a person wants to see."""

    def __init__(self, out: TextIO, *, json_lines: bool, quiet: bool) -> None:
        self.out = out
        self.tty = out.isatty() and not json_lines
        self.json_lines = json_lines
        self.quiet = quiet
        self._bar_open = False

    def __call__(self, line: str, event: dict[str, Any] | None, group: int | None = None) -> None:
        tag = f"[group {group}] " if group is not None else ""
        if event is None:
            if not self.quiet:
                self._end_bar()
                print(tag + line, file=sys.stderr, flush=True)
            return
        if self.json_lines:
            print(line if group is None else line.rstrip("}") + f',"group":{group}}}', file=self.out, flush=True)
            return
        kind = event.get("asyncdiff")
        if self.tty:
            if kind in ("progress", "output", "phase", "heartbeat", "done"):
                self.out.write("\r" + render_bar(event) + "   ")
                self.out.flush()
                self._bar_open = True
            return
        if kind == "output" and not self.quiet:
            record = event.get("record", {})
            print(
                f"  {tag}[{event.get('outputsDone')}/{event.get('outputsTotal')}] {record.get('uri')} "
                f"({record.get('bytes')} bytes, {record.get('seconds')} s)",
                file=self.out,
                flush=True,
            )
        elif kind == "phase" and not self.quiet:
            print(f"  {tag}{event.get('phase')}...", file=self.out, flush=True)
        elif kind == "reused" and event.get("count") and not self.quiet:
            print(
                f"  {tag}shard {event.get('shard')}: {event.get('count')} output(s) already stored, reused",
                file=self.out,
                flush=True,
            )

    def _end_bar(self) -> None:
        if self._bar_open:
            self.out.write("\n")
            self._bar_open = False

    def finish(self) -> None:
        self._end_bar()


def manifest_spec_model() -> type[JobSpec]:
    """The CRD's spec model: the operator's ``AsyncDiffJobSpec`` (adds ``runPolicy`` and ``pod``) when installed,
    else the worker's ``JobSpec`` (which ignores those two fields)."""
    try:
        from asyncdiff_operator.api import AsyncDiffJobSpec
    except ImportError:
        return JobSpec
    model: type[JobSpec] = AsyncDiffJobSpec
    return model


INTERRUPTED_LINE = "asyncdiff run: interrupted (Ctrl-C): the workers were stopped, outputs so far are kept"


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asyncdiff run", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("job", help="AsyncDiffJob manifest (YAML) or a bare spec")
    parser.add_argument("--nproc", type=int, default=None, help="processes; must equal modelN + stride - 1")
    parser.add_argument("--job-name", default=None, help="overrides metadata.name (the output folder)")
    parser.add_argument("--json", action="store_true", help="print the workers' JSON progress lines as they are")
    parser.add_argument("--quiet", action="store_true", help="no progress; only the result")
    return parser.parse_args(argv)


def _gpu_slices(groups: int, per_group: int) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` for each group when the machine has enough GPUs for all of them, else None."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
    elif shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        ids = [str(i) for i, line in enumerate(listed.splitlines()) if line.startswith("GPU ")]
    else:
        return None
    if len(ids) < groups * per_group:
        return None
    return [",".join(ids[g * per_group : (g + 1) * per_group]) for g in range(groups)]


def _run_groups(
    job_path: Path, groups: int, per_group: int, job_name: str, display: _Display
) -> tuple[LaunchResult, bool]:
    """Run ``groups`` torchrun groups at once (threads); returns the first failed result (or the last one) and
    whether a signal stopped them."""
    run_id = uuid.uuid4().hex
    procs: list[subprocess.Popen[str]] = []
    results: list[LaunchResult | None] = [None] * groups
    lock = threading.Lock()
    gpus = _gpu_slices(groups, per_group) if groups > 1 else None
    stop = threading.Event()  # set on Ctrl-C: the groups' launchers then drop the workers' dying words
    with tempfile.TemporaryDirectory(prefix="asyncdiff-shards-") as queue:

        def one(g: int) -> None:
            env = {"ASYNCDIFF_RUN_ID": run_id}
            if groups > 1:
                env.update(ASYNCDIFF_SHARD_QUEUE=queue, ASYNCDIFF_GROUP=str(g), ASYNCDIFF_GROUPS=str(groups))
            if gpus is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpus[g]

            def started(proc: subprocess.Popen[str]) -> None:
                with lock:
                    procs.append(proc)

            def line(text: str, event: dict[str, Any] | None) -> None:
                with lock:
                    display(text, event, group=g if groups > 1 else None)

            try:
                results[g] = run_torchrun(
                    job_path,
                    per_group,
                    job_name=job_name,
                    master_port=free_port(),
                    on_line=line,
                    env=env,
                    on_start=started,
                    stop=stop,
                )
            except Exception as exc:  # a group that could not even report: its failure, not a thread traceback
                failure = Failure(1, f"group {g}: {type(exc).__name__}: {exc}", None, time.time())
                results[g] = LaunchResult(1, failure, 1, 0.0)

        threads = [threading.Thread(target=one, args=(g,), name=f"asyncdiff-group-{g}") for g in range(groups)]
        interrupted = False
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.5)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            with lock:
                for proc in procs:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
            for thread in threads:
                thread.join()
    done = [r for r in results if r is not None]
    if not done:  # stopped before any group reported
        code = int(ExitCode.INTERRUPTED) if interrupted else 1
        return LaunchResult(code, Failure(code, "stopped before the workers reported", None, time.time()), code, 0.0), (
            interrupted
        )
    failed = sorted((r for r in done if r.failure is not None), key=lambda r: r.failure.ts if r.failure else 0.0)
    return (failed[0] if failed else done[-1]), interrupted


def run_job(
    job_path: Path,
    *,
    nproc: int | None = None,
    job_name: str | None = None,
    out: TextIO | None = None,
    json_lines: bool = False,
    quiet: bool = False,
) -> tuple[int, ResultManifest | None, LaunchResult | None]:
    """Validate, check, launch and report one job. Returns (exit code, manifest, launch result)."""
    stream = out or sys.stdout
    try:
        job = validate(job_path, spec_model=manifest_spec_model())
        spec, layout_plan = resolve_layout(job.spec)
        shard_plan = plan_shards(spec)
        if nproc is not None and nproc != spec.devices_per_group:
            raise SpecError([f"--nproc {nproc}: the job needs {spec.parallelism.devices_formula()} processes"])
        identity = job_identity(job, job_path, job_name)
        check_before_launch(job, job_path, job_name)
    except WorkerError as exc:
        failure = classify(exc)
        if isinstance(exc, SpecError):
            print(f"asyncdiff run: {job_path}: invalid job:", file=sys.stderr)
            for message in exc.messages:
                print(f"  {message}", file=sys.stderr)
        print(f"asyncdiff run: {failure.line()}", file=sys.stderr)
        return failure.code, None, None

    layout = JobLayout.for_job(spec.output.uri, identity)
    groups = shard_plan.replicas
    if not quiet and not json_lines:
        print(
            f"asyncdiff run: {identity.name}: {spec.model.family}, {groups} group(s) x {spec.devices_per_group} "
            f"processes (modelN {spec.parallelism.model_n}, stride {spec.parallelism.stride}"
            f"{', cfgParallel' if spec.parallelism.cfg_parallel else ''}), {shard_plan.num_shards} shard(s) -> "
            f"{layout.root.uri}",
            file=stream,
            flush=True,
        )
        if layout_plan is not None:
            print(f"  planned: {layout_plan.reason}", file=stream, flush=True)
        if shard_plan.clamped:
            print(f"  {shard_plan.reason}", file=stream, flush=True)
    display = _Display(stream, json_lines=json_lines, quiet=quiet)
    result, interrupted = _run_groups(job_path.resolve(), groups, spec.devices_per_group, identity.name, display)
    display.finish()
    if interrupted or result.interrupted:
        print(INTERRUPTED_LINE, file=sys.stderr)
        return int(ExitCode.INTERRUPTED), None, result
    if result.failure is not None:
        print(f"asyncdiff run: {result.failure.line()}", file=sys.stderr)
        return result.code, None, result
    storage = Storage.for_output(spec.output)
    try:
        manifest = read_manifest(storage, layout.manifest)
    except Exception as exc:  # the workers said done; a missing manifest is a bug
        print(f"asyncdiff run: the workers finished but the manifest cannot be read: {exc}", file=sys.stderr)
        return int(ExitCode.UNEXPECTED), None, result
    if not json_lines:
        print(f"outputs ({len(manifest.outputs)}):", file=stream)
        for record in manifest.outputs:
            print(f"  {record.uri}", file=stream)
        print(f"manifest: {layout.manifest.uri}", file=stream)
        t = manifest.timings
        print(
            f"done in {result.seconds:.1f} s: {manifest.rendered} rendered, "
            f"{len(manifest.outputs) - (manifest.rendered or 0)} reused; start-up {t.startup_seconds:.1f} s, "
            f"{t.seconds_per_output:.2f} s per output",
            file=stream,
            flush=True,
        )
    return 0, manifest, result


def main(argv: list[str]) -> int:
    try:
        args = _parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else int(ExitCode.INVALID_SPEC)
    try:
        code, _, _ = run_job(
            Path(args.job), nproc=args.nproc, job_name=args.job_name, json_lines=args.json, quiet=args.quiet
        )
    except KeyboardInterrupt:  # before torchrun started (validation, preflight); during it, run_torchrun handles it
        print(INTERRUPTED_LINE, file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
