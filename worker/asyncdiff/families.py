"""The pipeline families AsyncDiff supports, in one table.

Why a table: the library, the worker's job spec, the tiny test models and the examples must all agree on which
diffusers pipeline classes exist, what each family is called, and where its denoiser lives. Everything else looks
the family up here instead of repeating class names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One supported pipeline family."""

    name: str
    pipeline_classes: tuple[str, ...]
    """diffusers pipeline class names of this family; the first one is the text-to-X (default) pipeline."""
    denoiser_attr: str
    """attribute of the pipeline holding the denoiser that AsyncDiff splits."""
    video: bool = False
    guidance: str | None = "guidance_scale"
    """the pipeline call's classifier-free guidance scale parameter (CFG runs when it is > 1), or None for a family
    without guidance. Every family here batches guidance as two halves (unconditional, conditional), which is what
    ``cfg_parallel`` splits over two stage groups."""


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sd15", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"), "unet"),
        Family("sd21", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"), "unet"),
        Family("sdxl", ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"), "unet"),
        Family("sdxl-inpaint", ("StableDiffusionXLInpaintPipeline",), "unet"),
        Family("sdxl-controlnet", ("StableDiffusionXLControlNetPipeline",), "unet"),
        Family("sd3", ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"), "transformer"),
        Family("sd-upscaler", ("StableDiffusionUpscalePipeline",), "unet"),
        Family("svd", ("StableVideoDiffusionPipeline",), "unet", video=True, guidance="max_guidance_scale"),
        Family("animatediff", ("AnimateDiffPipeline",), "unet", video=True),
    )
}

SUPPORTED_PIPELINE_CLASSES: tuple[str, ...] = tuple(
    sorted({cls for fam in FAMILIES.values() for cls in fam.pipeline_classes})
)


def denoiser_attr_for(pipeline_class_name: str) -> str | None:
    """The denoiser attribute for a pipeline class name, or None when the class is not supported."""
    for fam in FAMILIES.values():
        if pipeline_class_name in fam.pipeline_classes:
            return fam.denoiser_attr
    return None
