"""The kubeconfig file clients use to reach the dev cluster.

Why: kubectl, kopf and the kubernetes client all read ``KUBECONFIG``; one generated file (plain HTTP on
loopback, a dummy token, namespace ``default``) is the whole "login" story of the dev cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

CONTEXT = "asyncdiff-dev"


def render(server: str, *, namespace: str = "default") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": CONTEXT, "user": {"token": "asyncdiff-dev-token"}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
        "current-context": CONTEXT,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write(path: Path, server: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(server))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
