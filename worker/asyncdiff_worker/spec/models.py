"""The AsyncDiffJob spec as pydantic v2 models: the single source of truth for the job format.

Why pydantic and why so strict: the operator generates the CRD's OpenAPI schema from these models, so every field
has a camelCase name, a description and explicit bounds, unknown fields are rejected, and there are no free-form
dicts. Cross-field rules (which inputs a family needs) live in ``validate.py``; the schema holds what a schema can.
Credentials are deliberately absent: they come only from the environment or a mounted Secret.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from asyncdiff.families import FAMILIES
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from asyncdiff_worker.spec import limits

API_VERSION: Final = "asyncdiff.io/v1alpha1"
KIND: Final = "AsyncDiffJob"

FamilyName = Literal[
    "sd15", "sd21", "sdxl", "sdxl-inpaint", "sdxl-controlnet", "sd3", "sd-upscaler", "svd", "animatediff"
]
"""Must equal the keys of ``asyncdiff.families.FAMILIES`` (a test checks it); a Literal gives the CRD an enum."""

Dtype = Literal["auto", "float16", "bfloat16", "float32"]
ImageFormat = Literal["png", "jpeg", "webp"]
VideoFormat = Literal["mp4", "gif", "webp"]
OutputFormat = Literal["png", "jpeg", "webp", "mp4", "gif"]

IMAGE_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")
VIDEO_FORMATS: tuple[str, ...] = ("mp4", "gif", "webp")

Prompt = Annotated[str, Field(max_length=limits.MAX_PROMPT_CHARS)]

UNBATCHABLE_FAMILIES: dict[str, str] = {
    "svd": "svd's pipeline draws the conditioning image's noise from the first generator only",
    "sd-upscaler": "sd-upscaler's pipeline draws the input image's noise from the first generator only",
}
"""Families whose pipelines, given several outputs in one call, do not reproduce one call per output with the same
seeds (``generation.batchSize`` must stay 1), and why."""

_URI_HELP = "s3://bucket/prefix, file:///absolute/path, or a path (a mounted volume)"


class SpecModel(BaseModel):
    """Base of all spec models: camelCase field names, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        protected_namespaces=(),
        frozen=True,
    )


class ModelSpec(SpecModel):
    """Which pipeline to run and where its weights are."""

    family: FamilyName = Field(description="Pipeline family, for example sd15, sdxl, svd or sd-upscaler.")
    source: str = Field(
        min_length=1,
        max_length=1024,
        description=f"Where the diffusers pipeline folder (save_pretrained layout) is: {_URI_HELP}. "
        "An s3:// model is downloaded once per node into a node-local cache.",
    )
    dtype: Dtype = Field(default="auto", description="Weights dtype; auto means float16 on GPUs and float32 on CPUs.")
    controlnet: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description=f"ControlNet folder for sdxl-controlnet: {_URI_HELP}.",
    )
    motion_adapter: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description=f"Motion adapter folder for animatediff: {_URI_HELP}.",
    )


def _no_schema_default(schema: dict[str, Any]) -> None:
    """Leave the default out of the JSON schema (so out of the CRD): the API server must not fill in a layout field
    the user left out, or the planner could not tell "left out" (choose it) from "given" (keep it)."""
    schema.pop("default", None)


