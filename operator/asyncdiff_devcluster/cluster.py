"""``DevCluster``: the API server, controllers and kubelet wired together on one asyncio loop.

Why: one object to start and stop the whole local control plane, shared by the CLI (foreground or
detached process) and the test fixture (a background thread). Everything lives in memory; an optional
snapshot file keeps objects across restarts (Pods that were running come back ``Failed``, reason
``NodeRestart``, since their processes are gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from . import kubeconfig
from .apiserver.api import Api
from .apiserver.http import HttpFrontend
from .apiserver.resources import ResourceRegistry
from .apiserver.store import Store
from .controllers.base import Controller
from .controllers.crd import CRDS, CrdController, install_crd_hook
from .controllers.deployment import DeploymentController
from .controllers.endpoints import EndpointsController
from .controllers.garbage_collector import GarbageCollector
from .controllers.job import JobController
from .controllers.namespace import NamespaceController
from .controllers.scheduler import Scheduler
from .kubelet.kubelet import Kubelet

log = logging.getLogger("asyncdiff_devcluster")
SEED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass
class DevClusterConfig:
    """Settings of one dev cluster. Defaults suit interactive use; tests shorten the back-offs."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    node_name: str = "asyncdiff-dev-node"
    gpus: int = 8
    gpu_passthrough: bool = False
    job_backoff_base: float = 1.0
    restart_backoff: float = 1.0
    history_size: int = 20000
    bookmark_interval: float = 30.0
    snapshot: Path | None = None
    keep_pod_dirs: bool = False
    base_env: dict[str, str] | None = None
    node_labels: dict[str, str] = field(default_factory=dict)


class DevCluster:
    def __init__(self, config: DevClusterConfig) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir).resolve()  # pods run in their own folders: relative paths break
        self.store = Store(history_size=config.history_size)
        self.resources = ResourceRegistry()
        self.api = Api(self.store, self.resources)
        install_crd_hook(self.api)
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.kubelet: Kubelet | None = None
        self.frontend: HttpFrontend | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def _load_snapshot(self) -> bool:
        path = self.config.snapshot
        if path is None or not path.exists():
            return False
        data = json.loads(path.read_text())
        self.store.load(data)
        for crd in self.store.items(CRDS):
            for hook in self.api.crd_hooks:
                hook(crd, False)
        for obj in self.store.items(("", "services")):
            ip = (obj.get("spec") or {}).get("clusterIP")
            if ip and ip != "None":
                self.api.cluster_ips.add(ip)
        return True

    def save_snapshot(self) -> None:
        if self.config.snapshot is None:
            return
        self.config.snapshot.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.config.snapshot.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.store.dump()))
        tmp.replace(self.config.snapshot)

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        restored = self._load_snapshot()
        ns_rt = self.api.rt("v1", "namespaces")
        for name in SEED_NAMESPACES:
            if self.store.get(ns_rt.storage_key, "", name) is None:
                self.api.create(ns_rt, "", {"metadata": {"name": name}})
        self.kubelet = Kubelet(
            self.api,
            node_name=self.config.node_name,
            state_dir=self.state_dir,
            gpus=self.config.gpus,
            gpu_passthrough=self.config.gpu_passthrough,
            kubeconfig=self.kubeconfig,
            base_env=self.config.base_env,
            restart_backoff=self.config.restart_backoff,
            keep_pod_dirs=self.config.keep_pod_dirs,
            node_labels=self.config.node_labels,
        )
        self.frontend = HttpFrontend(
            self.api, log_provider=self.kubelet, bookmark_interval=self.config.bookmark_interval
        )
        self._runner = web.AppRunner(self.frontend.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        assert sockets, "the API server did not bind a socket"
        self.port = int(sockets[0].getsockname()[1])
        self.frontend.server_address = f"{self.config.host}:{self.port}"
        self.kubelet.api_port = self.port
        kubeconfig.write(self.kubeconfig, self.url)
        self.kubelet.register_node()
        if restored:
            self.kubelet.fail_stale_pods()
        controllers: list[Controller] = [
            NamespaceController(self.api),
            CrdController(self.api),
            GarbageCollector(self.api),
            Scheduler(self.api, self.config.node_name),
            JobController(self.api, backoff_base=self.config.job_backoff_base),
            DeploymentController(self.api),
            EndpointsController(self.api),
        ]
        for controller in controllers:
            self._tasks.append(asyncio.create_task(controller.run(), name=controller.name))
        self._tasks.append(asyncio.create_task(self.kubelet.run(), name="kubelet"))
        log.info("dev cluster serving on %s (kubeconfig %s)", self.url, self.kubeconfig)

    async def stop(self) -> None:
        if self.kubelet is not None:
            await self.kubelet.shutdown(grace=2.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.store.close_all_watchers()
        if self.frontend is not None:
            self.frontend.stopping.set()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
        self.save_snapshot()

    def stats(self) -> dict[str, Any]:
        latencies = list(self.kubelet.start_latencies) if self.kubelet else []
        return {"resourceVersion": self.store.rv, "pod_start_latencies_s": latencies}
