"""Per-family summary of the library on tiny models: exactness, async time and traffic, in one run.

Why: the closing notes and the README quote these numbers; this prints them side by side from one run (two gloo
ranks, one thread each, N=2 S=1) and writes bench/results/library_summary.json. Tiny random models: the times show
overheads, not speedups (see the benchmark issue for the compute-bound model).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline

from tests.asyncdiff.dist_harness import Case, run_cases

FAMILIES = ["sd15", "sd21", "sdxl", "sdxl-inpaint", "sdxl-controlnet", "sd3", "sd-upscaler", "svd", "animatediff"]


def main(steps: int = 6, out: Path | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for family in FAMILIES:
            path = str(build_tiny_pipeline(family, Path(tmp) / family))
            cases.append((Case(family, "minimal", 2, 1, steps, steps), path))
            cases.append((Case(family, "minimal", 2, 1, 1, steps), path))
        results = run_cases(cases)
    rows = []
    print(
        f"{'family':<16}{'exact max|d|':>14}{'async max|d|':>14}{'async s':>9}{'bytes/step':>12}{'broadcast-all':>15}"
    )
    for family in FAMILIES:
        exact = results[f"{family}-minimal-n2s1w{steps}-steps{steps}"]
        asyn = results[f"{family}-minimal-n2s1w1-steps{steps}"]
        for r in exact + asyn:
            if r.error:
                print(r.error, file=sys.stderr)
                return 1
        stats = asyn[0].stats
        row = {
            "family": family,
            "exact_max_abs_diff": max(r.max_abs_diff for r in exact),
            "async_max_abs_diff_vs_sequential": asyn[0].max_abs_diff,
            "async_seconds": max(r.seconds for r in asyn),
            "planned_bytes_per_step": stats["planned_bytes_per_step_all_ranks"],
            "reference_bytes_per_step": stats["reference_bytes_per_step_all_ranks"],
            "param_bytes_local_rank0": stats["param_bytes_local"],
            "param_bytes_full": stats["param_bytes_full"],
        }
        rows.append(row)
        print(
            f"{family:<16}{row['exact_max_abs_diff']:>14.2e}{row['async_max_abs_diff_vs_sequential']:>14.4f}"
            f"{row['async_seconds']:>9.2f}{row['planned_bytes_per_step']:>12}{row['reference_bytes_per_step']:>15}"
        )
    out = out or Path(__file__).parent / "results" / "library_summary.json"
    out.write_text(json.dumps({"steps": steps, "ranks": 2, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
