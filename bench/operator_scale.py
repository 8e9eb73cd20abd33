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
    return result


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""
