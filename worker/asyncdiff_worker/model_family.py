"""Does a model folder hold the pipeline family the job declares? Read from its own ``model_index.json``.

Why before loading: a model of another family than ``spec.model.family`` (SD 1.5 weights with family sdxl, or the
reverse) crashes deep inside diffusers with a shape or missing-attribute error; the worker would report that as
corrupt or unexpected and the operator would retry an error no retry can fix. The model's ``model_index.json``
says what it is (``_class_name``, the pipeline class it was saved from, and its components), so the mismatch is a
user error found in milliseconds, with a message naming both families and the fix.

What is accepted per family: the pipeline classes a folder of that family is saved from (a base SDXL folder serves
sdxl, sdxl-inpaint and sdxl-controlnet with a separate ControlNet; an SD 1.5 folder serves animatediff with a
separate motion adapter), and the components the family's pipeline cannot load without. SD 1.5 and SD 2.1 share
their pipeline class and components, so this check cannot tell them apart (AsyncDiff's split does not depend on it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncdiff_worker.errors import SpecError

_SD = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
_SDXL = (
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
    "StableDiffusionXLControlNetPipeline",
)
_SD3 = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline")

ACCEPTED_CLASSES: dict[str, tuple[str, ...]] = {
    "sd15": _SD,
    "sd21": _SD,
    "sdxl": _SDXL,
    "sdxl-inpaint": _SDXL,
    "sdxl-controlnet": _SDXL,
    "sd3": _SD3,
    "sd-upscaler": ("StableDiffusionUpscalePipeline",),
    "svd": ("StableVideoDiffusionPipeline",),
    "animatediff": ("AnimateDiffPipeline", *_SD),
}
"""``_class_name`` values a model folder of each family may carry."""

REQUIRED_COMPONENTS: dict[str, tuple[str, ...]] = {
    "sd15": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "sd21": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "sdxl": ("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler"),
    "sdxl-inpaint": ("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler"),
    "sdxl-controlnet": ("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler"),
    "sd3": ("transformer", "vae", "text_encoder", "text_encoder_2", "scheduler"),
    "sd-upscaler": ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "low_res_scheduler"),
    "svd": ("unet", "vae", "image_encoder", "scheduler"),
    "animatediff": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
}
"""Components the family's pipeline needs in ``model_index.json`` (not null)."""


def families_of(class_name: str) -> list[str]:
    """The families whose folders are saved from ``class_name``, in table order."""
    return [family for family, classes in ACCEPTED_CLASSES.items() if class_name in classes]


def check_family(index: Mapping[str, Any], family: str, source: str, field_name: str = "spec.model.source") -> None:
    """Raise ``SpecError`` (InvalidSpec, not retried) when ``index`` (a parsed model_index.json) is not ``family``."""
    class_name = index.get("_class_name")
    if not isinstance(class_name, str) or not class_name:
        return  # not said: leave it to the loader (a hand-written index may omit it)
    if class_name not in ACCEPTED_CLASSES.get(family, ()):
        owners = families_of(class_name)
        what = f"family {' or '.join(owners)}" if owners else "a pipeline AsyncDiff does not support"
        fix = f"set spec.model.family to {owners[0]}" if owners else "use a model of a supported family"
        raise SpecError(
            [
                f"spec.model.family: {family} does not match the model in {field_name} ({source}): its "
                f"model_index.json names {class_name} ({what}); {fix}, or point {field_name} at a {family} model"
            ]
        )
    present = {
        name
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0] is not None
    }
    missing = [name for name in REQUIRED_COMPONENTS.get(family, ()) if name not in present]
    if missing:
        raise SpecError(
            [
                f"spec.model.family: {family} needs the components {', '.join(missing)}, which the model in "
                f"{field_name} ({source}, a {class_name}) does not have: it is not a {family} model"
            ]
        )
