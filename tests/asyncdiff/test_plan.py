"""Split plans: presets resolve on the real layouts and cover every block once; the automatic split balances
cost; the traced dependencies are exactly what a component needs (a component fed only its boundary tensors
computes what the full forward computes)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.utils._pytree as pytree
from asyncdiff.errors import ConfigError
from asyncdiff.plan import (
    SplitPlan,
    atomic_components,
    auto_components,
    coarsen,
    min_max_partition,
    validate_components,
)
from asyncdiff.presets import PRESETS, architecture_key, preset_components
from asyncdiff.routing import build_route
from asyncdiff.trace import trace_call
from asyncdiff.units import unit_layout

FAMILIES = ["sd15", "sd21", "sdxl", "sdxl-inpaint", "sdxl-controlnet", "sd3", "sd-upscaler", "svd", "animatediff"]
EXPECTED_KEY = {
    "sd15": "sd15",
    "sd21": "sd21",
    "sdxl": "sdxl",
    "sdxl-inpaint": "sdxl",
    "sdxl-controlnet": "sdxl",
    "sd-upscaler": "sd-upscaler",
    "svd": "svd",
    "animatediff": "animatediff",
    "sd3": None,
}


def _denoiser(tiny_model_dir: Any, family: str, layout: str) -> Any:
    from asyncdiff.families import FAMILIES as TABLE
    from asyncdiff.loading import load_pipeline

    pipe = load_pipeline(family, tiny_model_dir(family, layout))
    return pipe, getattr(pipe, TABLE[family].denoiser_attr)


@pytest.mark.parametrize("family", FAMILIES)
def test_presets_resolve_and_cover_every_block_once(tiny_model_dir: Any, family: str) -> None:
    _, denoiser = _denoiser(tiny_model_dir, family, "real")
    assert architecture_key(denoiser) == EXPECTED_KEY[family]
    layout = unit_layout(denoiser)
    for n in (2, 3, 4):
        preset = preset_components(denoiser, n)
        if family == "animatediff" and n == 4:
            assert preset is None  # no table: the automatic split is used
            continue
        assert preset is not None, (family, n)
        validate_components(preset[1], layout, denoiser)
        flat = [u for comp in atomic_components(preset[1], layout) for u in comp]
        assert sorted(flat) == sorted(layout.atomic)


def test_preset_tables_have_no_duplicates() -> None:
    for key, tables in PRESETS.items():
        for n, comps in tables.items():
            paths = [p for c in comps for p in c]
            assert len(paths) == len(set(paths)), (key, n)
            assert len(comps) == n


def test_min_max_partition_balances() -> None:
    assert min_max_partition([1, 1, 1, 1], 2) == [0, 2]
    assert min_max_partition([5, 1, 1, 1, 1, 1], 2) == [0, 1]
    assert min_max_partition([1, 2, 3, 4, 5], 3) == [0, 3, 4]
    starts = min_max_partition([1.0] * 7, 4)
    assert len(starts) == 4 and starts[0] == 0 and sorted(set(starts)) == starts


def test_validation_names_the_problem(tiny_model_dir: Any) -> None:
    _, denoiser = _denoiser(tiny_model_dir, "sd15", "minimal")
    layout = unit_layout(denoiser)
    with pytest.raises(ConfigError, match="in no component"):
        validate_components([["conv_in"], ["conv_out"]], layout, denoiser)
    with pytest.raises(ConfigError, match="already in component 0"):
        validate_components([list(layout.atomic), ["conv_out"]], layout, denoiser)
    with pytest.raises(ConfigError, match="not a module"):
        validate_components([["nope"], list(layout.atomic)], layout, denoiser)


def _call_args(family: str, pipe: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Capture the real arguments of one denoiser call by running the pipeline for one step."""
    from asyncdiff.families import FAMILIES as TABLE
    from asyncdiff.testing.tiny_pipelines import example_call_kwargs

    denoiser = getattr(pipe, TABLE[family].denoiser_attr)
    captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    original = denoiser.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        captured.append((args, kwargs))
        return original(*args, **kwargs)

    denoiser.forward = spy
    try:
        pipe(**example_call_kwargs(family, steps=1))
    finally:
        del denoiser.forward
    return captured[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("model_n", [2, 3])
def test_component_fed_only_its_boundary_tensors_matches_full_forward(
    tiny_model_dir: Any, family: str, model_n: int
) -> None:
    torch.manual_seed(0)
    pipe, denoiser = _denoiser(tiny_model_dir, family, "minimal")
    args, kwargs = _call_args(family, pipe)
    layout = unit_layout(denoiser)
    hooked: dict[str, Any] = {}
    from asyncdiff.trace import active_tracer

    def hook(path: str) -> None:
        module = denoiser.get_submodule(path)
        original = module.forward
        hooked[path] = original

        def forward(*a: Any, **k: Any) -> Any:
            tracer = active_tracer()
            if tracer is not None:
                return tracer.unit_call(path, original, a, k)
            return behaviour(path, original, a, k)

        module.forward = forward

    behaviour: Any = lambda path, original, a, k: original(*a, **k)  # noqa: E731
    for path in layout.atomic:
        hook(path)
    atomic_trace = trace_call(denoiser, denoiser.forward, args, kwargs, count_flops=True)
    order = [u.path for u in atomic_trace.units]
    costs = {u.path: float(u.flops) + 1.0 for u in atomic_trace.units}
    comps = coarsen(auto_components(order, costs, layout, model_n), order)
    for path in layout.atomic:
        del denoiser.get_submodule(path).forward
    for path in (p for c in comps for p in c):
        hook(path)
    plan = SplitPlan(comps, "auto")
    route = build_route(trace_call(denoiser, denoiser.forward, args, kwargs), plan, model_n)

    # Reference: the full forward, recording every block's output.
    recorded: dict[str, Any] = {}

    def record(path: str, original: Any, a: Any, k: Any) -> Any:
        recorded[path] = original(*a, **k)
        return recorded[path]

    behaviour = record
    with torch.no_grad():
        full = pytree.tree_leaves(denoiser(*args, **kwargs))[0]

    for rank in range(model_n):
        needed = route.needs[rank]
        produced: dict[str, Any] = {}

        def isolated(
            path: str, original: Any, a: Any, k: Any, rank: int = rank, needed: Any = needed, produced: Any = produced
        ) -> Any:
            unit = route.trace.by_path[path]
            if route.component[unit.index] == rank:
                produced[path] = original(*a, **k)
                return produced[path]
            leaves, spec = pytree.tree_flatten(recorded[path])
            fake = [
                leaf
                if not isinstance(leaf, torch.Tensor) or (unit.index, unit.canonical(i)) in needed
                else torch.full_like(leaf, float("nan"))
                for i, leaf in enumerate(leaves)
            ]
            return pytree.tree_unflatten(fake, spec)

        behaviour = isolated
        with torch.no_grad():
            out = pytree.tree_leaves(denoiser(*args, **kwargs))[0]
        for path, value in produced.items():
            for got, want in zip(pytree.tree_leaves(value), pytree.tree_leaves(recorded[path]), strict=True):
                if isinstance(got, torch.Tensor):
                    assert torch.equal(got, want), f"rank {rank}: {path} differs when fed only its boundary tensors"
        if rank == model_n - 1:
            assert torch.equal(out, full)
    # Only boundary tensors travel: far less than every block output to every rank.
    assert route.planned_bytes_per_step() < route.reference_bytes_per_step()


def test_describe_lists_every_component() -> None:
    plan = SplitPlan([["a", "b"], ["c"]], "custom", [3e9, 1e9], "UNet2DConditionModel")
    text = plan.describe()
    assert "component 0" in text and "component 1" in text and "75.0%" in text
    assert plan.to_dict()["components"] == [["a", "b"], ["c"]]
