"""The distributed async output equals an independent single-process simulation of the method.

Why: exactness (warm-up only) cannot catch a wrong async schedule. This simulator knows nothing of traces,
routing or messages: at each async step it reruns the full denoiser once per component, letting that component's
blocks compute and making every other block return its output from the previous round, exactly as the method
(shared doc, sections 2 and 5) defines stride 1 and the intended stride 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.asyncdiff.dist_harness import Case, run_cases


class Simulator:
    def __init__(self, pipe: Any, components: list[list[str]], stride: int, warm_up: int) -> None:
        self.pipe, self.unet, self.components = pipe, pipe.unet, components
        self.n, self.stride, self.warm_up = len(components), stride, warm_up
        self.owner = {p: c for c, paths in enumerate(components) for p in paths}
        self.prev: dict[str, Any] = {}
        self.new: dict[str, Any] = {}
        self.active: int | None = None  # component allowed to compute; None = all
        self.call = 0
        self.stored_eps: Any = None
        self.original = self.unet.forward
        for path in self.owner:
            module = self.unet.get_submodule(path)
            module.forward = self._unit(path, module.forward)
        self.unet.forward = self._forward

    def _unit(self, path: str, original: Any) -> Any:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.active is None or self.owner[path] == self.active:
                out = original(*args, **kwargs)
                self.new[path] = out
                return out
            return self.prev[path]

        return forward

    def _run(self, component: int | None, args: tuple[Any, ...], kwargs: dict[str, Any], t: Any = None) -> Any:
        self.active = component
        if t is not None:
            args = (args[0], t, *args[2:]) if len(args) > 1 else args
            if len(args) <= 1:
                kwargs = {**kwargs, "timestep": t}
        try:
            return self.original(*args, **kwargs)
        finally:
            self.active = None

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        k, self.call = self.call, self.call + 1
        timesteps = [float(t) for t in self.pipe.scheduler.timesteps]
        if k < self.warm_up:
            self.new = {}
            out = self._run(None, args, kwargs)
            self.prev = dict(self.new)
            return out
        if self.stride == 1:
            self.new = {}
            outs = [self._run(c, args, kwargs) for c in range(self.n)]
            self.prev = {p: v for p, v in self.new.items()}
            return outs[-1]
        if (k - self.warm_up) % 2 == 1:
            return self.stored_eps
        t_k = args[1] if len(args) > 1 else kwargs["timestep"]
        t_next = torch.full_like(t_k, timesteps[k + 1]) if k + 1 < len(timesteps) else t_k
        self.new = {}
        outs = [self._run(c, args, kwargs, t_next) for c in range(self.n)]
        fresh = dict(self.new)
        eps_k = self._run(self.n - 1, args, kwargs, t_k)
        self.prev = fresh
        self.stored_eps = outs[-1]
        return eps_k


SD15_N2 = [
    [
        "conv_in",
        "down_blocks.0",
        "down_blocks.1",
        "down_blocks.2",
        "down_blocks.3",
        "mid_block",
        "up_blocks.0",
        "up_blocks.1.resnets.0",
        "up_blocks.1.attentions.0",
        "up_blocks.1.resnets.1",
    ],
    [
        "up_blocks.1.attentions.1",
        "up_blocks.1.resnets.2",
        "up_blocks.1.attentions.2",
        "up_blocks.1.upsamplers.0",
        "up_blocks.2",
        "up_blocks.3",
        "conv_norm_out",
        "conv_out",
    ],
]


@pytest.mark.slow
@pytest.mark.parametrize(("stride", "warm_up", "steps"), [(1, 1, 4), (2, 1, 5), (2, 2, 6)])
def test_distributed_equals_simulation(tiny_model_dir: Any, stride: int, warm_up: int, steps: int) -> None:
    from asyncdiff.loading import load_pipeline
    from asyncdiff.testing.tiny_pipelines import example_call_kwargs

    path = str(tiny_model_dir("sd15", "real"))
    case = Case("sd15", "real", 2, stride, warm_up, steps, split=SD15_N2)
    results = run_cases([(case, path)])[case.key]
    assert all(not r.error for r in results), [r.error for r in results]
    torch.set_num_threads(1)
    pipe = load_pipeline("sd15", path)
    Simulator(pipe, SD15_N2, stride, warm_up)
    simulated = np.asarray(pipe(**example_call_kwargs("sd15", steps=steps)).images, dtype=np.float32)
    got = results[0].array
    assert got.shape == simulated.shape
    assert float(np.abs(got - simulated).max()) <= 1e-5
    assert results[0].max_abs_diff > 1e-4  # really asynchronous, not a disguised sequential run
