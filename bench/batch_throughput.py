"""Batch throughput end to end through the operator: CR created -> Succeeded, replicas against AsyncDiff.

Why end to end: what a user of a batch job pays is the time from ``kubectl apply`` to the last output, including
the operator's reaction, pod and torch start-up, model loading and the result manifest. This starts the local
control plane (``asyncdiff_devcluster``) and the real operator process, and runs the same job (a compute-bound
SD 2.1-layout UNet, ``bench.models`` scale M, CPU, gloo, one thread per process) three ways:

- ``replicas 1 x modelN 1``: one plain pipeline on one core (the baseline);
- ``replicas 2 x modelN 1``: two data-parallel groups, one core each, each rendering its shards (target >= 1.8x);
- ``replicas 1 x modelN 2``: one AsyncDiff group of two ranks on the two cores (latency layout).

Start-up (CR created -> first output's render started) is reported as a share of each job; full mode (64
outputs, 12 steps, 192 px: about 3 minutes for the baseline on a quiet core) keeps it near 5% for the baseline
and near 10% for two groups (the issue asks for a job whose start-up is under 10%), which bounds the measured
ratio below the ideal 2x by about that much. Then the 2-replica
job runs again with a fault mid-run (one worker pod deleted once it has stored an output) and the result manifest
says what was rendered again: outputs stored before the fault whose render started after it (expected 0), and
outputs rendered after the fault in all. Pods are not pinned to cores (the control plane runs them as plain
processes), so the two groups share the machine with anything else on it: the load averages are recorded, and
so is the CPU the control plane and the operator used during each job (``overhead_cores``): with one group it runs
on the idle core, with two it is taken from the groups, which is most of the gap to the ideal 2x on two cores.
The operator runs with its defaults (reconcile interval 1 s); the bench polls the CR every 0.5 s.
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


_CEILING_PROBE = """
import sys, time, torch
from diffusers import UNet2DConditionModel
torch.set_num_threads(1)
unet = UNet2DConditionModel.from_pretrained(sys.argv[1], subfolder="unet").eval()
side, iters = int(sys.argv[2]) // 8, int(sys.argv[3])
x = torch.randn(2, unet.config.in_channels, side, side)
ctx = torch.randn(2, 77, unet.config.cross_attention_dim)
with torch.no_grad():
    unet(x, 10, encoder_hidden_states=ctx)
    time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # the pair starts timing together, after loading
    t0 = time.process_time(), time.perf_counter()
    for i in range(iters):
        unet(x, 10 + i, encoder_hidden_states=ctx)
    print(time.perf_counter() - t0[1], time.process_time() - t0[0])
