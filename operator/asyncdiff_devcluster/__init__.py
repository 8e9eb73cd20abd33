"""A local Kubernetes control plane for developing and testing the AsyncDiff operator without Docker.

Why it exists: CI and laptops here have no Docker, kind or kube-apiserver, yet the operator must be tested
against the *real* kopf, kubectl and kubernetes client. So only the API server and the node are emulated:
an aiohttp API server (``apiserver``), the controllers that turn objects into work (``controllers``) and a
kubelet that runs Pod containers as local processes (``kubelet``). ``cluster.DevCluster`` wires them
together; ``testing.running_dev_cluster`` and the ``asyncdiff dev-cluster`` CLI start one.

This package is deliberately outside the operator's production import path: ``asyncdiff_operator`` must
never import it, and it never imports torch.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
