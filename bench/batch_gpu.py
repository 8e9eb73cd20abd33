"""The batch throughput table on GPUs: replicas 2 x modelN 1 against 1 x 1, and 1 x modelN 2, through the worker.

Why the worker's local runner and not the operator: a lent GPU machine is bare (no Kubernetes client, no kopf) and
its time is short; ``asyncdiff_worker.local_run`` runs the same shards, the same replicas (each group its own
torchrun and its own slice of ``CUDA_VISIBLE_DEVICES``) and writes the same manifest as the pods do. The operator's
own cost is measured on CPU (``bench.batch_throughput``, ``bench.operator_scale``).

Rows that need more GPUs than the machine has are skipped with the reason (on one GPU: modelN 2 needs two ranks
on two devices, NCCL refuses two ranks on one; two replicas then share the one GPU, which the row says).
``python -m bench.batch_gpu --out FILE [--quick]``; ``bench/gpu.sh`` runs it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = (("r1n1", 1, 1), ("r2n1", 2, 1), ("r1n2", 1, 2))


def job(
    model: Path, out: Path, name: str, *, replicas: int, model_n: int, outputs: int, steps: int, size: int, dtype: str
) -> dict[str, Any]:
    return {
        "apiVersion": "asyncdiff.io/v1alpha1",
        "kind": "AsyncDiffJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"family": "sd21", "source": str(model), "dtype": dtype},
            "parallelism": {"modelN": model_n, "stride": 1, "warmUp": 1, "replicas": replicas},
            "generation": {
                "prompts": [f"a photograph of an astronaut riding horse number {i}" for i in range(outputs)],
                "steps": steps,
                "height": size,
                "width": size,
            },
            "output": {"uri": out.as_uri()},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="few small outputs (a smoke run, also on CPU)")
    args = parser.parse_args(argv)
    import torch

    from bench.models import ensure_scale_pipeline

    gpus = torch.cuda.device_count()
    outputs, steps, size = (4, 4, 128) if args.quick else (64, 50, 512)
    dtype = "float16" if gpus else "float32"
    model = ensure_scale_pipeline("L")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if gpus else "cpu",
        "gpus": gpus,
        "model": "SD 2.1-layout UNet, scale L (bench.models), random weights",
        "dtype": dtype,
        "outputs": outputs,
        "steps": steps,
        "size": size,
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="asyncdiff-batch-gpu-") as tmp:
        for key, replicas, model_n in LAYOUTS:
            need = replicas * model_n
            row: dict[str, Any] = {"key": key, "replicas": replicas, "model_n": model_n, "devices": need}
            if gpus and model_n > gpus:
                row["skipped"] = f"modelN {model_n} needs {model_n} GPUs (NCCL refuses two ranks on one device)"
                result["rows"].append(row)
                continue
            if gpus and need > gpus:
                row["note"] = f"{replicas} groups share {gpus} GPU(s)"
            out = Path(tmp) / key
            spec_file = Path(tmp) / f"{key}.yaml"
            body = job(
                model,
                out,
                key,
                replicas=replicas,
                model_n=model_n,
                outputs=outputs,
                steps=steps,
                size=size,
                dtype=dtype,
            )
            spec_file.write_text(yaml.safe_dump(body))
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "asyncdiff_worker.local_run", str(spec_file), "--quiet"],
                capture_output=True,
                text=True,
                cwd=str(REPO),
            )
            row["wall_s"] = round(time.perf_counter() - t0, 2)
            if proc.returncode != 0:
                row["error"] = (proc.stdout + proc.stderr)[-2000:]
            else:
                manifest = json.loads((out / key / "manifest.json").read_text())
                row["outputs"] = len(manifest["outputs"])
                row["outputs_per_min"] = round(row["outputs"] * 60.0 / row["wall_s"], 3)
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    base = next((r.get("outputs_per_min") for r in result["rows"] if r["key"] == "r1n1"), None)
    for r in result["rows"]:
        if base and r.get("outputs_per_min"):
            r["vs_r1n1"] = round(r["outputs_per_min"] / base, 3)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all("error" not in r for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
