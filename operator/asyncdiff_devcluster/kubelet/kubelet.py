"""The node agent: registers the dev Node, starts a ``PodWorker`` per bound Pod, serves logs.

Why: keeps the node-level concerns in one place: which Pods are ours (``spec.nodeName``), the fake GPU
pool (``nvidia.com/gpu`` capacity and which ids a Pod holds), the per-pod folders, the port allocator,
and the ``pods/log`` provider the API server delegates to. Measured start latency (bind -> process
running) is kept in ``start_latencies`` for the docs and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..apiserver.api import Api, now_rfc3339
from ..errors import ApiError, bad_request
from . import logs, networking
from .runtime import PodWorker

log = logging.getLogger("asyncdiff_devcluster.kubelet")
PODS = ("", "pods")


class Kubelet:
    def __init__(
        self,
        api: Api,
        *,
        node_name: str,
        state_dir: Path,
        gpus: int = 0,
        gpu_passthrough: bool = False,
        api_port: int = 0,
        kubeconfig: Path | None = None,
        base_env: dict[str, str] | None = None,
        restart_backoff: float = 1.0,
        restart_backoff_max: float = 30.0,
        keep_pod_dirs: bool = False,
        node_labels: dict[str, str] | None = None,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.state_dir = state_dir
        self.pods_dir = state_dir / "pods"
        self.gpus = gpus
        self.gpu_passthrough = gpu_passthrough
        self.api_port = api_port
        self.kubeconfig = kubeconfig
        self.restart_backoff = restart_backoff
        self.restart_backoff_max = restart_backoff_max
        self.keep_pod_dirs = keep_pod_dirs
        self.node_labels = node_labels or {}
        env = dict(os.environ if base_env is None else base_env)
        python_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([python_dir, env.get("PATH", os.defpath)])
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.base_env = env
        self.ports = networking.PortAllocator()
        self.workers: dict[str, PodWorker] = {}
        self._gpu_owner: dict[int, str] = {}
        self.start_latencies: list[float] = []
        self._bound_at: dict[str, float] = {}

    # ------------------------------------------------------------------ node

    def node_object(self) -> dict[str, Any]:
        cpus = str(os.cpu_count() or 1)
        resources = {
            "cpu": cpus,
            "memory": "16Gi",
            "pods": "110",
            "ephemeral-storage": "100Gi",
            "nvidia.com/gpu": str(self.gpus),
        }
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node-role.kubernetes.io/control-plane": "",
            **self.node_labels,
        }
        return {
            "metadata": {"name": self.node_name, "labels": labels},
            "spec": {},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "asyncdiff dev-cluster process kubelet is posting ready status",
                        "lastHeartbeatTime": now_rfc3339(),
                        "lastTransitionTime": now_rfc3339(),
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": networking.LOOPBACK},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.36.0-asyncdiff-devcluster",
                    "containerRuntimeVersion": "devcluster://processes",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }

    def register_node(self) -> None:
        rt = self.api.rt("v1", "nodes")
        body = self.node_object()
        existing = self.api.store.get(rt.storage_key, "", self.node_name)
        if existing is None:
            self.api.create(rt, "", {"metadata": body["metadata"], "spec": {}})
        current = self.api.get(rt, "", self.node_name)
        current["metadata"]["labels"] = body["metadata"]["labels"]
        self.api.update(rt, "", self.node_name, current)
        current = self.api.get(rt, "", self.node_name)
        current["status"] = body["status"]
        self.api.update(rt, "", self.node_name, current, subresource="status")

    def fail_stale_pods(self) -> None:
        """After a restart from a snapshot, pods that were running have lost their processes."""
        rt = self.api.rt("v1", "pods")
        for pod in self.api.store.items(PODS):
            spec, status = pod.get("spec") or {}, pod.get("status") or {}
            if spec.get("nodeName") != self.node_name or status.get("phase") in ("Succeeded", "Failed"):
                continue
            fresh = dict(pod)
            fresh["status"] = {
                **status,
                "phase": "Failed",
                "reason": "NodeRestart",
                "message": "the dev cluster was restarted",
            }
            with contextlib.suppress(ApiError):
                self.api.update(
                    rt,
                    pod["metadata"].get("namespace", ""),
                    pod["metadata"]["name"],
                    fresh,
                    subresource="status",
                )

    # ------------------------------------------------------------------ pods

    async def run(self) -> None:
        watcher, _ = self.api.store.watch([PODS])
        try:
            for pod in self.api.store.items(PODS):
                self._observe("ADDED", pod)
            while True:
                item = await watcher.queue.get()
                if item is None:
                    break
                kind, obj, _ = item
                try:
                    self._observe(kind, obj)
                except Exception:
                    log.exception("kubelet: handling %s failed", kind)
        finally:
            watcher.close()
            await self.shutdown()

    def _observe(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = meta.get("uid", "")
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None and worker.task is not None and not worker.task.done():
                worker.request_stop(0.0)  # force-deleted: kill now; worker_done() cleans up
            else:
                self._cleanup(pod)
            return
        if spec.get("nodeName") != self.node_name:
            return
        if worker is not None:
            worker.observe(pod)
            return
        if meta.get("deletionTimestamp"):
            # Nothing runs for it here: finish the deletion (a finished pod only once its finalizers are gone).
            phase = (pod.get("status") or {}).get("phase")
            if phase not in ("Succeeded", "Failed") or not meta.get("finalizers"):
                with contextlib.suppress(ApiError):
                    self.api.delete(
                        self.api.rt("v1", "pods"), meta.get("namespace", ""), meta["name"], {"gracePeriodSeconds": 0}
                    )
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        worker = PodWorker(self, pod)
        worker.gpu_ids = self._take_gpus(uid, pod)
        self.workers[uid] = worker
        self._bound_at[uid] = asyncio.get_running_loop().time()
        worker.start()

    def _take_gpus(self, uid: str, pod: dict[str, Any]) -> list[int]:
        from ..controllers.scheduler import pod_gpus

        wanted = pod_gpus(pod)
        free = [i for i in range(self.gpus) if i not in self._gpu_owner]
        taken = free[:wanted]
        for i in taken:
            self._gpu_owner[i] = uid
        return taken

    def record_start(self, worker: PodWorker) -> None:
        bound = self._bound_at.pop(worker.uid, None)
        if bound is not None:
            self.start_latencies.append(asyncio.get_running_loop().time() - bound)

    def annotate_ports(self, worker: PodWorker) -> None:
        if not worker.port_map:
            return
        pod = self.api.store.get(PODS, worker.namespace, worker.name)
        if pod is None:
            return
        value = json.dumps(worker.port_map, sort_keys=True)
        if (pod["metadata"].get("annotations") or {}).get(networking.PORTS_ANNOTATION) == value:
            return
        fresh = dict(pod)
        fresh["metadata"] = {
            **pod["metadata"],
            "annotations": {**(pod["metadata"].get("annotations") or {}), networking.PORTS_ANNOTATION: value},
        }
        with contextlib.suppress(ApiError):
            self.api.update(self.api.rt("v1", "pods"), worker.namespace, worker.name, fresh)

    def worker_done(self, worker: PodWorker) -> None:
        for i in worker.gpu_ids:
            self._gpu_owner.pop(i, None)
        pod = self.api.store.get(PODS, worker.namespace, worker.name)
        if pod is None or pod["metadata"].get("uid") != worker.uid:
            self.workers.pop(worker.uid, None)
            self._cleanup(worker.pod)

    def _cleanup(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta.get("uid", "")
        worker = self.workers.get(uid)
        if worker is not None and worker.task is not None and not worker.task.done():
            return
        self.workers.pop(uid, None)
        if not self.keep_pod_dirs:
            folder = self.pods_dir / f"{meta.get('namespace', '')}_{meta['name']}_{uid[:8]}"
            shutil.rmtree(folder, ignore_errors=True)

    async def shutdown(self, grace: float = 5.0) -> None:
        workers = list(self.workers.values())
        for worker in workers:
            worker.request_stop(grace)
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace + 2.0)
        for worker in workers:
            worker._kill_all()

    # ------------------------------------------------------------------ logs

    async def stream_logs(
        self,
        pod: dict[str, Any],
        container: str,
        *,
        follow: bool,
        previous: bool,
        tail_lines: int | None,
        timestamps: bool,
        since_seconds: int | None,
        limit_bytes: int | None,
    ) -> AsyncIterator[bytes]:
        meta = pod["metadata"]
        uid = meta.get("uid", "")
        worker = self.workers.get(uid)
        folder = self.pods_dir / f"{meta.get('namespace', '')}_{meta['name']}_{uid[:8]}" / "logs" / container
        run = None
        if worker is not None:
            run = next((r for r in worker.init + worker.main if r.name == container), None)
        files = sorted(folder.glob("*.log"), key=lambda p: int(p.stem)) if folder.exists() else []
        if previous:
            if len(files) < 2:
                raise bad_request(f'previous terminated container "{container}" in pod "{meta["name"]}" not found')
            path, live = files[-2], None
        else:
            if not files:
                raise bad_request(
                    f'container "{container}" in pod "{meta["name"]}" is waiting to start: ContainerCreating'
                )
            path = files[-1]
            live = run.log if run is not None and run.log is not None and run.log.path == path else None
        async for chunk in logs.stream(
            live,
            path,
            follow=follow,
            tail_lines=tail_lines,
            timestamps=timestamps,
            since_seconds=since_seconds,
            limit_bytes=limit_bytes,
        ):
            yield chunk
