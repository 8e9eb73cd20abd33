"""Deterministic keys, job identity, seeds and the per-family pipeline arguments."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker.calls import call_kwargs, derive_seed, output_format, plan_outputs, uses_img2img
from asyncdiff_worker.inputs import PromptItem
from asyncdiff_worker.keys import JobLayout, job_identity
from asyncdiff_worker.spec import AsyncDiffJob, validate_job
from PIL import Image

SPEC: dict[str, Any] = {
    "model": {"family": "sd15", "source": "/m"},
    "generation": {"prompts": ["a", "b"], "imagesPerPrompt": 3, "seed": 10, "steps": 4},
    "output": {"uri": "s3://bucket-x/out"},
}


def job(spec: dict[str, Any], name: str | None = "j1") -> AsyncDiffJob:
    doc = {"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob", "metadata": {"name": name}, "spec": spec}
    if name is None:
        doc = spec
    result = validate_job(doc)
    assert isinstance(result, AsyncDiffJob), result
    return result


def test_identity_and_layout_are_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = job_identity(job(SPEC)), job_identity(job(copy.deepcopy(SPEC)))
    assert a == b and a.name == "j1" and a.uid.startswith("local-")
    other = copy.deepcopy(SPEC)
    other["generation"]["seed"] = 11
    assert job_identity(job(other)).uid != a.uid
    layout = JobLayout.for_job("s3://bucket-x/out", a)
    assert layout.manifest.uri == "s3://bucket-x/out/j1/manifest.json"
    assert layout.output(7, 2, "jpeg").uri == "s3://bucket-x/out/j1/outputs/00007-p0002.jpg"
    monkeypatch.setenv("ASYNCDIFF_JOB_NAME", "from-env")
    monkeypatch.setenv("ASYNCDIFF_JOB_UID", "uid-1")
    monkeypatch.setenv("ASYNCDIFF_ATTEMPT", "3")
    ident = job_identity(job(SPEC))
    assert (ident.name, ident.uid, ident.attempt) == ("from-env", "uid-1", 3)


def test_bare_spec_name_from_file() -> None:
    assert job_identity(job(SPEC, name=None), Path("/x/My Job.yaml")).name == "my-job"
    assert job_identity(job(SPEC, name=None)).name == "job"


def test_outputs_and_seeds() -> None:
    outputs = plan_outputs(job(SPEC).spec, [PromptItem("a"), PromptItem("b", "neg")])
    assert [(o.index, o.prompt_index, o.image_index, o.seed) for o in outputs] == [
        (0, 0, 0, 10),
        (1, 0, 1, 11),
        (2, 0, 2, 12),
        (3, 1, 0, 13),
        (4, 1, 1, 14),
        (5, 1, 2, 15),
    ]
    assert outputs[4].negative == "neg"
    assert derive_seed(2**63 - 1, 1) == 0


IMG = Image.new("RGB", (16, 16))


@pytest.mark.parametrize(
    ("family", "extra", "expected_keys"),
    [
        ("sd15", {"generation.height": 64}, {"prompt", "height", "guidance_scale", "num_images_per_prompt"}),
        ("sd15", {"generation.initImage": "/i.png"}, {"prompt", "image", "strength"}),
        (
            "sdxl-inpaint",
            {"generation.initImage": "/i.png", "generation.maskImage": "/m.png"},
            {"prompt", "image", "mask_image", "strength"},
        ),
        (
            "sdxl-controlnet",
            {"generation.controlImage": "/c.png", "model.controlnet": "/cn"},
            {"prompt", "image", "controlnet_conditioning_scale"},
        ),
        ("sd-upscaler", {"generation.initImage": "/i.png"}, {"prompt", "image", "noise_level"}),
        (
            "svd",
            {"generation.conditioningImage": "/c.png", "generation.numFrames": 2, "generation.prompts": None},
            {"image", "num_frames", "fps", "max_guidance_scale", "min_guidance_scale"},
        ),
        (
            "animatediff",
            {"model.motionAdapter": "/ma", "generation.numFrames": 2, "output.format": "gif"},
            {"prompt", "num_frames", "num_videos_per_prompt"},
        ),
    ],
)
def test_call_kwargs_per_family(family: str, extra: dict[str, Any], expected_keys: set[str]) -> None:
    spec = copy.deepcopy(SPEC)
    spec["model"]["family"] = family
    for path, value in extra.items():
        section, key = path.split(".")
        if value is None:
            spec[section].pop(key)
        else:
            spec[section][key] = value
    parsed = job(spec).spec
    images = {"init_image": IMG, "mask_image": IMG, "control_image": IMG, "conditioning_image": IMG}
    item = plan_outputs(parsed, [PromptItem("p")])[0]
    kwargs = call_kwargs(parsed, item, images)
    assert expected_keys <= set(kwargs), kwargs.keys()
    assert kwargs["num_inference_steps"] == 4 and kwargs["output_type"] == "pil"
    if family == "svd":
        assert "prompt" not in kwargs
        assert output_format(parsed) == "mp4"
    assert uses_img2img(parsed) == (family == "sd15" and "generation.initImage" in extra)


def test_batches_group_consecutive_outputs_without_mixing_negative_prompts() -> None:
    from asyncdiff_worker.calls import batches

    outputs = plan_outputs(job(SPEC).spec, [PromptItem("a"), PromptItem("b", "neg")])  # 3 images per prompt
    assert [[o.index for o in g] for g in batches(outputs, 2)] == [[0, 1], [2], [3, 4], [5]]
    assert [[o.index for o in g] for g in batches(outputs, 1)] == [[i] for i in range(6)]
    same = plan_outputs(job(SPEC).spec, [PromptItem("a"), PromptItem("b")])
    assert [[o.index for o in g] for g in batches(same, 4)] == [[0, 1, 2, 3], [4, 5]]


def test_batch_call_kwargs_lists_the_prompts_and_one_item_is_the_plain_call() -> None:
    from asyncdiff_worker.calls import batch_call_kwargs, batches

    spec = job(SPEC).spec
    outputs = plan_outputs(spec, [PromptItem("a", "n1"), PromptItem("b", "n2")])
    group = batches(outputs, 4)[0]
    kw = batch_call_kwargs(spec, group, {})
    assert kw["prompt"] == ["a", "a", "a", "b"] and kw["negative_prompt"] == ["n1", "n1", "n1", "n2"]
    assert kw["num_images_per_prompt"] == 1
    assert batch_call_kwargs(spec, outputs[:1], {}) == call_kwargs(spec, outputs[0], {})
    svd = copy.deepcopy(SPEC)
    svd["model"]["family"] = "svd"
    svd["generation"].pop("prompts")
    svd["generation"]["conditioningImage"] = "/c.png"
    svd_spec = job(svd).spec
    items = plan_outputs(svd_spec, [PromptItem("")])
    kw = batch_call_kwargs(svd_spec, items[:2], {"conditioning_image": IMG})
    assert kw["num_videos_per_prompt"] == 2 and "prompt" not in kw
