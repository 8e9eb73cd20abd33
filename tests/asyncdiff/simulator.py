"""An independent single-process simulation of AsyncDiff's asynchronous schedule, for any supported denoiser.

Why: exactness (warm-up >= steps) cannot catch a wrong asynchronous schedule, and "finite and identical on every
rank" cannot either. This simulator is the reference the distributed runs are compared with. It knows only the
component split (lists of module paths) and the method's definition (shared doc, sections 2 and 5); it uses none of
the library's traces, routes, schedule code or messages. At each asynchronous denoiser call it reruns the *whole*
denoiser once per component: that component's blocks compute, every other split block returns (a copy of) its
output from the previous round. Glue outside the split blocks (embeddings, ControlNet residual additions, frame
reshapes, SD3's patch embedding) therefore runs on current inputs in every run, as it does on every rank. The
denoiser's own forward is called unchanged (only ``timestep`` may be replaced), so it works for UNet2DCondition,
the SD3 transformer, the SVD spatio-temporal UNet, AnimateDiff's motion UNet and ControlNet's extra inputs alike.

Definition, k = denoiser call index, W = warm-up, N components, t_k the timestep the pipeline passes at call k:

* k < W: the plain forward; every block's output is remembered.
* stride 1: run c (c = 0..N-1) computes component c on the remembered step-(k-1) outputs of all other blocks; eps_k is
  run N-1's output. ``time_shift``: every run sees t_{k-1} instead of t_k.
* stride 2, first call of a pair (k - W even): runs c = 0..N-1 at t_{k+1} give the new remembered outputs; one more
  run of component N-1 at t_k, on the *old* remembered outputs, gives eps_k. The second call returns run N-1's t_{k+1}
  output (``free_eps="own"``, the intended semantics) or eps_k again (``"reuse"``, the reference code's).
  ``time_shift``: t_{k+1} becomes t_k and t_k becomes t_{k-1}.

t_{k+1} is the entry after t_k in ``scheduler.timesteps`` (t_k itself at the last step); t_{k-1} is the timestep of
the previous denoiser call (t_k at the first call).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree


def _copy(tree: Any) -> Any:
    return pytree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, tree)


def _with_value(original: Any, value: float) -> Any:
    if isinstance(original, torch.Tensor):
        return torch.full_like(original, value)
    return type(original)(value)


def _value(t: Any) -> float:
    return float(t.flatten()[0].item()) if isinstance(t, torch.Tensor) else float(t)


class Simulator:
    """Install on ``denoiser`` (a module with a ``timestep`` argument); ``schedule`` returns the pipeline's
    current ``scheduler.timesteps`` (read at the first call of each generation)."""

    def __init__(
        self,
        denoiser: torch.nn.Module,
        components: Sequence[Sequence[str]],
        stride: int,
        warm_up: int,
        *,
        time_shift: bool = False,
        free_eps: str = "own",
        schedule: Any = None,
    ) -> None:
        assert stride in (1, 2) and warm_up >= 1 and free_eps in ("own", "reuse")
        self.denoiser, self.n = denoiser, len(components)
        self.stride, self.warm_up, self.time_shift, self.free_eps = stride, warm_up, time_shift, free_eps
        self.schedule = schedule
        self.owner = {path: c for c, paths in enumerate(components) for path in paths}
        self.original = denoiser.forward
        self.signature = inspect.signature(self.original)
        self.reset()
        self.installed: list[tuple[torch.nn.Module, Any]] = []  # (module, its instance forward or None)
        for path in self.owner:
            module = denoiser.get_submodule(path)
            self.installed.append((module, module.__dict__.get("forward")))
            module.forward = self._unit(path, module.forward)  # type: ignore[method-assign]
        self.installed.append((denoiser, denoiser.__dict__.get("forward")))
        denoiser.forward = self._forward  # type: ignore[method-assign]

    def remove(self) -> None:
        """Restore the denoiser's and the blocks' own forwards."""
        for module, forward in reversed(self.installed):
            if forward is None:
                del module.forward
            else:
                module.forward = forward  # type: ignore[method-assign]
        self.installed = []

    def reset(self) -> None:
        """Start a new generation (the pipeline calls the denoiser from call 0 again)."""
        self.call = 0
        self.prev: dict[str, Any] = {}
        self.new: dict[str, Any] = {}
        self.active: int | None = None  # the component allowed to compute; None = every block
        self.stored: Any = None
        self.eps_k: Any = None
        self.t_last: float | None = None
        self.position = -1
        self.timesteps: list[float] = []
        self.computed: dict[str, int] = {}  # how often each block really ran (the tests check the schedule)

    def _unit(self, path: str, original: Any) -> Any:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.active is None or self.owner[path] == self.active:
                out = original(*args, **kwargs)
                self.new[path] = _copy(out)
                self.computed[path] = self.computed.get(path, 0) + 1
                return out
            return _copy(self.prev[path])

        return forward

    def _run(self, component: int | None, bound: inspect.BoundArguments, t: float | None) -> Any:
        call = self.signature.bind(*bound.args, **bound.kwargs)
        if t is not None:
            call.arguments["timestep"] = _with_value(call.arguments["timestep"], t)
        self.active = component
        try:
            return self.original(*call.args, **call.kwargs)
        finally:
            self.active = None

    def _next_timestep(self, t: float) -> float:
        for i in range(self.position + 1, len(self.timesteps)):
            if self.timesteps[i] == t:
                self.position = i
                break
        if 0 <= self.position < len(self.timesteps) - 1 and self.timesteps[self.position] == t:
            return self.timesteps[self.position + 1]
        return t

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        k, self.call = self.call, self.call + 1
        bound = self.signature.bind(*args, **kwargs)
        t_k = _value(bound.arguments["timestep"])
        if k == 0:
            raw = self.schedule() if self.schedule is not None else []
            self.timesteps = [float(x) for x in (raw.flatten().tolist() if isinstance(raw, torch.Tensor) else raw)]
        t_prev = t_k if self.t_last is None else self.t_last
        self.t_last = t_k
        t_next = self._next_timestep(t_k)
        if k < self.warm_up:
            self.new = {}
            out = self._run(None, bound, None)
            self.prev = self.new
            return out
        if self.stride == 1:
            self.new = {}
            outs = [self._run(c, bound, t_prev if self.time_shift else None) for c in range(self.n)]
            self.prev = self.new
            return outs[-1]
        if (k - self.warm_up) % 2 == 1:
            return self.stored if self.free_eps == "own" else self.eps_k
        self.new = {}
        ahead = t_k if self.time_shift else t_next
        outs = [self._run(c, bound, ahead) for c in range(self.n)]
        fresh, self.new = self.new, {}
        self.eps_k = self._run(self.n - 1, bound, t_prev if self.time_shift else t_k)
        self.prev, self.stored = fresh, outs[-1]
        return self.eps_k


def denoiser_of(pipe: Any) -> torch.nn.Module:
    """The module AsyncDiff splits: the SD3 transformer, else the UNet (ControlNet stays glue)."""
    module = getattr(pipe, "transformer", None)
    if module is None:
        module = pipe.unet
    assert isinstance(module, torch.nn.Module)
    return module


def simulate_pipeline(
    pipe: Any,
    components: Sequence[Sequence[str]],
    stride: int,
    warm_up: int,
    call_kwargs: dict[str, Any],
    *,
    time_shift: bool = False,
    free_eps: str = "own",
) -> tuple[Any, Simulator]:
    """Run ``pipe(**call_kwargs)`` under the simulated schedule; returns the pipeline result and the simulator."""
    sim = Simulator(
        denoiser_of(pipe),
        components,
        stride,
        warm_up,
        time_shift=time_shift,
        free_eps=free_eps,
        schedule=lambda: pipe.scheduler.timesteps,
    )
    return pipe(**call_kwargs), sim


_pipelines: dict[tuple[str, str, bool], Any] = {}


def simulate_case(case: Any, path: str, components: Sequence[Sequence[str]]) -> Any:
    """The simulated output (numpy, as the harness returns it) of a ``dist_harness.Case`` with ``components``.
    Loaded pipelines are reused between cases (the simulator is removed after each run)."""
    from asyncdiff.loading import load_pipeline
    from asyncdiff.testing.tiny_pipelines import example_call_kwargs

    from tests.asyncdiff.dist_harness import _output_array as output_array

    torch.set_num_threads(1)
    key = (case.family, path, case.img2img)
    if key not in _pipelines:
        _pipelines[key] = load_pipeline(case.family, path, img2img=case.img2img)
        _pipelines[key].set_progress_bar_config(disable=True)
    pipe = _pipelines[key]
    call = example_call_kwargs(case.family, steps=case.steps, img2img=case.img2img)
    result, sim = simulate_pipeline(
        pipe, components, case.stride, case.warm_up, call, time_shift=case.time_shift, free_eps=case.free_eps
    )
    sim.remove()
    return output_array(result)