class ParallelismSpec(SpecModel):
    """How AsyncDiff splits the denoiser; one group of the job uses (modelN + stride - 1) x (2 if cfgParallel)
    devices (processes)."""

    model_n: Literal[1, 2, 3, 4] = Field(
        default=2,
        description="Number of denoiser stages (components), 1 to 4; 1 runs the whole denoiser on each device "
        "(no split: with cfgParallel plain CFG parallelism, without it a plain pipeline). Default 2, or chosen by "
        "the planner when devices is set.",
        json_schema_extra=_no_schema_default,
    )
    stride: Literal[1, 2] = Field(
        default=1,
        description="Denoising stride; stride 2 adds one device and skips a step (needs modelN >= 2). Default 1, "
        "or chosen by the planner when devices is set.",
        json_schema_extra=_no_schema_default,
    )
    warm_up: int = Field(
        default=1, ge=1, le=limits.MAX_STEPS, description="Sequential warm-up steps before asynchronous denoising."
    )
    time_shift: bool = Field(default=False, description="Use AsyncDiff's time shifting.")
    cfg_parallel: bool = Field(
        default=False,
        description="Classifier-free guidance parallelism: two mirrored stage groups, one for the conditional and "
        "one for the unconditional half of every denoiser call (exact); doubles the devices. Needs "
        "generation.guidanceScale > 1.",
        json_schema_extra=_no_schema_default,
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=limits.MAX_REPLICAS,
        description="Independent generation groups (data parallel), each of (modelN + stride - 1) x (2 if "
        "cfgParallel) processes; they "
        "take shards of the outputs in turn. Default 1, or chosen by the planner when devices is set. More "
        "replicas than shards are clamped to the number of shards.",
        json_schema_extra=_no_schema_default,
    )
    devices: int | None = Field(
        default=None,
        ge=1,
        le=limits.MAX_REPLICAS * 8,
        description="Planner input: devices (GPUs or CPU ranks) for the whole job. With modelN, stride and "
        "replicas left out the layout planner chooses them for the goal; explicit layout fields are kept and "
        "must multiply out to exactly this many devices.",
    )
    goal: Literal["throughput", "latency"] | None = Field(
        default=None,
        description="Planner goal (needs devices): throughput = the most outputs per hour (plain pipelines, "
        "one per device, unless the model needs more memory than one device has); latency = the fastest single "
        "output at the allowed quality (AsyncDiff and CFG-parallel groups). Default throughput.",
    )
    quality: Literal["exact", "high", "any"] | None = Field(
        default=None,
        description="Planner input: the least output quality the latency planner may trade for speed: exact (no "
        "approximation: CFG-parallel and plain pipelines only), high (default: AsyncDiff layouts measured at "
        "LPIPS 0.30 or less against sequential in the AsyncDiff paper: modelN 2-3, stride 1), any (every layout, "
        "including stride 2).",
    )

    @field_validator("stride")
    @classmethod
    def _stride_two_needs_two_stages(cls, stride: int, info: ValidationInfo) -> int:
        if stride == 2 and info.data.get("model_n") == 1:
            raise ValueError(
                "2 needs modelN >= 2 (stride 2's extra device runs the last of several stages): use stride 1 "
                "with modelN 1, or modelN 2-4 with stride 2"
            )
        return stride

    @property
    def stage_devices(self) -> int:
        """Devices of one stage group: modelN + stride - 1."""
        return self.model_n + self.stride - 1

    @property
    def devices_per_group(self) -> int:
        """Processes (GPUs) one AsyncDiff process group needs: (modelN + stride - 1) x (2 if cfgParallel else 1)."""
        return self.stage_devices * (2 if self.cfg_parallel else 1)

    def devices_formula(self) -> str:
        """How ``devices_per_group`` follows from the fields, for messages: ``modelN + stride - 1 = 2 + 1 - 1 = 2``."""
        if self.cfg_parallel:
            return (
                f"(modelN + stride - 1) x 2 (cfgParallel) = ({self.model_n} + {self.stride} - 1) x 2 = "
                f"{self.devices_per_group}"
            )
        return f"modelN + stride - 1 = {self.model_n} + {self.stride} - 1 = {self.devices_per_group}"


class GenerationSpec(SpecModel):
    """What to generate. Every prompt is run imagesPerPrompt times; output i uses seed + i."""

    prompts: list[Prompt] | None = Field(
        default=None,
        min_length=1,
        max_length=limits.MAX_PROMPTS,
        description="Prompts, one output per prompt and image. Exactly one of prompts and promptsFrom "
        "(neither for svd).",
    )
    prompts_from: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="A JSONL file of prompts (s3://bucket/key, file:///path or a path); each line is a JSON "
        'string or an object {"prompt": ..., "negativePrompt": ...}.',
    )
    negative_prompt: str | None = Field(
        default=None, max_length=limits.MAX_PROMPT_CHARS, description="Negative prompt for every prompt."
    )
    prompt_count: int | None = Field(
        default=None,
        ge=1,
        le=limits.MAX_FILE_PROMPTS,
        description="How many prompts promptsFrom holds. Needed to shard a promptsFrom job (replicas > 1 or "
        "shardSize set): the shards are planned without reading the file; the worker checks the count.",
    )
    steps: int = Field(default=25, ge=1, le=limits.MAX_STEPS, description="Denoising steps.")
    guidance_scale: float = Field(
        default=7.5, ge=0.0, le=50.0, description="Classifier-free guidance scale (svd: the maximum guidance scale)."
    )
    height: int | None = Field(
        default=None,
        ge=limits.MIN_SIDE,
        le=limits.MAX_SIDE,
        multiple_of=8,
        description="Output height in pixels, a multiple of 8; default: the model's.",
    )
    width: int | None = Field(
        default=None,
        ge=limits.MIN_SIDE,
        le=limits.MAX_SIDE,
        multiple_of=8,
        description="Output width in pixels, a multiple of 8; default: the model's.",
    )
    seed: int = Field(
        default=0, ge=0, le=limits.MAX_SEED, description="Base seed; output i is generated with seed + i."
    )
    images_per_prompt: int = Field(
        default=1, ge=1, le=limits.MAX_IMAGES_PER_PROMPT, description="Outputs (images or videos) per prompt."
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        le=limits.MAX_BATCH_SIZE,
        description="Outputs per pipeline call (GPU throughput): consecutive outputs are generated together, each "
        "with its own seed, with the same results as one at a time (up to float reordering).",
    )
    init_image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Input image URI: img2img for sd15/sd21/sdxl/sd3, the image to inpaint for sdxl-inpaint, "
        "the low-resolution image for sd-upscaler.",
    )
    strength: float = Field(
        default=0.8, gt=0.0, le=1.0, description="How much the init image is changed (img2img, inpaint)."
    )
    mask_image: str | None = Field(
        default=None, min_length=1, max_length=1024, description="Mask image URI for sdxl-inpaint (white = repaint)."
    )
    control_image: str | None = Field(
        default=None, min_length=1, max_length=1024, description="Control image URI for sdxl-controlnet."
    )
    controlnet_conditioning_scale: float = Field(
        default=1.0, ge=0.0, le=2.0, description="ControlNet conditioning scale (sdxl-controlnet)."
    )
    conditioning_image: str | None = Field(
        default=None, min_length=1, max_length=1024, description="The image a video is generated from (svd)."
    )
    num_frames: int | None = Field(
        default=None, ge=1, le=limits.MAX_FRAMES, description="Video frames (svd, animatediff); default: the model's."
    )
    fps: int = Field(
        default=7, ge=1, le=60, description="Video frames per second (svd conditioning and the output file)."
    )
    noise_level: int = Field(default=20, ge=0, le=350, description="Noise added to the input image (sd-upscaler).")
    shard_size: int | None = Field(
        default=None,
        ge=1,
        le=limits.MAX_FILE_OUTPUTS,
        description="Outputs per shard: a generation group renders one shard at a time and a failed shard is "
        "retried alone. Default: enough outputs that loading the model costs under ~10% of a shard (see "
        "asyncdiff_worker.shards), but no more than an even share per replica.",
    )


