"""How a job's outputs are cut into shards, and the hash that says whether a stored output can be reused.

Why one torch-free module: the operator sizes its Indexed Job (one completion index per shard) from
``plan_shards(spec)`` and the worker renders ``outputs_of(index)`` of the same plan; both must agree exactly, so
both call this code. The plan depends only on the spec (never on a file the operator cannot read): a
``promptsFrom`` job is sharded only when ``generation.promptCount`` says how many prompts the file holds;
otherwise it is one shard (the worker renders everything, as before shards existed).

Shard size rule (``generation.shardSize`` overrides it): every shard pays one model load (one pod per shard on a
cluster), so a shard holds at least ``ceil(9 x load / output)`` outputs, which keeps loading under 10% of the
shard's time (``load / (load + size x output) <= 0.1``). ``LOAD_STEPS`` gives the load cost per family in
denoising steps (the output cost is ``steps`` of them). Within that bound the shards come in whole waves of the
replicas (``replicas x waves`` shards of equal size), so every replica gets work and none waits for a straggler
wave; more replicas than outputs are clamped (``ShardPlan.replicas``; the extra groups would have nothing to do).

Pixel hash: an output may be reused (resume) when it was written for the same pixels. ``pixel_hash(spec)`` hashes
every spec field that changes pixels or stored bytes except the per-output ones; ``output_hash`` folds in one
output's prompt, negative prompt and seed, and is what a stored object carries in its metadata. Left out on
purpose: prompts as a list (each output hashes its own), the base seed and imagesPerPrompt (each output's seed is
folded in), replicas, shardSize, the planner inputs and batch settings (data-parallel layouts give the same
pixels), the output location. The AsyncDiff layout (modelN, stride, warmUp, timeShift) approximates the
sequential result differently, so it is part of the hash (all of it collapses to "modelN 1" for the exact plain
pipeline). Not covered: the contents behind a URI (model weights, an input image replaced in place) and library
versions; the worker adds the decoded input images' digest through ``extra``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Final

from asyncdiff_worker.spec.models import JobSpec
from asyncdiff_worker.spec.validate import IMG2IMG_FAMILIES

LOAD_BUDGET: Final = 0.10
"""Largest share of a shard's time spent loading the model (when the outputs allow it)."""

LOAD_STEPS: Final[dict[str, int]] = {
    "sd15": 100,
    "sd21": 100,
    "sdxl": 70,
    "sdxl-inpaint": 70,
    "sdxl-controlnet": 70,
    "sd3": 120,
    "sd-upscaler": 60,
    "svd": 10,
    "animatediff": 25,
}
"""Model loading from a node-local cache, in denoising steps of the family at its default size (estimates from
typical single-GPU figures: SD 1.5 loads in ~5 s and steps at ~0.05 s at 512 px; SDXL ~10 s and ~0.15 s at
1024 px; SD3 medium ~15 s and ~0.12 s; SVD ~10 s and ~1 s per step of 14 frames; AnimateDiff ~10 s and ~0.4 s per
step of 16 frames). Only the order of magnitude matters: it sets how many outputs amortise one load."""

_PIXEL_FREE_GENERATION = frozenset(
    {"prompts", "prompts_from", "prompt_count", "seed", "images_per_prompt", "shard_size", "batch_size"}
)
"""GenerationSpec fields that do not change an output's pixels (or are folded in per output)."""
_PIXEL_FREE_PARALLELISM = frozenset({"replicas", "devices", "goal", "quality", "cfg_parallel"})
"""ParallelismSpec fields that only choose how many devices share the work (data or CFG parallel: exact)."""


def known_total_outputs(spec: JobSpec) -> int | None:
    """prompts x imagesPerPrompt when the spec alone says it (inline prompts, svd, or promptsFrom with
    promptCount); None for a promptsFrom job without promptCount."""
    gen = spec.generation
    if spec.model.family == "svd":
        prompts: int | None = 1
    elif gen.prompts is not None:
        prompts = len(gen.prompts)
    else:
        prompts = gen.prompt_count
    return None if prompts is None else prompts * gen.images_per_prompt


def _denoising_steps(spec: JobSpec) -> int:
    gen = spec.generation
    image_to_image = (spec.model.family in IMG2IMG_FAMILIES and gen.init_image is not None) or (
        spec.model.family == "sdxl-inpaint"
    )
    return max(1, round(gen.steps * gen.strength)) if image_to_image else gen.steps


