"""The generation loop of one rank: load the pipeline, wrap it with AsyncDiff, produce every output, and on rank 0
encode, upload and finally write the manifest.

Why separate from the entry point: this is the only worker module that imports torch, diffusers and the AsyncDiff
library, so everything before it (spec, inputs, storage checks) runs and fails fast without paying for them.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from asyncdiff import AsyncDiff
from asyncdiff.errors import AsyncDiffError
from asyncdiff.loading import load_pipeline
from PIL import Image

from asyncdiff_worker.calls import OutputItem, call_kwargs, is_video, output_format, uses_img2img
from asyncdiff_worker.encode import CONTENT_TYPES, encode_image, encode_video
from asyncdiff_worker.errors import ModelCorrupt, WorkerError
from asyncdiff_worker.keys import JobIdentity, JobLayout
from asyncdiff_worker.manifest import (
    JobInfo,
    OutputRecord,
    ResultManifest,
    Runtime,
    Timings,
    software_versions,
    write_manifest,
)
from asyncdiff_worker.preflight import Prepared
from asyncdiff_worker.progress import ProgressReporter
from asyncdiff_worker.spec.models import JobSpec
from asyncdiff_worker.storage import PutResult, Storage
from asyncdiff_worker.uploader import Uploader

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class RunContext:
    spec: JobSpec
    identity: JobIdentity
    layout: JobLayout
    storage: Storage
    prepared: Prepared
    model_dir: Path
    controlnet_dir: Path | None
    motion_adapter_dir: Path | None
    reporter: ProgressReporter
    rank: int
    process_start: float
    model_start: float


def _dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.float16 if torch.cuda.is_available() else torch.float32
    return DTYPES[name]


def quiet_libraries() -> None:
    """No loading progress bars or advisory warnings from diffusers/transformers in the job's logs."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()


