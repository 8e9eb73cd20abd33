"""``asyncdiff run JOB.yaml [--nproc N]``: run an AsyncDiffJob manifest on this machine, without a cluster.

Why: the same YAML a user gives ``kubectl apply`` should run locally, for trying a job out and for the demo. It
validates the manifest (every wrong field at once), runs the preflight checks, starts torchrun with
modelN + stride - 1 processes (gloo on CPU, NCCL on local GPUs), shows progress (a bar on a terminal, one line per
output otherwise) and prints the output URIs from the result manifest. The exit code is the worker's.

The manifest is validated as the cluster validates it: strictly, camelCase names only, the CRD's cross-field rules,
and ``runPolicy``/``pod`` with the operator's spec model when the operator package is installed (it is plain
pydantic; the worker never imports kopf). Ctrl-C stops the workers and ends with one line and exit code 24
(Interrupted), without the children's tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from asyncdiff_worker.errors import SpecError, WorkerError, classify
from asyncdiff_worker.exit_codes import ExitCode
from asyncdiff_worker.keys import JobLayout, job_identity
from asyncdiff_worker.launch import LaunchResult, check_before_launch, free_port, run_torchrun, validate
from asyncdiff_worker.manifest import ResultManifest, read_manifest
from asyncdiff_worker.progress import render_bar
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

    def __call__(self, line: str, event: dict[str, Any] | None) -> None:
        if event is None:
            if not self.quiet:
                self._end_bar()
                print(line, file=sys.stderr, flush=True)
            return
        if self.json_lines:
            print(line, file=self.out, flush=True)
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
                f"  [{event.get('outputsDone')}/{event.get('outputsTotal')}] {record.get('uri')} "
                f"({record.get('bytes')} bytes, {record.get('seconds')} s)",
                file=self.out,
                flush=True,
            )
        elif kind == "phase" and not self.quiet:
            print(f"  {event.get('phase')}...", file=self.out, flush=True)

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
        spec = job.spec
        if nproc is not None and nproc != spec.devices:
            raise SpecError(
                [
                    f"--nproc {nproc}: the job needs modelN + stride - 1 = {spec.parallelism.model_n} + "
                    f"{spec.parallelism.stride} - 1 = {spec.devices} processes"
                ]
            )
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
    if not quiet and not json_lines:
        print(
            f"asyncdiff run: {identity.name}: {spec.model.family}, {spec.devices} processes "
            f"(modelN {spec.parallelism.model_n}, stride {spec.parallelism.stride}) -> {layout.root.uri}",
            file=stream,
            flush=True,
        )
    display = _Display(stream, json_lines=json_lines, quiet=quiet)
    result = run_torchrun(
        job_path.resolve(), spec.devices, job_name=identity.name, master_port=free_port(), on_line=display
    )
    display.finish()
    if result.interrupted:
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
            f"done in {result.seconds:.1f} s: start-up {t.startup_seconds:.1f} s, "
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