def amortising_shard_size(spec: JobSpec) -> int:
    """The fewest outputs per shard that keep model loading under ``LOAD_BUDGET`` of the shard's time."""
    load = LOAD_STEPS.get(spec.model.family, 100)
    ratio = (1.0 - LOAD_BUDGET) / LOAD_BUDGET
    return max(1, math.ceil(ratio * load / _denoising_steps(spec)))


@dataclass(frozen=True)
class ShardPlan:
    """The outputs ``[0, total_outputs)`` cut into ``num_shards`` ranges of ``shard_size`` (the last may be
    shorter). ``total_outputs`` is None for an unsharded promptsFrom job (one shard holding everything)."""

    total_outputs: int | None
    shard_size: int
    num_shards: int
    replicas: int
    """Generation groups that get work: spec.parallelism.replicas clamped to num_shards."""
    requested_replicas: int
    reason: str
    """How the shard size was chosen, for status and logs."""

    @property
    def clamped(self) -> bool:
        """More replicas were asked for than there are shards."""
        return self.replicas < self.requested_replicas

    def outputs_of(self, index: int, total_outputs: int | None = None) -> range:
        """Output indices of shard ``index``. ``total_outputs`` (the worker's count, after reading a prompts
        file) is needed only when the plan's own total is None."""
        if not 0 <= index < self.num_shards:
            raise ValueError(f"shard index {index} is outside 0..{self.num_shards - 1}")
        total = self.total_outputs if self.total_outputs is not None else total_outputs
        if total is None:
            raise ValueError("this plan does not know the number of outputs: pass total_outputs")
        start = index * self.shard_size
        stop = total if self.total_outputs is None else min(total, start + self.shard_size)
        return range(start, stop)

    def shard_of(self, output_index: int) -> int:
        """The shard that renders ``output_index``."""
        return 0 if self.total_outputs is None else output_index // self.shard_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "totalOutputs": self.total_outputs,
            "shardSize": self.shard_size,
            "numShards": self.num_shards,
            "replicas": self.replicas,
            "requestedReplicas": self.requested_replicas,
            "reason": self.reason,
        }


def plan_shards(spec: JobSpec) -> ShardPlan:
    """The shard plan of a job (see the module docstring for the rule)."""
    requested = spec.parallelism.replicas
    total = known_total_outputs(spec)
    if total is None:
        return ShardPlan(None, 0, 1, 1, requested, "one shard: promptsFrom without promptCount")
    chosen = spec.generation.shard_size
    if chosen is not None:
        size = min(chosen, total)
        reason = f"shardSize {chosen} from the spec"
    else:
        least = amortising_shard_size(spec)
        waves = max(1, total // (requested * least))
        shards = min(total, requested * waves)
        size = math.ceil(total / shards)
        reason = (
            f"{waves} wave(s) of {requested} replica(s); at least {least} outputs per shard keep model loading "
            f"under {LOAD_BUDGET:.0%} ({spec.model.family}, {_denoising_steps(spec)} steps per output)"
        )
    num_shards = math.ceil(total / size)
    replicas = min(requested, num_shards)
    if replicas < requested:
        reason += f"; replicas clamped from {requested} to {replicas} (one per shard)"
    return ShardPlan(total, size, num_shards, replicas, requested, reason)


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def pixel_fields(spec: JobSpec) -> dict[str, Any]:
    """The spec fields that the pixels of every output depend on (see the module docstring)."""
    par = spec.parallelism
    layout: dict[str, Any]
    if int(par.model_n) == 1:
        layout = {"model_n": 1}
    else:
        layout = par.model_dump(mode="json", exclude=set(_PIXEL_FREE_PARALLELISM))
    gen = spec.generation.model_dump(mode="json", exclude=set(_PIXEL_FREE_GENERATION))
    return {
        "model": spec.model.model_dump(mode="json"),
        "parallelism": layout,
        "generation": gen,
        "output": {"format": spec.output.format, "quality": spec.output.quality},
    }


def pixel_hash(spec: JobSpec, extra: str = "") -> str:
    """Hex SHA-256 (32 characters) of the job-level fields that change pixels; ``extra`` adds what the spec does
    not hold (the worker passes a digest of the decoded input images)."""
    text = _canonical(pixel_fields(spec)) + "\n" + extra
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def output_hash(job_hash: str, prompt: str, negative: str | None, seed: int) -> str:
    """The hash one stored output carries (object metadata ``pixel-hash``): the job's pixel hash with this output's
    prompt, negative prompt and seed folded in."""
    text = job_hash + "\n" + _canonical([prompt, negative, seed])
    return hashlib.sha256(text.encode()).hexdigest()[:32]
