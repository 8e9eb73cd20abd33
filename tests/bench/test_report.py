"""The summary and plots render from benchmark JSON (synthetic here), and the time breakdown adds up.

Why: the report runs last in a 20-minute benchmark; a formatting error there must not be found only then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.report import breakdown_rows, render


def _rank(rank: int) -> dict[str, Any]:
    return {
        "rank": rank,
        "seconds": 10.0,
        "rss": 300 << 20,
        "peak_rss": 320 << 20,
        "wait_s": {"recv": 0.1},
        "bytes_sent_generation": 40 << 20,
        "steps": 20,
        "planned_bytes_per_step_all_ranks": 2 << 20,
        "reference_bytes_per_step_all_ranks": 9 << 20,
        "param_bytes_local": 60 << 20,
        "param_bytes_full": 120 << 20,
        "plan": {"components": [["conv_in"], ["conv_out"]]},
    }


def _steps(async_step: float) -> dict[str, float]:
    return {
        "seq_first_step_s": 0.8,
        "seq_steady_step_s": 0.8,
        "async_first_step_s": 0.82,
        "async_steady_step_s": async_step,
        "steady_efficiency": 0.8 / (2 * async_step),
    }


def _variant(label: str, speedup: float) -> dict[str, Any]:
    return {
        "label": label,
        "median_async_s": 19.0 / speedup,
        "median_speedup_vs_1thread": speedup,
        "median_speedup_vs_2threads": 13.0 * speedup / 19.0,
        "steps": _steps(0.41),
    }


def speed() -> dict[str, Any]:
    prof = {
        "seconds": 10.0,
        "denoiser_s": 9.0,
        "own_component": 0,
        "compute_s": 8.0,
        "stand_in_s": 0.01,
        "wait_s": {"recv": 0.2, "broadcast": 0.3, "send": 0.0},
        "bytes_sent": 40 << 20,
    }
    return {
        "mode": "quick",
        "scale": "M",
        "steps": 20,
        "repetitions": 2,
        "pinned_cores": [[0], [1]],
        "n2s1_measured_split": {**_variant("measured split", 1.88), "components": [["conv_in"], ["conv_out"]]},
        "n2s1_unpinned": _variant("not pinned", 1.84),
        "n2s1": {
            "label": "N=2 S=1 W=1, 2 ranks on 2 cores (honest)",
            "median_seq_1thread_s": 19.0,
            "median_seq_2threads_s": 13.0,
            "median_async_s": 10.0,
            "median_speedup_vs_1thread": 1.9,
            "median_speedup_vs_2threads": 1.3,
            "speedup_vs_1thread": [1.9, 1.9],
            "steps": _steps(0.405),
            "profile": [prof, {**prof, "own_component": 1}],
            "sequential_profile": {"seconds": 19.0, "denoiser_s": 18.0, "component_s": [8.5, 9.0]},
            "bandwidth": {"bytes_per_s": 2e9},
            "ranks": [_rank(0), _rank(1)],
            "sequential_rss": {"rss": 500 << 20, "peak_rss": 520 << 20},
        },
        "oversubscribed": [
            {
                "label": "N=3 S=1 W=1, 3 ranks on 2 cores (oversubscribed)",
                "model_n": 3,
                "stride": 1,
                "world": 3,
                "steps": 10,
                "async_s": 12.0,
                "seq_1thread_s": 19.0,
                "speedup_vs_1thread": 1.58,
                "ranks": [_rank(r) for r in range(3)],
            }
        ],
    }


def fidelity() -> dict[str, Any]:
    row = {
        "model_n": 2,
        "stride": 1,
        "warm_up": 1,
        "time_shift": False,
        "world": 2,
        "oversubscribed": False,
        "psnr_db_mean": 27.0,
        "psnr_db_batch": 26.0,
        "psnr_identical_images": 0,
        "ssim_mean": 0.9,
        "ssim_min": 0.8,
        "accuracy": 0.9,
        "agreement_with_sequential": 0.95,
        "modelled_speedup": 1.9,
        "wall_s": 3.0,
        "exactness_check": False,
    }
    exact = {**row, "warm_up": 20, "psnr_db_mean": "inf", "exactness_check": True}  # as run_all writes it
    return {
        "samples": 16,
        "steps": 20,
        "guidance_scale": 3.0,
        "seed": 1,
        "sequential_seconds": 5.0,
        "sequential_accuracy": 0.9,
        "classifier_held_out_accuracy": 0.95,
        "training": {"params": 983713, "steps": 1500, "seconds": 500},
        "rows": [exact, row],
    }


def test_breakdown_adds_up_to_the_generation() -> None:
    rows = breakdown_rows(speed())
    assert rows[0][0] == "sequential"
    for _, parts in rows[1:]:
        assert sum(parts.values()) == pytest.approx(10.0)
        assert all(v >= 0 for v in parts.values())


def test_render_writes_summary_and_plots(tmp_path: Path) -> None:
    (tmp_path / "speed.json").write_text(json.dumps(speed()))
    (tmp_path / "fidelity.json").write_text(json.dumps(fidelity()))
    (tmp_path / "run_all.json").write_text(json.dumps({"mode": "quick", "seconds": {"speed": 1.0}}))
    grids = {"sequential": np.zeros((4, 16, 16)), "N2 S1 W1": np.ones((4, 16, 16))}
    summary = render(tmp_path, grids).read_text()
    assert "1.90x" in summary and "**met** with the default (preset) split" in summary
    assert "pinned to its own core ([[0], [1]])" in summary
    assert "| N=2 S=1, preset split, pinned | 0.820 | 0.405 | 0.400 | 98.8% |" in summary
    assert "not pinned | 10.33 | 1.84x" in summary
    assert "inf (exact)" in summary
    assert "oversubscribed" in summary
    assert "Operator scale: no results yet" in summary
    assert "**Not run**" in summary  # no GPU results
    for png in ("speed.png", "time_breakdown.png", "fidelity_tradeoff.png", "samples.png"):
        assert (tmp_path / png).stat().st_size > 1000


@pytest.mark.parametrize(
    ("preset", "measured", "verdict"),
    [
        (1.86, 1.80, "**met** with the default (preset) split"),
        (1.84, 1.86, "**met only with the measured split**, not with the default preset split"),
        (1.84, 1.83, "**not met**"),
    ],
)
def test_speed_target_verdict_names_the_split_that_met_it(
    tmp_path: Path, preset: float, measured: float, verdict: str
) -> None:
    data = speed()
    data["n2s1"]["median_speedup_vs_1thread"] = preset
    data["n2s1_measured_split"]["median_speedup_vs_1thread"] = measured
    (tmp_path / "speed.json").write_text(json.dumps(data))
    (tmp_path / "run_all.json").write_text(json.dumps({"mode": "quick", "seconds": {"speed": 1.0}}))
    summary = render(tmp_path, {}).read_text()
    assert f"(limit 2.0x): {verdict}." in summary


def cfg_parallel() -> dict[str, Any]:
    def row(label: str, world: int, psnr: float | str) -> dict[str, Any]:
        return {
            "label": label,
            "world": world,
            "psnr_db_mean": psnr,
            "ssim_mean": 0.9,
            "max_abs_diff_vs_sequential": 0.1,
        }

    return {
        "speed": {
            "scale": "L",
            "size": 256,
            "steps": 50,
            "repetitions": 3,
            "pinned_cores": [[0], [1]],
            "median_seq_1thread_s": 40.0,
            "target": 1.9,
            "cfg_parallel_n1": {
                "label": "CFG parallel, model_n 1, 2 ranks on 2 cores",
                "median_s": 20.6,
                "median_speedup_vs_1thread": 1.94,
                "max_abs_diff_vs_sequential": 3e-7,
            },
            "asyncdiff_n2": {
                "label": "AsyncDiff N=2 S=1 W=1 (preset split), 2 ranks on 2 cores",
                "median_s": 21.5,
                "median_speedup_vs_1thread": 1.86,
                "max_abs_diff_vs_sequential": 0.2,
            },
        },
        "fidelity": {
            "samples": 64,
            "steps": 20,
            "rows": [
                row("CFG parallel x AsyncDiff N2 (4 ranks)", 4, 26.8),
                row("AsyncDiff N4 (4 ranks)", 4, 23.0),
                row("CFG parallel x AsyncDiff N2, W >= steps (exactness)", 4, "inf"),
            ],
            "cfg_x_n2_vs_n2_max_abs_diff": 2e-7,
            "cfg_x_n2_closer_than_n4": True,
        },
    }


def test_render_shows_the_cfg_parallel_rows(tmp_path: Path) -> None:
    (tmp_path / "cfg_parallel.json").write_text(json.dumps(cfg_parallel()))
    (tmp_path / "run_all.json").write_text(json.dumps({"mode": "full", "seconds": {"cfg": 1.0}}))
    summary = render(tmp_path, {}).read_text()
    assert "| CFG parallel, model_n 1, 2 ranks on 2 cores | 20.60 | **1.94x** | 3.0e-07 |" in summary
    assert "| AsyncDiff N=2 S=1 W=1 (preset split), 2 ranks on 2 cores | 21.50 | 1.86x | 0.200 |" in summary
    assert "(limit 2.0x, exact output): **met**." in summary
    assert "| AsyncDiff N4 (4 ranks) | 4 | 23.0 | 0.9000 |" in summary
    assert "N2 is closer to the sequential output than AsyncDiff N4" in summary
    assert "inf (exact)" in summary
