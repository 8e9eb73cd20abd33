"""Latency of the local control plane: create -> watch event over HTTP, and pod create -> Running.

Why a benchmark and not a test: the suite runs on shared, sometimes loaded 2-core machines, where any wall-clock
bound flakes; the tests keep the functional assertions (every event arrives, every pod runs) and these figures are
measured here, with the machine's load average recorded by ``bench.run_all``. The figures tell whether the
emulator is fast enough not to dominate the operator's own latency (``operator_scale``).
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from bench.metrics import percentile


def _watch_latency(url: str, namespace: str, creates: int) -> list[float]:
    """Milliseconds from a ConfigMap create call to its ADDED event on an already open watch, per create."""
    parsed = urllib.parse.urlparse(url)
    with urllib.request.urlopen(f"{url}/api/v1/namespaces/{namespace}/configmaps", timeout=30) as listing:
        since = json.loads(listing.read())["metadata"]["resourceVersion"]
    arrivals: dict[str, float] = {}
    ready = threading.Event()

    def consume() -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        conn.request("GET", f"/api/v1/namespaces/{namespace}/configmaps?watch=true&resourceVersion={since}")
        response = conn.getresponse()
        ready.set()
        while len(arrivals) < creates:
            line = response.readline()
            if not line:
                break
            event = json.loads(line)
            arrivals.setdefault(event["object"]["metadata"]["name"], time.perf_counter())
        conn.close()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ready.wait(30)
    sent: dict[str, float] = {}
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    for i in range(creates):
        name = f"lat-{i}"
        sent[name] = time.perf_counter()
        body = json.dumps({"metadata": {"name": name}}).encode()
        conn.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", body, {"Content-Type": "application/json"})
        conn.getresponse().read()
    thread.join(60)
    return sorted((arrivals[n] - sent[n]) * 1000 for n in sent if n in arrivals)


def _pod_start(api_client: Any, namespace: str, pods: int) -> list[float]:
    """Seconds from a pod create call to a watch event showing it Running, per pod."""
    from kubernetes import client, watch

    core = client.CoreV1Api(api_client)
    samples = []
    for i in range(pods):
        name = f"start-{i}"
        listed = core.list_namespaced_pod(namespace)
        body = {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "python:3.11",
                        "command": [sys.executable, "-c", "import time; time.sleep(30)"],
                    }
                ],
            },
        }
        started = time.monotonic()
        core.create_namespaced_pod(namespace, body)
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=120,
        ):
            if event["object"].status.phase == "Running":
                samples.append(time.monotonic() - started)
                w.stop()
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    return samples


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from asyncdiff_devcluster.testing import running_dev_cluster

    creates, pods = (20, 3) if quick else (200, 10)
    with running_dev_cluster() as cluster:
        watch_ms = _watch_latency(cluster.url, "default", creates)
        start_s = _pod_start(cluster.api_client(), "default", pods)
    out = {
        "watch_event_ms": {
            "creates": creates,
            "received": len(watch_ms),
            "p50": round(statistics.median(watch_ms), 2),
            "p95": round(percentile(watch_ms, 95), 2),
        },
        "pod_create_to_running_s": {
            "pods": pods,
            "p50": round(statistics.median(start_s), 3),
            "max": round(max(start_s), 3),
        },
    }
    log(f"devcluster latency: {json.dumps(out)}")
    return out
