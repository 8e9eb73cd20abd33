"""Pure progress arithmetic of a sharded job: outputs done/total summed over shards, the rate and the ETA.

Why this shape (the cheap progress channel): the operator must not read every pod's log on every reconcile. What
it reads instead costs O(1) API calls per job per interval, whatever the log volume or the number of pods:

- the child Job's own status on every reconcile (one GET): ``completedIndexes`` names the finished shards, and the
  shard plan says how many outputs each holds, so finished outputs are exact without any log;
- at most one bounded log tail of one running pod per progress interval, taking the running shards in turn: its
  last progress line says how many outputs of that shard are done. The last sample of each running shard is kept
  in ``status.progress.inFlight`` (shard index -> outputs done in it), so the sum moves smoothly while the sampling
  rotates, and a shard's entry is dropped once the Job lists it as completed.

Rate: outputs per minute since an anchor (``rateAnchorTs``/``rateAnchorDone``) set at the first observation of the
run; the anchor moves forward once it is older than ``RATE_WINDOW_S`` (to the midpoint), so the rate follows the
recent pace rather than the whole history. ETA: remaining outputs / rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

RATE_WINDOW_S: Final = 300.0
MIN_RATE_SPAN_S: Final = 5.0


def shard_done(completed: Iterable[int], in_flight: Mapping[int, int], size_of: Callable[[int], int]) -> int:
    """Outputs done: whole completed shards plus the last known count of each running shard (capped at its size)."""
    finished = set(completed)
    total = sum(size_of(i) for i in finished)
    total += sum(min(max(int(n), 0), size_of(i)) for i, n in in_flight.items() if i not in finished)
    return total


def format_eta(seconds: float | None) -> str:
    """``45s``, ``3m10s``, ``2h05m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def in_flight_of(status_progress: Mapping[str, Any] | None) -> dict[int, int]:
    """``status.progress.inFlight`` (JSON keys are strings) as {shard index: outputs done in it}."""
    raw = (status_progress or {}).get("inFlight") or {}
    out: dict[int, int] = {}
    for key, value in raw.items():
        try:
            out[int(key)] = int(value)
        except (TypeError, ValueError):
            continue
    return out


def next_progress(
    previous: Mapping[str, Any] | None,
    *,
    completed: set[int],
    size_of: Callable[[int], int],
    total: int,
    sample: tuple[int, int] | None,
    now: float,
    step: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The new ``status.progress`` from the previous one, the completed shards and an optional sample
    ``(shard index, outputs done in it)`` of one running pod; ``step`` is that pod's ``(step, steps)``."""
    prev = dict(previous or {})
    in_flight = {i: n for i, n in in_flight_of(prev).items() if i not in completed}
    if sample is not None and sample[0] not in completed:
        in_flight[sample[0]] = max(in_flight.get(sample[0], 0), sample[1])
    done = min(shard_done(completed, in_flight, size_of), total)
    anchor_ts = prev.get("rateAnchorTs")
    anchor_done = prev.get("rateAnchorDone")
    if not isinstance(anchor_ts, int | float) or not isinstance(anchor_done, int):
        anchor_ts, anchor_done = now, done
    elif now - float(anchor_ts) > RATE_WINDOW_S:  # slide: keep the rate recent
        old_rate = (done - anchor_done) / max(now - float(anchor_ts), 1e-9)
        anchor_ts = (float(anchor_ts) + now) / 2
        anchor_done = max(0, round(done - old_rate * (now - anchor_ts)))
    span = now - float(anchor_ts)
    rate = (done - int(anchor_done)) * 60.0 / span if span >= MIN_RATE_SPAN_S and done > int(anchor_done) else None
    remaining = max(total - done, 0)
    eta_s = 0.0 if remaining == 0 else (remaining * 60.0 / rate if rate else None)
    out: dict[str, Any] = {
        "outputsDone": done,
        "outputsTotal": total,
        "summary": f"{done}/{total}",
        "inFlight": {str(i): n for i, n in sorted(in_flight.items())},
        "rateAnchorTs": float(anchor_ts),
        "rateAnchorDone": int(anchor_done),
        "eta": format_eta(eta_s),
    }
    if rate is not None:
        out["outputsPerMinute"] = round(rate, 2)
    if eta_s is not None:
        out["etaSeconds"] = round(eta_s)
    if step is not None:
        out["step"], out["steps"] = step
    elif "step" in prev:
        out["step"], out["steps"] = prev.get("step", 0), prev.get("steps", 0)
    if isinstance(prev.get("lastProgressTs"), int | float):
        out["lastProgressTs"] = prev["lastProgressTs"]
    return out
