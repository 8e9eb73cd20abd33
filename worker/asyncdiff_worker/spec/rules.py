"""The job's cross-field rules as CEL expressions, for the CRD (``x-kubernetes-validations`` on ``spec``).

Why here, next to ``validate.check_semantics``: both enforce the same rules, one at ``kubectl apply`` (the API
server evaluates these expressions, so a wrong job is refused before any pod starts) and one in ``asyncdiff run``
and the worker (Python, with messages that name the values). Each rule names the field the Python check names
(``spec.`` + ``field``); ``tests/asyncdiff_operator/test_validation_parity.py`` applies the same bad manifests to
both and compares the field names, and checks that every rule here is exercised. This module is plain data (no CEL
library): the worker never evaluates CEL, the operator's ``crd.py`` only copies the rules into the CRD.

Every expression is evaluated on ``spec`` after the API server applied the schema's defaults (``self`` is the
spec), so defaulted fields (``generation.steps``, ``generation.imagesPerPrompt``) are always present; optional ones
are guarded with ``has()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncdiff_worker.spec import limits
from asyncdiff_worker.spec.models import IMAGE_FORMATS, VIDEO_FORMATS, ParallelismSpec

VIDEO_FAMILIES: tuple[str, ...] = ("svd", "animatediff")
IMG2IMG_FAMILIES: tuple[str, ...] = ("sd15", "sd21", "sdxl", "sd3")
INIT_IMAGE_FAMILIES: tuple[str, ...] = (*IMG2IMG_FAMILIES, "sdxl-inpaint", "sd-upscaler")


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: ``cel`` must hold on ``spec``; otherwise ``spec.<field>`` is wrong because ``message``."""

    field: str
    cel: str
    message: str

    def as_validation(self) -> dict[str, str]:
        """The CRD's ``x-kubernetes-validations`` item (placed on ``spec``)."""
        return {"rule": self.cel, "fieldPath": f".{self.field}", "message": self.message}


def _in(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


_FAMILY = "self.model.family"


def _only(field: str, families: tuple[str, ...], message: str) -> Rule:
    section, name = field.split(".")
    return Rule(field, f"!has(self.{section}.{name}) || {_FAMILY} in {_in(families)}", message)


def _required(field: str, families: tuple[str, ...], message: str) -> Rule:
    section, name = field.split(".")
    return Rule(field, f"!({_FAMILY} in {_in(families)}) || has(self.{section}.{name})", message)


_WARM_UP = f"(has(self.parallelism) ? self.parallelism.warmUp : {ParallelismSpec().warm_up})"

RULES: tuple[Rule, ...] = (
    Rule(
        "output.uri",
        "self.output.uri.startsWith('s3://') || self.output.uri.startsWith('file://')",
        "must be s3://bucket/prefix or file:///dir",
    ),
    _only("model.controlnet", ("sdxl-controlnet",), "only sdxl-controlnet uses a ControlNet"),
    _required("model.controlnet", ("sdxl-controlnet",), "is required for sdxl-controlnet"),
    _only("model.motionAdapter", ("animatediff",), "only animatediff uses a motion adapter"),
    _required("model.motionAdapter", ("animatediff",), "is required for animatediff"),
    Rule(
        "generation.prompts",
        f"{_FAMILY} != 'svd' || !has(self.generation.prompts)",
        "svd takes no prompts: it animates generation.conditioningImage",
    ),
    Rule(
        "generation.promptsFrom",
        f"{_FAMILY} != 'svd' || !has(self.generation.promptsFrom)",
        "svd takes no prompts: it animates generation.conditioningImage",
    ),
    Rule(
        "generation.negativePrompt",
        f"{_FAMILY} != 'svd' || !has(self.generation.negativePrompt)",
        "svd takes no prompts",
    ),
    Rule(
        "generation.prompts",
        f"{_FAMILY} == 'svd' || has(self.generation.prompts) || has(self.generation.promptsFrom)",
        "give prompts or promptsFrom",
    ),
    Rule(
        "generation.promptsFrom",
        "!has(self.generation.prompts) || !has(self.generation.promptsFrom)",
        "give either prompts or promptsFrom, not both",
    ),
    Rule(
        "generation.imagesPerPrompt",
        f"!has(self.generation.prompts) || size(self.generation.prompts) * self.generation.imagesPerPrompt <= "
        f"{limits.MAX_OUTPUTS}",
        f"prompts x imagesPerPrompt outputs is more than the limit {limits.MAX_OUTPUTS}",
    ),
    _only(
        "generation.initImage",
        INIT_IMAGE_FAMILIES,
        "only img2img (sd15, sd21, sdxl, sd3), sdxl-inpaint and sd-upscaler take an init image",
    ),
    _required(
        "generation.initImage",
        ("sdxl-inpaint", "sd-upscaler"),
        "is required for sdxl-inpaint (the image to inpaint) and sd-upscaler (the low-resolution image to upscale)",
    ),
    _only("generation.maskImage", ("sdxl-inpaint",), "only sdxl-inpaint uses a mask"),
    _required("generation.maskImage", ("sdxl-inpaint",), "is required for sdxl-inpaint"),
    _only("generation.controlImage", ("sdxl-controlnet",), "only sdxl-controlnet uses a control image"),
    _required("generation.controlImage", ("sdxl-controlnet",), "is required for sdxl-controlnet"),
    _only("generation.conditioningImage", ("svd",), "only svd uses a conditioning image"),
    _required("generation.conditioningImage", ("svd",), "is required for svd (the image the video starts from)"),
    _only("generation.numFrames", VIDEO_FAMILIES, "only video families (svd, animatediff) take numFrames"),
    Rule(
        "generation.height",
        f"{_FAMILY} != 'sd-upscaler' || !has(self.generation.height)",
        "sd-upscaler's output is 4x its input image; do not set it",
    ),
    Rule(
        "generation.width",
        f"{_FAMILY} != 'sd-upscaler' || !has(self.generation.width)",
        "sd-upscaler's output is 4x its input image; do not set it",
    ),
    Rule(
        "output.format",
        f"!has(self.output.format) || ({_FAMILY} in {_in(VIDEO_FAMILIES)} ? self.output.format in "
        f"{_in(VIDEO_FORMATS)} : self.output.format in {_in(IMAGE_FORMATS)})",
        f"images are {', '.join(IMAGE_FORMATS)}; video (svd, animatediff) is {', '.join(VIDEO_FORMATS)}",
    ),
    Rule(
        "parallelism.warmUp",
        f"{_WARM_UP} < self.generation.steps",
        "must be less than spec.generation.steps",
    ),
    *(
        Rule(
            f"parallelism.{name}",
            f"!has(self.parallelism) || !has(self.parallelism.{name}) || has(self.parallelism.devices)",
            "needs spec.parallelism.devices (how many devices the planner may use)",
        )
        for name in ("goal", "quality")
    ),
)
"""Every cross-field rule of ``check_semantics`` that CEL can say (URI syntax beyond the scheme stays in Python)."""
