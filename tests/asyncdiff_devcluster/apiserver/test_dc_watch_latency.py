"""Every create reaches an open watch over real HTTP (the latency figure is ``bench/devcluster_latency.py``'s, not
a bound here: the suite runs on loaded machines), and snapshots across a restart."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from asyncdiff_devcluster.testing import RunningDevCluster, running_dev_cluster
from kubernetes import client


def test_every_create_reaches_an_open_watch(dev_cluster: RunningDevCluster, namespace: str) -> None:
    url = urllib.parse.urlparse(dev_cluster.url)
    arrivals: dict[str, float] = {}
    ready = threading.Event()

    with urllib.request.urlopen(f"{dev_cluster.url}/api/v1/namespaces/{namespace}/configmaps", timeout=5) as listing:
        since = json.loads(listing.read())["metadata"]["resourceVersion"]
    query = f"watch=true&resourceVersion={since}&timeoutSeconds=8"

    def consume() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("GET", f"/api/v1/namespaces/{namespace}/configmaps?{query}")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type") == "application/json"
        ready.set()
        while len(arrivals) < 50:
            line = response.readline()
            if not line:
                break
            event = json.loads(line)
            arrivals.setdefault(event["object"]["metadata"]["name"], time.perf_counter())
        conn.close()

    thread = threading.Thread(target=consume)
    thread.start()
    assert ready.wait(5)
    sent: dict[str, float] = {}
    body = json.dumps({"metadata": {"name": "x"}}).encode()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    for i in range(50):
        name = f"lat-{i}"
        sent[name] = time.perf_counter()
        conn.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/configmaps",
            body.replace(b'"x"', f'"{name}"'.encode()),
            {"Content-Type": "application/json"},
        )
        assert conn.getresponse().read() and True
    thread.join(10)
    latencies = sorted((arrivals[n] - sent[n]) * 1000 for n in sent if n in arrivals)
    assert len(latencies) == 50
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(f"create->watch event: median {statistics.median(latencies):.2f} ms, p95 {p95:.2f} ms over 50 creates")


def test_snapshot_survives_a_restart(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    with running_dev_cluster(tmp_path / "a", snapshot=snapshot) as first:
        api: Any = client.CoreV1Api(first.api_client())
        api.create_namespaced_config_map("default", {"metadata": {"name": "kept"}, "data": {"k": "v"}})
        rv = int(api.read_namespaced_config_map("kept", "default").metadata.resource_version)
    assert snapshot.exists()
    with running_dev_cluster(tmp_path / "b", snapshot=snapshot) as second:
        api = client.CoreV1Api(second.api_client())
        kept = api.read_namespaced_config_map("kept", "default")
        assert kept.data == {"k": "v"}
        made = api.create_namespaced_config_map("default", {"metadata": {"name": "new"}})
        assert int(made.metadata.resource_version) > rv
