"""Operator scale on the local control plane: CR-create to child-Job latency, operator memory and throughput.

Why: the operator's job is to turn an ``AsyncDiffJob`` into a child Job quickly and to keep reconciling every live
CR on a timer; both degrade with the number of live CRs. This starts the emulated control plane
(``asyncdiff_devcluster``) and the real operator process (``python -m asyncdiff_operator.main``, its entry point
with no extra flags, so the benchmark keeps working while the operator grows), then raises the number of live CRs
to each level (1, 100, 1000; quick: 1, 20, 100) in a burst and measures, per level:

- burst latency: client-side create call start -> the child Job's ADDED event on a watch, p50/p99, and the
  burst's throughput (CRs turned into Jobs per second);
- probe latency: a few single CRs created one at a time once the level has settled (steady-state responsiveness
  while the operator's timers reconcile every live CR);
- the operator's RSS and CPU use (from /proc) with that many live CRs. Each live CR is reconciled by a kopf timer
  every ``ASYNCDIFF_RECONCILE_INTERVAL`` seconds (kopf does not log timer runs), so while the CPU share stays below
  one core the steady-state reconcile rate is live CRs / interval, and CPU / rate estimates the cost of one
  reconcile and the rate one core could sustain (a derived figure, labelled so).

**Workers are not run** (labelled in the results): the node advertises 0 GPUs, so every worker Pod stays Pending
(Unschedulable) and only the control path is measured. Child Jobs are matched to their CR by owner reference uid,
not by name.

A second measurement (``api_calls``) counts the operator's API requests per running job per minute: that many
CPU-only jobs (100; quick: 20) whose worker pods *run* (a ``sitecustomize`` prints a worker progress line every
second and never exits, so no torch starts), counted by the local control plane itself (``apiserver_request_total``
at ``/metrics``, by client, verb and resource) over a fixed window once every job runs. The progress channel must
cost O(1) calls per job per interval, independent of log volume and the number of pods (``shard_kube.py``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from asyncdiff_worker.launch import free_port

from bench.metrics import percentile

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crds" / "asyncdiff.io_asyncdiffjobs.yaml"
NAMESPACE = "default"
GROUP, VERSION, PLURAL = "asyncdiff.io", "v1alpha1", "asyncdiffjobs"


def manifest(name: str) -> dict[str, Any]:
    """A valid AsyncDiffJob whose worker never starts (its Pod asks for GPUs the node does not have)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AsyncDiffJob",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench.asyncdiff.io/scale": "1"}},
        "spec": {
            "model": {"family": "sd15", "source": "file:///nonexistent/bench-model", "dtype": "float32"},
            "parallelism": {"modelN": 2, "stride": 1, "warmUp": 1},
            "generation": {"prompts": ["a red cube"], "steps": 3, "height": 32, "width": 32},
            "output": {"uri": "file:///tmp/asyncdiff-bench-out"},
        },
    }


def _proc_stats(pid: int) -> dict[str, float]:
    """RSS (bytes) and consumed CPU seconds of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss": float(rss), "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


@contextlib.contextmanager
def _cluster(state: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = (state / "cluster.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "asyncdiff_devcluster",
        "up",
        "--state-dir",
        str(state / "cluster"),
        "--port",
        str(port),
        "--gpus",
        "0",
        "--job-backoff",
        "0",
        "--restart-backoff",
        "0.1",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    kubeconfig = state / "cluster" / "kubeconfig"
    try:
        deadline = time.monotonic() + 60
        import urllib.request

        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dev cluster exited: {(state / 'cluster.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200 and kubeconfig.is_file():
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dev cluster did not become ready in 60 s")
            time.sleep(0.2)
        yield str(kubeconfig), proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class JobWatch:
    """Records the arrival time of each Job's ADDED event, keyed by its controller owner's uid."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._batch: Any = client.BatchV1Api(api_client)
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        rv = self._batch.list_namespaced_job(NAMESPACE).metadata.resource_version
        while not self._stop:
            w = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in w.stream(  # type: ignore[no-untyped-call]
                    self._batch.list_namespaced_job, NAMESPACE, resource_version=rv, timeout_seconds=30
                ):
                    obj = event["object"]
                    rv = obj.metadata.resource_version
                    if event["type"] == "ADDED":
                        now = time.monotonic()
                        with self._cond:
                            for ref in obj.metadata.owner_references or []:
                                self.seen.setdefault(ref.uid, now)
                            self._cond.notify_all()
                    if self._stop:
                        break
            except Exception:
                if self._stop:
                    return
                time.sleep(0.2)
                rv = self._batch.list_namespaced_job(NAMESPACE).metadata.resource_version

    def wait(self, uids: list[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not all(u in self.seen for u in uids):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 1.0))
        return True

    def stop(self) -> None:
        self._stop = True


def _create(custom: Any, name: str) -> tuple[str, float]:
    start = time.monotonic()
    obj = custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest(name))
    return obj["metadata"]["uid"], start


