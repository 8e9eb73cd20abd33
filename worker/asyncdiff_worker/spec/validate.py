"""Validation of a job (an AsyncDiffJob manifest or a bare spec) into one clear message per wrong field.

Why our own messages: pydantic's defaults ("Input should be 2, 3 or 4") do not name the field the way a user wrote
it. Each message here is one line, starts with the field's path as written in YAML (``spec.parallelism.modelN``),
and says what is allowed. Every schema error is reported at once; rules that span fields (which inputs a family
needs, image vs video formats, URI shapes) are checked once the schema passes.

Why strict, by alias only: ``asyncdiff run`` must accept exactly what the cluster accepts. The API server checks a
manifest against the CRD generated from these models: JSON types as written (``steps: "20"`` is a string, not an
integer), camelCase names only (``model_n`` is an unknown field), unknown fields refused (kubectl's strict field
validation). So a manifest is validated as the JSON kubectl would send, in pydantic's strict mode, by alias only;
the cross-field rules the CRD holds as CEL (``rules.py``) are checked here in Python under the same field names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from asyncdiff_worker.spec import limits, rules
from asyncdiff_worker.spec.models import (
    API_VERSION,
    IMAGE_FORMATS,
    KIND,
    VIDEO_FORMATS,
    AsyncDiffJob,
    JobMetadata,
    JobSpec,
)
from asyncdiff_worker.spec.uris import parse_location

VIDEO_FAMILIES = frozenset(rules.VIDEO_FAMILIES)
IMG2IMG_FAMILIES = frozenset(rules.IMG2IMG_FAMILIES)

RUN_POLICY_FIELDS: frozenset[str] = frozenset({"runPolicy", "pod"})
"""Top-level ``spec`` fields of the operator's (the CRD's ``runPolicy`` and ``pod``). A manifest validated with the
worker's ``JobSpec`` ignores them; ``asyncdiff run`` validates them with the operator's spec model instead
(``spec_model``), as the CRD does. Any other unknown field is an error, as with ``kubectl apply``."""

_M = TypeVar("_M", bound=BaseModel)

_CREDENTIAL_WORDS = ("secret", "accesskey", "access_key", "password", "credential", "token", "sessiontoken")


def _path(loc: Sequence[int | str], prefix: str) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: object) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return json.dumps(value)
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _error_message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        name = str(err["loc"][-1]).lower() if err["loc"] else ""
        if any(word in name for word in _CREDENTIAL_WORDS):
            return (
                "credentials are not allowed in the spec: give them in the environment "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a mounted Secret (ASYNCDIFF_S3_SECRET_DIR)"
            )
        return "is not a known field"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{_show(value)} is not one of {expected}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        word = "less than the minimum" if kind == "greater_than_equal" else "not more than"
        return f"{_show(value)} is {word} {bound}"
    if kind in ("less_than_equal", "less_than"):
        upper = ctx.get("le", ctx.get("lt"))
        return f"{_show(value)} is more than the maximum {upper}"
    if kind == "multiple_of":
        return f"{_show(value)} is not a multiple of {ctx.get('multiple_of')}"
    if kind in ("too_long", "too_short"):
        actual = ctx.get("actual_length")
        if kind == "too_long":
            return f"{actual} items is more than the limit {ctx.get('max_length')}"
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind in ("string_too_long", "string_too_short"):
        if kind == "string_too_long":
            return f"is longer than {ctx.get('max_length')} characters"
        return "must not be empty"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{_show(value)} is not an integer"
    if kind in ("float_type", "float_parsing"):
        return f"{_show(value)} is not a number"
    if kind in ("bool_type", "bool_parsing"):
        return f"{_show(value)} is not true or false"
    if kind == "string_type":
        return f"{_show(value)} is not a string"
    if kind in ("list_type",):
        return f"{_show(value)} is not a list"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{_show(value)} is not a mapping"
    if kind == "string_pattern_mismatch":
        return f"{_show(value)} does not match {ctx.get('pattern')}"
    msg = str(err.get("msg", "is invalid"))
    return msg.removeprefix("Value error, ")


_RELATIVE_FIELD = re.compile(r"^([a-z][A-Za-z0-9]*(?:\.[a-z][A-Za-z0-9]*)+): ")


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per error: ``<path>: <what is wrong>``. A model-level rule whose message starts with a field path
    under the model (``runPolicy.numNodes: ...``) is reported at that field (``spec.runPolicy.numNodes: ...``)."""
    out = []
    for err in exc.errors():
        path, message = _path(err["loc"], prefix), _error_message(err)
        match = _RELATIVE_FIELD.match(message)
        if match and err["type"] == "value_error":
            path, message = f"{path}.{match.group(1)}" if path else match.group(1), message[match.end() :]
        out.append(f"{path}: {message}")
    return out


def _strict(model: type[_M], data: object) -> _M:
    """Validate ``data`` as the JSON kubectl sends (YAML dates become strings), strictly and by alias only."""
    return model.model_validate_json(json.dumps(data, default=str), strict=True, by_alias=True, by_name=False)


