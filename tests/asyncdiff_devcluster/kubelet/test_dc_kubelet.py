"""The process kubelet: env and volumes, exit codes and messages, restarts, signals, GPUs, networking."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_devcluster.testing import RunningDevCluster, wait_for
from kubernetes import client, watch

PY = sys.executable


@pytest.fixture
def core(k8s: Any) -> client.CoreV1Api:
    return client.CoreV1Api(k8s)


def pod(name: str, script: str, *, restart: str = "Never", **extra: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "python:3.11",
        "command": [PY, "-c", script],
        **extra.pop("container", {}),
    }
    return {
        "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 2,
            "containers": [container],
            **extra,
        },
    }


def phase_is(core: client.CoreV1Api, namespace: str, name: str, *phases: str) -> Any:
    found = core.read_namespaced_pod(name, namespace)
    return found if found.status.phase in phases else None


def test_env_volumes_and_path_rewriting(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast", "app.yaml": "a: 1\n"}}
    )
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"key": "s3cr3t"}})
    script = (
        "import json, os, sys\n"
        "names = ('POD', 'NS', 'LBL', 'MODE', 'SECRET', 'GREETING', 'CPU', 'FROM_CM_mode')\n"
        "out = {k: os.environ.get(k) for k in names}\n"
        "out['cwd'] = os.getcwd()\n"
        "out['cfg'] = open('/etc/cfg/app.yaml').read()\n"
        "out['secret_file'] = open('/etc/creds/key').read()\n"
        "out['labels'] = open('/etc/info/labels').read()\n"
        "out['arg'] = sys.argv[1]\n"
        "out['mounts'] = sorted(json.loads(os.environ['ASYNCDIFF_MOUNTS']))\n"
        "open('/scratch/x', 'w').write('ok')\n"
        "out['scratch'] = open(os.path.join(sys.argv[1].split('=')[1], 'x')).read()\n"
        "print(json.dumps(out))\n"
    )
    body = pod(
        "envpod",
        script,
        metadata={"labels": {"app": "demo"}},
        container={
            "args": ["--out=/scratch"],
            "workingDir": "/scratch",
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "LBL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
                {"name": "GREETING", "value": "hello $(POD) $$(POD)"},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            ],
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "FROM_CM_"}],
            "resources": {"limits": {"cpu": "2"}},
            "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg"},
                {"name": "creds", "mountPath": "/etc/creds"},
                {"name": "info", "mountPath": "/etc/info"},
                {"name": "scratch", "mountPath": "/scratch"},
            ],
        },
        volumes=[
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
            {
                "name": "info",
                "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
            },
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    core.create_namespaced_pod(namespace, body)
    wait_for(lambda: phase_is(core, namespace, "envpod", "Succeeded", "Failed"), 15)
    log = core.read_namespaced_pod_log("envpod", namespace)
    out = json.loads(log)
    assert out["POD"] == "envpod" and out["NS"] == namespace and out["LBL"] == "demo"
    assert (out["MODE"], out["SECRET"], out["FROM_CM_mode"]) == ("fast", "s3cr3t", "fast")
    assert out["GREETING"] == "hello envpod $(POD)" and out["CPU"] == "2"
    assert out["cfg"] == "a: 1\n" and out["secret_file"] == "s3cr3t" and out["labels"] == 'app="demo"'
    assert out["cwd"].endswith("/volumes/scratch") and out["arg"] == f"--out={out['cwd']}" and out["scratch"] == "ok"
    assert out["mounts"] == ["/dev/termination-log", "/etc/cfg", "/etc/creds", "/etc/info", "/scratch"]


def test_exit_code_and_termination_message(core: client.CoreV1Api, namespace: str) -> None:
    script = "import os; open('/dev/termination-log', 'w').write('model not found'); raise SystemExit(7)"
    core.create_namespaced_pod(namespace, pod("msg", script))
    failed = wait_for(lambda: phase_is(core, namespace, "msg", "Failed"), 15)
    term = failed.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason, term.message) == (7, "Error", "model not found")
    core.create_namespaced_pod(
        namespace,
        pod(
            "fallback",
            "print('boom line'); raise SystemExit(2)",
            container={"terminationMessagePolicy": "FallbackToLogsOnError"},
        ),
    )
    failed = wait_for(lambda: phase_is(core, namespace, "fallback", "Failed"), 15)
    assert failed.status.container_statuses[0].state.terminated.message == "boom line\n"
    core.create_namespaced_pod(namespace, pod("nocmd", "", container={"command": None, "args": ["x"]}))
    waiting = wait_for(
        lambda: (core.read_namespaced_pod("nocmd", namespace).status.container_statuses or [None])[0], 10
    ).state.waiting
    assert waiting.reason == "CreateContainerConfigError" and "command" in waiting.message


def test_restart_on_failure_and_previous_logs(core: client.CoreV1Api, namespace: str, host_dir: Path) -> None:
    script = (
        "import os\n"
        "n = len(os.listdir('/state'))\n"
        "open(f'/state/{n}', 'w').close(); print('attempt', n)\n"
        "raise SystemExit(0 if n >= 2 else 1)\n"
    )
    body = pod(
        "flaky",
        script,
        restart="OnFailure",
        container={"volumeMounts": [{"name": "state", "mountPath": "/state"}]},
        volumes=[{"name": "state", "hostPath": {"path": str(host_dir)}}],
    )
    core.create_namespaced_pod(namespace, body)
    done = wait_for(lambda: phase_is(core, namespace, "flaky", "Succeeded"), 15)
    assert done.status.container_statuses[0].restart_count == 2
    assert done.status.container_statuses[0].last_state.terminated.exit_code == 1
    assert core.read_namespaced_pod_log("flaky", namespace) == "attempt 2\n"
    assert core.read_namespaced_pod_log("flaky", namespace, previous=True) == "attempt 1\n"


def test_deletion_sends_sigterm_then_sigkill(core: client.CoreV1Api, namespace: str, host_dir: Path) -> None:
    graceful = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    open('/state/term', 'w').write('got SIGTERM'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop); print('ready', flush=True); time.sleep(60)\n"
    )
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True); time.sleep(60)"
    )
    mounts = {"volumeMounts": [{"name": "state", "mountPath": "/state"}]}
    vols = [{"name": "state", "hostPath": {"path": str(host_dir)}}]
    core.create_namespaced_pod(namespace, pod("graceful", graceful, container=mounts, volumes=vols))
    core.create_namespaced_pod(namespace, pod("stubborn", stubborn, terminationGracePeriodSeconds=1))
    for name in ("graceful", "stubborn"):
        wait_for(lambda n=name: "ready" in core.read_namespaced_pod_log(n, namespace), 15)
    w = watch.Watch()
    core.delete_namespaced_pod("stubborn", namespace)
    final = None
    for event in w.stream(
        core.list_namespaced_pod, namespace, field_selector="metadata.name=stubborn", timeout_seconds=10
    ):
        if event["type"] == "DELETED":
            final = event["object"]
            w.stop()
    assert final is not None
    assert final.status.container_statuses[0].state.terminated.exit_code == 137  # SIGKILL after the grace period
    core.delete_namespaced_pod("graceful", namespace)
    wait_for(lambda: (host_dir / "term").exists(), 10)
    assert (host_dir / "term").read_text() == "got SIGTERM"


def test_gpu_requests_use_the_fake_pool(core: client.CoreV1Api, namespace: str) -> None:
    script = "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']), os.environ.get('ASYNCDIFF_FAKE_GPU_IDS'))"
    gpu = {"resources": {"limits": {"nvidia.com/gpu": "2"}}}
    core.create_namespaced_pod(namespace, pod("gpu", script, container=gpu))
    wait_for(lambda: phase_is(core, namespace, "gpu", "Succeeded"), 15)
    assert core.read_namespaced_pod_log("gpu", namespace) == "'' 0,1\n"
    core.create_namespaced_pod(
        namespace, pod("greedy", script, container={"resources": {"limits": {"nvidia.com/gpu": "3"}}})
    )

    def unschedulable() -> Any:
        conds = core.read_namespaced_pod("greedy", namespace).status.conditions or []
        return next((c for c in conds if c.type == "PodScheduled" and c.status == "False"), None)

    cond = wait_for(unschedulable, 10)
    assert cond.reason == "Unschedulable" and cond.message == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert core.read_namespaced_pod("greedy", namespace).status.phase == "Pending"
    (event,) = wait_for(lambda: pod_events(core, namespace, "greedy"), 10, message="FailedScheduling event")
    assert (event.type, event.reason, event.source.component) == ("Warning", "FailedScheduling", "default-scheduler")
    assert event.message == cond.message


def pod_events(core: client.CoreV1Api, namespace: str, name: str) -> list[Any]:
    selector = f"involvedObject.kind=Pod,involvedObject.name={name}"
    events: list[Any] = core.list_namespaced_event(namespace, field_selector=selector).items
    return events


def test_a_missing_secret_keeps_the_pod_creating_with_failed_mount_events(
    core: client.CoreV1Api, namespace: str
) -> None:
    """As a kubelet: ContainerCreating with no message; the reason is in repeated FailedMount Warning events,
    aggregated into one Event whose count grows; the pod starts once the Secret exists."""
    spec = pod("mount", "print('started')", container={"volumeMounts": [{"name": "creds", "mountPath": "/creds"}]})
    spec["spec"]["volumes"] = [{"name": "creds", "secret": {"secretName": "s3-missing"}}]
    core.create_namespaced_pod(namespace, spec)

    def repeated() -> Any:
        events = [e for e in pod_events(core, namespace, "mount") if e.reason == "FailedMount"]
        return events[0] if len(events) == 1 and (events[0].count or 0) >= 2 else None

    event = wait_for(repeated, 40, message="a FailedMount event seen twice")
    assert event.type == "Warning" and event.source.component == "kubelet"
    assert event.message == 'MountVolume.SetUp failed for volume "creds" : secret "s3-missing" not found'
    status = core.read_namespaced_pod("mount", namespace).status
    assert status.phase == "Pending"
    assert status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    assert not status.container_statuses[0].state.waiting.message
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s3-missing"}, "stringData": {"k": "v"}})
    wait_for(lambda: phase_is(core, namespace, "mount", "Succeeded"), 20, message="started once the Secret exists")


def test_headless_service_names_and_distinct_ports(core: client.CoreV1Api, namespace: str, k8s: Any) -> None:
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "workers"},
            "spec": {"clusterIP": "None", "selector": {"app": "w"}, "ports": [{"port": 29500}]},
        },
    )
    script = (
        "import os, time\n"
        "print(os.environ['MASTER_ADDR'], os.environ['MASTER_PORT'], os.environ['SVC'], flush=True)\n"
        "time.sleep(30)"
    )
    env = [
        {"name": "MASTER_ADDR", "value": f"job-0.workers.{namespace}.svc.cluster.local"},
        {"name": "MASTER_PORT", "value": "29500"},
        {"name": "SVC", "value": "workers"},
    ]
    batch = client.BatchV1Api(k8s)
    for name in ("ja", "jb"):
        template = pod(name, script, container={"env": env}, metadata={"labels": {"app": "w"}}, subdomain="workers")
        batch.create_namespaced_job(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "completions": 2,
                    "parallelism": 2,
                    "completionMode": "Indexed",
                    "template": template,
                },
            },
        )
    logs: dict[str, list[str]] = {}

    def all_logged() -> bool:
        for p in core.list_namespaced_pod(namespace, label_selector="app=w").items:
            try:
                text = core.read_namespaced_pod_log(p.metadata.name, namespace)
            except client.ApiException:
                return False
            if not text:
                return False
            logs[p.metadata.name] = text.split()
        return len(logs) == 4

    wait_for(all_logged, 15)
    ports: dict[str, set[str]] = {"ja": set(), "jb": set()}
    for name, (addr, port, svc) in logs.items():
        assert addr == "127.0.0.1" and svc == "127.0.0.1" and port != "29500"
        ports[name.split("-")[0]].add(port)
    assert len(ports["ja"]) == 1 and len(ports["jb"]) == 1 and ports["ja"] != ports["jb"]
    endpoints = wait_for(lambda: core.read_namespaced_endpoints("workers", namespace).subsets, 10)
    hostnames = sorted(a.hostname for a in endpoints[0].addresses)
    assert hostnames == ["ja-0", "ja-1", "jb-0", "jb-1"] and {a.ip for a in endpoints[0].addresses} == {"127.0.0.1"}


def test_pods_start_and_are_seen_running(
    core: client.CoreV1Api, dev_cluster: RunningDevCluster, namespace: str
) -> None:
    """Create -> Running as seen by a watcher, for several pods (the latency figure is in
    ``bench/devcluster_latency.py``; no bound here, the suite runs on loaded machines)."""
    samples = []
    for i in range(5):
        name = f"lat-{i}"
        listed = core.list_namespaced_pod(namespace)
        started = time.monotonic()
        core.create_namespaced_pod(namespace, pod(name, "import time; time.sleep(5)"))
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=10,
        ):
            if event["object"].status.phase == "Running":
                samples.append(time.monotonic() - started)
                w.stop()
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    internal = dev_cluster.call(lambda c: list(c.kubelet.start_latencies) if c.kubelet else [])
    print(
        f"pod create->Running (watch): {[round(s * 1000) for s in samples]} ms; kubelet bind->started: "
        f"{sorted(round(s * 1000) for s in internal)[len(internal) // 2]} ms median"
    )
    assert len(samples) == 5
