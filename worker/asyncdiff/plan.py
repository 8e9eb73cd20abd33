"""The split plan: which denoiser blocks each component (rank) runs, and what each is estimated to cost.

Why: the plan is the one decision that sets speed (balance) and traffic (boundaries). It is built from a preset
table, from an explicit list, or automatically by a contiguous min-max partition of per-unit costs; it is validated
(every block covered exactly once) and printable, so users can inspect what runs where.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from asyncdiff.errors import ConfigError
from asyncdiff.units import UnitLayout, covered_atomic


@dataclass
class SplitPlan:
    """Components in order; each is a list of module paths (blocks or sub-blocks) in execution order."""

    components: list[list[str]]
    source: str
    """'preset:<architecture>', 'auto' (FLOPs), 'measured' (block times) or 'custom'."""
    costs: list[float] = field(default_factory=list)
    """Estimated cost per component: FLOPs counted on the first call's shapes, or measured seconds."""
    denoiser: str = ""
    cost_unit: str = "flops"

    @property
    def model_n(self) -> int:
        return len(self.components)

    def owner_of(self) -> dict[str, int]:
        return {path: c for c, paths in enumerate(self.components) for path in paths}

    def describe(self) -> str:
        total = sum(self.costs) or 1.0
        lines = [f"AsyncDiff split plan for {self.denoiser} ({self.source}, {self.model_n} components)"]
        for c, paths in enumerate(self.components):
            share = f"({100 * self.costs[c] / total:5.1f}%)" if self.costs else ""
            if not self.costs:
                cost = ""
            elif self.cost_unit == "seconds":
                cost = f"{1e3 * self.costs[c]:9.2f} ms {share}"
            else:
                cost = f"{self.costs[c] / 1e9:9.3f} GFLOP {share}"
            lines.append(f"  component {c}: {cost} {', '.join(paths)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "denoiser": self.denoiser,
            "source": self.source,
            "components": [list(c) for c in self.components],
            "estimatedCost": [float(c) for c in self.costs],
            "costUnit": self.cost_unit,
        }


def validate_components(
    components: Sequence[Sequence[str]], layout: UnitLayout, denoiser: nn.Module, parameter: str = "split"
) -> None:
    """Every atomic unit covered exactly once, no empty component, every path a real module."""
    seen: dict[str, int] = {}
    for c, paths in enumerate(components):
        if not paths:
            raise ConfigError(parameter, f"component {c}", "every component needs at least one block")
        for path in paths:
            try:
                denoiser.get_submodule(path)
            except AttributeError:
                raise ConfigError(parameter, path, f"not a module of {type(denoiser).__name__}") from None
            covered = covered_atomic(path, layout.atomic)
            if not covered:
                raise ConfigError(parameter, path, "not a splittable block (see asyncdiff.units.unit_layout)")
            for unit in covered:
                if unit in seen:
                    raise ConfigError(parameter, path, f"{unit} is already in component {seen[unit]}")
                seen[unit] = c
    missing = [u for u in layout.atomic if u not in seen]
    if missing:
        raise ConfigError(parameter, "incomplete", f"these blocks are in no component: {', '.join(missing)}")


def atomic_components(components: Sequence[Sequence[str]], layout: UnitLayout) -> list[list[str]]:
    """Expand block paths into atomic units."""
    return [[u for path in paths for u in covered_atomic(path, layout.atomic)] for paths in components]


def coarsen(atomic_comps: Sequence[Sequence[str]], order: Sequence[str]) -> list[list[str]]:
    """Wrap a whole block instead of its sub-units when all of them sit in one component (fewer hooks and
    boundary tensors). ``order`` is the atomic execution order."""
    owner = {u: c for c, units in enumerate(atomic_comps) for u in units}
    parents: dict[str, list[str]] = {}
    for unit in order:
        parts = unit.split(".")
        if len(parts) == 4:  # e.g. up_blocks.1.resnets.2 -> up_blocks.1
            parents.setdefault(".".join(parts[:2]), []).append(unit)
    whole = {p for p, subs in parents.items() if len({owner[s] for s in subs}) == 1}
    result: list[list[str]] = [[] for _ in atomic_comps]
    for unit in order:
        parts = unit.split(".")
        parent = ".".join(parts[:2]) if len(parts) == 4 else None
        path = parent if parent in whole else unit
        if path not in result[owner[unit]]:
            result[owner[unit]].append(path)
    return result


def min_max_partition(costs: Sequence[float], parts: int) -> list[int]:
    """Cut points of a contiguous partition into ``parts`` non-empty groups minimising the largest group cost.
    Returns the start index of each group."""
    n = len(costs)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for p in range(1, parts + 1):
        for i in range(p, n + 1):
            for j in range(p - 1, i):
                cost = max(best[p - 1][j], prefix[i] - prefix[j])
                if cost < best[p][i]:
                    best[p][i], cut[p][i] = cost, j
    starts, i = [], n
    for p in range(parts, 0, -1):
        i = cut[p][i]
        starts.append(i)
    return starts[::-1]


def auto_components(order: Sequence[str], costs: dict[str, float], layout: UnitLayout, model_n: int) -> list[list[str]]:
    """Contiguous, cost-balanced components over the atomic units in execution order; tail units go last."""
    body = [u for u in order if u not in layout.tail]
    starts = [*min_max_partition([costs[u] for u in body], model_n), len(body)]
    comps = [list(body[starts[c] : starts[c + 1]]) for c in range(model_n)]
    comps[-1] += [u for u in order if u in layout.tail]
    return comps
