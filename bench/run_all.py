"""One entry for every benchmark: ``python -m bench.run_all [--quick] [--only NAME]`` (``make bench`` runs it).

Why one driver: the claims in the README must come from one run, side by side, each with the machine's load noted
(timings on shared cores are noisy). The full run writes bench/results/*.json, PNG plots and SUMMARY.md in under
20 minutes on 2 cores once the digits model exists (training, ~8-12 min, happens only when bench/assets/ lacks the
weights). ``--quick`` validates every code path in a few minutes with smaller settings and writes to
bench/results/quick/ so that it never overwrites full results. ``--only`` runs one part and rebuilds the summary
from the others' last results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("train", "library", "traffic", "speed", "cfg", "fidelity", "operator", "batch")


def _log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _write(results: Path, name: str, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, default=_json_default).replace("Infinity", '"inf"')
    (results / f"{name}.json").write_text(text + "\n")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small settings; results in bench/results/quick/")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from diffusers.utils import logging as dlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    mode = "quick" if args.quick else "full"
    results = RESULTS / "quick" if args.quick else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    parts = list(args.only or PARTS)
    prev = json.loads((results / "run_all.json").read_text()) if (results / "run_all.json").is_file() else {}
    seconds: dict[str, float] = dict(prev.get("seconds", {})) if args.only else {}
    loads: dict[str, str] = dict(prev.get("load_per_part", {})) if args.only else {}
    started = time.perf_counter()
    load_before = _loadavg()
    _log(f"bench ({mode}): {', '.join(parts)}; load average {load_before}")
    grids: dict[str, Any] | None = None

    def timed(name: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        before = _loadavg()
        _log(f"--- {name}")
        fn()
        seconds[name] = time.perf_counter() - t0
        loads[name] = f"{before} -> {_loadavg()} (at {dt.datetime.now():%H:%M})"
        _log(f"--- {name}: {seconds[name]:.0f} s")

    if "train" in parts:
        from bench import digits

        timed("train", lambda: _log(f"digits model: {json.dumps(digits.ensure_trained())}"))
    if "library" in parts:
        from bench import library_summary

        def library() -> None:
            if library_summary.main(out=results / "library_summary.json") != 0:
                raise RuntimeError("library summary failed")

        timed("library", library)
    if "traffic" in parts:
        from bench import gpu_components

        def traffic() -> None:
            out = str(results / "traffic_real_size.json")
            if gpu_components.main(["--traffic-only", "--device", "cpu", "--out", out]) != 0:
                raise RuntimeError("traffic calculation failed")

        timed("traffic", traffic)
    if "speed" in parts:
        from bench import speed

        timed("speed", lambda: _write(results, "speed", {"mode": mode, **speed.run(args.quick, _log)}))
    if "cfg" in parts:
        from bench import cfg_parallel

        timed("cfg", lambda: _write(results, "cfg_parallel", {"mode": mode, **cfg_parallel.run(args.quick, _log)}))
    if "fidelity" in parts:
        from bench import fidelity

        def fid() -> None:
            nonlocal grids
            data, grids = fidelity.run(args.quick, _log)
            _write(results, "fidelity", {"mode": mode, **data})

        timed("fidelity", fid)
    if "operator" in parts:
        from bench import operator_scale

        timed(
            "operator",
            lambda: _write(results, "operator_scale", {"mode": mode, **operator_scale.run(args.quick, _log)}),
        )
    if "batch" in parts:
        from bench import batch_throughput

        timed(
            "batch",
            lambda: _write(results, "batch_throughput", {"mode": mode, **batch_throughput.run(args.quick, _log)}),
        )
    total = time.perf_counter() - started
    run = {
        "mode": mode,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "total_seconds": sum(seconds.values()) if args.only else total,
        "seconds": seconds,
        "load_per_part": loads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "note": (
            "Quick mode (M UNet, fewer steps/samples/CRs): validates the code paths; timings are indicative only."
            if args.quick
            else "Full mode. Timings are only as quiet as the machine was: check the load averages above."
        ),
    }
    _write(results, "run_all", run)
    from bench.report import render

    summary = render(results, grids)
    _log(f"wrote {summary} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
