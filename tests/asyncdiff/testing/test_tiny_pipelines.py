"""Tests of the tiny pipelines and the loading path: every family, both layouts, built, saved, reloaded, run.

Why: every AsyncDiff test compares against these models' sequential output, so they must load through the real
loading path, run, be deterministic, and (for the "real" layout) carry the block paths the preset tables name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from asyncdiff.errors import ConfigError
from asyncdiff.families import FAMILIES
from asyncdiff.loading import load_pipeline
from asyncdiff.testing.tiny_pipelines import (
    FAMILY_NAMES,
    LAYOUTS,
    build_tiny_components,
    example_call_kwargs,
    expected_output_shape,
    output_array,
    pattern_image,
    pipeline_class_for,
)

TinyModelDir = Callable[..., Path]

# Block paths named by the reference split tables, which the "real" layout must have.
REAL_PATHS: dict[str, list[str]] = {
    "sd15": [
        "up_blocks.1.resnets.2",
        "up_blocks.1.attentions.2",
        "up_blocks.2.upsamplers.0",
        "down_blocks.3",
    ],
    "sd21": ["up_blocks.1.resnets.2", "up_blocks.3.attentions.2", "down_blocks.3", "conv_norm_out"],
    "sdxl": [
        "up_blocks.0.attentions.2",
        "down_blocks.1.downsamplers.0",
        "up_blocks.0.upsamplers.0",
        "down_blocks.2",
    ],
    "sdxl-inpaint": ["up_blocks.0.attentions.2", "down_blocks.1.downsamplers.0"],
    "sdxl-controlnet": ["up_blocks.0.attentions.2", "down_blocks.1.attentions.1"],
    "sd-upscaler": ["up_blocks.1.attentions.2", "up_blocks.2.upsamplers.0", "up_blocks.3", "down_blocks.3"],
    "svd": ["down_blocks.1.attentions.1", "down_blocks.1.downsamplers.0", "up_blocks.3.attentions.2"],
    "animatediff": ["up_blocks.3.attentions.2", "down_blocks.3.motion_modules.1", "up_blocks.1.resnets.2"],
    "sd3": ["transformer_blocks.23", "norm_out", "proj_out"],
}


def _denoiser(pipe: Any, family: str) -> torch.nn.Module:
    module: torch.nn.Module = getattr(pipe, FAMILIES[family].denoiser_attr)
    return module


def _run(pipe: Any, family: str, img2img: bool = False, seed: int = 0) -> np.ndarray:
    with torch.no_grad():
        return output_array(pipe(**example_call_kwargs(family, steps=2, seed=seed, img2img=img2img)))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_build_save_load_run(tiny_model_dir: TinyModelDir, family: str, layout: str) -> None:
    pipe = load_pipeline(family, tiny_model_dir(family, layout))

    assert type(pipe) is pipeline_class_for(family)
    out = _run(pipe, family)
    assert out.shape == expected_output_shape(family)
    assert np.isfinite(out).all()
    assert out.std() > 0


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3"])
def test_img2img_variant_loads_from_the_same_folder(tiny_model_dir: TinyModelDir, family: str) -> None:
    pipe = load_pipeline(family, tiny_model_dir(family, "real"), img2img=True)

    assert type(pipe) is pipeline_class_for(family, img2img=True)
    out = _run(pipe, family, img2img=True)
    assert out.shape == expected_output_shape(family, img2img=True)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("family", sorted(REAL_PATHS))
def test_real_layout_has_the_preset_block_paths(family: str) -> None:
    components = build_tiny_components(family, "real")
    denoiser = components[FAMILIES[family].denoiser_attr]
    if family == "animatediff":  # the pipeline turns UNet2DConditionModel + MotionAdapter into a UNetMotionModel
        denoiser = _denoiser(pipeline_class_for(family)(**components), family)

    for path in REAL_PATHS[family]:
        denoiser.get_submodule(path)
    if family == "sd3":
        assert len(denoiser.transformer_blocks) == 24
    presets = pytest.importorskip("asyncdiff.presets")
    if presets.architecture_key(denoiser) is not None or family == "sd3":
        for model_n in (2, 3, 4):
            found = presets.preset_components(denoiser, model_n)
            for component in found[1] if found else []:
                for path in component:
                    denoiser.get_submodule(path)


def test_real_layout_is_tiny_and_minimal_is_smaller() -> None:
    for family in ("sd15", "sdxl", "svd"):
        sizes = {}
        for layout in LAYOUTS:
            denoiser = build_tiny_components(family, layout)[FAMILIES[family].denoiser_attr]
            sizes[layout] = sum(p.numel() for p in denoiser.parameters())
        assert sizes["minimal"] < sizes["real"] < 4_000_000


def _pipeline_weights(family: str, seed: int, global_seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(global_seed)  # must not matter: each component is built from `seed` alone
    pipe = pipeline_class_for(family)(**build_tiny_components(family, "minimal", seed=seed))
    return {
        f"{name}.{key}": value
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
        for key, value in module.state_dict().items()
    }


@pytest.mark.parametrize("family", ["animatediff", "sdxl-controlnet"])
def test_same_seed_same_weights_other_seed_other_weights(family: str) -> None:
    first, again, other = (
        _pipeline_weights(family, 0, 1),
        _pipeline_weights(family, 0, 2),
        _pipeline_weights(family, 1, 1),
    )
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_building_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    build_tiny_components("sd3", "minimal", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_runs_are_deterministic_and_seed_dependent(tiny_model_dir: TinyModelDir) -> None:
    pipe = load_pipeline("sd15", tiny_model_dir("sd15", "minimal"))

    first, again, other = _run(pipe, "sd15"), _run(pipe, "sd15"), _run(pipe, "sd15", seed=1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_controlnet_residuals_are_not_zero(tiny_model_dir: TinyModelDir) -> None:
    pipe = load_pipeline("sdxl-controlnet", tiny_model_dir("sdxl-controlnet", "minimal"))
    kwargs = example_call_kwargs("sdxl-controlnet", steps=2)

    with torch.no_grad():
        with_control = output_array(pipe(**kwargs))
        kwargs["generator"] = torch.Generator("cpu").manual_seed(0)
        without = output_array(pipe(**kwargs, controlnet_conditioning_scale=0.0))
    assert np.abs(with_control - without).max() > 1e-3


def test_loading_disables_safety_checker_and_progress_bars(tiny_model_dir: TinyModelDir) -> None:
    pipe = load_pipeline("sd15", tiny_model_dir("sd15", "minimal"))

    assert pipe.safety_checker is None
    assert pipe._progress_bar_config.get("disable") is True


def test_loading_takes_controlnet_and_motion_adapter_from_their_own_sources(
    tiny_model_dir: TinyModelDir,
) -> None:
    cn_dir = tiny_model_dir("sdxl-controlnet", "minimal")
    pipe = load_pipeline("sdxl-controlnet", tiny_model_dir("sdxl", "minimal"), controlnet=str(cn_dir / "controlnet"))
    assert type(pipe.controlnet).__name__ == "ControlNetModel"

    ad_dir = tiny_model_dir("animatediff", "minimal")
    pipe = load_pipeline("animatediff", ad_dir, motion_adapter=str(ad_dir / "motion_adapter"))
    assert type(pipe.motion_adapter).__name__ == "MotionAdapter"


def test_loading_dtype(tiny_model_dir: TinyModelDir) -> None:
    pipe = load_pipeline("sd3", tiny_model_dir("sd3", "minimal"), dtype=torch.bfloat16)

    assert pipe.transformer.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("family", "kwargs", "parameter"),
    [
        ("sd4", {}, "family"),
        ("svd", {"img2img": True}, "img2img"),
        ("sdxl-controlnet", {}, "controlnet"),
        ("sdxl", {"controlnet": "some/controlnet"}, "controlnet"),
        ("sd15", {"motion_adapter": "some/adapter"}, "motion_adapter"),
    ],
)
def test_loading_rejects_bad_requests(
    tiny_model_dir: TinyModelDir, family: str, kwargs: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_pipeline(family, tiny_model_dir("sdxl", "minimal"), **kwargs)
    assert err.value.parameter == parameter


def test_example_kwargs_and_images() -> None:
    with pytest.raises(ConfigError):
        example_call_kwargs("sd-upscaler", img2img=True)
    kwargs = example_call_kwargs("sd15", steps=3, seed=5)
    assert kwargs["num_inference_steps"] == 3
    assert kwargs["guidance_scale"] > 1
    assert kwargs["generator"].initial_seed() == 5
    assert np.array_equal(np.asarray(pattern_image(16)), np.asarray(pattern_image(16)))
    assert np.asarray(pattern_image((24, 16), "mask")).shape == (16, 24, 3)