def check_semantics(spec: JobSpec) -> list[str]:
    """Cross-field rules of a schema-valid spec, one message per wrong field (paths start with ``spec.``)."""
    errs: list[str] = []
    fam = spec.model.family
    gen = spec.generation
    video = fam in VIDEO_FAMILIES

    def bad(field: str, message: str) -> None:
        errs.append(f"spec.{field}: {message}")

    # URIs
    for field, value in (
        ("model.source", spec.model.source),
        ("model.controlnet", spec.model.controlnet),
        ("model.motionAdapter", spec.model.motion_adapter),
        ("generation.promptsFrom", gen.prompts_from),
        ("generation.initImage", gen.init_image),
        ("generation.maskImage", gen.mask_image),
        ("generation.controlImage", gen.control_image),
        ("generation.conditioningImage", gen.conditioning_image),
    ):
        if value is not None:
            try:
                parse_location(value)
            except ValueError as exc:
                bad(field, str(exc))
    out = spec.output.uri
    if not (out.startswith("s3://") or out.startswith("file://")):
        bad("output.uri", f"{_show(out)} must be s3://bucket/prefix or file:///dir")
    else:
        try:
            parse_location(out)
        except ValueError as exc:
            bad("output.uri", str(exc))

    # components
    if spec.model.controlnet is not None and fam != "sdxl-controlnet":
        bad("model.controlnet", f"only sdxl-controlnet uses a ControlNet, not {fam}")
    if fam == "sdxl-controlnet" and spec.model.controlnet is None:
        bad("model.controlnet", "is required for sdxl-controlnet")
    if spec.model.motion_adapter is not None and fam != "animatediff":
        bad("model.motionAdapter", f"only animatediff uses a motion adapter, not {fam}")
    if fam == "animatediff" and spec.model.motion_adapter is None:
        bad("model.motionAdapter", "is required for animatediff")

    # prompts
    if fam == "svd":
        if gen.prompts is not None:
            bad("generation.prompts", "svd takes no prompts: it animates generation.conditioningImage")
        if gen.prompts_from is not None:
            bad("generation.promptsFrom", "svd takes no prompts: it animates generation.conditioningImage")
        if gen.negative_prompt is not None:
            bad("generation.negativePrompt", "svd takes no prompts")
    elif gen.prompts is None and gen.prompts_from is None:
        bad("generation.prompts", "give prompts or promptsFrom")
    elif gen.prompts is not None and gen.prompts_from is not None:
        bad("generation.promptsFrom", "give either prompts or promptsFrom, not both")
    if gen.prompt_count is not None and gen.prompts_from is None:
        bad("generation.promptCount", "counts the prompts of promptsFrom; inline prompts are counted already")
    sharded = spec.parallelism.replicas > 1 or gen.shard_size is not None
    if gen.prompts_from is not None and gen.prompt_count is None and sharded:
        bad(
            "generation.promptCount",
            "is required with promptsFrom when replicas > 1 or shardSize is set (shards are planned without "
            "reading the file): give the number of prompts in it",
        )
    n_prompts = len(gen.prompts) if gen.prompts is not None else (1 if fam == "svd" else gen.prompt_count or 0)
    cap = limits.MAX_OUTPUTS if gen.prompts_from is None else limits.MAX_FILE_OUTPUTS
    if n_prompts * gen.images_per_prompt > cap:
        bad(
            "generation.imagesPerPrompt",
            f"{n_prompts} prompts x {gen.images_per_prompt} = {n_prompts * gen.images_per_prompt} outputs is "
            f"more than the limit {cap}",
        )

    # per-family inputs
    uses_init = fam in IMG2IMG_FAMILIES or fam in ("sdxl-inpaint", "sd-upscaler")
    if gen.init_image is not None and not uses_init:
        bad("generation.initImage", f"{fam} takes no init image")
    if fam in ("sdxl-inpaint", "sd-upscaler") and gen.init_image is None:
        what = "the image to inpaint" if fam == "sdxl-inpaint" else "the low-resolution image to upscale"
        bad("generation.initImage", f"is required for {fam} ({what})")
    if gen.mask_image is not None and fam != "sdxl-inpaint":
        bad("generation.maskImage", f"only sdxl-inpaint uses a mask, not {fam}")
    if fam == "sdxl-inpaint" and gen.mask_image is None:
        bad("generation.maskImage", "is required for sdxl-inpaint")
    if gen.control_image is not None and fam != "sdxl-controlnet":
        bad("generation.controlImage", f"only sdxl-controlnet uses a control image, not {fam}")
    if fam == "sdxl-controlnet" and gen.control_image is None:
        bad("generation.controlImage", "is required for sdxl-controlnet")
    if gen.conditioning_image is not None and fam != "svd":
        bad("generation.conditioningImage", f"only svd uses a conditioning image, not {fam}")
    if fam == "svd" and gen.conditioning_image is None:
        bad("generation.conditioningImage", "is required for svd (the image the video starts from)")
    if gen.num_frames is not None and not video:
        bad("generation.numFrames", f"{fam} makes images, not video")
    if fam == "sd-upscaler":
        for side, size in (("height", gen.height), ("width", gen.width)):
            if size is not None:
                bad(f"generation.{side}", "sd-upscaler's output is 4x its input image; do not set it")

    # output format
    fmt = spec.output.format
    if fmt is not None:
        allowed = VIDEO_FORMATS if video else IMAGE_FORMATS
        if fmt not in allowed:
            kind = "video" if video else "images"
            bad("output.format", f"{_show(fmt)} is not one of {', '.join(allowed)} ({fam} makes {kind})")

    # parallelism
    errs += _check_planner_inputs(spec)
    if spec.parallelism.warm_up >= gen.steps:
        bad(
            "parallelism.warmUp",
            f"{spec.parallelism.warm_up} must be less than spec.generation.steps ({gen.steps})",
        )
    return errs


