"""Who computes what at each denoiser call: the per-step state machine of AsyncDiff.

Why: the method's semantics live here, apart from the plumbing. Warm-up calls run every block on its owner in
sequence (exact); afterwards each component consumes its upstream's previous-step outputs (stride 1), or, with
stride 2, a compute round precomputes two steps at once and the next call is free. The intended stride-2 semantics
are implemented: eps_k comes from the extra rank's last component at t_k, eps_{k+1} from the last component's own
t_{k+1} prediction (the reference overwrote it). Timesteps come from the actual denoiser calls, never from a counter
over ``scheduler.timesteps`` alone, so img2img strength < 1 and second-order schedulers work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch


class Mode(enum.Enum):
    SYNC = "sync"
    """Warm-up: each block runs on its owner, in sequence, on current inputs (exact)."""
    ASYNC = "async"
    """Stride 1: every component runs at once on its upstream's previous-step outputs."""
    COMPUTE2 = "compute2"
    """Stride 2, first call of a pair: ranks r < N run component r for t_{k+1}; rank N runs the last for t_k."""
    FREE = "free"
    """Stride 2, second call of a pair: nothing runs; eps_{k+1} is the one rank N-1 precomputed."""


def mode_for(call: int, warm_up: int, stride: int) -> Mode:
    if call < warm_up:
        return Mode.SYNC
    if stride == 1:
        return Mode.ASYNC
    return Mode.COMPUTE2 if (call - warm_up) % 2 == 0 else Mode.FREE


@dataclass(frozen=True)
class Roles:
    """Static roles of one rank: N = model_n components, stride S, world N + S - 1."""

    rank: int
    model_n: int
    stride: int

    @property
    def primary_component(self) -> int | None:
        """The component this rank owns (sends its outputs), or None for stride 2's extra rank."""
        return self.rank if self.rank < self.model_n else None

    @property
    def resident_component(self) -> int:
        """The component whose weights this rank keeps."""
        return min(self.rank, self.model_n - 1)

    def computes(self, component: int, mode: Mode) -> bool:
        if mode is Mode.FREE:
            return False
        if mode is Mode.COMPUTE2:
            return component == self.resident_component
        return component == self.primary_component

    def eps_source(self, mode: Mode) -> int:
        if mode is Mode.COMPUTE2:
            return self.model_n  # the extra rank ran the last component for t_k
        return self.model_n - 1


class TimestepTracker:
    """Follows the timesteps the pipeline actually passes, to find t_{k-1} and t_{k+1} for shifted calls."""

    def __init__(self) -> None:
        self.reset(None)

    def reset(self, scheduler_timesteps: Any) -> None:
        self.schedule: list[float] = (
            [float(t) for t in scheduler_timesteps.flatten().tolist()]
            if isinstance(scheduler_timesteps, torch.Tensor)
            else [float(t) for t in scheduler_timesteps or []]
        )
        self.position: int | None = None
        self.previous: float | None = None
        self.current: float | None = None

    def observe(self, t: float) -> None:
        self.previous, self.current = self.current, t
        start = 0 if self.position is None else self.position + 1
        for i in range(start, len(self.schedule)):
            if self.schedule[i] == t:
                self.position = i
                return
        # not in the schedule (a custom loop): keep the last known position; next() then falls back to t_k

    def prev(self) -> float:
        assert self.current is not None
        return self.current if self.previous is None else self.previous

    def next(self) -> float:
        assert self.current is not None
        pos = self.position
        if pos is not None and pos + 1 < len(self.schedule) and self.schedule[pos] == self.current:
            return self.schedule[pos + 1]
        return self.current


def shifted_timestep(mode: Mode, roles: Roles, time_shift: bool, tracker: TimestepTracker) -> float | None:
    """The timestep this rank's blocks should see at this call, or None to keep the pipeline's."""
    if mode is Mode.ASYNC:
        return tracker.prev() if time_shift else None
    if mode is Mode.COMPUTE2:
        if roles.rank < roles.model_n:
            return tracker.current if time_shift else tracker.next()
        return tracker.prev() if time_shift else None
    return None


def timestep_value(t: Any) -> float:
    if isinstance(t, torch.Tensor):
        return float(t.flatten()[0].item())
    return float(t)


def replace_timestep(original: Any, value: float) -> Any:
    """A timestep of the same kind (python number, 0-d or batched tensor) holding ``value``."""
    if isinstance(original, torch.Tensor):
        return torch.full_like(original, value)
    return type(original)(value)
