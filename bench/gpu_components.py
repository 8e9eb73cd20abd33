"""Per-component latency of real-size SD-architecture UNets on one GPU, projected to N-GPU AsyncDiff speedups.

Why: this project has no multi-GPU machine, and a lent GPU is one device for a few minutes, where AsyncDiff itself
cannot run (world size 1; NCCL refuses two ranks on one device). What one device *can* measure is the part that
decides the speedup: the fp16 latency of each component of the preset splits (the paper's Table 1 cuts) of real-size
SD 1.5 (512 px), SD 2.1 (768 px) and SDXL (1024 px) UNets with random weights, batch 2 (CFG). The communication
volume per step is exact and device-free: the library's own meta-device trace and routing (the same code AsyncDiff
runs) give the bytes each rank receives. Projection per async step: slowest component + the glue every rank repeats
(time/text embeddings: full forward minus the components) + the busiest rank's receive bytes over a link bandwidth
(measured device-to-device copy as the optimistic bound, and 25 GB/s as a PCIe-class conservative bound); a warm-up
step costs a full forward. ``--device cpu --traffic-only`` computes the traffic part anywhere (used on CPU here).

CFG parallelism (issue 11) doubles the devices: each of two stage groups runs one guidance half (batch 1), and the
halves of the prediction are exchanged once per step. Its rows (``cfg_parallel: true``) project, from the same
device, the 2- and 4-device alternatives side by side: CFG parallel alone (model_n 1, 2 devices: a batch-1 forward
plus half the prediction over the link) against AsyncDiff N2 (2 devices), and CFG parallel x AsyncDiff N2 (4 devices:
the N2 components timed at batch 1, plus its traffic at batch 1 and the prediction exchange) against AsyncDiff N4.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

MODELS: dict[str, dict[str, Any]] = {
    "sd15": {
        "latent": 64,
        "config": {
            "block_out_channels": (320, 640, 1280, 1280),
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "use_linear_projection": False,
        },
    },
    "sd21": {
        "latent": 96,
        "config": {
            "block_out_channels": (320, 640, 1280, 1280),
            "cross_attention_dim": 1024,
            "attention_head_dim": (5, 10, 20, 20),
            "use_linear_projection": True,
        },
    },
    "sdxl": {
        "latent": 128,
        "config": {
            "block_out_channels": (320, 640, 1280),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2, 10),
            "cross_attention_dim": 2048,
            "attention_head_dim": (5, 10, 20),
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
    },
}
CONSERVATIVE_BW = 25e9
STEPS, WARM_UP = 50, 1


def build_unet(name: str, device: str, dtype: torch.dtype) -> Any:
    from diffusers import UNet2DConditionModel

    cfg = {"sample_size": MODELS[name]["latent"], "in_channels": 4, "out_channels": 4, "layers_per_block": 2}
    cfg.update(MODELS[name]["config"])
    with torch.device(device):
        unet = UNet2DConditionModel(**cfg)
    return unet.to(dtype).eval()


def inputs(name: str, device: str, dtype: torch.dtype, batch: int = 2) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Denoiser inputs of one step: batch 2 is a whole CFG call, batch 1 one guidance half (CFG parallel)."""
    side = MODELS[name]["latent"]
    cross = MODELS[name]["config"]["cross_attention_dim"]
    kwargs: dict[str, Any] = {"encoder_hidden_states": torch.randn(batch, 77, cross, device=device, dtype=dtype)}
    if name == "sdxl":
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, 1280, device=device, dtype=dtype),
            "time_ids": torch.randn(batch, 6, device=device, dtype=dtype),
        }
    args = (torch.randn(batch, 4, side, side, device=device, dtype=dtype), torch.tensor(500, device=device))
    return args, kwargs


