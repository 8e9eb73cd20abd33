"""Bad input raises a clear error naming the parameter and the allowed values, on every rank, never a hang; a
rank that dies makes the others fail within a bounded time."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from asyncdiff.errors import ConfigError

from tests.asyncdiff.dist_harness import run_on_ranks


def _pipe(tiny_model_dir: Any, family: str = "sd15", layout: str = "minimal") -> Any:
    from asyncdiff.loading import load_pipeline

    return load_pipeline(family, tiny_model_dir(family, layout))


@pytest.mark.parametrize(
    ("kwargs", "parameter", "allowed"),
    [
        ({"model_n": 5}, "model_n", "one of 1, 2, 3, 4"),
        ({"model_n": 1, "stride": 2}, "stride", "1 when model_n=1"),
        ({"cfg_parallel": "yes"}, "cfg_parallel", "True or False"),
        ({"stride": 3}, "stride", "one of 1, 2"),
        ({"warm_up": 0}, "warm_up", "an integer >= 1"),
        ({"warm_up": 1.5}, "warm_up", "an integer >= 1"),
        ({"time_shift": "yes"}, "time_shift", "True or False"),
        ({"split": "diagonal"}, "split", "None, 'auto', 'measured', 'preset'"),
        ({"split": [["conv_in"], ["conv_out"]]}, "split", "in no component"),
        ({"stride2_free_eps": "latest"}, "stride2_free_eps", "'own' (the intended semantics)"),
    ],
)
def test_invalid_parameters(tiny_model_dir: Any, kwargs: dict[str, Any], parameter: str, allowed: str) -> None:
    from asyncdiff import AsyncDiff

    with pytest.raises(ConfigError) as info:
        AsyncDiff(_pipe(tiny_model_dir), **kwargs)
    assert info.value.parameter == parameter
    assert allowed in str(info.value)


def test_unsupported_pipeline() -> None:
    from asyncdiff import AsyncDiff
    from diffusers import DDPMPipeline, UNet2DModel
    from diffusers.schedulers import DDPMScheduler

    unet = UNet2DModel(
        block_out_channels=(32, 32),
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
        norm_num_groups=8,
    )
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    with pytest.raises(ConfigError) as info:
        AsyncDiff(pipe)
    assert info.value.parameter == "pipeline"
    assert "StableDiffusionXLPipeline" in str(info.value) and "DDPMPipeline" in str(info.value)


def test_model_too_small_to_split(tiny_model_dir: Any) -> None:
    from asyncdiff import AsyncDiff

    with pytest.raises(ConfigError) as info:
        AsyncDiff(_pipe(tiny_model_dir, "sd3"), model_n=3)  # the minimal SD3 has 2 transformer blocks
    assert info.value.parameter == "model_n" and "at most 2" in str(info.value)


def test_preset_requested_where_none_exists(tiny_model_dir: Any) -> None:
    from asyncdiff import AsyncDiff

    with pytest.raises(ConfigError, match="no preset table"):
        AsyncDiff(_pipe(tiny_model_dir), split="preset")


def _world_mismatch(rank: int, path: str) -> str:
    from asyncdiff import AsyncDiff
    from asyncdiff.loading import load_pipeline

    AsyncDiff(load_pipeline("sd15", path), model_n=3, stride=1)
    return "constructed"


@pytest.mark.slow
def test_world_size_mismatch_fails_on_every_rank(tiny_model_dir: Any) -> None:
    out = run_on_ranks(_world_mismatch, 2, (str(tiny_model_dir("sd15")),))
    assert sorted(out) == [0, 1]
    for outcome, message in out.values():
        assert outcome == "ConfigError"
        assert "world_size" in message and "--nproc_per_node=3" in message


def _rank_dies(rank: int, path: str) -> str:
    os.environ["ASYNCDIFF_TIMEOUT_S"] = "30"
    import torch
    from asyncdiff import AsyncDiff
    from asyncdiff.loading import load_pipeline
    from asyncdiff.testing.tiny_pipelines import example_call_kwargs

    torch.set_num_threads(1)
    pipe = load_pipeline("sd15", path)
    AsyncDiff(pipe, model_n=2, warm_up=1, timeout_s=30)
    if rank == 1:
        original = pipe.unet.forward
        calls = []

        def dying(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 3:
                os._exit(17)  # a crash in the middle of the generation
            return original(*args, **kwargs)

        pipe.unet.forward = dying
    started = time.monotonic()
    try:
        pipe(**example_call_kwargs("sd15", steps=6))
    finally:
        elapsed = time.monotonic() - started
    return f"finished after {elapsed:.1f}s"


@pytest.mark.slow
def test_dead_rank_makes_the_others_fail_in_bounded_time(tiny_model_dir: Any) -> None:
    """Bounded by the library's own timeout (30 s here): rank 0 raises PeerError instead of hanging; the harness's
    150 s is only a safety net, and no wall-clock bound is asserted (loaded machines)."""
    out = run_on_ranks(_rank_dies, 2, (str(tiny_model_dir("sd15")),), timeout_s=150)
    assert 1 not in out  # rank 1 died without reporting
    outcome, message = out[0]
    assert outcome == "PeerError", message
    assert "rank 1" in message