def run(quick: bool, log: Any = print) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes import config as kconfig

    levels = [1, 20, 100] if quick else [1, 100, 1000]
    probes = 3
    settle_s = 3.0 if quick else 6.0
    interval = float(os.environ.get("ASYNCDIFF_RECONCILE_INTERVAL", "1.0"))  # the operator's documented default
    result: dict[str, Any] = {
        "levels": levels,
        "workers": "not run: the node advertises 0 GPUs, so worker Pods stay Pending (control path only)",
        "operator_command": "python -m asyncdiff_operator.main",
        "reconcile_interval_s": os.environ.get("ASYNCDIFF_RECONCILE_INTERVAL", "1.0 (operator default)"),
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="asyncdiff-bench-op-") as tmp:
        state = Path(tmp)
        with _cluster(state) as (kubeconfig, _cluster_proc):
            api_client = kconfig.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            ext = client.ApiextensionsV1Api(api_client)
            for doc in yaml.safe_load_all(CRD_FILE.read_text()):
                if doc:
                    ext.create_custom_resource_definition(doc)
            time.sleep(0.5)
            env = dict(os.environ, KUBECONFIG=kubeconfig)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO / "operator"), str(REPO / "worker"), env.get("PYTHONPATH", "")]
            )
            op_log = (state / "operator.log").open("wb")
            operator = subprocess.Popen(
                [sys.executable, "-m", "asyncdiff_operator.main"], env=env, stdout=op_log, stderr=subprocess.STDOUT
            )
            custom = client.CustomObjectsApi(api_client)
            watch = JobWatch(api_client)
            try:
                uid, _ = _create(custom, "warmup-0")  # the operator's start-up is not part of any level
                if not watch.wait([uid], 120):
                    raise RuntimeError(f"operator made no child Job in 120 s:\n{_tail(state / 'operator.log')}")
                live = 1
                counter = 0
                for level in levels:
                    burst = max(level - live, 1)
                    uids: list[tuple[str, float]] = []
                    t0 = time.monotonic()
                    for _ in range(burst):
                        counter += 1
                        uids.append(_create(custom, f"bench-{counter:05d}"))
                    t_created = time.monotonic()
                    # time-boxed, so that a saturated operator cannot stall `make bench`: missing Jobs are reported
                    complete = watch.wait([u for u, _ in uids], timeout_s=min(60 + 0.2 * burst, 240))
                    lat = [watch.seen[u] - s for u, s in uids if u in watch.seen]
                    t_done = max((watch.seen[u] for u, _ in uids if u in watch.seen), default=time.monotonic())
                    live += burst
                    time.sleep(settle_s)
                    before = _proc_stats(operator.pid)
                    time.sleep(settle_s)
                    after = _proc_stats(operator.pid)
                    probe_lat = []
                    for _ in range(probes):
                        counter += 1
                        puid, pstart = _create(custom, f"probe-{counter:05d}")
                        if watch.wait([puid], 30):
                            probe_lat.append(watch.seen[puid] - pstart)
                        live += 1
                    row: dict[str, Any] = {
                        "level": level,
                        "live_crs_at_end": live,
                        "burst_size": burst,
                        "burst_complete": complete,
                        "burst_jobs_seen": len(lat),
                        "burst_create_seconds": t_created - t0,
                        "burst_to_last_job_seconds": t_done - t0,
                        "throughput_crs_per_s": len(lat) / max(t_done - t0, 1e-9),
                        "latency_p50_s": percentile(lat, 50),
                        "latency_p99_s": percentile(lat, 99),
                        "latency_max_s": max(lat) if lat else float("nan"),
                        "note": ""
                        if complete
                        else f"only {len(lat)}/{burst} child Jobs within the time box: the "
                        "percentiles are over those and are lower bounds",
                        "probe_latency_s": probe_lat,
                        "probe_latency_p50_s": percentile(probe_lat, 50),
                        "operator_rss_bytes": after["rss"],
                        "operator_cpu_fraction_steady": (after["cpu_s"] - before["cpu_s"]) / settle_s,
                    }
                    cpu = row["operator_cpu_fraction_steady"]
                    rate = (live - probes) / interval  # probes are created after the window
                    row["timer_reconciles_per_s_assumed"] = rate
                    row["cpu_ms_per_reconcile_est"] = 1000 * cpu / rate if cpu < 0.95 else None
                    row["reconciles_per_s_one_core_est"] = rate / cpu if 0 < cpu < 0.95 else None
                    result["rows"].append(row)
                    log(
                        f"  {level} CRs: burst {burst} p50 {row['latency_p50_s']:.2f} s p99 {row['latency_p99_s']:.2f}"
                        f" s, {row['throughput_crs_per_s']:.1f} CR/s; probe p50 {row['probe_latency_p50_s']:.2f} s; "
                        f"operator RSS {after['rss'] / 2**20:.0f} MiB, CPU {row['operator_cpu_fraction_steady']:.2f}"
                    )
            finally:
                watch.stop()
                operator.terminate()
                try:
                    operator.wait(20)
                except subprocess.TimeoutExpired:
                    operator.kill()
                op_log.close()
                result["operator_log_tail"] = _tail(state / "operator.log", 1500)
    result["api_calls"] = api_calls(quick, log)
    return result


