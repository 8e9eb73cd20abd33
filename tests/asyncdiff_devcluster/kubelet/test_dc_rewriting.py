"""Unit tests of the kubelet's rewriting rules: cluster names, service names, ports, paths, $(VAR)."""

from __future__ import annotations

from asyncdiff_devcluster.kubelet import env, networking, volumes


def test_cluster_names_become_loopback() -> None:
    rewrite = networking.rewrite_cluster_names
    assert rewrite("job-0.svc.ns.svc.cluster.local") == "127.0.0.1"
    assert rewrite("tcp://job-0.workers.ns.svc:29500/x") == "tcp://127.0.0.1:29500/x"
    assert rewrite("--master=job-0.workers.ns.svc.cluster.local.") == "--master=127.0.0.1"
    assert rewrite("s3.amazonaws.com") == "s3.amazonaws.com"
    assert rewrite("a.svc-like-name") == "a.svc-like-name"


def test_service_relative_names_only_as_whole_values() -> None:
    svc = networking.rewrite_service_value
    assert svc("workers", "ns", ["workers"]) == "127.0.0.1"
    assert svc("job-0.workers", "ns", ["workers"]) == "127.0.0.1"
    assert svc("job-0.workers.ns:29500", "ns", ["workers"]) == "127.0.0.1:29500"
    assert svc("workers.other", "ns", ["workers"]) == "workers.other"
    assert svc("default", "ns", ["workers"]) == "default"


def test_port_allocation_is_per_group() -> None:
    ports = networking.PortAllocator()
    a = ports.port_for("ns", "job-a", 29500)
    assert ports.port_for("ns", "job-a", 29500) == a
    assert ports.port_for("ns", "job-b", 29500) != a
    assert networking.is_port_variable("MASTER_PORT", "29500", set())
    assert networking.is_port_variable("X", "8080", {8080})
    assert not networking.is_port_variable("WORLD_SIZE", "2", set())


def test_path_rewriting_and_expansion() -> None:
    rewrite = volumes.PathRewriter(
        {"/data": "/tmp/p/volumes/data", "/data/cache": "/tmp/c", "/dev/termination-log": "/tmp/t"}
    )
    assert rewrite("/data/out.png") == "/tmp/p/volumes/data/out.png"
    assert rewrite("--out=/data") == "--out=/tmp/p/volumes/data"
    assert rewrite("/data/cache/x") == "/tmp/c/x"
    assert rewrite("/database") == "/database"
    assert rewrite("echo x > /dev/termination-log") == "echo x > /tmp/t"
    assert env.expand("$(A)-$(B)-$$(A)", {"A": "1"}) == "1-$(B)-$(A)"
    assert env.parse_quantity("1Gi") == 2**30 and env.parse_quantity("500m") == 0.5
