"""Output fidelity of AsyncDiff on the trained digits model: PSNR/SSIM against the sequential output, and accuracy.

Why: asynchronous denoising is approximate; how far it drifts from the sequential pipeline (same seed, same noise)
is the quality side of the speed trade. The paper reports LPIPS/FID on SD; on 16x16 digits we report PSNR and SSIM
of every async configuration against the sequential output (64 samples, one batched call each) and the accuracy of
a digit classifier on both, for N in 2..4, S in 1..2, warm_up in {1, 3, 5} and time_shift off/on. Each
configuration runs the real library in a gloo group of N+S-1 ranks (several ranks per core for N+S-1 > 2: the
outputs do not depend on timing). One configuration with warm_up >= steps checks exactness (infinite PSNR).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.metrics import batch_fidelity, modelled_speedup
from bench.procs import Group

Config = tuple[int, int, int, bool]
"""(model_n, stride, warm_up, time_shift)."""


class FidelityRank:
    """One rank: builds a fresh pipeline per configuration (AsyncDiff wraps a pipeline once) and generates."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank = rank

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        from asyncdiff import AsyncDiff

        from bench.digits import build_pipeline, generate

        model_n, stride, warm_up, time_shift = payload["config"]
        pipe = build_pipeline()
        extra: dict[str, Any] = {"stride2_free_eps": "reuse"} if payload.get("reuse") else {}
        if payload.get("cfg"):
            extra["cfg_parallel"] = True
        ad = AsyncDiff(
            pipe, model_n=model_n, stride=stride, warm_up=warm_up, time_shift=time_shift, timeout_s=300, **extra
        )
        start = time.perf_counter()
        images = generate(pipe, payload["labels"], seed=payload["seed"], steps=payload["steps"])
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "images": images if self.rank == 0 else None,
            "plan": ad.plan.describe() if ad.plan else "",
        }


def reuse_supported() -> bool:
    """Whether this library version offers the reference's stride-2 behaviour (``stride2_free_eps='reuse'``)."""
    import inspect

    from asyncdiff import AsyncDiff

    return "stride2_free_eps" in inspect.signature(AsyncDiff.__init__).parameters


def reuse_configs(quick: bool) -> list[Config]:
    """Stride-2 configurations also run with the reference's eps reuse, to compare the two semantics."""
    return [(2, 2, 1, False)] if quick else [(2, 2, 1, False), (2, 2, 3, False), (3, 2, 1, False)]


def configs(quick: bool) -> list[Config]:
    if quick:
        return [(2, 1, 1, False), (2, 1, 3, True), (3, 1, 1, False), (2, 2, 1, False), (4, 1, 3, False)]
    return [(n, s, w, ts) for n in (2, 3, 4) for s in (1, 2) for w in (1, 3, 5) for ts in (False, True)]


def run(quick: bool, log: Any = print) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import torch

    from bench.digits import STEPS, build_pipeline, ensure_trained, generate, sample_labels, train_classifier

    torch.set_num_threads(1)
    meta = ensure_trained()
    samples = 16 if quick else 64
    steps = STEPS
    labels = sample_labels(samples)
    seed = 1234
    clf, held_out = train_classifier()
    start = time.perf_counter()
    reference = generate(build_pipeline(), labels, seed=seed, steps=steps)
    seq_seconds = time.perf_counter() - start

    def to01(x: np.ndarray) -> np.ndarray:  # metrics on the [0, 1] range
        return (x + 1) / 2

    seq_pred = clf.predict(reference.reshape(samples, -1))
    seq_acc = float(np.mean(seq_pred == np.array(labels)))
    log(f"fidelity: {samples} samples, {steps} DDIM steps; sequential {seq_seconds:.1f} s, accuracy {seq_acc:.3f}")
    todo = configs(quick)
    exact: Config = (2, 1, steps, False)
    by_world: dict[int, list[tuple[Config, bool]]] = {}
    reuse = reuse_configs(quick) if reuse_supported() else []
    for cfg, reused in [(exact, False), *((c, False) for c in todo), *((c, True) for c in reuse)]:
        by_world.setdefault(cfg[0] + cfg[1] - 1, []).append((cfg, reused))
    rows: list[dict[str, Any]] = []
    grids: dict[str, np.ndarray] = {"sequential": reference}
    for world, cfgs in sorted(by_world.items()):
        with Group(FidelityRank, world) as group:
            for cfg, reused in cfgs:
                payload = {"config": cfg, "labels": labels, "seed": seed, "steps": steps, "reuse": reused}
                out = group.call("run", payload)
                images = out[0]["images"]
                fid = batch_fidelity(to01(images), to01(reference))
                pred = clf.predict(images.reshape(samples, -1))
                model_n, stride, warm_up, time_shift = cfg
                row = {
                    "model_n": model_n,
                    "stride": stride,
                    "warm_up": warm_up,
                    "time_shift": time_shift,
                    "world": world,
                    "oversubscribed": world > 2,
                    **fid,
                    "accuracy": float(np.mean(pred == np.array(labels))),
                    "agreement_with_sequential": float(np.mean(pred == seq_pred)),
                    "modelled_speedup": modelled_speedup(steps, model_n, stride, warm_up),
                    "wall_s": max(r["seconds"] for r in out),
                    "exactness_check": cfg == exact,
                    "stride2_free_eps": "reuse" if reused else "own",
                }
                rows.append(row)
                if not reused and cfg in ((2, 1, 1, False), (4, 2, 1, False), (2, 2, 1, False), (4, 1, 1, False)):
                    grids[f"N{model_n} S{stride} W{warm_up}"] = images
                log(
                    f"  N{model_n} S{stride}{' (reuse)' if reused else ''} W{warm_up} ts={int(time_shift)}: "
                    f"PSNR {fid['psnr_db_mean']:.1f} dB, "
                    f"SSIM {fid['ssim_mean']:.3f}, acc {row['accuracy']:.3f} ({row['wall_s']:.1f} s)"
                )
    result = {
        "samples": samples,
        "steps": steps,
        "guidance_scale": 3.0,
        "seed": seed,
        "sequential_seconds": seq_seconds,
        "sequential_accuracy": seq_acc,
        "classifier_held_out_accuracy": held_out,
        "training": meta,
        "rows": rows,
    }
    return result, grids
