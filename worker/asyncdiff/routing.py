"""Routing tables derived from a trace and a plan: which rank needs which block output, from whom.

Why: this turns the traced data dependencies into the only messages that must flow. A rank needs a leaf when a
block of its resident component (or, for the last component, the final output) reads it and another component
produces it. Stride 2's extra rank mirrors the last component, so it needs what that component needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from asyncdiff.plan import SplitPlan
from asyncdiff.schedule import Roles
from asyncdiff.trace import Leaf, TensorMeta, TraceResult, UnitRecord

TAG_STRIDE = 1024


def tag_of(leaf: Leaf) -> int:
    return leaf[0] * TAG_STRIDE + leaf[1]


@dataclass
class Route:
    trace: TraceResult
    component: list[int]
    """Component of each traced unit (by execution index)."""
    needs: list[frozenset[Leaf]]
    """Per rank: the canonical leaves it receives."""
    receivers: dict[Leaf, list[int]]
    model_n: int
    placeholders: dict[Leaf, torch.Tensor] = field(default_factory=dict)

    @property
    def eps_meta(self) -> TensorMeta:
        return next(m for m in self.trace.final_leaves if m is not None)

    def recvs_for(self, rank: int) -> list[tuple[int, int, TensorMeta]]:
        """(source rank, tag, meta) in the order the sources send them (execution order)."""
        out = []
        for leaf in sorted(self.needs[rank]):
            meta = self.trace.units[leaf[0]].leaves[leaf[1]]
            assert meta is not None
            out.append((self.component[leaf[0]], tag_of(leaf), meta))
        return out

    def placeholder(self, unit: UnitRecord, leaf: int, device: torch.device) -> torch.Tensor:
        key = (unit.index, leaf)
        if key not in self.placeholders:
            meta = unit.leaves[leaf]
            assert meta is not None
            self.placeholders[key] = torch.zeros(meta.shape, dtype=meta.dtype, device=device)
        return self.placeholders[key]

    def planned_bytes_per_step(self) -> int:
        """Bytes all ranks together send per compute step under this route (boundary tensors + eps)."""
        world = len(self.needs)
        total = sum(self._leaf_bytes(leaf) * len(dst) for leaf, dst in self.receivers.items())
        return total + self.eps_meta.nbytes * (world - 1)

    def reference_bytes_per_step(self) -> int:
        """Bytes per step if every block output were broadcast to every rank (the reference scheme)."""
        world = len(self.needs)
        total = sum(self._leaf_bytes((u.index, i)) for u in self.trace.units for i in u.tensor_leaves())
        return (total + self.eps_meta.nbytes) * (world - 1)

    def _leaf_bytes(self, leaf: Leaf) -> int:
        meta = self.trace.units[leaf[0]].leaves[leaf[1]]
        return meta.nbytes if meta is not None else 0


def build_route(trace: TraceResult, plan: SplitPlan, world: int) -> Route:
    owner = plan.owner_of()
    missing = [u.path for u in trace.units if u.path not in owner]
    if missing:
        raise RuntimeError(f"AsyncDiff: traced blocks missing from the plan: {missing}")
    component = [owner[u.path] for u in trace.units]
    last = plan.model_n - 1
    if trace.units and component[-1] != last:
        raise RuntimeError("AsyncDiff: the last block to run must belong to the last component")

    def canonical(leaf: Leaf) -> Leaf:
        return (leaf[0], trace.units[leaf[0]].canonical(leaf[1]))

    needs: list[frozenset[Leaf]] = []
    for rank in range(world):
        resident = Roles(rank, plan.model_n, world - plan.model_n + 1).resident_component
        deps: set[Leaf] = set()
        for unit in trace.units:
            if component[unit.index] == resident:
                deps |= unit.deps
        if resident == last:
            deps |= trace.final_deps
        needs.append(frozenset(canonical(d) for d in deps if component[d[0]] != resident))
    receivers: dict[Leaf, list[int]] = {}
    for rank, leaves in enumerate(needs):
        for leaf in leaves:
            receivers.setdefault(leaf, []).append(rank)
    return Route(trace, component, needs, receivers, plan.model_n)
