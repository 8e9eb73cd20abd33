"""A model of another family than the job declares is a user error found before loading (``model_family.py``).

The tiny saved pipelines are real ``save_pretrained`` folders, so their ``model_index.json`` is what diffusers
writes for each family.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from asyncdiff.families import FAMILIES
from asyncdiff_worker.errors import SpecError
from asyncdiff_worker.exit_codes import ExitCode
from asyncdiff_worker.local_run import run_job
from asyncdiff_worker.model_family import ACCEPTED_CLASSES, REQUIRED_COMPONENTS, check_family

ALL = sorted(FAMILIES)


def test_tables_cover_every_family() -> None:
    assert set(ACCEPTED_CLASSES) == set(FAMILIES) == set(REQUIRED_COMPONENTS)
    for name, family in FAMILIES.items():
        assert set(family.pipeline_classes) <= set(ACCEPTED_CLASSES[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("saved", ALL)
def test_each_tiny_pipeline_matches_its_family_and_no_unrelated_one(tiny_model_dir: Any, saved: str) -> None:
    index = json.loads((tiny_model_dir(saved) / "model_index.json").read_text())
    check_family(index, saved, "/m")  # its own family passes
    compatible = {  # families that legitimately load another family's folder
        "sd15": {"sd21", "animatediff"},
        "sd21": {"sd15", "animatediff"},
        "sdxl": {"sdxl-inpaint", "sdxl-controlnet"},
        "sdxl-inpaint": {"sdxl", "sdxl-controlnet"},
        "sdxl-controlnet": {"sdxl", "sdxl-inpaint"},
    }.get(saved, set())
    for declared in ALL:
        if declared == saved or declared in compatible:
            check_family(index, declared, "/m")
            continue
        with pytest.raises(SpecError) as info:
            check_family(index, declared, "/m")
        message = info.value.messages[0]
        assert message.startswith(f"spec.model.family: {declared} does not match the model"), message
        assert index["_class_name"] in message and saved in message, message


def test_missing_components_and_unknown_classes() -> None:
    index = {"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "U"], "vae": ["diffusers", "V"]}
    with pytest.raises(SpecError, match="sdxl needs the components text_encoder_2, tokenizer_2, scheduler"):
        check_family(index, "sdxl", "/m")
    with pytest.raises(SpecError, match="names FluxPipeline \\(a pipeline AsyncDiff does not support\\)"):
        check_family({"_class_name": "FluxPipeline"}, "sd15", "/m")
    check_family({"unet": ["diffusers", "U"]}, "sd15", "/m")  # no _class_name: left to the loader


@pytest.mark.parametrize(("saved", "declared"), [("sd15", "sdxl"), ("sdxl", "sd15")])
def test_asyncdiff_run_refuses_the_wrong_family_before_torchrun(
    tiny_model_dir: Any,
    tmp_path: Path,
    write_job: Any,
    capsys: pytest.CaptureFixture[str],
    saved: str,
    declared: str,
) -> None:
    spec = {
        "model": {"family": declared, "source": str(tiny_model_dir(saved))},
        "generation": {"prompts": ["a"], "steps": 2, "height": 32, "width": 32},
        "output": {"uri": f"file://{tmp_path / 'out'}"},
    }
    code, manifest, result = run_job(write_job(tmp_path, spec, "wrong-family"), quiet=True)
    err = capsys.readouterr().err
    assert manifest is None and result is None, "torchrun must not start"
    assert code == ExitCode.INVALID_SPEC, err
    assert f"spec.model.family: {declared} does not match the model" in err
    assert f"family {saved}" in err and "InvalidSpec (exit 10, not retryable)" in err