class OutputSpec(SpecModel):
    """Where results go. The same S3 settings are used for every s3:// URI of the job (model, prompts, inputs).

    Credentials are never part of the spec: they come from the environment (AWS_ACCESS_KEY_ID, ..., or a web
    identity) or from a mounted Secret folder named by ASYNCDIFF_S3_SECRET_DIR.
    """

    uri: str = Field(
        min_length=1,
        max_length=1024,
        description="s3://bucket/prefix or file:///dir; outputs go to <uri>/<job name>/.",
    )
    format: OutputFormat | None = Field(
        default=None,
        description="png, jpeg or webp for images; mp4, gif or webp for video; default png for images and mp4 "
        "for video.",
    )
    quality: int = Field(default=90, ge=1, le=100, description="jpeg, webp and mp4 quality, 1 to 100.")
    endpoint_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=r"^https?://[^\s/]+(/.*)?$",
        description="S3-compatible endpoint, for example http://minio.storage:9000; default: AWS.",
    )
    region: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$", description="S3 region, default us-east-1."
    )
    force_path_style: bool = Field(default=False, description="Use path-style addressing (most S3-compatible stores).")


class JobSpec(SpecModel):
    """The worker's job: the ``spec`` of an AsyncDiffJob."""

    model: ModelSpec = Field(description="The pipeline and its weights.")
    parallelism: ParallelismSpec = Field(
        default_factory=lambda: ParallelismSpec(),
        description="AsyncDiff parallelism; devices per group = (modelN + stride - 1) x (2 if cfgParallel).",
    )
    generation: GenerationSpec = Field(description="What to generate.")
    output: OutputSpec = Field(description="Where the outputs and the result manifest go.")

    @property
    def devices_per_group(self) -> int:
        """Processes (GPUs) of one AsyncDiff process group: (modelN + stride - 1) x (2 if cfgParallel else 1)."""
        return self.parallelism.devices_per_group

    @model_validator(mode="after")
    def _batch_size_reproduces_single_calls(self) -> JobSpec:
        why = UNBATCHABLE_FAMILIES.get(self.model.family)
        if self.generation.batch_size > 1 and why is not None:
            raise ValueError(
                f"generation.batchSize: {self.generation.batch_size} is not supported for {self.model.family} ({why}, "
                "so batched outputs would not equal one output per seed): use batchSize 1"
            )
        return self

    @model_validator(mode="after")
    def _cfg_parallel_needs_guidance(self) -> JobSpec:
        if not self.parallelism.cfg_parallel:
            return self
        family = FAMILIES[self.model.family]
        if family.guidance is None:
            raise ValueError(
                f"parallelism.cfgParallel: {family.name} takes no classifier-free guidance, so there are no two "
                "halves to run in parallel: set cfgParallel false"
            )
        if self.generation.guidance_scale <= 1.0:
            raise ValueError(
                f"parallelism.cfgParallel: true needs generation.guidanceScale > 1 (got "
                f"{self.generation.guidance_scale:g}): with guidance off the pipeline runs no unconditional half; "
                "raise guidanceScale or set cfgParallel false"
            )
        return self


class JobMetadata(BaseModel):
    """The subset of Kubernetes object metadata the worker uses; other metadata fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Job name; outputs go to <output uri>/<name>/.",
    )
    namespace: str | None = Field(default=None, description="Kubernetes namespace (informational).")
    uid: str | None = Field(default=None, description="Kubernetes object uid, recorded in object metadata.")


class AsyncDiffJob(BaseModel):
    """A whole AsyncDiffJob manifest, as given to ``kubectl apply`` or ``asyncdiff run``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    api_version: Literal["asyncdiff.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["AsyncDiffJob"] = Field(KIND)
    metadata: JobMetadata = Field(default_factory=lambda: JobMetadata())
    spec: JobSpec
