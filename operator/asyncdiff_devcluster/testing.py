"""Start a dev cluster from tests (or any synchronous code) and get its kubeconfig.

Why: every suite that needs Kubernetes (this package's, the operator's end-to-end tests) should start
the same control plane the same way, on a free loopback port, and always stop it. Usage::

    from asyncdiff_devcluster.testing import running_dev_cluster

    with running_dev_cluster(tmp_path) as cluster:
        env = cluster.env()            # os.environ + KUBECONFIG, for kubectl/kopf subprocesses
        client = cluster.api_client()  # a kubernetes.client.ApiClient bound to it

The cluster runs on its own event loop in a daemon thread; ``cluster.call(fn)`` runs ``fn(dev_cluster)``
on that loop when a test needs to look inside (e.g. the kubelet's measured start latencies).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .cluster import DevCluster, DevClusterConfig

T = TypeVar("T")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding asyncdiff_devcluster/


class RunningDevCluster:
    """A handle on a dev cluster running in a background thread."""

    def __init__(self, cluster: DevCluster, loop: asyncio.AbstractEventLoop) -> None:
        self.cluster = cluster
        self._loop = loop

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def port(self) -> int:
        return self.cluster.port

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    @property
    def state_dir(self) -> Path:
        return self.cluster.state_dir

    def call(self, fn: Callable[[DevCluster], T], timeout: float = 10.0) -> T:
        """Run ``fn(cluster)`` on the cluster's loop thread and return its result."""

        async def run() -> T:
            return fn(self.cluster)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` plus KUBECONFIG and a PYTHONPATH that can import this package."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        paths = [str(PACKAGE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env.update(extra)
        return env

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster (the kubernetes package is imported lazily)."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": "Bearer asyncdiff-dev-token"}
        return client.ApiClient(configuration)


@contextlib.contextmanager
def running_dev_cluster(
    state_dir: Path | str | None = None,
    *,
    startup_timeout: float = 20.0,
    **config: Any,
) -> Iterator[RunningDevCluster]:
    """Start a dev cluster on a free 127.0.0.1 port for the ``with`` block; stop it afterwards.

    Keyword arguments are ``DevClusterConfig`` fields (e.g. ``gpus=2``, ``job_backoff_base=0``,
    ``restart_backoff=0.1``, ``history_size=50``).
    """
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="asyncdiff-devcluster-"))
        cfg = DevClusterConfig(state_dir=Path(state_dir), **config)
        cluster = DevCluster(cfg)
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        stop_requested: asyncio.Event | None = None

        async def main() -> None:
            nonlocal stop_requested
            stop_requested = asyncio.Event()
            try:
                await cluster.start()
            except BaseException as exc:
                started.set_exception(exc)
                await cluster.stop()
                return
            started.set_result(None)
            await stop_requested.wait()
            await cluster.stop()

        def thread_main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(main())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=thread_main, name="asyncdiff-devcluster", daemon=True)
        thread.start()
        started.result(startup_timeout)
        try:
            yield RunningDevCluster(cluster, loop)
        finally:
            assert stop_requested is not None
            loop.call_soon_threadsafe(stop_requested.set)
            thread.join(30.0)
            if thread.is_alive():  # pragma: no cover - diagnostics only
                print("asyncdiff dev cluster did not stop within 30 s", file=sys.stderr)


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.02, message: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy (short interval, bounded time)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}; last={last!r}")
