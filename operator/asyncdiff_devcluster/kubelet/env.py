"""A container's environment: ``env``/``envFrom`` with every ``valueFrom`` source, and ``$(VAR)``.

Why: the operator passes rank, addresses and credentials through env (``fieldRef`` to the completion
index annotation, ``secretKeyRef`` for S3 keys); a mistake there must fail the same way it does on a
kubelet: a missing ConfigMap/Secret key keeps the container in ``CreateContainerConfigError``.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from typing import Any


class EnvError(Exception):
    """The environment cannot be built yet (a referenced object or key is missing)."""


_FIELD_RE = re.compile(r"^metadata\.(labels|annotations)\[['\"](.+)['\"]\]$")
_EXPAND_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown references stay as written, ``$$`` escapes."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _EXPAND_RE.sub(repl, text)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    m = _FIELD_RE.match(path)
    if m:
        source = meta.get(m.group(1)) or {}
        return str(source.get(m.group(2), ""))
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta.get("name"),
        "metadata.namespace": lambda: meta.get("namespace"),
        "metadata.uid": lambda: meta.get("uid"),
        "metadata.labels": lambda: "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get("labels") or {}).items())),
        "metadata.annotations": lambda: "\n".join(
            f'{k}="{v}"' for k, v in sorted((meta.get("annotations") or {}).items())
        ),
        "spec.nodeName": lambda: spec.get("nodeName"),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName"),
        "status.podIP": lambda: status.get("podIP", "127.0.0.1"),
        "status.podIPs": lambda: status.get("podIP", "127.0.0.1"),
        "status.hostIP": lambda: status.get("hostIP", "127.0.0.1"),
        "status.hostIPs": lambda: status.get("hostIP", "127.0.0.1"),
    }
    if path not in simple:
        raise EnvError(f"unsupported fieldPath {path!r}")
    value = simple[path]()
    return "" if value is None else str(value)


_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "m": 1e-3,
}


def parse_quantity(value: Any) -> float:
    text = str(value).strip()
    for suffix, factor in sorted(_SUFFIX.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text) if text else 0.0


def resource_value(pod: Mapping[str, Any], ref: Mapping[str, Any], container: str | None = None) -> str:
    name = ref.get("containerName") or container
    containers = (pod.get("spec") or {}).get("containers") or []
    target = next((c for c in containers if c.get("name") == name), containers[0] if containers else {})
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    res = (target.get("resources") or {}).get(kind) or {}
    divisor = parse_quantity(ref.get("divisor", "1") or "1") or 1.0
    if resource in res:
        amount = parse_quantity(res[resource])
    elif resource == "cpu":
        import os

        amount = float(os.cpu_count() or 1)
    elif resource == "memory":
        amount = float(64 * 2**30)
    else:
        amount = 0.0
    return str(math.ceil(amount / divisor))


def build_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    get_object: Callable[[tuple[str, str], str, str], dict[str, Any] | None],
) -> dict[str, str]:
    """The env a container declares, resolved (not including the kubelet's base environment)."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            cm = get_object(("", "configmaps"), namespace, ref.get("name", ""))
            if cm is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'configmap "{ref.get("name")}" not found')
            for k, v in (cm.get("data") or {}).items():
                env[prefix + k] = str(v)
        elif "secretRef" in source:
            ref = source["secretRef"]
            secret = get_object(("", "secrets"), namespace, ref.get("name", ""))
            if secret is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'secret "{ref.get("name")}" not found')
            for k, v in (secret.get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode(errors="replace")
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in source:
            env[name] = resource_value(pod, source["resourceFieldRef"], container.get("name"))
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = get_object(("", "configmaps"), namespace, ref.get("name", ""))
            data = (cm or {}).get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                if cm is None:
                    raise EnvError(f'configmap "{ref.get("name")}" not found')
                raise EnvError(f"couldn't find key {ref.get('key')} in ConfigMap {namespace}/{ref.get('name')}")
            env[name] = str(data[ref["key"]])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = get_object(("", "secrets"), namespace, ref.get("name", ""))
            data = (secret or {}).get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                if secret is None:
                    raise EnvError(f'secret "{ref.get("name")}" not found')
                raise EnvError(f"couldn't find key {ref.get('key')} in Secret {namespace}/{ref.get('name')}")
            env[name] = base64.b64decode(data[ref["key"]]).decode(errors="replace")
    return env
