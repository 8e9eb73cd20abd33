"""A shape-only trace of one denoiser call: execution order, data dependencies, output shapes and FLOPs.

Why: to send only the tensors that cross component boundaries, each rank must know which block outputs feed (through
any glue code: skip concatenations, residual additions, norms) the blocks it runs. Rather than hand-writing that
per architecture, we run the denoiser once on the meta device (no memory, no compute) under a torch-function mode
that tags every tensor with the block outputs it was derived from. The same pass records each block's output
structure (for receive buffers and placeholders) and counts its FLOPs (for the automatic split).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.utils._pytree as pytree
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

Leaf = tuple[int, int]
"""(unit index in execution order, leaf index in the unit's flattened output)."""


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * int(torch.empty((), dtype=self.dtype).element_size())


@dataclass
class UnitRecord:
    """What one wrapped module did in the traced call."""

    index: int
    path: str
    spec: pytree.TreeSpec
    leaves: list[TensorMeta | None]
    """Tensor metadata per flattened output leaf; None for non-tensor leaves (kept in ``constants``)."""
    constants: dict[int, Any]
    alias: dict[int, int]
    """leaf index -> earlier leaf index holding the very same tensor object."""
    deps: frozenset[Leaf] = frozenset()
    flops: int = 0
    ops: int = 0

    def canonical(self, leaf: int) -> int:
        return self.alias.get(leaf, leaf)

    def tensor_leaves(self) -> list[int]:
        return [i for i, meta in enumerate(self.leaves) if meta is not None and i not in self.alias]


@dataclass
class TraceResult:
    units: list[UnitRecord]
    """In execution order."""
    final_deps: frozenset[Leaf]
    final_spec: pytree.TreeSpec
    final_leaves: list[TensorMeta | None]
    by_path: dict[str, UnitRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_path = {u.path: u for u in self.units}


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]


def _is_inplace(func: Any) -> bool:
    name = getattr(func, "__name__", "")
    return name == "__setitem__" or name.startswith("__i") or (name.endswith("_") and not name.endswith("__"))


class _ProvenanceMode(TorchFunctionMode):  # type: ignore[misc]
    """Tags each tensor produced outside wrapped units with the set of unit-output leaves it derives from."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[int, frozenset[Leaf]] = {}
        self.keep: list[torch.Tensor] = []  # keeps tagged tensors alive so ids are not reused
        self.depth = 0
        self.ops = 0

    def tag(self, tensor: torch.Tensor, sources: frozenset[Leaf]) -> None:
        self.tags[id(tensor)] = self.tags.get(id(tensor), frozenset()) | sources
        self.keep.append(tensor)

    def sources(self, tree: Any) -> frozenset[Leaf]:
        found: frozenset[Leaf] = frozenset()
        for t in _tensors(tree):
            found |= self.tags.get(id(t), frozenset())
        return found

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth > 0:
            self.ops += 1
            return out
        srcs = self.sources((args, kwargs))
        if srcs:
            for t in _tensors(out):
                self.tag(t, srcs)
            if _is_inplace(func) and args and isinstance(args[0], torch.Tensor):
                self.tag(args[0], srcs)
        return out


class Tracer:
    """Runs one traced call. Wrapped units call :meth:`unit_call` while a tracer is active."""

    def __init__(self, count_flops: bool) -> None:
        self.mode = _ProvenanceMode()
        self.count_flops = count_flops
        self.units: list[UnitRecord] = []
        self.seen: set[str] = set()

    def unit_call(self, path: str, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if path in self.seen:
            raise RuntimeError(f"AsyncDiff: block {path} ran twice in one denoiser call; it cannot be split")
        self.seen.add(path)
        deps = self.mode.sources((args, kwargs))
        self.mode.depth += 1
        ops_before = self.mode.ops
        try:
            if self.count_flops:
                with FlopCounterMode(display=False) as counter:
                    out = original(*args, **kwargs)
                flops = int(counter.get_total_flops())
            else:
                out = original(*args, **kwargs)
                flops = 0
        finally:
            self.mode.depth -= 1
        index = len(self.units)
        leaves, spec = pytree.tree_flatten(out)
        metas: list[TensorMeta | None] = []
        constants: dict[int, Any] = {}
        alias: dict[int, int] = {}
        first_leaf: dict[int, int] = {}
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                metas.append(TensorMeta(tuple(leaf.shape), leaf.dtype))
                if id(leaf) in first_leaf:
                    alias[i] = first_leaf[id(leaf)]
                else:
                    first_leaf[id(leaf)] = i
                    self.mode.tags[id(leaf)] = frozenset()  # a unit output derives from that unit alone
                    self.mode.tag(leaf, frozenset({(index, i)}))
            else:
                metas.append(None)
                constants[i] = leaf
        record = UnitRecord(index, path, spec, metas, constants, alias, deps, flops, self.mode.ops - ops_before)
        self.units.append(record)
        return out


_active: Tracer | None = None


def active_tracer() -> Tracer | None:
    return _active


@contextmanager
def _tracing(tracer: Tracer) -> Iterator[None]:
    global _active
    _active = tracer
    try:
        with tracer.mode:
            yield
    finally:
        _active = None


def _to_meta(tree: Any) -> Any:
    return pytree.tree_map(lambda x: x.to("meta") if isinstance(x, torch.Tensor) else x, tree)


def trace_call(
    denoiser: nn.Module,
    forward: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    count_flops: bool = False,
) -> TraceResult:
    """Trace ``forward(*args, **kwargs)`` (the denoiser's original forward) on the meta device."""
    state = {name: t.to("meta") for name, t in denoiser.named_parameters()}
    state.update({name: t.to("meta") for name, t in denoiser.named_buffers()})
    meta_args, meta_kwargs = _to_meta(args), _to_meta(kwargs)
    tracer = Tracer(count_flops)
    with torch.no_grad(), _tracing(tracer), torch.nn.utils.stateless._reparametrize_module(denoiser, state):
        out = forward(*meta_args, **meta_kwargs)
    leaves, spec = pytree.tree_flatten(out)
    first = next((t for t in leaves if isinstance(t, torch.Tensor)), None)
    if first is None:
        raise RuntimeError("AsyncDiff: the denoiser returned no tensor")
    final_deps = tracer.mode.tags.get(id(first), frozenset())
    final_leaves = [TensorMeta(tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else None for x in leaves]
    return TraceResult(tracer.units, final_deps, spec, final_leaves)
