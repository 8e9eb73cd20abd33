"""``asyncdiff-worker``: what each torchrun process runs for one job.

Why this shape: every rank validates the spec, reads the inputs and resolves the model itself (cheap, and it makes
a worker started by a bare torchrun fail with the right code); only rank 0 checks the output store, reports
progress, uploads and writes the manifest. Any exception becomes a documented exit code, a JSON ``error`` line,
a record for the launcher (``$ASYNCDIFF_EXIT_DIR``) and a one-line termination message. Failing ranks leave with
``os._exit`` so that a half-dead process group cannot hang the exit.

Usage (under torchrun): ``asyncdiff-worker --spec JOB.yaml [--job-name NAME]``; the spec path may also come from
``$ASYNCDIFF_SPEC``. Prefer ``python -m asyncdiff_worker.launch`` as the container command: torchrun alone turns
every failure into exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from asyncdiff_worker.completion import clear_foreign_manifest
from asyncdiff_worker.errors import SpecError, classify
from asyncdiff_worker.exit_codes import ExitCode, Failure, write_exit_record, write_termination_log
from asyncdiff_worker.keys import JobLayout, WorkerSlot, job_identity
from asyncdiff_worker.planner import PlanError, resolve_layout
from asyncdiff_worker.preflight import preflight
from asyncdiff_worker.progress import ProgressReporter
from asyncdiff_worker.shards import plan_shards
from asyncdiff_worker.spec import load_job_file, parse_location
from asyncdiff_worker.storage import Storage
from asyncdiff_worker.storage.model_cache import resolve_model


def process_start_time() -> float:
    """When this process started (epoch seconds), from /proc; falls back to now."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        return time.time() - uptime + start_ticks / ticks
    except (OSError, ValueError, IndexError):
        return time.time()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asyncdiff-worker", description="Run one AsyncDiffJob rank (under torchrun).")
    parser.add_argument("--spec", default=os.environ.get("ASYNCDIFF_SPEC"), help="job YAML (or $ASYNCDIFF_SPEC)")
    parser.add_argument("--job-name", default=None, help="overrides metadata.name / $ASYNCDIFF_JOB_NAME")
    return parser.parse_args(argv)


def run_rank(argv: list[str] | None = None) -> int:
    """Run this rank; returns 0 or raises."""
    started = process_start_time()
    args = _parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not args.spec:
        raise SpecError(["job: no spec file: pass --spec or set ASYNCDIFF_SPEC"])
    job = load_job_file(args.spec)
    if isinstance(job, list):
        raise SpecError(job)
    try:
        spec, _ = resolve_layout(job.spec)  # a planner job run without the operator: plan here, the same way
    except PlanError as exc:
        raise SpecError([str(exc)]) from exc
    if world != spec.devices_per_group:
        raise SpecError(
            [
                f"spec.parallelism: needs {spec.parallelism.devices_formula()} processes, but torchrun started "
                f"{world}: use --nproc_per_node={spec.devices_per_group}"
            ]
        )
    identity = job_identity(job, Path(args.spec), args.job_name)
    try:
        slot = WorkerSlot.from_env(identity)
    except ValueError as exc:
        raise SpecError([str(exc)]) from exc
    layout = JobLayout.for_job(spec.output.uri, identity)
    storage = Storage.for_output(spec.output)
    reporter = ProgressReporter(identity.name, steps=spec.generation.steps, enabled=rank == 0)
    _REPORTER[0] = reporter
    reporter.start(
        uid=identity.uid,
        rank=rank,
        worldSize=world,
        family=spec.model.family,
        devices=spec.devices_per_group,
        root=layout.root.uri,
        shard=slot.shard_index,
        attempt=identity.attempt,
        indexRetry=slot.index_retry,
    )
    reporter.start_heartbeat()
    reporter.phase("preparing")
    prepared = preflight(spec, storage, layout if rank == 0 else None)
    plan = plan_shards(spec)
    shard_total = (
        len(plan.outputs_of(slot.shard_index, len(prepared.outputs)))
        if slot.shard_index is not None and slot.shard_index < plan.num_shards
        else len(prepared.outputs)
    )
    reporter.set_totals(shard_total, spec.generation.steps)
    if rank == 0:  # the manifest is the commit marker: another run's must not outlive this one's start
        clear_foreign_manifest(storage, layout, slot.run_id)

    def resolve_models() -> ModelDirs:
        sources = (spec.model.source, spec.model.controlnet, spec.model.motion_adapter)
        if any(parse_location(s).is_s3 for s in sources if s):
            reporter.phase("downloading")

        def downloaded(done: int, total: int) -> None:
            reporter.emit("download", bytesDone=done, bytesTotal=total)

        model_dir = resolve_model(spec.model.source, storage, on_download=downloaded)
        controlnet = (
            resolve_model(spec.model.controlnet, storage, field="spec.model.controlnet")
            if spec.model.controlnet
            else None
        )
        adapter = (
            resolve_model(spec.model.motion_adapter, storage, field="spec.model.motionAdapter")
            if spec.model.motion_adapter
            else None
        )
        return ModelDirs(model_dir, controlnet, adapter)

    from asyncdiff_worker.runner import ModelDirs, RunContext, run

    manifest = run(
        RunContext(
            spec=spec,
            identity=identity,
            layout=layout,
            storage=storage,
            prepared=prepared,
            resolve_models=resolve_models,
            reporter=reporter,
            rank=rank,
            world=world,
            slot=slot,
            process_start=started,
        )
    )
    if manifest is not None:
        reporter.done(
            manifest=layout.manifest.uri,
            outputs=[o.uri for o in manifest.outputs[:50]],
            secondsPerOutput=manifest.timings.seconds_per_output,
            startupSeconds=manifest.timings.startup_seconds,
            totalSeconds=manifest.timings.total_seconds,
            rendered=manifest.rendered,
        )
    else:
        reporter.done(shard=slot.shard_index)
    _shutdown_process_group()
    return 0


_REPORTER: list[ProgressReporter | None] = [None]


def _shutdown_process_group() -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def report_failure(exc: BaseException, rank: int) -> Failure:
    """Report a failure on every channel (stderr, JSON error line, exit record, termination log)."""
    failure = classify(exc, rank=rank, ts=time.time())
    if failure.code == ExitCode.UNEXPECTED or os.environ.get("ASYNCDIFF_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, SpecError):
        for message in exc.messages:
            print(f"asyncdiff-worker[rank {rank}]: {message}", file=sys.stderr)
    print(f"asyncdiff-worker[rank {rank}]: {failure.line()}", file=sys.stderr, flush=True)
    reporter = _REPORTER[0] or ProgressReporter("job", enabled=rank == 0, heartbeat_seconds=0)
    reporter.enabled = True  # every rank reports its own failure
    reporter.error(
        exitCode=failure.code, reason=failure.reason, retryable=failure.retryable, message=failure.message, rank=rank
    )
    write_exit_record(failure)
    write_termination_log(failure)
    return failure


def main(argv: list[str] | None = None) -> int:
    rank = int(os.environ.get("RANK", "0"))
    try:
        return run_rank(argv)
    except BaseException as exc:  # every failure must become an exit code
        if isinstance(exc, SystemExit):
            if exc.code in (0, None):
                return 0
            exc = SpecError([f"asyncdiff-worker: bad command line (exit {exc.code}); see --help"])
        failure = report_failure(exc, rank)
        sys.stdout.flush()
        sys.stderr.flush()
        if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:
            os._exit(failure.code)
        return failure.code


if __name__ == "__main__":
    raise SystemExit(main())
