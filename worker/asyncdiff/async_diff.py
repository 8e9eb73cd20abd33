"""The public entry point: ``AsyncDiff(pipeline, model_n, stride, warm_up, time_shift, cfg_parallel)``.

Why: two lines make a loaded diffusers pipeline model-parallel. This module validates the request on every rank
(before any collective, so bad input never hangs), installs the hooks (the pipeline's call, the denoiser's forward,
each split block's forward), plans the split on the first call, frees the weights of blocks this rank never runs,
and drives each denoiser call through the schedule (``schedule``), the routing (``routing``) and the exchange
(``comm``). With ``cfg_parallel`` each of two mirrored stage groups runs one guidance half of every call (``cfg``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.utils._pytree as pytree

from asyncdiff.cfg import cfg_topology, check_cfg_batch, check_guidance_on, halve_batch, require_guidance
from asyncdiff.comm import DEFAULT_TIMEOUT_S, Exchange, device_for, ensure_process_group
from asyncdiff.errors import ConfigError
from asyncdiff.families import SUPPORTED_PIPELINE_CLASSES, denoiser_attr_for
from asyncdiff.plan import SplitPlan, atomic_components, auto_components, coarsen, validate_components
from asyncdiff.presets import preset_components
from asyncdiff.routing import Route, build_route, tag_of
from asyncdiff.schedule import (
    Mode,
    Roles,
    TimestepTracker,
    mode_for,
    replace_timestep,
    shifted_timestep,
    timestep_value,
)
from asyncdiff.trace import active_tracer, trace_call
from asyncdiff.units import UnitLayout, unit_layout

log = logging.getLogger("asyncdiff")

MODEL_N = (1, 2, 3, 4)
STRIDES = (1, 2)


def _pipeline_denoiser(pipeline: Any) -> tuple[str, nn.Module]:
    cls = type(pipeline)
    for klass in cls.__mro__:  # a class we swapped in earlier, or a user subclass, resolves to its base
        attr = denoiser_attr_for(klass.__name__)
        if attr is not None:
            denoiser = getattr(pipeline, attr, None)
            if isinstance(denoiser, nn.Module):
                return attr, denoiser
    raise ConfigError("pipeline", cls.__name__, "one of " + ", ".join(SUPPORTED_PIPELINE_CLASSES))


def move_skipping_meta(module: nn.Module, device: torch.device) -> None:
    """``module.to(device)`` that leaves released (meta) parameters alone instead of failing on them."""
    module._apply(lambda t: t if t.is_meta else t.to(device))


def validate_parameters(model_n: Any, stride: Any, warm_up: Any, time_shift: Any, cfg_parallel: Any = False) -> None:
    if isinstance(model_n, bool) or model_n not in MODEL_N:
        raise ConfigError("model_n", model_n, "one of 1, 2, 3, 4 (1: no split)")
    if isinstance(stride, bool) or stride not in STRIDES:
        raise ConfigError("stride", stride, "one of 1, 2")
    if model_n == 1 and stride != 1:
        raise ConfigError(
            "stride", stride, "1 when model_n=1 (stride 2's extra rank runs the last of several components)"
        )
    if isinstance(warm_up, bool) or not isinstance(warm_up, int) or warm_up < 1:
        raise ConfigError("warm_up", warm_up, "an integer >= 1 (the first async step needs one exact step)")
    if not isinstance(time_shift, bool):
        raise ConfigError("time_shift", time_shift, "True or False")
    if not isinstance(cfg_parallel, bool):
        raise ConfigError("cfg_parallel", cfg_parallel, "True or False")


def required_world_size(model_n: int, stride: int, cfg_parallel: bool) -> tuple[int, str]:
    """Processes an AsyncDiff configuration needs, and the formula that gives them (for messages)."""
    stage = model_n + stride - 1
    if cfg_parallel:
        return 2 * stage, f"2 x (model_n + stride - 1) = 2 x ({model_n} + {stride} - 1) = {2 * stage}"
    return stage, f"model_n + stride - 1 = {model_n} + {stride} - 1 = {stage}"


def _signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    leaves = pytree.tree_leaves((args, kwargs))
    desc = tuple((tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__ for x in leaves)
    return (tuple(sorted(kwargs)), desc)


@dataclass
class _Step:
    mode: Mode
    route: Route


class AsyncDiff:
    """Wrap ``pipeline`` in place so that calling it denoises asynchronously across ``model_n + stride - 1`` ranks
    (``2 x (model_n + stride - 1)`` with ``cfg_parallel``).

    ``model_n=1`` runs the whole denoiser on every rank of a stage group (no split): with ``cfg_parallel`` that is
    plain CFG parallelism, without it a plain pipeline through the same code path. ``cfg_parallel=True`` runs the
    unconditional half of every guided denoiser call on ranks ``0 .. S-1`` and the conditional half on ``S .. 2S-1``
    (S = model_n + stride - 1), each half with the AsyncDiff schedule; the halves are joined once per step, so the
    output equals the same configuration without ``cfg_parallel`` up to float reordering. A call with guidance off
    (``guidance_scale <= 1``) on such an object raises ConfigError.

    Run inside torchrun. The process group is initialised if none exists (NCCL with CUDA, gloo on CPU; override
    with ``backend``). ``split`` is None (the architecture's preset table if one exists, else automatic),
    ``"auto"`` (FLOPs), ``"measured"`` (block times from one real forward), ``"preset"``, or an explicit list of
    components (lists of block paths).
    """

    def __init__(
        self,
        pipeline: Any,
        model_n: int = 2,
        stride: int = 1,
        warm_up: int = 1,
        time_shift: bool = False,
        cfg_parallel: bool = False,
        *,
        split: str | Sequence[Sequence[str]] | None = None,
        backend: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        release_weights: bool = True,
        stride2_free_eps: str = "own",
    ) -> None:
        validate_parameters(model_n, stride, warm_up, time_shift, cfg_parallel)
        if stride2_free_eps not in ("own", "reuse"):
            raise ConfigError(
                "stride2_free_eps", stride2_free_eps, "'own' (the intended semantics) or 'reuse' (the reference's)"
            )
        self.stride2_free_eps = stride2_free_eps
        self.attr, self.denoiser = _pipeline_denoiser(pipeline)
        if getattr(self.denoiser, "_asyncdiff", None) is not None:
            raise ConfigError("pipeline", type(pipeline).__name__, "a pipeline not already wrapped by AsyncDiff")
        self.pipeline = pipeline
        self.model_n, self.stride, self.warm_up, self.time_shift = model_n, stride, warm_up, time_shift
        self.cfg_parallel = cfg_parallel
        self._guidance_parameter = require_guidance(type(pipeline)) if cfg_parallel else None
        self.release_weights = release_weights
        self.layout: UnitLayout = unit_layout(self.denoiser)
        if len(self.layout.splittable) < model_n:
            raise ConfigError(
                "model_n",
                model_n,
                f"at most {len(self.layout.splittable)} for this {type(self.denoiser).__name__}: it has only "
                f"{len(self.layout.splittable)} splittable blocks",
            )
        self._fixed_components, self._source = self._choose_components(split)
        self.stage_world = model_n + stride - 1
        self.world_size, formula = required_world_size(model_n, stride, cfg_parallel)
        self.backend = ensure_process_group(backend, timeout_s)
        actual = dist.get_world_size()
        if actual != self.world_size:
            raise ConfigError(
                "world_size",
                actual,
                f"{formula} processes are required: launch with `torchrun --nproc_per_node={self.world_size}` "
                f"(or nnodes x nproc_per_node = {self.world_size})",
            )
        self.rank = dist.get_rank()
        self._check_same_config_everywhere(split)
        self.topology = cfg_topology(self.rank, actual, self.stage_world, cfg_parallel)
        self.stage_rank = self.topology.stage_rank
        """This rank's role inside its stage group (equal to ``rank`` without cfg_parallel)."""
        self.device = device_for(self.backend)
        self.roles = Roles(self.stage_rank, model_n, stride)
        self.exchange = Exchange(
            timeout_s,
            rank=self.stage_rank,
            world=self.stage_world,
            base=self.topology.base,
            group=self.topology.stage_group,
            pair_group=self.topology.pair_group,
        )
        self.plan: SplitPlan | None = None
        self.param_bytes_full = sum(p.numel() * p.element_size() for p in self.denoiser.parameters())
        self.param_bytes_local = self.param_bytes_full
        self._routes: dict[tuple[Any, ...], Route] = {}
        self._last_route: Route | None = None
        self._step: _Step | None = None
        self._calls = 0
        self._in_generation = False
        self._tracker = TimestepTracker()
        self._cache: dict[int, torch.Tensor] = {}
        self._stored_eps: torch.Tensor | None = None
        self._last_out: tuple[list[Any], Any, int] | None = None
        self._bytes_at_generation_start = 0
        self._generation_stats: dict[str, int] = {}
        self._originals: dict[str, Callable[..., Any]] = {}
        self._instance_forward: dict[str, bool] = {}
        self._released = False
        if release_weights and self._fixed_components is not None:
            # A preset or explicit split is known now: free the other components' weights before anything moves to
            # the device, so a GPU never holds a full replica. Automatic splits need the first call's shapes.
            self._release(atomic_components(self._fixed_components, self.layout))
        self._move_to_device()
        self._install_hooks()

    # ----------------------------------------------------------------------------------------------- set-up
    def _choose_components(self, split: Any) -> tuple[list[list[str]] | None, str]:
        if self.model_n == 1 and (split is None or split in ("preset", "auto", "measured")):
            return [list(self.layout.atomic)], "whole"  # no split: nothing to balance
        if split is None or split == "preset":
            preset = preset_components(self.denoiser, self.model_n)
            if preset is not None:
                try:
                    validate_components(preset[1], self.layout, self.denoiser)
                    return preset[1], f"preset:{preset[0]}"
                except ConfigError:
                    if split == "preset":
                        raise
            elif split == "preset":
                raise ConfigError(
                    "split",
                    "preset",
                    f"no preset table for {type(self.denoiser).__name__} at "
                    f"model_n={self.model_n}; use split=None or 'auto'",
                )
            return None, "auto"
        if split in ("auto", "measured"):
            return None, split
        if isinstance(split, str) or not isinstance(split, Sequence):
            raise ConfigError(
                "split", split, "None, 'auto', 'measured', 'preset' or a list of model_n lists of block paths"
            )
        comps = [list(c) for c in split]
        if len(comps) != self.model_n:
            raise ConfigError("split", f"{len(comps)} components", f"exactly model_n={self.model_n} components")
        validate_components(comps, self.layout, self.denoiser)
        return comps, "custom"

    def _check_same_config_everywhere(self, split: Any) -> None:
        mine = (
            self.model_n,
            self.stride,
            self.warm_up,
            self.time_shift,
            self.cfg_parallel,
            self._source,
            type(self.denoiser).__name__,
        )
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        if any(g != mine for g in gathered):
            raise ConfigError("AsyncDiff(...)", mine, f"the same arguments on every rank; ranks have {gathered}")

    def _move_to_device(self) -> None:
        """Every pipeline module to this rank's device; released (meta) denoiser blocks stay where they are."""
        if self.device.type == "cpu":
            return
        for component in getattr(self.pipeline, "components", {}).values():
            if component is self.denoiser:
                move_skipping_meta(component, self.device)
            elif isinstance(component, nn.Module):
                component.to(self.device)

    def _install_hooks(self) -> None:
        self.denoiser._asyncdiff = self  # type: ignore[assignment]
        original_forward = self.denoiser.forward
        self._top_forward = original_forward
        self._top_signature = inspect.signature(original_forward)
        if "timestep" not in self._top_signature.parameters:
            raise ConfigError("pipeline", type(self.denoiser).__name__, "a denoiser whose forward takes `timestep`")
        self.denoiser.forward = self._denoiser_forward  # type: ignore[method-assign]
        pipe_cls = type(self.pipeline)
        owner = self

        def __call__(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            if owner._guidance_parameter is not None:
                check_guidance_on(pipe_cls, owner._guidance_parameter, args, kwargs)
            owner._begin_generation()
            ok = False
            try:
                result = pipe_cls.__call__(pipe, *args, **kwargs)
                ok = True
                return result
            finally:
                owner._end_generation(ok)

        self.pipeline.__class__ = type(
            pipe_cls.__name__, (pipe_cls,), {"__call__": __call__, "__module__": pipe_cls.__module__}
        )

    def _hook_units(
        self, paths: Sequence[str], make_forward: Callable[[str, Callable[..., Any]], Callable[..., Any]] | None = None
    ) -> None:
        make_forward = make_forward or self._unit_forward
        for path in paths:
            module = self.denoiser.get_submodule(path)
            original = module.forward
            self._originals[path] = original
            self._instance_forward[path] = "forward" in module.__dict__
            module.forward = make_forward(path, original)  # type: ignore[method-assign]

    def _unhook_units(self) -> None:
        for path, original in self._originals.items():
            module = self.denoiser.get_submodule(path)
            if self._instance_forward[path]:
                module.forward = original  # type: ignore[method-assign]
            else:
                del module.forward
        self._originals = {}
        self._instance_forward = {}

    # ---------------------------------------------------------------------------------------------- planning
    def _make_plan(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SplitPlan:
        """Trace the atomic units once (meta device, FLOPs counted), then fix the plan and free unused weights."""
        self._hook_units(self.layout.atomic)
        try:
            atomic_trace = trace_call(self.denoiser, self._top_forward, args, kwargs, count_flops=True)
        finally:
            self._unhook_units()
        order = [u.path for u in atomic_trace.units]
        if sorted(order) != sorted(self.layout.atomic):
            raise RuntimeError(f"AsyncDiff: traced blocks {order} differ from the layout {self.layout.atomic}")
        costs = {u.path: float(u.flops) + 1e5 * u.ops for u in atomic_trace.units}
        cost_unit = "flops"
        if self._source == "measured":
            costs, cost_unit = self._measure_unit_seconds(order, args, kwargs), "seconds"
        if self._fixed_components is None:
            atomic_comps = auto_components(order, costs, self.layout, self.model_n)
        else:
            atomic_comps = atomic_components(self._fixed_components, self.layout)
        components = coarsen(atomic_comps, order)
        plan = SplitPlan(
            components,
            self._source,
            [sum(costs[u] for u in comp) for comp in atomic_comps],
            type(self.denoiser).__name__,
            cost_unit,
        )
        if self.release_weights and not self._released:
            self._release(atomic_comps)
            move_skipping_meta(self.denoiser, self.device)
        self._hook_units([p for comp in components for p in comp])
        if self.rank == 0:
            log.info("%s", plan.describe())
        return plan

    def _measure_unit_seconds(
        self, order: Sequence[str], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, float]:
        """split='measured': time every block in one real forward (all weights are still here), then average the
        times over the ranks so that every rank derives the same plan."""
        seconds: dict[str, float] = dict.fromkeys(order, 0.0)
        cuda = self.device.type == "cuda"

        def timed(path: str, original: Callable[..., Any]) -> Callable[..., Any]:
            def forward(*a: Any, **k: Any) -> Any:
                if cuda:
                    torch.cuda.synchronize(self.device)
                start = time.perf_counter()
                out = original(*a, **k)
                if cuda:
                    torch.cuda.synchronize(self.device)
                seconds[path] += time.perf_counter() - start
                return out

            return forward

        self._hook_units(order, timed)
        try:
            with torch.no_grad():
                self._top_forward(*args, **kwargs)
        finally:
            self._unhook_units()
        vector = torch.tensor([seconds[p] for p in order], dtype=torch.float64, device=self.device)
        dist.all_reduce(vector)
        return {p: float(v) / dist.get_world_size() for p, v in zip(order, vector.tolist(), strict=True)}

    def _release(self, atomic_comps: Sequence[Sequence[str]]) -> None:
        keep = self.roles.resident_component
        for c, units in enumerate(atomic_comps):
            if c != keep:
                for path in units:
                    self.denoiser.get_submodule(path).to("meta")
        self.param_bytes_local = sum(
            p.numel() * p.element_size() for p in self.denoiser.parameters() if p.device.type != "meta"
        )
        self._released = True

    def _route_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Route:
        key = _signature(args, kwargs)
        route = self._routes.get(key)
        if route is None:
            if self.plan is None:
                self.plan = self._make_plan(args, kwargs)
            trace = trace_call(self.denoiser, self._top_forward, args, kwargs)
            route = build_route(trace, self.plan, self.stage_world)
            self._routes[key] = route
        return route

    # --------------------------------------------------------------------------------------------- per call
    def reset_state(self, warm_up: int = 1) -> None:
        """Accepted for compatibility with the reference; state also resets itself on every pipeline call."""
        validate_parameters(self.model_n, self.stride, warm_up, self.time_shift)
        self.warm_up = warm_up
        self._begin_generation()
        self._in_generation = False

    def _begin_generation(self) -> None:
        self._calls = 0
        self._in_generation = True
        self._cache.clear()
        self._stored_eps = None
        self._last_out = None
        self._bytes_at_generation_start = self.exchange.bytes_sent

    def _end_generation(self, ok: bool) -> None:
        if ok:
            self.exchange.drain()
        self._generation_stats = {
            "steps": self._calls,
            "bytes_sent": self.exchange.bytes_sent - self._bytes_at_generation_start,
        }
        self._in_generation = False
        self._cache.clear()
        self._stored_eps = None

    def _denoiser_forward(self, *args: Any, **kwargs: Any) -> Any:
        if active_tracer() is not None:
            return self._top_forward(*args, **kwargs)
        if not self._in_generation:
            self._begin_generation()  # a denoiser called outside a pipeline call
        call, self._calls = self._calls, self._calls + 1
        mode = mode_for(call, self.warm_up, self.stride)
        bound = self._top_signature.bind(*args, **kwargs)
        if self.cfg_parallel:
            sample = next(iter(bound.arguments.values()))
            batch = int(sample.shape[0]) if isinstance(sample, torch.Tensor) and sample.dim() else 0
            check_cfg_batch(batch, getattr(self.pipeline, "do_classifier_free_guidance", None))
            halves = halve_batch(dict(bound.arguments), batch, self.topology.half)
            bound.arguments.update(halves)
            args, kwargs = bound.args, bound.kwargs
        original_t = bound.arguments["timestep"]
        if call == 0:
            self._tracker.reset(getattr(getattr(self.pipeline, "scheduler", None), "timesteps", None))
        self._tracker.observe(timestep_value(original_t))
        if mode is Mode.FREE:
            return self._free_call()
        route = self._route_for(args, kwargs)
        self._last_route = route
        if mode is not Mode.SYNC:
            for tag, tensor in self.exchange.take_all().items():
                self._cache[tag] = tensor
        self.exchange.finish_sends()
        for src, tag, meta in route.recvs_for(self.stage_rank):
            self.exchange.post_recv(meta.shape, meta.dtype, self.device, src, tag)
        shifted = shifted_timestep(mode, self.roles, self.time_shift, self._tracker)
        if shifted is not None:
            bound.arguments["timestep"] = replace_timestep(original_t, shifted)
            args, kwargs = bound.args, bound.kwargs
        self._step = _Step(mode, route)
        try:
            out = self._top_forward(*args, **kwargs)
        finally:
            self._step = None
        leaves, spec = pytree.tree_flatten(out)
        index = next(i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor))
        if mode is Mode.COMPUTE2 and self.stage_rank == self.model_n - 1:
            self._stored_eps = leaves[index]  # our own t_{k+1} prediction, for the free call
        leaves[index] = self._share_eps(leaves[index], route, self.roles.eps_source(mode))
        self._last_out = (leaves, spec, index)
        return pytree.tree_unflatten(leaves, spec)

    def _share_eps(self, eps: torch.Tensor | None, route: Route, src: int) -> torch.Tensor:
        """The prediction of stage rank ``src``, on every rank of the stage group; with cfg_parallel, joined with
        the other group's half (one all-gather between mirror ranks), so every rank holds the full prediction."""
        meta = route.eps_meta
        mine = self.exchange.broadcast(
            eps if self.stage_rank == src else None, (meta.shape, meta.dtype), self.device, src
        )
        if not self.cfg_parallel:
            return mine
        mirror = (self.rank + self.stage_world) % self.world_size
        return self.exchange.join_halves(mine, mirror)

    def _free_call(self) -> Any:
        """Stride 2's second call of a pair: eps_{k+1} is the last component's own t_{k+1} prediction, or, with
        ``stride2_free_eps='reuse'`` (the reference code's behaviour, kept for comparison), eps_k again."""
        assert self._last_out is not None and self._last_route is not None
        leaves, spec, index = self._last_out
        if self.stride2_free_eps == "reuse":
            return pytree.tree_unflatten(list(leaves), spec)
        eps = self._share_eps(self._stored_eps, self._last_route, self.model_n - 1)
        leaves = list(leaves)
        leaves[index] = eps
        return pytree.tree_unflatten(leaves, spec)

    def _unit_forward(self, path: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            tracer = active_tracer()
            if tracer is not None:
                return tracer.unit_call(path, original, args, kwargs)
            step = self._step
            if step is None:
                return original(*args, **kwargs)
            route = step.route
            unit = route.trace.by_path[path]
            component = route.component[unit.index]
            if self.roles.computes(component, step.mode):
                out = original(*args, **kwargs)
                if self.roles.primary_component == component:
                    self._send_outputs(route, unit.index, pytree.tree_leaves(out))
                return out
            return self._stand_in(route, unit.index, step.mode)

        return forward

    def _send_outputs(self, route: Route, index: int, leaves: list[Any]) -> None:
        unit = route.trace.units[index]
        for leaf in unit.tensor_leaves():
            for dst in route.receivers.get((index, leaf), ()):
                self.exchange.send(leaves[leaf], dst, tag_of((index, leaf)))

    def _stand_in(self, route: Route, index: int, mode: Mode) -> Any:
        """The output of a block this rank does not run: received (current step in warm-up, previous step
        afterwards) when this rank reads it, else a placeholder that nothing this rank computes depends on."""
        unit = route.trace.units[index]
        needed = route.needs[self.stage_rank]
        leaves: list[Any] = []
        for i, meta in enumerate(unit.leaves):
            if meta is None:
                leaves.append(unit.constants[i])
                continue
            if i in unit.alias:
                leaves.append(leaves[unit.alias[i]])
                continue
            tag = tag_of((index, i))
            if mode is Mode.SYNC and self.exchange.has_recv(tag):
                self._cache[tag] = self.exchange.take(tag)
            cached = self._cache.get(tag) if (index, i) in needed else None
            leaves.append(cached if cached is not None else route.placeholder(unit, i, self.device))
        return pytree.tree_unflatten(leaves, unit.spec)

    # ---------------------------------------------------------------------------------------------- reports
    def stats(self) -> dict[str, Any]:
        """Communication and memory figures of this rank (the benchmark issue reports them)."""
        route = self._last_route
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "stage_rank": self.stage_rank,
            "cfg_parallel": self.cfg_parallel,
            "backend": self.backend,
            "model_n": self.model_n,
            "stride": self.stride,
            "warm_up": self.warm_up,
            "steps_last_generation": self._generation_stats.get("steps", 0),
            "bytes_sent_last_generation": self._generation_stats.get("bytes_sent", 0),
            "planned_bytes_per_step_all_ranks": route.planned_bytes_per_step() if route else None,
            "reference_bytes_per_step_all_ranks": route.reference_bytes_per_step() if route else None,
            "param_bytes_full": self.param_bytes_full,
            "param_bytes_local": self.param_bytes_local,
            "plan": self.plan.to_dict() if self.plan else None,
        }