def _check_planner_inputs(spec: JobSpec) -> list[str]:
    """goal and quality need devices; devices must fit the explicit layout fields (the planner says why not)."""
    par = spec.parallelism
    errs = [
        f"spec.parallelism.{name}: needs spec.parallelism.devices (how many devices the planner may use)"
        for name, value in (("goal", par.goal), ("quality", par.quality))
        if value is not None and par.devices is None
    ]
    if par.devices is not None and not errs:
        from asyncdiff_worker.planner import PlanError, plan_layout

        try:
            plan_layout(spec)
        except PlanError as exc:
            errs.append(str(exc))
    return errs


def _is_manifest(data: Mapping[str, Any]) -> bool:
    return any(key in data for key in ("apiVersion", "kind", "metadata", "spec"))


def validate_job(
    data: object,
    *,
    run_policy_fields: Collection[str] = RUN_POLICY_FIELDS,
    spec_model: type[JobSpec] = JobSpec,
) -> AsyncDiffJob | list[str]:
    """Validate an AsyncDiffJob manifest or a bare spec (a mapping, as parsed from YAML or JSON).

    Returns the job (a bare spec is wrapped into an AsyncDiffJob without metadata) or a list of one-line messages,
    one per wrong field, each starting with the field's path (``spec.parallelism.modelN: 5 is not one of 2, 3, 4``).
    Validation is strict and by alias only, as the CRD's (see the module docstring). ``spec_model`` validates a
    manifest's spec (the operator's ``AsyncDiffJobSpec`` checks ``runPolicy`` and ``pod`` too); with the worker's
    ``JobSpec`` the top-level spec fields named in ``run_policy_fields`` are ignored.
    """
    if not isinstance(data, Mapping):
        return [f"job: expected a mapping (an AsyncDiffJob manifest or its spec), got {type(data).__name__}"]
    if not _is_manifest(data):
        try:
            bare = _strict(JobSpec, dict(data))
        except ValidationError as exc:
            return format_validation_error(exc, prefix="spec")
        errors = check_semantics(bare)
        return errors or AsyncDiffJob.model_validate({"apiVersion": API_VERSION, "kind": KIND, "spec": bare})
    doc = dict(data)
    errs: list[str] = []
    if doc.get("apiVersion") != API_VERSION:
        errs.append(f"apiVersion: {_show(doc.get('apiVersion'))} is not one of {API_VERSION}")
    if doc.get("kind") != KIND:
        errs.append(f"kind: {_show(doc.get('kind'))} is not one of {KIND}")
    errs += [f"{key}: is not a known field" for key in doc if key not in ("apiVersion", "kind", "metadata", "spec")]
    metadata: JobMetadata | None = None
    try:
        metadata = JobMetadata.model_validate(doc.get("metadata") or {})
    except ValidationError as exc:
        errs += format_validation_error(exc, prefix="metadata")
    spec_data = doc.get("spec")
    if spec_data is None:
        return [*errs, "spec: is required"]
    if isinstance(spec_data, Mapping) and spec_model is JobSpec:
        spec_data = {k: v for k, v in spec_data.items() if k not in run_policy_fields}
    try:
        spec = _strict(spec_model, spec_data)
    except ValidationError as exc:
        return errs + format_validation_error(exc, prefix="spec")
    errs += check_semantics(spec)
    if errs or metadata is None:
        return errs
    return AsyncDiffJob(apiVersion=API_VERSION, kind=KIND, metadata=metadata, spec=spec)


def parse_job_text(text: str) -> object:
    """Parse YAML (or JSON) text into Python data; raises ``ValueError`` with a one-line reason."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"not valid YAML{where}: {first}") from exc
    if len(docs) != 1:
        raise ValueError(f"expected exactly one YAML document, found {len(docs)}")
    return docs[0]


def validate_job_text(text: str, *, spec_model: type[JobSpec] = JobSpec) -> AsyncDiffJob | list[str]:
    """``validate_job`` for YAML or JSON text."""
    try:
        data = parse_job_text(text)
    except ValueError as exc:
        return [f"job: {exc}"]
    return validate_job(data, spec_model=spec_model)


def load_job_file(path: str | Path, *, spec_model: type[JobSpec] = JobSpec) -> AsyncDiffJob | list[str]:
    """``validate_job`` for a YAML or JSON file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [f"job: cannot read {path}: {exc.strerror or exc}"]
    return validate_job_text(text, spec_model=spec_model)
