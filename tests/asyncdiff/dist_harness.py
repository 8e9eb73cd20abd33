"""Run batches of AsyncDiff cases in spawned gloo process groups, one group per world size.

Why: every spawned process pays ~5-8 s importing diffusers. Running all cases of one world size inside one
process group amortises that, so the suite covers every family and configuration within CI's budget.
Each case runs the sequential pipeline first (the reference), then wraps the same pipeline with AsyncDiff.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch.multiprocessing as mp
from asyncdiff_worker.launch import free_port


@dataclass(frozen=True)
class Case:
    family: str
    layout: str
    model_n: int
    stride: int
    warm_up: int
    steps: int
    time_shift: bool = False
    img2img: bool = False
    split: Any = None
    free_eps: str = "own"
    cfg: bool = False
    """``cfg_parallel=True``: two stage groups, world 2 x (model_n + stride - 1)."""
    batch: int = 1
    """> 1: one call with ``batch`` prompts (svd: videos) and a generator each, compared with ``batch`` one-output
    calls under the same AsyncDiff object (the result's max_abs_diff is batched vs one at a time)."""
    then_warm_up: int = 0
    """> 0: after the compared call, ``reset_state(warm_up=then_warm_up)`` and call again on the same object (one
    planning pays for two modes); that output lands in the result's ``then_*`` fields."""

    @property
    def world(self) -> int:
        return (self.model_n + self.stride - 1) * (2 if self.cfg else 1)

    @property
    def key(self) -> str:
        parts = [self.family, self.layout, f"n{self.model_n}s{self.stride}w{self.warm_up}", f"steps{self.steps}"]
        parts += ["ts"] * self.time_shift + ["img2img"] * self.img2img
        parts += [self.split] if isinstance(self.split, str) else ["custom-split"] if self.split else []
        parts += [f"free-eps-{self.free_eps}"] if self.free_eps != "own" else []
        parts += ["cfg"] * self.cfg + ([f"batch{self.batch}"] if self.batch > 1 else [])
        parts += [f"then-w{self.then_warm_up}"] if self.then_warm_up else []
        return "-".join(parts)


@dataclass
class RankResult:
    rank: int
    max_abs_diff: float = float("nan")
    shape: tuple[int, ...] = ()
    reference_shape: tuple[int, ...] = ()
    """The sequential pipeline's output shape (same call, before AsyncDiff wrapped the pipeline)."""
    finite: bool = False
    digest: str = ""
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    plan: str = ""
    error: str = ""
    array: Any = None
    """The output itself (rank 0 only; the tiny outputs are small)."""
    then_digest: str = ""
    then_finite: bool = False
    then_array: Any = None
    """``Case.then_warm_up``'s second output (rank 0 only)."""


def _output_array(result: Any) -> Any:
    import numpy as np

    for name in ("images", "frames"):
        if hasattr(result, name):
            value = getattr(result, name)
            return np.asarray(value[0] if isinstance(value, list) and name == "frames" else value, dtype=np.float32)
    raise TypeError(f"unknown pipeline output {type(result)}")


def _batched_kwargs(case: Case, index: int | None) -> dict[str, Any]:
    """The call of output ``index`` alone (seed ``index``), or, with None, of all ``case.batch`` outputs at once."""
    import torch
    from asyncdiff.testing.tiny_pipelines import example_call_kwargs

    kwargs = example_call_kwargs(case.family, steps=case.steps, img2img=case.img2img)
    indices = range(case.batch) if index is None else [index]
    kwargs["generator"] = [torch.Generator("cpu").manual_seed(i) for i in indices]
    if case.family == "svd":
        kwargs["num_videos_per_prompt"] = len(indices)
    else:
        kwargs["prompt"] = [f"{kwargs['prompt']} number {i}" for i in indices]
        kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(indices)
    return kwargs


def _batch_array(result: Any) -> Any:
    import numpy as np

    return np.asarray(result.frames if hasattr(result, "frames") else result.images, dtype=np.float32)


def set_rank_environment(rank: int, world: int, port: int) -> None:
    """What torchrun would set for this rank (loopback rendezvous), plus an offline model hub."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        HF_HUB_OFFLINE="1",
    )


def _worker(rank: int, world: int, port: int, cases: list[tuple[Case, str]], queue: Any) -> None:
    set_rank_environment(rank, world, port)
    os.environ["ASYNCDIFF_TIMEOUT_S"] = "120"
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from asyncdiff import AsyncDiff
    from asyncdiff.loading import load_pipeline
    from asyncdiff.testing.tiny_pipelines import example_call_kwargs

    for case, path in cases:
        out = RankResult(rank)
        try:
            pipe = load_pipeline(case.family, path, img2img=case.img2img)
            if case.batch == 1:
                reference = _output_array(
                    pipe(**example_call_kwargs(case.family, steps=case.steps, img2img=case.img2img))
                )
            async_diff = AsyncDiff(
                pipe,
                model_n=case.model_n,
                stride=case.stride,
                warm_up=case.warm_up,
                time_shift=case.time_shift,
                split=case.split,
                stride2_free_eps=case.free_eps,
                cfg_parallel=case.cfg,
            )
            if case.batch > 1:
                singles = [_batch_array(pipe(**_batched_kwargs(case, i))) for i in range(case.batch)]
                reference = np.concatenate(singles, axis=0)
            start = time.perf_counter()
            if case.batch > 1:
                got = _batch_array(pipe(**_batched_kwargs(case, None)))
            else:
                got = _output_array(pipe(**example_call_kwargs(case.family, steps=case.steps, img2img=case.img2img)))
            out.seconds = time.perf_counter() - start
            out.shape, out.reference_shape = tuple(got.shape), tuple(reference.shape)
            # never broadcast: a shape mismatch is a failure, not a small difference
            out.max_abs_diff = float(np.abs(got - reference).max()) if got.shape == reference.shape else float("inf")
            out.finite = bool(np.isfinite(got).all())
            out.digest = hashlib.sha256(got.tobytes()).hexdigest()
            out.array = got if rank == 0 else None
            if case.then_warm_up:
                async_diff.reset_state(warm_up=case.then_warm_up)
                then = _output_array(pipe(**example_call_kwargs(case.family, steps=case.steps, img2img=case.img2img)))
                out.then_finite = bool(np.isfinite(then).all())
                out.then_digest = hashlib.sha256(then.tobytes()).hexdigest()
                out.then_array = then if rank == 0 else None
            out.stats = async_diff.stats()
            out.plan = async_diff.plan.describe() if async_diff.plan else ""
        except Exception:
            out.error = traceback.format_exc()
        queue.put((case.key, out))


def run_cases(cases: list[tuple[Case, str]], timeout_s: float = 900) -> dict[str, list[RankResult]]:
    """Run (case, model folder) pairs that share one world size; return per-case results of every rank."""
    worlds = {c.world for c, _ in cases}
    assert len(worlds) == 1, worlds
    world = worlds.pop()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, cases, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[str, list[RankResult]] = {c.key: [] for c, _ in cases}
    deadline = time.monotonic() + timeout_s
    expected = len(cases) * world
    received = 0
    try:
        while received < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"AsyncDiff cases did not finish in {timeout_s}s")
            try:
                key, res = queue.get(timeout=min(5.0, remaining))
            except Exception:
                dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise RuntimeError(f"rank processes died: {[p.exitcode for p in dead]}") from None
                continue
            results[key].append(res)
            received += 1
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for per_rank in results.values():
        per_rank.sort(key=lambda r: r.rank)
    return results


def _call_target(rank: int, world: int, port: int, target: Any, args: tuple[Any, ...], queue: Any) -> None:
    set_rank_environment(rank, world, port)
    try:
        queue.put((rank, "ok", target(rank, *args)))
    except BaseException as exc:  # the scenario's outcome is the exception itself
        queue.put((rank, type(exc).__name__, str(exc)))


def run_on_ranks(
    target: Any, world: int, args: tuple[Any, ...] = (), timeout_s: float = 240
) -> dict[int, tuple[str, Any]]:
    """Run ``target(rank, *args)`` on ``world`` spawned ranks; return rank -> (outcome, value or message).
    Ranks that die without reporting are missing from the result."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_call_target, args=(r, world, port, target, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    out: dict[int, tuple[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < world and time.monotonic() < deadline:
            try:
                rank, outcome, value = queue.get(timeout=1.0)
                out[rank] = (outcome, value)
            except Exception:
                if all(not p.is_alive() for p in procs):
                    break
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return out
