"""Point-to-point exchange of block outputs between ranks, and the process group itself.

Why: AsyncDiff's cost beyond compute is communication. We send each boundary tensor only to the ranks that read
it, asynchronously (isend right after the block ran, irecv posted at the start of the step, waited only when the
tensor is needed), so transfers overlap with compute on gloo and NCCL alike. Every wait is bounded, and a peer that
died or stopped answering becomes a :class:`PeerError` instead of a hang. Bytes are counted for the benchmarks.
Opt-in profiling (``ASYNCDIFF_PROFILE=1``, or ``exchange.profile = True``) also sums the seconds spent blocked in
each kind of wait (``wait_seconds``: recv, send, broadcast, cfg), so a benchmark can tell waiting from compute; when it
is off the only cost is one attribute test per wait.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from asyncdiff.errors import PeerError

DEFAULT_TIMEOUT_S = float(os.environ.get("ASYNCDIFF_TIMEOUT_S", "600"))
PROFILE_ENV = "ASYNCDIFF_PROFILE"


def profiling_enabled() -> bool:
    """Whether ``ASYNCDIFF_PROFILE`` asks for wait-time accounting (off unless set to a value other than 0)."""
    return os.environ.get(PROFILE_ENV, "0") not in ("", "0")


def ensure_process_group(backend: str | None, timeout_s: float) -> str:
    """Initialise the default process group from torchrun's environment if none exists; return its backend."""
    if not dist.is_available():
        raise PeerError("torch.distributed is not available in this torch build")
    if dist.is_initialized():
        return str(dist.get_backend())
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise PeerError(
            "AsyncDiff runs inside torchrun processes: launch with "
            "`torchrun --nproc_per_node=<model_n + stride - 1, x 2 with cfg_parallel> your_script.py` "
            "(RANK/WORLD_SIZE are not set)"
        )
    chosen = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if chosen == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(chosen, timeout=timedelta(seconds=timeout_s))
    return chosen


def device_for(backend: str) -> torch.device:
    """NCCL: this process's GPU from LOCAL_RANK (multi-node safe); gloo: the CPU."""
    if backend == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@dataclass
class _Pending:
    work: Any
    tensor: torch.Tensor
    peer: int


@dataclass
class Exchange:
    """Non-blocking sends and receives keyed by a tag; one instance per AsyncDiff.

    Ranks are stage ranks (0 .. world - 1 inside this rank's stage group); ``base`` maps them to global ranks, and
    ``group`` is the stage group's process group (None: the default group). With CFG parallelism, ``pair_group``
    holds this rank and its mirror in the other stage group, for the one all-gather of the prediction per step.
    """

    timeout_s: float
    rank: int = field(default_factory=lambda: dist.get_rank())
    world: int = field(default_factory=lambda: dist.get_world_size())
    base: int = 0
    group: Any = None
    pair_group: Any = None
    bytes_sent: int = 0
    messages_sent: int = 0
    profile: bool = field(default_factory=profiling_enabled)
    wait_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds blocked per wait kind (recv, send, broadcast, cfg); filled only while ``profile`` is on."""
    _sends: list[_Pending] = field(default_factory=list)
    _recvs: dict[int, _Pending] = field(default_factory=dict)

    def _wait(self, pending: _Pending, what: str, kind: str) -> None:
        if self.profile:
            start = time.perf_counter()
            try:
                self._wait_bounded(pending, what)
            finally:
                self.wait_seconds[kind] = self.wait_seconds.get(kind, 0.0) + time.perf_counter() - start
            return
        self._wait_bounded(pending, what)

    def _wait_bounded(self, pending: _Pending, what: str) -> None:
        try:
            pending.work.wait(timedelta(seconds=self.timeout_s))
        except Exception as exc:  # gloo/NCCL raise RuntimeError subclasses with transport details
            raise PeerError(
                f"AsyncDiff rank {self.base + self.rank}: {what} rank {pending.peer} failed or timed out after "
                f"{self.timeout_s:.0f}s (did another rank die?): {exc}"
            ) from exc

    def send(self, tensor: torch.Tensor, dst: int, tag: int) -> None:
        tensor = tensor.contiguous()
        work = dist.isend(tensor, self.base + dst, tag=tag)
        self._sends.append(_Pending(work, tensor, self.base + dst))
        self.bytes_sent += tensor.numel() * tensor.element_size()
        self.messages_sent += 1

    def post_recv(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, src: int, tag: int) -> None:
        if tag in self._recvs:
            raise RuntimeError(f"AsyncDiff: receive tag {tag} posted twice")
        buf = torch.empty(shape, dtype=dtype, device=device)
        self._recvs[tag] = _Pending(dist.irecv(buf, self.base + src, tag=tag), buf, self.base + src)

    def has_recv(self, tag: int) -> bool:
        return tag in self._recvs

    def take(self, tag: int) -> torch.Tensor:
        pending = self._recvs.pop(tag)
        self._wait(pending, "receiving from", "recv")
        return pending.tensor

    def take_all(self) -> dict[int, torch.Tensor]:
        return {tag: self.take(tag) for tag in list(self._recvs)}

    def finish_sends(self) -> None:
        sends, self._sends = self._sends, []
        for pending in sends:
            self._wait(pending, "sending to", "send")

    def broadcast(
        self,
        tensor: torch.Tensor | None,
        meta: tuple[tuple[int, ...], torch.dtype],
        device: torch.device,
        src: int,
    ) -> torch.Tensor:
        """Broadcast ``tensor`` from stage rank ``src`` inside the stage group; other ranks get a fresh buffer (never a
        view of their own outputs)."""
        if self.world == 1:
            assert tensor is not None
            return tensor.contiguous()
        if self.rank == src:
            assert tensor is not None
            buf = tensor.contiguous()
            self.bytes_sent += buf.numel() * buf.element_size() * (self.world - 1)
            self.messages_sent += self.world - 1
        else:
            buf = torch.empty(meta[0], dtype=meta[1], device=device)
        work = dist.broadcast(buf, self.base + src, group=self.group, async_op=True)
        self._wait(_Pending(work, buf, self.base + src), "the broadcast of the noise prediction from", "broadcast")
        return buf

    def join_halves(self, half: torch.Tensor, mirror: int) -> torch.Tensor:
        """CFG parallelism: all-gather this group's half of the prediction with the mirror rank's (global rank
        ``mirror``) and return both, first group's half first (the pipeline's [unconditional, conditional])."""
        half = half.contiguous()
        parts = [torch.empty_like(half) for _ in range(2)]
        work = dist.all_gather(parts, half, group=self.pair_group, async_op=True)
        self.bytes_sent += half.numel() * half.element_size()
        self.messages_sent += 1
        self._wait(_Pending(work, half, mirror), "joining the guidance halves with", "cfg")
        return torch.cat(parts, dim=0)

    def drain(self) -> None:
        self.take_all()
        self.finish_sends()