def traffic(unet: Any, components: list[list[str]], args: Any, kwargs: Any, world: int) -> dict[str, Any]:
    """Bytes per compute step under AsyncDiff's routing (from the library's own trace and route)."""
    from asyncdiff.plan import SplitPlan
    from asyncdiff.routing import build_route
    from asyncdiff.trace import active_tracer, trace_call

    paths = [p for comp in components for p in comp]
    for path in paths:
        module = unet.get_submodule(path)
        original = module.forward

        def forward(*a: Any, _p: str = path, _o: Any = original, **k: Any) -> Any:
            tracer = active_tracer()
            return tracer.unit_call(_p, _o, a, k) if tracer is not None else _o(*a, **k)

        module.forward = forward
    try:
        trace = trace_call(unet, type(unet).forward.__get__(unet), args, kwargs)
    finally:
        for path in paths:
            del unet.get_submodule(path).forward
    route = build_route(trace, SplitPlan([list(c) for c in components], "preset"), world)
    recv = [sum(m.nbytes for _, _, m in route.recvs_for(r)) for r in range(world)]
    return {
        "planned_bytes_per_step": route.planned_bytes_per_step(),
        "reference_bytes_per_step": route.reference_bytes_per_step(),
        "recv_bytes_per_rank": recv,
        "eps_bytes": route.eps_meta.nbytes,
    }


def time_components(unet: Any, comps_by_n: dict[int, list[list[str]]], args: Any, kwargs: Any, repeats: int) -> Any:
    """Median full-forward latency and per-path latency (CUDA events in forward hooks), in seconds."""
    paths = sorted({p for comps in comps_by_n.values() for c in comps for p in c})
    events: dict[str, list[tuple[Any, Any]]] = {p: [] for p in paths}
    handles = []
    for p in paths:
        m = unet.get_submodule(p)

        def pre(*_: Any, _p: str = p) -> None:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            events[_p].append((e, None))

        def post(*_: Any, _p: str = p) -> None:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            start, _ = events[_p][-1]
            events[_p][-1] = (start, e)

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    with torch.no_grad():
        for _ in range(3):
            unet(*args, **kwargs)
        torch.cuda.synchronize()
        for p in paths:
            events[p].clear()
        for _ in range(repeats):
            unet(*args, **kwargs)
        torch.cuda.synchronize()
        per_path = {p: statistics.median(s.elapsed_time(e) / 1e3 for s, e in events[p]) for p in paths}
        for h in handles:
            h.remove()
        full = []
        for _ in range(repeats):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            unet(*args, **kwargs)
            e.record()
            torch.cuda.synchronize()
            full.append(s.elapsed_time(e) / 1e3)
    return statistics.median(full), per_path


def d2d_bandwidth(nbytes: int = 256 << 20) -> float:
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 10 * nbytes / (time.perf_counter() - t0)


def project(full: float, comp_s: list[float], glue: float, recv_max: int, bw: float, stride: int) -> float:
    """Speedup over STEPS steps with WARM_UP exact steps; stride 2 finishes two steps per round."""
    step = max(comp_s) + glue + recv_max / bw
    rounds = (STEPS - WARM_UP) / stride
    return STEPS * full / (WARM_UP * full + rounds * step)


def project_cfg(full: float, step: float, warm_step: float) -> float:
    """Speedup over STEPS steps of a CFG-parallel configuration: WARM_UP steps at ``warm_step``, the rest at ``step``
    (both already include the prediction exchange), against a full batch-2 forward per step."""
    return STEPS * full / (WARM_UP * warm_step + (STEPS - WARM_UP) * step)


