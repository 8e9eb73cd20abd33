"""The generation loop of one rank: for each shard of its group, reuse the outputs already stored for the same
pixels, load the pipeline (once, and only if something is left to render), render the rest with AsyncDiff, and on
rank 0 encode, upload, write the shard marker and, if the job's last shard is done, the manifest.

Why separate from the entry point: this is the only worker module that imports torch, diffusers and the AsyncDiff
library, so everything before it (spec, inputs, storage checks) runs and fails fast without paying for them.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from asyncdiff import AsyncDiff
from asyncdiff.comm import DEFAULT_TIMEOUT_S, ensure_process_group
from asyncdiff.errors import AsyncDiffError
from asyncdiff.loading import load_pipeline
from PIL import Image

from asyncdiff_worker.calls import OutputItem, batch_call_kwargs, batches, is_video, output_format, uses_img2img
from asyncdiff_worker.completion import (
    ShardMarker,
    ShardTimings,
    finish_if_complete,
    prune_other_runs,
    run_key,
    write_marker,
)
from asyncdiff_worker.encode import CONTENT_TYPES, encode_image, encode_video
from asyncdiff_worker.errors import ModelCorrupt, WorkerError
from asyncdiff_worker.keys import JobIdentity, JobLayout, WorkerSlot
from asyncdiff_worker.manifest import OutputRecord, ResultManifest, Runtime, software_versions
from asyncdiff_worker.preflight import Prepared
from asyncdiff_worker.progress import ProgressReporter
from asyncdiff_worker.resume import Rendering, output_metadata, record_from_metadata, reusable
from asyncdiff_worker.shard_source import shards_for
from asyncdiff_worker.shards import output_hash, pixel_hash, plan_shards
from asyncdiff_worker.spec.models import JobSpec
from asyncdiff_worker.storage import ObjectInfo, PutResult, Storage
from asyncdiff_worker.uploader import Uploader

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class ModelDirs:
    """Local folders of the pipeline and its optional components (downloaded first for s3:// sources)."""

    model: Path
    controlnet: Path | None = None
    motion_adapter: Path | None = None


@dataclass
class RunContext:
    spec: JobSpec
    identity: JobIdentity
    layout: JobLayout
    storage: Storage
    prepared: Prepared
    resolve_models: Callable[[], ModelDirs]
    """Called only when the group has something to render (a fully resumed shard downloads nothing)."""
    reporter: ProgressReporter
    rank: int
    world: int
    slot: WorkerSlot
    process_start: float


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


def load(ctx: RunContext, dirs: ModelDirs) -> Any:
    """Load the pipeline; any failure that is not a user or memory error means the model folder is corrupt."""
    spec = ctx.spec
    quiet_libraries()
    try:
        return load_pipeline(
            spec.model.family,
            dirs.model,
            dtype=_dtype(spec.model.dtype),
            img2img=uses_img2img(spec),
            controlnet=str(dirs.controlnet) if dirs.controlnet else None,
            motion_adapter=str(dirs.motion_adapter) if dirs.motion_adapter else None,
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

        def on_step_end(_pipe: Any, i: int, _t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1)
            return callback_kwargs

        return {"callback_on_step_end": on_step_end}
    if "callback" in params:
        return {"callback": lambda i, _t, _latents: on_step(i + 1), "callback_steps": 1}
    return {}


def _frames(result: Any, position: int = 0) -> list[Image.Image]:
    frames = result.frames[position]
    return list(frames)


class _Group:
    """The ranks of one generation group agree on rank 0's decisions (which shard, which outputs to render)."""

    def __init__(self, world: int) -> None:
        self.world = world
        if world > 1:  # the same default group AsyncDiff will use (NCCL on GPUs, gloo on CPUs)
            ensure_process_group(None, DEFAULT_TIMEOUT_S)

    def share(self, value: Any) -> Any:
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


@dataclass
class _Loaded:
    pipe: Any
    ad: Any
    hooks: dict[str, Any]
    seconds: float


def _load_pipeline(ctx: RunContext, on_step: Any) -> _Loaded:
    spec = ctx.spec
    start = time.time()
    dirs = ctx.resolve_models()
    ctx.reporter.phase("loading")
    pipe = load(ctx, dirs)
    hooks = _step_callback_kwargs(pipe, on_step)  # before AsyncDiff swaps the pipeline's class
    ad = AsyncDiff(
        pipe,
        model_n=spec.parallelism.model_n,
        stride=spec.parallelism.stride,
        warm_up=spec.parallelism.warm_up,
        time_shift=spec.parallelism.time_shift,
        cfg_parallel=spec.parallelism.cfg_parallel,
    )
    return _Loaded(pipe, ad, hooks, time.time() - start)


def inputs_digest(images: dict[str, Image.Image]) -> str:
    """A digest of the decoded input images (folded into the pixel hash: an image replaced in place counts)."""
    digest = hashlib.sha256()
    for name in sorted(images):
        image = images[name]
        digest.update(f"{name}:{image.mode}:{image.size}\n".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()[:32]


def run(ctx: RunContext) -> ResultManifest | None:
    """Render this group's shards: reuse outputs stored for the same pixels, render the rest, write a marker per
    shard, and write the manifest if this group finished the job's last shard. Returns the manifest when this
    process wrote it (rank 0), else None."""
    spec, reporter, rank, slot = ctx.spec, ctx.reporter, ctx.rank, ctx.slot
    group = _Group(ctx.world)
    plan = plan_shards(spec)
    total = len(ctx.prepared.outputs)
    job_hash = pixel_hash(spec, extra=inputs_digest(ctx.prepared.images))
    key = run_key(slot.run_id, job_hash, plan)
    fmt = output_format(spec)
    video = is_video(spec)
    first_step: list[float] = []

    def on_step(step: int) -> None:
        if not first_step:
            first_step.append(time.time())
        reporter.step(step)

    loaded: _Loaded | None = None
    source = shards_for(slot, plan.num_shards) if rank == 0 else None
    while True:
        shard_start = time.time()  # before the claim: a local group's first interval includes its start barrier
        index = group.share(next(source, None) if source is not None else None)
        if index is None:
            break
        items = [ctx.prepared.outputs[i] for i in plan.outputs_of(index, total)]
        reused: dict[int, OutputRecord] = {}
        if rank == 0:
            reporter.phase("checking", shard=index, shards=plan.num_shards)
            for item in items:
                record = reusable(
                    ctx.storage,
                    ctx.layout.output(item.index, item.prompt_index, fmt),
                    item,
                    output_hash(job_hash, item.prompt, item.negative, item.seed),
                    fmt=fmt,
                    content_type=CONTENT_TYPES[fmt],
                )
                if record is not None:
                    reused[item.index] = record
            reporter.outputs_reused(len(reused), shard=index, shardOutputs=len(items))
        todo_indices: list[int] = group.share([item.index for item in items if item.index not in reused])
        todo = [item for item in items if item.index in set(todo_indices)]
        model_seconds = 0.0
        if todo and loaded is None:
            loaded = _load_pipeline(ctx, on_step)
            model_seconds = loaded.seconds
        records, gen_seconds, upload_wait = (
            _render(ctx, loaded, todo, index, job_hash, fmt, video) if todo and loaded else ({}, 0.0, 0.0)
        )
        if rank != 0:
            continue
        records.update(reused)
        ad = loaded.ad if loaded is not None else None
        plan_obj = getattr(ad, "plan", None)
        marker = ShardMarker(
            run_id=slot.run_id,
            run_key=key,
            pixel_hash=job_hash,
            shard=index,
            num_shards=plan.num_shards,
            attempt=ctx.identity.attempt,
            index_retry=slot.index_retry,
            rendered_by=slot.rendered_by,
            rendered=len(todo),
            outputs=[records[i] for i in sorted(records)],
            timings=ShardTimings(
                started_at=_iso(shard_start),
                finished_at=_iso(time.time()),
                startup_seconds=round(first_step[0] - ctx.process_start, 3) if first_step and todo else None,
                model_seconds=round(model_seconds, 3),
                generate_seconds=round(gen_seconds, 3),
                upload_wait_seconds=round(upload_wait, 3),
            ),
            runtime=Runtime(
                world_size=ctx.world, device=str(getattr(ad, "device", "cpu")), backend=getattr(ad, "backend", None)
            )
            if ad is not None
            else None,
            plan=plan_obj.to_dict() if plan_obj is not None else None,
            plan_description=plan_obj.describe() if plan_obj is not None else None,
            stats=_jsonable(ad.stats()) if ad is not None else None,
            versions=software_versions(),
        )
        if len(marker.outputs) != len(items):
            raise WorkerError(f"shard {index}: {len(marker.outputs)} of {len(items)} outputs were stored")
        write_marker(ctx.storage, ctx.layout, marker)
        reporter.emit("shard", shard=index, shards=plan.num_shards, rendered=len(todo), reused=len(reused))
    if rank != 0:
        return None
    reporter.phase("finalizing")
    manifest = finish_if_complete(ctx.storage, ctx.layout, spec, ctx.identity, plan, key)
    if manifest is not None:
        prune_other_runs(ctx.storage, ctx.layout, key)
    return manifest


def _render(
    ctx: RunContext, loaded: _Loaded, todo: list[OutputItem], shard: int, job_hash: str, fmt: str, video: bool
) -> tuple[dict[int, OutputRecord], float, float]:
    """Render ``todo`` (every rank); rank 0 stores each output. Returns (records, pipeline seconds, upload wait)."""
    spec, reporter = ctx.spec, ctx.reporter
    uploader = Uploader(ctx.storage) if ctx.rank == 0 else None
    records: dict[int, OutputRecord] = {}
    gen_seconds = 0.0
    reporter.phase("generating", shard=shard)
    try:
        for group in batches(todo, spec.generation.batch_size):
            reporter.begin_output(group[0].index)
            kwargs = batch_call_kwargs(spec, group, ctx.prepared.images)
            generators = [torch.Generator("cpu").manual_seed(item.seed) for item in group]
            started = time.time()
            t0 = time.perf_counter()
            result = loaded.pipe(**kwargs, **loaded.hooks, generator=generators[0] if len(group) == 1 else generators)
            seconds = (time.perf_counter() - t0) / len(group)
            gen_seconds += seconds * len(group)
            if uploader is not None:
                rendering = Rendering(
                    shard=shard,
                    attempt=ctx.identity.attempt,
                    index_retry=ctx.slot.index_retry,
                    rendered_by=ctx.slot.rendered_by,
                    rendered_at=_iso(started),
                    seconds=round(seconds, 4),
                    width=0,
                    height=0,
                    frames=None,
                )
                for position, item in enumerate(group):
                    _store(ctx, uploader, records, item, result, fmt, video, rendering, job_hash, position)
        wait_start = time.perf_counter()
        reporter.phase("uploading", shard=shard)
        if uploader is not None:
            uploader.wait()
        upload_wait = time.perf_counter() - wait_start
    finally:
        if uploader is not None:
            uploader.close()
    return records, gen_seconds, upload_wait


def _store(
    ctx: RunContext,
    uploader: Uploader,
    records: dict[int, OutputRecord],
    item: OutputItem,
    result: Any,
    fmt: str,
    video: bool,
    rendering: Rendering,
    job_hash: str,
    position: int = 0,
) -> None:
    """Encode and upload output ``item``, the ``position``-th of the pipeline call's ``result``."""
    spec = ctx.spec
    frames: int | None = None
    if video:
        images = _frames(result, position)
        data = encode_video(images, fmt, spec.generation.fps, spec.output.quality)
        width, height = images[0].size
        frames = len(images)
    else:
        image = result.images[position]
        data = encode_image(image, fmt, spec.output.quality)
        width, height = image.size
    location = ctx.layout.output(item.index, item.prompt_index, fmt)
    metadata = output_metadata(
        job_name=ctx.identity.name,
        job_uid=ctx.identity.uid,
        item=item,
        pixel_hash=output_hash(job_hash, item.prompt, item.negative, item.seed),
        rendering=replace(rendering, width=width, height=height, frames=frames),
    )

    def done(put: PutResult) -> None:
        info = ObjectInfo(put.uri, location.key, put.bytes, "", metadata)
        record = record_from_metadata(info, item, fmt=fmt, content_type=CONTENT_TYPES[fmt], sha256=put.sha256)
        assert record is not None  # built from our own complete metadata
        records[item.index] = record
        ctx.reporter.output_done(record.model_dump(mode="json", by_alias=True, exclude={"prompt"}))

    uploader.submit(location, data, content_type=CONTENT_TYPES[fmt], metadata=metadata, on_done=done)


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
