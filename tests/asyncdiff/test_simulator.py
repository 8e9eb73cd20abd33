"""The simulator (``tests/asyncdiff/simulator.py``) implements the method's definition: checked on a toy denoiser
whose asynchronous outputs are written out by hand.

Why: the distributed runs of every family are compared with the simulator, so the simulator itself must be right.
The toy has three blocks a -> b -> c with a skip of the input into c (glue outside the blocks), each block an affine
map of its input and the timestep, and a toy sampling loop x <- x - 0.1 * eps. The expected outputs below spell out
stride 1, stride 2 (both free-call semantics) and time_shift for the 2- and 3-component splits, independently of the
simulator's mechanism (reruns with cached stand-ins).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from tests.asyncdiff.simulator import Simulator


class Affine(nn.Module):
    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.shift * timestep


def block_a(x: torch.Tensor, t: float) -> torch.Tensor:
    return 0.5 * x + 0.01 * t


def block_b(x: torch.Tensor, t: float) -> torch.Tensor:
    return 1.5 * x - 0.02 * t


def block_c(x: torch.Tensor, t: float) -> torch.Tensor:
    return 0.7 * x + 0.03 * t


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = Affine(0.5, 0.01), Affine(1.5, -0.02), Affine(0.7, 0.03)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor]:
        h = self.b(self.a(sample, timestep), timestep)
        return (self.c(h + sample, timestep),)  # the skip: glue on the current input


TIMESTEPS = [900.0, 700.0, 500.0, 300.0, 100.0]
X0 = torch.tensor([1.0, -2.0, 0.5])


def sample_loop(denoiser: Callable[..., Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x, eps_seen = X0.clone(), []
    for t in TIMESTEPS:
        eps = denoiser(x, torch.tensor(t))[0]
        eps_seen.append(eps)
        x = x - 0.1 * eps
    return x, eps_seen


def expected(split: str, stride: int, warm_up: int, shift: bool, free_eps: str = "own") -> torch.Tensor:
    """The method written out for the toy: ``split`` "ab|c" (2 components) or "a|b|c" (3)."""
    x = X0.clone()
    prev: dict[str, torch.Tensor] = {}
    stored = torch.zeros(3)
    eps_k = torch.zeros(3)
    for k, t in enumerate(TIMESTEPS):
        t_prev = TIMESTEPS[k - 1] if k > 0 else t
        t_next = TIMESTEPS[k + 1] if k + 1 < len(TIMESTEPS) else t
        if k < warm_up:
            a = block_a(x, t)
            b = block_b(a, t)
            eps = block_c(b + x, t)
            prev = {"a": a, "b": b}
        elif stride == 1:
            s = t_prev if shift else t
            a = block_a(x, s)
            # "ab|c": b is fed a's current output (same component); "a|b|c": a's previous one.
            b = block_b(a if split == "ab|c" else prev["a"], s)
            eps = block_c(prev["b"] + x, s)
            prev = {"a": a, "b": b}
        elif (k - warm_up) % 2 == 0:
            assert split == "ab|c"
            ahead, now = (t, t_prev) if shift else (t_next, t)
            a = block_a(x, ahead)
            b = block_b(a, ahead)
            stored = block_c(prev["b"] + x, ahead)  # the last component's own t_{k+1} prediction
            eps = eps_k = block_c(prev["b"] + x, now)  # stride 2's extra rank: last component at t_k
            prev = {"a": a, "b": b}
        else:
            eps = stored if free_eps == "own" else eps_k
        x = x - 0.1 * eps
    return x


SPLITS = {"ab|c": [["a", "b"], ["c"]], "a|b|c": [["a"], ["b"], ["c"]]}
CASES = [
    ("ab|c", 1, 1, False, "own"),
    ("ab|c", 1, 2, True, "own"),
    ("a|b|c", 1, 1, False, "own"),
    ("a|b|c", 1, 1, True, "own"),
    ("ab|c", 2, 1, False, "own"),
    ("ab|c", 2, 1, True, "own"),
    ("ab|c", 2, 2, False, "own"),
    ("ab|c", 2, 1, False, "reuse"),
]


@pytest.mark.parametrize(("split", "stride", "warm_up", "shift", "free_eps"), CASES)
def test_simulator_follows_the_definition(split: str, stride: int, warm_up: int, shift: bool, free_eps: str) -> None:
    toy = Toy()
    sim = Simulator(
        toy, SPLITS[split], stride, warm_up, time_shift=shift, free_eps=free_eps, schedule=lambda: TIMESTEPS
    )
    got, _ = sample_loop(toy)
    want = expected(split, stride, warm_up, shift, free_eps)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    sequential = expected(split, 1, len(TIMESTEPS), False)
    assert float((got - sequential).abs().max()) > 1e-3  # the toy really tells the schedules apart
    steps = len(TIMESTEPS)
    rounds = steps - warm_up if stride == 1 else (steps - warm_up + 1) // 2
    # every block computes once per warm-up call and once per round; stride 2's extra rank runs c once more
    assert sim.computed["a"] == warm_up + rounds
    assert sim.computed["c"] == warm_up + rounds * stride


def test_warm_up_covering_every_step_is_the_plain_forward() -> None:
    toy = Toy()
    plain, _ = sample_loop(toy)
    Simulator(toy, SPLITS["a|b|c"], 1, len(TIMESTEPS), schedule=lambda: TIMESTEPS)
    simulated, _ = sample_loop(toy)
    assert torch.equal(plain, simulated)


def test_the_schedule_definitions_differ_from_each_other() -> None:
    """Stride, time_shift and the free-call semantics each change the toy's output (so the cases above are not
    several spellings of one result)."""
    outputs = {case: expected(*case) for case in CASES}
    values = [tuple(round(float(v), 6) for v in out) for out in outputs.values()]
    assert len(set(values)) == len(values)
