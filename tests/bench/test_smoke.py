"""Quick smoke of the benchmark building blocks (each a few seconds): the trained digits pipeline, the device-free
traffic calculation, and the command-driven worker processes.

Why: the full benchmark takes ~20 minutes and is not part of the test suite; these catch a broken import, a changed
diffusers call path or a broken process helper in seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from bench import digits
from bench.procs import BenchError, Group, pinned_cores


@pytest.mark.skipif(not digits.trained(), reason="bench/assets/ has no trained digits model")
def test_digits_pipeline_generates_labelled_images() -> None:
    pipe = digits.build_pipeline()
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    images = digits.generate(pipe, [3, 7], seed=0, steps=2)
    assert images.shape == (2, digits.SIDE, digits.SIDE)
    assert np.isfinite(images).all() and images.min() >= -1 and images.max() <= 1


def test_digits_data_and_classifier() -> None:
    x, y = digits.load_digits_16()
    assert x.shape == (1797, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert sorted(set(y.tolist())) == list(range(10))
    clf, held_out = digits.train_classifier()
    assert held_out > 0.9
    assert clf.predict(x[:5].reshape(5, -1)).shape == (5,)


def test_traffic_of_a_preset_split_is_below_broadcast_all() -> None:
    from asyncdiff.presets import preset_components
    from asyncdiff.testing.tiny_pipelines import build_tiny_components

    from bench.gpu_components import traffic

    unet = build_tiny_components("sd21", "real", 0)["unet"]
    comps = preset_components(unet, 2)
    assert comps is not None
    args = (torch.randn(2, 4, 16, 16), torch.tensor(500))
    kwargs = {"encoder_hidden_states": torch.randn(2, 77, 32)}
    out = traffic(unet, comps[1], args, kwargs, world=2)
    assert 0 < out["planned_bytes_per_step"] < out["reference_bytes_per_step"]
    assert out["eps_bytes"] == 2 * 4 * 16 * 16 * 4
    assert "forward" not in unet.get_submodule("conv_in").__dict__  # hooks removed


class _Echo:
    def __init__(self, rank: int, world: int, factor: int) -> None:
        self.rank, self.factor = rank, factor

    def times(self, x: int) -> Any:
        return (self.rank, x * self.factor)

    def fail(self, _: Any) -> None:
        raise ValueError("boom")

    def cpus(self, _: Any) -> list[int]:
        import os

        return sorted(os.sched_getaffinity(0))


def test_group_runs_commands_on_every_rank_and_reports_failures() -> None:
    with Group(_Echo, 2, (3,), start_timeout_s=120) as g:
        assert g.call("times", 5, timeout_s=60) == [(0, 15), (1, 15)]
        with pytest.raises(BenchError, match="boom"):
            g.call("fail", timeout_s=60)


def test_pinned_cores_gives_each_rank_its_own_core_or_none_when_oversubscribed() -> None:
    import os

    cores = sorted(os.sched_getaffinity(0))
    one = pinned_cores(1)
    assert one == [{cores[0]}]
    assert pinned_cores(len(cores) + 1) is None
    full = pinned_cores(len(cores))
    assert full is not None and sorted(c for s in full for c in s) == cores  # distinct cores, one each


def test_group_pins_each_rank_to_its_cpus() -> None:
    import os

    core = min(os.sched_getaffinity(0))
    with Group(_Echo, 2, (1,), start_timeout_s=120, cpus=[{core}, {core}]) as g:
        assert g.call("cpus", None, timeout_s=60) == [[core], [core]]
    with pytest.raises(ValueError, match="one per rank"):
        Group(_Echo, 2, (1,), cpus=[{core}])
