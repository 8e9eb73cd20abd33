"""Cluster networking on one host: DNS names become 127.0.0.1, rendezvous ports become distinct.

Why: worker processes are told ``MASTER_ADDR=<job>-0.<svc>.<ns>.svc.cluster.local`` and
``MASTER_PORT=29500`` by the operator; on a laptop those names do not resolve and two jobs would both
bind 29500. The kubelet therefore rewrites, in every container's env values, command and args:

* any host name ending in ``.svc.cluster.local`` or ``.svc`` (optionally with ``:port`` or inside a URL)
  -> ``127.0.0.1``;
* an env value that is exactly a Service name of the Pod's namespace, or ``<svc>.<ns>``,
  ``<host>.<svc>`` or ``<host>.<svc>.<ns>`` -> ``127.0.0.1`` (only whole env values, to avoid rewriting
  ordinary words);

and, in env values only, an integer value of a variable whose name ends in ``PORT`` (``MASTER_PORT``,
``PET_MASTER_PORT``, ...) or equals a declared ``containerPort`` -> a free host port allocated per
(namespace, controlling owner's uid or else the Pod's uid, declared port). All Pods of one Job thus agree
on the rendezvous port, and two Jobs never collide. Each declared ``containerPort`` N is also exported as
``ASYNCDIFF_PORT_<N>``. The mapping is recorded in the Pod annotation ``devcluster.asyncdiff.io/ports``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable

LOOPBACK = "127.0.0.1"
_CLUSTER_NAME = re.compile(r"(?<![\w.-])[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.svc(\.cluster\.local)?\.?(?![\w-])")
PORTS_ANNOTATION = "devcluster.asyncdiff.io/ports"


def rewrite_cluster_names(text: str) -> str:
    return _CLUSTER_NAME.sub(LOOPBACK, text)


def rewrite_service_value(value: str, namespace: str, services: Iterable[str]) -> str:
    """Whole-value rewriting of Service-relative names (``svc``, ``svc.ns``, ``host.svc[.ns]``)."""
    host, sep, port = value.partition(":")
    if sep and not port.isdigit():
        return value
    parts = host.split(".")
    names = set(services)
    hit = False
    if len(parts) == 1:
        hit = parts[0] in names
    elif len(parts) == 2:
        hit = (parts[0] in names and parts[1] == namespace) or parts[1] in names
    elif len(parts) == 3:
        hit = parts[1] in names and parts[2] == namespace
    return f"{LOOPBACK}{sep}{port}" if hit else value


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class PortAllocator:
    """Hands out host ports per (namespace, group id, declared port); never reuses one while running."""

    def __init__(self) -> None:
        self._ports: dict[tuple[str, str, int], int] = {}
        self._used: set[int] = set()

    def port_for(self, namespace: str, group: str, declared: int) -> int:
        key = (namespace, group, declared)
        if key not in self._ports:
            for _ in range(50):
                port = free_port()
                if port not in self._used:
                    break
            self._used.add(port)
            self._ports[key] = port
        return self._ports[key]

    def release_group(self, namespace: str, group: str) -> None:
        for key in [k for k in self._ports if k[0] == namespace and k[1] == group]:
            del self._ports[key]


def is_port_variable(name: str, value: str, declared: set[int]) -> bool:
    if not value.isdigit():
        return False
    number = int(value)
    if not 0 < number < 65536:
        return False
    return name.upper().endswith("PORT") or number in declared
