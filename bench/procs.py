"""Long-lived worker processes driven by commands: sequential pipelines and gloo rank groups for the benchmarks.

Why: a Python process pays 5-9 s importing diffusers, and a fair speed comparison alternates the sequential and the
AsyncDiff runs (so that load from other jobs hits both alike). So each configuration lives in processes that load
once and then run one generation per command: the orchestrator sends ``call("generate")`` to the sequential
process, then to every rank of the AsyncDiff group, and so on, and collects each rank's answer. Idle processes
block on a queue and use no CPU. (The same idea as tests/asyncdiff/dist_harness.py, but commands instead of a fixed
list of cases.)
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import time
import traceback
from typing import Any

import torch.multiprocessing as mp
from asyncdiff_worker.launch import free_port


class BenchError(RuntimeError):
    """A rank raised, died or timed out."""


def pinned_cores(world: int) -> list[set[int]] | None:
    """One core per rank (rank r on core r) when the group fits on this machine's cores, else None (unpinned).

    Why: two single-thread ranks left to the scheduler migrate between the cores and land on the same one now and
    then; every AsyncDiff step waits for the slower rank, so such hiccups add up (measured here: 0.3-4.5% of a
    generation, side by side). Oversubscribed groups stay unpinned: the scheduler shares cores better than a fixed
    map would.
    """
    cores = sorted(os.sched_getaffinity(0))
    return [{cores[r]} for r in range(world)] if world <= len(cores) else None


def _serve(
    rank: int,
    world: int,
    port: int,
    threads: int,
    cpus: set[int] | None,
    target: Any,
    args: tuple[Any, ...],
    cmds: Any,
    out: Any,
) -> None:
    if cpus:  # before torch starts its intra-op threads, so that they inherit the affinity
        os.sched_setaffinity(0, cpus)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS=str(threads),
    )
    import torch

    torch.set_num_threads(threads)
    try:
        handler = target(rank, world, *args)
        out.put((rank, "ready", None))
    except BaseException:
        out.put((rank, "error", traceback.format_exc()))
        return
    while True:
        cmd = cmds.get()
        if cmd is None:
            break
        name, payload = cmd
        try:
            out.put((rank, "ok", getattr(handler, name)(payload)))
        except BaseException:
            out.put((rank, "error", traceback.format_exc()))
            if world > 1:  # a rank that failed mid-collective leaves the group unusable
                break


class Group:
    """``world`` processes, each running ``target(rank, world, *args)`` and then its methods on command.

    ``cpus``: per-rank CPU affinity (e.g. :func:`pinned_cores`), or None to leave placement to the scheduler.
    """

    def __init__(
        self,
        target: Any,
        world: int,
        args: tuple[Any, ...] = (),
        threads: int = 1,
        start_timeout_s: float = 600,
        cpus: list[set[int]] | None = None,
    ) -> None:
        if cpus is not None and len(cpus) != world:
            raise ValueError(f"cpus: {len(cpus)} affinity sets for {world} ranks; give one per rank")
        ctx = mp.get_context("spawn")
        self.world = world
        self._out = ctx.Queue()
        self._cmds = [ctx.Queue() for _ in range(world)]
        port = free_port()
        self._procs = [
            ctx.Process(
                target=_serve,
                args=(r, world, port, threads, cpus[r] if cpus else None, target, args, self._cmds[r], self._out),
            )
            for r in range(world)
        ]
        for p in self._procs:
            p.start()
        self._collect("ready", start_timeout_s)

    def _collect(self, what: str, timeout_s: float) -> list[Any]:
        results: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        while len(results) < self.world:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise BenchError(f"{what}: ranks {sorted(set(range(self.world)) - set(results))} timed out")
            try:
                rank, status, value = self._out.get(timeout=min(2.0, remaining))
            except queue_mod.Empty:
                dead = [p.exitcode for p in self._procs if not p.is_alive()]
                if dead:
                    self.close()
                    raise BenchError(f"{what}: rank processes exited with {dead}") from None
                continue
            if status == "error":
                self.close()
                raise BenchError(f"{what}: rank {rank} failed:\n{value}")
            results[rank] = value
        return [results[r] for r in range(self.world)]

    def call(self, name: str, payload: Any = None, timeout_s: float = 900) -> list[Any]:
        """Run ``handler.name(payload)`` on every rank; return the per-rank results in rank order."""
        for q in self._cmds:
            q.put((name, payload))
        return self._collect(name, timeout_s)

    def close(self) -> None:
        for q in self._cmds:
            with contextlib.suppress(Exception):
                q.put(None)
        for p in self._procs:
            p.join(timeout=20)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rss_bytes() -> dict[str, int]:
    """This process's resident set now and its peak since the last :func:`reset_peak_rss` (Linux /proc)."""
    fields: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields["rss" if key == "VmRSS" else "peak_rss"] = int(value.split()[0]) * 1024
    return fields


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``5`` into /proc/self/clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