_FAKE_WORKER = """import json, sys, time
n = 0
while True:
    n += 1
    now = time.time()
    line = {"asyncdiff": "progress", "ts": now, "phase": "generating", "outputsDone": 1, "outputsTotal": 4,
            "step": n % 25, "steps": 25, "lastProgressTs": now}
    print(json.dumps(line), flush=True)
    time.sleep(1.0)
"""


def running_manifest(name: str, fake_dir: Path) -> dict[str, Any]:
    """A CPU-only sharded job whose worker pod runs and prints progress forever (the fake worker)."""
    body = manifest(name)
    body["metadata"]["labels"] = {"bench.asyncdiff.io/api": "1"}
    spec = body["spec"]
    spec["generation"]["prompts"] = ["a red cube", "a blue ball", "a green cone", "a cat"]
    spec["runPolicy"] = {"gpusPerNode": 0}
    spec["pod"] = {"env": [{"name": "PYTHONPATH", "value": str(fake_dir)}]}
    return body


def _request_counts(port: int) -> dict[tuple[str, str, str], int]:
    """(client, verb, resource[/subresource]) -> requests served so far, from the control plane's /metrics."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, str, str], int] = {}
    for m in re.finditer(
        r'apiserver_request_total\{client="([^"]*)",verb="([^"]*)",group="[^"]*",resource="([^"]*)",'
        r'subresource="([^"]*)"\} (\d+)',
        text,
    ):
        resource = m.group(3) + (f"/{m.group(4)}" if m.group(4) else "")
        out[(m.group(1), m.group(2), resource)] = int(m.group(5))
    return out


def api_calls(quick: bool, log: Any = print) -> dict[str, Any]:
    """API requests per running job per minute, counted at the control plane (see the module docstring)."""
    from kubernetes import client
    from kubernetes import config as kconfig

    jobs = 20 if quick else 100
    window_s = 30.0 if quick else 60.0
    with tempfile.TemporaryDirectory(prefix="asyncdiff-bench-api-") as tmp:
        state = Path(tmp)
        fake = state / "fake-worker"
        fake.mkdir()
        (fake / "sitecustomize.py").write_text(_FAKE_WORKER)
        with _cluster(state) as (kubeconfig, _proc):
            port = int(
                yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"].rsplit(":", 1)[1]
            )
            api_client = kconfig.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            api_client.user_agent = "asyncdiff-bench"
            ext = client.ApiextensionsV1Api(api_client)
            for doc in yaml.safe_load_all(CRD_FILE.read_text()):
                if doc:
                    ext.create_custom_resource_definition(doc)
            time.sleep(0.5)
            env = dict(os.environ, KUBECONFIG=kubeconfig)
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
                for i in range(jobs):
                    custom.create_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, PLURAL, running_manifest(f"api-{i:04d}", fake)
                    )
                deadline = time.monotonic() + 120 + 2 * jobs
                while True:
                    items = custom.list_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, PLURAL, label_selector="bench.asyncdiff.io/api=1"
                    )["items"]
                    running = sum(1 for o in items if (o.get("status") or {}).get("phase") == "Running")
                    if running == jobs:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"only {running}/{jobs} jobs Running:\n{_tail(state / 'operator.log')}")
                    time.sleep(1.0)
                time.sleep(15.0)  # every job past its first sample
                before = _request_counts(port)
                t0 = time.monotonic()
                time.sleep(window_s)
                after = _request_counts(port)
                minutes = (time.monotonic() - t0) / 60.0
                pods = core.list_namespaced_pod(NAMESPACE).items
                still = sum(1 for p in pods if p.status and p.status.phase == "Running")
            finally:
                operator.terminate()
                try:
                    operator.wait(20)
                except subprocess.TimeoutExpired:
                    operator.kill()
                op_log.close()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    operator_calls = {k: v for k, v in delta.items() if k[0] != "asyncdiff-bench" and v > 0}
    by_call: dict[str, float] = {}
    for (client_name, verb, resource), n in sorted(operator_calls.items()):
        by_call[f"{client_name} {verb} {resource}"] = round(n / jobs / minutes, 2)
    total = sum(operator_calls.values()) / jobs / minutes
    logs = sum(v for k, v in operator_calls.items() if k[2] == "pods/log") / jobs / minutes
    result = {
        "running_jobs": jobs,
        "running_pods_at_end": still,
        "window_s": window_s,
        "reconcile_interval_s": os.environ.get("ASYNCDIFF_RECONCILE_INTERVAL", "1.0 (operator default)"),
        "progress_interval_s": os.environ.get("ASYNCDIFF_PROGRESS_INTERVAL", "10 (operator default)"),
        "calls_per_job_per_minute": round(total, 2),
        "log_reads_per_job_per_minute": round(logs, 2),
        "by_call_per_job_per_minute": by_call,
        "counted_at": "the local control plane's apiserver_request_total (all clients but the benchmark's own)",
    }
    log(
        f"  API calls at {jobs} running jobs: {total:.1f} per job per minute ({logs:.1f} log reads); "
        f"{still} pods running"
    )
    return result


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""
