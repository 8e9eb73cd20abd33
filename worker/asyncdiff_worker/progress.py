"""Machine-readable progress: one JSON line per event on stdout, a heartbeat, an optional file, a terminal bar.

Why stdout JSON lines: the operator follows a job by reading its pod's logs, which needs no extra credentials in the
worker (least privilege: the worker never talks to the Kubernetes API). Every line is self-contained: it starts with
``{"asyncdiff": <event>`` and carries the whole current state, so a reader can take the last line it sees.

Events: ``start``, ``phase``, ``progress`` (a denoising step, at most one per ``ASYNCDIFF_PROGRESS_INTERVAL``
seconds, default 1), ``output`` (an output stored), ``reused`` (outputs of a shard already stored for the same
pixels, with ``count``), ``shard`` (a shard's marker written: ``shard``, ``shards``, ``rendered``, ``reused``),
``heartbeat`` (every ``ASYNCDIFF_HEARTBEAT_SECONDS``, default 15, from a thread), ``done`` and ``error``. State
fields in every line: ``ts``, ``job``, ``phase``, ``outputsDone``, ``outputsTotal``, ``output`` (current index),
``step``, ``steps``, ``lastProgressTs``.

Stall detection: heartbeats keep coming while the process lives, but ``lastProgressTs`` only moves when real
progress happens (a step, an output, a phase change, download progress); a hung collective shows as a growing
``ts - lastProgressTs``. ``$ASYNCDIFF_PROGRESS_FILE``, if set, always holds the latest line (replaced atomically). When
stdout is a terminal a human progress bar is drawn instead of JSON (``ASYNCDIFF_PROGRESS=json`` forces JSON).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

PREFIX = '{"asyncdiff":'


def parse_event(line: str) -> dict[str, Any] | None:
    """The progress event in a log line (tolerating a ``[rank0]:`` style prefix), or None."""
    at = line.find(PREFIX)
    if at < 0:
        return None
    try:
        event = json.loads(line[at:])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def render_bar(state: dict[str, Any], width: int = 30) -> str:
    """One terminal line for a state."""
    total = int(state.get("outputsTotal") or 0)
    done = int(state.get("outputsDone") or 0)
    steps = int(state.get("steps") or 0)
    step = int(state.get("step") or 0)
    frac = (done + (step / steps if steps else 0.0)) / total if total else 0.0
    filled = round(frac * width)
    bar = "#" * filled + "-" * (width - filled)
    phase = state.get("phase", "")
    return f"[{bar}] {done}/{total} outputs  step {step}/{steps}  {phase}"


class ProgressReporter:
    """Emits progress events. Only rank 0 reports (``enabled=False`` makes every call a no-op)."""

    def __init__(
        self,
        job: str,
        *,
        outputs_total: int = 0,
        steps: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        human: bool | None = None,
        progress_file: str | Path | None = None,
        heartbeat_seconds: float | None = None,
        step_interval: float | None = None,
    ) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stdout
        if human is None:
            forced_json = os.environ.get("ASYNCDIFF_PROGRESS", "") == "json"
            human = not forced_json and _isatty(self.stream)
        self.human = human
        path = progress_file if progress_file is not None else os.environ.get("ASYNCDIFF_PROGRESS_FILE")
        self.progress_file = Path(path) if path else None
        self.heartbeat_seconds = (
            heartbeat_seconds if heartbeat_seconds is not None else _env_float("ASYNCDIFF_HEARTBEAT_SECONDS", 15.0)
        )
        self.step_interval = (
            step_interval if step_interval is not None else _env_float("ASYNCDIFF_PROGRESS_INTERVAL", 1.0)
        )
        now = time.time()
        self.state: dict[str, Any] = {
            "job": job,
            "phase": "starting",
            "outputsDone": 0,
            "outputsTotal": outputs_total,
            "output": None,
            "step": 0,
            "steps": steps,
            "lastProgressTs": now,
        }
        self._lock = threading.Lock()
        self._last_step_emit = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- emitting -----------------------------------------------------------------------------------------------

    def emit(self, event: str, *, progress: bool = True, **fields: Any) -> None:
        """Emit one event; ``progress=False`` for events that are not progress (heartbeats)."""
        if not self.enabled:
            return
        with self._lock:
            now = time.time()
            if progress:
                self.state["lastProgressTs"] = now
            record = {"asyncdiff": event, "ts": round(now, 3), **self.state, **fields}
            line = json.dumps(record, separators=(",", ":"), default=str)
            if self.human:
                text = "\r" + render_bar(self.state) + ("\n" if event in ("done", "error") else "")
                self._write(text)
            else:
                self._write(line + "\n")
            if self.progress_file is not None:
                self._write_file(line)

    def _write(self, text: str) -> None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        data = text.encode()
        if fd >= 0:
            self.stream.flush()
            # one write per line keeps lines whole when several processes share the pipe
            while data:
                written = os.write(fd, data)
                data = data[written:]
        else:
            self.stream.write(text)
            self.stream.flush()

    def _write_file(self, line: str) -> None:
        assert self.progress_file is not None
        try:
            tmp = self.progress_file.with_name(self.progress_file.name + ".tmp")
            tmp.write_text(line + "\n")
            os.replace(tmp, self.progress_file)
        except OSError:
            pass

    # -- events -------------------------------------------------------------------------------------------------

    def start(self, **fields: Any) -> None:
        self.emit("start", **fields)

    def phase(self, name: str, **fields: Any) -> None:
        self.state["phase"] = name
        self.emit("phase", **fields)

    def set_totals(self, outputs_total: int, steps: int) -> None:
        self.state["outputsTotal"] = outputs_total
        self.state["steps"] = steps

    def begin_output(self, index: int) -> None:
        self.state["output"] = index
        self.state["step"] = 0

    def step(self, step: int, total: int | None = None) -> None:
        """A denoising step of the current output finished (1-based). ``total``: the steps this output really runs
        (img2img with strength < 1 runs fewer than ``generation.steps``), when the pipeline says. Rate-limited,
        except the first and the last step of every output, so the current output's step is always shown even when
        an output takes less than the interval."""
        self.state["step"] = step
        if total:
            self.state["steps"] = total
        now = time.monotonic()
        last = step >= int(self.state.get("steps") or 0)
        if step == 1 or last or now - self._last_step_emit >= self.step_interval:
            self._last_step_emit = now
            self.emit("progress")
        elif self.enabled:
            with self._lock:
                self.state["lastProgressTs"] = time.time()

    def output_done(self, record: dict[str, Any]) -> None:
        self.state["outputsDone"] = int(self.state["outputsDone"]) + 1
        self.emit("output", record=record)

    def outputs_reused(self, count: int, **fields: Any) -> None:
        """``count`` outputs were already stored for the same pixels (resume): done without rendering."""
        self.state["outputsDone"] = int(self.state["outputsDone"]) + count
        self.emit("reused", count=count, **fields)

    def done(self, **fields: Any) -> None:
        self.state["phase"] = "done"
        self.emit("done", **fields)
        self.stop_heartbeat()

    def error(self, **fields: Any) -> None:
        self.state["phase"] = "failed"
        self.emit("error", progress=False, **fields)
        self.stop_heartbeat()

    # -- heartbeat ----------------------------------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        if not self.enabled or self.heartbeat_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._beat, name="asyncdiff-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            self.emit("heartbeat", progress=False, pid=os.getpid())

    def stop_heartbeat(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
