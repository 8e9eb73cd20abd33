"""What each output is (prompt, seed) and the keyword arguments of its pipeline call, per family.

Why pure functions: the mapping from spec to diffusers arguments is the part most likely to be wrong for one family
and is testable without torch. Output i of a job always uses seed + i, on every rank. By default every output is one
pipeline call; ``generation.batchSize`` > 1 groups consecutive outputs into one call (a list of prompts, one
generator each), which diffusers computes sample by sample with the same random draws as one call each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from asyncdiff_worker.inputs import PromptItem
from asyncdiff_worker.spec import limits
from asyncdiff_worker.spec.models import JobSpec
from asyncdiff_worker.spec.validate import IMG2IMG_FAMILIES, VIDEO_FAMILIES


@dataclass(frozen=True)
class OutputItem:
    """One output of the job."""

    index: int
    prompt_index: int
    image_index: int
    seed: int
    prompt: str
    negative: str | None


def derive_seed(base: int, index: int) -> int:
    """The seed of output ``index``: ``base + index`` (wrapping at 2**63), so output i can be reproduced alone."""
    return (base + index) % (limits.MAX_SEED + 1)


def plan_outputs(spec: JobSpec, prompts: list[PromptItem]) -> list[OutputItem]:
    """Every prompt x imagesPerPrompt, prompt-major: index = prompt_index * imagesPerPrompt + image_index."""
    per = spec.generation.images_per_prompt
    return [
        OutputItem(p * per + k, p, k, derive_seed(spec.generation.seed, p * per + k), item.text, item.negative)
        for p, item in enumerate(prompts)
        for k in range(per)
    ]


def is_video(spec: JobSpec) -> bool:
    return spec.model.family in VIDEO_FAMILIES


def output_format(spec: JobSpec) -> str:
    """The output format, defaulting to png for images and mp4 for video."""
    return spec.output.format or ("mp4" if is_video(spec) else "png")


def uses_img2img(spec: JobSpec) -> bool:
    """Whether the img2img variant of the family's pipeline is needed."""
    return spec.model.family in IMG2IMG_FAMILIES and spec.generation.init_image is not None


def call_kwargs(spec: JobSpec, item: OutputItem, images: Mapping[str, Image.Image]) -> dict[str, Any]:
    """Keyword arguments for ``pipe(**kwargs, generator=...)`` producing one output as PIL images."""
    fam = spec.model.family
    gen = spec.generation
    kw: dict[str, Any] = {"num_inference_steps": gen.steps, "output_type": "pil"}
    size: dict[str, Any] = {}
    if gen.height is not None:
        size["height"] = gen.height
    if gen.width is not None:
        size["width"] = gen.width
    if fam == "svd":
        kw.update(
            image=images["conditioning_image"],
            fps=gen.fps,
            max_guidance_scale=max(1.0, gen.guidance_scale),
            min_guidance_scale=1.0,
            num_videos_per_prompt=1,
            **size,
        )
        if gen.num_frames is not None:
            kw["num_frames"] = gen.num_frames
        return kw
    kw.update(prompt=item.prompt, guidance_scale=gen.guidance_scale)
    if item.negative is not None:
        kw["negative_prompt"] = item.negative
    if fam == "animatediff":
        kw.update(num_videos_per_prompt=1, **size)
        if gen.num_frames is not None:
            kw["num_frames"] = gen.num_frames
        return kw
    kw["num_images_per_prompt"] = 1
    if fam == "sd-upscaler":
        kw.update(image=images["init_image"], noise_level=gen.noise_level)
    elif fam == "sdxl-inpaint":
        kw.update(image=images["init_image"], mask_image=images["mask_image"], strength=gen.strength, **size)
    elif fam == "sdxl-controlnet":
        kw.update(
            image=images["control_image"],
            controlnet_conditioning_scale=gen.controlnet_conditioning_scale,
            **size,
        )
    elif uses_img2img(spec):
        kw.update(image=images["init_image"], strength=gen.strength)
        if fam == "sd3":
            kw.update(size)
    else:
        kw.update(size)
    return kw


def batches(items: list[OutputItem], size: int) -> list[list[OutputItem]]:
    """Consecutive outputs grouped ``size`` at a time for one pipeline call each. A group never mixes outputs with
    and without a negative prompt: diffusers encodes a missing negative prompt differently from an empty one."""
    groups: list[list[OutputItem]] = []
    for item in items:
        last = groups[-1] if groups else None
        if last is not None and len(last) < size and (last[0].negative is None) == (item.negative is None):
            last.append(item)
        else:
            groups.append([item])
    return groups


def batch_call_kwargs(spec: JobSpec, items: list[OutputItem], images: Mapping[str, Image.Image]) -> dict[str, Any]:
    """Keyword arguments for one call producing ``items`` (one of :func:`batches`), without the generators (one
    per item, in order, seeded with each item's seed). One item gives exactly :func:`call_kwargs`."""
    kw = call_kwargs(spec, items[0], images)
    if len(items) == 1:
        return kw
    if spec.model.family == "svd":  # no prompts: several videos of the one conditioning image
        kw["num_videos_per_prompt"] = len(items)
        return kw
    kw["prompt"] = [item.prompt for item in items]
    if items[0].negative is not None:
        kw["negative_prompt"] = [item.negative for item in items]
    return kw
