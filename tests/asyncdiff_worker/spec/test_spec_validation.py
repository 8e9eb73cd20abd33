"""The job spec: valid jobs pass, and each wrong field gives one message naming it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import pytest
from asyncdiff.families import FAMILIES
from asyncdiff_worker.spec import (
    AsyncDiffJob,
    JobSpec,
    limits,
    load_job_file,
    validate_job,
    validate_job_text,
)
from asyncdiff_worker.spec.models import FamilyName

BASE: dict[str, Any] = {
    "model": {"family": "sd15", "source": "/models/tiny-sd15"},
    "parallelism": {"modelN": 2, "stride": 1, "warmUp": 1, "timeShift": False},
    "generation": {"prompts": ["a cat"], "steps": 8, "height": 64, "width": 64},
    "output": {"uri": "s3://outputs/jobs", "endpointUrl": "http://127.0.0.1:9000", "forcePathStyle": True},
}


def manifest(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob", "metadata": {"name": "j1"}, "spec": spec}


def with_(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """BASE with one field set (``None`` removes it)."""
    spec = copy.deepcopy(base or BASE)
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


def messages(spec: dict[str, Any]) -> list[str]:
    result = validate_job(manifest(spec))
    assert isinstance(result, list), f"expected errors, got a valid job: {result}"
    return result


def test_valid_manifest_and_bare_spec() -> None:
    job = validate_job(manifest(BASE))
    assert isinstance(job, AsyncDiffJob)
    assert job.metadata.name == "j1"
    assert job.spec.devices_per_group == 2
    bare = validate_job(BASE)
    assert isinstance(bare, AsyncDiffJob) and bare.metadata.name is None
    assert bare.spec == job.spec


def test_devices_per_group_is_model_n_plus_stride_minus_one() -> None:
    job = validate_job(with_("parallelism", {"modelN": 4, "stride": 2}))
    assert isinstance(job, AsyncDiffJob)
    assert job.spec.devices_per_group == 5


def test_cfg_parallel_doubles_the_devices_and_model_n_1_is_allowed() -> None:
    cases = [
        ({"modelN": 1, "stride": 1}, 1),
        ({"modelN": 1, "stride": 1, "cfgParallel": True}, 2),
        ({"modelN": 2, "stride": 1, "cfgParallel": True}, 4),
        ({"modelN": 3, "stride": 2, "cfgParallel": True}, 8),
    ]
    for parallelism, devices in cases:
        job = validate_job(with_("parallelism", parallelism))
        assert isinstance(job, AsyncDiffJob), job
        assert job.spec.devices_per_group == devices
    job = validate_job(with_("parallelism", {"modelN": 2, "stride": 2, "cfgParallel": True}))
    assert isinstance(job, AsyncDiffJob)
    assert job.spec.parallelism.devices_formula() == "(modelN + stride - 1) x 2 (cfgParallel) = (2 + 2 - 1) x 2 = 6"


def test_model_n_1_with_stride_2_names_the_field() -> None:
    errs = messages(with_("parallelism", {"modelN": 1, "stride": 2}))
    assert errs == [
        "spec.parallelism.stride: 2 needs modelN >= 2 (stride 2's extra device runs the last of several stages): "
        "use stride 1 with modelN 1, or modelN 2-4 with stride 2"
    ]


@pytest.mark.parametrize("scale", [1.0, 0.5, 0])
def test_cfg_parallel_with_guidance_off_is_refused(scale: float) -> None:
    spec = with_("generation.guidanceScale", scale, with_("parallelism.cfgParallel", True))
    errs = messages(spec)
    assert len(errs) == 1 and errs[0].startswith(
        "spec: parallelism.cfgParallel: true needs generation.guidanceScale > 1"
    )
    assert "set cfgParallel false" in errs[0]
    assert isinstance(validate_job(with_("generation.guidanceScale", scale)), AsyncDiffJob)  # fine without cfg


def test_cfg_parallel_on_a_family_without_guidance_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every family of today batches guidance as two halves; a family without it (guidance None) must be refused.
    import dataclasses

    monkeypatch.setitem(FAMILIES, "sd15", dataclasses.replace(FAMILIES["sd15"], guidance=None))
    errs = messages(with_("parallelism.cfgParallel", True))
    assert errs == [
        "spec: parallelism.cfgParallel: sd15 takes no classifier-free guidance, so there are no two halves to run in "
        "parallel: set cfgParallel false"
    ]


def test_batch_size_is_refused_where_batching_changes_the_outputs() -> None:
    svd = with_("generation", {"steps": 8, "batchSize": 2, "conditioningImage": "/c.png"}, with_("model.family", "svd"))
    errs = messages(svd)
    assert len(errs) == 1 and errs[0].startswith("spec: generation.batchSize: 2 is not supported for svd")
    assert "use batchSize 1" in errs[0]
    job = validate_job(with_("generation.batchSize", 4))
    assert isinstance(job, AsyncDiffJob) and job.spec.generation.batch_size == 4
    assert messages(with_("generation.batchSize", 17)) == ["spec.generation.batchSize: 17 is more than the maximum 16"]


def test_family_literal_matches_the_library_table() -> None:
    assert set(FamilyName.__args__) == set(FAMILIES)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("parallelism.modelN", 5, "spec.parallelism.modelN: 5 is not one of 1, 2, 3, 4"),
        ("parallelism.stride", 3, "spec.parallelism.stride: 3 is not one of 1, 2"),
        ("parallelism.warmUp", 0, "spec.parallelism.warmUp: 0 is less than the minimum 1"),
        (
            "model.family",
            "sd99",
            'spec.model.family: "sd99" is not one of sd15, sd21, sdxl, sdxl-inpaint, '
            "sdxl-controlnet, sd3, sd-upscaler, svd, animatediff",
        ),
        ("model.dtype", "float8", 'spec.model.dtype: "float8" is not one of auto, float16, bfloat16, float32'),
        ("model.source", None, "spec.model.source: is required"),
        ("generation.height", 100, "spec.generation.height: 100 is not a multiple of 8"),
        ("generation.width", 65, "spec.generation.width: 65 is not a multiple of 8"),
        ("generation.height", 4096, f"spec.generation.height: 4096 is more than the maximum {limits.MAX_SIDE}"),
        ("generation.steps", 0, "spec.generation.steps: 0 is less than the minimum 1"),
        ("generation.steps", "many", 'spec.generation.steps: "many" is not an integer'),
        ("generation.imagesPerPrompt", 17, "spec.generation.imagesPerPrompt: 17 is more than the maximum 16"),
        ("generation.seed", -1, "spec.generation.seed: -1 is less than the minimum 0"),
        ("generation.guidanceScale", 99, "spec.generation.guidanceScale: 99 is more than the maximum 50.0"),
        ("generation.prompts", [], "spec.generation.prompts: needs at least 1 item(s)"),
        (
            "generation.prompts",
            ["x"] * (limits.MAX_PROMPTS + 1),
            f"spec.generation.prompts: {limits.MAX_PROMPTS + 1} items is more than the limit {limits.MAX_PROMPTS}",
        ),
        (
            "generation.prompts",
            ["x" * (limits.MAX_PROMPT_CHARS + 1)],
            f"spec.generation.prompts[0]: is longer than {limits.MAX_PROMPT_CHARS} characters",
        ),
        ("generation.strength", 0, "spec.generation.strength: 0 is not more than 0.0"),
        ("output.format", "bmp", 'spec.output.format: "bmp" is not one of png, jpeg, webp, mp4, gif'),
        ("output.quality", 101, "spec.output.quality: 101 is more than the maximum 100"),
        ("output.endpointUrl", "minio:9000", 'spec.output.endpointUrl: "minio:9000" does not match'),
        ("output.colour", "red", "spec.output.colour: is not a known field"),
        ("output.secretAccessKey", "x", "spec.output.secretAccessKey: credentials are not allowed in the spec"),
        ("model.awsAccessKeyId", "x", "spec.model.awsAccessKeyId: credentials are not allowed in the spec"),
    ],
)
def test_schema_errors_name_the_field(path: str, value: Any, expected: str) -> None:
    errs = messages(with_(path, value))
    assert any(e.startswith(expected) for e in errs), errs
    assert all("\n" not in e for e in errs)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (with_("model.family", "svd"), "spec.generation.prompts: svd takes no prompts"),
        (with_("model.family", "svd"), "spec.generation.conditioningImage: is required for svd"),
        (with_("model.family", "sd-upscaler"), "spec.generation.initImage: is required for sd-upscaler"),
        (with_("model.family", "sd-upscaler"), "spec.generation.height: sd-upscaler's output is 4x its input"),
        (with_("model.family", "sdxl-inpaint"), "spec.generation.maskImage: is required for sdxl-inpaint"),
        (with_("model.family", "sdxl-controlnet"), "spec.model.controlnet: is required for sdxl-controlnet"),
        (with_("model.family", "sdxl-controlnet"), "spec.generation.controlImage: is required for sdxl-controlnet"),
        (with_("model.family", "animatediff"), "spec.model.motionAdapter: is required for animatediff"),
        (with_("model.controlnet", "/m/cn"), "spec.model.controlnet: only sdxl-controlnet uses a ControlNet"),
        (with_("generation.maskImage", "/x.png"), "spec.generation.maskImage: only sdxl-inpaint uses a mask"),
        (with_("generation.numFrames", 4), "spec.generation.numFrames: sd15 makes images, not video"),
        (with_("output.format", "mp4"), 'spec.output.format: "mp4" is not one of png, jpeg, webp (sd15 makes images)'),
        (with_("generation.prompts", None), "spec.generation.prompts: give prompts or promptsFrom"),
        (
            with_("generation.promptsFrom", "s3://bucket/p.jsonl"),
            "spec.generation.promptsFrom: give either prompts or promptsFrom, not both",
        ),
        (with_("output.uri", "/tmp/out"), 'spec.output.uri: "/tmp/out" must be s3://bucket/prefix or file:///dir'),
        (with_("output.uri", "s3://B_ad/x"), "spec.output.uri: s3://B_ad/x: 'B_ad' is not a valid S3 bucket name"),
        (with_("model.source", "gs://bucket/m"), "spec.model.source: gs://bucket/m: scheme 'gs' is not supported"),
        (with_("parallelism.warmUp", 8), "spec.parallelism.warmUp: 8 must be less than spec.generation.steps (8)"),
        (
            with_("generation.imagesPerPrompt", 16, with_("generation.prompts", ["p"] * 200)),
            f"spec.generation.imagesPerPrompt: 200 prompts x 16 = 3200 outputs is more than the limit "
            f"{limits.MAX_OUTPUTS}",
        ),
    ],
)
def test_cross_field_errors(spec: dict[str, Any], expected: str) -> None:
    errs = messages(spec)
    assert any(e.startswith(expected) for e in errs), errs


def test_every_wrong_field_is_reported_at_once() -> None:
    spec = with_("parallelism.modelN", 5, with_("generation.height", 13, with_("model.family", "nope")))
    errs = messages(spec)
    assert len(errs) == 3
    assert {e.split(":")[0] for e in errs} == {"spec.parallelism.modelN", "spec.generation.height", "spec.model.family"}


def test_manifest_envelope_errors() -> None:
    doc = manifest(BASE) | {"apiVersion": "v1", "kind": "Job"}
    errs = validate_job(doc)
    assert isinstance(errs, list)
    assert 'apiVersion: "v1" is not one of asyncdiff.io/v1alpha1' in errs
    assert 'kind: "Job" is not one of AsyncDiffJob' in errs
    errs = validate_job({"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob"})
    assert errs == ["spec: is required"]
    bad_name = manifest(BASE) | {"metadata": {"name": "Bad_Name"}}
    errs = validate_job(bad_name)
    assert isinstance(errs, list) and errs[0].startswith('metadata.name: "Bad_Name" does not match')


def test_operator_run_policy_fields_are_ignored_in_a_manifest_but_typos_are_not() -> None:
    spec = BASE | {"backoffLimit": 3, "activeDeadlineSeconds": 600, "suspend": False}
    assert isinstance(validate_job(manifest(spec)), AsyncDiffJob)
    errs = validate_job(manifest(BASE | {"generaton": {}}))
    assert errs == ["spec.generaton: is not a known field"]


def test_yaml_text_and_files(tmp_path: Any) -> None:
    assert validate_job_text("a: [")[0].startswith("job: not valid YAML")
    assert validate_job_text("---\na: 1\n---\nb: 2\n") == ["job: expected exactly one YAML document, found 2"]
    assert validate_job_text("[1, 2]") == ["job: expected a mapping (an AsyncDiffJob manifest or its spec), got list"]
    path = tmp_path / "job.json"
    path.write_text(json.dumps(manifest(BASE)))
    assert isinstance(load_job_file(path), AsyncDiffJob)
    missing = load_job_file(tmp_path / "nope.yaml")
    assert isinstance(missing, list) and missing[0].startswith("job: cannot read")


def test_schema_is_crd_friendly() -> None:
    schema = AsyncDiffJob.model_json_schema(by_alias=True)
    defs = schema["$defs"]
    spec_props = defs["JobSpec"]["properties"]
    assert set(spec_props) == {"model", "parallelism", "generation", "output"}
    assert defs["ParallelismSpec"]["properties"]["modelN"]["enum"] == [1, 2, 3, 4]
    for name in ("ModelSpec", "ParallelismSpec", "GenerationSpec", "OutputSpec", "JobSpec"):
        model = defs[name]
        assert model["additionalProperties"] is False, name
        for prop, body in model["properties"].items():
            assert body.get("description"), f"{name}.{prop} has no description"
            assert prop[0].islower() and "_" not in prop, prop
            assert "additionalProperties" not in json.dumps(body), f"{name}.{prop} is a free-form dict"
    height = defs["GenerationSpec"]["properties"]["height"]["anyOf"][0]
    assert height == {"maximum": limits.MAX_SIDE, "minimum": 8, "multipleOf": 8, "type": "integer"}


def test_spec_round_trips_by_alias() -> None:
    job = validate_job(BASE)
    assert isinstance(job, AsyncDiffJob)
    dumped = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["parallelism"]["modelN"] == 2 and "model_n" not in dumped["parallelism"]
    assert JobSpec.model_validate(dumped) == job.spec


def test_spec_import_needs_no_torch_diffusers_or_boto3() -> None:
    code = (
        "import sys, asyncdiff_worker, asyncdiff_worker.spec\n"
        "from asyncdiff_worker.spec import validate_job\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'boto3', 'botocore') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    import asyncdiff_worker

    root = str(__import__("pathlib").Path(asyncdiff_worker.__file__).parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"})
