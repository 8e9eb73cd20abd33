"""Container logs: captured to files in CRI's line format and served on ``pods/log``.

Why: ``kubectl logs`` (with ``-f``, ``--previous``, ``--tail``, ``--timestamps``, ``--since``) is how a user
debugs a failed worker, and the operator may fall back to logs for error messages. Each container run
(restart) writes ``<pod dir>/logs/<container>/<restart>.log`` with lines ``<RFC3339Nano> <F|P> <text>``
(P marks a partial line, as CRI does), so timestamps survive and stdout/stderr stay interleaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_stamp(text: str) -> float:
    try:
        return dt.datetime.strptime(text[:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return 0.0


class ContainerLog:
    """One container run's log file; ``changed`` wakes followers, ``closed`` ends them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("ab")
        self._partial = b""
        self.closed = False
        self._changed = asyncio.Event()

    def write(self, chunk: bytes) -> None:
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        stamp = _stamp().encode()
        for line in lines:
            self._fh.write(stamp + b" F " + line + b"\n")
        if lines:
            self._fh.flush()
            self._wake()

    def close(self) -> None:
        if self.closed:
            return
        if self._partial:
            self._fh.write(_stamp().encode() + b" P " + self._partial + b"\n")
            self._partial = b""
        self._fh.close()
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, timeout: float) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def tail_text(self, max_lines: int = 80, max_bytes: int = 2048) -> str:
        """The last lines, for ``terminationMessagePolicy: FallbackToLogsOnError``."""
        try:
            raw = self.path.read_bytes().splitlines()[-max_lines:]
        except OSError:
            return ""
        text = b"".join(_render(line, False) for line in raw)
        return text[-max_bytes:].decode(errors="replace")


def _render(line: bytes, timestamps: bool) -> bytes:
    stamp, _, rest = line.partition(b" ")
    flag, _, text = rest.partition(b" ")
    out = text + (b"" if flag == b"P" else b"\n")
    return stamp + b" " + out if timestamps else out


async def stream(
    log: ContainerLog | None,
    path: Path,
    *,
    follow: bool,
    tail_lines: int | None,
    timestamps: bool,
    since_seconds: int | None,
    limit_bytes: int | None,
) -> AsyncIterator[bytes]:
    """Yield the rendered log; with ``follow``, keep yielding until the container's run ends."""
    sent = 0
    offset = 0
    first = True
    cutoff = time.time() - since_seconds if since_seconds else None
    while True:
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            data = b""
        complete, _, _ = data.rpartition(b"\n")
        if complete or data.endswith(b"\n"):
            chunk_lines = (complete + b"\n").splitlines() if complete else []
            offset += len(complete) + 1 if complete else 0
            if first and tail_lines is not None:
                chunk_lines = chunk_lines[-tail_lines:] if tail_lines > 0 else []
            out = b"".join(
                _render(line, timestamps)
                for line in chunk_lines
                if cutoff is None or _parse_stamp(line.split(b" ", 1)[0].decode(errors="replace")) >= cutoff
            )
            if limit_bytes is not None:
                out = out[: max(0, limit_bytes - sent)]
            if out:
                sent += len(out)
                yield out
            if limit_bytes is not None and sent >= limit_bytes:
                return
        first = False
        if not follow or log is None or log.closed:
            if follow and log is not None and log.closed and offset < _size(path):
                continue
            return
        await log.wait_change(1.0)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