"""


def hardware_ceiling(model: Path, size: int, iters: int = 48) -> dict[str, Any]:
    """What two processes on this machine's cores can give at most, without any operator: the same UNet forwards
    (batch 2, as with guidance) in one process alone, then in two processes at once. ``ceiling`` = 2 x alone /
    slowest of the pair: the throughput ratio a perfect replicas-2 layout would reach here. On 2 vCPUs that share
    a physical core's resources this is below 2x, and it bounds the operator's replicas ratio."""
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def timed(n: int) -> list[tuple[float, float]]:
        cmd = [sys.executable, "-c", _CEILING_PROBE, str(model), str(size), str(iters), str(time.time() + 30)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
        outs = [p.communicate(timeout=900)[0].split() for p in procs]
        return [(float(o[0]), float(o[1])) for o in outs]

    alone = timed(1)[0]
    pair = timed(2)
    slowest = max(w for w, _ in pair)
    return {
        "iters": iters,
        "alone_s": round(alone[0], 2),
        "pair_s": [round(w, 2) for w, _ in pair],
        "pair_cpu_s": [round(c, 2) for _, c in pair],
        "ceiling": round(2 * alone[0] / slowest, 3),
    }


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _parse_iso(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time (user + system) a process has used itself, or (``children``) that of its children it has waited
    for, with theirs (a pod's torchrun and worker processes, reaped by the kubelet), from /proc (0.0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def _run_job(
    custom: Any,
    core: Any,
    body: dict[str, Any],
    out: Path,
    timeout_s: float,
    fault: bool = False,
    overhead_pids: tuple[int, ...] = (),
) -> dict[str, Any]:
    name = body["metadata"]["name"]
    cpu0 = sum(_cpu_seconds(pid) for pid in overhead_pids)
    pods0 = _cpu_seconds(overhead_pids[0], children=True) if overhead_pids else 0.0
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
        time.sleep(0.5)
    t1 = time.time()
    overhead = sum(_cpu_seconds(pid) for pid in overhead_pids) - cpu0
    pods_cpu = (_cpu_seconds(overhead_pids[0], children=True) if overhead_pids else 0.0) - pods0
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
        # CPU the control plane (API server, Job controller, kubelet) and the operator used during the job: taken
        # from the workers' cores once both cores render (replicas 2), while a baseline leaves them a spare core
        "overhead_cpu_s": round(overhead, 2),
        "overhead_cores": round(overhead / (t1 - t0), 3),
        # CPU of the pods' processes (torchrun agents, workers with their upload threads), reaped by the kubelet
        # before the job's end: per output, and in cores over the job (above 1 for one group: it used the spare core)
        "pods_cpu_s": round(pods_cpu, 2),
        "pods_cpu_per_output_s": round(pods_cpu / max(1, len(records)), 3),
        "pods_cores": round(pods_cpu / (t1 - t0), 3),
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

    outputs, steps, size = (8, 8, 128) if quick else (64, 12, 192)
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
    result["hardware_ceiling"] = hardware_ceiling(model, size, 8 if quick else 48)
    log(f"  two processes at once vs one alone, no operator: {result['hardware_ceiling']['ceiling']:.2f}x")
    with tempfile.TemporaryDirectory(prefix="asyncdiff-bench-batch-") as tmp:
        state = Path(tmp)
        out = state / "out"
        out.mkdir()
        with _cluster(state) as (kubeconfig, cluster_proc):
            api_client = kconfig.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            ext = client.ApiextensionsV1Api(api_client)
            for doc in yaml.safe_load_all(CRD_FILE.read_text()):
                if doc:
                    ext.create_custom_resource_definition(doc)
            time.sleep(0.5)
            env = dict(os.environ, KUBECONFIG=kubeconfig)  # the operator's defaults (reconcile interval 1 s)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO / "operator"), str(REPO / "worker"), env.get("PYTHONPATH", "")]
            )
            op_log = (state / "operator.log").open("wb")
            operator = subprocess.Popen(
                [sys.executable, "-m", "asyncdiff_operator.main"], env=env, stdout=op_log, stderr=subprocess.STDOUT
            )
            custom = client.CustomObjectsApi(api_client)
            core = client.CoreV1Api(api_client)
            pids = (cluster_proc.pid, operator.pid)
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
                    row = _run_job(custom, core, body, out, timeout, overhead_pids=pids)
                    row.update(key=key, replicas=replicas, model_n=model_n)
                    result["rows"].append(row)
                    log(
                        f"  replicas {replicas} x modelN {model_n}: {row['wall_s']:.0f} s, "
                        f"{row['outputs_per_min']:.2f} outputs/min, start-up {row['startup_share']:.0%}, "
                        f"control plane + operator {row['overhead_cores']:.2f} cores, pods {row['pods_cores']:.2f} "
                        f"cores ({row['pods_cpu_per_output_s']:.2f} CPU s per output); load {row['load_after']}"
                    )
                body = _manifest(
                    "tp-r2n1-fault", model, out, replicas=2, model_n=1, outputs=outputs, steps=steps, size=size
                )
                fault_row = _run_job(custom, core, body, out, timeout, fault=True, overhead_pids=pids)
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
    result["r2n1_share_of_ceiling"] = round(result["speedup_r2n1_vs_r1n1"] / result["hardware_ceiling"]["ceiling"], 3)
    result["load_after"] = _load()
    log(
        f"  throughput vs replicas 1 x modelN 1: replicas 2 {result['speedup_r2n1_vs_r1n1']:.2f}x, "
        f"AsyncDiff modelN 2 {result['speedup_r1n2_vs_r1n1']:.2f}x"
    )
    return result


if __name__ == "__main__":  # the hardware ceiling alone: python -m bench.batch_throughput
    from bench.models import ensure_scale_pipeline

    print(json.dumps(hardware_ceiling(ensure_scale_pipeline("M"), 192), indent=1))
