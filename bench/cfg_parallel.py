"""CFG parallelism against AsyncDiff for the second (and fourth) device: speed on 2 cores, fidelity on 4 ranks.

Why this part (issue 11): a guided pipeline's two halves never interact before the guidance step, so running them on
two devices is exact and nearly 2x, while AsyncDiff N2 on the same two devices is approximate and ~1.85x here. This
part measures both side by side in one run, like ``speed``:

- **Speed** (L SD 2.1-layout UNet, 256x256, 50 DDIM steps, 1 thread per rank, each rank pinned to its own core, the
  1-thread sequential baseline pinned too): CFG parallel with model_n 1 on 2 ranks and AsyncDiff N2 S1 W1 on 2 ranks,
  alternating with the sequential run; median ratios within repetitions. CFG parallel's output is compared with the
  sequential one (it must be exact up to float reordering).
- **Fidelity** (the trained digits model, 64 samples, one batched call each): CFG parallel x AsyncDiff N2 (4 ranks)
  against AsyncDiff N4 (4 ranks), both W=1, PSNR/SSIM against the sequential output; AsyncDiff N2 alone (2 ranks)
  beside them (CFG x N2 must match it up to float reordering). 4 ranks on 2 cores are oversubscribed: these rows
  say nothing about speed, and outputs do not depend on timing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.metrics import batch_fidelity, median_ratio
from bench.procs import Group, pinned_cores
from bench.speed import Async, Sequential, _median, _slowest


def run_speed(quick: bool, log: Any = print) -> dict[str, Any]:
    from bench.models import ensure_scale_pipeline

    scale = "M" if quick else "L"
    steps = 10 if quick else 50
    reps = 2 if quick else 3
    path = str(ensure_scale_pipeline(scale))
    pinned = pinned_cores(2)
    log(f"cfg speed: scale {scale}, {steps} steps, {reps} alternating repetitions, ranks pinned to cores: {pinned}")
    seq = Group(Sequential, 1, (path,), cpus=pinned[:1] if pinned else None)
    try:
        with (
            Group(Async, 2, (path, 1, 1, 1, None, True), cpus=pinned) as cfg,
            Group(Async, 2, (path, 2, 1, 1, None), cpus=pinned) as n2,
        ):
            seq.call("generate", {"steps": 2, "threads": 1})
            for g in (cfg, n2):
                g.call("generate", {"steps": 2})
            seq_s: list[float] = []
            cfg_s: list[float] = []
            n2_s: list[float] = []
            diffs: list[float] = []
            n2_diffs: list[float] = []
            for rep in range(reps):
                s = seq.call("generate", {"steps": steps, "threads": 1, "image": True})[0]
                c = cfg.call("generate", {"steps": steps, "image": True})
                a = n2.call("generate", {"steps": steps, "image": True})
                seq_s.append(float(s["seconds"]))
                cfg_s.append(_slowest(c))
                n2_s.append(_slowest(a))
                diffs.append(float(np.abs(np.asarray(c[0]["image"]) - np.asarray(s["image"])).max()))
                n2_diffs.append(float(np.abs(np.asarray(a[0]["image"]) - np.asarray(s["image"])).max()))
                log(
                    f"  rep {rep}: seq 1 thr {seq_s[-1]:.2f} s, CFG parallel N1 {cfg_s[-1]:.2f} s "
                    f"(max |diff| {diffs[-1]:.1e}), AsyncDiff N2 {n2_s[-1]:.2f} s (max |diff| {n2_diffs[-1]:.2f})"
                )
            stats = c[0]["stats"]
    finally:
        seq.close()
    result = {
        "scale": scale,
        "steps": steps,
        "repetitions": reps,
        "size": 256,
        "pinned_cores": [sorted(x) for x in pinned] if pinned else None,
        "seq_1thread_s": seq_s,
        "median_seq_1thread_s": _median(seq_s),
        "cfg_parallel_n1": {
            "label": "CFG parallel, model_n 1, 2 ranks on 2 cores",
            "seconds": cfg_s,
            "median_s": _median(cfg_s),
            "median_speedup_vs_1thread": median_ratio(seq_s, cfg_s),
            "max_abs_diff_vs_sequential": max(diffs),
            "bytes_sent_rank0_generation": stats["bytes_sent_last_generation"],
        },
        "asyncdiff_n2": {
            "label": "AsyncDiff N=2 S=1 W=1 (preset split), 2 ranks on 2 cores",
            "seconds": n2_s,
            "median_s": _median(n2_s),
            "median_speedup_vs_1thread": median_ratio(seq_s, n2_s),
            "max_abs_diff_vs_sequential": max(n2_diffs),
        },
        "target": 1.9,
    }
    log(
        f"  CFG parallel {result['cfg_parallel_n1']['median_speedup_vs_1thread']:.2f}x (exact to "
        f"{max(diffs):.1e}), AsyncDiff N2 {result['asyncdiff_n2']['median_speedup_vs_1thread']:.2f}x"
    )
    return result


def run_fidelity(quick: bool, log: Any = print) -> dict[str, Any]:
    import torch

    from bench.digits import STEPS, build_pipeline, ensure_trained, generate, sample_labels
    from bench.fidelity import FidelityRank

    torch.set_num_threads(1)
    ensure_trained()
    samples = 16 if quick else 64
    labels = sample_labels(samples)
    seed = 1234
    reference = generate(build_pipeline(), labels, seed=seed, steps=STEPS)

    def to01(x: np.ndarray) -> np.ndarray:
        return (x + 1) / 2

    configs = [  # (label, world, (model_n, stride, warm_up, time_shift), cfg)
        ("AsyncDiff N2 (2 ranks)", 2, (2, 1, 1, False), False),
        ("CFG parallel x AsyncDiff N2 (4 ranks)", 4, (2, 1, 1, False), True),
        ("AsyncDiff N4 (4 ranks)", 4, (4, 1, 1, False), False),
        ("CFG parallel x AsyncDiff N2, W >= steps (exactness)", 4, (2, 1, STEPS, False), True),
    ]
    rows: list[dict[str, Any]] = []
    images_of: dict[str, np.ndarray] = {}
    for world in (2, 4):
        with Group(FidelityRank, world) as group:
            for label, w, config, cfg in configs:
                if w != world:
                    continue
                payload = {"config": config, "labels": labels, "seed": seed, "steps": STEPS, "cfg": cfg}
                images = group.call("run", payload)[0]["images"]
                images_of[label] = images
                fid = batch_fidelity(to01(images), to01(reference))
                rows.append(
                    {
                        "label": label,
                        "world": world,
                        "model_n": config[0],
                        "warm_up": config[2],
                        "cfg_parallel": cfg,
                        **fid,
                        "max_abs_diff_vs_sequential": float(np.abs(images - reference).max()),
                    }
                )
                log(f"  {label}: PSNR {fid['psnr_db_mean']:.2f} dB, SSIM {fid['ssim_mean']:.4f}")
    n2 = images_of["AsyncDiff N2 (2 ranks)"]
    hybrid = images_of["CFG parallel x AsyncDiff N2 (4 ranks)"]
    psnr = {r["label"]: r["psnr_db_mean"] for r in rows}
    return {
        "samples": samples,
        "steps": STEPS,
        "seed": seed,
        "rows": rows,
        "cfg_x_n2_vs_n2_max_abs_diff": float(np.abs(hybrid - n2).max()),
        "cfg_x_n2_closer_than_n4": psnr["CFG parallel x AsyncDiff N2 (4 ranks)"] > psnr["AsyncDiff N4 (4 ranks)"],
    }


def run(quick: bool, log: Any = print, only: str | None = None) -> dict[str, Any]:
    """Both pieces (``only``: "speed" or "fidelity" for one of them)."""
    out: dict[str, Any] = {}
    if only in (None, "speed"):
        out["speed"] = run_speed(quick, log)
    if only in (None, "fidelity"):
        out["fidelity"] = run_fidelity(quick, log)
    return out


if __name__ == "__main__":
    import json
    import sys

    piece = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--piece=")), None)
    print(json.dumps(run("--quick" in sys.argv, only=piece), indent=2, default=str))