def load(ctx: RunContext) -> Any:
    """Load the pipeline; any failure that is not a user or memory error means the model folder is corrupt."""
    spec = ctx.spec
    quiet_libraries()
    try:
        return load_pipeline(
            spec.model.family,
            ctx.model_dir,
            dtype=_dtype(spec.model.dtype),
            img2img=uses_img2img(spec),
            controlnet=str(ctx.controlnet_dir) if ctx.controlnet_dir else None,
            motion_adapter=str(ctx.motion_adapter_dir) if ctx.motion_adapter_dir else None,
        )
    except (WorkerError, AsyncDiffError, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
        raise ModelCorrupt(
            f"spec.model.source: {spec.model.source}: cannot load the {spec.model.family} pipeline "
            f"({type(exc).__name__}: {first})"
        ) from exc


def _step_callback_kwargs(pipe: Any, on_step: Any) -> dict[str, Any]:
    """Progress hooks for the pipeline's call: ``callback_on_step_end`` where it exists, else the old ``callback``."""
    params = inspect.signature(type(pipe).__call__).parameters
    if "callback_on_step_end" in params:

        def on_step_end(pipe_: Any, i: int, _t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            total = getattr(pipe_, "_num_timesteps", None)
            on_step(i + 1, total if isinstance(total, int) else None)
            return callback_kwargs

        return {"callback_on_step_end": on_step_end}
    if "callback" in params:
        return {"callback": lambda i, _t, _latents: on_step(i + 1, None), "callback_steps": 1}
    return {}


def _frames(result: Any) -> list[Image.Image]:
    frames = result.frames[0]
    return list(frames)


def run(ctx: RunContext) -> ResultManifest | None:
    """Generate every output. Returns the manifest on rank 0 (after writing it), None on other ranks."""
    spec, reporter, rank = ctx.spec, ctx.reporter, ctx.rank
    reporter.phase("loading")
    pipe = load(ctx)
    first_step: list[float] = []

    def on_step(step: int, total: int | None) -> None:
        if not first_step:
            first_step.append(time.time())
        reporter.step(step, total)

    hooks = _step_callback_kwargs(pipe, on_step)  # before AsyncDiff swaps the pipeline's class
    ad = AsyncDiff(
        pipe,
        model_n=spec.parallelism.model_n,
        stride=spec.parallelism.stride,
        warm_up=spec.parallelism.warm_up,
        time_shift=spec.parallelism.time_shift,
    )
    model_seconds = time.time() - ctx.model_start
    fmt = output_format(spec)
    video = is_video(spec)
    uploader = Uploader(ctx.storage) if rank == 0 else None
    records: dict[int, OutputRecord] = {}
    gen_seconds = 0.0
    reporter.phase("generating")
    try:
        for item in ctx.prepared.outputs:
            reporter.begin_output(item.index)
            kwargs = call_kwargs(spec, item, ctx.prepared.images)
            generator = torch.Generator("cpu").manual_seed(item.seed)
            t0 = time.perf_counter()
            result = pipe(**kwargs, **hooks, generator=generator)
            seconds = time.perf_counter() - t0
            gen_seconds += seconds
            if uploader is not None:
                _store(ctx, uploader, records, item, result, fmt, video, seconds)
        wait_start = time.perf_counter()
        reporter.phase("uploading")
        if uploader is not None:
            uploader.wait()
        upload_wait = time.perf_counter() - wait_start
    finally:
        if uploader is not None:
            uploader.close()
    if rank != 0:
        return None

    reporter.phase("finalizing")
    _remove_stale_outputs(ctx, {r.uri for r in records.values()})
    plan = getattr(ad, "plan", None)
    now = time.time()
    n = max(1, len(records))
    manifest = ResultManifest(
        job=JobInfo(
            name=ctx.identity.name,
            uid=ctx.identity.uid,
            namespace=ctx.identity.namespace,
            attempt=ctx.identity.attempt,
        ),
        outputs=[records[i] for i in sorted(records)],
        configuration=spec,
        versions=software_versions(),
        plan=plan.to_dict() if plan is not None else None,
        plan_description=plan.describe() if plan is not None else None,
        stats=_jsonable(ad.stats()),
        runtime=Runtime(
            world_size=spec.devices, device=str(getattr(ad, "device", "cpu")), backend=getattr(ad, "backend", None)
        ),
        timings=Timings(
            started_at=_iso(ctx.process_start),
            finished_at=_iso(now),
            startup_seconds=round((first_step[0] if first_step else now) - ctx.process_start, 3),
            model_seconds=round(model_seconds, 3),
            generate_seconds=round(gen_seconds, 3),
            upload_wait_seconds=round(upload_wait, 3),
            total_seconds=round(now - ctx.process_start, 3),
            seconds_per_output=round(gen_seconds / n, 4),
        ),
    )
    write_manifest(ctx.storage, ctx.layout.manifest, manifest)
    return manifest


def _store(
    ctx: RunContext,
    uploader: Uploader,
    records: dict[int, OutputRecord],
    item: OutputItem,
    result: Any,
    fmt: str,
    video: bool,
    seconds: float,
) -> None:
    spec = ctx.spec
    frames: int | None = None
    if video:
        images = _frames(result)
        data = encode_video(images, fmt, spec.generation.fps, spec.output.quality)
        width, height = images[0].size
        frames = len(images)
    else:
        image = result.images[0]
        data = encode_image(image, fmt, spec.output.quality)
        width, height = image.size
    location = ctx.layout.output(item.index, item.prompt_index, fmt)
    metadata = {
        "job-name": ctx.identity.name,
        "job-uid": ctx.identity.uid,
        "output-index": str(item.index),
        "prompt-index": str(item.prompt_index),
        "image-index": str(item.image_index),
        "seed": str(item.seed),
    }

    def done(put: PutResult) -> None:
        record = OutputRecord(
            index=item.index,
            uri=put.uri,
            sha256=put.sha256,
            bytes=put.bytes,
            seconds=round(seconds, 4),
            upload_seconds=round(put.seconds, 4),
            prompt_index=item.prompt_index,
            image_index=item.image_index,
            seed=item.seed,
            prompt=item.prompt,
            content_type=CONTENT_TYPES[fmt],
            format=fmt,
            width=width,
            height=height,
            frames=frames,
        )
        records[item.index] = record
        ctx.reporter.output_done(record.model_dump(mode="json", by_alias=True, exclude={"prompt"}))

    uploader.submit(location, data, content_type=CONTENT_TYPES[fmt], metadata=metadata, on_done=done)


def _remove_stale_outputs(ctx: RunContext, keep: set[str]) -> None:
    """Delete outputs of an earlier attempt with a different spec (same job name) that this run did not write."""
    for obj in ctx.storage.list(ctx.layout.outputs):
        if obj.uri not in keep:
            ctx.storage.delete(obj.uri)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
