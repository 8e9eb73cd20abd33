"""Batch throughput end to end through the operator: CR created -> Succeeded, replicas against AsyncDiff.

Why end to end: what a user of a batch job pays is the time from ``kubectl apply`` to the last output, including
the operator's reaction, pod and torch start-up, model loading and the result manifest. This starts the local
control plane (``asyncdiff_devcluster``) and the real operator process, and runs the same job (a compute-bound
SD 2.1-layout UNet, ``bench.models`` scale M, CPU, gloo, one thread per process) three ways:

- ``replicas 1 x modelN 1``: one plain pipeline on one core (the baseline);
- ``replicas 2 x modelN 1``: two data-parallel groups, one core each, each rendering its shards (target >= 1.8x);
- ``replicas 1 x modelN 2``: one AsyncDiff group of two ranks on the two cores (latency layout).

Start-up (CR created -> first output's render started) is reported as a share of each job; full mode (24
outputs, 12 steps, 192 px: about 3 minutes for the baseline on a quiet core) keeps it near 10% for the baseline
and under 20% for two groups, which bounds the measured ratio below the ideal 2x by that much. Then the 2-replica
job runs again with a fault mid-run (one worker pod deleted once it has stored an output) and the result manifest
says what was rendered again: outputs stored before the fault whose render started after it (expected 0), and
outputs rendered after the fault in all. Pods are not pinned to cores (the control plane runs them as plain
processes), so the two groups share the machine with anything else on it: the load averages are recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.operator_scale import CRD_FILE, GROUP, NAMESPACE, PLURAL, REPO, VERSION, _cluster, _tail

LAYOUTS = (("r1n1", 1, 1), ("r2n1", 2, 1), ("r1n2", 1, 2))


def _manifest(
    name: str, model: Path, out: Path, *, replicas: int, model_n: int, outputs: int, steps: int, size: int
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AsyncDiffJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"family": "sd21", "source": str(model), "dtype": "float32"},
            "parallelism": {"modelN": model_n, "stride": 1, "warmUp": 1, "replicas": replicas},
            "generation": {
                "prompts": [f"a photograph of an astronaut riding horse number {i}" for i in range(outputs)],
                "steps": steps,
                "height": size,
                "width": size,
            },
            "output": {"uri": out.as_uri()},
            "runPolicy": {"backoffLimit": 3, "gpusPerNode": 0},
        },
    }


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _parse_iso(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _run_job(
    custom: Any, core: Any, body: dict[str, Any], out: Path, timeout_s: float, fault: bool = False
) -> dict[str, Any]:
    name = body["metadata"]["name"]
    t0 = time.time()
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
    fault_info: dict[str, Any] = {}
    outputs_dir = out / name / "outputs"
    while True:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name).get("status") or {}
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            break
        if fault and not fault_info:
            done = (
                sorted(p.name for p in outputs_dir.glob("*") if not p.name.startswith("."))
                if outputs_dir.is_dir()
                else []
            )
            pods = [
                p
                for p in core.list_namespaced_pod(NAMESPACE, label_selector=f"asyncdiff.io/job={name}").items
                if p.status.phase == "Running"
            ]
            if done and pods:
                victim = pods[0].metadata.name
                fault_info = {
                    "deleted_pod": victim,
                    "stored_before": [int(n.split("-", 1)[0]) for n in done],
                    "at": time.time(),
                }
                core.delete_namespaced_pod(victim, NAMESPACE)
        if time.time() - t0 > timeout_s:
            raise RuntimeError(f"{name} not finished after {timeout_s:.0f} s: {json.dumps(status)[:1500]}")
        time.sleep(0.25)
    t1 = time.time()
    if phase != "Succeeded":
        raise RuntimeError(f"{name} {phase}: {json.dumps(status.get('lastFailure'))}")
    manifest = json.loads((out / name / "manifest.json").read_text())
    records = manifest["outputs"]
    first = min(_parse_iso(r["renderedAt"]) for r in records if r.get("renderedAt"))
    row: dict[str, Any] = {
        "name": name,
        "outputs": len(records),
        "wall_s": round(t1 - t0, 2),
        "outputs_per_min": round(len(records) * 60.0 / (t1 - t0), 3),
        "startup_s": round(first - t0, 2),
        "startup_share": round((first - t0) / (t1 - t0), 3),
        "layout": status.get("layout"),
        "load_after": _load(),
    }
    if fault_info:
        before = set(fault_info["stored_before"])
        by_index = {r["index"]: r for r in records}
        row["fault"] = {
            "deleted_pod": fault_info["deleted_pod"],
            "at_s": round(fault_info["at"] - t0, 2),
            "stored_before_fault": len(before),
            "stored_before_and_rendered_again": sum(
                1 for i in before if _parse_iso(by_index[i]["renderedAt"]) > fault_info["at"]
            ),
            "rendered_by_other_pods_after_fault": sum(
                1 for r in records if _parse_iso(r["renderedAt"]) > fault_info["at"]
            ),
            "failed_pods_counted": status.get("failedPods", 0),
        }
    return row


def run(quick: bool, log: Any = print) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes import config as kconfig

    from bench.models import ensure_scale_pipeline

    outputs, steps, size = (8, 8, 128) if quick else (24, 12, 192)
    model = ensure_scale_pipeline("M")
    result: dict[str, Any] = {
        "model": "SD 2.1-layout UNet, scale M (bench.models), random weights, float32, CPU, gloo",
        "outputs": outputs,
        "steps": steps,
        "size": size,
        "threads_per_process": 1,
        "pinned": False,
        "load_before": _load(),
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="asyncdiff-bench-batch-") as tmp:
        state = Path(tmp)
        out = state / "out"
        out.mkdir()
        with _cluster(state) as (kubeconfig, _proc):
            api_client = kconfig.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            ext = client.ApiextensionsV1Api(api_client)
            for doc in yaml.safe_load_all(CRD_FILE.read_text()):
                if doc:
                    ext.create_custom_resource_definition(doc)
            time.sleep(0.5)
            env = dict(os.environ, KUBECONFIG=kubeconfig, ASYNCDIFF_RECONCILE_INTERVAL="0.5")
            env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO / "operator"), str(REPO / "worker"), env.get("PYTHONPATH", "")]
            )
            op_log = (state / "operator.log").open("wb")
            operator = subprocess.Popen(
                [sys.executable, "-m", "asyncdiff_operator.main"], env=env, stdout=op_log, stderr=subprocess.STDOUT
            )
            custom = client.CustomObjectsApi(api_client)
            core = client.CoreV1Api(api_client)
            try:
                timeout = 1800.0
                for key, replicas, model_n in LAYOUTS:
                    body = _manifest(
                        f"tp-{key}",
                        model,
                        out,
                        replicas=replicas,
                        model_n=model_n,
                        outputs=outputs,
                        steps=steps,
                        size=size,
                    )
                    row = _run_job(custom, core, body, out, timeout)
                    row.update(key=key, replicas=replicas, model_n=model_n)
                    result["rows"].append(row)
                    log(
                        f"  replicas {replicas} x modelN {model_n}: {row['wall_s']:.0f} s, "
                        f"{row['outputs_per_min']:.2f} outputs/min, start-up {row['startup_share']:.0%}; "
                        f"load {row['load_after']}"
                    )
                body = _manifest(
                    "tp-r2n1-fault", model, out, replicas=2, model_n=1, outputs=outputs, steps=steps, size=size
                )
                fault_row = _run_job(custom, core, body, out, timeout, fault=True)
                fault_row.update(key="r2n1-fault", replicas=2, model_n=1)
                result["rows"].append(fault_row)
                log(f"  fault run: {json.dumps(fault_row.get('fault'))}")
            finally:
                operator.terminate()
                try:
                    operator.wait(20)
                except subprocess.TimeoutExpired:
                    operator.kill()
                op_log.close()
                result["operator_log_tail"] = _tail(state / "operator.log", 1500)
            shutil.rmtree(out, ignore_errors=True)
    by = {r["key"]: r for r in result["rows"]}
    base = by["r1n1"]["outputs_per_min"]
    result["speedup_r2n1_vs_r1n1"] = round(by["r2n1"]["outputs_per_min"] / base, 3)
    result["speedup_r1n2_vs_r1n1"] = round(by["r1n2"]["outputs_per_min"] / base, 3)
    result["target_r2n1"] = 1.8
    result["load_after"] = _load()
    log(
        f"  throughput vs replicas 1 x modelN 1: replicas 2 {result['speedup_r2n1_vs_r1n1']:.2f}x, "
        f"AsyncDiff modelN 2 {result['speedup_r1n2_vs_r1n1']:.2f}x"
    )
    return result
