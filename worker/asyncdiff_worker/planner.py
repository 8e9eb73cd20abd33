"""The layout planner: ``spec.parallelism.devices`` and a goal in, modelN / stride / cfgParallel / replicas out.

Why in code, with tables and their sources: the best layout depends on the goal. For throughput (outputs per
GPU-hour) data parallelism is exact and wastes nothing, so every device runs its own plain pipeline (modelN 1)
unless the model does not fit one device; then the fewest devices per group that fit it. For latency (time to one
output) the speedup per group matters, and AsyncDiff trades some efficiency and some fidelity for it (the paper:
2.6x on 4 GPUs at N4 S1, i.e. 65% efficiency; 4.0x at N3 S2 with a visible quality cost); CFG parallelism
(xDiT) is exact and near 2x on 2 devices. The planner picks the fastest group at the quality the user allows,
then fills the devices with replicas of it. The operator and ``asyncdiff plan`` call the same function, so a user
sees the operator's choice before submitting. Torch-free: the operator imports it.

Explicit layout fields are constraints, never overridden: with ``devices: 8`` and ``modelN: 4`` only layouts with
modelN 4 are considered. When no layout divides the devices, or explicit fields disagree with them, ``PlanError``
names the field and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final, Literal

from asyncdiff_worker.spec.models import JobSpec

Quality = Literal["exact", "high", "any"]
Goal = Literal["throughput", "latency"]

DEFAULT_GPU_MEMORY_GIB: Final = 80.0
"""Assumed memory per device (an 80 GB A100/H100) unless ``gpu_memory_gib`` or ``$ASYNCDIFF_GPU_MEMORY_GIB`` says."""

ASYNCDIFF_SPEEDUP: Final[dict[str, dict[tuple[int, int], float]]] = {
    "sd21": {(2, 1): 1.8, (3, 1): 2.3, (4, 1): 2.6, (2, 2): 3.0, (3, 2): 4.0},
    "sd15": {(2, 1): 1.8, (4, 1): 2.6, (3, 2): 3.7},
    "sdxl": {(2, 1): 1.7, (4, 1): 2.7, (2, 2): 2.8, (3, 2): 3.8},
    "animatediff": {(2, 1): 1.78},
}
"""Measured speedup of one AsyncDiff group over the sequential pipeline, by (modelN, stride). Sources: AsyncDiff
(Chen et al., NeurIPS 2024) Table 1, 50 DDIM steps on RTX A5000 GPUs with NVLink (SD 2.1, SD 1.5, SDXL); the
reference repository's README for AnimateDiff (43.5 s to 24.5 s on 2 GPUs, 50 steps). Our own CPU benchmark
(``bench/``, SD 2.1 layout, gloo) measured 1.86x at N2 S1, in line with the paper. Missing entries fall back to the
nearest measured architecture (``_SPEEDUP_FALLBACK``); the reason string says so."""

_SPEEDUP_FALLBACK: Final[dict[str, str]] = {
    "sd15": "sd21",
    "sdxl": "sd21",
    "sdxl-inpaint": "sdxl",
    "sdxl-controlnet": "sdxl",
    "sd3": "sd21",
    "sd-upscaler": "sd21",
    "svd": "sd21",
    "animatediff": "sd21",
}

CFG_PARALLEL_SPEEDUP: Final = 1.9
"""CFG parallelism on 2 devices: the two halves of every denoiser call run at once, exact. xDiT reports close to 2x
for its CFG-parallel degree 2 on FLUX/PixArt/SD3; 1.9x allows for the extra all-gather per step."""

LPIPS: Final[dict[tuple[int, int], float]] = {(2, 1): 0.212, (3, 1): 0.276, (4, 1): 0.313, (2, 2): 0.346, (3, 2): 0.378}
"""LPIPS against the sequential output for the same seed (AsyncDiff Table 1, SD 2.1). ``high`` quality allows
layouts at or under 0.30: N2 S1 and N3 S1 (our own trained-model measurement: N2 S1 W1 26.8 dB PSNR, N4 S1 W1
23.0 dB, N2 S2 W1 18.6 dB). ``exact`` allows only modelN 1 (with or without CFG parallelism)."""
HIGH_QUALITY_LPIPS: Final = 0.30

MEMORY_GIB: Final[dict[str, tuple[float, float, float]]] = {
    "sd15": (1.7, 0.4, 1.5),
    "sd21": (1.7, 0.8, 2.0),
    "sdxl": (5.1, 1.6, 4.0),
    "sdxl-inpaint": (5.1, 1.6, 4.0),
    "sdxl-controlnet": (5.1, 4.1, 5.0),
    "sd3": (4.2, 11.3, 3.0),
    "sd-upscaler": (0.9, 0.3, 6.0),
    "svd": (3.0, 1.3, 10.0),
    "animatediff": (3.5, 0.4, 6.0),
}
"""Per family at fp16 and its default size: (denoiser weights, the other components, peak activations), GiB.
Weights are the checkpoints' sizes (SD 1.5 UNet 860M params, SDXL UNet 2.6B, SD3 medium MMDiT 2B with a 4.7B T5);
activations are rough peaks of a CFG batch at the default resolution (SVD: 14 frames at 1024x576). AsyncDiff keeps
only its own stage's denoiser weights on each device, so a group of modelN needs ``other + denoiser / modelN +
activations`` per device."""

_MAX_MODEL_N: Final[dict[str, int]] = {"animatediff": 3}
"""Families whose split supports fewer than 4 stages."""


class PlanError(ValueError):
    """The devices cannot be cut into the layout the spec asks for; the message names the field and the fix."""


@dataclass(frozen=True)
class Layout:
    model_n: int
    stride: int
    cfg_parallel: bool
    replicas: int

    @property
    def devices_per_group(self) -> int:
        return (self.model_n + self.stride - 1) * (2 if self.cfg_parallel else 1)

    @property
    def devices(self) -> int:
        return self.devices_per_group * self.replicas

    def describe(self) -> str:
        cfg = " + cfgParallel" if self.cfg_parallel else ""
        return (
            f"{self.replicas} replica(s) x modelN {self.model_n} stride {self.stride}{cfg} "
            f"({self.devices_per_group} device(s) per group, {self.devices} in all)"
        )


@dataclass(frozen=True)
class LayoutPlan:
    layout: Layout
    goal: Goal
    reason: str
    speedup: float
    """Estimated speedup of one group over the sequential pipeline (latency)."""
    throughput: float
    """Estimated outputs per unit time of the whole job, relative to one sequential device."""

    def to_dict(self) -> dict[str, object]:
        return {
            "modelN": self.layout.model_n,
            "stride": self.layout.stride,
            "cfgParallel": self.layout.cfg_parallel,
            "replicas": self.layout.replicas,
            "devicesPerGroup": self.layout.devices_per_group,
            "devices": self.layout.devices,
            "goal": self.goal,
            "estimatedSpeedup": round(self.speedup, 2),
            "estimatedThroughput": round(self.throughput, 2),
            "reason": self.reason,
        }


def _speedup(family: str, model_n: int, stride: int, cfg: bool) -> tuple[float, str]:
    """(speedup of one group, where the figure comes from)."""
    cfg_factor = CFG_PARALLEL_SPEEDUP if cfg else 1.0
    if model_n == 1:
        return cfg_factor, "xDiT CFG parallel" if cfg else "plain pipeline"
    name = family
    seen = []
    while True:
        table = ASYNCDIFF_SPEEDUP.get(name, {})
        if (model_n, stride) in table:
            source = "AsyncDiff paper" if name != "animatediff" else "AsyncDiff README"
            if name != family:
                source += f", {name} figure ({family} not measured)"
            if cfg:
                source += f"; x {CFG_PARALLEL_SPEEDUP} for CFG parallel (xDiT), assumed independent"
            return table[(model_n, stride)] * cfg_factor, source
        seen.append(name)
        fallback = _SPEEDUP_FALLBACK.get(name)
        if fallback is None or fallback in seen:
            return 1.0, "unmeasured"
        name = fallback


def _quality_ok(model_n: int, stride: int, quality: Quality) -> bool:
    if model_n == 1:
        return True
    if quality == "exact":
        return False
    if quality == "high":
        return LPIPS.get((model_n, stride), 1.0) <= HIGH_QUALITY_LPIPS
    return True


def memory_per_device(family: str, model_n: int) -> float:
    denoiser, other, activations = MEMORY_GIB.get(family, (5.0, 5.0, 5.0))
    return other + denoiser / model_n + activations


def _gpu_memory(gpu_memory_gib: float | None) -> float:
    if gpu_memory_gib is not None:
        return gpu_memory_gib
    try:
        return float(os.environ.get("ASYNCDIFF_GPU_MEMORY_GIB", DEFAULT_GPU_MEMORY_GIB))
    except ValueError:
        return DEFAULT_GPU_MEMORY_GIB


def explicit_layout_fields(spec: JobSpec) -> set[str]:
    """The layout fields the user gave (the rest the planner may choose)."""
    return set(spec.parallelism.model_fields_set) & {"model_n", "stride", "replicas", "cfg_parallel"}


def plan_layout(spec: JobSpec, *, devices: int | None = None, gpu_memory_gib: float | None = None) -> LayoutPlan:
    """Choose the layout for ``devices`` (default ``spec.parallelism.devices``); raises ``PlanError``."""
    par = spec.parallelism
    total = devices if devices is not None else par.devices
    field = "spec.parallelism.devices" if devices is None else "--devices"
    if total is None:
        raise PlanError("spec.parallelism.devices: is required to plan a layout (or pass --devices)")
    goal: Goal = par.goal or "throughput"
    quality: Quality = par.quality or "high"
    family = spec.model.family
    fixed = explicit_layout_fields(spec)
    memory = _gpu_memory(gpu_memory_gib)
    guidance = spec.generation.guidance_scale > 1.0 and family != "sd-upscaler"
    max_n = _MAX_MODEL_N.get(family, 4)

    candidates: list[tuple[Layout, float, str]] = []
    for model_n in range(1, 5):
        for stride in (1, 2):
            for cfg in (False, True):
                if (stride == 2 and model_n == 1) or model_n > max_n or (cfg and not guidance):
                    continue
                if "model_n" in fixed and model_n != par.model_n:
                    continue
                if "stride" in fixed and stride != par.stride:
                    continue
                if "cfg_parallel" in fixed and cfg != getattr(par, "cfg_parallel", False):
                    continue
                per_group = (model_n + stride - 1) * (2 if cfg else 1)
                if total % per_group:
                    continue
                replicas = total // per_group
                if "replicas" in fixed and replicas != par.replicas:
                    continue
                speedup, source = _speedup(family, model_n, stride, cfg)
                candidates.append((Layout(model_n, stride, cfg, replicas), speedup, source))
    if not candidates:
        raise PlanError(_no_layout_message(spec, total, field, fixed))

    fits = [c for c in candidates if memory_per_device(family, c[0].model_n) <= memory]
    pool = fits or candidates
    memory_note = "" if fits else f"; no layout fits {memory:g} GiB per device, chose the smallest footprint"
    allowed = [c for c in pool if _quality_ok(c[0].model_n, c[0].stride, quality)]
    if not allowed:
        lower = "any" if quality == "high" else "high or any"
        raise PlanError(
            f"spec.parallelism.quality: no layout of {total} device(s) that fits {memory:g} GiB per device reaches "
            f"quality {quality} with the explicit layout fields; allow {lower}, change devices, or leave "
            "modelN/stride out"
        )
    if goal == "throughput":
        # outputs per unit time = replicas x speedup per group; ties go to the fewest devices per group (exact)
        best = max(allowed, key=lambda c: (c[0].replicas * c[1], -c[0].devices_per_group, -c[0].stride))
        why = "throughput: data parallel is exact and wastes nothing"
        if best[0].model_n > 1 and "model_n" not in fixed:
            why += f"; {family} needs {memory_per_device(family, 1):.1f} GiB on one device, more than {memory:g}"
    else:
        best = max(allowed, key=lambda c: (c[1], c[0].replicas, -c[0].devices_per_group))
        why = f"latency at quality {quality}: the fastest group allowed"
    layout, speedup, source = best
    need = memory_per_device(family, layout.model_n)
    reason = (
        f"{why}: {layout.describe()}, est. {speedup:.2f}x per group ({source}), {need:.1f} GiB per device of "
        f"{memory:g}{memory_note}"
    )
    return LayoutPlan(layout, goal, reason, speedup, layout.replicas * speedup)


def _no_layout_message(spec: JobSpec, total: int, field: str, fixed: set[str]) -> str:
    par = spec.parallelism
    if {"model_n", "stride", "replicas"} <= fixed or "replicas" in fixed:
        per_group = (par.model_n + par.stride - 1) * (2 if getattr(par, "cfg_parallel", False) else 1)
        return (
            f"{field}: {total} does not match the explicit layout: replicas {par.replicas} x {per_group} device(s) "
            f"per group = {par.replicas * per_group}; set devices to {par.replicas * per_group} or leave replicas out"
        )
    given = ", ".join(sorted(_ALIASES[f] for f in fixed)) or "none"
    return (
        f"{field}: {total} device(s) cannot be divided into groups of the explicit layout fields ({given}); "
        "choose a multiple of the group size or leave those fields out"
    )


_ALIASES: Final = {"model_n": "modelN", "stride": "stride", "replicas": "replicas", "cfg_parallel": "cfgParallel"}


def resolve_layout(spec: JobSpec, *, gpu_memory_gib: float | None = None) -> tuple[JobSpec, LayoutPlan | None]:
    """The spec with the planned layout written in (explicit modelN, stride, cfgParallel, replicas), and the plan;
    the spec itself and None when ``devices`` is not set. What the operator hands the worker: the worker never
    plans again, so both sides agree whatever the worker's environment says."""
    if spec.parallelism.devices is None:
        return spec, None
    plan = plan_layout(spec, gpu_memory_gib=gpu_memory_gib)
    data = with_layout(spec.model_dump(mode="json", by_alias=True, exclude_unset=True), plan.layout)
    return JobSpec.model_validate(data), plan


def with_layout(data: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """A spec dumped by alias (the job's or the operator's, with its runPolicy and pod) with ``layout`` written into
    its parallelism: explicit modelN, stride, replicas, and cfgParallel when chosen or already given."""
    par = dict(data.get("parallelism", {}))
    par.update(modelN=layout.model_n, stride=layout.stride, replicas=layout.replicas)
    if layout.cfg_parallel or "cfgParallel" in par:
        par["cfgParallel"] = layout.cfg_parallel
    return {**data, "parallelism": par}
