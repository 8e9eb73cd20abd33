"""Bad input of CFG parallelism: each a ConfigError naming the parameter and the fix, on every rank, never a hang."""

from __future__ import annotations

from typing import Any

import pytest
from asyncdiff.errors import ConfigError

from tests.asyncdiff.dist_harness import run_on_ranks


def test_cfg_parallel_on_a_pipeline_without_guidance(tiny_model_dir: Any) -> None:
    from asyncdiff import AsyncDiff
    from asyncdiff.loading import load_pipeline
    from diffusers import StableDiffusionPipeline

    class NoGuidancePipeline(StableDiffusionPipeline):  # type: ignore[misc]
        """A supported family whose call has no guidance parameter (as a guidance-free family would)."""

        def __call__(self, prompt: str, num_inference_steps: int = 2) -> Any:
            return super().__call__(prompt, num_inference_steps=num_inference_steps, guidance_scale=1.0)

    pipe = load_pipeline("sd15", tiny_model_dir("sd15"))
    pipe.__class__ = NoGuidancePipeline
    with pytest.raises(ConfigError) as info:
        AsyncDiff(pipe, model_n=1, cfg_parallel=True)
    assert info.value.parameter == "cfg_parallel"
    assert "False for NoGuidancePipeline: it takes no classifier-free guidance" in str(info.value)


def _cfg_world_mismatch(rank: int, path: str) -> str:
    from asyncdiff import AsyncDiff
    from asyncdiff.loading import load_pipeline

    AsyncDiff(load_pipeline("sd15", path), model_n=2, stride=1, cfg_parallel=True)
    return "constructed"


def _guidance_off(rank: int, path: str, family: str) -> str:
    import torch
    from asyncdiff import AsyncDiff
    from asyncdiff.loading import load_pipeline
    from asyncdiff.testing.tiny_pipelines import example_call_kwargs

    torch.set_num_threads(1)
    pipe = load_pipeline(family, path)
    AsyncDiff(pipe, model_n=1, cfg_parallel=True)
    kwargs = example_call_kwargs(family, steps=2)
    if family == "svd":
        kwargs["max_guidance_scale"] = 1.0
    else:
        kwargs["guidance_scale"] = 1.0
    pipe(**kwargs)
    return "generated"


@pytest.mark.slow
def test_cfg_world_size_mismatch_gives_the_size_and_the_formula(tiny_model_dir: Any) -> None:
    out = run_on_ranks(_cfg_world_mismatch, 2, (str(tiny_model_dir("sd15")),))
    assert sorted(out) == [0, 1]
    for outcome, message in out.values():
        assert outcome == "ConfigError", message
        assert "world_size=2" in message
        assert "2 x (model_n + stride - 1) = 2 x (2 + 1 - 1) = 4 processes are required" in message
        assert "--nproc_per_node=4" in message


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd15", "svd"])
def test_guidance_off_on_a_cfg_parallel_object_is_refused_on_every_rank(tiny_model_dir: Any, family: str) -> None:
    out = run_on_ranks(_guidance_off, 2, (str(tiny_model_dir(family)), family))
    assert sorted(out) == [0, 1]
    parameter = "max_guidance_scale" if family == "svd" else "guidance_scale"
    for outcome, message in out.values():
        assert outcome == "ConfigError", message
        assert message.startswith(f"{parameter}=1.0 is invalid: > 1 on an AsyncDiff object with cfg_parallel=True")
        assert "wrap without cfg_parallel" in message