def cfg_rows(
    name: str,
    unet: Any,
    comps_n2: list[list[str]],
    device: str,
    dtype: torch.dtype,
    full: float | None,
    bw: float,
    repeats: int,
) -> list[dict[str, Any]]:
    """The CFG-parallel rows: plain CFG parallel (model_n 1, 2 devices) and CFG parallel x AsyncDiff N2 (4 devices),
    with traffic from the library's routing at batch 1 and, when timing, projections from batch-1 latencies."""
    a1, k1 = inputs(name, device, dtype, batch=1)
    tr = traffic(unet, comps_n2, a1, k1, 2)
    half_eps = tr["eps_bytes"]  # each rank sends its group's half and receives the other's, once per step
    plain: dict[str, Any] = {"model": name, "model_n": 1, "stride": 1, "devices": 2, "cfg_parallel": True}
    plain.update(planned_bytes_per_step=2 * half_eps, reference_bytes_per_step=2 * half_eps, eps_bytes=half_eps)
    plain["recv_bytes_per_rank"] = [half_eps, half_eps]
    hybrid: dict[str, Any] = {"model": name, "model_n": 2, "stride": 1, "devices": 4, "cfg_parallel": True}
    hybrid.update(
        planned_bytes_per_step=2 * tr["planned_bytes_per_step"] + 2 * half_eps,
        reference_bytes_per_step=2 * tr["reference_bytes_per_step"] + 2 * half_eps,
        recv_bytes_per_rank=tr["recv_bytes_per_rank"] * 2,
        eps_bytes=half_eps,
    )
    if full is not None:
        full1, per_path1 = time_components(unet, {2: comps_n2}, a1, k1, repeats)
        exchange = half_eps / bw
        plain.update(
            full_forward_s=full,
            half_forward_s=full1,
            projected_speedup=project_cfg(full, full1 + exchange, full1 + exchange),
        )
        plain["projected_speedup_conservative"] = project_cfg(
            full, full1 + half_eps / CONSERVATIVE_BW, full1 + half_eps / CONSERVATIVE_BW
        )
        comp_s = [sum(per_path1[p] for p in c) for c in comps_n2]
        glue = max(full1 - sum(comp_s), 0.0)
        recv_max = max(tr["recv_bytes_per_rank"])
        hybrid.update(full_forward_s=full, half_forward_s=full1, component_s=comp_s, glue_s=glue)
        for key, link in (("projected_speedup", bw), ("projected_speedup_conservative", CONSERVATIVE_BW)):
            step = max(comp_s) + glue + recv_max / link + half_eps / link
            hybrid[key] = project_cfg(full, step, full1 + half_eps / link)
    return [plain, hybrid]


def main(argv: list[str] | None = None) -> int:
    from asyncdiff.presets import preset_components

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--traffic-only", action="store_true", help="only the device-free traffic part")
    parser.add_argument("--models", default="sd15,sd21,sdxl")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu_components.json"))
    args = parser.parse_args(argv)
    timing = not args.traffic_only
    dtype = torch.float16  # fp16 as served on GPUs (the traffic part is shape-only, so also on the meta device)
    device = args.device if timing else "meta"
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if timing else "none (traffic only, meta device)",
        "dtype": str(dtype),
        "steps": STEPS,
        "warm_up": WARM_UP,
        "note": "AsyncDiff itself needs >= 2 ranks (one GPU each with NCCL); on one device only component latency "
        "and traffic are measured, and the N-GPU speedup is projected.",
        "rows": [],
    }
    bw = d2d_bandwidth() if timing else CONSERVATIVE_BW
    result["d2d_bandwidth_bytes_per_s"] = bw
    for name in args.models.split(","):
        t0 = time.perf_counter()
        unet = build_unet(name, device, dtype)
        a, k = inputs(name, device, dtype)
        comps_by_n = {}
        for n in (2, 3, 4):
            preset = preset_components(unet, n)
            if preset is not None:
                comps_by_n[n] = preset[1]
        full, per_path = (None, {}) if not timing else time_components(unet, comps_by_n, a, k, args.repeats)
        for n, comps in comps_by_n.items():
            for stride in (1, 2):
                world = n + stride - 1
                tr = traffic(unet, comps, a, k, world)
                row: dict[str, Any] = {"model": name, "model_n": n, "stride": stride, "devices": world, **tr}
                if timing:
                    assert full is not None
                    comp_s = [sum(per_path[p] for p in c) for c in comps]
                    glue = max(full - sum(comp_s), 0.0)
                    recv_max = max(tr["recv_bytes_per_rank"])
                    row.update(
                        full_forward_s=full,
                        component_s=comp_s,
                        glue_s=glue,
                        projected_speedup=project(full, comp_s, glue, recv_max, bw, stride),
                        projected_speedup_conservative=project(full, comp_s, glue, recv_max, CONSERVATIVE_BW, stride),
                    )
                result["rows"].append(row)
                print(json.dumps({k2: v for k2, v in row.items() if k2 != "recv_bytes_per_rank"}), flush=True)
        if 2 in comps_by_n:  # the 2- and 4-device CFG-parallel rows beside AsyncDiff N2 and N4
            for row in cfg_rows(name, unet, comps_by_n[2], device, dtype, full, bw, args.repeats):
                result["rows"].append(row)
                print(json.dumps({k2: v for k2, v in row.items() if k2 != "recv_bytes_per_rank"}), flush=True)
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
        del unet
        if timing:
            torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
